//! Just-in-time approval of high-risk calls (issue 7).
//!
//! A function with an `approval` table holds its calls (all, or those matching the condition)
//! until enough approvers decided: `approval_requested` is published with the masked arguments
//! and their SHA-256, then the caller waits (`Prefer: wait=N`) or gets `202`.
//!
//! State lives in Kafka, not in the instance: every instance reads the calls topic into a
//! [`Ledger`] (a fold over the events in partition order), so a decision made through any
//! instance reaches the one holding the caller, and a restarted instance rebuilds its pending
//! calls. Every state change is an event published (and acknowledged) before anyone acts on it;
//! instances act only on the state the ledger derives from the log. Who executes an approved
//! call is decided on the log too: the first `call_forwarded` after approval is the claim, and
//! only the instance that published that claim calls the function (see `docs/approvals.md`).

mod api;
mod ledger;
mod policy;
mod service;
mod webhook;

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use callproof_schemas::{Approval, CallEvent, Decision, EventKind};
use serde_json::json;

pub use api::{call_status, decide, list, rfc3339, show};
pub use ledger::{CallStatus, HeldCall, arguments_sha256};
pub use policy::ApprovalPolicy;
pub use service::Approvals;

use crate::AppState;
use crate::error::ApiError;
use crate::events::{CallRecorder, now_micros};

/// How long a handler waits for its own events to come back through the consumer.
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(10);

/// A call that needs approval, ready to be held.
pub struct HoldRequest<'a> {
    /// Its `call_received` event, published together with `approval_requested`.
    pub received: CallEvent,
    pub policy: &'a ApprovalPolicy,
    /// Why approval is needed (never an argument's value).
    pub reason: String,
    /// The masked arguments: exactly what will be forwarded once approved.
    pub arguments: Vec<u8>,
    /// How long the caller asked to be held.
    pub wait: Duration,
}

/// Publishes the request for approval, tells the reviewers and holds the caller.
pub async fn hold(
    app: &AppState,
    call: &mut CallRecorder,
    held: HoldRequest<'_>,
) -> Result<Response, ApiError> {
    let wait = held.wait;
    request_approval(app, call, held).await?;
    let outcome = app.approvals.wait_final(&call.call_id, wait).await;
    answer_held(app, &call.call_id, outcome)
}

/// Publishes `call_received` + `approval_requested` (acknowledged), waits until this instance's
/// ledger has them, and tells the reviewers. The caller then waits for the outcome.
pub(crate) async fn request_approval(
    app: &AppState,
    call: &mut CallRecorder,
    held: HoldRequest<'_>,
) -> Result<(), ApiError> {
    let policy = held.policy;
    let expires_at =
        now_micros().saturating_add(i64::try_from(policy.expiry.as_micros()).unwrap_or(i64::MAX));
    let mut requested = call.event(EventKind::ApprovalRequested);
    // The held arguments travel in the event, so any instance can execute the call.
    requested.request = held.received.request.clone();
    requested.decision = Some(Decision {
        allowed: false,
        policy_id: Some(policy.id.clone()),
        reason: format!("approval required: {}", held.reason),
    });
    requested.approval = Some(Approval {
        approvers: policy.approver_groups.clone(),
        quorum: i32::try_from(policy.quorum).unwrap_or(i32::MAX),
        reviewer: None,
        decision: None,
        comment: None,
        expires_at: Some(expires_at),
        arguments_sha256: Some(arguments_sha256(&held.arguments)),
    });
    let caller = requested.principal.clone();
    let positions = app
        .events
        .publish_at(&[held.received, requested])
        .await
        .map_err(|_| ApiError::AuditUnavailable)?;
    tracing::info!(call_id = %call.call_id, reason = %held.reason, "call held for approval");
    metrics::counter!("callproof_ingress_approvals_requested_total").increment(1);
    // So that the caller's first status query here already finds the call.
    app.approvals
        .wait_applied(&positions, READ_BACK_TIMEOUT)
        .await;
    if let (Some(webhook), Some(caller)) = (&policy.webhook, caller) {
        webhook::notify(
            app,
            webhook,
            call,
            policy,
            &caller,
            &held.reason,
            expires_at,
        );
    }
    Ok(())
}

/// The answer to a held caller: the function's answer once executed, 403 when denied or expired,
/// else `202` with where to ask again.
pub(crate) fn answer_held(
    app: &AppState,
    call_id: &str,
    call: Option<HeldCall>,
) -> Result<Response, ApiError> {
    let status = call
        .as_ref()
        .map_or(CallStatus::PendingApproval, |call| call.status);
    match (status, call) {
        (CallStatus::Completed, Some(call)) => {
            let response = call.response.unwrap_or(callproof_schemas::Response {
                status: 200,
                body: None,
                body_bytes: 0,
                latency_micros: 0,
            });
            let body = response.body.unwrap_or_default();
            let content_type = if serde_json::from_str::<serde_json::Value>(&body).is_ok() {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            };
            let status = u16::try_from(response.status)
                .ok()
                .and_then(|status| StatusCode::from_u16(status).ok())
                .unwrap_or(StatusCode::OK);
            Ok((status, [(header::CONTENT_TYPE, content_type)], body).into_response())
        }
        (CallStatus::Failed, Some(call)) => Err(failure_error(app, &call)),
        (CallStatus::Denied, Some(call)) => Err(denied_error(&call)),
        (CallStatus::Expired, _) => Err(ApiError::ApprovalExpired),
        (status, _) => {
            let status_url = app.status_url(call_id);
            let mut response = (
                StatusCode::ACCEPTED,
                Json(json!({
                    "call_id": call_id,
                    "status": status.as_str(),
                    "status_url": status_url,
                })),
            )
                .into_response();
            if let Ok(location) = HeaderValue::from_str(&status_url) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            Ok(response)
        }
    }
}

pub(crate) fn denied_error(call: &HeldCall) -> ApiError {
    let comment = call
        .denial
        .as_ref()
        .and_then(|vote| vote.comment.as_deref())
        .map(|comment| format!(": {comment}"))
        .unwrap_or_default();
    ApiError::ApprovalDenied(format!("a reviewer denied this call{comment}"))
}

/// The error a held call that failed answers with, from its recorded failure.
pub(crate) fn failure_error(app: &AppState, call: &HeldCall) -> ApiError {
    let message = call
        .failure
        .as_ref()
        .map(|failure| failure.message.clone())
        .unwrap_or_else(|| "the function failed".to_string());
    match call.failure.as_ref().map(|failure| failure.code.as_str()) {
        Some("upstream_timeout") => ApiError::UpstreamTimeout {
            timeout_ms: app
                .functions
                .get(&call.function)
                .map(|function| u64::try_from(function.timeout.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
        },
        _ => ApiError::UpstreamFailed(message),
    }
}

/// The `wait` preference of RFC 7240 (`Prefer: wait=10`, possibly among others), capped.
pub fn requested_wait(headers: &HeaderMap, cap: Duration) -> Duration {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split([',', ';']))
        .filter_map(|preference| {
            let (name, value) = preference.split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("wait") {
                return None;
            }
            value.trim().trim_matches('"').parse::<u64>().ok()
        })
        .next()
        .map_or(Duration::ZERO, Duration::from_secs)
        .min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_wait_is_read_and_capped() {
        let cap = Duration::from_secs(60);
        let mut headers = HeaderMap::new();
        assert_eq!(requested_wait(&headers, cap), Duration::ZERO);
        headers.insert("prefer", HeaderValue::from_static("respond-async, wait=5"));
        assert_eq!(requested_wait(&headers, cap), Duration::from_secs(5));
        headers.insert("prefer", HeaderValue::from_static("wait=3600"));
        assert_eq!(requested_wait(&headers, cap), cap);
        headers.insert("prefer", HeaderValue::from_static("wait=soon"));
        assert_eq!(requested_wait(&headers, cap), Duration::ZERO);
    }
}
