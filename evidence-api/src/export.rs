//! placeholder
use crate::{ApiError, AppState, Auditor};
use axum::extract::State;
use std::sync::Arc;
pub async fn export(
    _auditor: Auditor,
    State(_app): State<Arc<AppState>>,
) -> Result<String, ApiError> {
    Ok(String::new())
}
