//! Who may read: a valid OIDC bearer token (the same verification as the gateway's) whose
//! groups include one of `evidence.auditor_groups`. The extractor runs before any handler, so
//! no handler can forget it.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use callproof_oidc::{AuthError, bearer_token};

use crate::AppState;
use crate::error::ApiError;

/// An authenticated member of an auditor group.
#[derive(Debug, Clone)]
pub struct Auditor {
    pub subject: String,
}

impl FromRequestParts<Arc<AppState>> for Auditor {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .map(|value| value.to_str().unwrap_or("\u{0}"));
        let token =
            bearer_token(header).map_err(|error| ApiError::Unauthenticated(error.to_string()))?;
        let principal =
            state
                .authenticator
                .authenticate(token)
                .await
                .map_err(|error| match error {
                    AuthError::IssuerUnavailable => ApiError::Unavailable(error.to_string()),
                    other => ApiError::Unauthenticated(other.to_string()),
                })?;
        let allowed = principal
            .groups
            .iter()
            .any(|group| state.auditor_groups.iter().any(|auditor| auditor == group));
        if !allowed {
            tracing::info!(subject = %principal.subject, "refused: not in an auditor group");
            return Err(ApiError::Forbidden(
                "reading evidence requires membership of an auditor group".to_string(),
            ));
        }
        Ok(Auditor {
            subject: principal.subject,
        })
    }
}
