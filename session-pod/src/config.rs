//! The pod's configuration: exactly the environment the operator sets (`session_env`), plus
//! file paths for keys in a Secret mounted as a file. The auth-state keys come either as this
//! user's keyring (`WASP_USER_KEYS`, what the operator gives: the pod never sees the master key)
//! or, for direct use, as the master key(s) the keyring is derived from.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use wasp_common::crypto::AuthCipher;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PairingMethod {
    #[value(name = "qr")]
    Qr,
    #[value(name = "pairingCode")]
    PairingCode,
}

/// Which inbound messages are stored (seed 000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
pub enum StoragePolicy {
    #[value(name = "all")]
    All,
    /// Only messages from contacts on the whitelist; others are counted and logged.
    #[value(name = "contactsOnly")]
    ContactsOnly,
    #[value(name = "none")]
    None,
}

pub const DEFAULT_WHATSAPP_URL: &str = "wss://web.whatsapp.com/ws/chat";

#[derive(Clone, Parser)]
#[command(name = "wasp-session-pod", version, about)]
pub struct Config {
    /// The CRM user this pod serves.
    #[arg(long, env = "WASP_USER_ID")]
    pub user_id: String,
    /// The WhatsAppSession this pod belongs to (named in state-change announcements).
    #[arg(long, env = "WASP_SESSION_NAME")]
    pub session_name: String,
    #[arg(long, env = "WASP_SESSION_NAMESPACE")]
    pub session_namespace: String,
    #[arg(long, env = "WASP_CONTROL_ADDR", default_value = "0.0.0.0:8080")]
    pub control_addr: SocketAddr,
    #[arg(long, env = "WASP_ADMIN_ADDR", default_value = "0.0.0.0:9090")]
    pub admin_addr: SocketAddr,
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: String,
    /// This user's auth-state keyring (`<key id>:<base64 key>` entries, current first), as the
    /// operator derives it from the master keys. Instead of the master-key settings.
    #[arg(long, env = "WASP_USER_KEYS", hide_env_values = true)]
    pub user_keys: Option<String>,
    /// File holding this user's keyring (a mounted Secret); wins over `WASP_USER_KEYS`.
    #[arg(long, env = "WASP_USER_KEYS_FILE")]
    pub user_keys_file: Option<PathBuf>,
    /// 32-byte master key (64 hex chars or base64), for running without the operator; the
    /// operator passes `WASP_USER_KEYS` instead. Prefer `--master-key-file`.
    #[arg(long, env = "WASP_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
    /// File holding the master key (a mounted Secret); wins over `WASP_MASTER_KEY`.
    #[arg(long, env = "WASP_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// Master keys that were current before (rotation): values sealed with them are still
    /// read, and re-sealed with the current key at start. Separated by commas or whitespace.
    #[arg(long, env = "WASP_PREVIOUS_MASTER_KEYS", hide_env_values = true)]
    pub previous_master_keys: Option<String>,
    /// File with the previous master keys, one per line (`#` comments); wins over
    /// `WASP_PREVIOUS_MASTER_KEYS`.
    #[arg(long, env = "WASP_PREVIOUS_MASTER_KEYS_FILE")]
    pub previous_master_keys_file: Option<PathBuf>,
    /// Bearer token wasp-api (and the operator's finalizer) presents to the control API.
    #[arg(long, env = "WASP_CONTROL_TOKEN", hide_env_values = true)]
    pub control_token: String,
    #[arg(long, env = "WASP_PAIRING_METHOD", value_enum, default_value = "qr")]
    pub pairing_method: PairingMethod,
    /// Phone number for the pairing-code method.
    #[arg(long, env = "WASP_PAIRING_PHONE")]
    pub pairing_phone: Option<String>,
    #[arg(long, env = "WASP_STORAGE_POLICY", value_enum, default_value = "all")]
    pub storage_policy: StoragePolicy,
    /// Stored messages older than this are deleted (0 = keep forever).
    #[arg(long, env = "WASP_RETENTION_DAYS", default_value_t = 30)]
    pub retention_days: u32,
    #[arg(long, env = "MAX_RECONNECT_ATTEMPTS", default_value_t = 5)]
    pub max_reconnect_attempts: u32,
    /// Base reconnect interval in milliseconds (exponential with jitter from here).
    #[arg(long, env = "RECONNECT_INTERVAL", default_value_t = 5000)]
    pub reconnect_interval: u64,
    #[arg(long, env = "WASP_WHATSAPP_URL", default_value = DEFAULT_WHATSAPP_URL)]
    pub whatsapp_url: String,
    /// Fleet-wide logins per second to WhatsApp (all session pods share one bucket in Redis,
    /// `wasp:admission`); 0 turns pacing off.
    #[arg(long, env = "WASP_ADMISSION_RATE", default_value_t = 10.0)]
    pub admission_rate: f64,
    /// Logins let through at once before the rate applies.
    #[arg(long, env = "WASP_ADMISSION_BURST", default_value_t = 10)]
    pub admission_burst: u32,
    /// Lease time-to-live in milliseconds (renewed at half of it, every fifteenth after a failed
    /// renewal; the socket is dropped after two thirds without one). It bounds only a handover
    /// between pods after an ungraceful loss (a stopped pod releases its lease, a restarted
    /// process takes its own pod's over at once), so 30 s, not 15: half the renewals of every
    /// idle pod, well inside the 40 s a cluster takes to notice a lost node.
    #[arg(long, env = "WASP_LEASE_TTL_MS", default_value_t = 30_000)]
    pub lease_ttl_ms: u64,
    /// The pod's UID (the operator sets it from the downward API). A process restarted in the
    /// same pod takes over a lease its dead predecessor left instead of waiting for it to expire:
    /// a kubelet restarts a container only after the last one exited.
    #[arg(long, env = "WASP_POD_UID")]
    pub pod_uid: Option<String>,
    /// Send pacing: messages (texts, media, reactions, edits, revokes) a minute; 0 = no limit.
    /// Past it a send is refused with 429 and `Retry-After` (CR `spec.sendRateLimit`).
    #[arg(long, env = "WASP_SEND_RATE_PER_MINUTE", default_value_t = 0)]
    pub send_rate_per_minute: u32,
    /// Send pacing: messages that may go at once before the rate applies (0 = the rate).
    #[arg(long, env = "WASP_SEND_BURST", default_value_t = 0)]
    pub send_burst: u32,
    /// Approximate cap of the durable event stream (XADD MAXLEN ~).
    #[arg(long, env = "WASP_EVENTS_MAXLEN", default_value_t = 10_000)]
    pub events_maxlen: usize,
    /// Largest media file a send takes and a download serves (seed `MAX_FILE_SIZE`: `10mb`,
    /// `512kb`, bytes). Files pass through /tmp (encrypted before an upload, decrypted and
    /// checked before a download), so /tmp must hold about two of them.
    #[arg(long, env = "MAX_FILE_SIZE", default_value = "10mb", value_parser = wasp_common::size::parse_size)]
    pub max_file_size: usize,
    /// History after linking: the newest messages kept per chat.
    #[arg(long, env = "WASP_HISTORY_PER_CHAT", default_value_t = 100)]
    pub history_per_chat: usize,
    /// History after linking: messages kept in all (0: history is not fetched).
    #[arg(long, env = "WASP_HISTORY_MAX_MESSAGES", default_value_t = 10_000)]
    pub history_max_messages: usize,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field(
                "session",
                &format!("{}/{}", self.session_namespace, self.session_name),
            )
            .field("control_addr", &self.control_addr)
            .field("admin_addr", &self.admin_addr)
            .field("pairing_method", &self.pairing_method)
            .field("storage_policy", &self.storage_policy)
            .field("whatsapp_url", &self.whatsapp_url)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no auth-state key: set WASP_USER_KEYS(_FILE) (the user's keyring) or WASP_MASTER_KEY(_FILE)"
    )]
    NoMasterKey,
    #[error(
        "both a user keyring (WASP_USER_KEYS/_FILE) and master keys (WASP_MASTER_KEY/_FILE, \
         WASP_PREVIOUS_MASTER_KEYS/_FILE) are set: give exactly one"
    )]
    TwoKeySources,
    #[error("reading the user keys file: {0}")]
    UserKeysFile(std::io::Error),
    #[error("reading the master key file: {0}")]
    MasterKeyFile(std::io::Error),
    #[error("reading the previous master keys file: {0}")]
    PreviousKeysFile(std::io::Error),
    #[error("previous master key #{0}: {1}")]
    PreviousKey(usize, wasp_common::crypto::CryptoError),
    #[error(transparent)]
    MasterKey(#[from] wasp_common::crypto::CryptoError),
    #[error("the pairingCode method needs WASP_PAIRING_PHONE")]
    NoPairingPhone,
    #[error("invalid pairing phone: {0}")]
    PairingPhone(String),
    #[error(
        "built with the insecure-sim feature (certificate chain not verified): refusing the \
         non-loopback WhatsApp URL {0}"
    )]
    InsecureNonLoopback(String),
    #[error("the control token must not be empty")]
    EmptyToken,
}

impl Config {
    /// The user's auth-state cipher, from exactly one source: the keyring, or the master key
    /// (with any previous ones) it would be derived from.
    pub fn cipher(&self) -> Result<AuthCipher, ConfigError> {
        let keyring = self.user_keys_file.is_some() || self.user_keys.is_some();
        let master = self.master_key_file.is_some()
            || self.master_key.is_some()
            || self.previous_master_keys_file.is_some()
            || self.previous_master_keys.is_some();
        if keyring && master {
            return Err(ConfigError::TwoKeySources);
        }
        if keyring {
            let text = match (&self.user_keys_file, &self.user_keys) {
                (Some(path), _) => {
                    std::fs::read_to_string(path).map_err(ConfigError::UserKeysFile)?
                }
                (None, Some(k)) => k.clone(),
                (None, None) => unreachable!("checked above"),
            };
            return Ok(AuthCipher::from_keyring(&text)?);
        }
        Ok(AuthCipher::with_previous(
            &self.master_key()?,
            &self.previous_master_keys()?,
            &self.user_id,
        ))
    }

    pub fn master_key(&self) -> Result<wasp_common::crypto::MasterKey, ConfigError> {
        let text = match (&self.master_key_file, &self.master_key) {
            (Some(path), _) => std::fs::read_to_string(path).map_err(ConfigError::MasterKeyFile)?,
            (None, Some(k)) => k.clone(),
            (None, None) => return Err(ConfigError::NoMasterKey),
        };
        Ok(wasp_common::crypto::MasterKey::parse(&text)?)
    }

    /// The previous master keys (none when neither setting is given).
    pub fn previous_master_keys(&self) -> Result<Vec<wasp_common::crypto::MasterKey>, ConfigError> {
        let text = match (&self.previous_master_keys_file, &self.previous_master_keys) {
            (Some(path), _) => {
                std::fs::read_to_string(path).map_err(ConfigError::PreviousKeysFile)?
            }
            (None, Some(k)) => k.clone(),
            (None, None) => return Ok(Vec::new()),
        };
        parse_key_list(&text)
    }

    /// Checks what clap cannot: pairing phone, token, and the simulator-trust rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.control_token.is_empty() {
            return Err(ConfigError::EmptyToken);
        }
        if self.pairing_method == PairingMethod::PairingCode {
            let phone = self
                .pairing_phone
                .as_deref()
                .ok_or(ConfigError::NoPairingPhone)?;
            wasp_common::phone::normalize_phone(phone)
                .map_err(|e| ConfigError::PairingPhone(e.to_string()))?;
        }
        if cfg!(feature = "insecure-sim") && !is_loopback_url(&self.whatsapp_url) {
            return Err(ConfigError::InsecureNonLoopback(self.whatsapp_url.clone()));
        }
        Ok(())
    }
}

/// Keys separated by commas, spaces or newlines; `#` starts a comment to the end of the line.
fn parse_key_list(text: &str) -> Result<Vec<wasp_common::crypto::MasterKey>, ConfigError> {
    wasp_common::crypto::MasterKey::parse_list(text)
        .map_err(|(i, e)| ConfigError::PreviousKey(i, e))
}

/// Whether a ws(s) URL's host is a loopback address (`localhost`, 127.0.0.0/8, `::1`).
pub fn is_loopback_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("wss://"))
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return false;
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previous_keys_are_a_list_with_comments() {
        let a = "01".repeat(32);
        let b = data_encoding::BASE64.encode(&[2u8; 32]);
        let keys =
            parse_key_list(&format!("# rotated 2026-11\n{a}, {b}\n\n  {a} # again\n")).unwrap();
        assert_eq!(keys.len(), 3);
        assert!(parse_key_list("").unwrap().is_empty());
        assert!(matches!(
            parse_key_list(&format!("{a},nope")),
            Err(ConfigError::PreviousKey(2, _))
        ));
        // The error names the position only, never the text.
        let err = parse_key_list(&format!("{a},nope"))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("nope"), "{err}");
    }

    fn config(env: &[(&str, &str)]) -> Config {
        let mut args = vec![
            "wasp-session-pod".to_owned(),
            "--user-id=alice".into(),
            "--session-name=s".into(),
            "--session-namespace=n".into(),
            "--redis-url=redis://x".into(),
            "--control-token=t".into(),
        ];
        args.extend(env.iter().map(|(k, v)| format!("--{k}={v}")));
        Config::try_parse_from(args).unwrap()
    }

    #[test]
    fn exactly_one_key_source_and_both_give_the_same_cipher() {
        use wasp_common::crypto::{MasterKey, user_keyring};
        let (a, b) = ("01".repeat(32), "02".repeat(32));
        let (ka, kb) = (MasterKey::parse(&a).unwrap(), MasterKey::parse(&b).unwrap());
        let ring = user_keyring(&kb, &[ka], "alice");
        let from_ring = config(&[("user-keys", &ring)]).cipher().unwrap();
        let from_master = config(&[("master-key", &b), ("previous-master-keys", &a)])
            .cipher()
            .unwrap();
        assert_eq!(from_ring.key_ids(), from_master.key_ids());
        let sealed = from_master.seal(b"k", b"v").unwrap();
        assert_eq!(from_ring.open(b"k", &sealed).unwrap(), b"v");
        // The keyring from a file, as a mounted Secret.
        let dir = std::env::temp_dir().join(format!("wasp-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("userKeys");
        std::fs::write(&file, format!("{ring}\n")).unwrap();
        let from_file = config(&[("user-keys-file", file.to_str().unwrap())])
            .cipher()
            .unwrap();
        assert_eq!(from_file.open(b"k", &sealed).unwrap(), b"v");
        std::fs::remove_dir_all(&dir).unwrap();

        for both in [
            &[("user-keys", ring.as_str()), ("master-key", b.as_str())][..],
            &[
                ("user-keys", ring.as_str()),
                ("previous-master-keys", a.as_str()),
            ],
        ] {
            assert!(matches!(
                config(both).cipher(),
                Err(ConfigError::TwoKeySources)
            ));
        }
        assert!(matches!(
            config(&[]).cipher(),
            Err(ConfigError::NoMasterKey)
        ));
        let err = config(&[("user-keys", "5:secretish")])
            .cipher()
            .unwrap_err();
        assert!(!err.to_string().contains("secretish"), "{err}");
    }

    #[test]
    fn loopback_urls() {
        for ok in [
            "ws://127.0.0.1:8480/ws/chat",
            "ws://localhost/ws/chat",
            "wss://[::1]:443/x",
            "ws://127.1.2.3:1",
        ] {
            assert!(is_loopback_url(ok), "{ok}");
        }
        for bad in [
            "wss://web.whatsapp.com/ws/chat",
            "ws://127.0.0.1.evil.com/",
            "ws://user@127.0.0.1/",
            "http://127.0.0.1/",
            "ws://10.0.0.1/",
        ] {
            assert!(!is_loopback_url(bad), "{bad}");
        }
    }
}
