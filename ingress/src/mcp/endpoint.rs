//! `/mcp`: Streamable HTTP for both protocol eras on one endpoint.
//!
//! Checks, in order: `Origin` (403) → a token for this resource (401 with the metadata's
//! address) → `Accept` (406), `Content-Type` (415), size (413) → the JSON-RPC envelope → the era
//! (an `initialize`, or a session, is the legacy era; `_meta` with
//! `io.modelcontextprotocol/protocolVersion` = 2026-07-28 is the stateless one) and its rules →
//! the method. Every refusal from the token check on is recorded as `call_denied` before it is
//! answered; a refusal that cannot be recorded answers 503.

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use callproof_schemas::{EventKind, Failure, Principal, Request};
use serde_json::{Map, Value, json};

use super::jsonrpc::{self, Message, RpcError};
use super::sessions::session_hash;
use super::{MODERN_VERSION, Mcp, SUPPORTED_VERSIONS, call, catalog};
use crate::events::CallRecorder;
use crate::invoke::{PolicyState, refused_decision};
use crate::rules::CallFacts;
use crate::{AppState, CALL_ID_HEADER};

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
const METHOD_HEADER: &str = "mcp-method";
const NAME_HEADER: &str = "mcp-name";
const PARAM_HEADER_PREFIX: &str = "mcp-param-";
const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
/// Legacy revisions `initialize` can agree on, newest first.
const LEGACY_VERSIONS: [&str; 2] = ["2025-11-25", "2025-06-18"];

/// A request refused: what the agent is told, and what the evidence records.
pub struct Refusal {
    pub error: RpcError,
    /// `failure.code` of the `call_denied` event.
    pub code: &'static str,
    /// The reason recorded when it differs from what the agent is told (a hidden tool answers
    /// as unknown; the record says why).
    pub recorded: Option<String>,
    pub state: PolicyState,
    /// `WWW-Authenticate` of a 401.
    challenge: Option<String>,
}

impl Refusal {
    pub fn new(error: RpcError, code: &'static str) -> Refusal {
        Refusal {
            error,
            code,
            recorded: None,
            state: PolicyState::NotReached,
            challenge: None,
        }
    }

    pub fn recording(mut self, reason: String) -> Refusal {
        self.recorded = Some(reason);
        self
    }

    pub fn at(mut self, state: PolicyState) -> Refusal {
        self.state = state;
        self
    }
}

/// One POST being served: its call (for the events) and what is known of it so far.
pub struct Exchange {
    pub call: CallRecorder,
    pub request: Request,
    pub facts: callproof_schemas::Mcp,
    /// One of `ingress.max_in_flight`, held until the call's outcome is recorded (an SSE answer
    /// returns before that).
    pub permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Exchange {
    /// A new call for a request to `/mcp` with `method`; what it is for is learnt as it is read.
    pub fn new(app: &AppState, method: &str, headers: &HeaderMap) -> Exchange {
        let call_id = uuid::Uuid::now_v7().to_string();
        Exchange {
            call: CallRecorder::new(call_id, &app.instance_id, "mcp"),
            request: Request {
                method: method.to_string(),
                path: "/mcp".to_string(),
                body: None,
                body_bytes: 0,
                content_type: headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_string),
            },
            facts: callproof_schemas::Mcp::default(),
            permit: None,
        }
    }

    /// Records the refusal as `call_denied`, then answers it.
    pub async fn refuse(mut self, app: &AppState, refusal: Refusal) -> Response {
        let Refusal {
            error,
            code,
            recorded,
            state,
            challenge,
        } = refusal;
        let reason = recorded.unwrap_or_else(|| error.message.clone());
        metrics::counter!("callproof_mcp_requests_refused_total", "code" => code).increment(1);
        self.call.mcp = Some(self.facts);
        let mut denied = self.call.event(EventKind::CallDenied);
        denied.request = Some(self.request);
        denied.decision = Some(refused_decision(state, reason.clone()));
        denied.failure = Some(Failure {
            code: code.to_string(),
            message: reason,
        });
        let mut response = match app.events.publish(&[denied]).await {
            Ok(()) => error.into_response(),
            Err(_) => audit_unavailable(&error.id).into_response(),
        };
        let headers = response.headers_mut();
        if let Ok(call_id) = HeaderValue::from_str(&self.call.call_id) {
            headers.insert(CALL_ID_HEADER, call_id);
        }
        if let Some(challenge) = challenge.and_then(|value| HeaderValue::from_str(&value).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

pub fn audit_unavailable(id: &Value) -> RpcError {
    RpcError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        jsonrpc::AUDIT_UNAVAILABLE,
        "the audit log cannot record this request, so it was not carried out",
    )
    .with_id(id)
}

/// The request as the handlers below know it.
pub struct Context {
    pub principal: Principal,
    pub claims: Map<String, Value>,
    /// The stateless era (2026-07-28).
    pub modern: bool,
    /// The agent's session (legacy era).
    pub session: Option<String>,
    /// 2026-07-28 `Mcp-Param-{Name}` headers, by lowercase name, decoded (`None`: not decodable).
    pub param_headers: std::collections::HashMap<String, Option<String>>,
}

impl Context {
    /// Whose upstream connections a call uses: the agent's session, else the caller.
    pub fn owner(&self) -> String {
        match &self.session {
            Some(session) => format!("session:{session}"),
            None => format!("caller:{}", super::sessions::identity(&self.principal)),
        }
    }

    pub fn facts<'f>(&'f self, function: &'f str, arguments: Option<&'f Value>) -> CallFacts<'f> {
        CallFacts {
            principal: &self.principal,
            claims: &self.claims,
            function,
            arguments,
            now: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
        }
    }
}

pub async fn post(State(app): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let Some(mcp) = app.mcp.as_ref() else {
        return crate::ApiError::NotFound("no such endpoint".to_string()).into_response();
    };
    if let Some(forbidden) = refuse_origin(mcp, &headers) {
        return forbidden;
    }
    let mut exchange = Exchange::new(&app, "POST", &headers);
    let Ok(permit) = app.in_flight.clone().try_acquire_owned() else {
        let error = RpcError::new(
            StatusCode::TOO_MANY_REQUESTS,
            jsonrpc::TOO_MANY_REQUESTS,
            "too many calls in flight; retry later",
        );
        return exchange
            .refuse(&app, Refusal::new(error, "too_many_requests"))
            .await;
    };
    exchange.permit = Some(permit);
    let (token, principal) = match authenticate(&app, mcp, &headers).await {
        Ok(authenticated) => authenticated,
        Err(refusal) => return exchange.refuse(&app, refusal).await,
    };
    exchange.call.principal = Some(principal.clone());
    match serve(&app, mcp, &mut exchange, &headers, body, principal, &token).await {
        Ok(response) => response,
        Err(refusal) => exchange.refuse(&app, refusal).await,
    }
}

/// `GET /mcp` would open a stream for server-initiated messages; the gateway sends none
/// outside a request's own stream, which the specification allows to answer 405.
pub async fn get() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "POST, DELETE")],
    )
        .into_response()
}

/// `DELETE /mcp` ends the caller's session and its upstream sessions.
pub async fn delete(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some(mcp) = app.mcp.as_ref() else {
        return crate::ApiError::NotFound("no such endpoint".to_string()).into_response();
    };
    if let Some(forbidden) = refuse_origin(mcp, &headers) {
        return forbidden;
    }
    // Ending someone else's session, or with a bad token, is refused and recorded as a POST's
    // refusal is; ending one's own is not a call.
    let mut exchange = Exchange::new(&app, "DELETE", &headers);
    exchange.facts.method = "DELETE".to_string();
    let principal = match authenticate(&app, mcp, &headers).await {
        Ok((_, principal)) => principal,
        Err(refusal) => return exchange.refuse(&app, refusal).await,
    };
    exchange.call.principal = Some(principal.clone());
    let Some(session) = header_text(&headers, SESSION_HEADER) else {
        let error = RpcError::invalid_request("missing Mcp-Session-Id");
        return exchange
            .refuse(&app, Refusal::new(error, "mcp_session_required"))
            .await;
    };
    exchange.facts.session = Some(session_hash(session));
    if !mcp.sessions.end(session, &principal) {
        let refusal = Refusal::new(session_not_found(&Value::Null), "mcp_session_not_found");
        return exchange.refuse(&app, refusal).await;
    }
    mcp.clients
        .close_sessions(&[format!("session:{session}")])
        .await;
    tracing::debug!(session = %session_hash(session), "MCP session ended by the agent");
    StatusCode::NO_CONTENT.into_response()
}

/// DNS rebinding: a browser page must not reach the gateway through a name it controls.
#[allow(clippy::result_large_err)]
fn refuse_origin(mcp: &Mcp, headers: &HeaderMap) -> Option<Response> {
    let origin = headers.get(header::ORIGIN)?.to_str().unwrap_or("invalid");
    if mcp.allowed_origins.iter().any(|allowed| allowed == origin) {
        return None;
    }
    metrics::counter!("callproof_mcp_requests_refused_total", "code" => "origin_not_allowed")
        .increment(1);
    let error = RpcError::new(
        StatusCode::FORBIDDEN,
        jsonrpc::INVALID_REQUEST,
        "origin not allowed",
    );
    Some(error.into_response())
}

/// A token issued for this endpoint (its resource URI as audience), or 401 saying where the
/// metadata is (RFC 9728), or 503 when the issuer cannot be asked.
async fn authenticate(
    app: &AppState,
    mcp: &Mcp,
    headers: &HeaderMap,
) -> Result<(String, Principal), Refusal> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let verified = match callproof_oidc::bearer_token(authorization) {
        Ok(token) => app
            .authenticator
            .authenticate_for(token, std::slice::from_ref(&mcp.resource))
            .await
            .map(|principal| (token.to_string(), principal)),
        Err(error) => Err(error),
    };
    verified.map_err(|error| {
        if matches!(error, callproof_oidc::AuthError::IssuerUnavailable) {
            let error = RpcError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                jsonrpc::ISSUER_UNAVAILABLE,
                "the identity provider cannot be reached to verify the token; retry later",
            );
            return Refusal::new(error, "issuer_unavailable");
        }
        let sent_token = !matches!(error, callproof_oidc::AuthError::MissingToken);
        let mut challenge = format!(r#"Bearer resource_metadata="{}""#, mcp.metadata_url);
        if sent_token {
            challenge.push_str(r#", error="invalid_token""#);
        }
        if !mcp.scopes.is_empty() {
            challenge.push_str(&format!(r#", scope="{}""#, mcp.scopes.join(" ")));
        }
        let rpc = RpcError::new(
            StatusCode::UNAUTHORIZED,
            jsonrpc::INVALID_REQUEST,
            error.to_string(),
        );
        Refusal {
            challenge: Some(challenge),
            ..Refusal::new(rpc, "unauthenticated")
        }
    })
}

async fn serve(
    app: &Arc<AppState>,
    mcp: &Mcp,
    exchange: &mut Exchange,
    headers: &HeaderMap,
    body: Body,
    principal: Principal,
    token: &str,
) -> Result<Response, Refusal> {
    let accept = header_text(headers, header::ACCEPT.as_str()).unwrap_or("*/*");
    if ![
        "application/json",
        "text/event-stream",
        "*/*",
        "application/*",
    ]
    .iter()
    .any(|acceptable| accept.contains(acceptable))
    {
        let error = RpcError::new(
            StatusCode::NOT_ACCEPTABLE,
            jsonrpc::INVALID_REQUEST,
            "Accept must allow application/json and text/event-stream",
        );
        return Err(Refusal::new(error, "not_acceptable"));
    }
    let is_json = header_text(headers, header::CONTENT_TYPE.as_str())
        .is_some_and(|value| value.trim_start().starts_with("application/json"));
    if !is_json {
        let error = RpcError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            jsonrpc::INVALID_REQUEST,
            "Content-Type must be application/json",
        );
        return Err(Refusal::new(error, "unsupported_media_type"));
    }
    let limit = mcp.max_message_bytes;
    let too_large = || {
        let error = RpcError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            jsonrpc::INVALID_REQUEST,
            format!("message is larger than the {limit}-byte limit"),
        );
        Refusal::new(error, "payload_too_large")
    };
    let declared = header_text(headers, header::CONTENT_LENGTH.as_str())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let raw = to_bytes(body, limit).await.map_err(|_| too_large())?;
    exchange.request.body_bytes = i64::try_from(raw.len()).unwrap_or(i64::MAX);

    let message = jsonrpc::parse(&raw).map_err(|error| {
        let code = if error.code == jsonrpc::PARSE_ERROR {
            "invalid_json"
        } else {
            "mcp_invalid_request"
        };
        Refusal::new(error, code)
    })?;
    let (id, method, params) = match message {
        Message::Request { id, method, params } => (Some(id), method, params),
        Message::Notification { method, params } => (None, method, params),
        Message::Response => return Ok(StatusCode::ACCEPTED.into_response()),
    };
    exchange.facts.method = method.clone();
    exchange.facts.jsonrpc_id = id.as_ref().map(jsonrpc::id_text);
    let reply_id = id.clone().unwrap_or(Value::Null);
    let refuse = |error: RpcError, code: &'static str| Refusal::new(error.with_id(&reply_id), code);

    let params = params.unwrap_or_default();
    let meta = params.get("_meta").and_then(Value::as_object);
    let meta_version = meta.and_then(|meta| meta.get(META_VERSION));
    let header_version = header_text(headers, VERSION_HEADER);
    let modern = method != "initialize"
        && (meta_version.is_some() || header_version == Some(MODERN_VERSION));

    let claims = crate::rules::selected_claims(token, &app.policy_claims);
    let mut context = Context {
        principal,
        claims,
        modern,
        session: None,
        param_headers: headers
            .keys()
            .filter_map(|name| {
                let param = name.as_str().strip_prefix(PARAM_HEADER_PREFIX)?;
                let value = decoded_header(headers, name.as_str())?.ok();
                Some((param.to_string(), value))
            })
            .collect(),
    };
    if modern {
        let version = check_modern(headers, &method, &params, meta, header_version)
            .map_err(|(error, code)| refuse(error, code))?;
        exchange.facts.protocol_version = Some(version);
        exchange.facts.client = meta
            .and_then(|meta| meta.get("io.modelcontextprotocol/clientInfo"))
            .and_then(client_text);
    } else if method != "initialize" {
        let Some(session) = header_text(headers, SESSION_HEADER) else {
            let error = RpcError::invalid_request(
                "missing Mcp-Session-Id: send initialize first, or use protocol 2026-07-28",
            );
            return Err(refuse(error, "mcp_session_required"));
        };
        exchange.facts.session = Some(session_hash(session));
        let Some((version, client)) = mcp.sessions.touch(session, &context.principal) else {
            return Err(refuse(
                session_not_found(&reply_id),
                "mcp_session_not_found",
            ));
        };
        if let Some(sent) = header_version
            && sent != version
        {
            let error = RpcError::invalid_request(format!(
                "MCP-Protocol-Version {sent} is not this session's version {version}"
            ));
            return Err(refuse(error, "mcp_unsupported_version"));
        }
        exchange.facts.protocol_version = Some(version);
        exchange.facts.client = client;
        context.session = Some(session.to_string());
    }

    let Some(id) = id else {
        // Notifications: nothing to answer, nothing recorded as a call.
        if method == "notifications/cancelled"
            && let Some(session) = &context.session
            && let Some(request) = params.get("requestId")
        {
            mcp.sessions.cancel(session, &jsonrpc::id_text(request));
        }
        return Ok(StatusCode::ACCEPTED.into_response());
    };

    let answer = |result: Value| -> Response { json_answer(&id, result) };
    match (method.as_str(), modern) {
        ("initialize", _) => {
            let requested = params.get("protocolVersion").and_then(Value::as_str);
            let version = requested
                .filter(|version| LEGACY_VERSIONS.contains(version))
                .unwrap_or(LEGACY_VERSIONS[0]);
            let client = params.get("clientInfo").and_then(client_text);
            exchange.facts.protocol_version = Some(version.to_string());
            exchange.facts.client = client.clone();
            let (session, evicted) = mcp.sessions.open(&context.principal, version, client);
            if let Some(evicted) = evicted {
                mcp.clients
                    .close_sessions(&[format!("session:{evicted}")])
                    .await;
            }
            let mut result = json!({
                "protocolVersion": version,
                "capabilities": {"tools": {"listChanged": false}},
                "serverInfo": server_info(),
            });
            if let Some(instructions) = &mcp.instructions {
                result["instructions"] = json!(instructions);
            }
            let mut response = answer(result);
            if let Ok(value) = HeaderValue::from_str(&session) {
                response.headers_mut().insert(SESSION_HEADER, value);
            }
            Ok(response)
        }
        ("ping", false) => Ok(answer(json!({}))),
        ("server/discover", true) => {
            let mut result = json!({
                "resultType": "complete",
                "supportedVersions": SUPPORTED_VERSIONS,
                "capabilities": {"tools": {"listChanged": false}},
                "ttlMs": 300_000,
                "cacheScope": "public",
                "_meta": {META_SERVER_INFO: server_info()},
            });
            if let Some(instructions) = &mcp.instructions {
                result["instructions"] = json!(instructions);
            }
            Ok(answer(result))
        }
        ("tools/list", _) => {
            let result = list_tools(mcp, &context, &params)
                .await
                .map_err(|error| refuse(error, "mcp_invalid_params"))?;
            Ok(answer(result))
        }
        ("tools/call", _) => call::call_tool(app, mcp, exchange, &context, &id, params).await,
        (other, _) => {
            // The stateless era answers an unknown method with 404 (no sessions to confuse it
            // with); the legacy era in the body alone.
            let status = if modern {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::OK
            };
            let error = RpcError::new(
                status,
                jsonrpc::METHOD_NOT_FOUND,
                format!("method not found: {other}"),
            );
            Err(refuse(error, "mcp_method_not_found"))
        }
    }
}

/// The 2026-07-28 rules: the version in `_meta` and in the header agree and are supported,
/// `_meta` names the client's capabilities, and `Mcp-Method` / `Mcp-Name` repeat the body.
/// Returns the version.
fn check_modern(
    headers: &HeaderMap,
    method: &str,
    params: &Map<String, Value>,
    meta: Option<&Map<String, Value>>,
    header_version: Option<&str>,
) -> Result<String, (RpcError, &'static str)> {
    let mismatch = |message: String| (RpcError::header_mismatch(message), "mcp_header_mismatch");
    let Some(version) = meta
        .and_then(|meta| meta.get(META_VERSION))
        .and_then(Value::as_str)
    else {
        let error = RpcError::new(
            StatusCode::BAD_REQUEST,
            jsonrpc::INVALID_PARAMS,
            format!("_meta must carry {META_VERSION}"),
        );
        return Err((error, "mcp_invalid_params"));
    };
    if version != MODERN_VERSION {
        let error = RpcError::new(
            StatusCode::BAD_REQUEST,
            jsonrpc::UNSUPPORTED_PROTOCOL_VERSION,
            format!("protocol version {version} is not supported without initialize"),
        )
        .with_data(json!({"supported": SUPPORTED_VERSIONS, "requested": version}));
        return Err((error, "mcp_unsupported_version"));
    }
    match header_version {
        Some(sent) if sent == version => {}
        Some(sent) => {
            return Err(mismatch(format!(
                "MCP-Protocol-Version {sent} does not match _meta's {version}"
            )));
        }
        None => return Err(mismatch("MCP-Protocol-Version is required".to_string())),
    }
    if meta.is_none_or(|meta| !meta.get(META_CAPABILITIES).is_some_and(Value::is_object)) {
        let error = RpcError::new(
            StatusCode::BAD_REQUEST,
            jsonrpc::INVALID_PARAMS,
            format!("_meta must carry {META_CAPABILITIES}"),
        );
        return Err((error, "mcp_invalid_params"));
    }
    match decoded_header(headers, METHOD_HEADER) {
        Some(Ok(sent)) if sent == method => {}
        Some(Ok(sent)) => {
            return Err(mismatch(format!(
                "Mcp-Method {sent} does not match the body's method {method}"
            )));
        }
        Some(Err(())) => return Err(mismatch("Mcp-Method is not valid".to_string())),
        None => return Err(mismatch("Mcp-Method is required".to_string())),
    }
    if matches!(method, "tools/call" | "resources/read" | "prompts/get") {
        let named = params
            .get("name")
            .or_else(|| params.get("uri"))
            .and_then(Value::as_str);
        match (decoded_header(headers, NAME_HEADER), named) {
            (Some(Ok(sent)), Some(named)) if sent == named => {}
            (None, _) => return Err(mismatch("Mcp-Name is required".to_string())),
            (Some(Err(())), _) => return Err(mismatch("Mcp-Name is not valid".to_string())),
            (Some(Ok(sent)), named) => {
                return Err(mismatch(format!(
                    "Mcp-Name {sent} does not match the body's {}",
                    named.unwrap_or("(none)")
                )));
            }
        }
    }
    Ok(version.to_string())
}

/// A header's value, decoded from `=?base64?…?=` when a client had to encode it.
fn decoded_header(headers: &HeaderMap, name: &str) -> Option<Result<String, ()>> {
    let raw = headers.get(name)?.to_str().map_err(|_| ());
    Some(raw.and_then(|raw| {
        match raw
            .strip_prefix("=?base64?")
            .and_then(|rest| rest.strip_suffix("?="))
        {
            Some(encoded) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or(()),
            None => Ok(raw.to_string()),
        }
    }))
}

async fn list_tools(
    mcp: &Mcp,
    context: &Context,
    params: &Map<String, Value>,
) -> Result<Value, RpcError> {
    let after = match params.get("cursor") {
        None | Some(Value::Null) => None,
        Some(Value::String(cursor)) => Some(
            catalog::decode_cursor(cursor)
                .ok_or_else(|| RpcError::invalid_params("invalid cursor"))?,
        ),
        Some(_) => return Err(RpcError::invalid_params("invalid cursor")),
    };
    let mut visible = Vec::new();
    let mut ttl_left = mcp.catalog_ttl;
    for server in mcp.servers.values() {
        let tools = match server.tools(mcp.catalog_ttl).await {
            Ok(tools) => tools,
            Err(error) => {
                // The other servers' tools are still offered; this one's come back once it can
                // be listed again.
                tracing::warn!(server = %server.name, %error, "cannot list the tools of an upstream MCP server");
                continue;
            }
        };
        ttl_left = ttl_left.min(server.ttl_left(mcp.catalog_ttl).await);
        for tool in tools.iter() {
            let Some(name) = catalog::exposed_name(&server.name, &tool.name) else {
                continue;
            };
            let Some(tool_policy) = server.policy_of(&tool.name) else {
                continue;
            };
            let function = format!("mcp:{name}");
            // A rule over the arguments cannot be decided yet: the tool is shown, and the call
            // decides.
            let shown = tool_policy
                .policy
                .decide(&context.facts(&function, None))
                .is_none_or(|decision| decision.allowed);
            if shown {
                let mut listed = serde_json::to_value(tool).unwrap_or(Value::Null);
                listed["name"] = Value::String(name.clone());
                visible.push((name, listed));
            }
        }
    }
    visible.sort_by(|a, b| a.0.cmp(&b.0));
    let start = after.map_or(0, |after| {
        visible.partition_point(|(name, _)| *name <= after)
    });
    let page: Vec<(String, Value)> = visible
        .iter()
        .skip(start)
        .take(mcp.list_page_size)
        .cloned()
        .collect();
    let more = start + page.len() < visible.len();
    let next_cursor = more
        .then(|| page.last().map(|(name, _)| catalog::encode_cursor(name)))
        .flatten();
    let mut result = json!({"tools": page.into_iter().map(|(_, tool)| tool).collect::<Vec<_>>()});
    if let Some(cursor) = next_cursor {
        result["nextCursor"] = json!(cursor);
    }
    if context.modern {
        result["resultType"] = json!("complete");
        result["ttlMs"] = json!(u64::try_from(ttl_left.as_millis()).unwrap_or(u64::MAX));
        // The list depends on who asks.
        result["cacheScope"] = json!("private");
    }
    Ok(result)
}

fn session_not_found(id: &Value) -> RpcError {
    RpcError::new(
        StatusCode::NOT_FOUND,
        jsonrpc::INVALID_REQUEST,
        "session not found",
    )
    .with_id(id)
}

fn server_info() -> Value {
    json!({"name": "callproof", "version": env!("CARGO_PKG_VERSION")})
}

fn client_text(info: &Value) -> Option<String> {
    let name = info.get("name")?.as_str()?;
    let version = info.get("version").and_then(Value::as_str).unwrap_or("");
    let text: String = format!("{name}/{version}").chars().take(128).collect();
    Some(text)
}

fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

pub fn json_answer(id: &Value, result: Value) -> Response {
    axum::Json(jsonrpc::result(id, result)).into_response()
}
