//! Paths of the session pod's control API that other parts call.

/// `POST`: log the device out of WhatsApp (used by the operator's finalizer).
pub const LOGOUT_PATH: &str = "/v1/logout";
