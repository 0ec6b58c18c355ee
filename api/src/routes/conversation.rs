//! The conversation routes (issue 12), named as whatsapp-web.js names the features: reactions,
//! edits, revokes for everyone, read receipts, typing and recording, group metadata, number checks
//! and profile pictures. Each checks its input first (400 whatever the session's state), builds
//! the pod call with the pure `*_call` functions below, and reaches only the caller's own
//! session pod ([`proxy::forward`]): a message id of another user is not in that pod's store,
//! so it is a 404 like any unknown id.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use wasp_common::control::{
    NumberCheck, ProfilePicture, ReactResponse, SeenResponse, SendResponse,
};
use wasp_common::model::{ChatStateKind, GroupMetadata};

use crate::app::AppState;
use crate::auth::extract::AuthUser;
use crate::error::{ApiError, ApiJson, ApiPath, AuthRefusals, ErrorBody, JsonBodyRefusals};
use crate::pods::PodCall;
use crate::routes::proxy::{self, PodRouteErrors};
use crate::routing::Need;
use crate::validate;
use crate::view::{EditBody, IdempotencyHeader, ReactBody, SuccessResponse};

/// The pod call of `POST /react` (pure).
pub fn react_call(body: &ReactBody, idempotency_key: Option<String>) -> Result<PodCall, ApiError> {
    Ok(PodCall::React {
        message_id: validate::message_key(&body.message_id)?,
        emoji: validate::reaction(&body.emoji)?,
        idempotency_key,
    })
}

/// The pod call of `POST /messages/{messageId}/edit` (pure).
pub fn edit_call(
    message_id: &str,
    body: &EditBody,
    idempotency_key: Option<String>,
) -> Result<PodCall, ApiError> {
    let message_id = validate::message_key(message_id)?;
    validate::message(&body.body)?;
    Ok(PodCall::Edit {
        message_id,
        body: body.body.clone(),
        idempotency_key,
    })
}

/// The pod call of `DELETE /messages/{messageId}` (pure).
pub fn revoke_call(message_id: &str) -> Result<PodCall, ApiError> {
    Ok(PodCall::Revoke {
        message_id: validate::message_key(message_id)?,
    })
}

/// The pod call of `POST /chats/{chatId}/seen` (pure).
pub fn seen_call(chat_id: &str) -> Result<PodCall, ApiError> {
    Ok(PodCall::Seen {
        chat: validate::chat_id(chat_id)?.serialized,
    })
}

/// The pod call of `POST /chats/{chatId}/typing|recording|clear-state` (pure).
pub fn state_call(chat_id: &str, state: ChatStateKind) -> Result<PodCall, ApiError> {
    Ok(PodCall::ChatState {
        chat: validate::chat_id(chat_id)?.serialized,
        state,
    })
}

/// The pod call of `GET /groups/{groupId}` (pure).
pub fn group_call(group_id: &str) -> Result<PodCall, ApiError> {
    Ok(PodCall::Group {
        group: validate::group_id(group_id)?.serialized,
    })
}

/// The pod call of `GET /contacts/{number}/exists` (pure).
pub fn number_call(number: &str) -> Result<PodCall, ApiError> {
    Ok(PodCall::Number {
        phone: validate::phone(number)?,
    })
}

/// The pod call of `GET /contacts/{contactId}/profile-picture` (pure): a phone number or a
/// chat id.
pub fn picture_call(contact_id: &str) -> Result<PodCall, ApiError> {
    Ok(PodCall::ProfilePicture {
        chat: validate::chat_id(contact_id)?.serialized,
    })
}

/// Reacts to a message (whatsapp-web.js `Message.react`): the contact sees the emoji under it;
/// an empty emoji takes the caller's reaction back.
#[utoipa::path(post, path = "/react", tag = "messaging", security(("bearer" = [])),
    params(IdempotencyHeader),
    request_body = ReactBody,
    responses(
        (status = 200, description = "Reacted (or the reaction taken back)", body = ReactResponse),
        (status = 400, description = "Bad message id, emoji or Idempotency-Key", body = ErrorBody),
        (status = 404, description = "No such message of this user", body = ErrorBody),
        JsonBodyRefusals,
        AuthRefusals,
        PodRouteErrors))]
pub async fn react(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ReactBody>,
) -> Result<Json<ReactResponse>, ApiError> {
    let call = react_call(&body, validate::idempotency_key(&headers)?)?;
    Ok(Json(
        proxy::forward(&state, &me.user_id, Need::Connected, call).await?,
    ))
}

/// Edits an own message (whatsapp-web.js `Message.edit`): the contact sees the new text; the
/// answer is the message as it is now.
#[utoipa::path(post, path = "/messages/{messageId}/edit", tag = "messaging",
    security(("bearer" = [])),
    params(
        ("messageId" = String, Path, description = "The message's `id._serialized`", min_length = 1, max_length = 300,
            pattern = r"^\s*(true|false)_(([1-9][0-9]{6,14}@(c\.us|s\.whatsapp\.net)|[0-9]{1,24}@(lid|newsletter)|status@broadcast)_[A-Za-z0-9]{1,128}|[0-9]{1,24}(-[0-9]{1,24})?@g\.us_[A-Za-z0-9]{1,128}(_([1-9][0-9]{6,14}@(c\.us|s\.whatsapp\.net)|[0-9]{1,24}@lid))?)\s*$"),
        IdempotencyHeader),
    request_body = EditBody,
    responses(
        (status = 200, description = "Edited: the message with its new body", body = SendResponse),
        (status = 400, description = "Bad message id, body or Idempotency-Key, or not an own message", body = ErrorBody),
        (status = 404, description = "No such message of this user", body = ErrorBody),
        JsonBodyRefusals,
        AuthRefusals,
        PodRouteErrors))]
pub async fn edit(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(message_id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<EditBody>,
) -> Result<Json<SendResponse>, ApiError> {
    let call = edit_call(&message_id, &body, validate::idempotency_key(&headers)?)?;
    Ok(Json(
        proxy::forward(&state, &me.user_id, Need::Connected, call).await?,
    ))
}

/// Deletes an own message for everyone (whatsapp-web.js `Message.delete(true)`). The path is
/// `/messages/{messageId}`; it shares its template with `GET /messages/{chatId}`, so the document
/// names the segment `chatId`: for this method it is the message's `id._serialized`.
#[utoipa::path(delete, path = "/messages/{chatId}", tag = "messaging",
    security(("bearer" = [])),
    params(
        ("chatId" = String, Path, description = "For DELETE: the message's `id._serialized` (`GET` takes a chat id here)", min_length = 1, max_length = 300,
            pattern = r"^\s*(true|false)_(([1-9][0-9]{6,14}@(c\.us|s\.whatsapp\.net)|[0-9]{1,24}@(lid|newsletter)|status@broadcast)_[A-Za-z0-9]{1,128}|[0-9]{1,24}(-[0-9]{1,24})?@g\.us_[A-Za-z0-9]{1,128}(_([1-9][0-9]{6,14}@(c\.us|s\.whatsapp\.net)|[0-9]{1,24}@lid))?)\s*$")),
    responses(
        (status = 200, description = "Revoked: the message, now of type `revoked`", body = SendResponse),
        (status = 400, description = "Bad message id, or not an own message", body = ErrorBody),
        (status = 404, description = "No such message of this user", body = ErrorBody),
        AuthRefusals,
        PodRouteErrors))]
pub async fn revoke(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(message_id): ApiPath<String>,
) -> Result<Json<SendResponse>, ApiError> {
    let call = revoke_call(&message_id)?;
    Ok(Json(
        proxy::forward(&state, &me.user_id, Need::Connected, call).await?,
    ))
}

/// Marks a chat read (whatsapp-web.js `Chat.sendSeen`): the contact gets read receipts for its
/// unread messages, the chat's `unreadCount` becomes 0.
#[utoipa::path(post, path = "/chats/{chatId}/seen", tag = "messaging",
    security(("bearer" = [])),
    params(("chatId" = String, Path, description = "The chat, as in `/messages/{chatId}`", min_length = 1, max_length = 128,
        pattern = r"^\s*((\+|00)?[1-9]([ ().-]?[0-9]){6,14}|[1-9][0-9]{6,14}@(c\.us|s\.whatsapp\.net)|[0-9]{1,24}(-[0-9]{1,24})?@g\.us|[0-9]{1,24}@(lid|newsletter)|status@broadcast)\s*$")),
    responses(
        (status = 200, description = "Read receipts sent", body = SeenResponse),
        (status = 400, description = "Bad chat id", body = ErrorBody),
        (status = 404, description = "No such chat", body = ErrorBody),
        AuthRefusals,
        PodRouteErrors))]
pub async fn seen(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(chat_id): ApiPath<String>,
) -> Result<Json<SeenResponse>, ApiError> {
    let call = seen_call(&chat_id)?;
    Ok(Json(
        proxy::forward(&state, &me.user_id, Need::Connected, call).await?,
    ))
}

async fn chat_state(
    state: AppState,
    user_id: &str,
    chat_id: &str,
    kind: ChatStateKind,
) -> Result<Json<SuccessResponse>, ApiError> {
    let call = state_call(chat_id, kind)?;
    let _: serde_json::Value = proxy::forward(&state, user_id, Need::Connected, call).await?;
    Ok(Json(SuccessResponse {
        success: true,
        message: kind.as_str().to_owned(),
    }))
}

/// Shows "typing…" in the chat (whatsapp-web.js `Chat.sendStateTyping`) until
/// `/chats/{chatId}/clear-state`, a send, or WhatsApp's own timeout (about 25 s).
#[utoipa::path(post, path = "/chats/{chatId}/typing", tag = "messaging",
    security(("bearer" = [])),
    params(("chatId" = String, Path, description = "The chat, as in `/messages/{chatId}`", min_length = 1, max_length = 128,
        pattern = r"^\s*((\+|00)?[1-9]([ ().-]?[0-9]){6,14}|[1-9][0-9]{6,14}@(c\.us|s\.whatsapp\.net)|[0-9]{1,24}(-[0-9]{1,24})?@g\.us|[0-9]{1,24}@(lid|newsletter)|status@broadcast)\s*$")),
    responses(
        (status = 200, description = "Sent (`message: typing`)", body = SuccessResponse),
        (status = 400, description = "Bad chat id", body = ErrorBody),
        AuthRefusals,
        PodRouteErrors))]
pub async fn typing(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(chat_id): ApiPath<String>,
) -> Result<Json<SuccessResponse>, ApiError> {
    chat_state(state, &me.user_id, &chat_id, ChatStateKind::Typing).await
}

/// Shows "recording audio…" in the chat (whatsapp-web.js `Chat.sendStateRecording`).
#[utoipa::path(post, path = "/chats/{chatId}/recording", tag = "messaging",
    security(("bearer" = [])),
    params(("chatId" = String, Path, description = "The chat, as in `/messages/{chatId}`", min_length = 1, max_length = 128,
        pattern = r"^\s*((\+|00)?[1-9]([ ().-]?[0-9]){6,14}|[1-9][0-9]{6,14}@(c\.us|s\.whatsapp\.net)|[0-9]{1,24}(-[0-9]{1,24})?@g\.us|[0-9]{1,24}@(lid|newsletter)|status@broadcast)\s*$")),
    responses(
        (status = 200, description = "Sent (`message: recording`)", body = SuccessResponse),
        (status = 400, description = "Bad chat id", body = ErrorBody),
        AuthRefusals,
        PodRouteErrors))]
pub async fn recording(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(chat_id): ApiPath<String>,
) -> Result<Json<SuccessResponse>, ApiError> {
    chat_state(state, &me.user_id, &chat_id, ChatStateKind::Recording).await
}

/// Stops typing or recording (whatsapp-web.js `Chat.clearState`: the state `paused`).
#[utoipa::path(post, path = "/chats/{chatId}/clear-state", tag = "messaging",
    security(("bearer" = [])),
    params(("chatId" = String, Path, description = "The chat, as in `/messages/{chatId}`", min_length = 1, max_length = 128,
        pattern = r"^\s*((\+|00)?[1-9]([ ().-]?[0-9]){6,14}|[1-9][0-9]{6,14}@(c\.us|s\.whatsapp\.net)|[0-9]{1,24}(-[0-9]{1,24})?@g\.us|[0-9]{1,24}@(lid|newsletter)|status@broadcast)\s*$")),
    responses(
        (status = 200, description = "Sent (`message: paused`)", body = SuccessResponse),
        (status = 400, description = "Bad chat id", body = ErrorBody),
        AuthRefusals,
        PodRouteErrors))]
pub async fn clear_state(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(chat_id): ApiPath<String>,
) -> Result<Json<SuccessResponse>, ApiError> {
    chat_state(state, &me.user_id, &chat_id, ChatStateKind::Paused).await
}

/// A group's metadata from WhatsApp (whatsapp-web.js `GroupChat.groupMetadata`): subject,
/// owner, description, participants with their admin flags, settings.
#[utoipa::path(get, path = "/groups/{groupId}", tag = "messaging",
    security(("bearer" = [])),
    params(("groupId" = String, Path, description = "The group's id, `…@g.us`", min_length = 6, max_length = 64,
        pattern = r"^\s*[0-9]{1,24}(-[0-9]{1,24})?@g\.us\s*$")),
    responses(
        (status = 200, description = "The group", body = GroupMetadata),
        (status = 400, description = "Not a group id", body = ErrorBody),
        (status = 404, description = "Not a group of this user", body = ErrorBody),
        AuthRefusals,
        PodRouteErrors))]
pub async fn group(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(group_id): ApiPath<String>,
) -> Result<Json<GroupMetadata>, ApiError> {
    let call = group_call(&group_id)?;
    Ok(Json(
        proxy::forward(&state, &me.user_id, Need::Connected, call).await?,
    ))
}

/// Whether a phone number is on WhatsApp (whatsapp-web.js `isRegisteredUser`; `id` is what
/// `getNumberId` gives).
#[utoipa::path(get, path = "/contacts/{number}/exists", tag = "messaging",
    security(("bearer" = [])),
    params(("number" = String, Path, description = "Phone number, e.g. +41791234567", min_length = 7, max_length = 32,
        pattern = r"^\s*(\+|00)?[1-9]([ ().-]?[0-9]){6,14}\s*$")),
    responses(
        (status = 200, description = "Whether the number has a WhatsApp account", body = NumberCheck),
        (status = 400, description = "Bad phone number", body = ErrorBody),
        AuthRefusals,
        PodRouteErrors))]
pub async fn number_exists(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(number): ApiPath<String>,
) -> Result<Json<NumberCheck>, ApiError> {
    let call = number_call(&number)?;
    Ok(Json(
        proxy::forward(&state, &me.user_id, Need::Connected, call).await?,
    ))
}

/// A contact's (or group's) profile picture URL (whatsapp-web.js `getProfilePicUrl`); `url` is
/// `null` when there is none or it is not visible to this user.
#[utoipa::path(get, path = "/contacts/{contactId}/profile-picture", tag = "messaging",
    security(("bearer" = [])),
    params(("contactId" = String, Path, description = "A phone number or a chat id, as in `/messages/{chatId}`", min_length = 1, max_length = 128,
        pattern = r"^\s*((\+|00)?[1-9]([ ().-]?[0-9]){6,14}|[1-9][0-9]{6,14}@(c\.us|s\.whatsapp\.net)|[0-9]{1,24}(-[0-9]{1,24})?@g\.us|[0-9]{1,24}@(lid|newsletter)|status@broadcast)\s*$")),
    responses(
        (status = 200, description = "The picture's URL, or `null`", body = ProfilePicture),
        (status = 400, description = "Bad phone number or chat id", body = ErrorBody),
        AuthRefusals,
        PodRouteErrors))]
pub async fn profile_picture(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(contact_id): ApiPath<String>,
) -> Result<Json<ProfilePicture>, ApiError> {
    let call = picture_call(&contact_id)?;
    Ok(Json(
        proxy::forward(&state, &me.user_id, Need::Connected, call).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "true_41791234567@c.us_3EB0AB";

    fn code(r: Result<PodCall, ApiError>) -> (u16, &'static str) {
        let e = r.unwrap_err();
        (e.status().as_u16(), e.code())
    }

    fn react(message_id: &str, emoji: &str) -> ReactBody {
        ReactBody {
            message_id: message_id.into(),
            emoji: emoji.into(),
        }
    }

    #[test]
    fn reactions_are_checked_and_keep_the_idempotency_key() {
        assert_eq!(
            react_call(&react(KEY, "👍"), Some("k".into())).unwrap(),
            PodCall::React {
                message_id: KEY.into(),
                emoji: "👍".into(),
                idempotency_key: Some("k".into())
            }
        );
        assert_eq!(
            react_call(&react(KEY, ""), None).unwrap(),
            PodCall::React {
                message_id: KEY.into(),
                emoji: String::new(),
                idempotency_key: None
            }
        );
        assert_eq!(
            code(react_call(&react("3EB0AB", "👍"), None)),
            (400, "invalid_message_id")
        );
        assert_eq!(
            code(react_call(&react(KEY, "yes"), None)),
            (400, "invalid_reaction")
        );
    }

    #[test]
    fn edits_and_revokes_take_serialized_ids() {
        let body = |b: &str| EditBody { body: b.into() };
        assert_eq!(
            edit_call(KEY, &body("fixed"), None).unwrap(),
            PodCall::Edit {
                message_id: KEY.into(),
                body: "fixed".into(),
                idempotency_key: None
            }
        );
        assert_eq!(
            code(edit_call(KEY, &body("  "), None)),
            (400, "invalid_message")
        );
        let long = "x".repeat(wasp_common::control::MAX_TEXT_CHARS + 1);
        assert_eq!(
            code(edit_call(KEY, &body(&long), None)),
            (400, "invalid_message")
        );
        assert_eq!(
            code(edit_call("41791234567@c.us", &body("x"), None)),
            (400, "invalid_message_id")
        );
        assert_eq!(
            revoke_call(" false_41791234567@s.whatsapp.net_AB ").unwrap(),
            PodCall::Revoke {
                message_id: "false_41791234567@c.us_AB".into()
            }
        );
        assert_eq!(
            code(revoke_call("41791234567@c.us")),
            (400, "invalid_message_id")
        );
    }

    #[test]
    fn chat_routes_normalise_the_chat_id() {
        assert_eq!(
            seen_call("+41 79 123 45 67").unwrap(),
            PodCall::Seen {
                chat: "41791234567@c.us".into()
            }
        );
        assert_eq!(code(seen_call("nope")), (400, "invalid_chat_id"));
        assert_eq!(
            state_call("120363000000000001@g.us", ChatStateKind::Paused).unwrap(),
            PodCall::ChatState {
                chat: "120363000000000001@g.us".into(),
                state: ChatStateKind::Paused
            }
        );
        assert_eq!(
            code(state_call("abc@c.us", ChatStateKind::Typing)),
            (400, "invalid_chat_id")
        );
    }

    #[test]
    fn groups_numbers_and_pictures() {
        assert_eq!(
            group_call("120363000000000001@g.us").unwrap(),
            PodCall::Group {
                group: "120363000000000001@g.us".into()
            }
        );
        assert_eq!(
            code(group_call("41791234567@c.us")),
            (400, "invalid_group_id")
        );
        assert_eq!(
            number_call("+41 79 123 45 67").unwrap(),
            PodCall::Number {
                phone: "41791234567".into()
            }
        );
        assert_eq!(code(number_call("079 123 45 67")), (400, "invalid_phone"));
        assert_eq!(
            code(number_call("41791234567@c.us")),
            (400, "invalid_phone")
        );
        assert_eq!(
            picture_call("41791234567").unwrap(),
            PodCall::ProfilePicture {
                chat: "41791234567@c.us".into()
            }
        );
        assert_eq!(
            picture_call("41791234567@s.whatsapp.net").unwrap(),
            PodCall::ProfilePicture {
                chat: "41791234567@c.us".into()
            }
        );
        assert_eq!(code(picture_call("x")), (400, "invalid_chat_id"));
    }

    #[test]
    fn a_pod_429_is_the_apis_429_with_its_retry_after() {
        use axum::response::IntoResponse as _;
        let e = proxy::pod_error(
            crate::pods::PodError::RateLimited {
                retry_after_secs: 12,
            },
            "Connected",
        );
        let response = e.into_response();
        assert_eq!(response.status().as_u16(), 429);
        assert_eq!(
            response.headers().get(axum::http::header::RETRY_AFTER),
            Some(&axum::http::HeaderValue::from(12u64))
        );
        // The same shape as the per-user limiter's refusal.
        let own = ApiError::RateLimited {
            retry_after_secs: 12,
        };
        let pod = proxy::pod_error(
            crate::pods::PodError::RateLimited {
                retry_after_secs: 12,
            },
            "Connected",
        );
        assert_eq!(pod.body(), own.body());
        assert_eq!(pod.body().error, "rate_limited");
        let not_found = proxy::pod_error(
            crate::pods::PodError::Refused {
                status: 404,
                code: "not_found".into(),
                message: "no such message".into(),
            },
            "Connected",
        );
        assert_eq!(not_found.status().as_u16(), 404);
    }
}
