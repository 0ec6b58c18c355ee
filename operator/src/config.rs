//! Operator configuration: every field a flag and an environment variable; the seeds' names
//! (`SESSION_CLEANUP_INTERVAL`, `STALE_CONNECTION_TIMEOUT`, both in milliseconds) are kept.

use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "wasp-operator",
    version,
    about = "Reconciles WhatsAppSession resources into isolated session pods"
)]
pub struct Config {
    /// Key (32 bytes, hex or base64) that seals webhook signing secrets in Redis, the same as
    /// wasp-api's: the operator copies each `spec.webhooks` Secret there. Without it
    /// `spec.webhooks` is not delivered (condition `WebhooksHealthy` says so).
    #[arg(long, env = "WASP_WEBHOOK_KEY", hide_env_values = true)]
    pub webhook_key: Option<String>,

    /// Which URLs `spec.webhooks` may call (wasp-api checks again at every connect).
    #[command(flatten)]
    pub webhook_policy: wasp_common::webhooks::policy::UrlPolicyFlags,

    /// Watch only this namespace (the release's); all namespaces when unset.
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub namespace: Option<String>,

    /// Redis the operator reads session state from and purges on delete.
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: String,

    /// Image of the session pods.
    #[arg(long, env = "WASP_SESSION_IMAGE", default_value = concat!("ghcr.io/wasp-dev/wasp-session-pod:", env!("CARGO_PKG_VERSION")))]
    pub session_image: String,

    /// Command of the session pod container (comma-separated); the image's entrypoint when unset.
    #[arg(long, env = "WASP_SESSION_COMMAND", value_delimiter = ',')]
    pub session_command: Vec<String>,

    /// Secret (in the session's namespace) holding the Redis URL the session pods use.
    #[arg(long, env = "WASP_REDIS_SECRET", default_value = "wasp-redis")]
    pub redis_secret: String,

    /// Key of the Redis URL in that Secret.
    #[arg(long, env = "WASP_REDIS_SECRET_KEY", default_value = "url")]
    pub redis_secret_key: String,

    /// Redis credentials of the session pods. `per-session`: each pod its own ACL user, allowed
    /// only its user's keys and channels (the operator's REDIS_URL must be a Redis 7+ admin
    /// that may run ACL SETUSER/DELUSER). `shared`: every pod gets the Secret above, for a
    /// Redis that forbids ACL changes; one compromised pod can then reach every user's data.
    #[arg(long, env = "WASP_REDIS_ACL", value_enum, default_value_t = RedisAcl::PerSession)]
    pub redis_acl: RedisAcl,

    /// Secret (in the session's namespace) holding the master key: the operator derives each
    /// user's auth-state keys from it (session pods never see it). Its optional key
    /// `previousMasterKeys` lists the previous master keys during a rotation.
    #[arg(
        long,
        env = "WASP_MASTER_KEY_SECRET",
        default_value = "wasp-master-key"
    )]
    pub master_key_secret: String,

    /// Key of the master key in that Secret.
    #[arg(long, env = "WASP_MASTER_KEY_SECRET_KEY", default_value = "masterKey")]
    pub master_key_secret_key: String,

    /// WhatsApp WebSocket URL handed to session pods; their built-in default when unset.
    #[arg(long, env = "WASP_WHATSAPP_URL")]
    pub whatsapp_url: Option<String>,

    /// Largest media file a session pod sends or serves (seed `MAX_FILE_SIZE`: `10mb`, `512kb`,
    /// bytes; set it as the API's). Each pod's /tmp (memory-backed) is sized for two of them.
    #[arg(long, env = "MAX_FILE_SIZE", default_value = "10mb", value_parser = wasp_common::size::parse_size)]
    pub max_file_size: usize,

    /// History after linking, given to the session pods: newest messages kept per chat.
    #[arg(long, env = "WASP_HISTORY_PER_CHAT", default_value_t = 100)]
    pub history_per_chat: usize,

    /// History after linking: messages kept in all per linking (0: not fetched).
    #[arg(long, env = "WASP_HISTORY_MAX_MESSAGES", default_value_t = 10_000)]
    pub history_max_messages: usize,

    /// Resource requests and limits of every session pod's container, as Kubernetes'
    /// `ResourceRequirements` in JSON (chart `session.resources`); a session's
    /// `spec.pod.resources` wins. Part of the pods' spec hash: a change rolls every session pod.
    #[arg(long, env = "WASP_SESSION_RESOURCES", default_value = crate::pod_resources::DEFAULT, value_parser = crate::pod_resources::parse)]
    pub session_resources: k8s_openapi::api::core::v1::ResourceRequirements,

    /// Port of the session pods' control API.
    #[arg(long, env = "WASP_SESSION_CONTROL_PORT", default_value_t = 8080)]
    pub session_control_port: u16,

    /// Port of the session pods' health and metrics endpoints.
    #[arg(long, env = "WASP_SESSION_ADMIN_PORT", default_value_t = 9090)]
    pub session_admin_port: u16,

    /// Stale sessions are looked for this often, in milliseconds (seed `SESSION_CLEANUP_INTERVAL`).
    #[arg(long, env = "SESSION_CLEANUP_INTERVAL", default_value_t = 300_000)]
    pub session_cleanup_interval_ms: u64,

    /// A session AwaitingScan or Disconnected this long (ms) is stopped, unless its spec says
    /// otherwise (seed `STALE_CONNECTION_TIMEOUT`).
    #[arg(long, env = "STALE_CONNECTION_TIMEOUT", default_value_t = 1_800_000)]
    pub stale_connection_timeout_ms: u64,

    /// Every session is reconciled at least this often, in seconds, even without a change.
    #[arg(long, env = "WASP_RESYNC_SECONDS", default_value_t = 300)]
    pub resync_seconds: u64,

    /// Reconciles running at once.
    #[arg(long, env = "WASP_RECONCILE_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,

    /// Run only while holding the Lease (safe with several replicas).
    #[arg(long, env = "WASP_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the leader-election Lease.
    #[arg(long, env = "WASP_LEASE_NAME", default_value = "wasp-operator")]
    pub lease_name: String,

    /// Namespace of the Lease; the watched namespace, else `default`.
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Seconds a leader's Lease is valid without renewal.
    #[arg(long, env = "WASP_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,

    /// This replica's identity in the Lease; hostname plus a random suffix when unset.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Listen address of /metrics, /healthz and /readyz.
    #[arg(long, env = "WASP_ADMIN_ADDR", default_value = "0.0.0.0:8081")]
    pub admin_addr: std::net::SocketAddr,

    /// Log format: json or text.
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    pub log_format: String,

    /// Fleet-wide logins per second the session pods make to WhatsApp (a restart storm is
    /// paced to it; 0 = unpaced); passed to the session pods as `WASP_ADMISSION_RATE`.
    #[arg(long, env = "WASP_ADMISSION_RATE", default_value_t = 10.0)]
    pub admission_rate: f64,

    /// Logins let through at once before the rate applies (`WASP_ADMISSION_BURST`).
    #[arg(long, env = "WASP_ADMISSION_BURST", default_value_t = 10)]
    pub admission_burst: u32,

    /// Default send pacing of sessions without `spec.sendRateLimit`: messages a minute per
    /// session (0: off).
    #[arg(long, env = "WASP_SEND_RATE_PER_MINUTE", default_value_t = 0)]
    pub send_rate_per_minute: u32,

    /// Default send pacing: messages at once before the rate applies (0: the rate).
    #[arg(long, env = "WASP_SEND_BURST", default_value_t = 0)]
    pub send_burst: u32,
}

/// `--redis-acl`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisAcl {
    PerSession,
    Shared,
}

impl Config {
    pub fn cleanup_interval(&self) -> Duration {
        Duration::from_millis(self.session_cleanup_interval_ms.max(1))
    }

    pub fn stale_timeout(&self) -> Duration {
        Duration::from_millis(self.stale_connection_timeout_ms)
    }

    pub fn resync(&self) -> Duration {
        Duration::from_secs(self.resync_seconds.max(1))
    }

    pub fn lease_namespace(&self) -> String {
        self.lease_namespace
            .clone()
            .or_else(|| self.namespace.clone())
            .unwrap_or_else(|| "default".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_durations_are_milliseconds_and_defaults_match_the_seed() {
        let c = Config::parse_from(["wasp-operator"]);
        assert_eq!(c.cleanup_interval(), Duration::from_secs(300));
        assert_eq!(c.stale_timeout(), Duration::from_secs(1800));
        let c = Config::parse_from([
            "wasp-operator",
            "--stale-connection-timeout-ms",
            "1500",
            "--namespace",
            "clinic",
        ]);
        assert_eq!(c.stale_timeout(), Duration::from_millis(1500));
        assert_eq!(c.lease_namespace(), "clinic");
    }

    #[test]
    fn session_pods_get_their_own_redis_users_unless_told_to_share() {
        assert_eq!(Config::parse_from(["x"]).redis_acl, RedisAcl::PerSession);
        assert_eq!(
            Config::parse_from(["x", "--redis-acl", "shared"]).redis_acl,
            RedisAcl::Shared
        );
        assert!(Config::try_parse_from(["x", "--redis-acl", "none"]).is_err());
    }

    #[test]
    fn leader_election_can_be_switched_off() {
        assert!(Config::parse_from(["x"]).leader_election);
        assert!(!Config::parse_from(["x", "--leader-election", "false"]).leader_election);
    }
}
