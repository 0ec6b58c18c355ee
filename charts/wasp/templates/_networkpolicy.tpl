{{/* Egress and ingress rules shared by the NetworkPolicies (networkpolicy.yaml). */}}
{{- define "wasp.np.dns" -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end -}}
{{- define "wasp.np.redis" -}}
{{- if .Values.redis.enabled -}}
- to:
    - podSelector:
        matchLabels:
          {{- include "wasp.selectorLabels" (dict "root" . "component" "redis") | nindent 10 }}
  ports:
    - port: {{ .Values.redis.port | int64 }}
      protocol: TCP
{{- else -}}
- ports:
    - port: {{ .Values.externalRedis.port | int64 }}
      protocol: TCP
  {{- with .Values.networkPolicy.externalRedisTo }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
{{- end -}}
{{- define "wasp.np.kubeApi" -}}
- ports:
    {{- range .Values.networkPolicy.kubeApiServerPorts }}
    - port: {{ . | int64 }}
      protocol: TCP
    {{- end }}
  {{- with .Values.networkPolicy.kubeApiServerCidrs }}
  to:
    {{- range . }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  {{- end }}
{{- end -}}
{{- define "wasp.np.toSessions" -}}
- to:
    - podSelector:
        matchLabels:
          {{- include "wasp.sessionSelector" . | nindent 10 }}
  ports:
    - port: {{ .Values.session.controlPort | int64 }}
      protocol: TCP
{{- end -}}
{{- define "wasp.np.metricsFrom" -}}
{{- with .root.Values.networkPolicy.metricsFrom }}
- from:
    {{- toYaml . | nindent 4 }}
  ports:
    - port: {{ $.port | int64 }}
      protocol: TCP
{{- end }}
{{- end -}}
