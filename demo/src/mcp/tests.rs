//! The demo MCP server as the gateway meets it: only its credential gets in, and a 2026-07-28
//! client (one POST per request, no session) lists the three tools and gets the raw record the
//! gateway is there to mask.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::router;

const CREDENTIAL: &str = "the-gateways-credential";
const VERSION: &str = "2026-07-28";

/// A stateless request for `method`, as the gateway sends it; the answer's status and its
/// JSON-RPC message (the last `data:` of an SSE answer, or the JSON body).
async fn send(authorization: Option<&str>, method: &str, mut params: Value) -> (StatusCode, Value) {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let mut request = Request::post("/mcp")
        .header(header::HOST, "127.0.0.1:9600")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json, text/event-stream")
        .header("mcp-protocol-version", VERSION)
        .header("mcp-method", method);
    if let Some(name) = params["name"].as_str() {
        request = request.header("mcp-name", name);
    }
    if let Some(authorization) = authorization {
        request = request.header(header::AUTHORIZATION, authorization);
    }
    let response = router(CREDENTIAL.into())
        .oneshot(request.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes);
    let message = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str(data.trim()).ok())
        .next_back()
        .or_else(|| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null);
    (status, message)
}

#[tokio::test]
async fn only_the_gateways_credential_gets_in() {
    for refused in [None, Some("Bearer an-agents-own-token")] {
        let (status, _) = send(refused, "tools/list", json!({})).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{refused:?}");
    }
    let (status, message) = send(
        Some(&format!("Bearer {CREDENTIAL}")),
        "tools/list",
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{message}");

    let health = router(CREDENTIAL.into())
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK, "the health check is open");
}

#[tokio::test]
async fn a_stateless_client_lists_the_three_tools_and_calls_them() {
    let authorization = format!("Bearer {CREDENTIAL}");
    let (_, listed) = send(Some(&authorization), "tools/list", json!({})).await;
    let mut names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .iter()
        .filter_map(|tool| tool["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["echo", "lookup_customer", "refund"]);

    let (_, looked_up) = send(
        Some(&authorization),
        "tools/call",
        json!({"name": "lookup_customer", "arguments": {"customer_id": 42}}),
    )
    .await;
    let result = &looked_up["result"];
    assert_eq!(
        result["structuredContent"]["customer_id"], 42,
        "{looked_up}"
    );
    assert_eq!(
        result["structuredContent"]["card_number"],
        "4111 1111 1111 1111"
    );
    let text = result["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("ada@example.com"), "{text}");

    let (_, refunded) = send(
        Some(&authorization),
        "tools/call",
        json!({"name": "refund", "arguments": {"order_id": "ord_1", "amount": 500}}),
    )
    .await;
    let confirmation = &refunded["result"]["structuredContent"];
    assert_eq!(confirmation["status"], "refunded", "{refunded}");
    assert_eq!(confirmation["refunded"], 500);
    assert_eq!(confirmation["order_id"], "ord_1");

    let (_, echoed) = send(
        Some(&authorization),
        "tools/call",
        json!({"name": "echo", "arguments": {"message": "hello"}}),
    )
    .await;
    assert_eq!(echoed["result"]["content"][0]["text"], "hello", "{echoed}");
}
