//! Health, the caller's status, connect/disconnect and diagnostics.

use axum::Json;
use axum::extract::State;
use wasp_crds::{DesiredState, Phase, WhatsAppSession};

use crate::pods::{self, PodCall, PodTarget};

use crate::app::AppState;
use crate::auth::extract::AuthUser;
use crate::error::{ApiError, ApiQuery, AuthRefusals, ErrorBody};
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
    let mut status = session_status(user_id, session.as_deref());
    // The QR is never in the resource (it carries pairing secrets): the pod showing it says.
    if status.phase == Phase::AwaitingScan.as_str()
        && let Some(session) = session.as_deref()
        && let routing::Route::Forward { endpoint } = routing::decide(Some(session), Need::Pod)
    {
        let target = PodTarget::of(session, &endpoint);
        match pods::typed::<wasp_common::control::PodStatus>(
            state.pods.as_ref(),
            &target,
            PodCall::Status,
        )
        .await
        {
            Ok(pod) => {
                if let Some(qr) = pod.qr {
                    status.qr = Some(qr.qr);
                    status.qr_data_url = Some(qr.qr_data_url);
                }
            }
            Err(e) => tracing::debug!(error = %e, "reading the QR from the session pod"),
        }
    }
    Ok(status)
}

/// The caller's WhatsApp session status.
#[utoipa::path(get, path = "/status", tag = "session", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's session", body = SessionStatus),
        AuthRefusals,
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
        AuthRefusals,
        (status = 503, description = "Session cache not ready", body = ErrorBody)))]
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
        AuthRefusals,
        (status = 503, description = "Kubernetes or the session cache unavailable", body = ErrorBody)))]
pub async fn connect(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
) -> Result<Json<ConnectResponse>, ApiError> {
    let before = state.sessions.get(&me.user_id).await?;
    let session = set_desired(&state, &me.user_id, DesiredState::Connected).await?;
    tracing::info!(session = %session.session_name, "connect requested");
    // A running pod whose client stopped (logged out, failed, disconnected) starts again, so a
    // new QR code comes; best effort, the desired state is already recorded.
    if let Some(before) = before.as_deref()
        && let Some(endpoint) = restart_endpoint(Some(before))
        && let Err(e) = state
            .pods
            .call(&PodTarget::of(before, &endpoint), PodCall::Connect)
            .await
    {
        tracing::warn!(error = %e, "asking the session pod to reconnect failed");
    }
    Ok(Json(ConnectResponse {
        success: true,
        message: "connecting: scan the QR code when it arrives".into(),
        session,
    }))
}

/// The pod endpoint to ask for a fresh connect: a session wanted connected whose running pod
/// reports LoggedOut, Failed or Disconnected.
pub fn restart_endpoint(session: Option<&WhatsAppSession>) -> Option<String> {
    let session = session?;
    let status = session.status.as_ref()?;
    let stopped = matches!(
        status.phase,
        Some(Phase::LoggedOut | Phase::Failed | Phase::Disconnected)
    );
    (session.spec.desired_state == DesiredState::Connected && stopped)
        .then(|| status.endpoint.clone())
        .flatten()
}

/// Seed 000 alias of `POST /connect`.
#[utoipa::path(post, path = "/api/whatsapp/connect", tag = "seed-000", security(("bearer" = [])),
    responses(
        (status = 200, description = "The session is wanted connected", body = ConnectResponse),
        AuthRefusals,
        (status = 503, description = "Kubernetes or the session cache unavailable", body = ErrorBody)))]
pub async fn connect_alias(
    state: State<AppState>,
    me: AuthUser,
) -> Result<Json<ConnectResponse>, ApiError> {
    connect(state, me).await
}

/// Query of `POST /disconnect`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DisconnectQuery {
    /// Also log the device out of WhatsApp and forget its pairing (seed 003's behaviour, the
    /// default). `false` only stops the session: a later connect resumes without a new scan.
    pub logout: Option<bool>,
}

/// How a logout went.
enum Logout {
    /// The session pod logged the device out (WhatsApp forgot it) and purged its auth state.
    ByPod,
    /// The pod could not be asked; the auth state was deleted from Redis here.
    AuthPurged,
    Skipped,
}

async fn log_out(state: &AppState, user_id: &str) -> Result<Logout, ApiError> {
    let session = state.sessions.get(user_id).await?;
    if let Some(session) = session.as_deref()
        && let routing::Route::Forward { endpoint } = routing::decide(Some(session), Need::Pod)
    {
        match state
            .pods
            .call(&PodTarget::of(session, &endpoint), PodCall::Logout)
            .await
        {
            Ok(_) => return Ok(Logout::ByPod),
            Err(e) => tracing::warn!(error = %e, "logout through the session pod failed"),
        }
    }
    let mut conn = state.redis.conn().await?;
    wasp_common::purge::purge_auth(&mut conn, user_id)
        .await
        .map_err(|e| ApiError::unavailable("redis", e))?;
    Ok(Logout::AuthPurged)
}

/// Logs the caller's device out of WhatsApp and stops the session pod (seed 003). With
/// `?logout=false` the session only stops and keeps its pairing.
#[utoipa::path(post, path = "/disconnect", tag = "session", security(("bearer" = [])),
    params(DisconnectQuery),
    responses(
        (status = 200, description = "Logged out (unless `logout=false`); the session is wanted disconnected", body = ConnectResponse),
        (status = 400, description = "Bad query", body = ErrorBody),
        AuthRefusals,
        (status = 503, description = "Kubernetes or Redis unavailable", body = ErrorBody)))]
pub async fn disconnect(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiQuery(query): ApiQuery<DisconnectQuery>,
) -> Result<Json<ConnectResponse>, ApiError> {
    if !state.sessions.exists(&me.user_id).await? {
        // Nothing to stop; do not create a resource just to say "disconnected".
        return Ok(Json(ConnectResponse {
            success: true,
            message: "no session to disconnect".into(),
            session: session_status(&me.user_id, None),
        }));
    }
    let logout = if query.logout.unwrap_or(true) {
        log_out(&state, &me.user_id).await?
    } else {
        Logout::Skipped
    };
    let session = set_desired(&state, &me.user_id, DesiredState::Disconnected).await?;
    tracing::info!(session = %session.session_name, "disconnect requested");
    let message = match logout {
        Logout::ByPod => "logged out and disconnecting",
        Logout::AuthPurged => {
            "disconnecting; the session was not running, so its pairing was removed here \
             (the phone may still list the device until it is removed there)"
        }
        Logout::Skipped => "disconnecting; the pairing is kept",
    };
    Ok(Json(ConnectResponse {
        success: true,
        message: message.into(),
        session,
    }))
}

/// Diagnostics for the caller: this replica and the caller's own session.
#[utoipa::path(get, path = "/diagnostics", tag = "monitoring", security(("bearer" = [])),
    responses(
        (status = 200, description = "Diagnostics", body = Diagnostics),
        AuthRefusals,
        (status = 503, description = "Session cache not ready", body = ErrorBody)))]
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

#[cfg(test)]
mod tests {
    use super::*;
    use wasp_crds::WhatsAppSessionStatus;

    #[test]
    fn only_stopped_running_pods_are_asked_to_connect_again() {
        let with = |desired, phase, endpoint: Option<&str>| {
            let mut s = WhatsAppSession::for_user("u");
            s.spec.desired_state = desired;
            s.status = Some(WhatsAppSessionStatus {
                phase,
                endpoint: endpoint.map(str::to_owned),
                ..Default::default()
            });
            s
        };
        let ep = Some("127.0.0.5:8080");
        for phase in [Phase::LoggedOut, Phase::Failed, Phase::Disconnected] {
            let s = with(DesiredState::Connected, Some(phase), ep);
            assert_eq!(restart_endpoint(Some(&s)).as_deref(), ep, "{phase:?}");
        }
        for phase in [Phase::Connected, Phase::AwaitingScan, Phase::Starting] {
            let s = with(DesiredState::Connected, Some(phase), ep);
            assert_eq!(restart_endpoint(Some(&s)), None, "{phase:?}");
        }
        let s = with(DesiredState::Disconnected, Some(Phase::LoggedOut), ep);
        assert_eq!(restart_endpoint(Some(&s)), None);
        let s = with(DesiredState::Connected, Some(Phase::LoggedOut), None);
        assert_eq!(restart_endpoint(Some(&s)), None);
        assert_eq!(restart_endpoint(None), None);
    }
}
