//! wasp-sim: a WhatsApp Web server that the unmodified `whatsapp-rust` client cannot tell
//! from WhatsApp for the flows wasp uses — WebSocket framing, Noise XX/IK, binary XML
//! stanzas, multi-device pairing by QR and by code, E2E 1:1 messages with simulated contacts,
//! offline queues, and faults on demand. See `docs/simulator.md`.

mod admission;
pub mod certs;
pub mod client;
pub mod config;
mod connection;
pub mod contacts;
pub mod control_api;
pub mod conversation;
pub mod crypto;
mod directory;
pub mod faults;
pub mod groups;
pub mod handshake;
pub mod history;
mod iq;
mod linking;
pub mod media;
pub mod media_server;
pub mod messaging;
pub mod offline_queue;
pub mod pair_code;
pub mod pairing;
pub mod persistence;
mod router;
pub mod server;
pub mod signal;
pub mod sim;
pub mod stanza;
pub mod transport;
pub mod world;

pub use server::{Running, start};
pub use sim::{Sim, SimKeys};
