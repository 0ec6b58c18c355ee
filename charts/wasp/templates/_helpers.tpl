{{/* Names: `<fullname>-<component>`; with release name "wasp" the fullname is "wasp". */}}
{{- define "wasp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "wasp.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "wasp.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "api"). */}}
{{- define "wasp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wasp.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of one component's objects. */}}
{{- define "wasp.labels" -}}
{{ include "wasp.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: wasp
helm.sh/chart: {{ include "wasp.chart" .root }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of the session pods, as the operator sets them (operator/src/resources.rs). */}}
{{- define "wasp.sessionSelector" -}}
app.kubernetes.io/component: session
app.kubernetes.io/managed-by: wasp-operator
app.kubernetes.io/part-of: wasp
{{- end -}}

{{/* `repository:tag`, the tag defaulting to the chart's appVersion: (dict "root" $ "image" .Values.api.image). */}}
{{- define "wasp.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{- define "wasp.operatorServiceAccount" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (printf "%s-operator" (include "wasp.fullname" .)) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "wasp.apiServiceAccount" -}}
{{- if .Values.api.serviceAccount.create -}}
{{- default (printf "%s-api" (include "wasp.fullname" .)) .Values.api.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.api.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret and key holding the Redis URL every component (and each session pod) reads. */}}
{{- define "wasp.redisSecretName" -}}
{{- if and (not .Values.redis.enabled) .Values.externalRedis.existingSecret -}}
{{- .Values.externalRedis.existingSecret -}}
{{- else -}}
{{- printf "%s-redis" (include "wasp.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "wasp.redisSecretKey" -}}
{{- if and (not .Values.redis.enabled) .Values.externalRedis.existingSecret -}}
{{- .Values.externalRedis.existingSecretKey -}}
{{- else -}}
url
{{- end -}}
{{- end -}}

{{- define "wasp.redisHost" -}}
{{- printf "%s-redis.%s.svc" (include "wasp.fullname" .) .Release.Namespace -}}
{{- end -}}

{{- define "wasp.masterKeySecretName" -}}
{{- default (printf "%s-master-key" (include "wasp.fullname" .)) .Values.masterKey.existingSecret -}}
{{- end -}}

{{- define "wasp.jwtSecretName" -}}
{{- default (printf "%s-jwt" (include "wasp.fullname" .)) .Values.api.auth.jwtSecret.existingSecret -}}
{{- end -}}

{{- define "wasp.webhooksSecretName" -}}
{{- default (printf "%s-webhooks" (include "wasp.fullname" .)) .Values.api.webhooks.existingSecret -}}
{{- end -}}

{{- define "wasp.leaseName" -}}
{{- default (printf "%s-operator" (include "wasp.fullname" .)) .Values.operator.leaderElection.leaseName -}}
{{- end -}}

{{/* policy/v1 where the cluster has it (1.21+), else policy/v1beta1 (1.20). */}}
{{- define "wasp.pdbApiVersion" -}}
{{- if .Capabilities.APIVersions.Has "policy/v1" -}}
policy/v1
{{- else -}}
policy/v1beta1
{{- end -}}
{{- end -}}

{{/* Fails rendering on contradictory values the schema cannot express. */}}
{{- define "wasp.validate" -}}
{{- if and (not .Values.redis.enabled) (not .Values.externalRedis.url) (not .Values.externalRedis.existingSecret) -}}
{{- fail "redis.enabled is false: set externalRedis.url or externalRedis.existingSecret" -}}
{{- end -}}
{{- if and (not .Values.api.auth.jwtSecret.enabled) (not .Values.api.auth.jwksUrl) (not .Values.api.auth.devInsecureAuth) -}}
{{- fail "the API accepts no token: enable api.auth.jwtSecret or set api.auth.jwksUrl" -}}
{{- end -}}
{{- end -}}

{{/* The environment every wasp container shares: Redis URL and logging. (dict "root" $ "log" .Values.api) */}}
{{- define "wasp.redisEnv" -}}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "wasp.redisSecretName" . }}
      key: {{ include "wasp.redisSecretKey" . }}
{{- end -}}

{{- define "wasp.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end -}}

{{- define "wasp.containerSecurityContext" -}}
{{ toYaml .Values.containerSecurityContext }}
{{- end -}}

{{/* Pod-spec scheduling fields of a component's values. */}}
{{- define "wasp.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/* A number as an integer (values arrive as floats), a string (e.g. "50%") quoted. */}}
{{- define "wasp.intOrString" -}}
{{- if kindIs "string" . -}}
{{- . | quote -}}
{{- else -}}
{{- . | int64 -}}
{{- end -}}
{{- end -}}
