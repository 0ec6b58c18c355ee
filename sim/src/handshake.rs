//! Noise responder for WhatsApp's handshake patterns, built from `wacore-noise`'s own
//! primitives. WhatsApp's transcript differs from spec Noise (the first message's empty
//! payload is not mixed into the hash), so a spec-compliant library cannot be used here.
//!
//! - XX: first login and pairing (`-> e`, `<- e, ee, s, es + cert`, `-> s, se + payload`).
//! - IK: reconnect with a cached server key (`-> e, es, s, ss + payload`, `<- e, ee, se + cert`).
//! - XXfallback: the client's IK could not be decrypted (it cached a stale server key); the
//!   server answers XX-shaped, re-using the client's ephemeral.

use buffa::Message as _;
use thiserror::Error;
use wacore::libsignal::protocol::KeyPair;
use wacore_binary::consts::{NOISE_PATTERN_IK, NOISE_PATTERN_XX, NOISE_PATTERN_XXFALLBACK};
use wacore_noise::NoiseHandshake;
use waproto::whatsapp as wa;

use crate::crypto::{generate_key_pair, public_bytes, to_32};
use crate::transport::cipher::FrameCipher;
use crate::transport::framing::WA_CONN_HEADER;

#[derive(Debug, Error)]
pub enum HandshakeError {
    #[error("malformed handshake message: {0}")]
    Decode(#[from] buffa::DecodeError),
    #[error("handshake message lacks {0}")]
    Missing(&'static str),
    #[error("noise: {0}")]
    Noise(#[from] wacore_noise::HandshakeError),
    #[error("key: {0}")]
    Key(#[from] crate::crypto::CryptoError),
}

/// Which pattern established the session (reported to tests and the control API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    Xx,
    Ik,
    XxFallback,
}

/// The server's long-lived Noise identity.
pub struct ServerIdentity {
    pub static_kp: KeyPair,
    pub static_pub: [u8; 32],
    /// Encoded `CertChain` whose leaf key is `static_pub`.
    pub cert_chain: Vec<u8>,
}

/// A completed handshake.
pub struct Established {
    pub cipher: FrameCipher,
    pub client_static: [u8; 32],
    /// The decrypted, still-encoded `ClientPayload`.
    pub client_payload: Vec<u8>,
    pub pattern: Pattern,
}

/// What to do after the client hello.
pub enum HelloOutcome {
    /// Send `server_hello`, then wait for the client finish.
    AwaitFinish {
        server_hello: Vec<u8>,
        pending: Box<PendingFinish>,
    },
    /// IK accepted: send `server_hello`; the transport is ready.
    Established {
        server_hello: Vec<u8>,
        established: Box<Established>,
    },
}

/// An XX or XXfallback handshake waiting for the client's finish message.
pub struct PendingFinish {
    noise: NoiseHandshake,
    server_ephemeral: KeyPair,
    pattern: Pattern,
}

/// Processes the client's first handshake message (XX or IK hello).
pub fn on_client_hello(
    server: &ServerIdentity,
    frame: &[u8],
) -> Result<HelloOutcome, HandshakeError> {
    let msg = wa::HandshakeMessage::decode_from_slice(frame)?;
    let hello = msg
        .client_hello
        .into_option()
        .ok_or(HandshakeError::Missing("client hello"))?;
    let client_ephemeral = to_32(
        hello
            .ephemeral
            .as_deref()
            .ok_or(HandshakeError::Missing("ephemeral"))?,
    )?;
    match (hello.r#static, hello.payload) {
        (Some(enc_static), Some(enc_payload)) => {
            match try_ik(server, &client_ephemeral, &enc_static, &enc_payload)? {
                Some(outcome) => Ok(outcome),
                None => xx_server_hello(
                    server,
                    &client_ephemeral,
                    NOISE_PATTERN_XXFALLBACK,
                    Pattern::XxFallback,
                ),
            }
        }
        _ => xx_server_hello(server, &client_ephemeral, NOISE_PATTERN_XX, Pattern::Xx),
    }
}

fn xx_server_hello(
    server: &ServerIdentity,
    client_ephemeral: &[u8; 32],
    noise_pattern: &str,
    pattern: Pattern,
) -> Result<HelloOutcome, HandshakeError> {
    let mut noise = NoiseHandshake::new(noise_pattern, &WA_CONN_HEADER)?;
    noise.authenticate(client_ephemeral);
    let server_ephemeral = generate_key_pair();
    let eph_pub = public_bytes(&server_ephemeral);
    noise.authenticate(&eph_pub);
    // ee
    noise.mix_shared_secret(server_ephemeral.private_key.serialize(), client_ephemeral)?;
    let enc_static = noise.encrypt(&server.static_pub)?;
    // es (client's e, our s)
    noise.mix_shared_secret(server.static_kp.private_key.serialize(), client_ephemeral)?;
    let enc_cert = noise.encrypt(&server.cert_chain)?;
    let server_hello = encode_server_hello(eph_pub, Some(enc_static), enc_cert);
    Ok(HelloOutcome::AwaitFinish {
        server_hello,
        pending: Box::new(PendingFinish {
            noise,
            server_ephemeral,
            pattern,
        }),
    })
}

/// IK responder. `Ok(None)` means the client's message was not encrypted to our static key
/// (it cached another server's key), which WhatsApp answers with XXfallback.
fn try_ik(
    server: &ServerIdentity,
    client_ephemeral: &[u8; 32],
    enc_static: &[u8],
    enc_payload: &[u8],
) -> Result<Option<HelloOutcome>, HandshakeError> {
    let mut noise = NoiseHandshake::new(NOISE_PATTERN_IK, &WA_CONN_HEADER)?;
    noise.authenticate(&server.static_pub);
    noise.authenticate(client_ephemeral);
    // es
    noise.mix_shared_secret(server.static_kp.private_key.serialize(), client_ephemeral)?;
    let Ok(client_static) = noise.decrypt(enc_static) else {
        return Ok(None);
    };
    let client_static = to_32(&client_static)?;
    // ss
    noise.mix_shared_secret(server.static_kp.private_key.serialize(), &client_static)?;
    let Ok(client_payload) = noise.decrypt(enc_payload) else {
        return Ok(None);
    };
    let server_ephemeral = generate_key_pair();
    let eph_pub = public_bytes(&server_ephemeral);
    noise.authenticate(&eph_pub);
    // ee, se
    noise.mix_shared_secret(server_ephemeral.private_key.serialize(), client_ephemeral)?;
    noise.mix_shared_secret(server_ephemeral.private_key.serialize(), &client_static)?;
    let enc_cert = noise.encrypt(&server.cert_chain)?;
    let server_hello = encode_server_hello(eph_pub, None, enc_cert);
    let (initiator_to_responder, responder_to_initiator) = noise.finish()?;
    Ok(Some(HelloOutcome::Established {
        server_hello,
        established: Box::new(Established {
            cipher: FrameCipher::new(initiator_to_responder, responder_to_initiator),
            client_static,
            client_payload,
            pattern: Pattern::Ik,
        }),
    }))
}

impl PendingFinish {
    /// Processes the client finish (`-> s, se + payload`).
    pub fn on_client_finish(
        mut self: Box<Self>,
        frame: &[u8],
    ) -> Result<Established, HandshakeError> {
        let msg = wa::HandshakeMessage::decode_from_slice(frame)?;
        let finish = msg
            .client_finish
            .into_option()
            .ok_or(HandshakeError::Missing("client finish"))?;
        let enc_static = finish
            .r#static
            .as_deref()
            .ok_or(HandshakeError::Missing("client static"))?;
        let enc_payload = finish
            .payload
            .as_deref()
            .ok_or(HandshakeError::Missing("client payload"))?;
        let client_static = to_32(&self.noise.decrypt(enc_static)?)?;
        // se (client's s, our e)
        self.noise.mix_shared_secret(
            self.server_ephemeral.private_key.serialize(),
            &client_static,
        )?;
        let client_payload = self.noise.decrypt(enc_payload)?;
        let (initiator_to_responder, responder_to_initiator) = self.noise.finish()?;
        Ok(Established {
            cipher: FrameCipher::new(initiator_to_responder, responder_to_initiator),
            client_static,
            client_payload,
            pattern: self.pattern,
        })
    }
}

fn encode_server_hello(
    ephemeral: [u8; 32],
    enc_static: Option<Vec<u8>>,
    enc_cert: Vec<u8>,
) -> Vec<u8> {
    wa::HandshakeMessage {
        server_hello: buffa::MessageField::some(wa::handshake_message::ServerHello {
            ephemeral: Some(ephemeral.to_vec()),
            r#static: enc_static,
            payload: Some(enc_cert),
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Drives the responder with the library's own initiator state machines.
    use super::*;
    use crate::certs::build_cert_chain;
    use wacore_noise::{
        IkHandshakeState, IkServerHelloOutcome, XxFallbackHandshakeState, XxHandshakeState,
    };

    fn server() -> ServerIdentity {
        let static_kp = generate_key_pair();
        let static_pub = public_bytes(&static_kp);
        let cert_chain = build_cert_chain(&generate_key_pair(), &static_pub).unwrap();
        ServerIdentity {
            static_kp,
            static_pub,
            cert_chain,
        }
    }

    fn round_trip(client_write: &wacore_noise::NoiseCipher, server: &mut FrameCipher) {
        let ct = client_write.encrypt_with_counter(0, b"ping").unwrap();
        assert_eq!(server.decrypt(ct).unwrap(), b"ping");
    }

    #[test]
    fn xx_handshake_with_the_library_initiator() {
        let srv = server();
        let client_static = generate_key_pair();
        let client_pub = public_bytes(&client_static);
        let mut client =
            XxHandshakeState::new(client_static, b"login".to_vec(), &WA_CONN_HEADER).unwrap();
        let hello = client.build_client_hello().unwrap();
        let HelloOutcome::AwaitFinish {
            server_hello,
            pending,
        } = on_client_hello(&srv, &hello).unwrap()
        else {
            panic!("XX must await the finish");
        };
        // Signatures are only accepted when the client's skip feature is on; otherwise the
        // pinned-root check is the one thing that fails, after the transcript matched.
        match client.read_server_hello_and_build_client_finish(&server_hello) {
            Ok(finish) => {
                let mut established = pending.on_client_finish(&finish).unwrap();
                assert_eq!(established.client_static, client_pub);
                assert_eq!(established.client_payload, b"login");
                let out = client.finish().unwrap();
                round_trip(&out.write_cipher, &mut established.cipher);
            }
            Err(e) => assert!(e.to_string().contains("signature"), "{e}"),
        }
    }

    #[test]
    fn ik_handshake_with_the_library_initiator() {
        let srv = server();
        let client_static = generate_key_pair();
        let client_pub = public_bytes(&client_static);
        let mut client = IkHandshakeState::new(
            client_static,
            srv.static_pub,
            b"resume".to_vec(),
            &WA_CONN_HEADER,
        )
        .unwrap();
        let hello = client.build_client_hello().unwrap();
        let HelloOutcome::Established {
            server_hello,
            established,
        } = on_client_hello(&srv, &hello).unwrap()
        else {
            panic!("IK to the right key must be accepted");
        };
        let mut established = *established;
        assert_eq!(established.client_static, client_pub);
        assert_eq!(established.client_payload, b"resume");
        assert_eq!(established.pattern, Pattern::Ik);
        let IkServerHelloOutcome::Continue(out) = client.read_server_hello(&server_hello).unwrap()
        else {
            panic!("client must continue with IK");
        };
        round_trip(&out.write_cipher, &mut established.cipher);
        let ct = established.cipher.encrypt(b"pong").unwrap();
        let mut buf = ct;
        out.read_cipher
            .decrypt_in_place_with_counter(0, &mut buf)
            .unwrap();
        assert_eq!(buf, b"pong");
    }

    #[test]
    fn ik_to_a_stale_key_falls_back_to_xx() {
        let srv = server();
        let stale = public_bytes(&generate_key_pair());
        let mut client = IkHandshakeState::new(
            generate_key_pair(),
            stale,
            b"resume".to_vec(),
            &WA_CONN_HEADER,
        )
        .unwrap();
        let hello = client.build_client_hello().unwrap();
        let HelloOutcome::AwaitFinish {
            server_hello,
            pending,
        } = on_client_hello(&srv, &hello).unwrap()
        else {
            panic!("stale IK must fall back");
        };
        assert_eq!(pending.pattern, Pattern::XxFallback);
        let IkServerHelloOutcome::Fallback(inputs) =
            client.read_server_hello(&server_hello).unwrap()
        else {
            panic!("client must see the fallback");
        };
        let mut fb = XxFallbackHandshakeState::from_ik_failure(*inputs, &WA_CONN_HEADER).unwrap();
        match fb.build_client_finish() {
            Ok(finish) => {
                let established = pending.on_client_finish(&finish).unwrap();
                assert_eq!(established.client_payload, b"resume");
            }
            Err(e) => assert!(e.to_string().contains("signature"), "{e}"),
        }
    }
}
