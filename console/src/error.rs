//! `ConsoleError`: every failure a page can end in, each a status and a page that says what
//! happened in words. Internals never leak: the real cause is logged where it happens.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The sign-in could not be completed; the reason is safe to show.
    #[error("sign-in failed: {0}")]
    SignIn(String),
    #[error("the form was sent without this session's security token")]
    Csrf,
    #[error("the identity provider cannot be reached")]
    ProviderUnavailable,
    /// The gateway or the evidence API answered with an error; its message is shown.
    #[error("{service}: {message}")]
    Upstream {
        service: &'static str,
        status: u16,
        message: String,
    },
    #[error("{0}")]
    BadRequest(String),
    #[error("the auditor pages are not configured (console.evidence_url)")]
    NoEvidenceApi,
    #[error("internal error")]
    Internal,
}

impl ConsoleError {
    pub fn status(&self) -> StatusCode {
        match self {
            ConsoleError::SignIn(_) => StatusCode::BAD_REQUEST,
            ConsoleError::Csrf => StatusCode::FORBIDDEN,
            ConsoleError::ProviderUnavailable => StatusCode::BAD_GATEWAY,
            ConsoleError::Upstream { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            ConsoleError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ConsoleError::NoEvidenceApi => StatusCode::NOT_FOUND,
            ConsoleError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ConsoleError::SignIn(_) => "Sign-in failed",
            ConsoleError::Csrf => "Form refused",
            ConsoleError::ProviderUnavailable => "Identity provider unavailable",
            ConsoleError::Upstream { status: 403, .. } => "Not allowed",
            ConsoleError::Upstream { status: 404, .. } => "Not found",
            ConsoleError::Upstream { .. } => "Request refused",
            ConsoleError::BadRequest(_) => "Bad request",
            ConsoleError::NoEvidenceApi => "Not available",
            ConsoleError::Internal => "Something went wrong",
        }
    }

    fn explanation(&self) -> String {
        match self {
            ConsoleError::Csrf => "The form was missing this session's security token (or carried another one), so nothing was done. Reload the page and try again.".into(),
            ConsoleError::SignIn(reason) => format!("The sign-in was refused: {reason}. Nothing was signed in; start again."),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = self.status();
        let page = crate::pages::ErrorPage {
            title: self.title(),
            message: &self.explanation(),
            sign_in: matches!(
                self,
                ConsoleError::SignIn(_) | ConsoleError::Upstream { status: 401, .. }
            ),
        };
        let mut response = crate::pages::render(&page);
        *response.status_mut() = status;
        response
    }
}
