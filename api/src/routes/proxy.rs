//! Routes served by the caller's session pod. Each validates its input (400 on bad input whatever
//! the session's state), then routes by the caller's session (never anyone else's: the session is
//! looked up by the authenticated user id), then calls the pod through [`crate::pods::PodApi`].

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;

use crate::app::AppState;
use crate::auth::extract::AuthUser;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::pods::{PodCall, PodError};
use crate::routing::{self, Need, Route};
use crate::validate;
use crate::view::{ContactAddRequest, LimitQuery, PhoneQuery, SendRequest};

async fn forward(
    state: &AppState,
    user_id: &str,
    need: Need,
    call: PodCall,
) -> Result<Json<Value>, ApiError> {
    let session = state.sessions.get(user_id).await?;
    let phase = session
        .as_ref()
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.phase)
        .map_or("Pending", |p| p.as_str());
    match routing::decide(session.as_deref(), need) {
        Route::Forward { endpoint } => state
            .pods
            .call(user_id, &endpoint, call)
            .await
            .map(Json)
            .map_err(|e| pod_error(e, phase)),
        Route::Refuse(r) => Err(r.into()),
    }
}

/// A pod's refusal or failure as the API's error: the pod's 4xx pass through with its safe
/// message; failures are 502/503 naming the phase, details logged only.
pub fn pod_error(e: PodError, phase: &str) -> ApiError {
    let session = |status: StatusCode, code: &'static str, message: &str| ApiError::Session {
        status,
        code,
        phase: phase.to_owned(),
        message: message.to_owned(),
    };
    match e {
        PodError::Refused {
            status,
            code,
            message,
        } => match (status, code.as_str()) {
            (409, _) => session(StatusCode::CONFLICT, "session_not_connected", &message),
            (404, _) => ApiError::NotFound(message),
            (413, _) => ApiError::Rejected {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: "payload_too_large",
                message,
            },
            _ => ApiError::bad_request("invalid_request", message),
        },
        PodError::Failed { status, detail } => {
            tracing::warn!(status, detail = %detail, "session pod failed");
            session(
                StatusCode::BAD_GATEWAY,
                "session_error",
                "the WhatsApp session failed to handle the request",
            )
        }
        PodError::Unreachable(detail) => {
            tracing::warn!(detail = %detail, "session pod unreachable");
            session(
                StatusCode::SERVICE_UNAVAILABLE,
                "session_not_ready",
                "the WhatsApp session is not reachable yet, retry shortly",
            )
        }
        PodError::NoToken | PodError::NotWired => session(
            StatusCode::SERVICE_UNAVAILABLE,
            "session_not_ready",
            "the WhatsApp session is not reachable yet, retry shortly",
        ),
    }
}

/// The refusals every route served by the session pod shares, for the OpenAPI document.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // never built: it only describes answers
pub enum PodRouteErrors {
    #[response(status = 401, description = "Not authenticated")]
    Unauthorized(ErrorBody),
    #[response(
        status = 409,
        description = "No session, or it needs the user (phase named)"
    )]
    NoSession(ErrorBody),
    #[response(status = 502, description = "The session pod failed")]
    PodFailed(ErrorBody),
    #[response(status = 503, description = "Session not ready yet (phase named)")]
    NotReady(ErrorBody),
}

/// The caller's chats.
#[utoipa::path(get, path = "/chats", tag = "messaging", security(("bearer" = [])),
    responses(
        (status = 200, description = "Chats, from the session pod", body = Value),
        PodRouteErrors))]
pub async fn chats(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
) -> Result<Json<Value>, ApiError> {
    forward(&state, &me.user_id, Need::Pod, PodCall::Chats).await
}

/// Messages of one chat, newest last.
#[utoipa::path(get, path = "/messages/{chatId}", tag = "messaging", security(("bearer" = [])),
    params(("chatId" = String, Path, description = "e.g. 41791234567@c.us"), LimitQuery),
    responses(
        (status = 200, description = "Messages, from the session pod", body = Value),
        (status = 400, description = "Bad chat id or limit", body = ErrorBody),
        PodRouteErrors))]
pub async fn messages(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(chat_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> Result<Json<Value>, ApiError> {
    let jid = validate::chat_id(&chat_id)?;
    let limit = validate::limit(q.limit)?;
    forward(
        &state,
        &me.user_id,
        Need::Pod,
        PodCall::Messages { jid, limit },
    )
    .await
}

/// Sends a text message.
#[utoipa::path(post, path = "/send", tag = "messaging", security(("bearer" = [])),
    request_body = SendRequest,
    responses(
        (status = 200, description = "Sent, from the session pod", body = Value),
        (status = 400, description = "Bad chat id or message", body = ErrorBody),
        (status = 413, description = "Body larger than MAX_FILE_SIZE", body = ErrorBody),
        PodRouteErrors))]
pub async fn send(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiJson(body): ApiJson<SendRequest>,
) -> Result<Json<Value>, ApiError> {
    let jid = validate::chat_id(&body.chat_id)?;
    validate::message(&body.message)?;
    let call = PodCall::Send {
        jid,
        message: body.message,
    };
    forward(&state, &me.user_id, Need::Connected, call).await
}

/// The chat with a phone number.
#[utoipa::path(get, path = "/chat-by-phone", tag = "messaging", security(("bearer" = [])),
    params(PhoneQuery),
    responses(
        (status = 200, description = "The chat, from the session pod", body = Value),
        (status = 400, description = "Bad phone number", body = ErrorBody),
        PodRouteErrors))]
pub async fn chat_by_phone(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiQuery(q): ApiQuery<PhoneQuery>,
) -> Result<Json<Value>, ApiError> {
    let phone = validate::phone(&q.phone)?;
    let call = PodCall::ChatByPhone { phone };
    forward(&state, &me.user_id, Need::Connected, call).await
}

/// The caller's session log.
#[utoipa::path(get, path = "/logs", tag = "monitoring", security(("bearer" = [])),
    params(LimitQuery),
    responses(
        (status = 200, description = "Log entries, from the session pod", body = Value),
        (status = 400, description = "Bad limit", body = ErrorBody),
        PodRouteErrors))]
pub async fn logs(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = validate::limit(q.limit)?;
    forward(&state, &me.user_id, Need::Pod, PodCall::Logs { limit }).await
}

/// Adds a contact (seed 000: messages from known contacts are stored under `contactsOnly`).
#[utoipa::path(post, path = "/api/whatsapp/contact/add", tag = "seed-000",
    security(("bearer" = [])), request_body = ContactAddRequest,
    responses(
        (status = 200, description = "Added, from the session pod", body = Value),
        (status = 400, description = "Bad phone number or name", body = ErrorBody),
        PodRouteErrors))]
pub async fn contact_add(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiJson(body): ApiJson<ContactAddRequest>,
) -> Result<Json<Value>, ApiError> {
    let phone = validate::phone(&body.mobile_no)?;
    let name = validate::contact_name(body.name.as_deref())?;
    forward(
        &state,
        &me.user_id,
        Need::Pod,
        PodCall::AddContact { phone, name },
    )
    .await
}
