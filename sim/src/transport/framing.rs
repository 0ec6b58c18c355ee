//! WhatsApp's framing inside WebSocket binary messages: the client's first bytes carry an
//! intro header (`WA` + version, optionally preceded by an `ED` edge-routing pre-intro), and
//! every frame after that is a 3-byte big-endian length followed by the payload. A WebSocket
//! message may hold several frames or part of one, so this is a byte-stream decoder.

use thiserror::Error;

/// WhatsApp's connection header (`WA`, protocol major 6, dictionary version 3).
pub const WA_CONN_HEADER: [u8; 4] = wacore_binary::consts::WA_CONN_HEADER;
const EDGE_ROUTING_MAGIC: &[u8; 4] = b"ED\x00\x01";
const LENGTH_SIZE: usize = 3;
/// Largest payload a 3-byte length can describe.
pub const MAX_FRAME: usize = (1 << 24) - 1;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FramingError {
    #[error("connection did not start with the WhatsApp header")]
    BadHeader,
    #[error("frame of {0} bytes exceeds the 3-byte length limit")]
    TooLarge(usize),
}

/// Decodes the client → server byte stream into frames.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    header_seen: bool,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, if buffered. Errors when the intro header is wrong.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FramingError> {
        if !self.header_seen && !self.consume_header()? {
            return Ok(None);
        }
        if self.buf.len() < LENGTH_SIZE {
            return Ok(None);
        }
        let len = (usize::from(self.buf[0]) << 16)
            | (usize::from(self.buf[1]) << 8)
            | usize::from(self.buf[2]);
        if self.buf.len() < LENGTH_SIZE + len {
            return Ok(None);
        }
        let frame = self.buf[LENGTH_SIZE..LENGTH_SIZE + len].to_vec();
        self.buf.drain(..LENGTH_SIZE + len);
        Ok(Some(frame))
    }

    /// Strips the intro (edge-routing pre-intro, then `WA` header) once it is fully buffered.
    fn consume_header(&mut self) -> Result<bool, FramingError> {
        let mut offset = 0;
        if self.buf.len() >= 2 && &self.buf[..2] == b"ED" {
            if self.buf.len() < 7 {
                return Ok(false);
            }
            if &self.buf[..4] != EDGE_ROUTING_MAGIC {
                return Err(FramingError::BadHeader);
            }
            let routing_len = (usize::from(self.buf[4]) << 16)
                | (usize::from(self.buf[5]) << 8)
                | usize::from(self.buf[6]);
            offset = 7 + routing_len;
        }
        if self.buf.len() < offset + WA_CONN_HEADER.len() {
            // Reject garbage early instead of buffering forever.
            let have = &self.buf[offset.min(self.buf.len())..];
            if !WA_CONN_HEADER.starts_with(have) && offset <= self.buf.len() {
                return Err(FramingError::BadHeader);
            }
            return Ok(false);
        }
        if self.buf[offset..offset + 2] != WA_CONN_HEADER[..2] {
            return Err(FramingError::BadHeader);
        }
        self.buf.drain(..offset + WA_CONN_HEADER.len());
        self.header_seen = true;
        Ok(true)
    }
}

/// Prefixes `payload` with its 3-byte big-endian length.
pub fn encode_frame(payload: &[u8]) -> Result<Vec<u8>, FramingError> {
    if payload.len() > MAX_FRAME {
        return Err(FramingError::TooLarge(payload.len()));
    }
    let len = payload.len();
    let mut out = Vec::with_capacity(LENGTH_SIZE + len);
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8]);
    out.extend_from_slice(payload);
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn client_stream(frames: &[&[u8]]) -> Vec<u8> {
        let mut out = WA_CONN_HEADER.to_vec();
        for f in frames {
            out.extend(encode_frame(f).unwrap());
        }
        out
    }

    #[test]
    fn decodes_frames_after_the_header_across_arbitrary_splits() {
        let stream = client_stream(&[b"hello", b"", b"world!"]);
        for split in 0..stream.len() {
            let mut d = FrameDecoder::new();
            d.feed(&stream[..split]);
            let mut got = Vec::new();
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
            d.feed(&stream[split..]);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
            assert_eq!(got, vec![b"hello".to_vec(), vec![], b"world!".to_vec()]);
        }
    }

    #[test]
    fn skips_the_edge_routing_pre_intro() {
        let mut stream = b"ED\x00\x01\x00\x00\x02xy".to_vec();
        stream.extend(client_stream(&[b"abc"]));
        let mut d = FrameDecoder::new();
        d.feed(&stream);
        assert_eq!(d.next_frame().unwrap(), Some(b"abc".to_vec()));
    }

    #[test]
    fn rejects_a_stream_without_the_header() {
        let mut d = FrameDecoder::new();
        d.feed(b"GET / HTTP/1.1");
        assert_eq!(d.next_frame(), Err(FramingError::BadHeader));
    }

    #[test]
    fn length_prefix_is_big_endian() {
        let f = encode_frame(&[7u8; 0x010203]).unwrap();
        assert_eq!(&f[..3], &[1, 2, 3]);
    }
}
