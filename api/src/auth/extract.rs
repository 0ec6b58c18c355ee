//! The caller as an axum extractor. `AuthUser` authenticates the `Authorization` header and applies
//! the per-user rate limit; `AdminUser` additionally requires the admin role. Rejections are
//! [`ApiError`]s (401/403/429 JSON).

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::{AuthError, Authenticator, Identity};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::ratelimit::UserRateLimiter;

/// Everything the auth extractors need from the app state.
#[derive(Clone)]
pub struct AuthContext {
    pub authenticator: Arc<Authenticator>,
    pub limiter: Arc<UserRateLimiter>,
    pub metrics: Arc<Metrics>,
}

/// An authenticated, rate-limited caller.
#[derive(Debug, Clone)]
pub struct AuthUser(pub Identity);

/// An authenticated caller with the admin role.
#[derive(Debug, Clone)]
pub struct AdminUser(pub Identity);

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::Unauthorized(match e {
            AuthError::Missing => "missing bearer token",
            AuthError::Malformed => "malformed token",
            AuthError::Algorithm => "token algorithm not accepted",
            AuthError::UnknownKey => "no key to verify this token",
            AuthError::Signature => "invalid token signature",
            AuthError::Expired => "token expired",
            AuthError::NotYetValid => "token not yet valid",
            AuthError::NoExpiry => "token has no expiry",
            AuthError::IssuerOrAudience => "token issuer or audience not accepted",
            AuthError::NoUserId => "token has no valid user id",
        })
    }
}

/// Authenticates an `Authorization` header value and applies the caller's rate limit.
async fn admit(ctx: &AuthContext, header: Option<&str>) -> Result<Identity, ApiError> {
    let identity = ctx
        .authenticator
        .authenticate_header(header)
        .await
        .inspect_err(|e| {
            ctx.metrics.auth_failure(e.reason());
            tracing::debug!(reason = e.reason(), "request not authenticated");
        })?;
    // The user's hash, not the id (often an email), goes on the request's log lines.
    tracing::Span::current().record(
        "user",
        tracing::field::display(wasp_common::user_hash(&identity.user_id)),
    );
    if let Err(wait) = ctx.limiter.check(&identity.user_id) {
        ctx.metrics.rate_limited();
        return Err(ApiError::RateLimited {
            retry_after_secs: wait.as_secs() + 1,
        });
    }
    Ok(identity)
}

fn header_value<'a>(ctx: &AuthContext, parts: &'a Parts) -> Result<Option<&'a str>, ApiError> {
    match parts.headers.get(AUTHORIZATION) {
        Some(v) => Ok(Some(v.to_str().map_err(|_| {
            ctx.metrics.auth_failure(AuthError::Malformed.reason());
            ApiError::from(AuthError::Malformed)
        })?)),
        None => Ok(None),
    }
}

impl<S> FromRequestParts<S> for AuthUser
where
    S: Send + Sync,
    AuthContext: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ctx = AuthContext::from_ref(state);
        let header = header_value(&ctx, parts)?;
        Ok(AuthUser(admit(&ctx, header).await?))
    }
}

/// The caller of a streaming route (WebSocket, SSE). Browsers cannot set headers on those, so
/// the token may also come as `?token=` (seed 003's WebSocket URL); the header wins when both
/// are there. The query string never reaches the logs (the trace span records the path only).
#[derive(Debug, Clone)]
pub struct StreamUser(pub Identity);

#[derive(serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

impl<S> FromRequestParts<S> for StreamUser
where
    S: Send + Sync,
    AuthContext: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ctx = AuthContext::from_ref(state);
        if let Some(header) = header_value(&ctx, parts)? {
            return Ok(StreamUser(admit(&ctx, Some(header)).await?));
        }
        let token = axum::extract::Query::<TokenQuery>::try_from_uri(&parts.uri)
            .map_err(|_| ApiError::from(AuthError::Malformed))?
            .0
            .token;
        let header = token.map(|t| format!("Bearer {t}"));
        Ok(StreamUser(admit(&ctx, header.as_deref()).await?))
    }
}

impl<S> FromRequestParts<S> for AdminUser
where
    S: Send + Sync,
    AuthContext: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let AuthUser(identity) = AuthUser::from_request_parts(parts, state).await?;
        if !identity.admin {
            return Err(ApiError::Forbidden("admin role required"));
        }
        Ok(AdminUser(identity))
    }
}
