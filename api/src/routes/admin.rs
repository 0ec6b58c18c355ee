//! Admin-only routes: every active session (from the watched cache) and the cleanup statistics.

use axum::Json;
use axum::extract::State;

use crate::app::AppState;
use crate::auth::extract::AdminUser;
use crate::error::{ApiError, ApiQuery, AuthRefusals, ErrorBody};
use crate::view::{
    CleanupStats, SessionList, SessionStatus, SessionsQuery, is_active, session_status,
};

async fn list(state: &AppState, all: bool) -> Result<SessionList, ApiError> {
    let mut sessions: Vec<SessionStatus> = state
        .sessions
        .all()
        .await?
        .iter()
        .filter(|s| all || is_active(s))
        .map(|s| session_status(&s.spec.user_id, Some(s)))
        .collect();
    sessions.sort_by(|a, b| a.user_id.cmp(&b.user_id));
    Ok(SessionList {
        total: sessions.len(),
        sessions,
    })
}

/// All active sessions (admin only; `?all=true` includes switched-off ones).
#[utoipa::path(get, path = "/admin/sessions", tag = "admin", security(("bearer" = [])),
    params(SessionsQuery),
    responses(
        (status = 200, description = "Sessions", body = SessionList),
        (status = 400, description = "Bad query", body = ErrorBody),
        AuthRefusals,
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 503, description = "Session cache not ready", body = ErrorBody)))]
pub async fn sessions(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    ApiQuery(q): ApiQuery<SessionsQuery>,
) -> Result<Json<SessionList>, ApiError> {
    Ok(Json(list(&state, q.all).await?))
}

/// Seed 000 alias of `GET /admin/sessions`.
#[utoipa::path(get, path = "/api/whatsapp/sessions/active", tag = "seed-000",
    security(("bearer" = [])), params(SessionsQuery),
    responses(
        (status = 200, description = "Sessions", body = SessionList),
        (status = 400, description = "Bad query", body = ErrorBody),
        AuthRefusals,
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 503, description = "Session cache not ready", body = ErrorBody)))]
pub async fn sessions_alias(
    state: State<AppState>,
    admin: AdminUser,
    q: ApiQuery<SessionsQuery>,
) -> Result<Json<SessionList>, ApiError> {
    sessions(state, admin, q).await
}

/// Statistics of the stale-session cleanup (admin only).
#[utoipa::path(get, path = "/api/admin/cleanup-stats", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "Cleanup statistics", body = CleanupStats),
        AuthRefusals,
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 503, description = "Redis unavailable", body = ErrorBody)))]
pub async fn cleanup_stats(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
) -> Result<Json<CleanupStats>, ApiError> {
    Ok(Json(state.redis.cleanup_stats().await?))
}
