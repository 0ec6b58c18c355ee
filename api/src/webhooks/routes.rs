//! `GET/PUT/DELETE /webhooks` (the caller's own endpoint) and the admin's dead-letter routes.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::model::{
    DeadLetter, StoredEndpoint, WebhookCreated, WebhookList, WebhookRequest, WebhookView,
    parse_events,
};
use super::policy::UrlPolicy;
use super::resolve::Lookup;
use super::store::{SecretBox, Store, new_secret};
use super::{USER_ENDPOINT, WebhookConfig};
use crate::app::AppState;
use crate::auth::extract::{AdminUser, AuthUser};
use crate::error::{ApiError, ApiJson, ApiQuery, AuthRefusals, ErrorBody, JsonBodyRefusals};
use crate::view::SuccessResponse;

async fn store(state: &AppState) -> Result<Store, ApiError> {
    Ok(Store {
        conn: state.redis.conn().await?,
        timeout: state.redis.timeout(),
    })
}

fn secrets(config: &WebhookConfig) -> Result<&SecretBox, ApiError> {
    config.secrets.as_ref().ok_or(ApiError::Rejected {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "webhooks_not_configured",
        message: "this server has no webhook key (WASP_WEBHOOK_KEY); ask its operator".into(),
    })
}

async fn view(store: &Store, ep: &StoredEndpoint) -> Result<WebhookView, ApiError> {
    let s = store.state(&ep.user_id, &ep.id).await?;
    Ok(WebhookView {
        id: ep.id.clone(),
        url: ep.url.clone(),
        events: ep.events.clone(),
        created_at: ep.created_at,
        last_delivery: s.last_delivery,
        last_error: s.last_error,
        failing_since: s.failing_since,
        dead_letters: store.dead_letter_count(&ep.user_id).await?,
    })
}

/// Checks a URL as configured: its form, then every address its name has now (the dispatcher
/// checks again at every connect).
pub async fn check_url(
    policy: &UrlPolicy,
    lookup: &Lookup,
    text: &str,
) -> Result<String, ApiError> {
    let refused =
        |e: &dyn std::fmt::Display| ApiError::bad_request("webhook_url_refused", e.to_string());
    let url = policy.check_url(text).map_err(|e| refused(&e))?;
    if let Some(url::Host::Domain(name)) = url.host()
        && !policy.host_allowed(name)
    {
        let addrs = lookup.addrs(name).await.map_err(|_| {
            ApiError::bad_request(
                "webhook_url_unresolvable",
                format!("the webhook host {name} does not resolve"),
            )
        })?;
        if addrs.is_empty() {
            return Err(ApiError::bad_request(
                "webhook_url_unresolvable",
                format!("the webhook host {name} has no address"),
            ));
        }
        for a in addrs {
            policy.check_addr(Some(name), a).map_err(|e| refused(&e))?;
        }
    }
    Ok(url.to_string())
}

/// The caller's webhooks, with their delivery state (never the secret).
#[utoipa::path(get, path = "/webhooks", tag = "webhooks", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's webhooks", body = WebhookList),
        AuthRefusals,
        (status = 503, description = "Redis unavailable", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
) -> Result<Json<WebhookList>, ApiError> {
    let store = store(&state).await?;
    let mut webhooks = Vec::new();
    for ep in store.endpoints(&me.user_id).await? {
        webhooks.push(view(&store, &ep).await?);
    }
    Ok(Json(WebhookList { webhooks }))
}

/// Sets the caller's webhook. The signing secret (`whsec_…`) is in the answer that creates the
/// webhook (or rotates its secret), and never again. A new webhook receives the events from now
/// on.
#[utoipa::path(put, path = "/webhooks", tag = "webhooks", security(("bearer" = [])),
    request_body = WebhookRequest,
    responses(
        (status = 201, description = "Created; `secret` is shown this once", body = WebhookCreated),
        (status = 200, description = "Updated (`secret` only when rotated)", body = WebhookCreated),
        (status = 400, description = "Bad body, refused or unresolvable URL, unknown event type", body = ErrorBody),
        JsonBodyRefusals,
        AuthRefusals,
        (status = 503, description = "Redis unavailable, or no webhook key configured", body = ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiJson(req): ApiJson<WebhookRequest>,
) -> Result<(StatusCode, Json<WebhookCreated>), ApiError> {
    let config = &state.webhooks;
    let secrets = secrets(config)?;
    let events =
        parse_events(req.events).map_err(|m| ApiError::bad_request("invalid_events", m))?;
    let url = check_url(&config.policy, &config.lookup, &req.url).await?;
    let store = store(&state).await?;
    let existing = store
        .endpoints(&me.user_id)
        .await?
        .into_iter()
        .find(|e| e.id == USER_ENDPOINT);
    let new_secret = (existing.is_none() || req.rotate_secret).then(new_secret);
    let secret_sealed = match (&new_secret, &existing) {
        (Some(s), _) => secrets
            .seal(&me.user_id, USER_ENDPOINT, s)
            .map_err(|e| ApiError::unavailable("webhook key", e))?,
        (None, Some(e)) => e.secret_sealed.clone(),
        (None, None) => unreachable!("a new webhook always gets a secret"),
    };
    let stored = StoredEndpoint {
        id: USER_ENDPOINT.into(),
        user_id: me.user_id.clone(),
        url,
        events,
        secret_sealed,
        created_at: existing
            .as_ref()
            .map_or_else(|| jiff::Timestamp::now().as_second(), |e| e.created_at),
    };
    store.put(&stored).await?;
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(WebhookCreated {
            webhook: view(&store, &stored).await?,
            secret: new_secret,
        }),
    ))
}

/// Removes the caller's webhook (deliveries stop; its dead letters stay for an admin).
#[utoipa::path(delete, path = "/webhooks", tag = "webhooks", security(("bearer" = [])),
    responses(
        (status = 200, description = "Removed", body = SuccessResponse),
        AuthRefusals,
        (status = 404, description = "The caller has no webhook", body = ErrorBody),
        (status = 503, description = "Redis unavailable", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
) -> Result<Json<SuccessResponse>, ApiError> {
    if !store(&state)
        .await?
        .delete(&me.user_id, USER_ENDPOINT)
        .await?
    {
        return Err(ApiError::NotFound("no webhook is set".into()));
    }
    Ok(Json(SuccessResponse {
        success: true,
        message: "webhook removed".into(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserQuery {
    /// The user whose dead letters to show or replay.
    pub user_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterList {
    pub total: usize,
    /// Newest first.
    pub letters: Vec<DeadLetter>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayResponse {
    /// Dead letters queued for delivery again (each to its endpoint, oldest first).
    pub replayed: usize,
}

fn user_of(q: &UserQuery) -> Result<&str, ApiError> {
    let u = q.user_id.trim();
    if u.is_empty() || u.len() > 256 {
        return Err(ApiError::bad_request(
            "invalid_user_id",
            "userId must be 1-256 characters",
        ));
    }
    Ok(u)
}

/// A user's webhook dead letters: events given up on after the maximum age (admin only).
#[utoipa::path(get, path = "/admin/webhooks/dead-letters", tag = "admin", security(("bearer" = [])),
    params(UserQuery),
    responses(
        (status = 200, description = "Dead letters, newest first", body = DeadLetterList),
        (status = 400, description = "Bad query", body = ErrorBody),
        AuthRefusals,
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 503, description = "Redis unavailable", body = ErrorBody)))]
pub async fn dead_letters(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    ApiQuery(q): ApiQuery<UserQuery>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let letters = store(&state).await?.dead_letters(user_of(&q)?).await?;
    Ok(Json(DeadLetterList {
        total: letters.len(),
        letters,
    }))
}

/// Delivers a user's dead letters again, with the same webhook ids (admin only).
#[utoipa::path(post, path = "/admin/webhooks/dead-letters/replay", tag = "admin",
    security(("bearer" = [])), params(UserQuery),
    responses(
        (status = 200, description = "Queued for delivery", body = ReplayResponse),
        (status = 400, description = "Bad query", body = ErrorBody),
        AuthRefusals,
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 503, description = "Redis unavailable", body = ErrorBody)))]
pub async fn replay(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    ApiQuery(q): ApiQuery<UserQuery>,
) -> Result<Json<ReplayResponse>, ApiError> {
    let replayed = store(&state)
        .await?
        .replay_dead_letters(user_of(&q)?)
        .await?;
    Ok(Json(ReplayResponse { replayed }))
}
