//! Health, the caller's status, connect/disconnect and diagnostics.

use axum::Json;
use axum::extract::State;
use wasp_crds::DesiredState;

use crate::app::AppState;
use crate::auth::extract::AuthUser;
use crate::error::{ApiError, ErrorBody};
use crate::routing::{self, Need};
use crate::view::{ConnectResponse, Diagnostics, HealthResponse, SessionStatus, session_status};

/// Liveness of the API (no authentication).
#[utoipa::path(get, path = "/health", tag = "monitoring",
    responses((status = 200, description = "The API is up", body = HealthResponse)))]
pub async fn health() -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        timestamp: jiff::Timestamp::now().to_string(),
    })
}

async fn status_of(state: &AppState, user_id: &str) -> Result<SessionStatus, ApiError> {
    let session = state.sessions.get(user_id).await?;
    Ok(session_status(user_id, session.as_deref()))
}

/// The caller's WhatsApp session status.
#[utoipa::path(get, path = "/status", tag = "session", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's session", body = SessionStatus),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Session cache not ready", body = ErrorBody)))]
pub async fn status(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
) -> Result<Json<SessionStatus>, ApiError> {
    Ok(Json(status_of(&state, &me.user_id).await?))
}

/// Seed 000 alias of `GET /status`.
#[utoipa::path(get, path = "/api/whatsapp/status", tag = "seed-000", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's session", body = SessionStatus),
        (status = 401, description = "Not authenticated", body = ErrorBody)))]
pub async fn status_alias(
    state: State<AppState>,
    me: AuthUser,
) -> Result<Json<SessionStatus>, ApiError> {
    status(state, me).await
}

async fn set_desired(
    state: &AppState,
    user_id: &str,
    desired: DesiredState,
) -> Result<SessionStatus, ApiError> {
    let session = state.sessions.apply_desired(user_id, desired).await?;
    Ok(session_status(user_id, Some(&session)))
}

/// Starts (or keeps) the caller's WhatsApp session; the QR code then arrives on the event stream.
#[utoipa::path(post, path = "/connect", tag = "session", security(("bearer" = [])),
    responses(
        (status = 200, description = "The session is wanted connected", body = ConnectResponse),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 503, description = "Kubernetes unavailable", body = ErrorBody)))]
pub async fn connect(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
) -> Result<Json<ConnectResponse>, ApiError> {
    let session = set_desired(&state, &me.user_id, DesiredState::Connected).await?;
    tracing::info!(session = %session.session_name, "connect requested");
    Ok(Json(ConnectResponse {
        success: true,
        message: "connecting: scan the QR code when it arrives".into(),
        session,
    }))
}

/// Seed 000 alias of `POST /connect`.
#[utoipa::path(post, path = "/api/whatsapp/connect", tag = "seed-000", security(("bearer" = [])),
    responses(
        (status = 200, description = "The session is wanted connected", body = ConnectResponse),
        (status = 401, description = "Not authenticated", body = ErrorBody)))]
pub async fn connect_alias(
    state: State<AppState>,
    me: AuthUser,
) -> Result<Json<ConnectResponse>, ApiError> {
    connect(state, me).await
}

/// Stops the caller's session pod (its auth state is kept). Seed 003 also logs the device out;
/// here the logout happens when the session pod's control API is wired (see docs/api.md).
#[utoipa::path(post, path = "/disconnect", tag = "session", security(("bearer" = [])),
    responses(
        (status = 200, description = "The session is wanted disconnected", body = ConnectResponse),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 503, description = "Kubernetes unavailable", body = ErrorBody)))]
pub async fn disconnect(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
) -> Result<Json<ConnectResponse>, ApiError> {
    if !state.sessions.exists(&me.user_id).await? {
        // Nothing to stop; do not create a resource just to say "disconnected".
        return Ok(Json(ConnectResponse {
            success: true,
            message: "no session to disconnect".into(),
            session: session_status(&me.user_id, None),
        }));
    }
    let session = set_desired(&state, &me.user_id, DesiredState::Disconnected).await?;
    tracing::info!(session = %session.session_name, "disconnect requested");
    Ok(Json(ConnectResponse {
        success: true,
        message: "disconnecting".into(),
        session,
    }))
}

/// Diagnostics for the caller: this replica and the caller's own session.
#[utoipa::path(get, path = "/diagnostics", tag = "monitoring", security(("bearer" = [])),
    responses(
        (status = 200, description = "Diagnostics", body = Diagnostics),
        (status = 401, description = "Not authenticated", body = ErrorBody)))]
pub async fn diagnostics(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
) -> Result<Json<Diagnostics>, ApiError> {
    let session = state.sessions.get(&me.user_id).await?;
    let pod_reachable = matches!(
        routing::decide(session.as_deref(), Need::Pod),
        routing::Route::Forward { .. }
    );
    let sessions_by_phase = if me.admin {
        let mut counts = std::collections::BTreeMap::new();
        for s in state.sessions.all().await? {
            let phase = session_status(&s.spec.user_id, Some(&s)).phase;
            *counts.entry(phase).or_insert(0) += 1;
        }
        Some(counts)
    } else {
        None
    };
    Ok(Json(Diagnostics {
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_seconds: state.started.elapsed().as_secs(),
        session_cache_ready: state.sessions.is_ready(),
        session: session_status(&me.user_id, session.as_deref()),
        pod_reachable,
        sessions_by_phase,
    }))
}
