//! The one error type of the evidence API. Each variant maps to a status and a stable `code`;
//! the body is `{"error":{"code","message"}}` (DESIGN.md). Internal causes are logged once, where
//! they are turned into [`ApiError::Internal`], and never sent: the caller gets a request id to
//! quote instead.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A parameter is missing or malformed; the message names it.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error(
        "request headers are larger than {} bytes",
        callproof_oidc::MAX_HEADER_BYTES
    )]
    HeadersTooLarge,
    /// The log does not verify, so the API refuses to vouch for what it would serve.
    #[error("{0}")]
    IntegrityFailure(String),
    /// The index or the store cannot be read right now.
    #[error("{0}")]
    Unavailable(String),
    /// Something went wrong that the caller cannot fix; `id` is in the log next to the cause.
    #[error("internal error (request {id})")]
    Internal { id: String },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::IntegrityFailure(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::HeadersTooLarge => "headers_too_large",
            ApiError::IntegrityFailure(_) => "integrity_failure",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal { .. } => "internal",
        }
    }

    /// Logs `cause` with a fresh request id and returns the error the caller sees.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        let id = request_id();
        tracing::error!(request_id = %id, %cause, "internal error");
        ApiError::Internal { id }
    }
}

/// A short id, unique enough to find one log line.
fn request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{:08x}{:04x}",
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed) & 0xffff
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = json!({"error": {"code": self.code(), "message": self.to_string()}});
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer error="invalid_token""#),
            );
        }
        response
    }
}

/// Errors of the log reader: a missing object is "not found", an object that contradicts its
/// signed checkpoint is an integrity failure, the rest is internal.
impl From<callproof_tlog::Error> for ApiError {
    fn from(error: callproof_tlog::Error) -> Self {
        use callproof_tlog::Error;
        match error {
            Error::Missing(what) => ApiError::NotFound(format!("{what} is not in the log")),
            Error::OutOfRange { .. } => ApiError::BadRequest(error.to_string()),
            Error::Signature(_)
            | Error::Corrupt(_)
            | Error::InvalidProof(_)
            | Error::Malformed { .. } => {
                ApiError::IntegrityFailure(format!("the log does not verify: {error}"))
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(error: tokio::task::JoinError) -> Self {
        ApiError::internal(format!("a blocking task failed: {error}"))
    }
}
