//! Handlers of the public port: seed 003's routes as they are, seed 000's as aliases.

pub mod admin;
pub mod conversation;
pub mod media;
pub mod proxy;
pub mod session;
