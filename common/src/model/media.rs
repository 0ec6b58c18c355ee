//! Media of a message, in whatsapp-web.js's terms: which kind a file is sent as (its
//! `MessageTypes`), what a mimetype and a file name may be, and how a download names its file.
//! Pure: the API checks a send with these before a byte goes to the pod, and the pod again.

use serde::{Deserialize, Serialize};

/// Longest mimetype taken (RFC 6838 allows 127 + 1 + 127, plus parameters).
pub const MAX_MIMETYPE_LEN: usize = 255;
/// Longest file name taken, in bytes (the common file system limit).
pub const MAX_FILENAME_BYTES: usize = 255;
/// Longest caption, in characters (WhatsApp shows about 1,024; longer ones are cut by phones).
pub const MAX_CAPTION_CHARS: usize = 4096;

/// How a media message travels: whatsapp-web.js's message `type` of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Image,
    Video,
    Audio,
    /// A voice note (push to talk).
    Ptt,
    Document,
    Sticker,
}

impl MediaKind {
    pub const ALL: [Self; 6] = [
        Self::Image,
        Self::Video,
        Self::Audio,
        Self::Ptt,
        Self::Document,
        Self::Sticker,
    ];

    /// whatsapp-web.js's `MessageTypes` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Video => "video",
            Self::Audio => "audio",
            Self::Ptt => "ptt",
            Self::Document => "document",
            Self::Sticker => "sticker",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// whatsapp-web.js's `MessageSendOptions` that choose how media travels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendAs {
    pub document: bool,
    pub voice: bool,
    pub sticker: bool,
}

/// Why a file cannot be sent as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaRefusal {
    /// Not a mimetype at all (400).
    #[error("{0}")]
    BadMimetype(String),
    /// A mimetype the requested kind cannot carry (415).
    #[error("{0}")]
    Unsupported(String),
    /// A bad file name (400).
    #[error("{0}")]
    BadFilename(String),
}

/// Whether `s` is a mimetype: `type/subtype` of RFC 6838 token characters, optionally with
/// `; name=value` parameters, at most [`MAX_MIMETYPE_LEN`] bytes, no control characters.
pub fn is_mimetype(s: &str) -> bool {
    if s.is_empty() || s.len() > MAX_MIMETYPE_LEN || s.chars().any(char::is_control) {
        return false;
    }
    s.parse::<mime::Mime>().is_ok_and(|m| {
        m.type_() != mime::STAR
            && !m.type_().as_str().is_empty()
            && !m.subtype().as_str().is_empty()
    })
}

/// The essence (`type/subtype`, lowercase) of a mimetype [`is_mimetype`] accepted.
pub fn essence(mimetype: &str) -> String {
    mimetype
        .parse::<mime::Mime>()
        .map(|m| m.essence_str().to_ascii_lowercase())
        .unwrap_or_else(|_| mimetype.to_ascii_lowercase())
}

/// The kind a file of `mimetype` is sent as, as whatsapp-web.js decides it: images, videos and
/// audio WhatsApp plays inline as such, everything else as a document; `sendMediaAsDocument`,
/// `sendAudioAsVoice` and `sendMediaAsSticker` override, and refuse (415) what they cannot carry.
pub fn choose_kind(mimetype: &str, send_as: SendAs) -> Result<MediaKind, MediaRefusal> {
    if !is_mimetype(mimetype) {
        return Err(MediaRefusal::BadMimetype(format!(
            "mimetype must be type/subtype (at most {MAX_MIMETYPE_LEN} bytes), e.g. image/jpeg"
        )));
    }
    let e = essence(mimetype);
    let picked = [send_as.document, send_as.voice, send_as.sticker]
        .iter()
        .filter(|b| **b)
        .count();
    if picked > 1 {
        return Err(MediaRefusal::Unsupported(
            "choose at most one of sendMediaAsDocument, sendAudioAsVoice, sendMediaAsSticker"
                .into(),
        ));
    }
    if send_as.document {
        return Ok(MediaKind::Document);
    }
    if send_as.sticker {
        return if e == "image/webp" {
            Ok(MediaKind::Sticker)
        } else {
            Err(MediaRefusal::Unsupported(format!(
                "a sticker must be image/webp, not {e}"
            )))
        };
    }
    if send_as.voice {
        return if e.starts_with("audio/") {
            Ok(MediaKind::Ptt)
        } else {
            Err(MediaRefusal::Unsupported(format!(
                "a voice note must be audio/*, not {e}"
            )))
        };
    }
    Ok(match e.as_str() {
        "image/jpeg" | "image/png" | "image/webp" => MediaKind::Image,
        "video/mp4" | "video/3gpp" => MediaKind::Video,
        a if a.starts_with("audio/") => MediaKind::Audio,
        _ => MediaKind::Document,
    })
}

/// A file name as given by a client, checked: no path, no control characters, not empty, at
/// most [`MAX_FILENAME_BYTES`] bytes. Surrounding whitespace is trimmed.
pub fn check_filename(name: &str) -> Result<String, MediaRefusal> {
    let name = name.trim();
    let bad = name.is_empty()
        || name.len() > MAX_FILENAME_BYTES
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c.is_control() || c == '/' || c == '\\');
    if bad {
        return Err(MediaRefusal::BadFilename(format!(
            "filename must be 1..={MAX_FILENAME_BYTES} bytes without '/', '\\' or control characters"
        )));
    }
    Ok(name.to_owned())
}

/// The name a downloaded file gets: its own (made safe), else `<id>.<extension of mimetype>`.
pub fn download_filename(filename: Option<&str>, mimetype: &str, id: &str) -> String {
    if let Some(n) = filename.and_then(|n| check_filename(&sanitize(n)).ok()) {
        return n;
    }
    let stem: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(64)
        .collect();
    let stem = if stem.is_empty() {
        "media".into()
    } else {
        stem
    };
    match extension(mimetype) {
        Some(ext) => format!("{stem}.{ext}"),
        None => stem,
    }
}

/// A received file name with path separators and control characters replaced.
fn sanitize(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    base.chars()
        .filter(|c| !c.is_control())
        .take(MAX_FILENAME_BYTES / 4)
        .collect()
}

/// The usual extension of a mimetype.
pub fn extension(mimetype: &str) -> Option<&'static str> {
    let e = essence(mimetype);
    // The first of mime_guess's list is not always the usual one (image/jpeg → "jfif").
    let preferred = match e.as_str() {
        "image/jpeg" => Some("jpg"),
        "audio/ogg" => Some("ogg"),
        "audio/mpeg" => Some("mp3"),
        "video/mp4" => Some("mp4"),
        "text/plain" => Some("txt"),
        _ => None,
    };
    preferred
        .or_else(|| mime_guess::get_mime_extensions_str(&e).and_then(|exts| exts.first().copied()))
}

/// `Content-Disposition: attachment` naming `filename`: an ASCII fallback and the UTF-8 name
/// (RFC 6266 / RFC 8187), quotes and backslashes never reaching the quoted string.
pub fn content_disposition(filename: &str) -> String {
    let ascii: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::with_capacity(filename.len() * 3);
    for b in filename.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_whatsapp_web_js() {
        let plain = SendAs::default();
        assert_eq!(choose_kind("image/jpeg", plain), Ok(MediaKind::Image));
        assert_eq!(choose_kind("IMAGE/PNG", plain), Ok(MediaKind::Image));
        assert_eq!(choose_kind("video/mp4", plain), Ok(MediaKind::Video));
        assert_eq!(
            choose_kind("audio/ogg; codecs=opus", plain),
            Ok(MediaKind::Audio)
        );
        assert_eq!(
            choose_kind("application/pdf", plain),
            Ok(MediaKind::Document)
        );
        assert_eq!(
            choose_kind("image/svg+xml", plain),
            Ok(MediaKind::Document),
            "not shown inline by WhatsApp"
        );
        let doc = SendAs {
            document: true,
            ..plain
        };
        assert_eq!(choose_kind("image/jpeg", doc), Ok(MediaKind::Document));
        let voice = SendAs {
            voice: true,
            ..plain
        };
        assert_eq!(
            choose_kind("audio/ogg; codecs=opus", voice),
            Ok(MediaKind::Ptt)
        );
        assert!(matches!(
            choose_kind("image/png", voice),
            Err(MediaRefusal::Unsupported(_))
        ));
        let sticker = SendAs {
            sticker: true,
            ..plain
        };
        assert_eq!(choose_kind("image/webp", sticker), Ok(MediaKind::Sticker));
        assert!(matches!(
            choose_kind("image/png", sticker),
            Err(MediaRefusal::Unsupported(_))
        ));
        assert!(matches!(
            choose_kind(
                "image/webp",
                SendAs {
                    document: true,
                    sticker: true,
                    voice: false
                }
            ),
            Err(MediaRefusal::Unsupported(_))
        ));
    }

    #[test]
    fn mimetypes_are_checked() {
        for bad in [
            "",
            "image",
            "/png",
            "image/",
            "a b/c",
            "text/plain\n",
            "*/*",
        ] {
            assert!(!is_mimetype(bad), "{bad:?}");
            assert!(matches!(
                choose_kind(bad, SendAs::default()),
                Err(MediaRefusal::BadMimetype(_))
            ));
        }
        assert!(!is_mimetype(&format!("a/{}", "b".repeat(300))));
        assert!(is_mimetype(
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        ));
        assert_eq!(essence("Audio/OGG; codecs=opus"), "audio/ogg");
    }

    #[test]
    fn file_names_are_checked_and_downloads_named_safely() {
        assert_eq!(check_filename("  plan.pdf "), Ok("plan.pdf".into()));
        for bad in [
            "",
            "  ",
            "a/b.pdf",
            "..",
            "a\\b",
            "x\u{0}y",
            &"a".repeat(256),
        ] {
            assert!(check_filename(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            download_filename(Some("../../etc/passwd"), "text/plain", "X"),
            "passwd"
        );
        assert_eq!(
            download_filename(None, "image/jpeg", "3EB0AB"),
            "3EB0AB.jpg"
        );
        assert_eq!(download_filename(None, "application/pdf", "A"), "A.pdf");
        assert_eq!(
            download_filename(None, "application/x-wasp-unknown", "A/B"),
            "AB"
        );
        assert_eq!(
            download_filename(Some("\u{1}"), "image/png", ""),
            "media.png"
        );
    }

    #[test]
    fn content_disposition_quotes_nothing_unsafe() {
        assert_eq!(
            content_disposition("plan.pdf"),
            "attachment; filename=\"plan.pdf\"; filename*=UTF-8''plan.pdf"
        );
        let d = content_disposition("Behandlungsplan für \"Ana\".pdf");
        assert!(d.starts_with("attachment; filename=\"Behandlungsplan f_r _Ana_.pdf\""));
        assert!(d.ends_with("filename*=UTF-8''Behandlungsplan%20f%C3%BCr%20%22Ana%22.pdf"));
    }

    #[test]
    fn kinds_round_trip() {
        for k in MediaKind::ALL {
            assert_eq!(MediaKind::parse(k.as_str()), Some(k));
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
        assert_eq!(MediaKind::parse("chat"), None);
    }
}
