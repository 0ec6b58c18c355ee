//! Command line and environment of `wasp-api`. Every field is `--flag` and an env variable; the
//! seeds' names are kept (`PORT`, `JWT_SECRET`, `SUPABASE_JWT_SECRET`, `ALLOWED_ORIGINS`,
//! `MAX_FILE_SIZE`, `LOG_LEVEL`).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use wasp_crds::StoragePolicy;

#[derive(Parser, Clone)]
#[command(name = "wasp-api", about = "wasp's authenticated gateway", version)]
pub struct Config {
    /// Port of the public API (seed `PORT`).
    #[arg(long, env = "PORT", default_value_t = 3001)]
    pub port: u16,

    /// Address the public API listens on (all interfaces by default; wasp-node moves an
    /// explicit `0.0.0.0` to the pod's own address, so replicas can share the port).
    #[arg(long, env = "WASP_API_HOST", default_value = "0.0.0.0")]
    pub host: std::net::IpAddr,

    /// Address of the admin port: `/metrics`, `/healthz`, `/readyz`.
    #[arg(long, env = "ADMIN_ADDR", default_value = "0.0.0.0:9090")]
    pub admin_addr: SocketAddr,

    /// Namespace holding the WhatsAppSession resources (the release's namespace).
    #[arg(long, env = "WASP_NAMESPACE", default_value = "default")]
    pub namespace: String,

    /// Redis, for the operator's cleanup statistics.
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: String,

    /// HS256 secret shared with the CRM (seed `JWT_SECRET`).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// HS256 secret of a Supabase project (seed `SUPABASE_JWT_SECRET`). When both secrets are
    /// set, a token signed with either is accepted (seed 003's main app may sign with both).
    #[arg(long, env = "SUPABASE_JWT_SECRET", hide_env_values = true)]
    pub supabase_jwt_secret: Option<String>,

    /// Refuse tokens without an `exp` claim (default). `false` accepts them, as seed 003 did
    /// (its example token has none): such a token never expires, so a leaked one works until
    /// the secret is rotated. Logged as a warning at start.
    #[arg(
        long,
        env = "JWT_REQUIRE_EXP",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub jwt_require_exp: bool,

    /// JWKS URL of an identity provider publishing RS256/ES256 keys.
    #[arg(long, env = "JWKS_URL")]
    pub jwks_url: Option<String>,

    /// Required `iss` claim, when set.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Accepted `aud` values (comma-separated), when set.
    #[arg(long, env = "JWT_AUDIENCE", value_delimiter = ',')]
    pub jwt_audience: Vec<String>,

    /// Clock skew allowed on `exp`/`nbf`, in seconds.
    #[arg(long, env = "JWT_LEEWAY_SECONDS", default_value_t = 30)]
    pub jwt_leeway_seconds: u64,

    /// Claim holding the caller's role(s): a dotted path such as `role` or `app_metadata.role`;
    /// its value may be a string or an array of strings.
    #[arg(long, env = "JWT_ROLE_CLAIM", default_value = "role")]
    pub jwt_role_claim: String,

    /// Role values that make a caller an admin (comma-separated).
    #[arg(
        long,
        env = "JWT_ADMIN_ROLES",
        value_delimiter = ',',
        default_value = "admin"
    )]
    pub jwt_admin_roles: Vec<String>,

    /// Shortest time between two JWKS refreshes triggered by an unknown `kid`, in seconds.
    #[arg(long, env = "JWKS_MIN_REFRESH_SECONDS", default_value_t = 30)]
    pub jwks_min_refresh_seconds: u64,

    /// The JWKS is refetched when older than this, in seconds.
    #[arg(long, env = "JWKS_MAX_AGE_SECONDS", default_value_t = 600)]
    pub jwks_max_age_seconds: u64,

    /// DEVELOPMENT ONLY: accept seed 003's insecure identities (`Authorization: UserId <id>`, and a
    /// non-JWT bearer token taken as the user id). Anyone can then act as any user.
    #[arg(long, env = "WASP_DEV_INSECURE_AUTH", default_value_t = false)]
    pub dev_insecure_auth: bool,

    /// Origins allowed by CORS (seed `ALLOWED_ORIGINS`, comma-separated; `*` for any, without
    /// credentials). Empty: no cross-origin access.
    #[arg(long, env = "ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Largest request body (seed `MAX_FILE_SIZE`, e.g. `10mb`, `512kb`, `1048576`).
    #[arg(long, env = "MAX_FILE_SIZE", default_value = "10mb", value_parser = wasp_common::size::parse_size)]
    pub max_file_size: usize,

    /// Requests per second each user may make (sustained).
    #[arg(long, env = "RATE_LIMIT_PER_SECOND", default_value_t = 20)]
    pub rate_limit_per_second: u32,

    /// Requests a user may make in a burst above the sustained rate.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 60)]
    pub rate_limit_burst: u32,

    /// Timeout of calls to Kubernetes, Redis and session pods, in milliseconds.
    #[arg(long, env = "UPSTREAM_TIMEOUT_MS", default_value_t = 10_000)]
    pub upstream_timeout_ms: u64,

    /// `json` (default) or `text`.
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    pub log_format: String,

    /// Message storage policy of the sessions the API creates on `POST /connect`: `all` (seed
    /// 003: every message is stored and delivered), `contactsOnly` (seed 000's whitelist: only
    /// messages from contacts added with `/api/whatsapp/contact/add`), `none` (delivered live,
    /// never stored). A session made by a platform team, or whose policy was set since, keeps
    /// its own.
    #[arg(
        long,
        env = "DEFAULT_STORAGE_POLICY",
        default_value = "all",
        value_parser = parse_storage_policy
    )]
    pub default_storage_policy: StoragePolicy,

    #[command(flatten)]
    pub webhooks: WebhookFlags,
}

/// Webhook settings (docs/webhooks.md).
#[derive(Clone, clap::Args)]
pub struct WebhookFlags {
    /// Key (32 bytes, hex or base64) that seals the users' webhook signing secrets in Redis.
    /// Without it users cannot set webhooks (`PUT /webhooks` answers 503).
    #[arg(long, env = "WASP_WEBHOOK_KEY", hide_env_values = true)]
    pub webhook_key: Option<String>,
    /// Webhooks for every user's events: a JSON list of `{name, url, events, secret}`.
    #[arg(
        long,
        env = "WASP_GLOBAL_WEBHOOKS",
        hide_env_values = true,
        default_value = ""
    )]
    pub global_webhooks: String,
    /// Deliver webhooks from this replica (every replica shares the work; off: serve only).
    #[arg(long, env = "WEBHOOK_DISPATCH", default_value_t = true, action = clap::ArgAction::Set)]
    pub webhook_dispatch: bool,
    /// Which URLs webhooks may call (the operator gets the same settings).
    #[command(flatten)]
    pub policy: wasp_common::webhooks::policy::UrlPolicyFlags,
    /// DNS servers that resolve webhook hosts (`ip` or `ip:port`, comma separated), instead of
    /// the system resolver; e.g. public resolvers, which cannot resolve cluster-internal names.
    /// Every address is checked with the URL policy either way.
    #[arg(long, env = "WEBHOOK_DNS_SERVERS", default_value = "")]
    pub webhook_dns_servers: String,
    /// Timeout of one delivery attempt.
    #[arg(long, env = "WEBHOOK_TIMEOUT_MS", default_value_t = 10_000)]
    pub webhook_timeout_ms: u64,
    /// The first retry's wait (doubling per attempt, with jitter).
    #[arg(long, env = "WEBHOOK_RETRY_BASE_MS", default_value_t = 1_000)]
    pub webhook_retry_base_ms: u64,
    /// The longest wait between attempts.
    #[arg(long, env = "WEBHOOK_RETRY_MAX_MS", default_value_t = 600_000)]
    pub webhook_retry_max_ms: u64,
    /// Give up on an event (dead letter) this many seconds after it happened.
    #[arg(long, env = "WEBHOOK_MAX_AGE_SECONDS", default_value_t = 86_400)]
    pub webhook_max_age_seconds: u64,
    /// The delivery lease: endpoints of a replica that died move after at most this long.
    #[arg(long, env = "WEBHOOK_LEASE_TTL_MS", default_value_t = 10_000)]
    pub webhook_lease_ttl_ms: u64,
}

impl WebhookFlags {
    pub fn policy(&self) -> crate::webhooks::policy::UrlPolicy {
        self.policy.policy()
    }

    pub fn timing(&self) -> crate::webhooks::dispatcher::Timing {
        let ms = |v: u64| Duration::from_millis(v.max(1));
        crate::webhooks::dispatcher::Timing {
            backoff: crate::webhooks::schedule::Backoff {
                base: ms(self.webhook_retry_base_ms),
                max: ms(self.webhook_retry_max_ms),
                max_age: Duration::from_secs(self.webhook_max_age_seconds.max(1)),
            },
            lease_ttl: ms(self.webhook_lease_ttl_ms.max(300)),
        }
    }
}

impl Config {
    pub fn upstream_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_timeout_ms.max(1))
    }

    /// The HS256 secrets, tried in this order: `JWT_SECRET`, then `SUPABASE_JWT_SECRET`; empty
    /// values count as unset, a repeated secret is listed once.
    pub fn hs256_secrets(&self) -> Vec<&str> {
        let mut secrets: Vec<&str> = Vec::new();
        for s in [&self.jwt_secret, &self.supabase_jwt_secret]
            .into_iter()
            .flatten()
            .map(String::as_str)
        {
            if !s.is_empty() && !secrets.contains(&s) {
                secrets.push(s);
            }
        }
        secrets
    }
}

impl std::fmt::Debug for Config {
    // Secrets are never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("admin_addr", &self.admin_addr)
            .field("namespace", &self.namespace)
            .field("hs256_secrets_set", &self.hs256_secrets().len())
            .field("jwt_require_exp", &self.jwt_require_exp)
            .field("jwks_url", &self.jwks_url)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_role_claim", &self.jwt_role_claim)
            .field("dev_insecure_auth", &self.dev_insecure_auth)
            .field("allowed_origins", &self.allowed_origins)
            .field("max_file_size", &self.max_file_size)
            .field("default_storage_policy", &self.default_storage_policy)
            .field("webhook_key_set", &self.webhooks.webhook_key.is_some())
            .field(
                "webhook_allow_http",
                &self.webhooks.policy.webhook_allow_http,
            )
            .field(
                "webhook_allow_nets",
                &self.webhooks.policy.webhook_allow_nets,
            )
            .finish_non_exhaustive()
    }
}

/// A storage policy as the CRD spells it: `all`, `contactsOnly` or `none`.
pub fn parse_storage_policy(input: &str) -> Result<StoragePolicy, String> {
    serde_json::from_value(serde_json::Value::String(input.trim().to_owned())).map_err(|_| {
        format!("invalid storage policy {input:?}: expected all, contactsOnly or none")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_seed_env_names() {
        // Defaults, unless the environment running the tests sets the variable.
        let c = Config::try_parse_from(["wasp-api"]).unwrap();
        let unset = |v: &str| std::env::var_os(v).is_none();
        if unset("PORT") {
            assert_eq!(c.port, 3001);
        }
        if unset("WASP_API_HOST") {
            assert_eq!(c.host.to_string(), "0.0.0.0");
        }
        if unset("MAX_FILE_SIZE") {
            assert_eq!(c.max_file_size, 10 << 20);
        }
        if unset("WASP_DEV_INSECURE_AUTH") {
            assert!(!c.dev_insecure_auth);
        }
        if unset("JWT_ADMIN_ROLES") {
            assert_eq!(c.jwt_admin_roles, vec!["admin".to_owned()]);
        }
        let c = Config::try_parse_from([
            "wasp-api",
            "--supabase-jwt-secret",
            "s",
            "--allowed-origins",
            "http://a,http://b",
        ])
        .unwrap();
        assert_eq!(c.hs256_secrets(), vec!["s"]);
        assert_eq!(c.allowed_origins.len(), 2);
        let debug = format!("{c:?}");
        assert!(!debug.contains("\"s\""), "{debug}");
    }

    #[test]
    fn storage_policies_are_spelled_as_in_the_crd() {
        assert_eq!(parse_storage_policy("all"), Ok(StoragePolicy::All));
        assert_eq!(
            parse_storage_policy("contactsOnly"),
            Ok(StoragePolicy::ContactsOnly)
        );
        assert_eq!(parse_storage_policy("none"), Ok(StoragePolicy::None));
        for bad in ["", "contacts", "ALL", "contacts_only"] {
            assert!(parse_storage_policy(bad).is_err(), "{bad}");
        }
        if std::env::var_os("DEFAULT_STORAGE_POLICY").is_none() {
            let c = Config::try_parse_from(["wasp-api"]).unwrap();
            assert_eq!(c.default_storage_policy, StoragePolicy::All);
        }
        let c = Config::try_parse_from(["wasp-api", "--default-storage-policy", "contactsOnly"])
            .unwrap();
        assert_eq!(c.default_storage_policy, StoragePolicy::ContactsOnly);
        assert!(Config::try_parse_from(["wasp-api", "--default-storage-policy", "x"]).is_err());
    }

    #[test]
    fn both_hs256_secrets_are_kept_in_order_and_exp_can_be_optional() {
        let c = Config::try_parse_from([
            "wasp-api",
            "--jwt-secret",
            "main-app",
            "--supabase-jwt-secret",
            "supabase",
        ])
        .unwrap();
        assert_eq!(c.hs256_secrets(), vec!["main-app", "supabase"]);
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("main-app") && !debug.contains("supabase"),
            "{debug}"
        );
        let same = Config::try_parse_from([
            "wasp-api",
            "--jwt-secret",
            "x",
            "--supabase-jwt-secret",
            "x",
            "--jwt-require-exp",
            "false",
        ])
        .unwrap();
        assert_eq!(same.hs256_secrets(), vec!["x"]);
        assert!(!same.jwt_require_exp);
        if std::env::var_os("JWT_REQUIRE_EXP").is_none() {
            assert!(
                Config::try_parse_from(["wasp-api"])
                    .unwrap()
                    .jwt_require_exp
            );
        }
        let empty = Config::try_parse_from(["wasp-api", "--jwt-secret", ""]).unwrap();
        assert!(empty.hs256_secrets().is_empty());
    }
}
