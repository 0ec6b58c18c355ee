//! The operator's errors, each with a stable category for event reasons and metric labels.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("session state: {0}")]
    SessionState(#[from] wasp_common::session_state::StateError),
    #[error("object has no {0}")]
    MissingField(&'static str),
    #[error("serializing: {0}")]
    Serialize(#[from] serde_json::Error),
}

impl Error {
    /// A short, stable, low-cardinality name (never user data).
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Error::Kube(_) => "kubernetes",
            Error::Redis(_) => "redis",
            Error::SessionState(_) => "session_state",
            Error::MissingField(_) => "invalid_object",
            Error::Serialize(_) => "serialize",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
