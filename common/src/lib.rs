//! Code shared by wasp's parts that must not depend on Kubernetes: how a user id becomes a stable
//! hash, where a user's data lives in Redis, the session-state record the session pod publishes
//! for the operator, and what every binary shares: telemetry init, the admin port, shutdown.
#![forbid(unsafe_code)]

pub mod acl;
pub mod admin;
pub mod control;
pub mod crypto;
pub mod events;
pub mod ids;
pub mod keys;
pub mod model;
pub mod phone;
pub mod purge;
pub mod session_state;
pub mod shutdown;
pub mod size;
pub mod telemetry;
pub mod webhooks;

pub use ids::user_hash;
pub use session_state::{ErrorReason, SessionPhase, SessionState};
