//! One client socket: handshake, admission (login or pairing), then the stanza loop. Stanzas
//! for the client arrive on an mpsc channel so other parts of the simulator (the phone, the
//! contacts, faults) can write to a live device.

use std::sync::Arc;

use axum::extract::ws::{Message as WsMessage, WebSocket};
use buffa::Message as _;
use thiserror::Error;
use tokio::sync::mpsc;
use tracing::{debug, info};
use waproto::whatsapp as wa;

use crate::handshake::{self, Established, HelloOutcome};
use crate::router;
use crate::sim::Sim;
use crate::stanza;
use crate::transport::cipher::{CipherError, FrameCipher};
use crate::transport::framing::{FrameDecoder, FramingError, encode_frame};
use crate::world::{ConnId, Outbound};

#[derive(Debug, Error)]
pub enum ConnectionError {
    #[error("socket closed")]
    Closed,
    #[error("websocket: {0}")]
    Ws(#[from] axum::Error),
    #[error("framing: {0}")]
    Framing(#[from] FramingError),
    #[error("handshake: {0}")]
    Handshake(#[from] handshake::HandshakeError),
    #[error("cipher: {0}")]
    Cipher(#[from] CipherError),
    #[error("client payload: {0}")]
    Payload(#[from] buffa::DecodeError),
    #[error("stanza: {0}")]
    Stanza(#[from] wacore_binary::BinaryError),
}

/// How long a socket stays open after a stream error for the client to close it.
const LINGER: std::time::Duration = std::time::Duration::from_secs(5);

struct Wire {
    socket: WebSocket,
    decoder: FrameDecoder,
}

impl Wire {
    async fn read_frame(&mut self) -> Result<Vec<u8>, ConnectionError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(frame);
            }
            match self.socket.recv().await {
                Some(Ok(WsMessage::Binary(data))) => self.decoder.feed(&data),
                Some(Ok(WsMessage::Close(_))) | None => return Err(ConnectionError::Closed),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
            }
        }
    }

    async fn write_frame(&mut self, payload: &[u8]) -> Result<(), ConnectionError> {
        let framed = encode_frame(payload)?;
        self.socket.send(WsMessage::Binary(framed.into())).await?;
        Ok(())
    }
}

/// Serves one accepted WebSocket until it closes.
pub async fn serve(sim: Arc<Sim>, socket: WebSocket) {
    let mut wire = Wire {
        socket,
        decoder: FrameDecoder::new(),
    };
    let established = match handshake(&sim, &mut wire).await {
        Ok(e) => e,
        Err(e) => {
            debug!("handshake ended: {e}");
            return;
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let conn = sim.register_conn(tx, established.pattern);
    let result = run(&sim, conn, wire, established, rx).await;
    sim.unregister_conn(conn);
    match result {
        Ok(()) | Err(ConnectionError::Closed) => debug!(conn, "socket closed"),
        Err(e) => info!(conn, "socket ended: {e}"),
    }
}

async fn handshake(sim: &Sim, wire: &mut Wire) -> Result<Established, ConnectionError> {
    let hello = wire.read_frame().await?;
    match handshake::on_client_hello(&sim.server_identity(), &hello)? {
        HelloOutcome::AwaitFinish {
            server_hello,
            pending,
        } => {
            wire.write_frame(&server_hello).await?;
            let finish = wire.read_frame().await?;
            Ok(pending.on_client_finish(&finish)?)
        }
        HelloOutcome::Established {
            server_hello,
            established,
        } => {
            wire.write_frame(&server_hello).await?;
            Ok(*established)
        }
    }
}

async fn run(
    sim: &Arc<Sim>,
    conn: ConnId,
    mut wire: Wire,
    established: Established,
    mut rx: mpsc::UnboundedReceiver<Outbound>,
) -> Result<(), ConnectionError> {
    let mut cipher = established.cipher;
    let payload = wa::ClientPayload::decode_from_slice(&established.client_payload)?;
    sim.admit(conn, &payload, established.client_static).await;
    loop {
        tokio::select! {
            frame = wire.read_frame() => {
                let plaintext = cipher.decrypt(frame?)?;
                let node = stanza::decode(&plaintext)?;
                debug!(conn, "recv {}", stanza::describe(&node));
                router::handle(sim, conn, node).await;
            }
            out = rx.recv() => {
                let Some(out) = out else { return Ok(()) };
                let delay = sim.frame_delay();
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                match out {
                    Outbound::Stanza(node) => {
                        debug!(conn, "send {}", stanza::describe(&node));
                        send_stanza(&mut wire, &mut cipher, &node).await?;
                    }
                    Outbound::Drop => return Ok(()),
                    Outbound::Close(last) => {
                        if let Some(node) = last {
                            debug!(conn, "send {} and close", stanza::describe(&node));
                            send_stanza(&mut wire, &mut cipher, &node).await?;
                            // Let the client read the stream error and hang
                            // up itself; closing at once can race its reading of the stanza.
                            let _ = tokio::time::timeout(LINGER, async {
                                while wire.read_frame().await.is_ok() {}
                            })
                            .await;
                        }
                        if let Err(e) = wire.socket.send(WsMessage::Close(None)).await {
                            debug!(conn, "close frame not sent: {e}");
                        }
                        return Ok(());
                    }
                }
            }
        }
    }
}

async fn send_stanza(
    wire: &mut Wire,
    cipher: &mut FrameCipher,
    node: &wacore_binary::Node,
) -> Result<(), ConnectionError> {
    let plaintext = stanza::encode(node)?;
    let ciphertext = cipher.encrypt(&plaintext)?;
    wire.write_frame(&ciphertext).await
}
