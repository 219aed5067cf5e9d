//! The one error type of the HTTP API. Each variant maps to a status and a stable `code`; the
//! message is safe to show a caller: it never carries a credential, a token, a stack trace or an
//! upstream's internals.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::CALL_ID_HEADER;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("unknown function `{0}`")]
    UnknownFunction(String),
    #[error("{0}")]
    NotFound(String),
    #[error("request body is larger than the {limit}-byte limit of this function")]
    PayloadTooLarge { limit: usize },
    #[error("too many calls in flight; retry later")]
    TooManyRequests,
    #[error(
        "request headers are larger than {} bytes",
        callproof_oidc::MAX_HEADER_BYTES
    )]
    HeadersTooLarge,
    #[error("{0}")]
    UpstreamFailed(String),
    #[error("the audit log cannot record this call, so it was not made")]
    AuditUnavailable,
    #[error("function did not answer within {timeout_ms} ms")]
    UpstreamTimeout { timeout_ms: u64 },
    #[error("{0}")]
    Conflict(String),
    #[error("approval denied: {0}")]
    ApprovalDenied(String),
    #[error("approval expired before enough approvers decided; the function was not called")]
    ApprovalExpired,
    #[error("{0}")]
    Unavailable(String),
    /// The token could not be checked because the identity provider's keys cannot be fetched:
    /// 503, not 401, since the token may well be valid.
    #[error("the identity provider cannot be reached to verify the token; retry later")]
    IssuerUnavailable,
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::ApprovalDenied(_) | ApiError::ApprovalExpired => {
                StatusCode::FORBIDDEN
            }
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::UnknownFunction(_) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ApiError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::UpstreamFailed(_) => StatusCode::BAD_GATEWAY,
            ApiError::AuditUnavailable | ApiError::Unavailable(_) | ApiError::IssuerUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code, also recorded as the reason of `call_denied` and
    /// `call_failed` events.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::UnknownFunction(_) => "unknown_function",
            ApiError::NotFound(_) => "not_found",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::TooManyRequests => "too_many_requests",
            ApiError::HeadersTooLarge => "headers_too_large",
            ApiError::UpstreamFailed(_) => "upstream_failed",
            ApiError::AuditUnavailable => "audit_unavailable",
            ApiError::UpstreamTimeout { .. } => "upstream_timeout",
            ApiError::Conflict(_) => "conflict",
            ApiError::ApprovalDenied(_) => "approval_denied",
            ApiError::ApprovalExpired => "approval_expired",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::IssuerUnavailable => "issuer_unavailable",
            ApiError::Internal => "internal",
        }
    }

    /// The answer to a token that did not verify: 401, or 503 when the issuer could not be asked.
    pub fn from_auth(error: callproof_oidc::AuthError) -> ApiError {
        match error {
            callproof_oidc::AuthError::IssuerUnavailable => ApiError::IssuerUnavailable,
            other => ApiError::Unauthenticated(other.to_string()),
        }
    }

    /// Attaches the call id, so the caller can quote it and an auditor can find the call.
    pub fn for_call(self, call_id: &str) -> CallError {
        CallError {
            error: self,
            call_id: Some(call_id.to_string()),
        }
    }
}

/// An [`ApiError`] with the id of the call it ended, if a call was started.
#[derive(Debug)]
pub struct CallError {
    pub error: ApiError,
    pub call_id: Option<String>,
}

impl From<ApiError> for CallError {
    fn from(error: ApiError) -> Self {
        CallError {
            error,
            call_id: None,
        }
    }
}

impl IntoResponse for CallError {
    fn into_response(self) -> Response {
        let status = self.error.status();
        let body = json!({
            "error": {
                "code": self.error.code(),
                "message": self.error.to_string(),
                "call_id": self.call_id,
            }
        });
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(call_id) = self.call_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
            headers.insert(CALL_ID_HEADER, call_id);
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer error="invalid_token""#),
            );
        }
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        CallError::from(self).into_response()
    }
}
