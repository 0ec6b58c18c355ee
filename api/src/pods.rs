//! Calls to a user's session pod. The pod's control API is being designed in `session-pod/`; until
//! it lands, routes go through this trait and the default [`NotWired`] implementation answers 503
//! `session_not_ready`. Validation and the routing decision happen before, in the handlers.

use futures::future::BoxFuture;
use serde_json::Value;

use crate::error::ApiError;

/// One call to a session pod, with inputs already validated and normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodCall {
    Chats,
    Messages { jid: String, limit: u32 },
    Send { jid: String, message: String },
    ChatByPhone { jid: String },
    Logs { limit: u32 },
    AddContact { phone: String, name: Option<String> },
}

pub trait PodApi: Send + Sync {
    /// Performs `call` against the pod at `endpoint` (`host:port`) for `user_id`.
    fn call<'a>(
        &'a self,
        user_id: &'a str,
        endpoint: &'a str,
        call: PodCall,
    ) -> BoxFuture<'a, Result<Value, ApiError>>;
}

/// Until the session pod's control API exists: every call is 503 `session_not_ready`.
pub struct NotWired;

impl PodApi for NotWired {
    fn call<'a>(
        &'a self,
        _user_id: &'a str,
        _endpoint: &'a str,
        _call: PodCall,
    ) -> BoxFuture<'a, Result<Value, ApiError>> {
        Box::pin(async {
            Err(ApiError::Session {
                status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
                code: "session_not_ready",
                phase: "Connected".into(),
                message: "the session pod's API is not reachable through this gateway yet".into(),
            })
        })
    }
}
