//! The control API's conversation routes: react, edit, revoke, seen, chat state, groups,
//! number checks, profile pictures; and the checks sends share (quotes, idempotency keys).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use wasp_common::control::{
    self as paths, ChatStateRequest, EditRequest, MAX_TEXT_CHARS, NumberCheck, ProfilePicture,
    ReactRequest, ReactResponse, RevokeRequest, SeenResponse, SendResponse,
};
use wasp_common::model::{self, GroupMetadata, Message, MessageKey, Wid};

use super::{ApiError, ApiJson, AppState, Authorized, chat_id};
use crate::actions::ActionError;
use crate::idempotency::IdempotencyError;
use crate::session::Session;

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> Self {
        let text = e.to_string();
        match e {
            ActionError::NotFound => Self::new(StatusCode::NOT_FOUND, "not_found", text),
            ActionError::NotAllowed(_) => Self::new(StatusCode::FORBIDDEN, "forbidden", text),
            ActionError::BadRequest(_) => Self::bad_request(text),
            ActionError::Upstream(detail) => {
                tracing::warn!(%detail, "WhatsApp query failed");
                Self::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_failed",
                    "WhatsApp did not answer the query",
                )
            }
            ActionError::Session(e) => e.into(),
        }
    }
}

impl<E: Into<ApiError>> From<IdempotencyError<E>> for ApiError {
    fn from(e: IdempotencyError<E>) -> Self {
        match e {
            IdempotencyError::InProgress => Self::new(
                StatusCode::CONFLICT,
                "in_progress",
                "a request with this Idempotency-Key is still in progress",
            ),
            IdempotencyError::Store(s) => s.into(),
            IdempotencyError::Unreadable(err) => {
                tracing::warn!(error = %err, "an idempotency record is unreadable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "the first answer under this key is unreadable",
                )
            }
            IdempotencyError::Inner(e) => e.into(),
        }
    }
}

/// A checked `Idempotency-Key` (absent is fine).
pub fn idempotency_key(key: Option<&str>) -> Result<Option<&str>, ApiError> {
    match key {
        None => Ok(None),
        Some(k) => paths::check_idempotency_key(k)
            .map(|()| Some(k))
            .map_err(ApiError::bad_request),
    }
}

/// A message id from a client, parsed.
fn message_key(raw: &str) -> Result<MessageKey, ApiError> {
    MessageKey::parse(raw).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// The stored message a reply quotes: of the same chat, and this user's (404 otherwise).
pub async fn quoted(
    session: &Session,
    to: &Wid,
    raw: Option<&str>,
) -> Result<Option<Message>, ApiError> {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let key = message_key(raw)?;
    if key.remote != to.serialized {
        return Err(ApiError::bad_request(
            "the quoted message must be in the chat the reply goes to",
        ));
    }
    Ok(Some(session.stored_message(&key).await?))
}

pub async fn react(
    _: Authorized,
    State(s): State<AppState>,
    ApiJson(body): ApiJson<ReactRequest>,
) -> Result<Json<ReactResponse>, ApiError> {
    let key = message_key(&body.message_id)?;
    model::check_reaction(&body.emoji).map_err(ApiError::bad_request)?;
    // Unknown ids are refused before pacing counts anything.
    s.session.stored_message(&key).await?;
    let idem = idempotency_key(body.idempotency_key.as_deref())?.map(str::to_owned);
    let session = s.session.clone();
    let answer = session
        .idempotent(idem.as_deref(), move |_| async move {
            s.pacing.check().map_err(ApiError::rate_limited)?;
            let reaction = s.session.react(&key, &body.emoji).await?;
            Ok::<_, ApiError>(ReactResponse {
                success: true,
                reaction,
            })
        })
        .await?;
    Ok(Json(answer))
}

pub async fn edit(
    _: Authorized,
    State(s): State<AppState>,
    ApiJson(body): ApiJson<EditRequest>,
) -> Result<Json<SendResponse>, ApiError> {
    let key = message_key(&body.message_id)?;
    if body.body.trim().is_empty() || body.body.chars().count() > MAX_TEXT_CHARS {
        return Err(ApiError::bad_request(format!(
            "body must be 1..={MAX_TEXT_CHARS} characters and not blank"
        )));
    }
    s.session.stored_message(&key).await?;
    let idem = idempotency_key(body.idempotency_key.as_deref())?.map(str::to_owned);
    let session = s.session.clone();
    let answer = session
        .idempotent(idem.as_deref(), move |_| async move {
            s.pacing.check().map_err(ApiError::rate_limited)?;
            let message = s.session.edit(&key, &body.body).await?;
            Ok::<_, ApiError>(SendResponse {
                success: true,
                message,
            })
        })
        .await?;
    Ok(Json(answer))
}

pub async fn revoke(
    _: Authorized,
    State(s): State<AppState>,
    ApiJson(body): ApiJson<RevokeRequest>,
) -> Result<Json<SendResponse>, ApiError> {
    let key = message_key(&body.message_id)?;
    s.session.stored_message(&key).await?;
    s.pacing.check().map_err(ApiError::rate_limited)?;
    let message = s.session.revoke(&key).await?;
    Ok(Json(SendResponse {
        success: true,
        message,
    }))
}

pub async fn seen(
    _: Authorized,
    State(s): State<AppState>,
    Path(chat_raw): Path<String>,
) -> Result<Json<SeenResponse>, ApiError> {
    let chat = chat_id(&chat_raw)?;
    let read = s.session.seen(&chat).await?;
    Ok(Json(SeenResponse {
        success: true,
        chat_id: chat.serialized,
        read,
    }))
}

pub async fn chat_state(
    _: Authorized,
    State(s): State<AppState>,
    Path(chat_raw): Path<String>,
    ApiJson(body): ApiJson<ChatStateRequest>,
) -> Result<StatusCode, ApiError> {
    let chat = chat_id(&chat_raw)?;
    s.session.chat_state(&chat, body.state).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn group(
    _: Authorized,
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<GroupMetadata>, ApiError> {
    let group = chat_id(&raw)?;
    if !group.is_group() {
        return Err(ApiError::bad_request("a group id ends in @g.us"));
    }
    Ok(Json(s.session.group(&group).await?))
}

pub async fn number(
    _: Authorized,
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<NumberCheck>, ApiError> {
    let number = wasp_common::phone::normalize_phone(&raw)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let exists = s.session.number_exists(&number).await?;
    Ok(Json(NumberCheck {
        id: if exists {
            Wid::phone(&number).ok()
        } else {
            None
        },
        number,
        exists,
    }))
}

pub async fn profile_picture(
    _: Authorized,
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<ProfilePicture>, ApiError> {
    let id = chat_id(&raw)?;
    Ok(Json(ProfilePicture {
        url: s.session.profile_picture(&id).await?,
    }))
}
