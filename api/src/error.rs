//! The one error type of every route: a JSON body `{"error": code, "message": text}` with the
//! right status. Client mistakes are 4xx with a stable `error` code; internal failures are logged
//! here and answered with a generic message, so nothing internal (Kubernetes, Redis, keys) leaks.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The JSON body of every error answer.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema, PartialEq)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `unauthorized`, `invalid_phone`, `session_not_ready`.
    pub error: String,
    /// Human-readable explanation; never contains internals.
    pub message: String,
    /// The caller's session phase, when the error is about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

/// The refusals every authenticated route can answer, for the OpenAPI document: the auth
/// extractor's 401 and the per-user rate limiter's 429.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // never built: it only describes answers
pub enum AuthRefusals {
    #[response(
        status = 401,
        description = "Not authenticated: no, malformed, expired or badly signed token"
    )]
    Unauthorized(ErrorBody),
    #[response(
        status = 429,
        description = "The caller's rate limit is exhausted, or on a send (`/send`, `/react`, \
                       an edit) the session's send pacing; `Retry-After` says when to retry",
        headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))
    )]
    RateLimited(ErrorBody),
}

/// The refusals of a JSON request body besides the route's own 400 (which also covers
/// malformed JSON), for the OpenAPI document.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // never built: it only describes answers
pub enum JsonBodyRefusals {
    #[response(status = 413, description = "Body larger than MAX_FILE_SIZE")]
    TooLarge(ErrorBody),
    #[response(
        status = 415,
        description = "Body is not `Content-Type: application/json`"
    )]
    NotJson(ErrorBody),
    #[response(status = 422, description = "Well-formed JSON of the wrong shape")]
    WrongShape(ErrorBody),
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{message}")]
    Rejected {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    #[error("{0}")]
    NotFound(String),
    /// The caller's session is not in a state that can serve the request.
    #[error("{message}")]
    Session {
        status: StatusCode,
        code: &'static str,
        phase: String,
        message: String,
    },
    #[error("rate limit exceeded")]
    RateLimited { retry_after_secs: u64 },
    /// A dependency (Kubernetes, Redis, the session pod) is unreachable; logged, not shown.
    #[error("{what} unavailable: {detail}")]
    Unavailable { what: &'static str, detail: String },
    /// A bug or unexpected failure; logged, not shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn unavailable(what: &'static str, detail: impl std::fmt::Display) -> Self {
        Self::Unavailable {
            what,
            detail: detail.to_string(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Rejected { status, .. } | Self::Session { status, .. } => *status,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable code for the body and for metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::BadRequest { code, .. }
            | Self::Rejected { code, .. }
            | Self::Session { code, .. } => code,
            Self::NotFound(_) => "not_found",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable { .. } => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    pub fn body(&self) -> ErrorBody {
        let message = match self {
            Self::Unavailable { what, .. } => {
                format!("{what} is temporarily unavailable, retry later")
            }
            Self::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        };
        ErrorBody {
            error: self.code().to_owned(),
            message,
            phase: match self {
                Self::Session { phase, .. } => Some(phase.clone()),
                _ => None,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Unavailable { what, detail } => {
                tracing::warn!(dependency = what, error = %detail, "dependency unavailable");
            }
            Self::Internal(detail) => tracing::error!(error = %detail, "internal error"),
            _ => {}
        }
        let mut response = (self.status(), Json(self.body())).into_response();
        let headers = response.headers_mut();
        if matches!(self, Self::Unauthorized(_)) {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        let retry_after = match &self {
            Self::RateLimited { retry_after_secs } => Some((*retry_after_secs).max(1)),
            _ if self.status() == StatusCode::SERVICE_UNAVAILABLE => Some(2),
            _ => None,
        };
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Maps an extractor rejection's status to a 4xx (never 5xx: a rejection is the client's input).
fn rejection(status: StatusCode, code: &'static str, message: String) -> ApiError {
    let status = if status.is_client_error() {
        status
    } else {
        StatusCode::BAD_REQUEST
    };
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        _ => code,
    };
    ApiError::Rejected {
        status,
        code,
        message,
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        rejection(r.status(), "invalid_json", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        rejection(r.status(), "invalid_query", r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        rejection(r.status(), "invalid_path", r.body_text())
    }
}

/// `Json` whose rejections are [`ApiError`]s.
#[derive(axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `Query` whose rejections are [`ApiError`]s.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// `Path` whose rejections are [`ApiError`]s.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internals_never_reach_the_body() {
        let e = ApiError::Internal("kube said: secret-token-123".into());
        assert_eq!(e.body().message, "internal error");
        let e = ApiError::unavailable("kubernetes", "connection refused to 10.0.0.1:6443");
        assert!(!e.body().message.contains("10.0.0.1"));
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn rejections_are_always_client_errors() {
        let e = rejection(
            StatusCode::INTERNAL_SERVER_ERROR,
            "invalid_json",
            "x".into(),
        );
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let e = rejection(StatusCode::PAYLOAD_TOO_LARGE, "invalid_json", "x".into());
        assert_eq!(e.code(), "payload_too_large");
    }
}
