//! Public keys of an identity provider, fetched from its JWKS URL and cached. Only RSA keys (RS256)
//! and P-256 EC keys (ES256) are kept, each bound to its one algorithm, so a token can never pick
//! the algorithm a key is used with (no algorithm confusion; `oct` keys are ignored). The set is
//! refetched when older than `max_age`, and when a token names an unknown `kid` — at most once per
//! `min_refresh` — so a key rotation is picked up without letting forged `kid`s hammer the provider.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::{Mutex, RwLock};

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("fetching the JWKS failed: {0}")]
    Fetch(String),
    #[error("the JWKS is not valid JSON: {0}")]
    Parse(String),
}

#[derive(Clone)]
pub struct JwksKey {
    pub alg: Algorithm,
    pub key: DecodingKey,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, JwksKey>,
    /// Keys without a `kid`, usable only by tokens without one.
    anonymous: Vec<JwksKey>,
    fetched_at: Option<Instant>,
}

pub struct JwksCache {
    url: String,
    http: reqwest::Client,
    min_refresh: Duration,
    max_age: Duration,
    keys: RwLock<Keys>,
    /// Serialises fetches; holds when the last fetch was attempted (success or not).
    last_attempt: Mutex<Option<Instant>>,
}

/// The algorithm a JWK may be used with, or `None` when wasp does not accept it.
pub fn key_algorithm(jwk: &Jwk) -> Option<Algorithm> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let natural = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(natural),
        Some(KeyAlgorithm::RS256) if natural == Algorithm::RS256 => Some(natural),
        Some(KeyAlgorithm::ES256) if natural == Algorithm::ES256 => Some(natural),
        Some(_) => None,
    }
}

fn index(set: &JwkSet) -> Keys {
    let mut keys = Keys::default();
    for jwk in &set.keys {
        let Some(alg) = key_algorithm(jwk) else {
            continue;
        };
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        let entry = JwksKey { alg, key };
        match &jwk.common.key_id {
            Some(kid) => {
                keys.by_kid.insert(kid.clone(), entry);
            }
            None => keys.anonymous.push(entry),
        }
    }
    keys
}

impl JwksCache {
    pub fn new(url: String, timeout: Duration, min_refresh: Duration, max_age: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        Self {
            url,
            http,
            min_refresh,
            max_age,
            keys: RwLock::new(Keys::default()),
            last_attempt: Mutex::new(None),
        }
    }

    /// The keys a token with `kid` (and header algorithm `alg`) may be verified with.
    pub async fn keys_for(&self, kid: Option<&str>, alg: Algorithm) -> Vec<JwksKey> {
        let (found, stale) = self.lookup(kid, alg).await;
        if !found.is_empty() && !stale {
            return found;
        }
        // Unknown kid or an old set: refresh (rate-limited), then look again. Only when the
        // provider cannot be reached do old keys stay usable; a key the provider dropped is gone.
        let refreshed = self.refresh(!found.is_empty()).await;
        let (again, _) = self.lookup(kid, alg).await;
        match refreshed {
            Ok(()) => again,
            Err(e) => {
                tracing::warn!(error = %e, "JWKS refresh failed");
                if again.is_empty() { found } else { again }
            }
        }
    }

    async fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> (Vec<JwksKey>, bool) {
        let keys = self.keys.read().await;
        let stale = keys.fetched_at.is_none_or(|t| t.elapsed() >= self.max_age);
        let found: Vec<JwksKey> = match kid {
            Some(kid) => keys.by_kid.get(kid).into_iter().cloned().collect(),
            None => keys.anonymous.clone(),
        };
        (found.into_iter().filter(|k| k.alg == alg).collect(), stale)
    }

    /// Fetches the set unless one was fetched (or tried) within `min_refresh`. With `only_if_stale`
    /// a concurrent caller's fresh fetch is enough.
    async fn refresh(&self, only_if_stale: bool) -> Result<(), JwksError> {
        let mut last = self.last_attempt.lock().await;
        if let Some(t) = *last
            && t.elapsed() < self.min_refresh
        {
            return Ok(());
        }
        if only_if_stale {
            let keys = self.keys.read().await;
            if keys.fetched_at.is_some_and(|t| t.elapsed() < self.max_age) {
                return Ok(());
            }
        }
        *last = Some(Instant::now());
        let set = self.fetch().await?;
        let mut keys = index(&set);
        keys.fetched_at = Some(Instant::now());
        tracing::info!(
            keys = keys.by_kid.len() + keys.anonymous.len(),
            "JWKS refreshed"
        );
        *self.keys.write().await = keys;
        Ok(())
    }

    async fn fetch(&self) -> Result<JwkSet, JwksError> {
        let response = self
            .http
            .get(&self.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| JwksError::Fetch(e.without_url().to_string()))?;
        let body = response
            .bytes()
            .await
            .map_err(|e| JwksError::Fetch(e.without_url().to_string()))?;
        serde_json::from_slice(&body).map_err(|e| JwksError::Parse(e.to_string()))
    }
}
