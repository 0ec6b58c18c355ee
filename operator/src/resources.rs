//! Desired objects of one WhatsAppSession, as pure functions of the resource and the operator's
//! settings: the session Pod and its control Secret (control token, the user's keyring and,
//! with per-session Redis users, the pod's Redis URL).
//! Unit-tested without a cluster.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, Pod, PodSecurityContext, PodSpec, Probe, ResourceRequirements, SeccompProfile,
    Secret, SecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};
use wasp_crds::{PairingMethod, SendRateLimit, StoragePolicy, WhatsAppSession, labels};

use crate::error::{Error, Result};

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "wasp-operator";

/// Key of the control token in the per-session Secret.
pub const CONTROL_TOKEN_KEY: &str = "token";

/// Key of the user's keyring (`wasp_common::crypto::user_keyring`) in the per-session Secret:
/// the only auth-state key material a session pod gets.
pub const USER_KEYS_KEY: &str = "userKeys";

/// Key of the session pod's Redis URL (its own ACL user, `crate::acl`) in the per-session Secret.
pub const REDIS_URL_KEY: &str = "redisUrl";

/// Unprivileged uid/gid of the session container (distroless "nonroot").
const NONROOT_ID: i64 = 65532;

/// What the builders need from the operator's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSettings {
    pub image: String,
    pub command: Vec<String>,
    pub redis_secret: String,
    pub redis_secret_key: String,
    /// Each session pod authenticates as its own Redis user (its URL in the control Secret),
    /// else every pod gets the shared `redis_secret`.
    pub redis_per_session: bool,
    pub whatsapp_url: Option<String>,
    pub control_port: u16,
    pub admin_port: u16,
    /// Fleet-wide login pacing (`WASP_ADMISSION_RATE`, `WASP_ADMISSION_BURST`): outside the
    /// pod's spec hash, so changing it does not replace every running pod.
    pub admission_rate: f64,
    pub admission_burst: u32,
    /// Largest media file (`MAX_FILE_SIZE`, bytes).
    pub max_file_size: u64,
    /// History after linking (`WASP_HISTORY_PER_CHAT`, `WASP_HISTORY_MAX_MESSAGES`).
    pub history_per_chat: usize,
    pub history_max_messages: usize,
    /// Default send pacing `(per minute, burst)` of sessions without `spec.sendRateLimit`.
    pub send_rate: (u32, u32),
    /// Requests and limits of sessions without `spec.pod.resources`.
    pub resources: ResourceRequirements,
}

/// Environment variables left out of the spec hash: tuning that pods pick up when next created.
const UNHASHED_ENV: [&str; 2] = ["WASP_ADMISSION_RATE", "WASP_ADMISSION_BURST"];

impl From<&crate::Config> for PodSettings {
    fn from(c: &crate::Config) -> Self {
        Self {
            image: c.session_image.clone(),
            command: c.session_command.clone(),
            redis_secret: c.redis_secret.clone(),
            redis_secret_key: c.redis_secret_key.clone(),
            redis_per_session: c.redis_acl == crate::config::RedisAcl::PerSession,
            whatsapp_url: c.whatsapp_url.clone(),
            control_port: c.session_control_port,
            admin_port: c.session_admin_port,
            admission_rate: c.admission_rate,
            admission_burst: c.admission_burst,
            max_file_size: c.max_file_size as u64,
            history_per_chat: c.history_per_chat,
            history_max_messages: c.history_max_messages,
            send_rate: (c.send_rate_per_minute, c.send_burst),
            resources: c.session_resources.clone(),
        }
    }
}

/// The session pod's /tmp: memory-backed (media passes through it decrypted), room for one file
/// being sent and one being served, plus 16 MiB for everything else.
pub fn tmp_size_limit(max_file_size: u64) -> Quantity {
    let mib = 1u64 << 20;
    let files = max_file_size.saturating_mul(2).div_ceil(mib);
    Quantity(format!("{}Mi", files + 16))
}

/// The pod is named like its WhatsAppSession, so the API server itself guarantees at most one.
pub fn pod_name(session: &WhatsAppSession) -> String {
    session.name_any()
}

/// The Secret holding the session's control token.
pub fn control_secret_name(session: &WhatsAppSession) -> String {
    format!("{}-control", session.name_any())
}

/// Labels on everything owned by a session.
pub fn owned_labels(session: &WhatsAppSession) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::APP_NAME.into(), "wasp-session".into()),
        (labels::APP_INSTANCE.into(), session.name_any()),
        (labels::APP_COMPONENT.into(), "session".into()),
        (labels::APP_MANAGED_BY.into(), FIELD_MANAGER.into()),
        (labels::APP_PART_OF.into(), "wasp".into()),
        (labels::SESSION.into(), session.name_any()),
        (
            labels::USER_HASH.into(),
            wasp_common::user_hash(&session.spec.user_id),
        ),
    ])
}

/// Label selector matching every object the operator owns (used to scope its watches).
pub fn owned_selector() -> String {
    format!("{}={}", labels::APP_MANAGED_BY, FIELD_MANAGER)
}

fn owner_metadata(session: &WhatsAppSession, name: String) -> Result<ObjectMeta> {
    Ok(ObjectMeta {
        name: Some(name),
        namespace: Some(
            session
                .namespace()
                .ok_or(Error::MissingField("metadata.namespace"))?,
        ),
        labels: Some(owned_labels(session)),
        owner_references: Some(vec![
            session
                .controller_owner_ref(&())
                .ok_or(Error::MissingField("metadata.uid"))?,
        ]),
        ..Default::default()
    })
}

/// The per-session Secret; `token` is random and created once, `userKeys` follows the master
/// keys (see `controller`).
pub fn control_secret(
    session: &WhatsAppSession,
    token: &str,
    creds: &PodCredentials,
) -> Result<Secret> {
    let mut data = BTreeMap::from([(
        CONTROL_TOKEN_KEY.to_owned(),
        ByteString(token.as_bytes().to_vec()),
    )]);
    data.extend(
        creds
            .entries()
            .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec()))),
    );
    Ok(Secret {
        metadata: owner_metadata(session, control_secret_name(session))?,
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    })
}

/// What the control Secret holds for the pod besides the token, derived by the operator.
#[derive(Clone, PartialEq, Eq)]
pub struct PodCredentials {
    /// The user's keyring (`wasp_common::crypto::user_keyring`).
    pub keyring: String,
    /// The pod's Redis URL with its own ACL user; `None` with shared Redis credentials.
    pub redis_url: Option<String>,
}

impl std::fmt::Debug for PodCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PodCredentials(..)")
    }
}

impl PodCredentials {
    fn entries(&self) -> impl Iterator<Item = (&'static str, &str)> {
        std::iter::once((USER_KEYS_KEY, self.keyring.as_str()))
            .chain(self.redis_url.as_deref().map(|u| (REDIS_URL_KEY, u)))
    }
}

/// The entries of `creds` an existing control Secret lacks or holds another value of (a
/// master-key rotation, a Secret made before keyrings or per-session users existed): patched
/// in before a pod that reads them is created. Empty when the Secret is up to date.
pub fn stale_credentials<'a>(
    secret: &Secret,
    creds: &'a PodCredentials,
) -> Vec<(&'static str, &'a str)> {
    let data = secret.data.clone().unwrap_or_default();
    creds
        .entries()
        .filter(|(k, v)| data.get(*k).is_none_or(|have| have.0 != v.as_bytes()))
        .collect()
}

/// 32 random bytes, URL-safe base64: the bearer token wasp-api presents to this session's pod.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    data_encoding::BASE64URL_NOPAD.encode(&bytes)
}

fn env_value(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn env_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
    }
}

/// A downward-API value of the pod itself.
fn env_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(k8s_openapi::api::core::v1::ObjectFieldSelector {
                api_version: None,
                field_path: path.into(),
            }),
            ..Default::default()
        }),
    }
}

/// Key of the master-key Secret that may hold the previous master keys (comma or newline
/// separated) during a rotation: the operator puts the user's keys derived from them into the
/// keyring, so the session pod opens values sealed under them and re-seals them under the
/// current key (docs/session-pod.md, "Master-key rotation").
pub const PREVIOUS_MASTER_KEYS_KEY: &str = "previousMasterKeys";

/// `key_ids`: the ids of the keyring's keys (`MasterKeys::ids`), a plain value so that a
/// rotation changes the pod's spec hash.
fn session_env(
    session: &WhatsAppSession,
    settings: &PodSettings,
    key_ids: &str,
) -> Result<Vec<EnvVar>> {
    let spec = &session.spec;
    let mut env = vec![
        env_value("WASP_USER_ID", spec.user_id.clone()),
        env_value("WASP_SESSION_NAME", session.name_any()),
        env_value(
            "WASP_SESSION_NAMESPACE",
            session
                .namespace()
                .ok_or(Error::MissingField("metadata.namespace"))?,
        ),
        env_value(
            "WASP_CONTROL_ADDR",
            format!("0.0.0.0:{}", settings.control_port),
        ),
        env_value(
            "WASP_ADMIN_ADDR",
            format!("0.0.0.0:{}", settings.admin_port),
        ),
        // Its own Redis user (only its user's keys and channels), unless the operator runs
        // with shared Redis credentials.
        if settings.redis_per_session {
            env_secret("REDIS_URL", &control_secret_name(session), REDIS_URL_KEY)
        } else {
            env_secret(
                "REDIS_URL",
                &settings.redis_secret,
                &settings.redis_secret_key,
            )
        },
        // The user's keyring, never the master key: a compromised pod reads one user's auth
        // state only.
        env_secret(
            "WASP_USER_KEYS",
            &control_secret_name(session),
            USER_KEYS_KEY,
        ),
        env_value("WASP_USER_KEY_IDS", key_ids),
        // A process restarted in this pod takes over its dead predecessor's lease at once
        // (session-pod/src/lease.rs).
        env_field("WASP_POD_UID", "metadata.uid"),
        env_secret(
            "WASP_CONTROL_TOKEN",
            &control_secret_name(session),
            CONTROL_TOKEN_KEY,
        ),
        env_value(
            "WASP_PAIRING_METHOD",
            match spec.pairing.method {
                PairingMethod::Qr => "qr",
                PairingMethod::PairingCode => "pairingCode",
            },
        ),
        env_value(
            "WASP_STORAGE_POLICY",
            match spec.storage.policy {
                StoragePolicy::All => "all",
                StoragePolicy::ContactsOnly => "contactsOnly",
                StoragePolicy::None => "none",
            },
        ),
        env_value(
            "MAX_RECONNECT_ATTEMPTS",
            spec.reconnect.max_attempts.to_string(),
        ),
        env_value(
            "RECONNECT_INTERVAL",
            spec.reconnect.base_interval_ms.to_string(),
        ),
    ];
    if let Some(phone) = &spec.pairing.phone_number {
        env.push(env_value("WASP_PAIRING_PHONE", phone.clone()));
    }
    if let Some(days) = spec.storage.retention_days {
        env.push(env_value("WASP_RETENTION_DAYS", days.to_string()));
    }
    if let Some(url) = &settings.whatsapp_url {
        env.push(env_value("WASP_WHATSAPP_URL", url.clone()));
    }
    env.push(env_value(
        "MAX_FILE_SIZE",
        settings.max_file_size.to_string(),
    ));
    // Only when on: pods of sessions without pacing keep their spec hash.
    let (rate, burst) = SendRateLimit::resolve(spec.send_rate_limit.as_ref(), settings.send_rate);
    if rate > 0 {
        env.push(env_value("WASP_SEND_RATE_PER_MINUTE", rate.to_string()));
        env.push(env_value("WASP_SEND_BURST", burst.to_string()));
    }
    env.push(env_value(
        UNHASHED_ENV[0],
        settings.admission_rate.to_string(),
    ));
    env.push(env_value(
        UNHASHED_ENV[1],
        settings.admission_burst.to_string(),
    ));
    Ok(env)
}

/// Readiness every 10 s once started: an idle pod's Ready changes only when it loses its lease,
/// and each probe wakes the pod and its kubelet (1,000 pods on a node: 100 requests a second at
/// 10 s, 200 at 5 s; docs/benchmarks.md, "The fleet").
const READINESS_PERIOD_S: i32 = 10;
/// Liveness every 20 s (a hung process is restarted within a minute, after three failures).
const LIVENESS_PERIOD_S: i32 = 20;
/// The startup probe asks `/readyz` every second until the pod holds its lease, so a new pod is
/// Ready about a second after it can serve (the API routes only to Ready pods) whatever the
/// readiness period: a kubelet runs the readiness probe at once when the startup probe passes
/// (those after 1.20; 1.20's at its next readiness period). It gives up after 10 minutes (a pod that
/// could not reach Redis or hold its lease that long is restarted), long past the lease TTL a
/// replacement may have to wait out.
const STARTUP_PERIOD_S: i32 = 1;
const STARTUP_FAILURES: i32 = 600;

fn http_probe(path: &str, port: u16, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port.into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

/// The session pod without its spec-hash annotation.
fn pod_without_hash(
    session: &WhatsAppSession,
    settings: &PodSettings,
    key_ids: &str,
) -> Result<Pod> {
    let overrides = &session.spec.pod;
    let container = Container {
        name: "session".into(),
        image: Some(
            overrides
                .image
                .clone()
                .unwrap_or_else(|| settings.image.clone()),
        ),
        command: (!settings.command.is_empty()).then(|| settings.command.clone()),
        ports: Some(vec![
            ContainerPort {
                name: Some("control".into()),
                container_port: settings.control_port.into(),
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            ContainerPort {
                name: Some("admin".into()),
                container_port: settings.admin_port.into(),
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        ]),
        env: Some(session_env(session, settings, key_ids)?),
        resources: Some(
            overrides
                .resources
                .clone()
                .unwrap_or_else(|| settings.resources.clone()),
        ),
        startup_probe: Some(http_probe(
            "/readyz",
            settings.admin_port,
            STARTUP_PERIOD_S,
            STARTUP_FAILURES,
        )),
        readiness_probe: Some(http_probe(
            "/readyz",
            settings.admin_port,
            READINESS_PERIOD_S,
            3,
        )),
        liveness_probe: Some(http_probe(
            "/healthz",
            settings.admin_port,
            LIVENESS_PERIOD_S,
            3,
        )),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        }]),
        ..Default::default()
    };
    Ok(Pod {
        metadata: owner_metadata(session, pod_name(session))?,
        spec: Some(PodSpec {
            containers: vec![container],
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            restart_policy: Some("Always".into()),
            termination_grace_period_seconds: Some(30),
            node_selector: overrides.node_selector.clone(),
            tolerations: overrides.tolerations.clone(),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(NONROOT_ID),
                run_as_group: Some(NONROOT_ID),
                fs_group: Some(NONROOT_ID),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    localhost_profile: None,
                }),
                ..Default::default()
            }),
            volumes: Some(vec![Volume {
                name: "tmp".into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: Some("Memory".into()),
                    size_limit: Some(tmp_size_limit(settings.max_file_size)),
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    })
}

/// Short hash of what the pod would be; a running pod with another hash is out of date.
fn spec_hash(pod: &Pod) -> Result<String> {
    let mut pod = pod.clone();
    for c in pod.spec.iter_mut().flat_map(|s| s.containers.iter_mut()) {
        if let Some(env) = c.env.as_mut() {
            env.retain(|e| !UNHASHED_ENV.contains(&e.name.as_str()));
        }
    }
    let digest = Sha256::digest(serde_json::to_vec(&pod)?);
    let mut h = data_encoding::BASE32_NOPAD
        .encode(&digest)
        .to_ascii_lowercase();
    h.truncate(16);
    Ok(h)
}

/// The desired session pod, annotated with the hash of its own content; `key_ids` as in
/// `session_env`.
pub fn session_pod(
    session: &WhatsAppSession,
    settings: &PodSettings,
    key_ids: &str,
) -> Result<Pod> {
    let mut pod = pod_without_hash(session, settings, key_ids)?;
    let hash = spec_hash(&pod)?;
    pod.metadata.annotations = Some(BTreeMap::from([(labels::POD_SPEC_HASH.into(), hash)]));
    Ok(pod)
}

/// The spec hash a pod was created with.
pub fn pod_spec_hash(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(labels::POD_SPEC_HASH)
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Toleration;
    use wasp_crds::DesiredState;

    fn session() -> WhatsAppSession {
        let mut s = WhatsAppSession::for_user("doctor@clinic.com");
        s.metadata.namespace = Some("clinic".into());
        s.metadata.uid = Some("8e3f1a2b-0000-4000-8000-000000000001".into());
        s
    }

    const IDS: &str = "42";

    #[test]
    fn tmp_holds_two_files_and_some() {
        assert_eq!(tmp_size_limit(10 << 20).0, "36Mi");
        assert_eq!(tmp_size_limit(1).0, "17Mi");
        assert_eq!(tmp_size_limit(0).0, "16Mi");
    }

    fn settings() -> PodSettings {
        PodSettings {
            image: "wasp/session-pod:test".into(),
            command: vec![],
            redis_secret: "wasp-redis".into(),
            redis_secret_key: "url".into(),
            redis_per_session: false,
            whatsapp_url: None,
            admission_rate: 10.0,
            admission_burst: 10,
            max_file_size: 10 << 20,
            history_per_chat: 100,
            history_max_messages: 10_000,
            send_rate: (0, 0),
            control_port: 8080,
            admin_port: 9090,
            resources: crate::pod_resources::parse(crate::pod_resources::DEFAULT).unwrap(),
        }
    }

    fn env_of(pod: &Pod) -> BTreeMap<String, EnvVar> {
        pod.spec.as_ref().unwrap().containers[0]
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect()
    }

    #[test]
    fn pod_is_owned_labelled_and_named_after_the_session() {
        let s = session();
        let pod = session_pod(&s, &settings(), IDS).unwrap();
        assert_eq!(
            pod.metadata.name.as_deref(),
            Some(s.metadata.name.as_deref().unwrap())
        );
        assert_eq!(pod.metadata.namespace.as_deref(), Some("clinic"));
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("WhatsAppSession", Some(true))
        );
        assert_eq!(owner.uid, "8e3f1a2b-0000-4000-8000-000000000001");
        let l = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(l[labels::SESSION], s.metadata.name.clone().unwrap());
        assert_eq!(
            l[labels::USER_HASH],
            wasp_common::user_hash("doctor@clinic.com")
        );
        assert_eq!(l[labels::APP_MANAGED_BY], FIELD_MANAGER);
        assert!(pod_spec_hash(&pod).is_some());
    }

    #[test]
    fn send_pacing_reaches_the_pod_only_when_on() {
        let value = |pod: &Pod, name: &str| env_of(pod).get(name).and_then(|e| e.value.clone());
        let off = session_pod(&session(), &settings(), IDS).unwrap();
        assert_eq!(value(&off, "WASP_SEND_RATE_PER_MINUTE"), None);
        let mut defaults = settings();
        defaults.send_rate = (30, 5);
        let pod = session_pod(&session(), &defaults, IDS).unwrap();
        assert_eq!(
            value(&pod, "WASP_SEND_RATE_PER_MINUTE").as_deref(),
            Some("30")
        );
        assert_eq!(value(&pod, "WASP_SEND_BURST").as_deref(), Some("5"));
        let mut own = session();
        own.spec.send_rate_limit = Some(SendRateLimit {
            messages_per_minute: 6,
            burst: Some(2),
        });
        let pod = session_pod(&own, &defaults, IDS).unwrap();
        assert_eq!(
            value(&pod, "WASP_SEND_RATE_PER_MINUTE").as_deref(),
            Some("6")
        );
        assert_eq!(value(&pod, "WASP_SEND_BURST").as_deref(), Some("2"));
        assert_ne!(pod_spec_hash(&pod), pod_spec_hash(&off));
    }

    #[test]
    fn a_new_pod_is_probed_for_its_lease_every_second_then_every_ten() {
        let pod = session_pod(&session(), &settings(), IDS).unwrap();
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let probe = |p: &Option<Probe>| {
            let p = p.as_ref().unwrap();
            let path = p.http_get.as_ref().unwrap().path.clone().unwrap();
            (
                path,
                p.period_seconds.unwrap(),
                p.failure_threshold.unwrap(),
            )
        };
        // Startup and readiness ask the same question (does this process hold the lease?), so
        // the readiness probe a kubelet runs once startup passes finds the pod Ready.
        assert_eq!(probe(&c.startup_probe), ("/readyz".into(), 1, 600));
        assert_eq!(probe(&c.readiness_probe), ("/readyz".into(), 10, 3));
        assert_eq!(probe(&c.liveness_probe), ("/healthz".into(), 20, 3));
    }

    #[test]
    fn pod_is_locked_down() {
        let pod = session_pod(&session(), &settings(), IDS).unwrap();
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.automount_service_account_token, Some(false));
        let psc = spec.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            psc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        let sc = spec.containers[0].security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_owned()][..])
        );
    }

    #[test]
    fn secrets_come_from_secret_refs_never_from_values() {
        let s = session();
        let env = env_of(&session_pod(&s, &settings(), IDS).unwrap());
        assert_eq!(
            env["WASP_USER_ID"].value.as_deref(),
            Some("doctor@clinic.com")
        );
        for (name, secret, key) in [
            ("REDIS_URL", "wasp-redis".to_owned(), "url"),
            ("WASP_USER_KEYS", control_secret_name(&s), USER_KEYS_KEY),
            (
                "WASP_CONTROL_TOKEN",
                control_secret_name(&s),
                CONTROL_TOKEN_KEY,
            ),
        ] {
            assert_eq!(env[name].value, None, "{name}");
            let r = env[name]
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap();
            assert_eq!(
                (r.name.as_str(), r.key.as_str()),
                (secret.as_str(), key),
                "{name}"
            );
        }
        let optional = |name: &str| {
            env[name]
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .and_then(|r| r.optional)
        };
        assert_eq!(optional("WASP_USER_KEYS"), Some(false));
        assert_eq!(env["WASP_USER_KEY_IDS"].value.as_deref(), Some(IDS));
        let uid = env["WASP_POD_UID"].value_from.as_ref();
        assert_eq!(
            uid.and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.as_str()),
            Some("metadata.uid")
        );
        // The master key reaches no session pod, under any name.
        for e in env.values() {
            let r = e
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref());
            assert!(
                r.is_none_or(|r| r.name != "wasp-master-key"),
                "{} reads the master-key Secret",
                e.name
            );
            assert!(!e.name.contains("MASTER"), "{}", e.name);
        }
        assert_eq!(env["MAX_RECONNECT_ATTEMPTS"].value.as_deref(), Some("5"));
        assert_eq!(env["RECONNECT_INTERVAL"].value.as_deref(), Some("5000"));
    }

    #[test]
    fn spec_overrides_reach_the_pod() {
        let mut s = session();
        s.spec.pod.image = Some("registry.local/session:2".into());
        s.spec.pod.node_selector = Some(BTreeMap::from([("pool".into(), "whatsapp".into())]));
        s.spec.pod.tolerations = Some(vec![Toleration {
            key: Some("dedicated".into()),
            ..Default::default()
        }]);
        s.spec.pod.resources = Some(ResourceRequirements {
            limits: Some(BTreeMap::from([("memory".into(), Quantity("64Mi".into()))])),
            ..Default::default()
        });
        let pod = session_pod(&s, &settings(), IDS).unwrap();
        let spec = pod.spec.unwrap();
        assert_eq!(
            spec.containers[0].image.as_deref(),
            Some("registry.local/session:2")
        );
        assert_eq!(spec.node_selector.unwrap()["pool"], "whatsapp");
        assert_eq!(
            spec.tolerations.unwrap()[0].key.as_deref(),
            Some("dedicated")
        );
        assert_eq!(
            spec.containers[0]
                .resources
                .as_ref()
                .unwrap()
                .limits
                .as_ref()
                .unwrap()["memory"]
                .0,
            "64Mi"
        );
    }

    #[test]
    fn the_fleet_default_resources_apply_unless_the_session_sets_its_own() {
        let memory = |pod: &Pod, side: &str| {
            let r = pod.spec.as_ref().unwrap().containers[0].resources.clone();
            let r = r.unwrap();
            let side = if side == "limits" {
                r.limits
            } else {
                r.requests
            };
            side.unwrap()["memory"].0.clone()
        };
        let dense = PodSettings {
            resources: crate::pod_resources::parse(
                r#"{"requests":{"cpu":"5m","memory":"6Mi"},"limits":{"memory":"64Mi"}}"#,
            )
            .unwrap(),
            ..settings()
        };
        let s = session();
        let pod = session_pod(&s, &dense, IDS).unwrap();
        assert_eq!(memory(&pod, "requests"), "6Mi");
        assert_eq!(memory(&pod, "limits"), "64Mi");
        let released = session_pod(&s, &settings(), IDS).unwrap();
        assert_eq!(memory(&released, "requests"), "24Mi");
        // A new fleet default is a new pod (the kubelet cannot resize it in place on v1.20).
        assert_ne!(pod_spec_hash(&pod), pod_spec_hash(&released));

        let mut own = session();
        own.spec.pod.resources = Some(ResourceRequirements {
            requests: Some(BTreeMap::from([("memory".into(), Quantity("32Mi".into()))])),
            limits: Some(BTreeMap::from([("memory".into(), Quantity("96Mi".into()))])),
            ..Default::default()
        });
        let pod = session_pod(&own, &dense, IDS).unwrap();
        assert_eq!(memory(&pod, "requests"), "32Mi");
        assert_eq!(memory(&pod, "limits"), "96Mi");
    }

    #[test]
    fn hash_changes_with_the_pod_but_not_with_desired_state() {
        let s = session();
        let h = |s: &WhatsAppSession| {
            pod_spec_hash(&session_pod(s, &settings(), IDS).unwrap())
                .unwrap()
                .to_owned()
        };
        let base = h(&s);
        assert_eq!(base, h(&s.clone()));
        let mut other = s.clone();
        other.spec.reconnect.max_attempts = 9;
        assert_ne!(base, h(&other));
        let mut stopped = s.clone();
        stopped.spec.desired_state = DesiredState::Disconnected;
        assert_eq!(base, h(&stopped));
        // The fleet's login pacing is not the pod's spec: a new rate replaces no pod.
        let repaced = PodSettings {
            admission_rate: 2.5,
            admission_burst: 3,
            ..settings()
        };
        let repaced_pod = session_pod(&s, &repaced, IDS).unwrap();
        assert_eq!(Some(base.as_str()), pod_spec_hash(&repaced_pod));
        assert_eq!(
            env_of(&repaced_pod)["WASP_ADMISSION_RATE"].value.as_deref(),
            Some("2.5")
        );
        // A rotation (other key ids) makes another pod.
        let rotated = session_pod(&s, &settings(), "42,7").unwrap();
        assert_ne!(Some(base.as_str()), pod_spec_hash(&rotated));
    }

    #[test]
    fn control_secret_is_owned_and_holds_the_token_and_the_credentials() {
        let s = session();
        let creds = PodCredentials {
            keyring: "42:ring".into(),
            redis_url: Some("redis://wasp-session-x:pw@redis:6379".into()),
        };
        let secret = control_secret(&s, "tok", &creds).unwrap();
        assert_eq!(secret.metadata.name, Some(control_secret_name(&s)));
        assert!(secret.metadata.owner_references.is_some());
        assert!(stale_credentials(&secret, &creds).is_empty());
        let rotated = PodCredentials {
            keyring: "42:other".into(),
            ..creds.clone()
        };
        assert_eq!(
            stale_credentials(&secret, &rotated),
            vec![(USER_KEYS_KEY, "42:other")]
        );
        let data = secret.data.clone().unwrap();
        assert_eq!(data[CONTROL_TOKEN_KEY].0, b"tok");
        assert_eq!(data[USER_KEYS_KEY].0, b"42:ring");
        assert_eq!(
            data[REDIS_URL_KEY].0,
            b"redis://wasp-session-x:pw@redis:6379"
        );
        // A Secret made with shared credentials gets the URL when per-session users come.
        let shared = control_secret(
            &s,
            "tok",
            &PodCredentials {
                redis_url: None,
                ..creds.clone()
            },
        )
        .unwrap();
        assert!(!shared.data.clone().unwrap().contains_key(REDIS_URL_KEY));
        assert_eq!(
            stale_credentials(&shared, &creds),
            vec![(REDIS_URL_KEY, "redis://wasp-session-x:pw@redis:6379")]
        );
        assert!(
            !format!("{creds:?}").contains("pw"),
            "Debug shows no secret"
        );
        let (a, b) = (random_token(), random_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
    }

    #[test]
    fn with_per_session_users_the_pod_reads_its_redis_url_from_its_own_secret() {
        let s = session();
        let per_session = PodSettings {
            redis_per_session: true,
            ..settings()
        };
        let env = env_of(&session_pod(&s, &per_session, IDS).unwrap());
        let r = env["REDIS_URL"]
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .unwrap();
        assert_eq!(
            (r.name.as_str(), r.key.as_str()),
            (control_secret_name(&s).as_str(), REDIS_URL_KEY)
        );
        // Switching modes replaces the pod (its environment differs).
        assert_ne!(
            pod_spec_hash(&session_pod(&s, &per_session, IDS).unwrap()),
            pod_spec_hash(&session_pod(&s, &settings(), IDS).unwrap())
        );
    }

    #[test]
    fn a_session_without_namespace_or_uid_is_an_error_not_a_panic() {
        let s = WhatsAppSession::for_user("x");
        assert!(matches!(
            session_pod(&s, &settings(), IDS),
            Err(Error::MissingField(_))
        ));
    }
}
