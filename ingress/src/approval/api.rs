//! The approval endpoints: `GET /v1/calls/{id}` for the caller, and for reviewers
//! `GET /v1/approvals?status=…`, `GET /v1/approvals/{id}`, `POST /v1/approvals/{id}`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use callproof_schemas::{Approval, ApprovalDecision, Decision, EventKind, Principal};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ledger::{CallStatus, HeldCall, share_a_party};
use super::{READ_BACK_TIMEOUT, denied_error, failure_error, requested_wait};
use crate::AppState;
use crate::error::{ApiError, CallError};
use crate::events::now_micros;

/// The longest comment a reviewer may leave.
const MAX_COMMENT_CHARS: usize = 2_000;

async fn authenticate(app: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let token = callproof_oidc::bearer_token(authorization).map_err(ApiError::from_auth)?;
    app.authenticator
        .authenticate(token)
        .await
        .map_err(ApiError::from_auth)
}

fn require_caught_up(app: &AppState) -> Result<(), ApiError> {
    if app.approvals.is_caught_up() {
        Ok(())
    } else {
        Err(ApiError::Unavailable(
            "this instance is still reading the approvals from Kafka; retry shortly".into(),
        ))
    }
}

/// `GET /v1/calls/{id}`: the state of a held call and, once executed, its result; only to the
/// caller (same subject). Anyone else gets 404, as for a call that does not exist. A denied or
/// expired call answers 403, as the held invoke does. `Prefer: wait=N` waits for the outcome.
#[tracing::instrument(skip_all, fields(call_id = %call_id))]
pub async fn call_status(
    State(app): State<Arc<AppState>>,
    Path(call_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, CallError> {
    let caller = authenticate(&app, &headers).await?;
    require_caught_up(&app)?;
    let not_found =
        || ApiError::NotFound("no held call with this id".to_string()).for_call(&call_id);
    let is_callers = |call: &HeldCall| call.caller.subject == caller.subject;
    match app.approvals.snapshot(&call_id) {
        Some(call) if is_callers(&call) => {}
        _ => return Err(not_found()),
    }
    let wait = requested_wait(&headers, app.approval_max_wait);
    let Some(call) = app.approvals.wait_final(&call_id, wait).await else {
        return Err(not_found());
    };
    let mut view = json!({
        "call_id": call.call_id,
        "function": call.function,
        "status": call.status.as_str(),
        "status_url": app.status_url(&call.call_id),
        "approvals": call.approvals.len(),
        "quorum": call.quorum,
        "requested_at": rfc3339(call.requested_at),
        "expires_at": rfc3339(call.expires_at),
    });
    match call.status {
        CallStatus::Denied => return Err(denied_error(&call).for_call(&call_id)),
        CallStatus::Expired => return Err(ApiError::ApprovalExpired.for_call(&call_id)),
        CallStatus::Completed => {
            if let Some(response) = &call.response {
                let body = response.body.as_deref().unwrap_or_default();
                let body = serde_json::from_str::<Value>(body)
                    .unwrap_or_else(|_| Value::String(body.to_string()));
                view["result"] = json!({"status": response.status, "body": body});
            }
        }
        CallStatus::Failed => {
            let error = failure_error(&app, &call);
            view["error"] = json!({"code": error.code(), "message": error.to_string()});
        }
        _ => {}
    }
    Ok((StatusCode::OK, Json(view)).into_response())
}

#[derive(Deserialize)]
pub struct ListQuery {
    status: Option<String>,
}

/// `GET /v1/approvals?status=pending`: the calls this reviewer may decide on (in an approver
/// group, not its own), by status (`pending` by default, or `all`).
#[tracing::instrument(skip_all)]
pub async fn list(
    State(app): State<Arc<AppState>>,
    Query(query): Query<ListQuery>,
    headers: HeaderMap,
) -> Result<Response, CallError> {
    let reviewer = authenticate(&app, &headers).await?;
    require_caught_up(&app)?;
    let wanted = match query.status.as_deref().unwrap_or("pending") {
        "all" => None,
        name => Some(CallStatus::parse(name).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown status {name:?}: use pending, approved, denied, expired, executing, completed, failed or all"
            ))
        })?),
    };
    let calls = app.approvals.select(|call| {
        wanted.is_none_or(|status| call.status == status) && may_review(&reviewer, call).is_ok()
    });
    let views: Vec<Value> = calls.iter().map(|call| reviewer_view(&app, call)).collect();
    Ok(Json(json!({ "approvals": views })).into_response())
}

/// `GET /v1/approvals/{id}`: one call as a reviewer sees it (the webhook links here).
#[tracing::instrument(skip_all, fields(call_id = %call_id))]
pub async fn show(
    State(app): State<Arc<AppState>>,
    Path(call_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, CallError> {
    let reviewer = authenticate(&app, &headers).await?;
    require_caught_up(&app)?;
    let call = app
        .approvals
        .snapshot(&call_id)
        .ok_or_else(|| ApiError::NotFound("no held call with this id".into()).for_call(&call_id))?;
    may_review(&reviewer, &call).map_err(|error| error.for_call(&call_id))?;
    Ok(Json(reviewer_view(&app, &call)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionRequest {
    decision: DecisionName,
    comment: Option<String>,
    /// The hash of the arguments the reviewer looked at; if given, it must be the held one.
    arguments_sha256: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum DecisionName {
    Approve,
    Deny,
}

/// `POST /v1/approvals/{id}` with `{"decision": "approve"|"deny", "comment": …}`.
///
/// Checked here against the reviewer's token (group at decision time, never the caller, never
/// an agent), recorded as `approval_decided` (acknowledged, else 503 and nothing happens), then
/// read back: the answer says what the decision did once every instance sees it.
#[tracing::instrument(skip_all, fields(call_id = %call_id))]
pub async fn decide(
    State(app): State<Arc<AppState>>,
    Path(call_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, CallError> {
    decide_inner(&app, &call_id, &headers, &body)
        .await
        .map_err(|error| {
            tracing::info!(code = error.code(), "decision refused");
            error.for_call(&call_id)
        })
}

async fn decide_inner(
    app: &AppState,
    call_id: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let reviewer = authenticate(app, headers).await?;
    require_caught_up(app)?;
    let request: DecisionRequest = serde_json::from_slice(body)
        .map_err(|error| ApiError::BadRequest(format!("invalid decision: {error}")))?;
    if request
        .comment
        .as_ref()
        .is_some_and(|comment| comment.chars().count() > MAX_COMMENT_CHARS)
    {
        return Err(ApiError::BadRequest(format!(
            "comment is longer than {MAX_COMMENT_CHARS} characters"
        )));
    }
    let call = app
        .approvals
        .snapshot(call_id)
        .ok_or_else(|| ApiError::NotFound("no held call with this id".into()))?;
    let group = may_review(&reviewer, &call).inspect_err(|_| {
        tracing::warn!(reviewer = %reviewer.subject, "decision attempt by someone who may not decide");
    })?;
    if request
        .arguments_sha256
        .as_ref()
        .is_some_and(|reviewed| !reviewed.eq_ignore_ascii_case(&call.arguments_sha256))
    {
        return Err(ApiError::Conflict(
            "the held arguments are not the ones reviewed (arguments_sha256 differs)".into(),
        ));
    }
    if call.status != CallStatus::PendingApproval {
        return Err(ApiError::Conflict(format!(
            "the call is no longer pending: it is {}",
            call.status.as_str()
        )));
    }
    if now_micros() > call.expires_at {
        return Err(ApiError::ApprovalExpired);
    }
    if call
        .approvals
        .iter()
        .any(|vote| vote.reviewer == reviewer.subject)
    {
        return Err(ApiError::Conflict(
            "you have already approved this call".into(),
        ));
    }

    // A comment is free text: the detectors run over it, as over any body, before it is
    // recorded or shown to the caller.
    let comment = match &request.comment {
        Some(comment) => Some(
            app.masker
                .mask_bytes(comment.as_bytes())
                .map(|(masked, _findings)| masked.into_owned())
                .map_err(|_| ApiError::BadRequest("comment cannot be read as text".into()))?,
        ),
        None => None,
    };
    let (decision, verb) = match request.decision {
        DecisionName::Approve => (ApprovalDecision::Approve, "approved"),
        DecisionName::Deny => (ApprovalDecision::Deny, "denied"),
    };
    let seq = app.approvals.reserve_seq(call_id).unwrap_or(call.next_seq);
    let mut decided = super::service::recorder_for(&call, &app.instance_id, seq)
        .event(EventKind::ApprovalDecided);
    decided.decision = Some(Decision {
        allowed: decision == ApprovalDecision::Approve,
        policy_id: Some(call.approval_policy_id()),
        reason: format!("{} (group {group}) {verb} the call", reviewer.subject),
    });
    decided.approval = Some(Approval {
        approvers: call.approver_groups.clone(),
        quorum: i32::try_from(call.quorum).unwrap_or(i32::MAX),
        reviewer: Some(reviewer.subject.clone()),
        decision: Some(decision),
        comment,
        expires_at: Some(call.expires_at),
        arguments_sha256: Some(call.arguments_sha256.clone()),
    });
    let event_id = decided.event_id.clone();
    let positions = app
        .events
        .publish_at(&[decided])
        .await
        .map_err(|_| ApiError::AuditUnavailable)?;
    tracing::info!(reviewer = %reviewer.subject, decision = verb, "approval decision recorded");
    metrics::counter!("callproof_ingress_approval_decisions_total", "decision" => verb)
        .increment(1);

    let applied = app
        .approvals
        .wait_applied(&positions, READ_BACK_TIMEOUT)
        .await;
    let after = app.approvals.snapshot(call_id);
    let counted = after.as_ref().and_then(|call| call.counted(&event_id));
    match (applied, counted, after) {
        (true, Some(Ok(())), Some(after)) => Ok((
            StatusCode::OK,
            Json(json!({
                "call_id": call_id,
                "decision": verb,
                "status": after.status.as_str(),
                "approvals": after.approvals.len(),
                "quorum": after.quorum,
            })),
        )
            .into_response()),
        // Another decision got in first (e.g. a deny through another instance).
        (true, Some(Err(reason)), _) => Err(ApiError::Conflict(format!(
            "the decision was recorded but did not count: {reason}"
        ))),
        _ => Ok((
            StatusCode::ACCEPTED,
            Json(json!({"call_id": call_id, "decision": verb, "status": "recorded"})),
        )
            .into_response()),
    }
}

/// Whether `reviewer` may decide on `call`, and through which group. Checked against the token
/// presented now, so someone who left the group can no longer decide.
fn may_review(reviewer: &Principal, call: &HeldCall) -> Result<String, ApiError> {
    if reviewer.actor.is_some() {
        return Err(ApiError::Forbidden(
            "decisions are made with a person's own token, not by an agent acting for one".into(),
        ));
    }
    if share_a_party(&call.caller, &reviewer.subject, None) {
        return Err(ApiError::Forbidden(
            "the caller cannot decide on its own call".into(),
        ));
    }
    reviewer
        .groups
        .iter()
        .find(|group| call.approver_groups.contains(group))
        .cloned()
        .ok_or_else(|| {
            ApiError::Forbidden(format!(
                "only members of {} may decide on calls of `{}`",
                call.approver_groups.join(", "),
                call.function
            ))
        })
}

fn reviewer_view(app: &AppState, call: &HeldCall) -> Value {
    let arguments = serde_json::from_str::<Value>(&call.arguments)
        .unwrap_or_else(|_| Value::String(call.arguments.clone()));
    let vote = |vote: &super::ledger::Vote| json!({"reviewer": vote.reviewer, "comment": vote.comment, "time": rfc3339(vote.time)});
    json!({
        "call_id": call.call_id,
        "function": call.function,
        "status": call.status.as_str(),
        "caller": {
            "subject": call.caller.subject,
            "actor": call.caller.actor.as_ref().map(|actor| actor.subject.clone()),
        },
        "arguments": arguments,
        "arguments_sha256": call.arguments_sha256,
        "approver_groups": call.approver_groups,
        "quorum": call.quorum,
        // Why the call is held, as recorded, and the condition in force (configuration, not
        // call data), so the approver sees what required their decision.
        "reason": call.reason,
        "condition": app
            .approval_policy(&call.function)
            .and_then(|approval| approval.condition.as_ref())
            .map(|condition| condition.source()),
        "approvals": call.approvals.iter().map(vote).collect::<Vec<_>>(),
        "denial": call.denial.as_ref().map(vote),
        "requested_at": rfc3339(call.requested_at),
        "expires_at": rfc3339(call.expires_at),
        "decision_url": format!("{}/v1/approvals/{}", app.public_url, call.call_id),
    })
}

/// Microseconds since the epoch as RFC 3339.
pub fn rfc3339(micros: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .ok()
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
