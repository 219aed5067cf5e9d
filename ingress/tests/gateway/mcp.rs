//! `/mcp`: the gateway as an MCP server in front of a real upstream (the official Python SDK 2.x,
//! `tests/mcp/upstream.py`), spoken to with plain HTTP so that every header and every byte of
//! the protocol is the test's own: the legacy handshake and sessions, the stateless 2026-07-28
//! revision, per-caller tool lists, masking both ways, the events of each call, and the
//! JSON-RPC error (and recorded denial) of each kind of bad request.

use base64::Engine;
use callproof_schemas::{CallEvent, EventKind, McpOutcome};
use callproof_tests::mcp_upstream::{McpUpstream, Sdk};
use serde_json::{Value, json};

use crate::harness::{Answer, Harness, UPSTREAM_TOKEN, answer, kinds};

const RESOURCE: &str = "https://gateway.test/mcp";
const MODERN: &str = "2026-07-28";
const CARD: &str = "4111 1111 1111 1111";
const EMAIL: &str = "jane.doe@example.com";
/// What alice (group support) is offered: every tool of the upstream but carol's `whoami`.
const ALICES_TOOLS: [&str; 6] = [
    "crm__boom",
    "crm__echo",
    "crm__fail",
    "crm__get_customer",
    "crm__route",
    "crm__slow",
];

struct Gateway {
    harness: Harness,
    upstream: McpUpstream,
}

async fn start() -> Gateway {
    start_on(callproof_tests::broker::bootstrap()).await
}

async fn start_on(brokers: String) -> Gateway {
    let upstream = McpUpstream::start(Sdk::V2, Some(2)).unwrap_or_else(|error| panic!("{error:#}"));
    start_with(brokers, upstream).await
}

async fn start_with(brokers: String, upstream: McpUpstream) -> Gateway {
    let tables = format!(
        r#"
[mcp]
resource = "{RESOURCE}"
list_page_size = 3
hold_wait_secs = 3
hold_progress_secs = 1

[mcp.servers.crm]
url = "{url}"
credential = {{ kind = "bearer", token = "${{UPSTREAM_TOKEN}}" }}
[mcp.servers.crm.default.policy]
allow_groups = ["support"]
[mcp.servers.crm.tools.get_customer.policy]
allow_groups = ["support"]
mask_request = ["/ssn"]
mask_response = ["card_number"]
[mcp.servers.crm.tools.echo.policy]
allow_groups = ["support"]
[mcp.servers.crm.tools.echo.approval]
condition = 'has(args.amount) && args.amount > 1000'
approver_groups = ["treasury"]
[mcp.servers.crm.tools.whoami.policy]
allow_subjects = ["carol"]
# The test reads the credential the upstream saw; the detectors would mask it.
detect = false
"#,
        url = upstream.url
    );
    Gateway {
        harness: Harness::start_on_with_tables(brokers, &tables).await,
        upstream,
    }
}

/// A token for `/mcp`: its audience is the gateway's resource URI.
fn token(gateway: &Gateway, subject: &str, groups: &[&str]) -> String {
    let issuer = &gateway.harness.issuer;
    let mut claims = issuer.claims(subject, groups);
    claims["aud"] = json!(RESOURCE);
    callproof_tests::issuer::sign(&issuer.key(jsonwebtoken::Algorithm::ES256), &claims)
}

/// An agent speaking to `/mcp` over plain HTTP.
struct Agent<'g> {
    gateway: &'g Gateway,
    token: String,
    session: Option<String>,
    /// `MCP-Protocol-Version` sent with the session.
    version: &'static str,
    next_id: u64,
}

impl<'g> Agent<'g> {
    fn new(gateway: &'g Gateway, subject: &str, groups: &[&str]) -> Agent<'g> {
        Agent {
            gateway,
            token: token(gateway, subject, groups),
            session: None,
            version: "2025-11-25",
            next_id: 1,
        }
    }

    fn request(&self, body: &Value) -> reqwest::RequestBuilder {
        let mut request = self
            .gateway
            .harness
            .client
            .post(format!("{}/mcp", self.gateway.harness.url))
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .bearer_auth(&self.token)
            .body(body.to_string());
        if let Some(session) = &self.session {
            request = request
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", self.version);
        }
        request
    }

    async fn send(&mut self, method: &str, params: Value) -> Answer {
        let id = self.next_id;
        self.next_id += 1;
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        read(self.request(&body)).await
    }

    /// The legacy handshake: `initialize`, then `notifications/initialized`.
    async fn initialize(&mut self) -> Answer {
        let answer = self
            .send(
                "initialize",
                json!({"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "test-agent", "version": "1.0"}}),
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        self.session = answer
            .headers
            .get("mcp-session-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        assert!(
            self.session.is_some(),
            "no session id: {:?}",
            answer.headers
        );
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let acknowledged = read(self.request(&initialized)).await;
        assert_eq!(acknowledged.status, 202, "{}", acknowledged.text);
        answer
    }

    /// A 2026-07-28 request: `_meta` and the headers that repeat the body.
    async fn send_modern(&mut self, method: &str, mut params: Value) -> Answer {
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "modern-agent", "version": "2.0"},
        });
        let id = self.next_id;
        self.next_id += 1;
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let mut request = self
            .request(&body)
            .header("mcp-protocol-version", MODERN)
            .header("mcp-method", method);
        if let Some(name) = body["params"]["name"].as_str() {
            request = request.header("mcp-name", name);
        }
        read(request).await
    }

    /// Every tool name this agent is offered, following cursors.
    async fn tool_names(&mut self) -> Vec<String> {
        let mut names = Vec::new();
        let mut cursor = Value::Null;
        for _ in 0..10 {
            let params = if cursor.is_null() {
                json!({})
            } else {
                json!({"cursor": cursor})
            };
            let page = self.send("tools/list", params).await;
            assert_eq!(page.status, 200, "{}", page.text);
            let tools = page.body["result"]["tools"].as_array().unwrap().clone();
            assert!(tools.len() <= 3, "page size is 3: {}", page.text);
            names.extend(
                tools
                    .iter()
                    .map(|tool| tool["name"].as_str().unwrap().to_string()),
            );
            cursor = page.body["result"]["nextCursor"].clone();
            if cursor.is_null() {
                return names;
            }
        }
        panic!("more pages than tools");
    }
}

/// Reads an answer, JSON or SSE (the last `data:` line is the response).
async fn read(request: reqwest::RequestBuilder) -> Answer {
    let mut answer = answer(request).await;
    let is_sse = answer
        .headers
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/event-stream"));
    if is_sse {
        let messages: Vec<Value> = answer
            .text
            .lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .filter_map(|data| serde_json::from_str(data.trim()).ok())
            .collect();
        answer.body = messages.last().cloned().unwrap_or(Value::Null);
    }
    answer
}

fn call_id(answer: &Answer) -> &str {
    answer
        .call_id
        .as_deref()
        .unwrap_or_else(|| panic!("no call id: {:?} {}", answer.headers, answer.text))
}

fn one_denial(gateway: &Gateway, answer: &Answer) -> CallEvent {
    let events = gateway.harness.events_of(call_id(answer), 1);
    assert_eq!(kinds(&events), [EventKind::CallDenied], "{}", answer.text);
    events.into_iter().next().unwrap()
}

#[tokio::test]
async fn a_legacy_agent_sees_only_its_tools_and_calls_them_masked_both_ways() {
    let gateway = start().await;
    let mut alice = Agent::new(&gateway, "alice", &["support"]);
    let initialized = alice.initialize().await;
    assert_eq!(initialized.body["result"]["protocolVersion"], "2025-11-25");
    assert_eq!(
        initialized.body["result"]["serverInfo"]["name"],
        "callproof"
    );

    // whoami is carol's only: alice is never offered it.
    let names = alice.tool_names().await;
    assert_eq!(names, ALICES_TOOLS);

    let answer = alice
        .send(
            "tools/call",
            json!({"name": "crm__get_customer", "arguments": {"customer_id": "c-42", "ssn": "123-45-6789"}}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let result = &answer.body["result"];
    assert_ne!(result["isError"], true, "{}", answer.text);
    assert!(
        !answer.text.contains(CARD),
        "card number reached the agent: {}",
        answer.text
    );
    assert!(
        !answer.text.contains(EMAIL),
        "e-mail reached the agent: {}",
        answer.text
    );
    assert!(answer.text.contains("Jane Doe"), "{}", answer.text);
    assert!(
        result.get("resultType").is_none(),
        "a legacy answer has no resultType"
    );
    let call = call_id(&answer).to_string();
    assert_eq!(result["_meta"]["dev.callproof/call_id"], json!(call));

    let events = gateway.harness.events_of(&call, 3);
    assert_eq!(
        kinds(&events),
        [
            EventKind::CallReceived,
            EventKind::CallForwarded,
            EventKind::CallCompleted
        ]
    );
    for event in &events {
        assert_eq!(event.function, "mcp:crm__get_customer");
        let mcp = event.mcp.as_ref().expect("mcp facts on every event");
        assert_eq!(mcp.method, "tools/call");
        assert_eq!(mcp.server.as_deref(), Some("crm"));
        assert_eq!(mcp.tool.as_deref(), Some("get_customer"));
        assert_eq!(mcp.protocol_version.as_deref(), Some("2025-11-25"));
        assert_eq!(mcp.client.as_deref(), Some("test-agent/1.0"));
        let session = mcp.session.as_deref().unwrap();
        assert_eq!(session.len(), 16);
        assert!(!alice.session.as_deref().unwrap().contains(session));
        assert_eq!(event.principal.as_ref().unwrap().subject, "alice");
    }
    let request_body = events[0].request.as_ref().unwrap().body.as_deref().unwrap();
    assert!(!request_body.contains("123-45-6789"), "{request_body}");
    assert!(request_body.contains("[REDACTED"), "{request_body}");
    let completed = &events[2];
    assert_eq!(
        completed.mcp.as_ref().unwrap().outcome,
        Some(McpOutcome::Result)
    );
    let recorded = completed
        .response
        .as_ref()
        .unwrap()
        .body
        .as_deref()
        .unwrap();
    assert!(
        !recorded.contains(CARD) && !recorded.contains(EMAIL),
        "{recorded}"
    );
    assert!(
        completed
            .masking
            .iter()
            .any(|finding| finding.path.starts_with("/response/body/structuredContent")),
        "{:?}",
        completed.masking
    );

    // The upstream sees the gateway's credential, never the agent's token.
    let mut carol = Agent::new(&gateway, "carol", &[]);
    carol.initialize().await;
    assert_eq!(carol.tool_names().await, ["crm__whoami"]);
    let whoami = carol
        .send("tools/call", json!({"name": "crm__whoami"}))
        .await;
    assert_eq!(whoami.status, 200, "{}", whoami.text);
    assert!(whoami.text.contains(UPSTREAM_TOKEN), "{}", whoami.text);
    assert!(
        !whoami.text.contains(&carol.token),
        "the agent's token went upstream"
    );

    // Ending the session: it is gone for good.
    let ended = gateway
        .harness
        .client
        .delete(format!("{}/mcp", gateway.harness.url))
        .bearer_auth(&alice.token)
        .header("mcp-session-id", alice.session.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), 204);
    let after = alice.send("tools/list", json!({})).await;
    assert_eq!(after.status, 404, "{}", after.text);
    // Ending another caller's session is refused, and recorded.
    let foreign = read(
        gateway
            .harness
            .client
            .delete(format!("{}/mcp", gateway.harness.url))
            .bearer_auth(&alice.token)
            .header("mcp-session-id", carol.session.clone().unwrap()),
    )
    .await;
    assert_eq!(foreign.status, 404, "{}", foreign.text);
    assert_eq!(
        one_denial(&gateway, &foreign).failure.unwrap().code,
        "mcp_session_not_found"
    );
    assert_eq!(
        carol.tool_names().await,
        ["crm__whoami"],
        "carol's session was ended"
    );
}

#[tokio::test]
async fn tool_errors_and_upstream_errors_are_answered_and_recorded_apart() {
    let gateway = start().await;
    let mut alice = Agent::new(&gateway, "alice", &["support"]);
    alice.initialize().await;

    let failed = alice.send("tools/call", json!({"name": "crm__fail"})).await;
    assert_eq!(failed.body["result"]["isError"], true, "{}", failed.text);
    let events = gateway.harness.events_of(call_id(&failed), 3);
    assert_eq!(events[2].kind, EventKind::CallCompleted, "{events:#?}");
    assert_eq!(
        events[2].mcp.as_ref().unwrap().outcome,
        Some(McpOutcome::ToolError),
        "{events:#?}"
    );

    let boom = alice.send("tools/call", json!({"name": "crm__boom"})).await;
    let code = boom.body["error"]["code"].as_i64();
    assert!(code.is_some(), "{}", boom.text);
    let events = gateway.harness.events_of(call_id(&boom), 3);
    assert_eq!(events[2].kind, EventKind::CallFailed);
    let mcp = events[2].mcp.as_ref().unwrap();
    assert_eq!(mcp.outcome, Some(McpOutcome::JsonrpcError));
    assert_eq!(mcp.error_code.map(i64::from), code);
    assert_eq!(events[2].failure.as_ref().unwrap().code, "mcp_error");
}

#[tokio::test]
async fn a_hidden_tool_answers_as_an_unknown_one_and_the_record_says_why() {
    let gateway = start().await;
    let mut alice = Agent::new(&gateway, "alice", &["support"]);
    alice.initialize().await;
    let hidden = alice
        .send("tools/call", json!({"name": "crm__whoami"}))
        .await;
    let unknown = alice.send("tools/call", json!({"name": "crm__nope"})).await;
    for (answer, name) in [(&hidden, "crm__whoami"), (&unknown, "crm__nope")] {
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body["error"]["code"], -32602, "{}", answer.text);
        assert_eq!(
            answer.body["error"]["message"],
            format!("Unknown tool: {name}")
        );
    }
    let hidden_reason = one_denial(&gateway, &hidden).decision.unwrap().reason;
    assert!(hidden_reason.contains("alice"), "{hidden_reason}");
    let unknown_reason = one_denial(&gateway, &unknown).decision.unwrap().reason;
    assert!(
        unknown_reason.contains("has no tool nope"),
        "{unknown_reason}"
    );
}

#[tokio::test]
async fn the_stateless_revision_is_served_with_its_headers_checked() {
    let gateway = start().await;
    let mut agent = Agent::new(&gateway, "alice", &["support"]);
    let discovered = agent.send_modern("server/discover", json!({})).await;
    assert_eq!(discovered.status, 200, "{}", discovered.text);
    assert!(
        discovered.body["result"]["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!(MODERN))
    );
    let listed = agent.send_modern("tools/list", json!({})).await;
    assert_eq!(
        listed.body["result"]["resultType"], "complete",
        "{}",
        listed.text
    );
    assert_eq!(listed.body["result"]["cacheScope"], "private");
    assert!(listed.body["result"]["ttlMs"].is_u64());
    let called = agent
        .send_modern(
            "tools/call",
            json!({"name": "crm__echo", "arguments": {"message": "hi"}}),
        )
        .await;
    assert_eq!(called.status, 200, "{}", called.text);
    assert_eq!(
        called.body["result"]["resultType"], "complete",
        "{}",
        called.text
    );
    assert!(called.text.contains("hi"));
    let events = gateway.harness.events_of(call_id(&called), 3);
    let mcp = events[0].mcp.as_ref().unwrap();
    assert_eq!(mcp.protocol_version.as_deref(), Some(MODERN));
    assert_eq!(mcp.session, None);
    assert_eq!(mcp.client.as_deref(), Some("modern-agent/2.0"));

    // A name header the client had to encode is decoded before it is compared.
    let body = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {
        "name": "crm__echo", "arguments": {"message": "b64"},
        "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                  "io.modelcontextprotocol/clientCapabilities": {}}}});
    let encoded = format!(
        "=?base64?{}?=",
        base64::engine::general_purpose::STANDARD.encode("crm__echo")
    );
    let modern = |name: &str| {
        agent
            .request(&body)
            .header("mcp-protocol-version", MODERN)
            .header("mcp-method", "tools/call")
            .header("mcp-name", name.to_string())
    };
    let accepted = read(modern(&encoded)).await;
    assert_eq!(accepted.status, 200, "{}", accepted.text);
    let mismatch = read(modern("crm__fail")).await;
    assert_eq!(mismatch.status, 400, "{}", mismatch.text);
    assert_eq!(mismatch.body["error"]["code"], -32020);
    assert_eq!(
        one_denial(&gateway, &mismatch).failure.unwrap().code,
        "mcp_header_mismatch"
    );
}

#[tokio::test]
async fn bad_requests_get_the_error_the_specification_names_and_a_recorded_denial() {
    let gateway = start().await;
    let mut alice = Agent::new(&gateway, "alice", &["support"]);
    alice.initialize().await;
    let session = alice.session.clone().unwrap();
    let mut bob = Agent::new(&gateway, "bob", &["support"]);
    bob.session = Some(session.clone());
    let mut stale = Agent::new(&gateway, "alice", &["support"]);
    stale.session = Some(session.clone());
    stale.version = "2025-06-18";
    let stateless = Agent::new(&gateway, "alice", &["support"]);
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let modern_meta = json!({"io.modelcontextprotocol/protocolVersion": MODERN,
                             "io.modelcontextprotocol/clientCapabilities": {}});
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, i64, &str)> = vec![
        ("not JSON", alice.request(&json!(null)).body("{nope"), 400, -32700, "invalid_json"),
        ("a batch", alice.request(&json!([ping])), 400, -32600, "mcp_invalid_request"),
        ("unknown method", alice.request(&json!({"jsonrpc": "2.0", "id": 2, "method": "resources/list"})), 200, -32601, "mcp_method_not_found"),
        ("no session", Agent::new(&gateway, "alice", &["support"]).request(&ping), 400, -32600, "mcp_session_required"),
        ("another caller's session", bob.request(&ping), 404, -32600, "mcp_session_not_found"),
        (
            "wrong version header",
            stale.request(&ping),
            400, -32600, "mcp_unsupported_version",
        ),
        (
            "unsupported stateless version",
            stateless.request(&json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {"_meta": {
                "io.modelcontextprotocol/protocolVersion": "2099-01-01",
                "io.modelcontextprotocol/clientCapabilities": {}}}})),
            400, -32022, "mcp_unsupported_version",
        ),
        (
            "method header disagrees with the body",
            stateless
                .request(&json!({"jsonrpc": "2.0", "id": 4, "method": "tools/list", "params": {"_meta": modern_meta}}))
                .header("mcp-protocol-version", MODERN)
                .header("mcp-method", "tools/call"),
            400, -32020, "mcp_header_mismatch",
        ),
        (
            "unknown method, stateless",
            stateless
                .request(&json!({"jsonrpc": "2.0", "id": 5, "method": "ping", "params": {"_meta": modern_meta}}))
                .header("mcp-protocol-version", MODERN)
                .header("mcp-method", "ping"),
            404, -32601, "mcp_method_not_found",
        ),
        (
            "oversized message",
            alice.request(&json!({"jsonrpc": "2.0", "id": 6, "method": "ping", "params": {"pad": "x".repeat(70_000)}})),
            413, -32600, "payload_too_large",
        ),
        (
            "not JSON content",
            gateway
                .harness
                .client
                .post(format!("{}/mcp", gateway.harness.url))
                .bearer_auth(&alice.token)
                .header("content-type", "text/plain")
                .body(ping.to_string()),
            415, -32600, "unsupported_media_type",
        ),
        ("bad arguments", alice.request(&json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "crm__echo", "arguments": [1]}})), 200, -32602, "mcp_invalid_params"),
    ];
    for (what, request, status, code, recorded) in cases {
        let answer = read(request).await;
        assert_eq!(answer.status, status, "{what}: {}", answer.text);
        assert_eq!(
            answer.body["error"]["code"], code,
            "{what}: {}",
            answer.text
        );
        let denied = one_denial(&gateway, &answer);
        assert_eq!(denied.failure.unwrap().code, recorded, "{what}");
        assert!(!denied.decision.unwrap().allowed, "{what}");
    }
}

#[tokio::test]
async fn the_endpoint_is_an_oauth_protected_resource() {
    let gateway = start().await;
    let metadata: Value = gateway
        .harness
        .client
        .get(format!(
            "{}/.well-known/oauth-protected-resource/mcp",
            gateway.harness.url
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["resource"], RESOURCE);
    assert_eq!(
        metadata["authorization_servers"],
        json!([gateway.harness.issuer.url])
    );

    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let anonymous = gateway
        .harness
        .client
        .post(format!("{}/mcp", gateway.harness.url))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(ping.to_string());
    // A token for the HTTP API (audience `callproof`) is not a token for this resource.
    let mut other_audience = Agent::new(&gateway, "alice", &["support"]);
    other_audience.token = gateway.harness.issuer.token("alice", &["support"]);
    for (request, invalid_token) in [(anonymous, false), (other_audience.request(&ping), true)] {
        let answer = read(request).await;
        assert_eq!(answer.status, 401, "{}", answer.text);
        let challenge = answer.headers["www-authenticate"].to_str().unwrap();
        // RFC 9728: the well-known path goes between the resource's host and its path.
        assert!(
            challenge.contains(
                r#"resource_metadata="https://gateway.test/.well-known/oauth-protected-resource/mcp""#
            ),
            "{challenge}"
        );
        assert_eq!(
            challenge.contains(r#"error="invalid_token""#),
            invalid_token,
            "{challenge}"
        );
        let denied = one_denial(&gateway, &answer);
        assert_eq!(denied.failure.unwrap().code, "unauthenticated");
    }

    let foreign = read(
        Agent::new(&gateway, "alice", &["support"])
            .request(&ping)
            .header("origin", "https://evil.example"),
    )
    .await;
    assert_eq!(foreign.status, 403, "{}", foreign.text);
}

#[tokio::test]
async fn progress_reaches_the_agent_that_asked_for_it() {
    let gateway = start().await;
    let mut alice = Agent::new(&gateway, "alice", &["support"]);
    alice.initialize().await;
    let body = json!({"jsonrpc": "2.0", "id": 41, "method": "tools/call", "params": {
        "name": "crm__slow", "arguments": {"steps": 3, "interval_ms": 20},
        "_meta": {"progressToken": "tok-1"}}});
    let answer = read(alice.request(&body)).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let progress: Vec<Value> = answer
        .text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
        .filter(|message| message["method"] == "notifications/progress")
        .collect();
    assert!(!progress.is_empty(), "{}", answer.text);
    assert!(
        progress
            .iter()
            .all(|message| message["params"]["progressToken"] == "tok-1")
    );
    assert_eq!(answer.body["id"], 41, "{}", answer.text);
    assert!(answer.body["result"].is_object(), "{}", answer.text);
}

/// Runs `tests/mcp/agent.py` under an SDK's virtualenv against the gateway.
async fn sdk_agent(gateway: &Gateway, sdk: Sdk, mode: &str, token: &str) -> Value {
    run_agent(gateway, sdk, "agent.py", &["--mode", mode], token).await
}

/// Runs an agent script of `tests/mcp/` and reads the JSON it prints.
async fn run_agent(gateway: &Gateway, sdk: Sdk, script: &str, args: &[&str], token: &str) -> Value {
    let mode = args.join(" ");
    let script = callproof_tests::workspace_root()
        .join("tests/mcp")
        .join(script);
    let output = tokio::process::Command::new(sdk.python())
        .arg(&script)
        .args(["--url", &format!("{}/mcp", gateway.harness.url)])
        .args(["--token", token])
        .args(args)
        .output()
        .await
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", script.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "SDK {} agent ({mode}) failed: {}\n{stdout}",
        sdk.major(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|error| panic!("{error}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_sdks_list_and_call_tools_through_the_gateway_in_every_era() {
    let gateway = start().await;
    let token = token(&gateway, "alice", &["support"]);
    for (sdk, mode) in [
        (Sdk::V1, "legacy"),
        (Sdk::V2, "legacy"),
        (Sdk::V2, MODERN),
        (Sdk::V2, "auto"),
    ] {
        let what = format!("SDK {} in {mode} mode", sdk.major());
        let seen = sdk_agent(&gateway, sdk, mode, &token).await;
        assert_eq!(seen["tools"], json!(ALICES_TOOLS), "{what}: {seen}");
        assert!(
            seen["echo"].to_string().contains("hello from the sdk"),
            "{what}: {seen}"
        );
        let customer = seen["customer"].to_string();
        assert!(customer.contains("Jane Doe"), "{what}: {customer}");
        assert!(
            !customer.contains(CARD) && !customer.contains(EMAIL),
            "{what}: {customer}"
        );
        assert!(
            !seen["progress"].as_array().unwrap().is_empty(),
            "{what}: no progress reached the agent: {seen}"
        );
        assert!(
            seen["hidden"]
                .to_string()
                .contains("Unknown tool: crm__whoami"),
            "{what}: {seen}"
        );
    }
    // Both eras were spoken: `auto` and the pinned version chose the stateless one.
    let versions: std::collections::BTreeMap<String, usize> = gateway
        .harness
        .all_events()
        .into_iter()
        .filter(|event| event.kind == EventKind::CallReceived && event.function == "mcp:crm__echo")
        .filter_map(|event| event.mcp.and_then(|mcp| mcp.protocol_version))
        .fold(Default::default(), |mut counts, version| {
            *counts.entry(version).or_default() += 1;
            counts
        });
    assert_eq!(versions.get(MODERN), Some(&2), "{versions:?}");
    assert_eq!(versions.values().sum::<usize>(), 4, "{versions:?}");
}

/// Approves (or denies) a held call as `reviewer` through the approvals API, with the hash of
/// the arguments it lists.
async fn decide(gateway: &Gateway, call_id: &str, reviewer: &str, decision: &str, comment: &str) {
    let harness = &gateway.harness;
    let token = harness.issuer.token(reviewer, &["treasury"]);
    let shown = harness
        .get(&format!("/v1/approvals/{call_id}"), &token)
        .await;
    assert_eq!(shown.status, 200, "{}", shown.text);
    let sha256 = shown.body["arguments_sha256"].clone();
    let decided = harness
        .post(
            &format!("/v1/approvals/{call_id}"),
            &token,
            &json!({"decision": decision, "comment": comment, "arguments_sha256": sha256}),
        )
        .await;
    assert_eq!(decided.status, 200, "{}", decided.text);
}

/// The tool result of a `tools/call` with a progress token, and the progress it reported.
async fn call_with_progress(agent: &mut Agent<'_>, arguments: Value) -> (Answer, Vec<Value>) {
    let body = json!({"jsonrpc": "2.0", "id": agent.next_id, "method": "tools/call", "params": {
        "name": "crm__echo", "arguments": arguments, "_meta": {"progressToken": "hold-1"}}});
    agent.next_id += 1;
    let answer = read(agent.request(&body)).await;
    let progress = answer
        .text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
        .filter(|message| message["method"] == "notifications/progress")
        .collect();
    (answer, progress)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_tool_call_runs_once_after_approval_and_the_same_call_gets_its_result() {
    let gateway = start().await;
    let mut alice = Agent::new(&gateway, "alice", &["support"]);
    alice.initialize().await;
    let arguments = json!({"message": "refund order 7", "amount": 5000});

    // Held: the agent hears it is waiting, then that the call is pending, with its id.
    let (pending, progress) = call_with_progress(&mut alice, arguments.clone()).await;
    assert_eq!(pending.status, 200, "{}", pending.text);
    let result = &pending.body["result"];
    assert_eq!(result["isError"], true, "{}", pending.text);
    assert_eq!(
        result["_meta"]["dev.callproof/status"], "pending_approval",
        "{}",
        pending.text
    );
    let call_id = result["_meta"]["dev.callproof/call_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(pending.call_id.as_deref(), Some(call_id.as_str()));
    assert!(
        !progress.is_empty(),
        "no progress while held: {}",
        pending.text
    );
    let events = gateway.harness.events_of(&call_id, 2);
    assert_eq!(
        kinds(&events),
        [EventKind::CallReceived, EventKind::ApprovalRequested]
    );
    assert_eq!(
        events[1].mcp.as_ref().unwrap().tool.as_deref(),
        Some("echo")
    );

    // Asked again before anyone decided: the same held call, still not run.
    let (again, _) = call_with_progress(&mut alice, arguments.clone()).await;
    assert_eq!(
        again.call_id.as_deref(),
        Some(call_id.as_str()),
        "{}",
        again.text
    );
    assert_eq!(
        gateway.harness.events_of(&call_id, 3).len(),
        2,
        "ran before approval"
    );

    decide(&gateway, &call_id, "bob", "approve", "refund agreed").await;
    let events = gateway.harness.events_of(&call_id, 5);
    assert_eq!(
        kinds(&events),
        [
            EventKind::CallReceived,
            EventKind::ApprovalRequested,
            EventKind::ApprovalDecided,
            EventKind::CallForwarded,
            EventKind::CallCompleted
        ]
    );
    let completed = &events[4];
    // Every event of the held call carries the MCP facts, the reviewer's decision too.
    assert!(events.iter().all(|event| event.mcp.is_some()), "{events:?}");
    assert_eq!(completed.function, "mcp:crm__echo");
    assert_eq!(
        completed.mcp.as_ref().unwrap().outcome,
        Some(McpOutcome::Result)
    );
    assert_eq!(
        events[3].decision.as_ref().unwrap().policy_id.as_deref(),
        Some("mcp.servers.crm.tools.echo.approval")
    );

    // The same call again: the one execution's result, not a second run.
    let (done, _) = call_with_progress(&mut alice, arguments.clone()).await;
    assert_eq!(
        done.call_id.as_deref(),
        Some(call_id.as_str()),
        "{}",
        done.text
    );
    assert_ne!(done.body["result"]["isError"], true, "{}", done.text);
    assert!(done.text.contains("refund order 7"), "{}", done.text);
    assert_eq!(gateway.harness.events_of(&call_id, 6).len(), 5, "ran twice");

    // Denied: never runs, and the same call says so.
    let denied_arguments = json!({"message": "refund order 8", "amount": 9000});
    let (pending, _) = call_with_progress(&mut alice, denied_arguments.clone()).await;
    let denied_id = pending.call_id.clone().unwrap();
    assert_ne!(denied_id, call_id);
    decide(&gateway, &denied_id, "bob", "deny", "not this one").await;
    let (denied, _) = call_with_progress(&mut alice, denied_arguments).await;
    assert_eq!(denied.body["result"]["isError"], true, "{}", denied.text);
    assert_eq!(
        denied.body["result"]["_meta"]["dev.callproof/status"],
        "denied"
    );
    assert!(denied.text.contains("not this one"), "{}", denied.text);
    let events = gateway.harness.events_of(&denied_id, 4);
    assert!(
        !events
            .iter()
            .any(|event| event.kind == EventKind::CallForwarded),
        "a denied call ran: {:?}",
        kinds(&events)
    );

    // Below the condition: no approval needed.
    let (direct, _) =
        call_with_progress(&mut alice, json!({"message": "small", "amount": 5})).await;
    assert_ne!(direct.body["result"]["isError"], true, "{}", direct.text);
}

#[tokio::test]
async fn with_the_broker_gone_a_tool_call_gets_503_and_the_tool_is_never_called() {
    let mut private = callproof_tests::broker::PrivateBroker::start().unwrap();
    let gateway = start_on(private.bootstrap.clone()).await;
    let mut alice = Agent::new(&gateway, "alice", &["support"]);
    alice.initialize().await;
    let before = alice
        .send(
            "tools/call",
            json!({"name": "crm__echo", "arguments": {"message": "before-stop"}}),
        )
        .await;
    assert_eq!(before.status, 200, "{}", before.text);
    assert!(
        gateway
            .upstream
            .log_text()
            .contains("CALL echo before-stop")
    );

    private.stop();
    let after = alice
        .send(
            "tools/call",
            json!({"name": "crm__echo", "arguments": {"message": "after-stop"}}),
        )
        .await;
    assert_eq!(after.status, 503, "{}", after.text);
    assert_eq!(after.body["error"]["code"], -31001, "{}", after.text);
    assert!(after.call_id.is_some());
    assert!(
        !gateway.upstream.log_text().contains("after-stop"),
        "the tool ran without an audit record"
    );
    // A refusal cannot be recorded either, and says so.
    let unknown = alice.send("tools/call", json!({"name": "crm__nope"})).await;
    assert_eq!(unknown.status, 503, "{}", unknown.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_langchain_agent_loads_and_invokes_its_tools_through_the_gateway() {
    let gateway = start().await;
    let token = token(&gateway, "alice", &["support"]);
    let seen = run_agent(&gateway, Sdk::V1, "agent_langchain.py", &[], &token).await;
    assert_eq!(seen["tools"], json!(ALICES_TOOLS), "{seen}");
    assert!(
        seen["echo"].to_string().contains("hello from langchain"),
        "{seen}"
    );
    let customer = seen["customer"].to_string();
    assert!(customer.contains("Jane Doe"), "{customer}");
    assert!(
        !customer.contains(CARD) && !customer.contains(EMAIL),
        "{customer}"
    );
    // Each invocation is a call in the evidence, made by alice.
    let calls = gateway
        .harness
        .all_events()
        .into_iter()
        .filter(|event| {
            event.kind == EventKind::CallCompleted && event.function.starts_with("mcp:crm__")
        })
        .filter(|event| {
            event
                .principal
                .as_ref()
                .is_some_and(|principal| principal.subject == "alice")
        })
        .count();
    assert_eq!(calls, 2);
}

/// A slow call (about 10 s of progress) started in the background.
fn slow_call(agent: &mut Agent<'_>, id: u64) -> tokio::task::JoinHandle<Answer> {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
        "name": "crm__slow", "arguments": {"steps": 100, "interval_ms": 100}}});
    tokio::spawn(read(agent.request(&body)))
}

async fn outcome_of(gateway: &Gateway, answer: &Answer) -> CallEvent {
    let events = gateway.harness.events_of(call_id(answer), 3);
    assert_eq!(
        kinds(&events),
        [
            EventKind::CallReceived,
            EventKind::CallForwarded,
            EventKind::CallFailed
        ],
        "{}",
        answer.text
    );
    events.into_iter().next_back().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_dies_mid_call_fails_the_call_and_the_record_says_how() {
    let mut gateway = start().await;
    let mut alice = Agent::new(&gateway, "alice", &["support"]);
    alice.initialize().await;
    let call = slow_call(&mut alice, 70);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    gateway.upstream.kill();
    let answer = call.await.unwrap();
    assert_eq!(answer.body["error"]["code"], -31004, "{}", answer.text);
    let failed = outcome_of(&gateway, &answer).await;
    assert_eq!(
        failed.mcp.as_ref().unwrap().outcome,
        Some(McpOutcome::TransportError)
    );
    let code = failed.failure.unwrap().code;
    assert!(
        ["upstream_broken", "upstream_unreachable"].contains(&code.as_str()),
        "{code}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_agent_cancels_is_recorded_as_cancelled() {
    let gateway = start().await;
    let mut alice = Agent::new(&gateway, "alice", &["support"]);
    alice.initialize().await;
    let call = slow_call(&mut alice, 71);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    // Another session cannot cancel it: only the session's own requests are looked up.
    let mut bob = Agent::new(&gateway, "bob", &["support"]);
    bob.initialize().await;
    let cancel = |id: u64| {
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                  "params": {"requestId": id, "reason": "changed my mind"}})
    };
    assert_eq!(read(bob.request(&cancel(71))).await.status, 202);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let ended_early = gateway
        .harness
        .all_events()
        .into_iter()
        .any(|event| event.kind == EventKind::CallFailed);
    assert!(
        !ended_early,
        "another session's notification cancelled alice's call"
    );
    assert_eq!(read(alice.request(&cancel(71))).await.status, 202);
    let answer = call.await.unwrap();
    let failed = outcome_of(&gateway, &answer).await;
    assert_eq!(failed.failure.unwrap().code, "cancelled", "{}", answer.text);
}

#[tokio::test]
async fn a_tool_whose_argument_travels_in_a_header_reaches_a_stateless_upstream() {
    let gateway = start().await;
    let mut agent = Agent::new(&gateway, "alice", &["support"]);
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "crm__route", "arguments": {"region": "eu-west", "message": "hi"},
        "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                  "io.modelcontextprotocol/clientCapabilities": {}}}});
    let request = |region: Option<&str>| {
        let mut request = agent
            .request(&body)
            .header("mcp-protocol-version", MODERN)
            .header("mcp-method", "tools/call")
            .header("mcp-name", "crm__route");
        if let Some(region) = region {
            request = request.header("mcp-param-region", region.to_string());
        }
        request
    };
    let routed = read(request(Some("eu-west"))).await;
    assert_eq!(routed.status, 200, "{}", routed.text);
    assert!(routed.text.contains("eu-west: hi"), "{}", routed.text);
    // The header must say what the body says, and be there when the argument is.
    for (region, what) in [
        (Some("us-east"), "a header that disagrees"),
        (None, "a missing header"),
    ] {
        let refused = read(request(region)).await;
        assert_eq!(refused.status, 400, "{what}: {}", refused.text);
        assert_eq!(
            refused.body["error"]["code"], -32020,
            "{what}: {}",
            refused.text
        );
        assert_eq!(
            one_denial(&gateway, &refused).failure.unwrap().code,
            "mcp_header_mismatch"
        );
    }
    agent.next_id += 1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_call_does_not_hold_up_the_same_agents_other_calls() {
    // An upstream that answers with one JSON body per request: rmcp's client sends a
    // connection's next request only once such an answer has arrived.
    let upstream =
        McpUpstream::start_with(Sdk::V2, &["--json"]).unwrap_or_else(|error| panic!("{error:#}"));
    let gateway = start_with(callproof_tests::broker::bootstrap(), upstream).await;
    let mut alice = Agent::new(&gateway, "alice", &["support"]);
    alice.initialize().await;
    let slow = slow_call(&mut alice, 80);
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let echo = alice
        .send(
            "tools/call",
            json!({"name": "crm__echo", "arguments": {"message": "meanwhile"}}),
        )
        .await;
    assert!(echo.text.contains("meanwhile"), "{}", echo.text);
    assert!(
        !slow.is_finished(),
        "the echo waited for the slow call to end"
    );
    assert_eq!(slow.await.unwrap().status, 200);
}
