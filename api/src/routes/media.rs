//! `/send` (text, or a file as base64 JSON or as a multipart form) and the media download. A
//! file is checked (kind, mimetype, name, caption, size) before a byte goes to the pod, then
//! streams to it: a multipart file is never held whole here, a base64 one only as decoded.

use axum::Json;
use axum::body::Body;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use wasp_common::control::{self, SendMediaQuery, SendResponse};
use wasp_common::model::media::{self, MediaKind, SendAs};
use wasp_common::model::{MediaRefusal, Wid};

use crate::app::AppState;
use crate::auth::extract::AuthUser;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, AuthRefusals, ErrorBody};
use crate::pods::{PodCall, PodTarget};
use crate::routes::proxy::{PodRouteErrors, pod_error, pod_of};
use crate::routing::Need;
use crate::validate;
use crate::view::{MediaFormat, MediaInput, MediaQuery, SendRequest};

/// What the checks of a media send give: where and how it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSend {
    pub to: Wid,
    pub query: SendMediaQuery,
}

/// A refusal of the media rules as the API's error (400, or 415 for a kind a file cannot be).
fn refused(e: MediaRefusal) -> ApiError {
    match e {
        MediaRefusal::Unsupported(m) => ApiError::Rejected {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "unsupported_media_type",
            message: m,
        },
        MediaRefusal::BadMimetype(m) | MediaRefusal::BadFilename(m) => {
            ApiError::bad_request("invalid_media", m)
        }
    }
}

/// A caption of at most [`media::MAX_CAPTION_CHARS`] characters.
fn check_caption(caption: Option<&str>) -> Result<(), ApiError> {
    match caption {
        Some(c) if c.chars().count() > media::MAX_CAPTION_CHARS => Err(ApiError::bad_request(
            "invalid_caption",
            format!(
                "caption must be at most {} characters",
                media::MAX_CAPTION_CHARS
            ),
        )),
        _ => Ok(()),
    }
}

/// Checks a media send's chat, mimetype, options, file name and caption (pure).
pub fn check_media_send(
    chat_id: &str,
    mimetype: &str,
    filename: Option<&str>,
    caption: Option<&str>,
    send_as: SendAs,
) -> Result<MediaSend, ApiError> {
    let to = validate::chat_id(chat_id)?;
    let kind = media::choose_kind(mimetype.trim(), send_as).map_err(refused)?;
    let filename = filename
        .filter(|f| !f.trim().is_empty())
        .map(media::check_filename)
        .transpose()
        .map_err(refused)?;
    let caption = caption.filter(|c| !c.trim().is_empty());
    check_caption(caption)?;
    if kind != MediaKind::Document && kind != MediaKind::Image && kind != MediaKind::Video {
        // Audio, voice notes and stickers carry no caption on WhatsApp.
        if caption.is_some() {
            return Err(ApiError::bad_request(
                "invalid_caption",
                format!("a {} carries no caption", kind.as_str()),
            ));
        }
    }
    Ok(MediaSend {
        query: SendMediaQuery {
            to: to.serialized.clone(),
            kind,
            mimetype: mimetype.trim().to_owned(),
            filename,
            caption: caption.map(str::to_owned),
            quoted: None,
            idempotency_key: None,
        },
        to,
    })
}

/// Decodes a base64 file (standard alphabet, padding optional, line breaks ignored), refusing
/// past `max` bytes before decoding (pure).
pub fn decode_base64(data: &str, max: usize) -> Result<Vec<u8>, ApiError> {
    let compact: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let compact = compact.trim_end_matches('=');
    if compact.len() / 4 * 3 > max {
        return Err(too_large(max));
    }
    let bytes = data_encoding::BASE64_NOPAD
        .decode(compact.as_bytes())
        .map_err(|e| {
            ApiError::bad_request("invalid_media", format!("media.data is not base64: {e}"))
        })?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_media",
            "media.data is empty",
        ));
    }
    if bytes.len() > max {
        return Err(too_large(max));
    }
    Ok(bytes)
}

/// The body limit of `POST /send` as JSON: a base64 file of `max_file_size` bytes (a third
/// larger) plus 16 KiB for the other fields (a caption of 4,096 characters is up to 16 KiB).
pub fn json_send_limit(max_file_size: usize) -> usize {
    max_file_size.saturating_mul(4).div_ceil(3) + 16 * 1024
}

fn too_large(max: usize) -> ApiError {
    ApiError::Rejected {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        code: "payload_too_large",
        message: format!("the file is larger than MAX_FILE_SIZE ({max} bytes)"),
    }
}

/// Sends a text (seed 003: `{chatId, message}`) or a file: whatsapp-web.js's `MessageMedia` as
/// `media` in JSON, or a `multipart/form-data` form for large files (fields first, the file
/// part last). The kind follows the mimetype as in whatsapp-web.js (`image/jpeg|png|webp` an
/// image, `video/mp4|3gpp` a video, `audio/*` audio, anything else a document) unless an option
/// says otherwise.
#[utoipa::path(post, path = "/send", tag = "messaging", security(("bearer" = [])),
    params(crate::view::IdempotencyHeader),
    request_body(content(
        (crate::view::SendBody = "application/json"),
        (crate::view::SendForm = "multipart/form-data"))),
    responses(
        (status = 200, description = "Sent", body = SendResponse),
        (status = 400, description = "Bad chat id, message, caption, mimetype, file name, base64, quotedMessageId or Idempotency-Key", body = ErrorBody),
        (status = 404, description = "`quotedMessageId` names no message of this user", body = ErrorBody),
        (status = 413, description = "Body or file larger than MAX_FILE_SIZE", body = ErrorBody),
        (status = 415, description = "Neither JSON nor a multipart form, or a file that cannot be sent as asked (a sticker that is not image/webp, a voice note that is not audio)", body = ErrorBody),
        (status = 422, description = "Well-formed JSON of the wrong shape", body = ErrorBody),
        AuthRefusals,
        PodRouteErrors))]
pub async fn send(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    req: Request,
) -> Result<Json<SendResponse>, ApiError> {
    let idempotency_key = validate::idempotency_key(req.headers())?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        let form = Multipart::from_request(req, &state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_form", e.body_text()))?;
        return send_form(&state, &me.user_id, form, idempotency_key).await;
    }
    let ApiJson(body) = ApiJson::<SendRequest>::from_request(req, &state).await?;
    let max = state.max_file_size;
    check_caption(body.caption.as_deref())?;
    let quoted = validate::quoted(body.quoted_message_id.as_deref())?;
    match body.media {
        None => {
            let text = body.message.unwrap_or_default();
            let chat = validate::chat_id(&body.chat_id.0)?;
            validate::message(&text)?;
            let call = PodCall::Send {
                to: chat.serialized,
                body: text,
                quoted,
                idempotency_key,
            };
            let (target, phase) = pod_of(&state, &me.user_id, Need::Connected).await?;
            crate::pods::typed(state.pods.as_ref(), &target, call)
                .await
                .map(Json)
                .map_err(|e| pod_error(e, &phase))
        }
        Some(MediaInput {
            mimetype,
            data,
            filename,
            ..
        }) => {
            let caption = body.caption.or(body.message);
            let mut send = check_media_send(
                &body.chat_id.0,
                &mimetype,
                filename.as_deref(),
                caption.as_deref(),
                SendAs {
                    document: body.send_media_as_document,
                    voice: body.send_audio_as_voice,
                    sticker: body.send_media_as_sticker,
                },
            )?;
            send.query.quoted = quoted;
            send.query.idempotency_key = idempotency_key;
            let bytes = decode_base64(&data, max)?;
            drop(data);
            let (target, phase) = pod_of(&state, &me.user_id, Need::Connected).await?;
            send_to_pod(&state, &target, &phase, send, reqwest::Body::from(bytes)).await
        }
    }
}

async fn send_to_pod(
    state: &AppState,
    target: &PodTarget,
    phase: &str,
    send: MediaSend,
    body: reqwest::Body,
) -> Result<Json<SendResponse>, ApiError> {
    let value = state
        .pods
        .send_media(target, send.query, body)
        .await
        .map_err(|e| pod_error(e, phase))?;
    serde_json::from_value(value)
        .map(Json)
        .map_err(|e| ApiError::Internal(format!("the pod's send answer: {e}")))
}

/// The form's fields before the file.
#[derive(Default)]
struct FormFields {
    chat_id: Option<String>,
    caption: Option<String>,
    mimetype: Option<String>,
    quoted: Option<String>,
    send_as: SendAs,
}

fn flag(value: &str) -> Result<bool, ApiError> {
    match value.trim() {
        "true" | "1" | "on" => Ok(true),
        "false" | "0" | "" => Ok(false),
        other => Err(ApiError::bad_request(
            "invalid_form",
            format!("expected true or false, not {other:?}"),
        )),
    }
}

/// Longest text field of the form read.
const MAX_FORM_FIELD: usize = 64 * 1024;

async fn send_form(
    state: &AppState,
    user_id: &str,
    mut form: Multipart,
    idempotency_key: Option<String>,
) -> Result<Json<SendResponse>, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_form", m);
    let mut fields = FormFields::default();
    loop {
        let Some(mut field) = form.next_field().await.map_err(|e| bad(e.body_text()))? else {
            return Err(bad("the form has no file part (name it `file`)".into()));
        };
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" || name == "media" || field.file_name().is_some() {
            let part_type = field.content_type().map(str::to_owned);
            let mimetype = fields
                .mimetype
                .clone()
                .or(part_type)
                .unwrap_or_else(|| "application/octet-stream".into());
            let chat_id = fields
                .chat_id
                .clone()
                .ok_or_else(|| bad("chatId must come before the file part".into()))?;
            let filename = field.file_name().map(str::to_owned);
            let mut send = check_media_send(
                &chat_id,
                &mimetype,
                filename.as_deref(),
                fields.caption.as_deref(),
                fields.send_as,
            )?;
            send.query.quoted = fields.quoted.clone();
            send.query.idempotency_key = idempotency_key;
            let (target, phase) = pod_of(state, user_id, Need::Connected).await?;
            return stream_part(state, &target, &phase, send, &mut field).await;
        }
        let mut value = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(|e| bad(e.body_text()))? {
            value.extend_from_slice(&chunk);
            if value.len() > MAX_FORM_FIELD {
                return Err(bad(format!("field {name} is too long")));
            }
        }
        let value =
            String::from_utf8(value).map_err(|_| bad(format!("field {name} is not UTF-8")))?;
        match name.as_str() {
            "chatId" => fields.chat_id = Some(value),
            "caption" => fields.caption = Some(value),
            "message" => {
                fields.caption.get_or_insert(value);
            }
            "mimetype" => fields.mimetype = Some(value),
            "quotedMessageId" => fields.quoted = validate::quoted(Some(&value))?,
            "sendAudioAsVoice" => fields.send_as.voice = flag(&value)?,
            "sendMediaAsDocument" => fields.send_as.document = flag(&value)?,
            "sendMediaAsSticker" => fields.send_as.sticker = flag(&value)?,
            other => return Err(bad(format!("unknown form field {other:?}"))),
        }
    }
}

/// Streams the file part to the pod as it arrives, counting: past `MAX_FILE_SIZE` the upload is
/// broken off (the pod sends nothing) and the answer is 413.
async fn stream_part(
    state: &AppState,
    target: &PodTarget,
    phase: &str,
    send: MediaSend,
    field: &mut axum::extract::multipart::Field<'_>,
) -> Result<Json<SendResponse>, ApiError> {
    let max = state.max_file_size;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let call = send_to_pod(
        state,
        target,
        phase,
        send,
        reqwest::Body::wrap_stream(stream),
    );
    let pump = async move {
        let mut seen = 0usize;
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    seen += chunk.len();
                    if seen > max {
                        let _ = tx.send(Err(std::io::Error::other("too large"))).await;
                        return Err(too_large(max));
                    }
                    if tx.send(Ok(chunk)).await.is_err() {
                        // The pod answered early; its answer says why.
                        return Ok(());
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other("form broke off"))).await;
                    return Err(ApiError::bad_request("invalid_form", e.body_text()));
                }
            }
        }
    };
    let (answer, pumped) = tokio::join!(call, pump);
    pumped?;
    answer
}

/// The file of a media message, fetched by the session pod from WhatsApp's media servers and
/// checked against its hashes before the first byte: raw with `Content-Type` and
/// `Content-Disposition`, or with `?format=json` whatsapp-web.js's `MessageMedia`.
#[utoipa::path(get, path = "/messages/{chatId}/{messageId}/media", tag = "messaging",
    security(("bearer" = [])),
    params(
        ("chatId" = String, Path, description = "The chat, as in `/messages/{chatId}`", min_length = 1, max_length = 128,
            pattern = r"^\s*((\+|00)?[1-9]([ ().-]?[0-9]){6,14}|[1-9][0-9]{6,14}@(c\.us|s\.whatsapp\.net)|[0-9]{1,24}(-[0-9]{1,24})?@g\.us|[0-9]{1,24}@(lid|newsletter)|status@broadcast)\s*$"),
        ("messageId" = String, Path, description = "The message's `id._serialized` or its plain `id.id`", min_length = 1, max_length = 256,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"),
        MediaQuery),
    responses(
        (status = 200, description = "The file (raw), or `MessageMedia` with `?format=json`",
            content(
                (crate::view::FileBytes = "application/octet-stream"),
                (MediaInput = "application/json"))),
        (status = 400, description = "Bad chat id, message id or format", body = ErrorBody),
        (status = 404, description = "No such message with media in this chat (another user's ids too)", body = ErrorBody),
        (status = 410, description = "The file is no longer on WhatsApp's media servers", body = ErrorBody),
        (status = 413, description = "Larger than MAX_FILE_SIZE", body = ErrorBody),
        AuthRefusals,
        PodRouteErrors))]
pub async fn download(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath((chat_id, message_id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<MediaQuery>,
) -> Result<Response, ApiError> {
    let chat = validate::chat_id(&chat_id)?;
    let id = validate::message_id(&message_id)?;
    // The pod answers 404 for a message it does not have before it needs the connection.
    let (target, phase) = pod_of(&state, &me.user_id, Need::Pod).await?;
    let pod = state
        .pods
        .media(&target, &chat.serialized, &id)
        .await
        .map_err(|e| pod_error(e, &phase))?;
    let mimetype = pod
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let filename = pod
        .headers()
        .get(control::FILENAME_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(percent_decode)
        .unwrap_or_else(|| media::download_filename(None, &mimetype, &id));
    let length = pod.content_length();
    if q.format == Some(MediaFormat::Json) {
        let max = state.max_file_size;
        if length.is_some_and(|l| l > max as u64) {
            return Err(too_large(max));
        }
        let bytes = pod
            .bytes()
            .await
            .map_err(|e| pod_error(crate::pods::PodError::Unreachable(e.to_string()), &phase))?;
        return Ok(Json(MediaInput {
            mimetype,
            data: data_encoding::BASE64.encode(&bytes),
            filename: Some(filename),
            filesize: Some(bytes.len() as u64),
        })
        .into_response());
    }
    let mut headers = HeaderMap::new();
    for (name, value) in [
        (header::CONTENT_TYPE, mimetype),
        (
            header::CONTENT_DISPOSITION,
            media::content_disposition(&filename),
        ),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    if let Some(l) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(l));
    }
    headers.insert(
        header::HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    Ok((headers, Body::from_stream(pod.bytes_stream())).into_response())
}

/// Decodes `%XX` escapes into UTF-8 (`None` if it is not).
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = (bytes.next()? as char).to_digit(16)?;
            let lo = (bytes.next()? as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_media_send_is_checked_before_it_goes_anywhere() {
        let ok = check_media_send(
            "+41 79 000 00 01",
            "application/pdf",
            Some("plan.pdf"),
            Some("your plan"),
            SendAs::default(),
        )
        .unwrap();
        assert_eq!(ok.to.serialized, "41790000001@c.us");
        assert_eq!(ok.query.kind, MediaKind::Document);
        assert_eq!(ok.query.filename.as_deref(), Some("plan.pdf"));
        let status = |r: Result<MediaSend, ApiError>| r.unwrap_err().status().as_u16();
        assert_eq!(
            status(check_media_send(
                "x",
                "image/png",
                None,
                None,
                SendAs::default()
            )),
            400
        );
        assert_eq!(
            status(check_media_send(
                "41790000001",
                "png",
                None,
                None,
                SendAs::default()
            )),
            400
        );
        assert_eq!(
            status(check_media_send(
                "41790000001",
                "image/png",
                None,
                None,
                SendAs {
                    sticker: true,
                    ..Default::default()
                }
            )),
            415
        );
        assert_eq!(
            status(check_media_send(
                "41790000001",
                "image/png",
                Some("a/b"),
                None,
                SendAs::default()
            )),
            400
        );
        assert_eq!(
            status(check_media_send(
                "41790000001",
                "audio/mpeg",
                None,
                Some("a caption"),
                SendAs::default()
            )),
            400
        );
        let long = "x".repeat(media::MAX_CAPTION_CHARS + 1);
        assert_eq!(
            status(check_media_send(
                "41790000001",
                "image/png",
                None,
                Some(&long),
                SendAs::default()
            )),
            400
        );
    }

    #[test]
    fn base64_is_decoded_with_or_without_padding_and_bounded() {
        assert_eq!(decode_base64("aGVsbG8=", 100).unwrap(), b"hello");
        assert_eq!(decode_base64("aGVs\nbG8", 100).unwrap(), b"hello");
        assert_eq!(decode_base64("aGVsbG8=", 5).unwrap(), b"hello");
        assert_eq!(decode_base64("aGVsbG8=", 4).unwrap_err().status(), 413);
        assert_eq!(
            decode_base64(&"A".repeat(4000), 100).unwrap_err().status(),
            413
        );
        assert_eq!(decode_base64("not base64!", 100).unwrap_err().status(), 400);
        assert_eq!(decode_base64("", 100).unwrap_err().status(), 400);
    }

    #[test]
    fn file_names_come_back_from_the_header() {
        assert_eq!(
            percent_decode("plan%20f%C3%BCr.pdf").as_deref(),
            Some("plan für.pdf")
        );
        assert_eq!(percent_decode("%ZZ"), None);
        assert_eq!(percent_decode("%C3"), None);
    }
}
