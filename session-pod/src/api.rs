//! The control API (for wasp-api and the operator's finalizer) and the admin endpoints.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRef, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use subtle::ConstantTimeEq;
use wasp_common::control as paths;

use crate::session::{self, Desired, Session, SessionError};
use crate::store::{ChatSummary, Contact, LogLine, StoredMessage};

/// The one error type of the API: a status, a stable code, a message without internals.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorInner<'a>,
}

#[derive(Serialize)]
struct ErrorInner<'a> {
    code: &'a str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorInner {
                code: self.code,
                message: &self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::NotConnected => {
                Self::new(StatusCode::CONFLICT, "not_connected", e.to_string())
            }
            SessionError::Send(_) => {
                Self::new(StatusCode::BAD_GATEWAY, "send_failed", e.to_string())
            }
            other => {
                tracing::warn!(error = %other, "control API internal error");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    other.category(),
                    "storage unavailable",
                )
            }
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        SessionError::from(e).into()
    }
}

/// JSON body whose rejections are [`ApiError`]s.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(e) => Err(json_rejection(e)),
        }
    }
}

fn json_rejection(e: JsonRejection) -> ApiError {
    let status = e.status();
    let code = if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        "unsupported_media_type"
    } else {
        "bad_request"
    };
    ApiError::new(status, code, e.body_text())
}

/// Query string whose rejections are [`ApiError`]s.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(e) => Err(query_rejection(e)),
        }
    }
}

fn query_rejection(e: QueryRejection) -> ApiError {
    ApiError::bad_request(e.body_text())
}

/// The bearer token, compared in constant time.
#[derive(Clone)]
pub struct ControlToken(pub Arc<str>);

/// Proof that the request carried the right bearer token.
pub struct Authorized;

impl<S: Send + Sync> FromRequestParts<S> for Authorized
where
    ControlToken: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let expected = ControlToken::from_ref(state);
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if token_matches(presented, &expected.0) {
            Ok(Self)
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong bearer token",
            ))
        }
    }
}

/// Constant-time (in the token's content) comparison; empty never matches.
pub fn token_matches(presented: &str, expected: &str) -> bool {
    !expected.is_empty() && bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
}

#[derive(Clone)]
pub struct AppState {
    pub session: Arc<Session>,
    pub token: ControlToken,
}

impl FromRef<AppState> for ControlToken {
    fn from_ref(s: &AppState) -> Self {
        s.token.clone()
    }
}

pub fn control_router(state: AppState) -> Router {
    Router::new()
        .route(paths::STATUS_PATH, get(status))
        .route(paths::CONNECT_PATH, post(connect))
        .route(paths::DISCONNECT_PATH, post(disconnect))
        .route(paths::LOGOUT_PATH, post(logout))
        .route(paths::SEND_PATH, post(send))
        .route(paths::CHATS_PATH, get(chats))
        .route(paths::MESSAGES_PATH, get(messages))
        .route(paths::CHAT_BY_PHONE_PATH, get(chat_by_phone))
        .route(paths::CONTACTS_PATH, get(list_contacts).post(add_contact))
        .route(paths::CONTACT_PATH, delete(remove_contact))
        .route(paths::LOGS_PATH, get(logs))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found(_: Authorized) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed(_: Authorized) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusBody {
    #[serde(flatten)]
    pub state: wasp_common::SessionState,
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    pub qr: Option<crate::qr::RenderedQr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pairing_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_token: Option<u64>,
}

fn status_body(session: &Session) -> StatusBody {
    StatusBody {
        state: session.state(),
        qr: session.qr(),
        pairing_code: session.pair_code(),
        lease_token: session.lease_token(),
    }
}

async fn status(_: Authorized, State(s): State<AppState>) -> Json<StatusBody> {
    Json(status_body(&s.session))
}

async fn connect(_: Authorized, State(s): State<AppState>) -> (StatusCode, Json<StatusBody>) {
    s.session.desire(Desired::Run);
    (StatusCode::ACCEPTED, Json(status_body(&s.session)))
}

async fn disconnect(_: Authorized, State(s): State<AppState>) -> (StatusCode, Json<StatusBody>) {
    s.session.desire(Desired::Stop);
    (StatusCode::ACCEPTED, Json(status_body(&s.session)))
}

async fn logout(_: Authorized, State(s): State<AppState>) -> Json<StatusBody> {
    session::logout(&s.session).await;
    Json(status_body(&s.session))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    /// Phone number (any common spelling) or a JID.
    to: String,
    text: String,
}

/// Maximum text length accepted for sending.
pub const MAX_TEXT: usize = 65_536;

/// A phone number or a JID → the JID to send to.
pub fn recipient_jid(to: &str) -> Result<String, ApiError> {
    let to = to.trim();
    if let Some((user, server)) = to.split_once('@') {
        let ok_server = matches!(server, "s.whatsapp.net" | "lid" | "g.us");
        let ok_user = !user.is_empty()
            && user
                .chars()
                .all(|c| c.is_ascii_digit() || c == '-' || c == ':' || c == '.');
        return if ok_server && ok_user {
            Ok(to.to_owned())
        } else {
            Err(ApiError::bad_request(format!("invalid JID {to:?}")))
        };
    }
    wasp_common::phone::phone_to_jid(to).map_err(|e| ApiError::bad_request(e.to_string()))
}

async fn send(
    _: Authorized,
    State(s): State<AppState>,
    ApiJson(body): ApiJson<SendBody>,
) -> Result<Json<StoredMessage>, ApiError> {
    if body.text.is_empty() || body.text.len() > MAX_TEXT {
        return Err(ApiError::bad_request(format!(
            "text must be 1..={MAX_TEXT} bytes"
        )));
    }
    let jid = recipient_jid(&body.to)?;
    Ok(Json(s.session.send_text(&jid, &body.text).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    offset: Option<usize>,
    #[serde(default)]
    before: Option<i64>,
}

const MAX_PAGE: usize = 500;

fn limit(l: Option<usize>, default: usize) -> Result<usize, ApiError> {
    match l.unwrap_or(default) {
        0 => Err(ApiError::bad_request("limit must be at least 1")),
        n if n > MAX_PAGE => Err(ApiError::bad_request(format!("limit must be ≤ {MAX_PAGE}"))),
        n => Ok(n),
    }
}

async fn chats(
    _: Authorized,
    State(s): State<AppState>,
    ApiQuery(p): ApiQuery<Page>,
) -> Result<Json<Vec<ChatSummary>>, ApiError> {
    let limit = limit(p.limit, 50)?;
    Ok(Json(
        s.session.store.chats(p.offset.unwrap_or(0), limit).await?,
    ))
}

async fn messages(
    _: Authorized,
    State(s): State<AppState>,
    Path(chat_id): Path<String>,
    ApiQuery(p): ApiQuery<Page>,
) -> Result<Json<Vec<StoredMessage>>, ApiError> {
    let limit = limit(p.limit, 50)?;
    let chat = recipient_jid(&chat_id)?;
    Ok(Json(
        s.session.store.messages(&chat, p.before, limit).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PhoneQuery {
    phone: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChatByPhone {
    chat_id: String,
    phone: String,
    exists: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    chat: Option<ChatSummary>,
}

async fn chat_by_phone(
    _: Authorized,
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<PhoneQuery>,
) -> Result<Json<ChatByPhone>, ApiError> {
    let phone = wasp_common::phone::normalize_phone(&q.phone)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let chat_id = format!("{phone}@s.whatsapp.net");
    let chat = s.session.store.chat(&chat_id).await?;
    Ok(Json(ChatByPhone {
        exists: chat.is_some(),
        chat_id,
        phone,
        chat,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactBody {
    phone: String,
    #[serde(default)]
    name: String,
}

async fn list_contacts(
    _: Authorized,
    State(s): State<AppState>,
) -> Result<Json<Vec<Contact>>, ApiError> {
    Ok(Json(s.session.store.contacts().await?))
}

async fn add_contact(
    _: Authorized,
    State(s): State<AppState>,
    ApiJson(body): ApiJson<ContactBody>,
) -> Result<(StatusCode, Json<Contact>), ApiError> {
    let phone = wasp_common::phone::normalize_phone(&body.phone)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if body.name.len() > 256 {
        return Err(ApiError::bad_request("name must be ≤ 256 bytes"));
    }
    let c = Contact {
        phone,
        name: body.name,
        added_at: jiff::Timestamp::now().as_millisecond(),
    };
    let created = s.session.store.add_contact(&c).await?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(c)))
}

async fn remove_contact(
    _: Authorized,
    State(s): State<AppState>,
    Path(phone): Path<String>,
) -> Result<StatusCode, ApiError> {
    let phone = wasp_common::phone::normalize_phone(&phone)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if s.session.store.remove_contact(&phone).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such contact",
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    #[serde(default)]
    limit: Option<usize>,
}

async fn logs(
    _: Authorized,
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> Result<Json<Vec<LogLine>>, ApiError> {
    let limit = limit(q.limit, 100)?;
    Ok(Json(s.session.store.logs(limit).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abd", "abc"));
        assert!(!token_matches("ab", "abc"));
        assert!(!token_matches("", ""));
    }

    #[test]
    fn recipients() {
        assert_eq!(
            recipient_jid("+41 79 123 45 67").unwrap(),
            "41791234567@s.whatsapp.net"
        );
        assert_eq!(
            recipient_jid("41791234567@s.whatsapp.net").unwrap(),
            "41791234567@s.whatsapp.net"
        );
        for bad in [
            "",
            "abc",
            "x@evil.com",
            "@s.whatsapp.net",
            "12<script>@g.us",
        ] {
            assert!(recipient_jid(bad).is_err(), "{bad}");
        }
    }
}
