//! The master keys, held by the operator alone: read from the master-key Secret of a session's
//! namespace (cached, so thousands of reconciles cost one GET per namespace every
//! [`KEYS_TTL`]), they derive each user's keyring (`wasp_common::crypto::user_keyring`), which
//! goes into that session's own control Secret. Session pods never see a master key.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use prometheus_client::metrics::counter::Counter;
use wasp_common::crypto::{MasterKey, keyring_ids, redis_password, user_keyring};

use crate::resources::PREVIOUS_MASTER_KEYS_KEY;

/// How long a read of the master-key Secret is used before it is read again: a rotation (or a
/// Secret created after the fact) is seen within this.
pub const KEYS_TTL: Duration = Duration::from_secs(10);

/// The current master key and the previous ones (rotation). `Debug` shows no key.
#[derive(Clone)]
pub struct MasterKeys {
    current: MasterKey,
    previous: Vec<MasterKey>,
}

impl std::fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKeys(ids {})", self.ids())
    }
}

impl MasterKeys {
    pub fn new(current: MasterKey, previous: Vec<MasterKey>) -> Self {
        Self { current, previous }
    }

    /// The keys of a master-key Secret: `key` holds the current one, the optional
    /// `previousMasterKeys` the previous ones. The error says what is wrong, never a key's text.
    pub fn from_secret(secret: &Secret, name: &str, key: &str) -> Result<Self, String> {
        let data = secret.data.clone().unwrap_or_default();
        let text = |k: &str| -> Result<Option<String>, String> {
            data.get(k)
                .map(|v| {
                    String::from_utf8(v.0.clone())
                        .map_err(|_| format!("key {k} of master-key Secret {name} is not text"))
                })
                .transpose()
        };
        let current =
            text(key)?.ok_or_else(|| format!("master-key Secret {name} has no key {key}"))?;
        let current = MasterKey::parse(&current).map_err(|_| {
            format!(
                "key {key} of master-key Secret {name} is not a 32-byte key (64 hex characters or base64)"
            )
        })?;
        let previous = match text(PREVIOUS_MASTER_KEYS_KEY)? {
            Some(list) => MasterKey::parse_list(&list).map_err(|(i, _)| {
                format!(
                    "entry #{i} of {PREVIOUS_MASTER_KEYS_KEY} in master-key Secret {name} is not a 32-byte key"
                )
            })?,
            None => Vec::new(),
        };
        Ok(Self { current, previous })
    }

    /// The user's keyring: what goes into the session's control Secret.
    pub fn keyring(&self, user_id: &str) -> String {
        user_keyring(&self.current, &self.previous, user_id)
    }

    /// The passwords of the user's Redis ACL user, the current key's first (the one the pod
    /// gets), then each previous key's (accepted during a rotation, by pods not yet replaced).
    pub fn redis_passwords(&self, user_id: &str) -> Vec<String> {
        let mut out = vec![redis_password(&self.current, user_id)];
        for k in &self.previous {
            let p = redis_password(k, user_id);
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }

    /// The keys' ids, current first: the pod's `WASP_USER_KEY_IDS` (so a rotation changes the
    /// pod's spec hash and replaces it).
    pub fn ids(&self) -> String {
        keyring_ids(&self.current, &self.previous)
    }
}

/// Why a session's keys are unavailable: shown as its `lastError` (Ready reason
/// `MasterKeyUnavailable`) until the Secret is fixed.
pub type KeyProblem = String;

/// One read of one namespace's master-key Secret.
struct Cached {
    at: Instant,
    keys: Result<Arc<MasterKeys>, KeyProblem>,
}

/// The master keys per namespace, read at most once per [`KEYS_TTL`] each.
pub struct KeyCache {
    client: Client,
    secret: String,
    key: String,
    ttl: Duration,
    reads: Counter,
    // A tokio mutex held across the GET: concurrent reconciles wait for one read instead of
    // each reading.
    entries: tokio::sync::Mutex<HashMap<String, Cached>>,
}

impl KeyCache {
    /// `reads` counts the GETs (`wasp_operator_master_key_reads_total`).
    pub fn new(client: Client, secret: &str, key: &str, reads: Counter) -> Self {
        Self {
            client,
            secret: secret.to_owned(),
            key: key.to_owned(),
            ttl: KEYS_TTL,
            reads,
            entries: tokio::sync::Mutex::default(),
        }
    }

    /// The master keys of `namespace`: `Ok(Err(problem))` when the Secret is missing or bad
    /// (remembered for the TTL too), `Err` when the API server could not be asked (not cached:
    /// the reconcile is retried).
    pub async fn get(
        &self,
        namespace: &str,
    ) -> Result<Result<Arc<MasterKeys>, KeyProblem>, kube::Error> {
        let mut entries = self.entries.lock().await;
        if let Some(c) = entries.get(namespace)
            && c.at.elapsed() < self.ttl
        {
            return Ok(c.keys.clone());
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let name = format!("{namespace}/{}", self.secret);
        self.reads.inc();
        let keys = match api.get_opt(&self.secret).await? {
            Some(secret) => MasterKeys::from_secret(&secret, &name, &self.key).map(Arc::new),
            None => Err(format!("master-key Secret {name} not found")),
        };
        entries.insert(
            namespace.to_owned(),
            Cached {
                at: Instant::now(),
                keys: keys.clone(),
            },
        );
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use wasp_common::crypto::{AuthCipher, key_id};

    use super::*;

    fn secret(entries: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                entries
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn keys_come_from_the_secret_and_derive_the_pods_cipher() {
        let (a, b) = ("01".repeat(32), "02".repeat(32));
        let keys = MasterKeys::from_secret(
            &secret(&[
                ("masterKey", &b),
                (PREVIOUS_MASTER_KEYS_KEY, &format!("# old\n{a}\n")),
            ]),
            "ns/wasp-master-key",
            "masterKey",
        )
        .unwrap();
        let (ka, kb) = (MasterKey::parse(&a).unwrap(), MasterKey::parse(&b).unwrap());
        assert_eq!(keys.ids(), format!("{},{}", key_id(&kb), key_id(&ka)));
        let pod = AuthCipher::from_keyring(&keys.keyring("alice")).unwrap();
        let sealed = AuthCipher::with_previous(&kb, &[ka], "alice")
            .seal(b"k", b"v")
            .unwrap();
        assert_eq!(pod.open(b"k", &sealed).unwrap(), b"v");
        assert!(!format!("{keys:?}").contains(&b));
        // Without previous keys: one id.
        let one = MasterKeys::from_secret(&secret(&[("masterKey", &b)]), "s", "masterKey").unwrap();
        assert_eq!(one.ids(), key_id(&kb).to_string());
    }

    #[test]
    fn a_bad_secret_is_a_problem_that_names_no_key() {
        let good = "01".repeat(32);
        for (s, says) in [
            (secret(&[]), "has no key masterKey"),
            (
                secret(&[("masterKey", "short-secret")]),
                "not a 32-byte key",
            ),
            (
                secret(&[("masterKey", &good), (PREVIOUS_MASTER_KEYS_KEY, "x-secret")]),
                "entry #1 of previousMasterKeys",
            ),
        ] {
            let err = MasterKeys::from_secret(&s, "ns/mk", "masterKey").unwrap_err();
            assert!(err.contains(says) && err.contains("ns/mk"), "{err}");
            assert!(!err.contains("secret"), "{err}");
        }
    }
}
