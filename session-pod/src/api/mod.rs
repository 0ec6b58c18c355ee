//! The control API (for wasp-api and the operator's finalizer) and the admin endpoints.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRef, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;
use wasp_common::control::{
    self as paths, ChatByPhone, ChatsPage, ChatsQuery, Contact, ContactRequest, ControlError,
    ControlErrorInner, LogEntry, LogsQuery, MAX_NAME_CHARS, MAX_PAGE, MAX_TEXT_CHARS,
    MessagesQuery, PodStatus, QrCode, SendMediaQuery, SendRequest, SendResponse,
};
use wasp_common::model::{Message, Wid};

use crate::session::{self, Desired, Session, SessionError};

mod conversation;

/// The one error type of the API: a status, a stable code, a message without internals.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// `Retry-After` seconds (429).
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Over the session's send pacing: retry in `wait`.
    pub fn rate_limited(wait: std::time::Duration) -> Self {
        let secs = crate::pacing::retry_after_secs(wait);
        Self {
            retry_after: Some(secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("this session's send rate limit is reached; retry in {secs} s"),
            )
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ControlError {
            error: ControlErrorInner {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        response
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

impl From<crate::media::MediaError> for ApiError {
    fn from(e: crate::media::MediaError) -> Self {
        use crate::media::MediaError as M;
        let text = e.to_string();
        match e {
            M::TooLarge(_) => Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", text),
            M::BadRequest(_) | M::Body(_) => Self::bad_request(text),
            M::NotFound => Self::new(StatusCode::NOT_FOUND, "not_found", text),
            M::Gone => Self::new(StatusCode::GONE, "media_gone", text),
            M::Fetch(detail) => {
                tracing::warn!(%detail, "media download failed");
                Self::new(StatusCode::BAD_GATEWAY, "media_fetch_failed", text)
            }
            M::Upload(detail) => {
                tracing::warn!(%detail, "media upload failed");
                Self::new(StatusCode::BAD_GATEWAY, "send_failed", text)
            }
            M::Spool(err) => {
                tracing::warn!(error = %err, "no temporary space for a media file");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "no temporary space for the file right now, retry shortly",
                )
            }
            M::Session(e) => e.into(),
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
    pub pacing: Arc<crate::pacing::Pacing>,
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
        .route(paths::SEND_MEDIA_PATH, post(send_media))
        .route(paths::MEDIA_PATH, get(media))
        .route(paths::CHATS_PATH, get(chats))
        .route(paths::MESSAGES_PATH, get(messages))
        .route(paths::CHAT_BY_PHONE_PATH, get(chat_by_phone))
        .route(paths::CONTACTS_PATH, get(list_contacts).post(add_contact))
        .route(paths::CONTACT_PATH, delete(remove_contact))
        .route(paths::LOGS_PATH, get(logs))
        .route(paths::REACT_PATH, post(conversation::react))
        .route(paths::EDIT_PATH, post(conversation::edit))
        .route(paths::REVOKE_PATH, post(conversation::revoke))
        .route(paths::SEEN_PATH, post(conversation::seen))
        .route(paths::CHAT_STATE_PATH, post(conversation::chat_state))
        .route(paths::GROUP_PATH, get(conversation::group))
        .route(paths::NUMBER_PATH, get(conversation::number))
        .route(
            paths::PROFILE_PICTURE_PATH,
            get(conversation::profile_picture),
        )
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

fn status_body(session: &Session) -> PodStatus {
    PodStatus {
        state: session.state(),
        qr: session.qr().map(|r| QrCode {
            qr: r.qr,
            qr_svg: r.qr_svg,
            qr_data_url: r.qr_data_url,
        }),
        pairing_code: session.pair_code(),
        lease_token: session.lease_token(),
    }
}

async fn status(_: Authorized, State(s): State<AppState>) -> Json<PodStatus> {
    Json(status_body(&s.session))
}

async fn connect(_: Authorized, State(s): State<AppState>) -> (StatusCode, Json<PodStatus>) {
    s.session.desire(Desired::Run);
    (StatusCode::ACCEPTED, Json(status_body(&s.session)))
}

async fn disconnect(_: Authorized, State(s): State<AppState>) -> (StatusCode, Json<PodStatus>) {
    s.session.desire(Desired::Stop);
    (StatusCode::ACCEPTED, Json(status_body(&s.session)))
}

async fn logout(_: Authorized, State(s): State<AppState>) -> Json<PodStatus> {
    session::logout(&s.session).await;
    Json(status_body(&s.session))
}

pub(crate) fn chat_id(input: &str) -> Result<Wid, ApiError> {
    Wid::parse(input).map_err(|e| ApiError::bad_request(e.to_string()))
}

async fn send(
    _: Authorized,
    State(s): State<AppState>,
    ApiJson(body): ApiJson<SendRequest>,
) -> Result<Json<SendResponse>, ApiError> {
    if body.body.trim().is_empty() || body.body.chars().count() > MAX_TEXT_CHARS {
        return Err(ApiError::bad_request(format!(
            "body must be 1..={MAX_TEXT_CHARS} characters and not blank"
        )));
    }
    let to = chat_id(&body.to)?;
    let key = conversation::idempotency_key(body.idempotency_key.as_deref())?.map(str::to_owned);
    let quoted = conversation::quoted(&s.session, &to, body.quoted.as_deref()).await?;
    let session = s.session.clone();
    let answer = session
        .idempotent(key.as_deref(), move |message_id| async move {
            s.pacing.check().map_err(ApiError::rate_limited)?;
            let message = s
                .session
                .send_text(&to, &body.body, quoted.as_ref(), message_id)
                .await?;
            Ok::<_, ApiError>(SendResponse {
                success: true,
                message,
            })
        })
        .await?;
    Ok(Json(answer))
}

/// The media send's query, checked (pure).
pub fn outgoing(q: SendMediaQuery) -> Result<(Wid, crate::media::Outgoing), ApiError> {
    use wasp_common::model::media;
    let to = chat_id(&q.to)?;
    if !media::is_mimetype(&q.mimetype) {
        return Err(ApiError::bad_request("mimetype must be type/subtype"));
    }
    let filename = q
        .filename
        .as_deref()
        .map(media::check_filename)
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let caption = q.caption.filter(|c| !c.trim().is_empty());
    if caption
        .as_ref()
        .is_some_and(|c| c.chars().count() > media::MAX_CAPTION_CHARS)
    {
        return Err(ApiError::bad_request(format!(
            "caption must be at most {} characters",
            media::MAX_CAPTION_CHARS
        )));
    }
    Ok((
        to,
        crate::media::Outgoing {
            kind: q.kind,
            mimetype: q.mimetype,
            filename,
            caption,
        },
    ))
}

async fn send_media(
    _: Authorized,
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<SendMediaQuery>,
    body: axum::body::Body,
) -> Result<Json<SendResponse>, ApiError> {
    let key = conversation::idempotency_key(q.idempotency_key.as_deref())?.map(str::to_owned);
    let quoted_raw = q.quoted.clone();
    let (to, out) = outgoing(q)?;
    let quoted = conversation::quoted(&s.session, &to, quoted_raw.as_deref()).await?;
    // A replayed answer leaves the body unread; the connection drains or closes it.
    let session = s.session.clone();
    let answer = session
        .idempotent(key.as_deref(), move |message_id| async move {
            s.pacing.check().map_err(ApiError::rate_limited)?;
            let message = s
                .session
                .send_media(
                    &to,
                    out,
                    body.into_data_stream(),
                    quoted.as_ref(),
                    message_id,
                )
                .await?;
            Ok::<_, ApiError>(SendResponse {
                success: true,
                message,
            })
        })
        .await?;
    Ok(Json(answer))
}

async fn media(
    _: Authorized,
    State(s): State<AppState>,
    Path((chat_raw, message_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    use wasp_common::model::media;
    let chat = chat_id(&chat_raw)?;
    if message_id.trim().is_empty() || message_id.len() > 256 {
        return Err(ApiError::bad_request("messageId must be a message id"));
    }
    let (mref, file) = s.session.open_media(&chat, message_id.trim()).await?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(mref.size);
    let name = media::download_filename(mref.filename.as_deref(), &mref.mimetype, &message_id);
    // 64 KiB reads: the default 4 KiB would be 2,500 body chunks for a 10 MB file.
    let stream =
        tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), 64 * 1024);
    let headers = [
        (header::CONTENT_TYPE, mref.mimetype.clone()),
        (header::CONTENT_LENGTH, len.to_string()),
        (
            header::CONTENT_DISPOSITION,
            media::content_disposition(&name),
        ),
        (
            header::HeaderName::from_static(paths::FILENAME_HEADER),
            percent(&name),
        ),
    ];
    Ok((headers, axum::body::Body::from_stream(stream)).into_response())
}

/// Percent-encodes everything but unreserved characters (a header value from any name).
fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn limit(l: Option<u32>, default: u32) -> Result<u32, ApiError> {
    match l.unwrap_or(default) {
        0 => Err(ApiError::bad_request("limit must be at least 1")),
        n if n > MAX_PAGE => Err(ApiError::bad_request(format!("limit must be ≤ {MAX_PAGE}"))),
        n => Ok(n),
    }
}

async fn chats(
    _: Authorized,
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<ChatsQuery>,
) -> Result<Json<ChatsPage>, ApiError> {
    let limit = limit(q.limit, 100)?;
    let offset = q.offset.unwrap_or(0);
    let (chats, more) = s.session.store.chats(offset, limit).await?;
    let next_offset = more.then(|| offset.saturating_add(limit));
    Ok(Json(ChatsPage { chats, next_offset }))
}

async fn messages(
    _: Authorized,
    State(s): State<AppState>,
    Path(chat_id_raw): Path<String>,
    ApiQuery(q): ApiQuery<MessagesQuery>,
) -> Result<Json<Vec<Message>>, ApiError> {
    let limit = limit(q.limit, 50)?;
    let chat = chat_id(&chat_id_raw)?;
    let before = match q.before.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(b) if b.len() > 256 => {
            return Err(ApiError::bad_request("before must be a message id"));
        }
        Some(b) => match s.session.store.find_key(&chat.serialized, b).await? {
            Some(key) => Some(key),
            None => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "no such message in this chat (before)",
                ));
            }
        },
    };
    Ok(Json(
        s.session
            .store
            .messages(&chat.serialized, before.as_deref(), limit)
            .await?,
    ))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PhoneQuery {
    phone: String,
}

async fn chat_by_phone(
    _: Authorized,
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<PhoneQuery>,
) -> Result<Json<ChatByPhone>, ApiError> {
    let wid = Wid::phone(&q.phone).map_err(|_| {
        ApiError::bad_request(
            wasp_common::phone::normalize_phone(&q.phone)
                .err()
                .map_or_else(|| "invalid phone number".to_owned(), |e| e.to_string()),
        )
    })?;
    let chat = s.session.store.chat(&wid.serialized).await?;
    Ok(Json(ChatByPhone {
        exists: chat.is_some(),
        phone: wid.user.clone(),
        chat_id: wid.serialized,
        chat,
    }))
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
    ApiJson(body): ApiJson<ContactRequest>,
) -> Result<(StatusCode, Json<Contact>), ApiError> {
    let phone = wasp_common::phone::normalize_phone(&body.phone)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let name = body.name.trim();
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "name must be at most {MAX_NAME_CHARS} printable characters"
        )));
    }
    let c = Contact {
        mobile_no: format!("+{phone}"),
        phone,
        name: name.to_owned(),
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

async fn logs(
    _: Authorized,
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> Result<Json<Vec<LogEntry>>, ApiError> {
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
}
