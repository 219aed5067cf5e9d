//! The gateway's upstream MCP client (`mcp::upstream`: rmcp's client over `UpstreamHttp`) against
//! real MCP servers of the official Python SDK, `tests/mcp/upstream.py`: SDK 1.x (legacy
//! handshake only) and 2.x (2026-07-28 and legacy), in every era each supports and with the
//! `auto` discovery. No broker needed.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use callproof_ingress::mcp::upstream::{
    Upstream, UpstreamConfig, UpstreamError, UpstreamHttp, UpstreamProtocol, http_client,
};
use callproof_tests::mcp_upstream::{McpUpstream, Sdk};
use http::{HeaderName, HeaderValue};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ContentBlock, ProgressNotificationParam,
    ProtocolVersion, ResourceContents,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const CREDENTIAL: &str = "Bearer gateway-held-upstream-credential-5c4b";
const TOOLS: [&str; 7] = [
    "boom",
    "echo",
    "fail",
    "get_customer",
    "route",
    "slow",
    "whoami",
];

fn start(sdk: Sdk) -> McpUpstream {
    // Two tools per page, so listing must follow cursors.
    McpUpstream::start(sdk, Some(2)).unwrap_or_else(|error| panic!("{error:#}"))
}

fn config(
    upstream: &McpUpstream,
    protocol: UpstreamProtocol,
    call_timeout: Duration,
) -> UpstreamConfig {
    UpstreamConfig {
        url: upstream.url.clone(),
        protocol,
        connect_timeout: Duration::from_secs(30),
        call_timeout,
        max_response_bytes: 1 << 20,
    }
}

fn backend(credential: (&'static str, &'static str), answer_timeout: Duration) -> UpstreamHttp {
    UpstreamHttp::new(
        http_client().expect("client"),
        Some((
            HeaderName::from_static(credential.0),
            HeaderValue::from_static(credential.1),
        )),
        1 << 20,
        answer_timeout,
    )
}

async fn connect(upstream: &McpUpstream, protocol: UpstreamProtocol) -> Upstream {
    Upstream::connect(
        backend(("authorization", CREDENTIAL), Duration::from_secs(30)),
        config(upstream, protocol, Duration::from_secs(30)),
    )
    .await
    .unwrap_or_else(|error| panic!("connect: {error:?}; {}", upstream.log_text()))
}

fn params(name: &'static str, arguments: Value) -> CallToolRequestParams {
    let Value::Object(arguments) = arguments else {
        panic!("arguments must be an object");
    };
    CallToolRequestParams::new(name).with_arguments(arguments)
}

async fn call(
    client: &Upstream,
    name: &'static str,
    arguments: Value,
) -> Result<CallToolResult, UpstreamError> {
    client
        .call_tool(params(name, arguments), |_| {}, &CancellationToken::new())
        .await
}

fn text_of(result: &CallToolResult, index: usize) -> &str {
    match &result.content[index] {
        ContentBlock::Text(text) => &text.text,
        other => panic!("content {index} is not text: {other:?}"),
    }
}

/// Everything the gateway needs from one upstream, in one era.
async fn exercise(sdk: Sdk, protocol: UpstreamProtocol, expected_version: ProtocolVersion) {
    let upstream = start(sdk);
    let client = connect(&upstream, protocol.clone()).await;
    assert_eq!(
        client.protocol_version(),
        Some(expected_version),
        "{sdk:?} {protocol:?}"
    );

    // tools/list, four pages of two.
    let tools = client.list_tools().await.expect("tools/list");
    let names: Vec<&str> = tools.iter().map(|tool| tool.name.as_ref()).collect();
    assert_eq!(names.len(), TOOLS.len(), "no tool twice: {names:?}");
    assert_eq!(
        names.iter().copied().collect::<BTreeSet<_>>(),
        TOOLS.into_iter().collect()
    );

    // echo: arguments and structuredContent round-trip exactly.
    let arguments = json!({
        "message": "héllo \"wörld\" ✓ \u{1F600}\n<tag>&",
        "data": {"int": 42, "negative": -7, "big": 9007199254740993u64, "float": 1.5, "null": null,
                 "list": [1, "two", null, true, {"deep": []}], "empty": {}}
    });
    let echoed = call(&client, "echo", arguments.clone())
        .await
        .expect("echo");
    assert_ne!(echoed.is_error, Some(true));
    assert_eq!(
        echoed.structured_content,
        Some(json!({"arguments": arguments}))
    );
    let text: Value = serde_json::from_str(text_of(&echoed, 0)).expect("echo text is JSON");
    assert_eq!(text, arguments);

    // get_customer: text, embedded resource and structuredContent all come through.
    let customer = call(&client, "get_customer", json!({"customer_id": "c-7"}))
        .await
        .expect("get_customer");
    assert!(text_of(&customer, 0).contains("4111 1111 1111 1111"));
    let ContentBlock::Resource(embedded) = &customer.content[1] else {
        panic!(
            "second block is not an embedded resource: {:?}",
            customer.content[1]
        );
    };
    let ResourceContents::TextResourceContents {
        uri,
        mime_type,
        text,
        ..
    } = &embedded.resource
    else {
        panic!("embedded resource is not text: {embedded:?}");
    };
    assert_eq!(uri, "crm://customers/c-7");
    assert_eq!(mime_type.as_deref(), Some("application/json"));
    let record: Value = serde_json::from_str(text.as_str()).expect("resource text is JSON");
    assert_eq!(record["email"], "jane.doe@example.com");
    assert_eq!(
        customer
            .structured_content
            .as_ref()
            .map(|value| &value["customer"]),
        Some(&record)
    );

    // whoami: the configured credential, and no header beyond the protocol's.
    let seen = call(&client, "whoami", json!({})).await.expect("whoami");
    let seen = seen.structured_content.expect("whoami's structuredContent");
    assert_eq!(seen["authorization"], CREDENTIAL);
    let allowed: BTreeSet<&str> = [
        "host",
        "accept",
        "content-type",
        "content-length",
        "authorization",
        "mcp-protocol-version",
        "mcp-session-id",
        "mcp-method",
        "mcp-name",
    ]
    .into_iter()
    .collect();
    let header_names: Vec<&str> = seen["header_names"]
        .as_array()
        .expect("header names")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let unexpected: Vec<&&str> = header_names
        .iter()
        .filter(|name| !allowed.contains(**name))
        .collect();
    assert!(
        unexpected.is_empty(),
        "headers the upstream should not see: {unexpected:?}"
    );

    // slow: progress reaches the caller while the call runs, strictly increasing.
    let updates: Arc<Mutex<Vec<ProgressNotificationParam>>> = Arc::default();
    let recorder = updates.clone();
    let done = client
        .call_tool(
            params("slow", json!({"steps": 5, "interval_ms": 30})),
            move |update| recorder.lock().expect("lock").push(update),
            &CancellationToken::new(),
        )
        .await
        .expect("slow");
    assert_eq!(text_of(&done, 0), "done after 5 steps");
    let updates = std::mem::take(&mut *updates.lock().expect("lock"));
    let progress: Vec<f64> = updates.iter().map(|update| update.progress).collect();
    assert!(progress.len() >= 4, "progress seen: {progress:?}");
    assert!(
        progress.windows(2).all(|pair| pair[0] < pair[1]),
        "{progress:?}"
    );
    assert!(updates.iter().all(|update| update.total == Some(5.0)));
    assert_eq!(updates[0].message.as_deref(), Some("step 1 of 5"));

    // fail: a tool error is a result with isError.
    let failed = call(&client, "fail", json!({"reason": "no such order"}))
        .await
        .expect("fail answers");
    assert_eq!(failed.is_error, Some(true));
    assert_eq!(text_of(&failed, 0), "no such order");

    // boom: a JSON-RPC error, not a result.
    match call(&client, "boom", json!({})).await {
        Err(UpstreamError::JsonRpc(error)) => {
            assert_eq!(error.code.0, -32603);
            assert!(error.message.contains("boom"), "{error:?}");
        }
        other => panic!("boom should be a JSON-RPC error: {other:?}"),
    }

    // Cancelled by the caller mid-call (at the first progress): the session stays usable.
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let cancelled = client
        .call_tool(
            params("slow", json!({"steps": 100, "interval_ms": 20})),
            move |_| trigger.cancel(),
            &cancel,
        )
        .await;
    assert!(
        matches!(cancelled, Err(UpstreamError::Cancelled)),
        "{cancelled:?}"
    );
    call(&client, "echo", json!({"message": "still there"}))
        .await
        .expect("echo after a cancel");

    client.close().await;

    // A call over its timeout fails as a timeout (the tool would take 60 s).
    let impatient = Upstream::connect(
        backend(("authorization", CREDENTIAL), Duration::from_secs(30)),
        config(&upstream, protocol.clone(), Duration::from_millis(300)),
    )
    .await
    .expect("connect");
    let timed_out = call(
        &impatient,
        "slow",
        json!({"steps": 1, "interval_ms": 60000}),
    )
    .await;
    assert!(
        matches!(timed_out, Err(UpstreamError::Timeout(timeout)) if timeout == Duration::from_millis(300)),
        "{timed_out:?}"
    );
    impatient.close().await;
}

#[tokio::test]
async fn mcp_upstream_sdk1_legacy_2025_11_25() {
    exercise(
        Sdk::V1,
        UpstreamProtocol::Legacy(ProtocolVersion::V_2025_11_25),
        ProtocolVersion::V_2025_11_25,
    )
    .await;
}

#[tokio::test]
async fn mcp_upstream_sdk1_legacy_2025_06_18() {
    exercise(
        Sdk::V1,
        UpstreamProtocol::Legacy(ProtocolVersion::V_2025_06_18),
        ProtocolVersion::V_2025_06_18,
    )
    .await;
}

/// A legacy-only server answers `server/discover` with an HTTP 400 whose JSON-RPC error has the
/// id `"server-error"`; the client must fall back to the handshake.
#[tokio::test]
async fn mcp_upstream_sdk1_auto_falls_back_to_the_handshake() {
    exercise(
        Sdk::V1,
        UpstreamProtocol::Auto,
        ProtocolVersion::V_2025_11_25,
    )
    .await;
}

#[tokio::test]
async fn mcp_upstream_sdk2_legacy_2025_11_25() {
    exercise(
        Sdk::V2,
        UpstreamProtocol::Legacy(ProtocolVersion::V_2025_11_25),
        ProtocolVersion::V_2025_11_25,
    )
    .await;
}

#[tokio::test]
async fn mcp_upstream_sdk2_modern_2026_07_28() {
    exercise(
        Sdk::V2,
        UpstreamProtocol::Modern,
        ProtocolVersion::V_2026_07_28,
    )
    .await;
}

#[tokio::test]
async fn mcp_upstream_sdk2_auto_speaks_2026_07_28() {
    exercise(
        Sdk::V2,
        UpstreamProtocol::Auto,
        ProtocolVersion::V_2026_07_28,
    )
    .await;
}

/// A credential in another header: the upstream sees it there and no Authorization at all.
#[tokio::test]
async fn mcp_upstream_sees_only_the_configured_credential_header() {
    for sdk in [Sdk::V1, Sdk::V2] {
        let upstream = start(sdk);
        let client = Upstream::connect(
            backend(
                ("x-api-key", "gateway-api-key-0d9e"),
                Duration::from_secs(30),
            ),
            config(&upstream, UpstreamProtocol::Auto, Duration::from_secs(30)),
        )
        .await
        .unwrap_or_else(|error| panic!("connect: {error:?}; {}", upstream.log_text()));
        let seen = call(&client, "whoami", json!({})).await.expect("whoami");
        let Some(seen) = seen.structured_content.clone() else {
            panic!("{sdk:?}: no structuredContent in {seen:?}");
        };
        assert_eq!(seen["authorization"], Value::Null, "{sdk:?}");
        assert!(
            seen["header_names"]
                .as_array()
                .expect("names")
                .contains(&json!("x-api-key"))
        );
        client.close().await;
    }
}

#[tokio::test]
async fn mcp_upstream_not_listening_is_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/mcp", listener.local_addr().expect("address"));
    drop(listener);
    let error = Upstream::connect(
        backend(("authorization", CREDENTIAL), Duration::from_secs(5)),
        UpstreamConfig {
            url,
            protocol: UpstreamProtocol::Auto,
            connect_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(5),
            max_response_bytes: 1 << 20,
        },
    )
    .await
    .expect_err("nothing listens");
    assert!(matches!(error, UpstreamError::Unreachable), "{error:?}");
    assert_eq!(error.to_string(), "upstream is unreachable");
}

/// Design risk R3, as rmcp 3.1.4 behaves: it derives `Mcp-Param-*` headers only from tool schemas
/// its own client listed, so a 2026-07-28 call through a client that never listed lacks
/// `Mcp-Param-Region` and SDK 2.x refuses it (-32020 HeaderMismatch); after a listing it passes.
/// The gateway must therefore list through every client that calls, or (the design's choice)
/// have `UpstreamHttp` add the headers from the catalog; this test changes when that lands.
#[tokio::test]
async fn mcp_upstream_param_headers_come_only_from_the_clients_own_listing() {
    let upstream = start(Sdk::V2);
    let client = connect(&upstream, UpstreamProtocol::Modern).await;
    let arguments = json!({"region": "eu-west", "message": "hi"});
    match call(&client, "route", arguments.clone()).await {
        Err(UpstreamError::JsonRpc(error)) => assert_eq!(error.code.0, -32020, "{error:?}"),
        other => panic!("a call before any listing should lack Mcp-Param-Region: {other:?}"),
    }
    client.list_tools().await.expect("tools/list");
    let routed = call(&client, "route", arguments)
        .await
        .expect("route after listing");
    assert_eq!(text_of(&routed, 0), "eu-west: hi");
    client.close().await;
}

/// rmcp 3.1.4's transport worker awaits each POST before taking the next message, so against an
/// upstream that answers with JSON (the whole answer once the tool is done) the calls of one
/// client run one after the other: a quick call waits for a slow one sent before it. Against SSE
/// answers (the other tests) the POST returns at the stream's head. The gateway must not share
/// one client between agents for such upstreams (design D6 keeps clients per agent).
#[tokio::test]
async fn mcp_upstream_json_answers_serialize_the_calls_of_one_client() {
    let upstream =
        McpUpstream::start_with(Sdk::V2, &["--json"]).unwrap_or_else(|error| panic!("{error:#}"));
    let client = connect(
        &upstream,
        UpstreamProtocol::Legacy(ProtocolVersion::V_2025_11_25),
    )
    .await;
    {
        let slow = call(&client, "slow", json!({"steps": 1, "interval_ms": 2000}));
        let quick = call(&client, "echo", json!({"message": "quick"}));
        futures::pin_mut!(slow, quick);
        // Polled in this order, so the slow call is queued first.
        let first = tokio::select! {
            biased;
            result = &mut slow => ("slow", result),
            result = &mut quick => ("echo", result),
        };
        assert_eq!(
            first.0, "slow",
            "the quick call was not held behind the slow one: {first:?}"
        );
        first.1.expect("slow");
        quick.await.expect("echo after slow");
    }
    client.close().await;
}
