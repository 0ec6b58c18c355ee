//! A container's environment, resolved as the kubelet does it, plus the local node's
//! conventions ([`rewrite_value`]): listen addresses on all interfaces become the pod's own
//! loopback address, Service names the Service's address, mount paths host paths. Pure:
//! the Secrets and ConfigMaps are looked up by the caller ([`referenced`] names them).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvVarSource, ObjectFieldSelector, Pod, Secret,
};

use crate::hosts::{ServiceName, rewrite_service_hosts};
use crate::volumes::{Mount, rewrite_path};

/// Why a container's environment cannot be built (the kubelet's `CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvError {
    SecretNotFound(String),
    SecretKeyNotFound { secret: String, key: String },
    ConfigMapNotFound(String),
    ConfigMapKeyNotFound { config_map: String, key: String },
    NotUtf8 { source: String, key: String },
    UnsupportedFieldPath(String),
    Unsupported { var: String, what: &'static str },
}

impl std::fmt::Display for EnvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SecretNotFound(s) => write!(f, "secret \"{s}\" not found"),
            Self::SecretKeyNotFound { secret, key } => {
                write!(f, "couldn't find key {key} in Secret {secret}")
            }
            Self::ConfigMapNotFound(c) => write!(f, "configmap \"{c}\" not found"),
            Self::ConfigMapKeyNotFound { config_map, key } => {
                write!(f, "couldn't find key {key} in ConfigMap {config_map}")
            }
            Self::NotUtf8 { source, key } => write!(f, "key {key} of {source} is not UTF-8"),
            Self::UnsupportedFieldPath(p) => {
                write!(
                    f,
                    "unsupported fieldRef path {p} (the local node resolves metadata.*, spec.nodeName, spec.serviceAccountName, status.podIP(s), status.hostIP)"
                )
            }
            Self::Unsupported { var, what } => {
                write!(f, "env {var}: {what} is not supported by the local node")
            }
        }
    }
}

impl std::error::Error for EnvError {}

/// What env resolution reads besides the pod itself.
#[derive(Debug, Clone, Copy)]
pub struct EnvSources<'a> {
    /// The Secrets of the pod's namespace that [`referenced`] named and that exist, by name.
    pub secrets: &'a BTreeMap<String, Secret>,
    /// Likewise for ConfigMaps.
    pub config_maps: &'a BTreeMap<String, ConfigMap>,
    /// The pod's own address (`status.podIP`, and the target of listen-address rewriting).
    pub pod_ip: Ipv4Addr,
    /// `status.hostIP`.
    pub host_ip: &'a str,
    /// `spec.nodeName`.
    pub node_name: &'a str,
}

/// Names of the Secrets and ConfigMaps a container's `env` and `envFrom` refer to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Referenced {
    pub secrets: BTreeSet<String>,
    pub config_maps: BTreeSet<String>,
}

pub fn referenced(container: &Container) -> Referenced {
    let mut r = Referenced::default();
    for from in container.env_from.iter().flatten() {
        if let Some(s) = &from.secret_ref {
            r.secrets.insert(s.name.clone());
        }
        if let Some(c) = &from.config_map_ref {
            r.config_maps.insert(c.name.clone());
        }
    }
    for var in container.env.iter().flatten() {
        let Some(source) = &var.value_from else {
            continue;
        };
        if let Some(s) = &source.secret_key_ref {
            r.secrets.insert(s.name.clone());
        }
        if let Some(c) = &source.config_map_key_ref {
            r.config_maps.insert(c.name.clone());
        }
    }
    r
}

/// The environment of `container`, in order, each name once (a later definition replaces an
/// earlier one in place):
///
/// 1. `image_env`, the image's `ENV` (the pod's variables win over it);
/// 2. `envFrom` (Secrets and ConfigMaps, with their prefix; keys that are not valid variable
///    names are skipped, as the kubelet does);
/// 3. `env`: plain values with `$(VAR)` expanded from the variables defined so far (`$$` is a
///    literal `$`), `secretKeyRef`, `configMapKeyRef` and downward-API `fieldRef`; an
///    `optional` reference to a missing Secret, ConfigMap or key leaves the variable out;
/// 4. the local-node convention: every value that is a listen address on all interfaces
///    (`0.0.0.0:<port>`, `[::]:<port>`) becomes `<pod IP>:<port>` ([`rewrite_listen_addr`]).
///
/// `resourceFieldRef` is not supported (an error, like any unresolvable reference).
pub fn resolve_env(
    pod: &Pod,
    container: &Container,
    src: &EnvSources,
    image_env: &[(String, String)],
) -> Result<Vec<(String, String)>, EnvError> {
    let mut env = Env::default();
    for (k, v) in image_env {
        env.set(k, v.clone());
    }
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        if let Some(s) = &from.secret_ref {
            match src.secrets.get(&s.name) {
                Some(secret) => {
                    for (k, v) in secret_values(secret, &s.name)? {
                        env.set_checked(&format!("{prefix}{k}"), v);
                    }
                }
                None if s.optional == Some(true) => {}
                None => return Err(EnvError::SecretNotFound(s.name.clone())),
            }
        }
        if let Some(c) = &from.config_map_ref {
            match src.config_maps.get(&c.name) {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        env.set_checked(&format!("{prefix}{k}"), v.clone());
                    }
                }
                None if c.optional == Some(true) => {}
                None => return Err(EnvError::ConfigMapNotFound(c.name.clone())),
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (_, Some(source)) => value_from(&var.name, source, pod, src)?,
            (Some(v), None) => Some(expand(v, |name| env.get(name))),
            (None, None) => Some(String::new()),
        };
        if let Some(v) = value {
            env.set(&var.name, v);
        }
    }
    Ok(env
        .vars
        .into_iter()
        .map(|(k, v)| {
            let v = rewrite_listen_addr(&v, src.pod_ip).unwrap_or(v);
            (k, v)
        })
        .collect())
}

/// Ordered variables, each name once.
#[derive(Default)]
struct Env {
    vars: Vec<(String, String)>,
}

impl Env {
    fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn set(&mut self, name: &str, value: String) {
        match self.vars.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => self.vars.push((name.to_owned(), value)),
        }
    }

    /// `envFrom` keys that are not valid variable names are skipped.
    fn set_checked(&mut self, name: &str, value: String) {
        if is_env_name(name) {
            self.set(name, value);
        }
    }
}

/// Kubernetes' rule for environment variable names (`[-._a-zA-Z][-._a-zA-Z0-9]*`).
fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, '-' | '.' | '_'))
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

fn secret_values(secret: &Secret, name: &str) -> Result<Vec<(String, String)>, EnvError> {
    let mut out = Vec::new();
    for (k, v) in secret.data.iter().flatten() {
        out.push((k.clone(), utf8(&v.0, name, k)?));
    }
    // `stringData` is write-only on a real apiserver, but fixtures may carry it.
    for (k, v) in secret.string_data.iter().flatten() {
        out.push((k.clone(), v.clone()));
    }
    Ok(out)
}

fn utf8(bytes: &[u8], source: &str, key: &str) -> Result<String, EnvError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| EnvError::NotUtf8 {
        source: source.into(),
        key: key.into(),
    })
}

fn value_from(
    var: &str,
    source: &EnvVarSource,
    pod: &Pod,
    src: &EnvSources,
) -> Result<Option<String>, EnvError> {
    if let Some(sel) = &source.secret_key_ref {
        let optional = sel.optional == Some(true);
        let Some(secret) = src.secrets.get(&sel.name) else {
            return if optional {
                Ok(None)
            } else {
                Err(EnvError::SecretNotFound(sel.name.clone()))
            };
        };
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&sel.key))
            .map(|b| utf8(&b.0, &sel.name, &sel.key))
            .transpose()?
            .or_else(|| secret.string_data.as_ref()?.get(&sel.key).cloned());
        return match value {
            Some(v) => Ok(Some(v)),
            None if optional => Ok(None),
            None => Err(EnvError::SecretKeyNotFound {
                secret: sel.name.clone(),
                key: sel.key.clone(),
            }),
        };
    }
    if let Some(sel) = &source.config_map_key_ref {
        let optional = sel.optional == Some(true);
        let Some(cm) = src.config_maps.get(&sel.name) else {
            return if optional {
                Ok(None)
            } else {
                Err(EnvError::ConfigMapNotFound(sel.name.clone()))
            };
        };
        return match cm.data.as_ref().and_then(|d| d.get(&sel.key)) {
            Some(v) => Ok(Some(v.clone())),
            None if optional => Ok(None),
            None => Err(EnvError::ConfigMapKeyNotFound {
                config_map: sel.name.clone(),
                key: sel.key.clone(),
            }),
        };
    }
    if let Some(field) = &source.field_ref {
        return field_value(field, pod, src).map(Some);
    }
    if source.resource_field_ref.is_some() {
        return Err(EnvError::Unsupported {
            var: var.into(),
            what: "resourceFieldRef",
        });
    }
    Ok(Some(String::new()))
}

/// The downward API's `fieldRef` paths.
fn field_value(
    field: &ObjectFieldSelector,
    pod: &Pod,
    src: &EnvSources,
) -> Result<String, EnvError> {
    let path = field.field_path.as_str();
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let map_entry = |map: &Option<BTreeMap<String, String>>, key: &str| {
        map.as_ref()
            .and_then(|m| m.get(key))
            .cloned()
            .unwrap_or_default()
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => src.node_name.into(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" => src.host_ip.into(),
        "status.podIP" | "status.podIPs" => src.pod_ip.to_string(),
        _ => {
            if let Some(key) = bracketed(path, "metadata.labels") {
                map_entry(&meta.labels, key)
            } else if let Some(key) = bracketed(path, "metadata.annotations") {
                map_entry(&meta.annotations, key)
            } else {
                return Err(EnvError::UnsupportedFieldPath(path.into()));
            }
        }
    })
}

/// `metadata.labels['key']` → `key`.
fn bracketed<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path
        .strip_prefix(prefix)?
        .strip_prefix('[')?
        .strip_suffix(']')?;
    rest.strip_prefix('\'')?.strip_suffix('\'')
}

/// Kubernetes' `$(VAR)` expansion: `$(NAME)` becomes the value `lookup` gives, or stays as it is
/// when `lookup` has none; `$$` is a literal `$`; any other `$` is kept.
pub fn expand<'a>(input: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match lookup(name) {
                Some(v) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The local-node convention for listen addresses: a value that is exactly `0.0.0.0:<port>` or
/// `[::]:<port>` (all interfaces, as containers usually listen) becomes `<pod_ip>:<port>`, and
/// one that is exactly `0.0.0.0`, `::` or `[::]` (a bind address without a port, e.g. Redis's
/// `--bind`) becomes `<pod_ip>`; so every local pod listens on its own loopback address and
/// pods can share port numbers as they do in a cluster. `None` for any other value.
pub fn rewrite_listen_addr(value: &str, pod_ip: Ipv4Addr) -> Option<String> {
    if matches!(value, "0.0.0.0" | "::" | "[::]") {
        return Some(pod_ip.to_string());
    }
    let port = value
        .strip_prefix("0.0.0.0:")
        .or_else(|| value.strip_prefix("[::]:"))?;
    let port: u16 = port.parse().ok()?;
    Some(format!("{pod_ip}:{port}"))
}

/// Everything the conventions rewrite a value with.
pub struct Rewrites<'a> {
    pub pod_ip: Ipv4Addr,
    /// The Service address of a name ([`crate::proxy::ServiceTable::resolve`]).
    pub services: &'a dyn Fn(ServiceName<'_>) -> Option<Ipv4Addr>,
    /// The container's mounts.
    pub mounts: &'a [Mount],
}

/// An env value or container arg under the node's conventions, in order: a listen address on
/// all interfaces becomes the pod's ([`rewrite_listen_addr`]); otherwise Service names become
/// Service addresses ([`crate::hosts`]), then a path under a mount becomes the host path
/// ([`crate::volumes::rewrite_path`]).
pub fn rewrite_value(value: &str, r: &Rewrites<'_>) -> String {
    if let Some(v) = rewrite_listen_addr(value, r.pod_ip) {
        return v;
    }
    let v = rewrite_service_hosts(value, r.services).unwrap_or_else(|| value.to_owned());
    rewrite_path(&v, r.mounts).unwrap_or(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use serde_json::json;

    const IP: Ipv4Addr = Ipv4Addr::new(127, 77, 0, 3);

    fn pod_and_container(env: serde_json::Value, env_from: serde_json::Value) -> (Pod, Container) {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {
                "name": "wa-doc", "namespace": "clinic", "uid": "u-1",
                "labels": { "app": "wasp" }, "annotations": { "note": "hi" }
            },
            "spec": {
                "serviceAccountName": "default",
                "containers": [{ "name": "session", "image": "x", "env": env, "envFrom": env_from }]
            }
        }))
        .expect("a pod");
        let c = pod.spec.as_ref().expect("a spec").containers[0].clone();
        (pod, c)
    }

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn config_map(pairs: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn resolve(
        env: serde_json::Value,
        env_from: serde_json::Value,
        secrets: &BTreeMap<String, Secret>,
        cms: &BTreeMap<String, ConfigMap>,
        image_env: &[(String, String)],
    ) -> Result<Vec<(String, String)>, EnvError> {
        let (pod, c) = pod_and_container(env, env_from);
        let src = EnvSources {
            secrets,
            config_maps: cms,
            pod_ip: IP,
            host_ip: "127.0.0.1",
            node_name: "wasp-node-1",
        };
        resolve_env(&pod, &c, &src, image_env)
    }

    fn get<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
        env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The session pod's env as the operator builds it (resources.rs): plain values, three
    /// secretKeyRefs, listen addresses on 0.0.0.0.
    #[test]
    fn the_session_pods_env_resolves_with_secrets_and_its_own_address() {
        let secrets = BTreeMap::from([
            (
                "wasp-redis".to_owned(),
                secret(&[("url", "redis://127.0.0.1:6379")]),
            ),
            (
                "wasp-master-key".to_owned(),
                secret(&[("masterKey", "0101")]),
            ),
            ("wa-doc-control".to_owned(), secret(&[("token", "tok")])),
        ]);
        let sref = |name: &str, s: &str, k: &str| json!({ "name": name, "valueFrom": { "secretKeyRef": { "name": s, "key": k, "optional": false } } });
        let env = json!([
            { "name": "WASP_USER_ID", "value": "doc@clinic.com" },
            { "name": "WASP_CONTROL_ADDR", "value": "0.0.0.0:8080" },
            { "name": "WASP_ADMIN_ADDR", "value": "0.0.0.0:9090" },
            sref("REDIS_URL", "wasp-redis", "url"),
            sref("WASP_MASTER_KEY", "wasp-master-key", "masterKey"),
            sref("WASP_CONTROL_TOKEN", "wa-doc-control", "token"),
        ]);
        let image_env = [
            ("RUST_LOG".to_owned(), "info".to_owned()),
            ("WASP_USER_ID".to_owned(), "overridden".to_owned()),
        ];
        let out =
            resolve(env, json!([]), &secrets, &BTreeMap::new(), &image_env).expect("resolves");
        assert_eq!(get(&out, "RUST_LOG"), Some("info"));
        assert_eq!(
            get(&out, "WASP_USER_ID"),
            Some("doc@clinic.com"),
            "the pod's env wins"
        );
        assert_eq!(get(&out, "WASP_CONTROL_ADDR"), Some("127.77.0.3:8080"));
        assert_eq!(get(&out, "WASP_ADMIN_ADDR"), Some("127.77.0.3:9090"));
        assert_eq!(get(&out, "REDIS_URL"), Some("redis://127.0.0.1:6379"));
        assert_eq!(get(&out, "WASP_MASTER_KEY"), Some("0101"));
        assert_eq!(get(&out, "WASP_CONTROL_TOKEN"), Some("tok"));
        // each name once, image env first
        assert_eq!(out.len(), 7);
        assert_eq!(out[0].0, "RUST_LOG");
    }

    #[test]
    fn missing_secrets_and_keys_are_errors_unless_optional() {
        let secrets = BTreeMap::from([("s".to_owned(), secret(&[("a", "1")]))]);
        let none = BTreeMap::new();
        let one = |s: &str, k: &str, optional: bool| json!([{ "name": "V", "valueFrom": { "secretKeyRef": { "name": s, "key": k, "optional": optional } } }]);
        assert_eq!(
            resolve(one("gone", "a", false), json!([]), &secrets, &none, &[]),
            Err(EnvError::SecretNotFound("gone".into()))
        );
        assert_eq!(
            resolve(one("s", "b", false), json!([]), &secrets, &none, &[]),
            Err(EnvError::SecretKeyNotFound {
                secret: "s".into(),
                key: "b".into()
            })
        );
        assert_eq!(
            resolve(one("gone", "a", true), json!([]), &secrets, &none, &[]),
            Ok(vec![])
        );
        assert_eq!(
            resolve(one("s", "b", true), json!([]), &secrets, &none, &[]),
            Ok(vec![])
        );
        let err = resolve(one("gone", "a", false), json!([]), &secrets, &none, &[])
            .err()
            .map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("secret \"gone\" not found"));
    }

    #[test]
    fn config_maps_env_from_and_expansion() {
        let cms = BTreeMap::from([(
            "cfg".to_owned(),
            config_map(&[("level", "debug"), ("bad key", "x")]),
        )]);
        let secrets = BTreeMap::from([("s".to_owned(), secret(&[("PASSWORD", "pw")]))]);
        let env = json!([
            { "name": "LEVEL", "valueFrom": { "configMapKeyRef": { "name": "cfg", "key": "level" } } },
            { "name": "URL", "value": "redis://:$(APP_PASSWORD)@h/$(LEVEL)/$(UNDEFINED)/$$(LEVEL)" },
            { "name": "EMPTY" },
        ]);
        let env_from = json!([
            { "configMapRef": { "name": "cfg" } },
            { "secretRef": { "name": "s" }, "prefix": "APP_" },
            { "configMapRef": { "name": "missing", "optional": true } },
        ]);
        let out = resolve(env, env_from, &secrets, &cms, &[]).expect("resolves");
        assert_eq!(get(&out, "level"), Some("debug"));
        assert_eq!(
            get(&out, "bad key"),
            None,
            "invalid names from envFrom are skipped"
        );
        assert_eq!(get(&out, "APP_PASSWORD"), Some("pw"));
        assert_eq!(get(&out, "LEVEL"), Some("debug"));
        assert_eq!(
            get(&out, "URL"),
            Some("redis://:pw@h/debug/$(UNDEFINED)/$(LEVEL)")
        );
        assert_eq!(get(&out, "EMPTY"), Some(""));
        let missing = json!([{ "name": "X", "valueFrom": { "configMapKeyRef": { "name": "cfg", "key": "nope" } } }]);
        assert_eq!(
            resolve(missing, json!([]), &secrets, &cms, &[]),
            Err(EnvError::ConfigMapKeyNotFound {
                config_map: "cfg".into(),
                key: "nope".into()
            })
        );
    }

    #[test]
    fn downward_api_fields() {
        let field = |name: &str, path: &str| json!({ "name": name, "valueFrom": { "fieldRef": { "fieldPath": path } } });
        let env = json!([
            field("NAME", "metadata.name"),
            field("NS", "metadata.namespace"),
            field("UID", "metadata.uid"),
            field("IP", "status.podIP"),
            field("HOST", "status.hostIP"),
            field("NODE", "spec.nodeName"),
            field("SA", "spec.serviceAccountName"),
            field("APP", "metadata.labels['app']"),
            field("NOTE", "metadata.annotations['note']"),
        ]);
        let none_s = BTreeMap::new();
        let none_c = BTreeMap::new();
        let out = resolve(env, json!([]), &none_s, &none_c, &[]).expect("resolves");
        let want = [
            ("NAME", "wa-doc"),
            ("NS", "clinic"),
            ("UID", "u-1"),
            ("IP", "127.77.0.3"),
            ("HOST", "127.0.0.1"),
            ("NODE", "wasp-node-1"),
            ("SA", "default"),
            ("APP", "wasp"),
            ("NOTE", "hi"),
        ];
        for (k, v) in want {
            assert_eq!(get(&out, k), Some(v), "{k}");
        }
        let bad = json!([field("X", "status.phase")]);
        assert_eq!(
            resolve(bad, json!([]), &none_s, &none_c, &[]),
            Err(EnvError::UnsupportedFieldPath("status.phase".into()))
        );
        let res = json!([{ "name": "MEM", "valueFrom": { "resourceFieldRef": { "resource": "limits.memory" } } }]);
        assert!(matches!(
            resolve(res, json!([]), &none_s, &none_c, &[]),
            Err(EnvError::Unsupported { .. })
        ));
    }

    #[test]
    fn referenced_objects_are_named() {
        let (_, c) = pod_and_container(
            json!([
                { "name": "A", "valueFrom": { "secretKeyRef": { "name": "s1", "key": "k" } } },
                { "name": "B", "valueFrom": { "configMapKeyRef": { "name": "c1", "key": "k" } } },
                { "name": "C", "value": "plain" },
            ]),
            json!([{ "secretRef": { "name": "s2" } }, { "configMapRef": { "name": "c2" } }]),
        );
        let r = referenced(&c);
        assert_eq!(
            r.secrets,
            BTreeSet::from(["s1".to_owned(), "s2".to_owned()])
        );
        assert_eq!(
            r.config_maps,
            BTreeSet::from(["c1".to_owned(), "c2".to_owned()])
        );
    }

    #[test]
    fn only_all_interface_listen_addresses_are_rewritten() {
        assert_eq!(
            rewrite_listen_addr("0.0.0.0:8080", IP).as_deref(),
            Some("127.77.0.3:8080")
        );
        assert_eq!(
            rewrite_listen_addr("[::]:9090", IP).as_deref(),
            Some("127.77.0.3:9090")
        );
        assert_eq!(rewrite_listen_addr("127.0.0.1:8080", IP), None);
        assert_eq!(rewrite_listen_addr("0.0.0.0:http", IP), None);
        assert_eq!(rewrite_listen_addr("0.0.0.0:70000", IP), None);
        assert_eq!(rewrite_listen_addr("http://0.0.0.0:80/x", IP), None);
        assert_eq!(
            rewrite_listen_addr("0.0.0.0", IP).as_deref(),
            Some("127.77.0.3")
        );
        assert_eq!(rewrite_listen_addr("::", IP).as_deref(), Some("127.77.0.3"));
        assert_eq!(rewrite_listen_addr("0.0.0.0/0", IP), None);
    }

    #[test]
    fn conventions_apply_in_order() {
        let services = |n: ServiceName<'_>| {
            (n.service == "wasp-redis").then_some(Ipv4Addr::new(127, 40, 0, 1))
        };
        let mounts = [Mount {
            volume: "data".into(),
            mount_path: "/data".into(),
            host_path: "/s/pvc".into(),
        }];
        let r = Rewrites {
            pod_ip: IP,
            services: &services,
            mounts: &mounts,
        };
        assert_eq!(rewrite_value("0.0.0.0:6379", &r), "127.77.0.3:6379");
        assert_eq!(
            rewrite_value("redis://wasp-redis.clinic.svc:6379", &r),
            "redis://127.40.0.1:6379"
        );
        assert_eq!(rewrite_value("/data/aof", &r), "/s/pvc/aof");
        assert_eq!(rewrite_value("--dir=/data", &r), "--dir=/s/pvc");
        assert_eq!(rewrite_value("plain", &r), "plain");
    }

    #[test]
    fn expansion_rules() {
        let vars = BTreeMap::from([("A", "1"), ("B", "two")]);
        let e = |s: &str| expand(s, |n| vars.get(n).copied());
        assert_eq!(e("$(A)-$(B)"), "1-two");
        assert_eq!(e("$$(A)"), "$(A)");
        assert_eq!(e("$(C)"), "$(C)");
        assert_eq!(e("cost: $5"), "cost: $5");
        assert_eq!(e("$(A"), "$(A");
        assert_eq!(e("end$"), "end$");
        assert_eq!(e("$$$(A)"), "$1");
    }
}
