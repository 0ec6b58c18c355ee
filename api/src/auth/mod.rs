//! Who is calling: JWT verification (HS256 with one or two shared secrets, RS256/ES256 from a JWKS), the
//! user id and admin role from the claims, and seed 003's insecure development identities behind
//! an explicit flag. Handlers get the caller through the [`extract::AuthUser`] extractor.

pub mod claims;
pub mod extract;
pub mod jwks;

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde_json::{Map, Value};

use crate::config::Config;
use claims::RoleClaim;
use jwks::JwksCache;

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    pub admin: bool,
    /// The token's `exp` (unix seconds): long-lived streams (WebSocket, SSE) end there. `None`
    /// for the development identities and for tokens without `exp` (`JWT_REQUIRE_EXP=false`).
    pub expires_at: Option<i64>,
}

/// Why a request was not authenticated. The message is safe to show; `reason` labels metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token algorithm not accepted")]
    Algorithm,
    #[error("no key to verify this token")]
    UnknownKey,
    #[error("invalid token signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token has no expiry")]
    NoExpiry,
    #[error("token issuer or audience not accepted")]
    IssuerOrAudience,
    #[error("token has no valid user id")]
    NoUserId,
}

impl AuthError {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Algorithm => "algorithm",
            Self::UnknownKey => "unknown_key",
            Self::Signature => "signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::NoExpiry => "no_expiry",
            Self::IssuerOrAudience => "issuer_or_audience",
            Self::NoUserId => "no_user_id",
        }
    }

    fn from_jwt(e: &jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind as K;
        match e.kind() {
            K::ExpiredSignature => Self::Expired,
            K::ImmatureSignature => Self::NotYetValid,
            K::MissingRequiredClaim(c) if c == "exp" => Self::NoExpiry,
            K::InvalidIssuer | K::InvalidAudience | K::MissingRequiredClaim(_) => {
                Self::IssuerOrAudience
            }
            K::InvalidSignature => Self::Signature,
            K::InvalidAlgorithm | K::InvalidAlgorithmName | K::MissingAlgorithm => Self::Algorithm,
            K::InvalidKeyFormat | K::InvalidRsaKey(_) | K::InvalidEcdsaKey => Self::Signature,
            _ => Self::Malformed,
        }
    }
}

/// Verifies tokens. Built once from the [`Config`], shared by every request.
pub struct Authenticator {
    /// `JWT_SECRET` then `SUPABASE_JWT_SECRET`: a token signed with either is accepted.
    hs256: Vec<DecodingKey>,
    jwks: Option<JwksCache>,
    issuer: Option<String>,
    audience: Vec<String>,
    leeway: u64,
    require_exp: bool,
    roles: RoleClaim,
    dev_insecure: bool,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("hs256_keys", &self.hs256.len())
            .field("jwks", &self.jwks.is_some())
            .field("require_exp", &self.require_exp)
            .field("dev_insecure", &self.dev_insecure)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn from_config(config: &Config) -> Arc<Self> {
        let jwks = config
            .jwks_url
            .clone()
            .filter(|u| !u.is_empty())
            .map(|url| {
                JwksCache::new(
                    url,
                    config.upstream_timeout(),
                    Duration::from_secs(config.jwks_min_refresh_seconds),
                    Duration::from_secs(config.jwks_max_age_seconds.max(1)),
                )
            });
        if let Some(url) = config.jwks_url.as_deref()
            && url.starts_with("http://")
            && !(url.starts_with("http://127.") || url.starts_with("http://localhost"))
        {
            tracing::warn!(
                url,
                "JWKS_URL is plain http: keys can be tampered with in transit"
            );
        }
        let secrets = config.hs256_secrets();
        if secrets.iter().any(|s| s.len() < 32) {
            tracing::warn!(
                "an HS256 secret (JWT_SECRET or SUPABASE_JWT_SECRET) is shorter than 32 bytes: \
                 tokens can be brute-forced"
            );
        }
        if !config.jwt_require_exp {
            tracing::warn!(
                "JWT_REQUIRE_EXP is false: tokens without `exp` are accepted and never expire; \
                 a leaked token works until the secret is rotated"
            );
        }
        if config.dev_insecure_auth {
            tracing::error!(
                "WASP_DEV_INSECURE_AUTH is on: `UserId <id>` headers and raw bearer tokens are \
                 accepted as user ids; anyone can act as any user. Never use this in production."
            );
        }
        if secrets.is_empty() && jwks.is_none() && !config.dev_insecure_auth {
            tracing::warn!(
                "neither JWT_SECRET, SUPABASE_JWT_SECRET nor JWKS_URL is set: every token is refused"
            );
        }
        Arc::new(Self {
            hs256: secrets
                .iter()
                .map(|s| DecodingKey::from_secret(s.as_bytes()))
                .collect(),
            jwks,
            issuer: config.jwt_issuer.clone().filter(|s| !s.is_empty()),
            audience: config
                .jwt_audience
                .iter()
                .filter(|a| !a.is_empty())
                .cloned()
                .collect(),
            leeway: config.jwt_leeway_seconds,
            require_exp: config.jwt_require_exp,
            roles: RoleClaim::new(&config.jwt_role_claim, &config.jwt_admin_roles),
            dev_insecure: config.dev_insecure_auth,
        })
    }

    pub fn dev_insecure(&self) -> bool {
        self.dev_insecure
    }

    /// Authenticates an `Authorization` header value.
    pub async fn authenticate_header(&self, header: Option<&str>) -> Result<Identity, AuthError> {
        let header = header.map(str::trim).filter(|h| !h.is_empty());
        let Some(header) = header else {
            return Err(AuthError::Missing);
        };
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
            return self.authenticate_token(rest).await;
        }
        if self.dev_insecure && scheme.eq_ignore_ascii_case("userid") && !rest.is_empty() {
            return self.dev_identity(rest, "UserId header");
        }
        Err(AuthError::Missing)
    }

    /// Authenticates a bearer token.
    pub async fn authenticate_token(&self, token: &str) -> Result<Identity, AuthError> {
        let looks_like_jwt = token.split('.').count() == 3;
        if !looks_like_jwt {
            if self.dev_insecure {
                return self.dev_identity(token, "raw bearer token");
            }
            return Err(AuthError::Malformed);
        }
        let claims = self.verify(token).await?;
        let user_id = claims::user_id(&claims).map_err(|_| AuthError::NoUserId)?;
        Ok(Identity {
            admin: self.roles.is_admin(&claims),
            expires_at: claims.get("exp").and_then(serde_json::Value::as_i64),
            user_id,
        })
    }

    fn dev_identity(&self, id: &str, how: &str) -> Result<Identity, AuthError> {
        claims::validate_user_id(id).map_err(|_| AuthError::NoUserId)?;
        tracing::warn!(
            how,
            "INSECURE development identity accepted (WASP_DEV_INSECURE_AUTH)"
        );
        Ok(Identity {
            user_id: id.to_owned(),
            admin: false,
            expires_at: None,
        })
    }

    /// Verifies signature and registered claims; returns the claims.
    async fn verify(&self, token: &str) -> Result<Map<String, Value>, AuthError> {
        // `alg: none` and unknown algorithms fail to parse here.
        let header = decode_header(token).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::Json(_) => AuthError::Algorithm,
            _ => AuthError::Malformed,
        })?;
        let validation = self.validation(header.alg);
        match header.alg {
            Algorithm::HS256 => {
                if self.hs256.is_empty() {
                    return Err(AuthError::Algorithm);
                }
                // The signature is checked before the claims, so only a signature mismatch
                // moves on to the next secret; an expired token signed with the first is final.
                let mut last = AuthError::Signature;
                for key in &self.hs256 {
                    match decode::<Map<String, Value>>(token, key, &validation) {
                        Ok(d) => return Ok(d.claims),
                        Err(e) => last = AuthError::from_jwt(&e),
                    }
                    if last != AuthError::Signature {
                        break;
                    }
                }
                Err(last)
            }
            Algorithm::RS256 | Algorithm::ES256 => {
                let jwks = self.jwks.as_ref().ok_or(AuthError::Algorithm)?;
                let keys = jwks.keys_for(header.kid.as_deref(), header.alg).await;
                if keys.is_empty() {
                    return Err(AuthError::UnknownKey);
                }
                let mut last = AuthError::Signature;
                for k in keys {
                    match decode::<Map<String, Value>>(token, &k.key, &validation) {
                        Ok(d) => return Ok(d.claims),
                        Err(e) => last = AuthError::from_jwt(&e),
                    }
                }
                Err(last)
            }
            _ => Err(AuthError::Algorithm),
        }
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.algorithms = vec![alg];
        v.leeway = self.leeway;
        // An `exp` that is there is always checked; `JWT_REQUIRE_EXP=false` only lets it be absent.
        v.validate_exp = true;
        v.validate_nbf = true;
        if self.require_exp {
            v.set_required_spec_claims(&["exp"]);
        } else {
            v.set_required_spec_claims::<&str>(&[]);
        }
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            v.required_spec_claims.insert("iss".into());
        }
        if self.audience.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(&self.audience);
            v.required_spec_claims.insert("aud".into());
        }
        v
    }
}

#[cfg(test)]
mod tests;
