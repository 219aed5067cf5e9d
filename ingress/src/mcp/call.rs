//! `tools/call` on the gateway's call flow, as `invoke.rs` runs a function call:
//! resolve the tool (hidden = unknown) → policy with the arguments → approval condition → mask
//! the arguments → publish `call_received` + `call_forwarded` and wait for the broker → call the
//! upstream on the agent's own connection → mask the result → publish `call_completed` /
//! `call_failed` → answer.
//!
//! The upstream call runs in a task of its own that owns the call's events: if the agent goes
//! away, the outcome is still recorded. Progress the upstream reports reaches the agent (masked)
//! when it asked for progress, on an SSE answer.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use callproof_masking::FieldRules;
use callproof_schemas::{CallEvent, EventKind, Failure, MaskingFinding, McpOutcome};
use rmcp::model::{CallToolRequestParams, JsonObject, ProgressNotificationParam};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::endpoint::{Context, Exchange, Refusal, audit_unavailable, json_answer};
use super::jsonrpc::{self, RpcError};
use super::sessions::identity;
use super::upstream::UpstreamError;
use super::{Mcp, Server, ToolPolicy, catalog};
use crate::approval::HeldCall;
use crate::events::CallRecorder;
use crate::invoke::{PolicyState, event_findings, mask};
use crate::{AppState, CALL_ID_HEADER};

/// Longest `function` recorded for a requested tool name (names are agent input).
const MAX_RECORDED_NAME: usize = 128;
/// The `_meta` key of a result naming its call, for the agent to quote.
pub(super) const CALL_ID_META: &str = "dev.callproof/call_id";

/// What the call task sends the answering side.
pub(super) enum Outgoing {
    Progress(Value),
    Final(Result<Value, RpcError>),
}

pub async fn call_tool(
    app: &Arc<AppState>,
    mcp: &Mcp,
    exchange: &mut Exchange,
    context: &Context,
    id: &Value,
    mut params: Map<String, Value>,
) -> Result<Response, Refusal> {
    let invalid = |message: &str| {
        Refusal::new(
            RpcError::invalid_params(message).with_id(id),
            "mcp_invalid_params",
        )
    };
    let Some(name) = params
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return Err(invalid("tools/call needs a `name`"));
    };
    let recorded_name: String = name.chars().take(MAX_RECORDED_NAME).collect();
    let function = format!("mcp:{recorded_name}");
    exchange.call.function = function.clone();
    let mut arguments = match params.remove("arguments") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::Object(arguments)) => Value::Object(arguments),
        Some(_) => return Err(invalid("`arguments` must be an object")),
    };
    let progress_token = params
        .get("_meta")
        .and_then(|meta| meta.get("progressToken"))
        .filter(|token| token.is_string() || token.is_i64() || token.is_u64())
        .cloned();

    let (server, tool_name, tool, schema) = resolve(mcp, context, &name, &function, id).await?;
    exchange.facts.server = Some(server.name.clone());
    exchange.facts.tool = Some(tool_name.clone());
    if context.modern
        && let Err(reason) = check_param_headers(&schema, &arguments, &context.param_headers)
    {
        return Err(Refusal::new(
            RpcError::header_mismatch(reason).with_id(id),
            "mcp_header_mismatch",
        ));
    }
    let policy = &tool.policy;

    let decision = {
        let facts = context.facts(&function, Some(&arguments));
        match policy.decide(&facts) {
            Some(decision) if decision.allowed => decision,
            decision => {
                let reason = decision.as_ref().map_or_else(
                    || "the policy could not be decided".to_string(),
                    |decision| decision.reason.clone(),
                );
                let state = decision.map_or(PolicyState::Pending(policy.id.clone()), |decision| {
                    PolicyState::Decided(decision)
                });
                return Err(unknown_tool(&name, id).recording(reason).at(state));
            }
        }
    };
    let approval_reason = tool.approval.as_ref().and_then(|approval| {
        let facts = context.facts(&function, Some(&arguments));
        approval.requirement(&facts)
    });
    let request_findings = mask(
        app,
        &mut arguments,
        &policy.mask_request,
        policy.detect,
        "/request/body",
    )
    .map_err(|error| {
        Refusal::new(
            RpcError::invalid_params(error.to_string()).with_id(id),
            "mcp_invalid_params",
        )
        .at(PolicyState::Decided(decision.clone()))
    })?;
    let forwarded = serde_json::to_string(&arguments).unwrap_or_default();
    exchange.request.body = Some(forwarded.clone());
    if let (Some(approval), Some(reason)) = (&tool.approval, approval_reason) {
        let held = super::hold::Held {
            approval,
            reason,
            decision,
            findings: request_findings,
            arguments: forwarded.into_bytes(),
            progress_token,
        };
        return Ok(super::hold::hold(app, mcp, exchange, context, id, held).await);
    }

    exchange.call.mcp = Some(exchange.facts.clone());
    let mut received = exchange.call.event(EventKind::CallReceived);
    received.request = Some(exchange.request.clone());
    received.decision = Some(decision);
    received.masking = request_findings;
    let forwarded_event = exchange.call.event(EventKind::CallForwarded);
    if app
        .events
        .publish(&[received, forwarded_event])
        .await
        .is_err()
    {
        return Ok(with_call_id(
            audit_unavailable(id).into_response(),
            &exchange.call.call_id,
        ));
    }

    let Value::Object(arguments) = arguments else {
        return Err(invalid("`arguments` must be an object"));
    };
    let cancel = CancellationToken::new();
    let request_key = jsonrpc::id_text(id);
    if let Some(session) = &context.session {
        mcp.sessions.track(session, &request_key, &cancel);
    }
    let (sender, mut receiver) = mpsc::unbounded_channel();
    let task = CallTask {
        app: app.clone(),
        server: server.name.clone(),
        tool: tool_name,
        owner: context.owner(),
        call: CallRecorder::resume(
            &exchange.call.call_id,
            &app.instance_id,
            &function,
            context.principal.clone(),
            exchange.call.next_seq(),
        )
        .with_mcp(exchange.facts.clone()),
        arguments,
        progress_token: progress_token.clone(),
        modern: context.modern,
        id: id.clone(),
        cancel: cancel.clone(),
        untrack: context
            .session
            .clone()
            .map(|session| (session, request_key)),
        _permit: exchange.permit.take(),
        sender,
    };
    tokio::spawn(task.run());
    let call_id = exchange.call.call_id.clone();
    // The stateless era cancels by closing the stream: dropping this guard (the agent went
    // away) cancels the call. The legacy era cancels by notification, so a lost connection
    // lets the call finish and be recorded.
    let guard = context.modern.then(|| cancel.drop_guard());

    if progress_token.is_none() {
        let outcome = loop {
            match receiver.recv().await {
                Some(Outgoing::Final(outcome)) => break outcome,
                Some(Outgoing::Progress(_)) => continue,
                None => {
                    break Err(RpcError::new(
                        StatusCode::OK,
                        jsonrpc::INTERNAL_ERROR,
                        "the call ended without an outcome",
                    )
                    .with_id(id));
                }
            }
        };
        drop(guard);
        let response = match outcome {
            Ok(result) => json_answer(id, result),
            Err(error) => error.into_response(),
        };
        return Ok(with_call_id(response, &call_id));
    }

    Ok(with_call_id(
        sse_answer(id.clone(), receiver, guard),
        &call_id,
    ))
}

/// An SSE answer: the notifications the call task sends, then its final message. Dropping the
/// stream (the agent went away) drops `guard`.
pub(super) fn sse_answer(
    id: Value,
    receiver: mpsc::UnboundedReceiver<Outgoing>,
    guard: Option<DropGuard>,
) -> Response {
    let stream = futures::stream::unfold(Some((receiver, guard)), move |state| {
        let id = id.clone();
        async move {
            let (mut receiver, guard) = state?;
            let (data, next) = match receiver.recv().await? {
                Outgoing::Progress(notification) => (notification, Some((receiver, guard))),
                Outgoing::Final(Ok(result)) => (jsonrpc::result(&id, result), None),
                Outgoing::Final(Err(error)) => (error.to_json(), None),
            };
            let event = Event::default().data(data.to_string());
            Some((Ok::<Event, Infallible>(event), next))
        }
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Runs an approved tool call on the instance that won its claim (the approval executor), on
/// the caller's own upstream connection, and returns its outcome event for the executor to
/// record.
pub async fn forward_approved(
    app: &Arc<AppState>,
    recorder: CallRecorder,
    call: &HeldCall,
) -> CallEvent {
    let (sender, _receiver) = mpsc::unbounded_channel();
    let (server, tool) = match app.mcp.as_ref().and_then(|mcp| mcp.tool_of(&call.function)) {
        Some((server, tool, _)) => (server.name.clone(), tool.to_string()),
        None => (String::new(), String::new()),
    };
    let arguments = match serde_json::from_str::<Value>(&call.arguments) {
        Ok(Value::Object(arguments)) => arguments,
        _ => Map::new(),
    };
    let mut task = CallTask {
        app: app.clone(),
        server,
        tool,
        owner: format!("caller:{}", identity(&call.caller)),
        call: recorder,
        arguments,
        progress_token: None,
        modern: false,
        id: Value::Null,
        cancel: CancellationToken::new(),
        untrack: None,
        _permit: None,
        sender,
    };
    task.call_upstream().await.0
}

/// The server and tool an exposed name stands for, if the caller may see it. Every failure is
/// the same answer to the agent (an unknown tool); the record says which it was.
async fn resolve<'m>(
    mcp: &'m Mcp,
    context: &Context,
    name: &str,
    function: &str,
    id: &Value,
) -> Result<(&'m Server, String, &'m ToolPolicy, Arc<JsonObject>), Refusal> {
    let Some((server_name, tool_name)) = catalog::split_name(name) else {
        return Err(unknown_tool(name, id).recording(format!(
            "unknown tool {name}: not of the form <server>__<tool>"
        )));
    };
    let Some(server) = mcp.servers.get(server_name) else {
        return Err(unknown_tool(name, id).recording(format!(
            "unknown tool {name}: no server {server_name} is configured"
        )));
    };
    let tools = server.tools(mcp.catalog_ttl).await.map_err(|error| {
        let rpc = RpcError::new(
            StatusCode::OK,
            jsonrpc::UPSTREAM_FAILED,
            format!("MCP server {server_name} cannot be reached to find its tools"),
        )
        .with_id(id);
        Refusal::new(rpc, "upstream_unreachable")
            .recording(format!("cannot list the tools of {server_name}: {error}"))
    })?;
    let Some(schema) = tools
        .iter()
        .find(|tool| tool.name == tool_name)
        .map(|tool| tool.input_schema.clone())
    else {
        return Err(unknown_tool(name, id).recording(format!(
            "unknown tool {name}: {server_name} has no tool {tool_name}"
        )));
    };
    let Some(policy) = server.policy_of(tool_name) else {
        return Err(unknown_tool(name, id).recording(format!(
            "tool {name} has no policy (no tools.{tool_name} nor default table), so nobody may call it"
        )));
    };
    if let Some(decision) = policy.policy.decide(&context.facts(function, None))
        && !decision.allowed
    {
        let reason = decision.reason.clone();
        return Err(unknown_tool(name, id)
            .recording(reason)
            .at(PolicyState::Decided(decision)));
    }
    Ok((server, tool_name.to_string(), policy, schema))
}

/// 2026-07-28: an argument whose schema says `x-mcp-header: Name` must travel in the
/// `Mcp-Param-Name` header too, with the same value (numbers compared as numbers), so that
/// intermediaries routing on the header see what the server will act on.
fn check_param_headers(
    schema: &JsonObject,
    arguments: &Value,
    headers: &std::collections::HashMap<String, Option<String>>,
) -> Result<(), String> {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return Ok(());
    };
    for (argument, property) in properties {
        let Some(header) = property.get("x-mcp-header").and_then(Value::as_str) else {
            continue;
        };
        let sent = headers.get(&header.to_ascii_lowercase());
        match (arguments.get(argument), sent) {
            (None | Some(Value::Null), None) => {}
            (Some(_), None) => {
                return Err(format!(
                    "Mcp-Param-{header} is missing but the argument `{argument}` is present"
                ));
            }
            (_, Some(None)) => return Err(format!("Mcp-Param-{header} is not valid")),
            (value, Some(Some(text))) => {
                let same = match value {
                    Some(Value::String(value)) => value == text,
                    Some(Value::Number(number)) => text
                        .parse::<f64>()
                        .is_ok_and(|parsed| number.as_f64() == Some(parsed)),
                    Some(Value::Bool(flag)) => text == if *flag { "true" } else { "false" },
                    _ => false,
                };
                if !same {
                    return Err(format!(
                        "Mcp-Param-{header} does not match the argument `{argument}`"
                    ));
                }
            }
        }
    }
    Ok(())
}

fn unknown_tool(name: &str, id: &Value) -> Refusal {
    Refusal::new(
        RpcError::invalid_params(format!("Unknown tool: {name}")).with_id(id),
        "unknown_tool",
    )
}

pub(super) fn with_call_id(mut response: Response, call_id: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(call_id) {
        response.headers_mut().insert(CALL_ID_HEADER, value);
    }
    response
}

/// The upstream call of one `tools/call`, owning its events from `call_forwarded` on.
struct CallTask {
    app: Arc<AppState>,
    server: String,
    tool: String,
    owner: String,
    call: CallRecorder,
    arguments: Map<String, Value>,
    progress_token: Option<Value>,
    modern: bool,
    id: Value,
    cancel: CancellationToken,
    /// The agent's session and request id, under which the call can be cancelled.
    untrack: Option<(String, String)>,
    /// The call's share of `ingress.max_in_flight`, released when its outcome is recorded.
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    sender: mpsc::UnboundedSender<Outgoing>,
}

impl CallTask {
    async fn run(mut self) {
        let started = Instant::now();
        let (outcome_event, answer) = self.call_upstream().await;
        let label = outcome_event
            .mcp
            .as_ref()
            .and_then(|mcp| mcp.outcome)
            .map_or("unknown", McpOutcome::as_str);
        metrics::counter!("callproof_mcp_tool_calls_total", "server" => self.server.clone(), "outcome" => label)
            .increment(1);
        metrics::histogram!("callproof_mcp_tool_call_seconds")
            .record(started.elapsed().as_secs_f64());
        // The answer leaves only once its record is safe.
        let answer = match self.app.events.publish(&[outcome_event]).await {
            Ok(()) => answer,
            Err(_) => Err(audit_unavailable(&self.id)),
        };
        if let (Some((session, request)), Some(mcp)) = (&self.untrack, &self.app.mcp) {
            mcp.sessions.untrack(session, request);
        }
        // The agent may have gone; the outcome is recorded either way.
        let _ = self.sender.send(Outgoing::Final(answer));
    }

    async fn call_upstream(&mut self) -> (CallEvent, Result<Value, RpcError>) {
        let started = Instant::now();
        let app = self.app.clone();
        let Some(mcp) = app.mcp.as_ref() else {
            return self.failed(
                McpOutcome::TransportError,
                "internal",
                "MCP is not configured",
                jsonrpc::INTERNAL_ERROR,
            );
        };
        let Some(server) = mcp.servers.get(&self.server) else {
            return self.failed(
                McpOutcome::TransportError,
                "internal",
                "the server is no longer configured",
                jsonrpc::INTERNAL_ERROR,
            );
        };
        let Some(tool) = server.policy_of(&self.tool) else {
            return self.failed(
                McpOutcome::TransportError,
                "internal",
                "the tool is no longer configured",
                jsonrpc::INTERNAL_ERROR,
            );
        };
        let connection = match mcp.clients.get(&self.owner, server).await {
            Ok(connection) => connection,
            Err(error) => {
                tracing::warn!(server = %self.server, %error, "cannot connect to upstream MCP server");
                return self.transport_failure(&error, server);
            }
        };
        let params = CallToolRequestParams::new(self.tool.clone())
            .with_arguments(std::mem::take(&mut self.arguments));
        let masker_app = app.clone();
        let sender = self.sender.clone();
        let token = self.progress_token.clone();
        let on_progress = move |update: ProgressNotificationParam| {
            let Some(token) = &token else {
                return;
            };
            let mut params = json!({"progressToken": token, "progress": update.progress});
            if let Some(total) = update.total {
                params["total"] = json!(total);
            }
            if let Some(message) = &update.message {
                let (masked, _) = masker_app.masker.mask_text(message);
                params["message"] = json!(masked);
            }
            let _ = sender.send(Outgoing::Progress(jsonrpc::notification(
                "notifications/progress",
                params,
            )));
        };
        let result = connection
            .upstream
            .call_tool(params, on_progress, &self.cancel)
            .await;
        let latency = started.elapsed();
        match result {
            Ok(result) => {
                let mut value = serde_json::to_value(&result).unwrap_or(Value::Null);
                let body_bytes = value.to_string().len();
                let findings = match mask_result(
                    &self.app,
                    &tool.policy.mask_response,
                    tool.policy.detect,
                    &mut value,
                ) {
                    Ok(findings) => findings,
                    Err(reason) => {
                        return self.failed(
                            McpOutcome::TransportError,
                            "upstream_failed",
                            &reason,
                            jsonrpc::UPSTREAM_FAILED,
                        );
                    }
                };
                let is_error = result.is_error == Some(true);
                self.set_outcome(
                    if is_error {
                        McpOutcome::ToolError
                    } else {
                        McpOutcome::Result
                    },
                    None,
                );
                let mut completed = self.call.event(EventKind::CallCompleted);
                completed.response = Some(callproof_schemas::Response {
                    status: 200,
                    body: Some(value.to_string()),
                    body_bytes: i64::try_from(body_bytes).unwrap_or(i64::MAX),
                    latency_micros: i64::try_from(latency.as_micros()).unwrap_or(i64::MAX),
                });
                completed.masking = findings;
                if self.modern {
                    value["resultType"] = json!("complete");
                } else if let Value::Object(object) = &mut value {
                    object.remove("resultType");
                }
                value["_meta"][CALL_ID_META] = json!(self.call.call_id);
                (completed, Ok(value))
            }
            Err(UpstreamError::JsonRpc(error)) => {
                let (message, mut findings) = {
                    let (masked, findings) = self.app.masker.mask_text(&error.message);
                    (
                        masked.into_owned(),
                        event_findings(findings, "/response/error/message"),
                    )
                };
                let mut data = error.data.clone();
                if let Some(data) = &mut data {
                    match mask(
                        &self.app,
                        data,
                        &tool.policy.mask_response,
                        tool.policy.detect,
                        "/response/error/data",
                    ) {
                        Ok(more) => findings.extend(more),
                        Err(_) => *data = json!("[REDACTED]"),
                    }
                }
                self.set_outcome(McpOutcome::JsonrpcError, Some(error.code.0));
                let mut failed = self.call.event(EventKind::CallFailed);
                failed.failure = Some(Failure {
                    code: "mcp_error".to_string(),
                    message: format!(
                        "upstream answered JSON-RPC error {}: {message}",
                        error.code.0
                    ),
                });
                failed.masking = findings;
                let mut rpc =
                    RpcError::new(StatusCode::OK, error.code.0, message).with_id(&self.id);
                if let Some(data) = data {
                    rpc = rpc.with_data(data);
                }
                (failed, Err(rpc))
            }
            Err(UpstreamError::Cancelled) => self.failed(
                McpOutcome::TransportError,
                "cancelled",
                "cancelled by the caller; the tool may or may not have run",
                jsonrpc::INTERNAL_ERROR,
            ),
            Err(error) => {
                mcp.clients.drop_connection(&self.owner, &self.server);
                self.transport_failure(&error, server)
            }
        }
    }

    fn transport_failure(
        &mut self,
        error: &UpstreamError,
        server: &Server,
    ) -> (CallEvent, Result<Value, RpcError>) {
        match error {
            UpstreamError::Timeout(_) => {
                let message = format!(
                    "MCP server {} did not answer within {} ms",
                    self.server,
                    server.call_timeout().as_millis()
                );
                self.failed(
                    McpOutcome::TransportError,
                    "upstream_timeout",
                    &message,
                    jsonrpc::UPSTREAM_TIMEOUT,
                )
            }
            UpstreamError::ResponseTooLarge(_) => self.failed(
                McpOutcome::TransportError,
                "response_too_large",
                &error.to_string(),
                jsonrpc::UPSTREAM_FAILED,
            ),
            UpstreamError::UnexpectedResult => self.failed(
                McpOutcome::TransportError,
                "upstream_bad_result",
                &error.to_string(),
                jsonrpc::UPSTREAM_FAILED,
            ),
            UpstreamError::Unreachable
            | UpstreamError::Handshake(_)
            | UpstreamError::Auth { .. } => {
                let message = format!("MCP server {} cannot be reached: {error}", self.server);
                self.failed(
                    McpOutcome::TransportError,
                    "upstream_unreachable",
                    &message,
                    jsonrpc::UPSTREAM_FAILED,
                )
            }
            _ => {
                let message = format!("MCP server {} failed: {error}", self.server);
                self.failed(
                    McpOutcome::TransportError,
                    "upstream_broken",
                    &message,
                    jsonrpc::UPSTREAM_FAILED,
                )
            }
        }
    }

    fn set_outcome(&mut self, outcome: McpOutcome, error_code: Option<i32>) {
        if let Some(mcp) = &mut self.call.mcp {
            mcp.outcome = Some(outcome);
            mcp.error_code = error_code;
        }
    }

    fn failed(
        &mut self,
        outcome: McpOutcome,
        code: &str,
        message: &str,
        rpc_code: i32,
    ) -> (CallEvent, Result<Value, RpcError>) {
        self.set_outcome(outcome, None);
        let mut failed = self.call.event(EventKind::CallFailed);
        failed.failure = Some(Failure {
            code: code.to_string(),
            message: message.to_string(),
        });
        let rpc = RpcError::new(StatusCode::OK, rpc_code, message)
            .with_id(&self.id)
            .with_data(json!({"callproof": {"code": code, "call_id": self.call.call_id}}));
        (failed, Err(rpc))
    }
}

/// Masks a tool result before the agent or the log sees it: `structuredContent` with the
/// response rules and the detectors; each text (and text resource) with the rules when it is
/// JSON, else the detectors; binary content passes unless response rules are set, since they
/// cannot be applied to it (then it is replaced, failing closed as functions refuse non-JSON).
fn mask_result(
    app: &AppState,
    rules: &FieldRules,
    detect: bool,
    result: &mut Value,
) -> Result<Vec<MaskingFinding>, String> {
    let mut findings = Vec::new();
    if let Some(structured) = result.get_mut("structuredContent") {
        findings.extend(
            mask(
                app,
                structured,
                rules,
                detect,
                "/response/body/structuredContent",
            )
            .map_err(|error| error.to_string())?,
        );
    }
    // The server's own metadata is free text too.
    if let Some(meta) = result.get_mut("_meta") {
        findings.extend(
            mask(
                app,
                meta,
                &FieldRules::default(),
                true,
                "/response/body/_meta",
            )
            .map_err(|error| error.to_string())?,
        );
    }
    let Some(content) = result.get_mut("content").and_then(Value::as_array_mut) else {
        return Ok(findings);
    };
    for (index, block) in content.iter_mut().enumerate() {
        let path = format!("/response/body/content/{index}");
        let kind = block
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match kind.as_str() {
            "text" => findings.extend(mask_text_field(app, rules, detect, block, "text", &path)?),
            "resource" => {
                if let Some(resource) = block.get_mut("resource") {
                    if resource.get("text").is_some() {
                        findings.extend(mask_text_field(
                            app,
                            rules,
                            detect,
                            resource,
                            "text",
                            &format!("{path}/resource"),
                        )?);
                    } else if resource.get("blob").is_some() && !rules.is_empty() {
                        *block = json!({"type": "text", "text": "[REDACTED:BINARY]"});
                    }
                }
            }
            "image" | "audio" if !rules.is_empty() => {
                *block = json!({"type": "text", "text": "[REDACTED:BINARY]"});
            }
            "resource_link" => {
                if let Some(uri) = block.get("uri").and_then(Value::as_str) {
                    let (masked, found) = app.masker.mask_text(uri);
                    let masked = masked.into_owned();
                    findings.extend(event_findings(found, &format!("{path}/uri")));
                    block["uri"] = json!(masked);
                }
            }
            _ => {}
        }
    }
    Ok(findings)
}

/// Masks `object[field]`, a string: as JSON with the rules when it parses, else as text.
fn mask_text_field(
    app: &AppState,
    rules: &FieldRules,
    detect: bool,
    object: &mut Value,
    field: &str,
    path: &str,
) -> Result<Vec<MaskingFinding>, String> {
    let Some(text) = object.get(field).and_then(Value::as_str) else {
        return Ok(Vec::new());
    };
    let path = format!("{path}/{field}");
    if let Ok(mut document) = serde_json::from_str::<Value>(text)
        && (document.is_object() || document.is_array())
    {
        let findings =
            mask(app, &mut document, rules, detect, &path).map_err(|error| error.to_string())?;
        object[field] = json!(document.to_string());
        return Ok(findings);
    }
    if !detect {
        return Ok(Vec::new());
    }
    let (masked, findings) = app.masker.mask_text(text);
    let masked = masked.into_owned();
    object[field] = json!(masked);
    Ok(event_findings(findings, &path))
}
