//! Approval that holds a `tools/call`: the agent waits on an SSE answer (progress notifications
//! when it asked for progress, comments otherwise) up to `mcp.hold_wait_secs`, then gets the
//! tool's result, the refusal, or a tool error saying the call is pending, with its id.
//!
//! The same call made again by the same caller (same tool, same masked arguments) while the
//! earlier one is held, or after it ran, attaches to it instead of asking again: the tool runs
//! once, and the retry gets that one execution's result. Who runs it, when, and that it runs at
//! most once and never before the quorum is the approval executor's (`approval::service`), on
//! whichever instance wins the claim, exactly as for functions.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use callproof_schemas::{Decision, EventKind, MaskingFinding};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::Mcp;
use super::call::{CALL_ID_META, Outgoing, sse_answer, with_call_id};
use super::endpoint::{Context, Exchange, audit_unavailable};
use super::jsonrpc::{self, RpcError};
use super::sessions::identity;
use crate::AppState;
use crate::approval::{
    ApprovalPolicy, CallStatus, HeldCall, HoldRequest, arguments_sha256, request_approval,
};

/// A call that needs approval, as far as the gateway has taken it.
pub(super) struct Held<'p> {
    pub approval: &'p ApprovalPolicy,
    pub reason: String,
    pub decision: Decision,
    pub findings: Vec<MaskingFinding>,
    /// The masked arguments: exactly what will run once approved.
    pub arguments: Vec<u8>,
    pub progress_token: Option<Value>,
}

pub(super) async fn hold(
    app: &Arc<AppState>,
    mcp: &Mcp,
    exchange: &mut Exchange,
    context: &Context,
    id: &Value,
    held: Held<'_>,
) -> Response {
    let sha256 = arguments_sha256(&held.arguments);
    let caller = identity(&context.principal);
    let function = exchange.call.function.clone();
    let earlier = app
        .approvals
        .select(|call| {
            call.function == function
                && call.arguments_sha256 == sha256
                && identity(&call.caller) == caller
        })
        .pop();
    let call_id = match earlier {
        Some(earlier) => {
            tracing::info!(call_id = %earlier.call_id, status = earlier.status.as_str(), "the same tool call again: attached to the held one");
            metrics::counter!("callproof_mcp_held_retries_total", "status" => earlier.status.as_str())
                .increment(1);
            earlier.call_id
        }
        None => {
            exchange.call.mcp = Some(exchange.facts.clone());
            let mut received = exchange.call.event(EventKind::CallReceived);
            received.request = Some(exchange.request.clone());
            received.decision = Some(held.decision);
            received.masking = held.findings;
            let request = HoldRequest {
                received,
                policy: held.approval,
                reason: held.reason,
                arguments: held.arguments,
                wait: mcp.hold_wait,
            };
            if request_approval(app, &mut exchange.call, request)
                .await
                .is_err()
            {
                return with_call_id(
                    audit_unavailable(id).into_response(),
                    &exchange.call.call_id,
                );
            }
            exchange.call.call_id.clone()
        }
    };

    let (sender, receiver) = mpsc::unbounded_channel();
    let waiter = {
        let app = app.clone();
        let call_id = call_id.clone();
        let id = id.clone();
        let token = held.progress_token.clone();
        let (wait, tick, modern) = (mcp.hold_wait, mcp.hold_progress, context.modern);
        async move {
            let deadline = tokio::time::Instant::now() + wait;
            let mut reported = 0u32;
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let state = app.approvals.wait_final(&call_id, tick.min(left)).await;
                let done = state.as_ref().is_some_and(|call| call.status.is_final());
                if done || left <= tick {
                    let answer = held_answer(&app, &call_id, state, &id, modern);
                    let _ = sender.send(Outgoing::Final(answer));
                    return;
                }
                if let Some(token) = &token {
                    reported += 1;
                    let approved = state.as_ref().map_or(0, |call| call.approvals.len());
                    let quorum = state.as_ref().map_or(1, |call| call.quorum);
                    let message = format!(
                        "waiting for approval of call {call_id}: {approved} of {quorum} approvals"
                    );
                    let notification = jsonrpc::notification(
                        "notifications/progress",
                        json!({"progressToken": token, "progress": reported, "message": message}),
                    );
                    if sender.send(Outgoing::Progress(notification)).is_err() {
                        // The agent went away; the call stays held and a retry finds it.
                        return;
                    }
                }
            }
        }
    };
    tokio::spawn(waiter);
    with_call_id(sse_answer(id.clone(), receiver, None), &call_id)
}

/// The answer to a held call: the tool's recorded result once it ran, a tool error when it was
/// denied or expired (the tool was not called) or is still pending, a JSON-RPC error when it
/// failed.
fn held_answer(
    app: &AppState,
    call_id: &str,
    state: Option<HeldCall>,
    id: &Value,
    modern: bool,
) -> Result<Value, RpcError> {
    let tool_error = |text: String, status: &str| {
        let mut result = json!({
            "content": [{"type": "text", "text": text}],
            "isError": true,
            "_meta": {CALL_ID_META: call_id, "dev.callproof/status": status,
                      "dev.callproof/status_url": app.status_url(call_id)},
        });
        if modern {
            result["resultType"] = json!("complete");
        }
        Ok(result)
    };
    let Some(call) = state else {
        return tool_error(
            format!("Call {call_id} is pending approval."),
            "pending_approval",
        );
    };
    match call.status {
        CallStatus::Completed => {
            let recorded = call
                .response
                .and_then(|response| response.body)
                .and_then(|body| serde_json::from_str::<Value>(&body).ok());
            let Some(mut result) = recorded.filter(Value::is_object) else {
                return Err(RpcError::new(
                    StatusCode::OK,
                    jsonrpc::UPSTREAM_FAILED,
                    format!("call {call_id} ran, but its recorded result is not a tool result"),
                )
                .with_id(id));
            };
            if modern {
                result["resultType"] = json!("complete");
            }
            result["_meta"][CALL_ID_META] = json!(call_id);
            Ok(result)
        }
        CallStatus::Failed => {
            let message = call.failure.map_or_else(
                || "the tool call failed".to_string(),
                |failure| failure.message,
            );
            Err(
                RpcError::new(StatusCode::OK, jsonrpc::UPSTREAM_FAILED, message)
                    .with_id(id)
                    .with_data(json!({"callproof": {"call_id": call_id}})),
            )
        }
        CallStatus::Denied => {
            let comment = call
                .denial
                .and_then(|vote| vote.comment)
                .map(|comment| format!(": {comment}"))
                .unwrap_or_default();
            tool_error(
                format!(
                    "Call {call_id} was denied by a reviewer{comment}. The tool was not called."
                ),
                "denied",
            )
        }
        CallStatus::Expired => tool_error(
            format!(
                "Call {call_id} expired before enough approvers decided. The tool was not called."
            ),
            "expired",
        ),
        status => tool_error(
            format!(
                "Call {call_id} is {} by {} (quorum {}, {} approved so far, expires {}). It will \
                 run once approved; make the same call again (same tool, same arguments) to \
                 receive its result.",
                status.as_str().replace('_', " "),
                call.approver_groups.join(", "),
                call.quorum,
                call.approvals.len(),
                crate::approval::rfc3339(call.expires_at),
            ),
            status.as_str(),
        ),
    }
}
