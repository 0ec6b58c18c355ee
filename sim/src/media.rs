//! Media as WhatsApp's media servers keep it: encrypted blobs uploaded to
//! `/mms/<type>/<token>` and fetched by their direct path, gated by the media auth token the
//! chat server hands out in `media_conn`. The blobs are opaque here — encrypting and
//! decrypting them is the client library's code (`wacore::upload`, `wacore::download`),
//! used by the simulated contacts and phones.
//!
//! Everything is in memory and bounded: the oldest blobs are forgotten first, and nothing
//! survives a simulator restart.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use wacore::download::MediaType;

/// The largest upload the media server accepts (larger bodies get 413).
pub const MAX_UPLOAD: usize = 100 * 1024 * 1024;
/// Encrypted blobs kept in total before the oldest are dropped.
pub const MAX_STORED: usize = 1024 * 1024 * 1024;
/// Bytes of interrupted uploads kept for resuming.
pub const MAX_PARTIAL: usize = 256 * 1024 * 1024;
/// Decrypted media the contacts received, kept for the control API.
pub const MAX_RECEIVED: usize = 512 * 1024 * 1024;

/// What kind of media a simulated contact sends (and which `wa::Message` field carries it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Image,
    Video,
    Audio,
    /// A voice note: an `audio_message` with `ptt=true`.
    Ptt,
    Document,
    Sticker,
}

impl MediaKind {
    /// The library's media type: it picks the HKDF info and the upload path.
    pub fn media_type(self) -> MediaType {
        match self {
            Self::Image => MediaType::Image,
            Self::Video => MediaType::Video,
            Self::Audio | Self::Ptt => MediaType::Audio,
            Self::Document => MediaType::Document,
            Self::Sticker => MediaType::Sticker,
        }
    }

    /// The `<enc mediatype=…>` attribute.
    pub fn mediatype_attr(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Video => "video",
            Self::Audio => "audio",
            Self::Ptt => "ptt",
            Self::Document => "document",
            Self::Sticker => "sticker",
        }
    }
}

/// Media a contact sends: the plaintext and what the message says about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactMedia {
    pub kind: MediaKind,
    pub data: Vec<u8>,
    pub mimetype: String,
    pub filename: Option<String>,
    pub caption: Option<String>,
}

/// Media a contact received from a device: what the message declared, and what the
/// downloaded, verified, decrypted bytes are. `error` says why it could not be had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedMedia {
    pub kind: MediaKind,
    pub mimetype: String,
    #[serde(default)]
    pub filename: Option<String>,
    #[serde(default)]
    pub caption: Option<String>,
    /// Bytes of plaintext (0 when the download failed).
    pub size: u64,
    /// Hex SHA-256 of the plaintext (empty when the download failed).
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The URL token of a blob: base64url (no padding) of its SHA-256, i.e. of the
/// ciphertext's `file_enc_sha256`.
pub fn token_of(sha256: &[u8]) -> String {
    data_encoding::BASE64URL_NOPAD.encode(sha256)
}

/// The hash a URL token names, if it is one.
pub fn token_hash(token: &str) -> Option<[u8; 32]> {
    data_encoding::BASE64URL_NOPAD
        .decode(token.as_bytes())
        .ok()?
        .try_into()
        .ok()
}

/// The upload path segment (`/mms/<segment>/…`) → the media family a direct path names.
/// `None` for a segment the media server does not take.
pub fn path_family(mms_type: &str) -> Option<&'static str> {
    Some(match mms_type {
        "image" => "t62.7118-24",
        "video" => "t62.7161-24",
        "audio" => "t62.7114-24",
        "document" => "t62.7119-24",
        "md-msg-hist" => "t62.7117-24",
        "md-app-state" => "t62.7120-24",
        "sticker-pack" => "t62.15575-24",
        "thumbnail-sticker-pack" | "thumbnail-link" => "t62.36147-24",
        _ => return None,
    })
}

/// A fresh direct path for a blob uploaded under `/mms/<mms_type>`: `/v/<family>/<random>.enc`
/// (WhatsApp's carry signed query parameters too; the client appends `auth` and `token`
/// itself, so the simulator's have none).
pub fn new_direct_path(mms_type: &str) -> String {
    use rand::RngExt as _;
    let family = path_family(mms_type).unwrap_or("t62.7118-24");
    let mut rng = crate::crypto::new_rng();
    let a: u64 = rng.random_range(10_000_000..100_000_000);
    let b: u64 = rng.random();
    let c: u64 = rng.random();
    format!("/v/{family}/{a}_{b}_{c}_n.enc")
}

/// A random media auth token (URL-safe: the client pastes it into query strings as is).
pub fn new_auth_token() -> String {
    use rand::RngExt as _;
    let raw: [u8; 32] = crate::crypto::new_rng().random();
    data_encoding::BASE64URL_NOPAD.encode(&raw)
}

/// Byte blobs under a total size cap; inserting past it forgets the oldest.
#[derive(Debug)]
pub struct Bounded<K: Hash + Eq + Clone> {
    map: HashMap<K, Bytes>,
    order: VecDeque<K>,
    total: usize,
    cap: usize,
}

impl<K: Hash + Eq + Clone> Bounded<K> {
    pub fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            total: 0,
            cap,
        }
    }

    /// Stores `v` under `k` (replacing what was there); returns the keys forgotten to make room.
    pub fn insert(&mut self, k: K, v: Bytes) -> Vec<K> {
        self.remove(&k);
        self.total += v.len();
        self.map.insert(k.clone(), v);
        self.order.push_back(k.clone());
        let mut evicted = Vec::new();
        while self.total > self.cap {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if old == k {
                // The newest alone is over the cap: keep it anyway.
                self.order.push_front(old);
                break;
            }
            if let Some(b) = self.map.remove(&old) {
                self.total -= b.len();
                evicted.push(old);
            }
        }
        evicted
    }

    pub fn get(&self, k: &K) -> Option<&Bytes> {
        self.map.get(k)
    }

    pub fn remove(&mut self, k: &K) -> Option<Bytes> {
        let b = self.map.remove(k)?;
        self.total -= b.len();
        self.order.retain(|o| o != k);
        Some(b)
    }

    pub fn total(&self) -> usize {
        self.total
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// A stored encrypted blob: its bytes and its token (base64url of their SHA-256).
#[derive(Debug, Clone)]
pub struct Blob {
    pub data: Bytes,
    pub token: String,
}

/// The media server's state: blobs by direct path, interrupted uploads by token, the auth
/// token `media_conn` hands out, and the host clients are told to use.
pub struct MediaStore {
    inner: Mutex<StoreInner>,
    auth: Mutex<String>,
    host: Mutex<Option<String>>,
}

struct StoreInner {
    blobs: Bounded<String>,
    /// Direct path → token, and token → direct path (one blob per distinct ciphertext).
    tokens: HashMap<String, String>,
    paths: HashMap<String, String>,
    partial: Bounded<String>,
    received: Bounded<(String, String)>,
}

/// What a resume check (`?resume=1`) finds for a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadState {
    Complete {
        direct_path: String,
    },
    /// This many bytes of an interrupted upload are kept.
    Partial(usize),
    None,
}

impl Default for MediaStore {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MediaStore {
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(StoreInner {
                blobs: Bounded::new(MAX_STORED),
                tokens: HashMap::new(),
                paths: HashMap::new(),
                partial: Bounded::new(MAX_PARTIAL),
                received: Bounded::new(MAX_RECEIVED),
            }),
            auth: Mutex::new(new_auth_token()),
            host: Mutex::new(None),
        }
    }

    /// The auth token uploads (and authenticated downloads) must carry.
    pub fn auth(&self) -> String {
        lock(&self.auth).clone()
    }

    /// Replaces the auth token: requests with the old one get 401 until the client fetches
    /// a new `media_conn`.
    pub fn rotate_auth(&self) -> String {
        let fresh = new_auth_token();
        *lock(&self.auth) = fresh.clone();
        fresh
    }

    /// `host:port` of the media server, once it listens.
    pub fn host(&self) -> Option<String> {
        lock(&self.host).clone()
    }

    pub(crate) fn set_host(&self, host: String) {
        *lock(&self.host) = Some(host);
    }

    /// `https://<host><direct_path>`, the `url` WhatsApp puts beside a direct path.
    pub fn url_of(&self, direct_path: &str) -> String {
        format!(
            "https://{}{direct_path}",
            self.host().unwrap_or_else(|| "127.0.0.1".to_owned())
        )
    }

    /// Stores an encrypted blob uploaded under `/mms/<mms_type>`; returns its direct path (the
    /// existing one when the same ciphertext is already stored).
    pub fn put(&self, mms_type: &str, data: Bytes) -> String {
        let token = token_of(&Sha256::digest(&data));
        let mut s = lock(&self.inner);
        s.partial.remove(&token);
        if let Some(path) = s.paths.get(&token).cloned()
            && s.blobs.get(&path).is_some()
        {
            return path;
        }
        let path = new_direct_path(mms_type);
        for old in s.blobs.insert(path.clone(), data) {
            if let Some(t) = s.tokens.remove(&old) {
                s.paths.remove(&t);
            }
        }
        s.tokens.insert(path.clone(), token.clone());
        s.paths.insert(token, path.clone());
        path
    }

    /// The blob at `direct_path`.
    pub fn get(&self, direct_path: &str) -> Option<Blob> {
        let s = lock(&self.inner);
        let data = s.blobs.get(&direct_path.to_owned())?.clone();
        let token = s.tokens.get(direct_path)?.clone();
        Some(Blob { data, token })
    }

    pub fn upload_state(&self, token: &str) -> UploadState {
        let s = lock(&self.inner);
        if let Some(path) = s.paths.get(token)
            && s.blobs.get(path).is_some()
        {
            return UploadState::Complete {
                direct_path: path.clone(),
            };
        }
        match s.partial.get(&token.to_owned()) {
            Some(b) if !b.is_empty() => UploadState::Partial(b.len()),
            _ => UploadState::None,
        }
    }

    /// The first `offset` bytes of an interrupted upload of `token`, if that many are kept.
    pub fn partial_prefix(&self, token: &str, offset: usize) -> Option<Bytes> {
        let s = lock(&self.inner);
        let b = s.partial.get(&token.to_owned())?;
        (b.len() >= offset).then(|| b.slice(..offset))
    }

    /// Keeps what arrived of an upload that broke off, for a later `file_offset` resume.
    pub fn keep_partial(&self, token: &str, data: Bytes) {
        if data.is_empty() {
            return;
        }
        lock(&self.inner).partial.insert(token.to_owned(), data);
    }

    pub fn drop_partial(&self, token: &str) {
        lock(&self.inner).partial.remove(&token.to_owned());
    }

    /// Total bytes of encrypted blobs stored.
    pub fn stored_bytes(&self) -> usize {
        lock(&self.inner).blobs.total()
    }

    /// Keeps the decrypted media a contact received (message `id`).
    pub(crate) fn keep_received(&self, contact: &str, id: &str, data: Bytes) {
        lock(&self.inner)
            .received
            .insert((contact.to_owned(), id.to_owned()), data);
    }

    pub fn received(&self, contact: &str, id: &str) -> Option<Bytes> {
        lock(&self.inner)
            .received
            .get(&(contact.to_owned(), id.to_owned()))
            .cloned()
    }
}

/// An encrypted blob on the media server, with what a message needs to name it.
#[derive(Debug, Clone)]
pub struct MediaRef {
    pub url: String,
    pub direct_path: String,
    pub media_key: [u8; 32],
    pub file_sha256: [u8; 32],
    pub file_enc_sha256: [u8; 32],
    /// Plaintext length.
    pub file_length: u64,
    pub media_key_timestamp: i64,
    pub streaming_sidecar: Option<Vec<u8>>,
}

/// The `wa::Message` a WhatsApp phone sends for `kind` media stored at `r`: the media
/// fields every `Downloadable` reads, the mimetype, and the caption (a captioned document
/// travels in `document_with_caption_message`, as the apps send it).
pub fn media_message(
    kind: MediaKind,
    r: &MediaRef,
    mimetype: &str,
    filename: Option<&str>,
    caption: Option<&str>,
) -> waproto::whatsapp::Message {
    use buffa::MessageField;
    use waproto::whatsapp::{self as wa, message as m};
    let mimetype = Some(mimetype.to_owned());
    let caption = caption.map(str::to_owned);
    let (url, direct_path) = (Some(r.url.clone()), Some(r.direct_path.clone()));
    let media_key = Some(r.media_key.to_vec());
    let file_sha256 = Some(r.file_sha256.to_vec());
    let file_enc_sha256 = Some(r.file_enc_sha256.to_vec());
    let (file_length, media_key_timestamp) = (Some(r.file_length), Some(r.media_key_timestamp));
    let mut msg = wa::Message::default();
    match kind {
        MediaKind::Image => {
            msg.image_message = MessageField::some(m::ImageMessage {
                url,
                mimetype,
                caption,
                file_sha256,
                file_length,
                media_key,
                file_enc_sha256,
                direct_path,
                media_key_timestamp,
                ..Default::default()
            });
        }
        MediaKind::Video => {
            msg.video_message = MessageField::some(m::VideoMessage {
                url,
                mimetype,
                caption,
                file_sha256,
                file_length,
                media_key,
                file_enc_sha256,
                direct_path,
                media_key_timestamp,
                streaming_sidecar: r.streaming_sidecar.clone(),
                ..Default::default()
            });
        }
        MediaKind::Audio | MediaKind::Ptt => {
            msg.audio_message = MessageField::some(m::AudioMessage {
                url,
                mimetype,
                file_sha256,
                file_length,
                ptt: Some(kind == MediaKind::Ptt),
                media_key,
                file_enc_sha256,
                direct_path,
                media_key_timestamp,
                streaming_sidecar: r.streaming_sidecar.clone(),
                ..Default::default()
            });
        }
        MediaKind::Document => {
            let doc = m::DocumentMessage {
                url,
                mimetype,
                title: filename.map(str::to_owned),
                file_sha256,
                file_length,
                media_key,
                file_name: filename.map(str::to_owned),
                file_enc_sha256,
                direct_path,
                media_key_timestamp,
                caption: caption.clone(),
                ..Default::default()
            };
            if caption.is_some() {
                msg.document_with_caption_message = MessageField::some(m::FutureProofMessage {
                    message: MessageField::some(wa::Message {
                        document_message: MessageField::some(doc),
                        ..Default::default()
                    }),
                });
            } else {
                msg.document_message = MessageField::some(doc);
            }
        }
        MediaKind::Sticker => {
            msg.sticker_message = MessageField::some(m::StickerMessage {
                url,
                mimetype,
                file_sha256,
                file_length,
                media_key,
                file_enc_sha256,
                direct_path,
                media_key_timestamp,
                ..Default::default()
            });
        }
    }
    msg
}

/// What a received message says about its media: kind, mimetype, file name, caption, and
/// the part the library downloads (`None` for a message without media).
pub struct MediaOf<'a> {
    pub kind: MediaKind,
    pub mimetype: String,
    pub filename: Option<String>,
    pub caption: Option<String>,
    pub downloadable: &'a dyn wacore::download::Downloadable,
}

/// The media of `msg` (after the wrappers the apps put around it: ephemeral, view once,
/// document with caption…).
pub fn media_of(msg: &waproto::whatsapp::Message) -> Option<MediaOf<'_>> {
    use wacore::proto_helpers::MessageExt as _;
    let base = msg.get_base_message();
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    if let Some(i) = base.image_message.as_option() {
        return Some(MediaOf {
            kind: MediaKind::Image,
            mimetype: s(&i.mimetype),
            filename: None,
            caption: i.caption.clone(),
            downloadable: i,
        });
    }
    if let Some(v) = base.video_message.as_option() {
        return Some(MediaOf {
            kind: MediaKind::Video,
            mimetype: s(&v.mimetype),
            filename: None,
            caption: v.caption.clone(),
            downloadable: v,
        });
    }
    if let Some(a) = base.audio_message.as_option() {
        return Some(MediaOf {
            kind: if a.ptt == Some(true) {
                MediaKind::Ptt
            } else {
                MediaKind::Audio
            },
            mimetype: s(&a.mimetype),
            filename: None,
            caption: None,
            downloadable: a,
        });
    }
    if let Some(d) = base.document_message.as_option() {
        return Some(MediaOf {
            kind: MediaKind::Document,
            mimetype: s(&d.mimetype),
            filename: d.file_name.clone(),
            caption: d.caption.clone(),
            downloadable: d,
        });
    }
    if let Some(st) = base.sticker_message.as_option() {
        return Some(MediaOf {
            kind: MediaKind::Sticker,
            mimetype: s(&st.mimetype),
            filename: None,
            caption: None,
            downloadable: st,
        });
    }
    None
}

/// Fetches the blob a received message names from the store and checks and decrypts it
/// with the library's code: the blob must be the one `file_enc_sha256` names, its MAC must
/// verify under the media key, and the plaintext must hash to `file_sha256` and be
/// `file_length` bytes long.
pub async fn fetch_and_decrypt(
    store: &MediaStore,
    d: &dyn wacore::download::Downloadable,
) -> Result<Vec<u8>, String> {
    use wacore::download::DownloadUtils;
    let path = d.direct_path().ok_or("the message has no direct_path")?;
    let key = d
        .media_key()
        .ok_or("the message has no media_key")?
        .to_vec();
    let enc_sha = d
        .file_enc_sha256()
        .ok_or("the message has no file_enc_sha256")?;
    let sha = d
        .file_sha256()
        .ok_or("the message has no file_sha256")?
        .to_vec();
    let blob = store
        .get(path)
        .ok_or_else(|| format!("no media at {path}"))?;
    if blob.token != token_of(enc_sha) {
        return Err("the stored blob is not the one file_enc_sha256 names".into());
    }
    let media_type = d.app_info();
    // Decrypting tens of MiB is CPU work: off the async workers.
    let plain = tokio::task::spawn_blocking(move || {
        let plain = DownloadUtils::verify_and_decrypt(&blob.data, &key, media_type)
            .map_err(|e| format!("decrypting: {e}"))?;
        DownloadUtils::validate_plaintext_sha256(&plain, &sha).map_err(|e| e.to_string())?;
        Ok::<_, String>(plain)
    })
    .await
    .map_err(|e| e.to_string())??;
    if let Some(len) = d.file_length()
        && len != plain.len() as u64
    {
        return Err(format!(
            "file_length {len} but the media has {} bytes",
            plain.len()
        ));
    }
    Ok(plain)
}

/// Lower-case hex of SHA-256 over `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(&Sha256::digest(data))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_base64url_of_the_hash() {
        let h = Sha256::digest(b"abc");
        let t = token_of(&h);
        assert!(!t.contains('=') && !t.contains('+') && !t.contains('/'));
        assert_eq!(token_hash(&t).unwrap().as_slice(), h.as_slice());
        assert_eq!(token_hash("not a token!"), None);
        assert_eq!(token_hash(&token_of(b"short")), None);
    }

    #[test]
    fn direct_paths_look_like_whatsapps() {
        let p = new_direct_path("image");
        assert!(
            p.starts_with("/v/t62.7118-24/") && p.ends_with("_n.enc"),
            "{p}"
        );
        assert!(!p.contains('?'));
        assert!(new_direct_path("document").starts_with("/v/t62.7119-24/"));
        assert_ne!(new_direct_path("image"), new_direct_path("image"));
        assert_eq!(path_family("bogus"), None);
    }

    #[test]
    fn bounded_forgets_the_oldest() {
        let mut b = Bounded::new(10);
        assert!(b.insert("a", Bytes::from_static(b"12345")).is_empty());
        assert!(b.insert("b", Bytes::from_static(b"1234")).is_empty());
        assert_eq!(b.insert("c", Bytes::from_static(b"123")), vec!["a"]);
        assert_eq!(b.total(), 7);
        assert!(b.get(&"a").is_none() && b.get(&"b").is_some());
        // Replacing a key does not count it twice.
        b.insert("b", Bytes::from_static(b"1"));
        assert_eq!(b.total(), 4);
        // One blob over the cap alone is kept.
        assert_eq!(b.insert("big", Bytes::from(vec![0; 20])).len(), 2);
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn the_store_dedupes_and_tracks_uploads() {
        let store = MediaStore::new();
        let data = Bytes::from_static(b"ciphertext");
        let token = token_of(&Sha256::digest(&data));
        assert_eq!(store.upload_state(&token), UploadState::None);
        store.keep_partial(&token, data.slice(..4));
        assert_eq!(store.upload_state(&token), UploadState::Partial(4));
        assert_eq!(store.partial_prefix(&token, 2).unwrap(), &b"ci"[..]);
        assert!(store.partial_prefix(&token, 5).is_none());
        let path = store.put("image", data.clone());
        assert_eq!(store.put("image", data.clone()), path);
        assert_eq!(
            store.upload_state(&token),
            UploadState::Complete {
                direct_path: path.clone()
            }
        );
        let blob = store.get(&path).unwrap();
        assert_eq!((blob.data, blob.token), (data, token));
        assert!(store.get("/v/t62.7118-24/unknown.enc").is_none());
        let old = store.auth();
        assert_ne!(store.rotate_auth(), old);
    }
}

impl crate::sim::Sim {
    /// Encrypts `data` as `media_type` media with the library's media encryption and stores
    /// the blob on the media server, as a phone uploads before it sends.
    pub async fn store_media(
        &self,
        data: Vec<u8>,
        media_type: MediaType,
    ) -> Result<MediaRef, crate::sim::SimError> {
        use crate::sim::SimError;
        let file_length = data.len() as u64;
        let enc =
            tokio::task::spawn_blocking(move || wacore::upload::encrypt_media(&data, media_type))
                .await
                .map_err(|e| SimError::Media(e.to_string()))?
                .map_err(|e| SimError::Media(e.to_string()))?;
        let direct_path = self
            .media()
            .put(media_type.mms_type(), Bytes::from(enc.data_to_upload));
        Ok(MediaRef {
            url: self.media().url_of(&direct_path),
            direct_path,
            media_key: enc.media_key,
            file_sha256: enc.file_sha256,
            file_enc_sha256: enc.file_enc_sha256,
            file_length,
            media_key_timestamp: crate::sim::now_secs() as i64,
            streaming_sidecar: enc.streaming_sidecar,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod message_tests {
    use super::*;
    use crate::sim::{Sim, SimKeys};

    #[tokio::test]
    async fn what_a_phone_sends_is_what_a_receiver_downloads() {
        let sim = Sim::new(SimKeys::generate()).unwrap();
        for kind in [
            MediaKind::Image,
            MediaKind::Video,
            MediaKind::Audio,
            MediaKind::Ptt,
            MediaKind::Document,
            MediaKind::Sticker,
        ] {
            let data = format!("{kind:?} bytes").repeat(100).into_bytes();
            let r = sim
                .store_media(data.clone(), kind.media_type())
                .await
                .unwrap();
            for caption in [None, Some("cap")] {
                let msg = media_message(kind, &r, "x/y", Some("f.bin"), caption);
                assert_eq!(
                    wacore::send::media_type_from_message(&msg),
                    Some(kind.mediatype_attr())
                );
                assert_eq!(wacore::send::stanza_type_from_message(&msg), "media");
                let m = media_of(&msg).unwrap();
                assert_eq!((m.kind, m.mimetype.as_str()), (kind, "x/y"));
                if matches!(
                    kind,
                    MediaKind::Image | MediaKind::Video | MediaKind::Document
                ) {
                    assert_eq!(m.caption.as_deref(), caption);
                }
                if kind == MediaKind::Document {
                    assert_eq!(m.filename.as_deref(), Some("f.bin"));
                    // A captioned document is wrapped, as the apps send it.
                    assert_eq!(
                        msg.document_with_caption_message.is_set(),
                        caption.is_some()
                    );
                }
                assert_eq!(
                    fetch_and_decrypt(sim.media(), m.downloadable)
                        .await
                        .unwrap(),
                    data
                );
            }
        }
        let text = waproto::whatsapp::Message {
            conversation: Some("hi".into()),
            ..Default::default()
        };
        assert!(media_of(&text).is_none());
    }

    #[tokio::test]
    async fn a_tampered_or_missing_blob_is_reported() {
        let sim = Sim::new(SimKeys::generate()).unwrap();
        let r = sim
            .store_media(b"secret".to_vec(), MediaType::Image)
            .await
            .unwrap();
        let mut wrong_key = r.clone();
        wrong_key.media_key = [9; 32];
        let msg = media_message(MediaKind::Image, &wrong_key, "image/png", None, None);
        let e = fetch_and_decrypt(sim.media(), media_of(&msg).unwrap().downloadable)
            .await
            .unwrap_err();
        assert!(e.contains("decrypting"), "{e}");
        let mut wrong_hash = r.clone();
        wrong_hash.file_enc_sha256 = [1; 32];
        let msg = media_message(MediaKind::Image, &wrong_hash, "image/png", None, None);
        let e = fetch_and_decrypt(sim.media(), media_of(&msg).unwrap().downloadable)
            .await
            .unwrap_err();
        assert!(e.contains("not the one"), "{e}");
        let mut wrong_len = r.clone();
        wrong_len.file_length = 99;
        let msg = media_message(MediaKind::Image, &wrong_len, "image/png", None, None);
        let e = fetch_and_decrypt(sim.media(), media_of(&msg).unwrap().downloadable)
            .await
            .unwrap_err();
        assert!(e.contains("file_length"), "{e}");
        let mut gone = r;
        gone.direct_path = "/v/t62.7118-24/gone.enc".into();
        let msg = media_message(MediaKind::Image, &gone, "image/png", None, None);
        let e = fetch_and_decrypt(sim.media(), media_of(&msg).unwrap().downloadable)
            .await
            .unwrap_err();
        assert!(e.contains("no media"), "{e}");
    }
}
