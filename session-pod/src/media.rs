//! Media both ways. Out: the file streams from the control API through the library's media
//! encryptor into an unnamed file in /tmp, which the library's streaming upload then reads in
//! chunks; the message built from the upload is sent like a text. In: a media message's
//! download reference (media key, direct path, hashes) is kept sealed in the auth store, never in
//! events; a download fetches and decrypts into an unnamed file in /tmp, and only once the
//! library has checked the MAC and the file hash is a byte of it sent on.

use std::fs::File;
use std::io::{BufWriter, Read, Seek as _, Write as _};
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;

use buffa::MessageField;
use futures::{Stream, StreamExt as _};
use serde::{Deserialize, Serialize};
use wacore::download::{Downloadable, MediaType};
use wacore::upload::{EncryptedMediaInfo, MediaEncryptor, UploadSource};
use waproto::whatsapp as wa;
use wasp_common::model::{MediaKind, Message, Wid};
use whatsapp_rust::proto_helpers::MessageExt as _;

use crate::session::{Session, SessionError};

/// What downloading a media message needs, and what the model shows of it. Sealed at rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRef {
    pub kind: MediaKind,
    pub mimetype: String,
    pub filename: Option<String>,
    pub size: u64,
    pub direct_path: String,
    pub media_key: Vec<u8>,
    pub file_sha256: Vec<u8>,
    pub file_enc_sha256: Vec<u8>,
}

/// The library's media type (key derivation and CDN path) of a kind.
pub fn media_type(kind: MediaKind) -> MediaType {
    match kind {
        MediaKind::Image => MediaType::Image,
        MediaKind::Video => MediaType::Video,
        MediaKind::Audio | MediaKind::Ptt => MediaType::Audio,
        MediaKind::Document => MediaType::Document,
        MediaKind::Sticker => MediaType::Sticker,
    }
}

impl Downloadable for MediaRef {
    fn direct_path(&self) -> Option<&str> {
        Some(&self.direct_path)
    }
    fn media_key(&self) -> Option<&[u8]> {
        Some(&self.media_key)
    }
    fn file_enc_sha256(&self) -> Option<&[u8]> {
        Some(&self.file_enc_sha256)
    }
    fn file_sha256(&self) -> Option<&[u8]> {
        Some(&self.file_sha256)
    }
    fn file_length(&self) -> Option<u64> {
        Some(self.size)
    }
    fn app_info(&self) -> MediaType {
        media_type(self.kind)
    }
}

/// The media of a received (or own, from another device) message, if it has any that can be
/// downloaded: its reference and caption (pure).
pub fn inbound_media(m: &wa::Message) -> Option<(MediaRef, Option<String>)> {
    let base = m.get_base_message();
    #[allow(clippy::too_many_arguments)]
    fn make(
        kind: MediaKind,
        mimetype: &Option<String>,
        default_mime: &str,
        filename: Option<&String>,
        size: Option<u64>,
        direct_path: &Option<String>,
        media_key: &Option<Vec<u8>>,
        sha: (&Option<Vec<u8>>, &Option<Vec<u8>>),
    ) -> Option<MediaRef> {
        Some(MediaRef {
            kind,
            mimetype: mimetype
                .clone()
                .filter(|m| wasp_common::model::media::is_mimetype(m))
                .unwrap_or_else(|| default_mime.to_owned()),
            filename: filename.cloned(),
            size: size.unwrap_or(0),
            direct_path: direct_path.clone().filter(|p| !p.is_empty())?,
            media_key: media_key.clone().filter(|k| k.len() == 32)?,
            file_sha256: sha.0.clone().filter(|h| h.len() == 32)?,
            file_enc_sha256: sha.1.clone().filter(|h| h.len() == 32)?,
        })
    }
    if let Some(i) = base.image_message.as_option() {
        let r = make(
            MediaKind::Image,
            &i.mimetype,
            "image/jpeg",
            None,
            i.file_length,
            &i.direct_path,
            &i.media_key,
            (&i.file_sha256, &i.file_enc_sha256),
        )?;
        return Some((r, i.caption.clone()));
    }
    if let Some(v) = base.video_message.as_option() {
        let r = make(
            MediaKind::Video,
            &v.mimetype,
            "video/mp4",
            None,
            v.file_length,
            &v.direct_path,
            &v.media_key,
            (&v.file_sha256, &v.file_enc_sha256),
        )?;
        return Some((r, v.caption.clone()));
    }
    if let Some(a) = base.audio_message.as_option() {
        let kind = if a.ptt == Some(true) {
            MediaKind::Ptt
        } else {
            MediaKind::Audio
        };
        let r = make(
            kind,
            &a.mimetype,
            "audio/ogg; codecs=opus",
            None,
            a.file_length,
            &a.direct_path,
            &a.media_key,
            (&a.file_sha256, &a.file_enc_sha256),
        )?;
        return Some((r, None));
    }
    if let Some(d) = base.document_message.as_option() {
        let r = make(
            MediaKind::Document,
            &d.mimetype,
            "application/octet-stream",
            d.file_name.as_ref(),
            d.file_length,
            &d.direct_path,
            &d.media_key,
            (&d.file_sha256, &d.file_enc_sha256),
        )?;
        return Some((r, d.caption.clone()));
    }
    if let Some(s) = base.sticker_message.as_option() {
        let r = make(
            MediaKind::Sticker,
            &s.mimetype,
            "image/webp",
            None,
            s.file_length,
            &s.direct_path,
            &s.media_key,
            (&s.file_sha256, &s.file_enc_sha256),
        )?;
        return Some((r, None));
    }
    None
}

/// What a media send carries besides the file.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub kind: MediaKind,
    pub mimetype: String,
    pub filename: Option<String>,
    pub caption: Option<String>,
}

/// Where an upload put the file and the keys to it (the library's `UploadResponse`, which
/// cannot be built outside the library).
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub url: String,
    pub direct_path: String,
    pub media_key: [u8; 32],
    pub file_sha256: [u8; 32],
    pub file_enc_sha256: [u8; 32],
    pub file_length: u64,
    pub media_key_timestamp: i64,
    pub streaming_sidecar: Option<Vec<u8>>,
}

impl From<whatsapp_rust::upload::UploadResponse> for Uploaded {
    fn from(u: whatsapp_rust::upload::UploadResponse) -> Self {
        Self {
            url: u.url,
            direct_path: u.direct_path,
            media_key: u.media_key,
            file_sha256: u.file_sha256,
            file_enc_sha256: u.file_enc_sha256,
            file_length: u.file_length,
            media_key_timestamp: u.media_key_timestamp,
            streaming_sidecar: u.streaming_sidecar,
        }
    }
}

/// The message for an uploaded file, with the fields WhatsApp's clients set (those of
/// `whatsapp_rust::media`'s builders) (pure).
pub fn message_for(u: Uploaded, o: &Outgoing) -> wa::Message {
    let mimetype = Some(o.mimetype.clone());
    macro_rules! media {
        ($ty:ident { $($extra:tt)* }) => {
            wa::message::$ty {
                url: Some(u.url),
                direct_path: Some(u.direct_path),
                media_key: Some(u.media_key.to_vec()),
                file_sha256: Some(u.file_sha256.to_vec()),
                file_enc_sha256: Some(u.file_enc_sha256.to_vec()),
                file_length: Some(u.file_length),
                media_key_timestamp: Some(u.media_key_timestamp),
                mimetype,
                $($extra)*
                ..Default::default()
            }
        };
    }
    match o.kind {
        MediaKind::Image => wa::Message {
            image_message: MessageField::some(media!(ImageMessage {
                caption: o.caption.clone(),
            })),
            ..Default::default()
        },
        MediaKind::Video => wa::Message {
            video_message: MessageField::some(media!(VideoMessage {
                caption: o.caption.clone(),
                streaming_sidecar: u.streaming_sidecar,
            })),
            ..Default::default()
        },
        MediaKind::Audio | MediaKind::Ptt => wa::Message {
            audio_message: MessageField::some(media!(AudioMessage {
                ptt: Some(o.kind == MediaKind::Ptt),
                streaming_sidecar: u.streaming_sidecar,
            })),
            ..Default::default()
        },
        MediaKind::Document => {
            let doc = wa::Message {
                document_message: MessageField::some(media!(DocumentMessage {
                    title: o.filename.clone(),
                    file_name: o.filename.clone(),
                    caption: o.caption.clone(),
                })),
                ..Default::default()
            };
            if o.caption.is_some() {
                // A captioned document travels wrapped, as WhatsApp's phones send it.
                wa::Message {
                    document_with_caption_message: MessageField::some(
                        wa::message::FutureProofMessage {
                            message: MessageField::some(doc),
                        },
                    ),
                    ..Default::default()
                }
            } else {
                doc
            }
        }
        MediaKind::Sticker => wa::Message {
            sticker_message: MessageField::some(media!(StickerMessage {})),
            ..Default::default()
        },
    }
}

/// Why a media send or download did not happen.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("the file is larger than this session's limit of {0} bytes")]
    TooLarge(u64),
    #[error("{0}")]
    BadRequest(String),
    #[error("no such message with media in this chat")]
    NotFound,
    #[error("the media is no longer on WhatsApp's servers")]
    Gone,
    #[error("fetching the media from WhatsApp failed")]
    Fetch(String),
    #[error("the upload to WhatsApp failed")]
    Upload(String),
    #[error("the request body broke off: {0}")]
    Body(String),
    #[error("temporary space for the file: {0}")]
    Spool(#[from] std::io::Error),
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// An unnamed file in the temp dir: freed when the last handle closes, whatever happens.
fn spool_file() -> std::io::Result<File> {
    tempfile::tempfile()
}

/// The encrypted file, read from any offset (the library reads it again after a host failover
/// or a resumed upload) without sharing a file position.
struct Spooled {
    file: Arc<File>,
    len: u64,
}

struct SpooledReader {
    file: Arc<File>,
    pos: u64,
}

impl Read for SpooledReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl UploadSource for Spooled {
    fn len(&self) -> u64 {
        self.len
    }

    fn reader_from(&self, offset: u64) -> std::io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(SpooledReader {
            file: self.file.clone(),
            pos: offset,
        }))
    }
}

/// Encrypts the body as it arrives into a spool file; refuses past `limit` bytes.
async fn encrypt_body<S, E>(
    mut body: S,
    kind: MediaKind,
    limit: u64,
) -> Result<(Spooled, EncryptedMediaInfo), MediaError>
where
    S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let file = spool_file()?;
    let mut out = BufWriter::with_capacity(64 * 1024, file);
    let mut enc = MediaEncryptor::new(media_type(kind))
        .map_err(|e| MediaError::Upload(format!("encryptor: {e}")))?;
    let mut seen = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| MediaError::Body(e.to_string()))?;
        seen += chunk.len() as u64;
        if seen > limit {
            return Err(MediaError::TooLarge(limit));
        }
        enc.update_to_writer(&chunk, &mut out)?;
    }
    if seen == 0 {
        return Err(MediaError::BadRequest("the file is empty".into()));
    }
    let info = enc
        .finalize_to_writer(&mut out)
        .map_err(|e| MediaError::Upload(format!("encryptor: {e}")))?;
    out.flush()?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    let len = file.metadata()?.len();
    Ok((
        Spooled {
            file: Arc::new(file),
            len,
        },
        info,
    ))
}

impl Session {
    /// Encrypts, uploads and sends the file `body` streams; records the message (and its
    /// media reference, so the sender can download it again).
    pub async fn send_media<S, E>(
        &self,
        to: &Wid,
        o: Outgoing,
        body: S,
        quoted: Option<&Message>,
        message_id: Option<String>,
    ) -> Result<Message, MediaError>
    where
        S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let client = self.connected_client()?;
        let (spooled, info) = encrypt_body(body, o.kind, self.settings.max_media_bytes).await?;
        let size = info.file_length;
        let upload = client
            .upload_stream(spooled, info, media_type(o.kind))
            .await
            .map_err(|e| MediaError::Upload(e.to_string()))?;
        let mref = MediaRef {
            kind: o.kind,
            mimetype: o.mimetype.clone(),
            filename: o.filename.clone(),
            size,
            direct_path: upload.direct_path.clone(),
            media_key: upload.media_key.to_vec(),
            file_sha256: upload.file_sha256.to_vec(),
            file_enc_sha256: upload.file_enc_sha256.to_vec(),
        };
        let mut proto = message_for(upload.into(), &o);
        if let Some(q) = quoted {
            self.quote(&mut proto, q);
        }
        let (client, id) = self.send_proto(to, proto, message_id).await?;
        let mut m = self
            .own_message(
                &client,
                to,
                &id,
                o.caption.as_deref().unwrap_or_default(),
                o.kind.as_str(),
            )
            .with_media(&o.mimetype, o.filename.as_deref(), size);
        if let Some(q) = quoted {
            m.has_quoted_msg = true;
            m.quoted_msg_id = Some(q.id.serialized.clone());
        }
        self.keep_media_ref(m.key(), &mref).await?;
        self.record_sent(&m).await?;
        Ok(m)
    }

    /// Seals and stores a message's media reference.
    pub(crate) async fn keep_media_ref(&self, key: &str, r: &MediaRef) -> Result<(), SessionError> {
        let plain = serde_json::to_vec(r).map_err(crate::store::StoreError::from)?;
        self.auth
            .put_media_ref(key, &plain)
            .await
            .map_err(|e| SessionError::Auth(format!("storing a media reference: {e}")))
    }

    /// The media of message `id` of `chat`, fetched from WhatsApp, decrypted and checked: its
    /// reference and a file positioned at its start.
    pub async fn open_media(&self, chat: &Wid, id: &str) -> Result<(MediaRef, File), MediaError> {
        let key = self
            .store
            .find_key(&chat.serialized, id)
            .await
            .map_err(SessionError::from)?
            .ok_or(MediaError::NotFound)?;
        let raw = self
            .auth
            .media_ref(&key)
            .await
            .map_err(|e| MediaError::Fetch(format!("reading the media reference: {e}")))?
            .ok_or(MediaError::NotFound)?;
        let mref: MediaRef = serde_json::from_slice(&raw)
            .map_err(|e| MediaError::Fetch(format!("media reference: {e}")))?;
        if mref.size > self.settings.max_media_bytes {
            return Err(MediaError::TooLarge(self.settings.max_media_bytes));
        }
        let client = self.connected_client()?;
        let file = spool_file()?;
        let mut file = client.download_to_writer(&mref, file).await.map_err(|e| {
            use whatsapp_rust::error::ErrorChainExt as _;
            match e.http_status() {
                Some(404 | 410) => MediaError::Gone,
                _ => MediaError::Fetch(e.to_string()),
            }
        })?;
        // The library authenticated the ciphertext (its MAC); the plaintext must also be the
        // file the sender hashed, before a byte of it leaves the pod.
        let (file, matches) = tokio::task::spawn_blocking(move || {
            let ok = plaintext_matches(&mut file, &mref.file_sha256);
            (file, ok.map(|ok| (ok, mref)))
        })
        .await
        .map_err(|e| MediaError::Fetch(format!("hash check: {e}")))?;
        let (ok, mref) = matches?;
        if !ok {
            return Err(MediaError::Fetch(
                "the decrypted file does not match its SHA-256".into(),
            ));
        }
        Ok((mref, file))
    }
}

/// Whether the file's SHA-256 is `expected`; leaves the file at its start.
pub fn plaintext_matches(file: &mut File, expected: &[u8]) -> std::io::Result<bool> {
    use sha2::Digest as _;
    file.rewind()?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(file, &mut hasher)?;
    file.rewind()?;
    Ok(hasher.finalize().as_slice() == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload() -> Uploaded {
        Uploaded {
            url: "https://mmg/x".into(),
            direct_path: "/v/t62/x.enc".into(),
            media_key: [1; 32],
            file_enc_sha256: [2; 32],
            file_sha256: [3; 32],
            file_length: 1234,
            media_key_timestamp: 1_700_000_000,
            streaming_sidecar: None,
        }
    }

    fn out(kind: MediaKind, mimetype: &str) -> Outgoing {
        Outgoing {
            kind,
            mimetype: mimetype.into(),
            filename: Some("plan.pdf".into()),
            caption: Some("your plan".into()),
        }
    }

    #[test]
    fn a_sent_file_reads_back_as_the_same_media() {
        for (kind, mime) in [
            (MediaKind::Image, "image/png"),
            (MediaKind::Video, "video/mp4"),
            (MediaKind::Audio, "audio/mpeg"),
            (MediaKind::Ptt, "audio/ogg; codecs=opus"),
            (MediaKind::Document, "application/pdf"),
            (MediaKind::Sticker, "image/webp"),
        ] {
            let o = out(kind, mime);
            let msg = message_for(upload(), &o);
            let (r, caption) = inbound_media(&msg).unwrap_or_else(|| panic!("{kind:?}"));
            assert_eq!(r.kind, kind);
            assert_eq!(r.mimetype, mime);
            assert_eq!(r.size, 1234);
            assert_eq!(r.direct_path, "/v/t62/x.enc");
            assert_eq!(r.media_key, vec![1; 32]);
            let captioned = matches!(
                kind,
                MediaKind::Image | MediaKind::Video | MediaKind::Document
            );
            assert_eq!(
                caption.as_deref(),
                captioned.then_some("your plan"),
                "{kind:?}"
            );
            let named = kind == MediaKind::Document;
            assert_eq!(r.filename.as_deref(), named.then_some("plan.pdf"));
        }
    }

    #[test]
    fn media_without_what_a_download_needs_is_not_media() {
        let mut msg = message_for(upload(), &out(MediaKind::Image, "image/jpeg"));
        assert!(inbound_media(&msg).is_some());
        if let Some(i) = msg.image_message.as_option_mut() {
            i.media_key = Some(vec![1; 5]);
        }
        assert!(inbound_media(&msg).is_none());
        let text = wa::Message {
            conversation: Some("hi".into()),
            ..Default::default()
        };
        assert!(inbound_media(&text).is_none());
    }

    #[test]
    fn a_missing_or_bad_mimetype_takes_the_kinds_default() {
        let mut msg = message_for(upload(), &out(MediaKind::Image, "image/jpeg"));
        if let Some(i) = msg.image_message.as_option_mut() {
            i.mimetype = Some("not a mimetype".into());
        }
        assert_eq!(inbound_media(&msg).unwrap().0.mimetype, "image/jpeg");
    }

    #[test]
    fn a_file_matches_only_its_own_hash() {
        use sha2::Digest as _;
        let mut f = spool_file().unwrap();
        std::io::Write::write_all(&mut f, b"treatment plan").unwrap();
        let right = sha2::Sha256::digest(b"treatment plan");
        assert!(plaintext_matches(&mut f, &right).unwrap());
        let wrong = sha2::Sha256::digest(b"treatment plan!");
        assert!(!plaintext_matches(&mut f, &wrong).unwrap());
        let mut back = String::new();
        f.read_to_string(&mut back).unwrap();
        assert_eq!(back, "treatment plan", "left at the start");
    }

    #[tokio::test]
    async fn the_body_is_encrypted_as_it_streams_and_refused_past_the_limit() {
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> =
            vec![Ok(vec![7u8; 100_000].into()), Ok(vec![8u8; 100_000].into())];
        let (spooled, info) =
            encrypt_body(futures::stream::iter(chunks), MediaKind::Document, 1 << 20)
                .await
                .unwrap();
        assert_eq!(info.file_length, 200_000);
        // AES-CBC padding plus the 10-byte MAC.
        assert!(spooled.len() > 200_000 && spooled.len() <= 200_000 + 16 + 10);
        let mut all = Vec::new();
        spooled
            .reader_from(0)
            .unwrap()
            .read_to_end(&mut all)
            .unwrap();
        assert_eq!(all.len() as u64, spooled.len());
        let mut tail = Vec::new();
        spooled
            .reader_from(150_000)
            .unwrap()
            .read_to_end(&mut tail)
            .unwrap();
        assert_eq!(tail, all[150_000..]);

        let big: Vec<Result<bytes::Bytes, std::io::Error>> =
            vec![Ok(vec![0u8; 600].into()), Ok(vec![0u8; 600].into())];
        assert!(matches!(
            encrypt_body(futures::stream::iter(big), MediaKind::Image, 1000).await,
            Err(MediaError::TooLarge(1000))
        ));
        let empty: Vec<Result<bytes::Bytes, std::io::Error>> = vec![];
        assert!(matches!(
            encrypt_body(futures::stream::iter(empty), MediaKind::Image, 1000).await,
            Err(MediaError::BadRequest(_))
        ));
    }
}
