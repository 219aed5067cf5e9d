//! `POST /v1/functions/{name}/invoke`: the gateway's data path.
//!
//! authenticate → find the function → policy (an allow rule over `args` waits for the body) →
//! read and parse the body → approval condition → mask it →
//! publish `call_received` + `call_forwarded` and wait for the broker → call the function →
//! mask the answer → publish `call_completed` / `call_failed` → answer.
//!
//! Every refusal publishes `call_denied` before the caller hears of it, and any event the broker
//! does not acknowledge turns into a 503 with the function not (or no further) called.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, to_bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use callproof_masking::{FieldRules, Finding};
use callproof_schemas::{
    CallEvent, Decision, EventKind, Failure, MaskingFinding, Principal, Request,
};
use serde_json::Value;

use crate::error::{ApiError, CallError};
use crate::events::CallRecorder;
use crate::function::Function;
use crate::rules::CallFacts;
use crate::upstream::{self, UpstreamError};
use crate::{AppState, CALL_ID_HEADER};

#[tracing::instrument(skip_all, fields(function = %name, call_id))]
pub async fn invoke(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, CallError> {
    let started = Instant::now();
    let call_id = uuid::Uuid::now_v7().to_string();
    tracing::Span::current().record("call_id", call_id.as_str());
    let mut call = CallRecorder::new(call_id.clone(), &app.instance_id, &name);
    let outcome = run(&app, &mut call, &name, &headers, body).await;
    let label = match &outcome {
        Ok(_) => "completed",
        Err(error) => error.code(),
    };
    metrics::counter!("callproof_ingress_calls_total", "function" => name.clone(), "outcome" => label)
        .increment(1);
    metrics::histogram!("callproof_ingress_call_seconds").record(started.elapsed().as_secs_f64());
    match outcome {
        Ok(mut response) => {
            if let Ok(value) = HeaderValue::from_str(&call_id) {
                response.headers_mut().insert(CALL_ID_HEADER, value);
            }
            Ok(response)
        }
        Err(error) => {
            tracing::info!(code = error.code(), "call refused or failed");
            Err(error.for_call(&call_id))
        }
    }
}

async fn run(
    app: &AppState,
    call: &mut CallRecorder,
    name: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut request = Request {
        method: "POST".to_string(),
        path: format!("/v1/functions/{name}/invoke"),
        body: None,
        body_bytes: 0,
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string),
    };

    let Ok(_in_flight) = app.in_flight.clone().try_acquire_owned() else {
        let refusal = ApiError::TooManyRequests;
        return Err(deny(app, call, request, PolicyState::NotReached, refusal).await);
    };

    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let authenticated = match callproof_oidc::bearer_token(authorization) {
        Ok(token) => (app.authenticator.authenticate(token).await).map(|found| (token, found)),
        Err(error) => Err(error),
    };
    let (token, principal) = match authenticated {
        Ok(authenticated) => authenticated,
        Err(error) => {
            let refusal = ApiError::from_auth(error);
            return Err(deny(app, call, request, PolicyState::NotReached, refusal).await);
        }
    };
    call.principal = Some(principal.clone());

    let Some(function) = app.functions.get(name) else {
        let refusal = ApiError::UnknownFunction(name.to_string());
        return Err(deny(app, call, request, PolicyState::NotReached, refusal).await);
    };

    let claims = if function.reads_claims() {
        crate::rules::selected_claims(token, &app.policy_claims)
    } else {
        serde_json::Map::new()
    };
    let mut facts = CallFacts {
        principal: &principal,
        claims: &claims,
        function: name,
        arguments: None,
        now: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    };
    // Decided before the body is read, unless only an allow rule over `args` can decide.
    let state = match function.policy.decide(&facts) {
        Some(decision) if !decision.allowed => {
            let refusal = ApiError::Forbidden(format!("not allowed to call `{name}`"));
            let state = PolicyState::Decided(decision);
            return Err(deny(app, call, request, state, refusal).await);
        }
        Some(decision) => PolicyState::Decided(decision),
        None => PolicyState::Pending(function.policy.id.clone()),
    };

    let limit = function.max_request_bytes;
    let declared_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let raw_body = match declared_length {
        Some(length) if length > limit as u64 => Err(()),
        _ => to_bytes(body, limit).await.map_err(|_| ()),
    };
    let Ok(raw_body) = raw_body else {
        let refusal = ApiError::PayloadTooLarge { limit };
        return Err(deny(app, call, request, state, refusal).await);
    };
    request.body_bytes = i64::try_from(raw_body.len()).unwrap_or(i64::MAX);

    let mut arguments: Value = match serde_json::from_slice(&raw_body) {
        Ok(arguments) => arguments,
        Err(error) => {
            // serde_json's message names line and column, never the content.
            let refusal = ApiError::InvalidJson(error.to_string());
            return Err(deny(app, call, request, state, refusal).await);
        }
    };
    // Rules are decided on the arguments as the caller sent them, before masking: a detector
    // must not hide the field a rule is about. Only reasons (never a value) are recorded.
    facts.arguments = Some(&arguments);
    let decision = match state {
        PolicyState::Decided(decision) => decision,
        pending => match function.policy.decide(&facts) {
            Some(decision) if decision.allowed => decision,
            // `None` cannot come now that the arguments are read; it is refused all the same.
            decision => {
                let refusal = ApiError::Forbidden(format!("not allowed to call `{name}`"));
                let state = decision.map_or(pending, PolicyState::Decided);
                return Err(deny(app, call, request, state, refusal).await);
            }
        },
    };
    let approval_reason = function
        .approval
        .as_ref()
        .and_then(|policy| policy.requirement(&facts));
    let request_findings = match mask(
        app,
        &mut arguments,
        &function.policy.mask_request,
        function.policy.detect,
        "/request/body",
    ) {
        Ok(findings) => findings,
        Err(refusal) => {
            let state = PolicyState::Decided(decision);
            return Err(deny(app, call, request, state, refusal).await);
        }
    };
    let forwarded_body = serde_json::to_vec(&arguments).map_err(|_| ApiError::Internal)?;
    request.body = Some(String::from_utf8_lossy(&forwarded_body).into_owned());

    let mut received = call.event(EventKind::CallReceived);
    received.request = Some(request);
    received.decision = Some(decision);
    received.masking = request_findings;
    if let (Some(policy), Some(reason)) = (&function.approval, approval_reason) {
        let held = crate::approval::HoldRequest {
            received,
            policy,
            reason,
            arguments: forwarded_body,
            wait: crate::approval::requested_wait(headers, app.approval_max_wait),
        };
        return crate::approval::hold(app, call, held).await;
    }
    let forwarded = call.event(EventKind::CallForwarded);
    app.events
        .publish(&[received, forwarded])
        .await
        .map_err(|_| ApiError::AuditUnavailable)?;

    let (outcome, answer) = forward(app, function, call, &principal, forwarded_body).await;
    // The answer leaves the gateway only once its record is safe.
    publish_or_unavailable(app, outcome).await?;
    answer
}

/// Calls the function with the (masked) arguments, masks its answer and builds the outcome event
/// (`call_completed` or `call_failed`). The caller publishes that event before it acts on the
/// answer: both the direct path here and the approval executor do.
pub(crate) async fn forward(
    app: &AppState,
    function: &Function,
    call: &mut CallRecorder,
    principal: &Principal,
    forwarded_body: Vec<u8>,
) -> (CallEvent, Result<Response, ApiError>) {
    let upstream_result = upstream::call(
        &app.http,
        function,
        &call.call_id,
        principal,
        forwarded_body,
        app.max_response_bytes,
    )
    .await;
    let answer = match upstream_result {
        Ok(answer) => answer,
        Err(error) => {
            let failure = match error {
                UpstreamError::Timeout(_) => ApiError::UpstreamTimeout {
                    timeout_ms: u64::try_from(function.timeout.as_millis()).unwrap_or(u64::MAX),
                },
                other => ApiError::UpstreamFailed(other.to_string()),
            };
            return (failed_event(call, &failure), Err(failure));
        }
    };

    let (answer_body, response_findings, is_json) =
        match mask_answer(app, &answer.body, answer.content_type.as_deref(), function) {
            Ok(masked) => masked,
            Err(failure) => return (failed_event(call, &failure), Err(failure)),
        };
    let mut outcome = if answer.status >= 500 {
        call.event(EventKind::CallFailed)
    } else {
        call.event(EventKind::CallCompleted)
    };
    outcome.response = Some(callproof_schemas::Response {
        status: i32::from(answer.status),
        body: Some(answer_body.clone()),
        body_bytes: i64::try_from(answer.body.len()).unwrap_or(i64::MAX),
        latency_micros: i64::try_from(answer.latency.as_micros()).unwrap_or(i64::MAX),
    });
    outcome.masking = response_findings;
    if answer.status >= 500 {
        let failure =
            ApiError::UpstreamFailed(format!("function answered with status {}", answer.status));
        outcome.failure = Some(Failure {
            code: failure.code().to_string(),
            message: failure.to_string(),
        });
        return (outcome, Err(failure));
    }
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let content_type = if is_json {
        "application/json".to_string()
    } else {
        answer
            .content_type
            .unwrap_or_else(|| "text/plain; charset=utf-8".to_string())
    };
    let response = (status, [(header::CONTENT_TYPE, content_type)], answer_body).into_response();
    (outcome, Ok(response))
}

fn failed_event(call: &mut CallRecorder, failure: &ApiError) -> CallEvent {
    let mut failed = call.event(EventKind::CallFailed);
    failed.failure = Some(Failure {
        code: failure.code().to_string(),
        message: failure.to_string(),
    });
    failed
}

/// Masks a JSON document with policy rules (and detectors if enabled), returning the findings
/// with their paths rooted at `prefix` as events record them.
pub(crate) fn mask(
    app: &AppState,
    document: &mut Value,
    rules: &FieldRules,
    detect: bool,
    prefix: &str,
) -> Result<Vec<MaskingFinding>, ApiError> {
    let findings = app
        .masker
        .mask_json(document, rules, detect)
        .map_err(|error| ApiError::BadRequest(error.to_string()))?;
    Ok(event_findings(findings, prefix))
}

pub(crate) fn event_findings(findings: Vec<Finding>, prefix: &str) -> Vec<MaskingFinding> {
    findings
        .into_iter()
        .map(|finding| MaskingFinding {
            detector: finding.detector,
            path: format!("{prefix}{}", finding.path),
            count: i32::try_from(finding.count).unwrap_or(i32::MAX),
        })
        .collect()
}

/// Masks the function's answer: JSON with the response rules, anything else as text. Bytes that
/// are neither are refused rather than passed through unmasked.
fn mask_answer(
    app: &AppState,
    body: &[u8],
    content_type: Option<&str>,
    function: &Function,
) -> Result<(String, Vec<MaskingFinding>, bool), ApiError> {
    if body.is_empty() {
        return Ok((String::new(), Vec::new(), false));
    }
    let looks_json = content_type.is_none_or(|value| value.contains("json"));
    if looks_json && let Ok(mut document) = serde_json::from_slice::<Value>(body) {
        let findings = mask(
            app,
            &mut document,
            &function.policy.mask_response,
            function.policy.detect,
            "/response/body",
        )
        .map_err(|_| ApiError::UpstreamFailed("function's answer cannot be masked".into()))?;
        let text = serde_json::to_string(&document).map_err(|_| ApiError::Internal)?;
        return Ok((text, findings, true));
    }
    if !function.policy.mask_response.is_empty() {
        // Field rules cannot be applied to a body that is not JSON: refuse rather than leak.
        return Err(ApiError::UpstreamFailed(
            "function's answer is not JSON, so its masked fields cannot be removed".into(),
        ));
    }
    let (masked, findings) = app.masker.mask_bytes(body).map_err(|_| {
        ApiError::UpstreamFailed("function's answer is neither JSON nor text".into())
    })?;
    Ok((
        masked.into_owned(),
        event_findings(findings, "/response/body"),
        false,
    ))
}

/// How far the policy got when a call is refused.
pub(crate) enum PolicyState {
    NotReached,
    /// Only the allow rule can decide, and it waits for the arguments; the policy's id.
    Pending(String),
    Decided(Decision),
}

/// Records a refusal as `call_denied` and returns the error to answer with: the refusal itself,
/// or 503 if the refusal could not be recorded.
///
/// The recorded decision is always a refusal: a call the policy allowed (or had not decided
/// yet) but the gateway refused afterwards (too large, invalid JSON, not maskable) must not
/// read as `allowed` in the evidence. It keeps the policy id, and the refusal becomes its
/// reason; a policy refusal keeps its own reason.
async fn deny(
    app: &AppState,
    call: &mut CallRecorder,
    request: Request,
    state: PolicyState,
    refusal: ApiError,
) -> ApiError {
    let mut denied = call.event(EventKind::CallDenied);
    denied.request = Some(request);
    denied.decision = Some(refused_decision(state, refusal.to_string()));
    denied.failure = Some(Failure {
        code: refusal.code().to_string(),
        message: refusal.to_string(),
    });
    match app.events.publish(&[denied]).await {
        Ok(()) => refusal,
        Err(_) => ApiError::AuditUnavailable,
    }
}

pub(crate) fn refused_decision(state: PolicyState, reason: String) -> Decision {
    match state {
        PolicyState::Decided(decision) if !decision.allowed => decision,
        PolicyState::Decided(Decision { policy_id, .. }) => Decision {
            allowed: false,
            policy_id,
            reason,
        },
        PolicyState::Pending(policy_id) => Decision {
            allowed: false,
            policy_id: Some(policy_id),
            reason,
        },
        PolicyState::NotReached => Decision {
            allowed: false,
            policy_id: None,
            reason,
        },
    }
}

async fn publish_or_unavailable(app: &AppState, event: CallEvent) -> Result<(), ApiError> {
    app.events
        .publish(&[event])
        .await
        .map_err(|_| ApiError::AuditUnavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed_by_policy() -> Decision {
        Decision {
            allowed: true,
            policy_id: Some("functions.echo.policy".to_string()),
            reason: "group support is allowed".to_string(),
        }
    }

    #[test]
    fn a_refusal_after_the_policy_allowed_is_recorded_as_not_allowed() {
        let refusal = ApiError::PayloadTooLarge { limit: 64 };
        let recorded = refused_decision(
            PolicyState::Decided(allowed_by_policy()),
            refusal.to_string(),
        );
        assert!(!recorded.allowed);
        assert_eq!(recorded.policy_id.as_deref(), Some("functions.echo.policy"));
        assert_eq!(recorded.reason, refusal.to_string());
    }

    #[test]
    fn a_policy_refusal_keeps_its_reason() {
        let policy = Decision {
            allowed: false,
            policy_id: Some("functions.admin.policy".to_string()),
            reason: "neither subject bob nor its groups are allowed".to_string(),
        };
        let recorded = refused_decision(
            PolicyState::Decided(policy.clone()),
            "not allowed".to_string(),
        );
        assert_eq!(recorded, policy);
        let unauthenticated =
            refused_decision(PolicyState::NotReached, "missing bearer token".to_string());
        assert!(!unauthenticated.allowed);
        assert_eq!(unauthenticated.reason, "missing bearer token");
    }
}
