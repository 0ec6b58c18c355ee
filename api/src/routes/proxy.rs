//! Routes served by the caller's session pod. Each validates its input (400 on bad input whatever
//! the session's state), then routes by the caller's session (never anyone else's: the session is
//! looked up by the authenticated user id), then calls the pod through [`crate::pods::PodApi`] and
//! reads its answer as the control contract's type (`wasp_common::control`, `wasp_common::model`):
//! what the API answers is what the OpenAPI document says.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use wasp_common::control::{ChatByPhone, ChatsPage, Contact, LogEntry};
use wasp_common::model::{Chat, Message};

use crate::app::AppState;
use crate::auth::extract::AuthUser;
use crate::error::{
    ApiError, ApiJson, ApiPath, ApiQuery, AuthRefusals, ErrorBody, JsonBodyRefusals,
};
use crate::pods::{self, PodCall, PodError, PodTarget};
use crate::routing::{self, Need, Route};
use crate::validate;
use crate::view::{ContactAddRequest, LimitQuery, MessagesQuery, PhoneQuery, SuccessResponse};

/// Pages of chats read at most for one `/chats` (500 each): far beyond any phone's chat list,
/// but a bound on a misbehaving pod.
const MAX_CHAT_PAGES: u32 = 200;

/// The caller's session pod, if the session can serve a request that needs `need`; with the
/// session's phase (for error answers).
pub async fn pod_of(
    state: &AppState,
    user_id: &str,
    need: Need,
) -> Result<(PodTarget, String), ApiError> {
    let session = state.sessions.get(user_id).await?;
    let phase = session
        .as_ref()
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.phase)
        .map_or("Pending", |p| p.as_str())
        .to_owned();
    match (
        routing::decide(session.as_deref(), need),
        session.as_deref(),
    ) {
        (Route::Forward { endpoint }, Some(session)) => {
            Ok((PodTarget::of(session, &endpoint), phase))
        }
        (Route::Refuse(r), _) => Err(r.into()),
        (Route::Forward { .. }, None) => Err(ApiError::Internal(
            "routed to a pod without a session".into(),
        )),
    }
}

/// Calls the caller's session pod and reads the answer as `T`.
pub(crate) async fn forward<T: DeserializeOwned>(
    state: &AppState,
    user_id: &str,
    need: Need,
    call: PodCall,
) -> Result<T, ApiError> {
    let (target, phase) = pod_of(state, user_id, need).await?;
    pods::typed(state.pods.as_ref(), &target, call)
        .await
        .map_err(|e| pod_error(e, &phase))
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
        // The session's send pacing: the same answer as the API's own per-user limit.
        PodError::RateLimited { retry_after_secs } => ApiError::RateLimited { retry_after_secs },
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
            (410, _) => ApiError::Rejected {
                status: StatusCode::GONE,
                code: "media_gone",
                message,
            },
            (415, _) => ApiError::Rejected {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code: "unsupported_media_type",
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

/// The refusals every route served by the session pod shares, for the OpenAPI document (with
/// [`AuthRefusals`]).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // never built: it only describes answers
pub enum PodRouteErrors {
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

/// The caller's chats, newest activity first (whatsapp-web.js `getChats()`): every chat, each
/// with its newest message.
#[utoipa::path(get, path = "/chats", tag = "messaging", security(("bearer" = [])),
    responses(
        (status = 200, description = "Every chat, newest activity first", body = Vec<Chat>),
        AuthRefusals,
        PodRouteErrors))]
pub async fn chats(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
) -> Result<Json<Vec<Chat>>, ApiError> {
    let mut all = Vec::new();
    let mut offset = 0;
    for _ in 0..MAX_CHAT_PAGES {
        let page: ChatsPage =
            forward(&state, &me.user_id, Need::Pod, PodCall::Chats { offset }).await?;
        all.extend(page.chats);
        match page.next_offset {
            Some(next) if next > offset => offset = next,
            _ => return Ok(Json(all)),
        }
    }
    tracing::warn!(chats = all.len(), "chat list cut at the page bound");
    Ok(Json(all))
}

/// Messages of one chat, oldest first: the last `limit` (before message `before`).
#[utoipa::path(get, path = "/messages/{chatId}", tag = "messaging", security(("bearer" = [])),
    params(("chatId" = String, Path, description = "41791234567@c.us, 41791234567@s.whatsapp.net, a phone number, …@g.us or …@lid",
            min_length = 1, max_length = 128,
            pattern = r"^\s*((\+|00)?[1-9]([ ().-]?[0-9]){6,14}|[1-9][0-9]{6,14}@(c\.us|s\.whatsapp\.net)|[0-9]{1,24}(-[0-9]{1,24})?@g\.us|[0-9]{1,24}@(lid|newsletter)|status@broadcast)\s*$"), MessagesQuery),
    responses(
        (status = 200, description = "Messages, oldest first", body = Vec<Message>),
        (status = 400, description = "Bad chat id, limit or cursor", body = ErrorBody),
        (status = 404, description = "`before` names no message of this chat", body = ErrorBody),
        AuthRefusals,
        PodRouteErrors))]
pub async fn messages(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(chat_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<MessagesQuery>,
) -> Result<Json<Vec<Message>>, ApiError> {
    let chat = validate::chat_id(&chat_id)?;
    let limit = validate::limit(q.limit)?;
    let before = q.before.as_deref().map(validate::message_id).transpose()?;
    let call = PodCall::Messages {
        chat: chat.serialized,
        limit,
        before,
    };
    Ok(Json(forward(&state, &me.user_id, Need::Pod, call).await?))
}

/// The chat with a phone number.
#[utoipa::path(get, path = "/chat-by-phone", tag = "messaging", security(("bearer" = [])),
    params(PhoneQuery),
    responses(
        (status = 200, description = "The chat (`exists: false` when none is stored)", body = ChatByPhone),
        (status = 400, description = "Bad phone number", body = ErrorBody),
        AuthRefusals,
        PodRouteErrors))]
pub async fn chat_by_phone(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiQuery(q): ApiQuery<PhoneQuery>,
) -> Result<Json<ChatByPhone>, ApiError> {
    let phone = validate::phone(&q.phone)?;
    let call = PodCall::ChatByPhone { phone };
    Ok(Json(
        forward(&state, &me.user_id, Need::Connected, call).await?,
    ))
}

/// The caller's session log, newest first (seed 003's `session_logs`).
#[utoipa::path(get, path = "/logs", tag = "monitoring", security(("bearer" = [])),
    params(LimitQuery),
    responses(
        (status = 200, description = "Log entries, newest first", body = Vec<LogEntry>),
        (status = 400, description = "Bad limit", body = ErrorBody),
        AuthRefusals,
        PodRouteErrors))]
pub async fn logs(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> Result<Json<Vec<LogEntry>>, ApiError> {
    let limit = validate::limit(q.limit)?;
    Ok(Json(
        forward(&state, &me.user_id, Need::Pod, PodCall::Logs { limit }).await?,
    ))
}

/// Adds a contact (seed 000: messages from known contacts are stored under `contactsOnly`).
#[utoipa::path(post, path = "/api/whatsapp/contact/add", tag = "seed-000",
    security(("bearer" = [])), request_body = ContactAddRequest,
    responses(
        (status = 200, description = "Added (or renamed)", body = Contact),
        (status = 400, description = "Bad phone number or name", body = ErrorBody),
        JsonBodyRefusals,
        AuthRefusals,
        PodRouteErrors))]
pub async fn contact_add(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiJson(body): ApiJson<ContactAddRequest>,
) -> Result<Json<Contact>, ApiError> {
    let phone = validate::phone(&body.mobile_no)?;
    let name = validate::contact_name(body.name.as_deref())?;
    let call = PodCall::AddContact { phone, name };
    Ok(Json(forward(&state, &me.user_id, Need::Pod, call).await?))
}

/// The caller's contacts (seed 000's whitelist).
#[utoipa::path(get, path = "/api/whatsapp/contacts", tag = "seed-000",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Contacts by phone number", body = Vec<Contact>),
        AuthRefusals,
        PodRouteErrors))]
pub async fn contacts(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
) -> Result<Json<Vec<Contact>>, ApiError> {
    Ok(Json(
        forward(&state, &me.user_id, Need::Pod, PodCall::Contacts).await?,
    ))
}

/// Removes a contact: its messages are no longer stored under `contactsOnly`.
#[utoipa::path(delete, path = "/api/whatsapp/contact/{mobileNo}", tag = "seed-000",
    security(("bearer" = [])),
    params(("mobileNo" = String, Path, description = "Phone number, e.g. +41791234567", min_length = 7, max_length = 32,
        pattern = r"^\s*(\+|00)?[1-9]([ ().-]?[0-9]){6,14}\s*$")),
    responses(
        (status = 200, description = "Removed", body = SuccessResponse),
        (status = 400, description = "Bad phone number", body = ErrorBody),
        (status = 404, description = "No such contact", body = ErrorBody),
        AuthRefusals,
        PodRouteErrors))]
pub async fn contact_remove(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(mobile_no): ApiPath<String>,
) -> Result<Json<SuccessResponse>, ApiError> {
    let phone = validate::phone(&mobile_no)?;
    let call = PodCall::RemoveContact { phone };
    let _: serde_json::Value = forward(&state, &me.user_id, Need::Pod, call).await?;
    Ok(Json(SuccessResponse {
        success: true,
        message: "contact removed".into(),
    }))
}
