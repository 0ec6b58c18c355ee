//! API credentials for pods with a service account: the account's token in a kubeconfig the
//! process finds through `KUBECONFIG` (a process here cannot read
//! `/var/run/secrets/kubernetes.io/serviceaccount`, and kube-rs and client-go both prefer
//! `KUBECONFIG` over the in-cluster files). The token is the account's own, so what its RBAC
//! allows is what the process may do.
//!
//! The token comes from where a kubelet would take it: the token Secret that the 1.20
//! ServiceAccount admission plugin mounted at [`TOKEN_MOUNT`]; without such a volume (a newer
//! cluster, bound tokens), from the TokenRequest API (`serviceaccounts/<sa>/token`, bound to the
//! pod, 24 h). `automountServiceAccountToken: false` on the pod or its account means none.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt as _};
use serde_json::json;

/// Where Kubernetes mounts a pod's service-account token.
pub const TOKEN_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Lifetime asked of a TokenRequest token.
const REQUESTED_TOKEN_SECONDS: i64 = 86_400;

/// How the node's pods reach the apiserver: its URL and the CA that signs its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiAccess {
    pub server: String,
    /// PEM; `None` to use the system's roots.
    pub ca_pem: Option<String>,
    pub insecure: bool,
}

impl ApiAccess {
    /// From the node's own client configuration.
    pub fn from_config(c: &kube::Config) -> Self {
        let ca_pem = c.root_cert.as_ref().map(|certs| {
            certs
                .iter()
                .map(|der| pem("CERTIFICATE", der))
                .collect::<String>()
        });
        Self {
            server: c.cluster_url.to_string().trim_end_matches('/').to_owned(),
            ca_pem,
            insecure: c.accept_invalid_certs,
        }
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Where a pod's token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// The token Secret mounted at [`TOKEN_MOUNT`] (1.20's ServiceAccount admission).
    Secret(String),
    /// No such volume: a TokenRequest for this account (unless the account opts out).
    Request(String),
}

/// Where `pod`'s token comes from; `None` when the pod opts out.
pub fn token_source(pod: &Pod) -> Option<TokenSource> {
    let spec = pod.spec.as_ref()?;
    if spec.automount_service_account_token == Some(false) {
        return None;
    }
    let mounted = spec
        .containers
        .iter()
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .find(|m| m.mount_path.trim_end_matches('/') == TOKEN_MOUNT)
        .and_then(|m| spec.volumes.iter().flatten().find(|v| v.name == m.name))
        .and_then(|v| v.secret.as_ref()?.secret_name.clone());
    Some(match mounted {
        Some(secret) => TokenSource::Secret(secret),
        None => TokenSource::Request(
            spec.service_account_name
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".into()),
        ),
    })
}

/// A kubeconfig for the pod: the node's apiserver and CA, the token read from `token_file` (so a
/// refreshed token is picked up by kube-rs and client-go alike), the pod's namespace as default.
pub fn kubeconfig(access: &ApiAccess, token_file: &Path, namespace: &str) -> String {
    let mut cluster = json!({ "server": access.server });
    if let Some(ca) = &access.ca_pem {
        cluster["certificate-authority-data"] =
            base64::engine::general_purpose::STANDARD.encode(ca).into();
    }
    if access.insecure {
        cluster["insecure-skip-tls-verify"] = true.into();
    }
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "wasp-node", "cluster": cluster }],
        "users": [{ "name": "service-account", "user": { "tokenFile": token_file.to_string_lossy() } }],
        "contexts": [{ "name": "wasp-node", "context": {
            "cluster": "wasp-node", "user": "service-account", "namespace": namespace } }],
        "current-context": "wasp-node",
    });
    serde_yaml_ng::to_string(&doc).unwrap_or_default()
}

/// Writes `<pod_dir>/serviceaccount/{token,kubeconfig}` for `pod` and returns the kubeconfig's
/// path; `None` when the pod (or its account) opts out. An error is retried at the next start.
pub async fn credentials(
    client: &Client,
    access: &ApiAccess,
    pod: &Pod,
    pod_dir: &Path,
) -> Result<Option<PathBuf>, String> {
    let Some(source) = token_source(pod) else {
        return Ok(None);
    };
    let ns = pod.namespace().unwrap_or_default();
    let token = match source {
        TokenSource::Secret(name) => {
            let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
            let s = secrets
                .get(&name)
                .await
                .map_err(|e| format!("reading the service-account token secret {name}: {e}"))?;
            let token = s
                .data
                .as_ref()
                .and_then(|d| d.get("token"))
                .ok_or_else(|| format!("secret {name} holds no token yet"))?;
            String::from_utf8_lossy(&token.0).into_owned()
        }
        TokenSource::Request(sa) => {
            let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
            let account = sas
                .get(&sa)
                .await
                .map_err(|e| format!("reading service account {sa}: {e}"))?;
            if account.automount_service_account_token == Some(false)
                && pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.automount_service_account_token)
                    != Some(true)
            {
                return Ok(None);
            }
            let request = TokenRequest {
                spec: TokenRequestSpec {
                    audiences: Vec::new(),
                    expiration_seconds: Some(REQUESTED_TOKEN_SECONDS),
                    bound_object_ref: Some(BoundObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: pod.metadata.name.clone(),
                        uid: pod.metadata.uid.clone(),
                    }),
                },
                ..Default::default()
            };
            let answer = sas
                .create_token_request(&sa, &PostParams::default(), &request)
                .await
                .map_err(|e| format!("requesting a token for service account {sa}: {e}"))?;
            answer.status.map(|s| s.token).unwrap_or_default()
        }
    };
    let dir = pod_dir.join("serviceaccount");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let token_file = dir.join("token");
    write_private(&token_file, token.as_bytes())?;
    let path = dir.join("kubeconfig");
    write_private(&path, kubeconfig(access, &token_file, &ns).as_bytes())?;
    Ok(Some(path))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    f.write_all(bytes)
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("a pod")
    }

    #[test]
    fn the_mounted_token_secret_wins_then_a_token_request_unless_opted_out() {
        let mounted = pod(json!({ "metadata": { "name": "p" }, "spec": {
            "serviceAccountName": "wasp-operator",
            "volumes": [{ "name": "wasp-operator-token-x1", "secret": { "secretName": "wasp-operator-token-x1" } }],
            "containers": [{ "name": "c", "volumeMounts": [
                { "name": "wasp-operator-token-x1", "mountPath": TOKEN_MOUNT, "readOnly": true }] }] } }));
        assert_eq!(
            token_source(&mounted),
            Some(TokenSource::Secret("wasp-operator-token-x1".into()))
        );
        let bare = pod(json!({ "metadata": { "name": "p" }, "spec": {
            "serviceAccountName": "api", "containers": [{ "name": "c" }] } }));
        assert_eq!(
            token_source(&bare),
            Some(TokenSource::Request("api".into()))
        );
        let default = pod(
            json!({ "metadata": { "name": "p" }, "spec": { "containers": [{ "name": "c" }] } }),
        );
        assert_eq!(
            token_source(&default),
            Some(TokenSource::Request("default".into()))
        );
        let off = pod(json!({ "metadata": { "name": "p" }, "spec": {
            "automountServiceAccountToken": false, "containers": [{ "name": "c" }] } }));
        assert_eq!(token_source(&off), None);
    }

    #[test]
    fn the_kubeconfig_names_the_server_ca_token_file_and_namespace() {
        let access = ApiAccess {
            server: "https://127.0.0.1:6443".into(),
            ca_pem: Some(pem("CERTIFICATE", b"der")),
            insecure: false,
        };
        let text = kubeconfig(&access, Path::new("/s/p/serviceaccount/token"), "clinic");
        let parsed: kube::config::Kubeconfig =
            serde_yaml_ng::from_str(&text).expect("a kubeconfig");
        let cluster = parsed.clusters[0].cluster.as_ref().expect("cluster");
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        let ca = cluster.certificate_authority_data.as_deref().expect("ca");
        let ca = base64::engine::general_purpose::STANDARD
            .decode(ca)
            .expect("base64");
        assert!(String::from_utf8_lossy(&ca).starts_with("-----BEGIN CERTIFICATE-----\nZGVy\n"));
        let user = parsed.auth_infos[0].auth_info.as_ref().expect("user");
        assert_eq!(
            user.token_file.as_deref(),
            Some("/s/p/serviceaccount/token")
        );
        let ctx = parsed.contexts[0].context.as_ref().expect("context");
        assert_eq!(ctx.namespace.as_deref(), Some("clinic"));
        assert_eq!(parsed.current_context.as_deref(), Some("wasp-node"));
    }
}
