//! Spec and status of `WhatsAppSession`. Field names and defaults follow the seeds' environment
//! variables where one exists (`MAX_RECONNECT_ATTEMPTS`, `RECONNECT_INTERVAL`,
//! `STALE_CONNECTION_TIMEOUT`), so a deployment's settings translate one to one.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of one user's WhatsApp session.
// kube-derive takes one `printcolumn(...)` per column; clippy mistakes their keys for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "wasp.dev",
    version = "v1alpha1",
    kind = "WhatsAppSession",
    plural = "whatsappsessions",
    shortname = "was",
    category = "wasp",
    namespaced,
    status = "WhatsAppSessionStatus",
    derive = "PartialEq",
    doc = "One user's isolated WhatsApp Web session, run as its own pod.",
    printcolumn(
        name = "User",
        type_ = "string",
        json_path = ".spec.userId",
        priority = "1"
    ),
    printcolumn(
        name = "Desired",
        type_ = "string",
        json_path = ".spec.desiredState",
        priority = "1"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Phone", type_ = "string", json_path = ".status.phoneNumber"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Pod",
        type_ = "string",
        json_path = ".status.podName",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct WhatsAppSessionSpec {
    /// The CRM/ERP user this session belongs to, as in the JWT (`sub`, `userId` or `user_id`).
    #[schemars(length(min = 1, max = 512))]
    pub user_id: String,

    /// `connected` runs a session pod; `disconnected` stops it (auth state is kept).
    #[serde(default)]
    pub desired_state: DesiredState,

    /// How a new device is paired with the phone.
    #[serde(default)]
    pub pairing: Pairing,

    /// Which inbound messages are stored, and for how long.
    #[serde(default)]
    pub storage: Storage,

    /// What the session pod does when its WhatsApp connection drops.
    #[serde(default)]
    pub reconnect: ReconnectPolicy,

    /// A session that stays AwaitingScan or Disconnected this long is switched to `disconnected`
    /// (seed `STALE_CONNECTION_TIMEOUT`; the operator's default applies when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub stale_timeout_seconds: Option<u64>,

    /// Send pacing of this session: past it a send gets 429 with `Retry-After` and is not sent
    /// (the first defence against a ban for bulk sending). Unset: the operator's default
    /// (`--send-rate-per-minute`, chart `session.sendRateLimit`; off unless set there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_rate_limit: Option<SendRateLimit>,

    /// Per-session overrides of the session pod.
    #[serde(default, skip_serializing_if = "PodOverrides::is_empty")]
    pub pod: PodOverrides,

    /// Webhooks that receive this session's events (docs/webhooks.md), besides the one the user
    /// sets through `PUT /webhooks`. The operator keeps them in step; the `WebhooksHealthy`
    /// condition says when one is refused or keeps failing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub webhooks: Vec<WebhookSpec>,
}

/// One webhook of `spec.webhooks`; its endpoint id (in `GET /webhooks`, dead letters) is
/// `spec-<name>`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// Short name, unique in the list (`[a-z0-9-]`, at most 40).
    #[schemars(length(min = 1, max = 40), regex(pattern = r"^[a-z0-9-]+$"))]
    pub name: String,
    /// Where events are POSTed: `https://…`; internal addresses are refused unless the
    /// operator's webhook allow-lists name them.
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// Event types (`message`, `message_create`, `message_ack`, `message_reaction`,
    /// `message_edit`, `message_revoke_everyone`, `status`, `ready`, `disconnected`, `error`,
    /// `log`), or `["*"]`; default `["message"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    /// The Secret (in the session's namespace) and key holding the signing secret,
    /// `whsec_` + base64 (Standard Webhooks).
    pub secret_ref: SecretKeyRef,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DesiredState {
    #[default]
    Connected,
    Disconnected,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pairing {
    #[serde(default)]
    pub method: PairingMethod,
    /// The phone number to pair with (E.164, e.g. `+41791234567`); required for `pairingCode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PairingMethod {
    /// Scan a QR code with the phone (seed 003's flow).
    #[default]
    Qr,
    /// Enter an 8-character code on the phone for `phoneNumber`.
    PairingCode,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    #[serde(default)]
    pub policy: StoragePolicy,
    /// Stored messages older than this are removed; unset keeps them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub retention_days: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum StoragePolicy {
    /// Store every message (seed 003).
    #[default]
    All,
    /// Store messages only from the user's known contacts (seed 000's whitelist).
    ContactsOnly,
    /// Store nothing; events are still delivered live.
    None,
}

/// `spec.sendRateLimit`: messages (texts, media, reactions, edits, revokes) a minute, and how
/// many may go at once before the rate applies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendRateLimit {
    /// Messages a minute; 0 turns pacing off for this session.
    #[schemars(range(min = 0, max = 100_000))]
    pub messages_per_minute: u32,
    /// Messages at once before the rate applies (default: `messagesPerMinute`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000))]
    pub burst: Option<u32>,
}

impl SendRateLimit {
    /// The pacing in force: this session's, else the operator's default `(rate, burst)`
    /// (pure; rate 0 = off, burst 0 = the rate).
    pub fn resolve(spec: Option<&Self>, default: (u32, u32)) -> (u32, u32) {
        match spec {
            Some(s) => (s.messages_per_minute, s.burst.unwrap_or(0)),
            None => default,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReconnectPolicy {
    /// Attempts before the session is Failed (seed `MAX_RECONNECT_ATTEMPTS`).
    #[serde(default = "default_max_attempts")]
    #[schemars(range(min = 0, max = 1000))]
    pub max_attempts: u32,
    /// Base delay between attempts, jittered and growing (seed `RECONNECT_INTERVAL`, ms).
    #[serde(default = "default_base_interval_ms")]
    #[schemars(range(min = 100, max = 3_600_000))]
    pub base_interval_ms: u64,
}

fn default_max_attempts() -> u32 {
    5
}

fn default_base_interval_ms() -> u64 {
    5_000
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            base_interval_ms: default_base_interval_ms(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Session pod image instead of the operator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Requests and limits of this session's pod instead of the operator's fleet-wide ones
    /// (`--session-resources`, chart `session.resources`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
}

impl PodOverrides {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// Observed state, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WhatsAppSessionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// When `phase` last changed (drives stale-session cleanup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_since: Option<Time>,
    /// `Ready`, `Paired` and `PodReady`, each with a reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// `ip:port` of the session pod's control API, set while the pod is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<Time>,
    #[serde(default)]
    pub reconnect_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    /// Accepted; no pod yet.
    Pending,
    /// The pod is starting, or its client is connecting.
    Starting,
    /// Waiting for the phone to scan the QR code (or enter the pairing code).
    AwaitingScan,
    Connected,
    Reconnecting,
    Disconnected,
    /// The phone removed this device; a new scan is needed.
    LoggedOut,
    Failed,
}

impl Phase {
    pub const ALL: [Phase; 8] = [
        Phase::Pending,
        Phase::Starting,
        Phase::AwaitingScan,
        Phase::Connected,
        Phase::Reconnecting,
        Phase::Disconnected,
        Phase::LoggedOut,
        Phase::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Starting => "Starting",
            Phase::AwaitingScan => "AwaitingScan",
            Phase::Connected => "Connected",
            Phase::Reconnecting => "Reconnecting",
            Phase::Disconnected => "Disconnected",
            Phase::LoggedOut => "LoggedOut",
            Phase::Failed => "Failed",
        }
    }
}

impl From<wasp_common::SessionPhase> for Phase {
    fn from(p: wasp_common::SessionPhase) -> Self {
        use wasp_common::SessionPhase as S;
        match p {
            S::Starting => Phase::Starting,
            S::AwaitingScan => Phase::AwaitingScan,
            S::Connected => Phase::Connected,
            S::Reconnecting => Phase::Reconnecting,
            S::Disconnected => Phase::Disconnected,
            S::LoggedOut => Phase::LoggedOut,
            S::Failed => Phase::Failed,
        }
    }
}

impl WhatsAppSession {
    /// A session for `user_id` with default settings, named by [`crate::names::session_name`].
    pub fn for_user(user_id: &str) -> Self {
        WhatsAppSession::new(
            &crate::names::session_name(user_id),
            WhatsAppSessionSpec {
                user_id: user_id.to_owned(),
                desired_state: DesiredState::Connected,
                pairing: Pairing::default(),
                storage: Storage::default(),
                reconnect: ReconnectPolicy::default(),
                stale_timeout_seconds: None,
                send_rate_limit: None,
                pod: PodOverrides::default(),
                webhooks: Vec::new(),
            },
        )
    }
}

#[cfg(test)]
mod send_rate_tests {
    use super::SendRateLimit;

    #[test]
    fn a_sessions_own_pacing_wins_over_the_default() {
        assert_eq!(SendRateLimit::resolve(None, (0, 0)), (0, 0));
        assert_eq!(SendRateLimit::resolve(None, (30, 5)), (30, 5));
        let own = SendRateLimit {
            messages_per_minute: 6,
            burst: Some(2),
        };
        assert_eq!(SendRateLimit::resolve(Some(&own), (30, 5)), (6, 2));
        let off = SendRateLimit {
            messages_per_minute: 0,
            burst: None,
        };
        assert_eq!(SendRateLimit::resolve(Some(&off), (30, 5)), (0, 0));
    }
}
