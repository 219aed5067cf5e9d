//! `UpstreamHttp` against a local axum server that answers as told, and `GatewayClient`'s
//! declared capabilities. The real Python SDK servers are in `ingress/tests/gateway/mcp_upstream.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::http::{HeaderName, HeaderValue};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use futures::StreamExt;
use rmcp::model::{ClientJsonRpcMessage, ClientRequest, JsonRpcMessage, PingRequest, RequestId};
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
};

use super::http::EventSizeLimiter;
use super::*;
use tokio_util::sync::CancellationToken;

type Seen = Arc<Mutex<Vec<HeaderMap>>>;

/// Serves `answer` on POST/GET/DELETE `/mcp`, recording the headers of every request.
async fn serve(answer: fn() -> Response) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let recorder = seen.clone();
    let handler = move |headers: HeaderMap| {
        let recorder = recorder.clone();
        async move {
            recorder.lock().expect("lock").push(headers);
            answer()
        }
    };
    let app = Router::new().route(
        "/mcp",
        post(handler.clone()).get(handler.clone()).delete(handler),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}/mcp"), seen)
}

fn backend(max_response_bytes: usize) -> UpstreamHttp {
    UpstreamHttp::new(
        http_client().expect("client"),
        Some((
            HeaderName::from_static("x-api-key"),
            HeaderValue::from_static("gateway-secret"),
        )),
        max_response_bytes,
        Duration::from_secs(5),
    )
}

fn ping(id: i64) -> ClientJsonRpcMessage {
    ClientJsonRpcMessage::request(
        ClientRequest::PingRequest(PingRequest::default()),
        RequestId::Number(id),
    )
}

fn json(status: StatusCode, body: &'static str) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("response")
}

async fn post_ping(
    http: &UpstreamHttp,
    url: &str,
    session: Option<&str>,
    custom_headers: HashMap<HeaderName, HeaderValue>,
) -> Result<StreamableHttpPostResponse, StreamableHttpError<UpstreamHttpError>> {
    http.post_message_with_max_sse_event_size(
        url.into(),
        ping(7),
        session.map(Arc::from),
        Some("agent-token".to_string()),
        custom_headers,
        1024,
    )
    .await
}

#[tokio::test]
async fn only_the_configured_credential_is_sent() {
    let (url, seen) =
        serve(|| json(StatusCode::OK, r#"{"jsonrpc":"2.0","id":7,"result":{}}"#)).await;
    let mut custom = HashMap::new();
    custom.insert(
        HeaderName::from_static("authorization"),
        HeaderValue::from_static("Bearer agent-token"),
    );
    custom.insert(
        HeaderName::from_static("x-api-key"),
        HeaderValue::from_static("not-the-credential"),
    );
    custom.insert(
        HeaderName::from_static("mcp-protocol-version"),
        HeaderValue::from_static("2025-11-25"),
    );
    let answer = post_ping(&backend(1 << 20), &url, Some("s-1"), custom).await;
    assert!(
        matches!(answer, Ok(StreamableHttpPostResponse::Json(..))),
        "{answer:?}"
    );
    let seen = seen.lock().expect("lock");
    let headers = &seen[0];
    assert_eq!(
        headers.get_all("x-api-key").iter().collect::<Vec<_>>(),
        ["gateway-secret"]
    );
    assert!(headers.get("authorization").is_none(), "{headers:?}");
    assert_eq!(headers["mcp-session-id"], "s-1");
    assert_eq!(headers["mcp-protocol-version"], "2025-11-25");
    assert_eq!(headers["accept"], "application/json, text/event-stream");
    assert_eq!(headers["content-type"], "application/json");
}

#[tokio::test]
async fn reserved_custom_headers_are_refused() {
    let (url, seen) =
        serve(|| json(StatusCode::OK, r#"{"jsonrpc":"2.0","id":7,"result":{}}"#)).await;
    let mut custom = HashMap::new();
    custom.insert(
        HeaderName::from_static("mcp-session-id"),
        HeaderValue::from_static("forged"),
    );
    let answer = post_ping(&backend(1 << 20), &url, None, custom).await;
    assert!(
        matches!(answer, Err(StreamableHttpError::ReservedHeaderConflict(_))),
        "{answer:?}"
    );
    assert!(seen.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn refused_credentials_are_auth_errors() {
    for answer in [
        (|| json(StatusCode::UNAUTHORIZED, "{}")) as fn() -> Response,
        || json(StatusCode::FORBIDDEN, "{}"),
    ] {
        let (url, _) = serve(answer).await;
        let error = post_ping(&backend(1 << 20), &url, None, HashMap::new()).await;
        assert!(
            matches!(
                error,
                Err(StreamableHttpError::Client(UpstreamHttpError::Auth {
                    status: 401 | 403
                }))
            ),
            "{error:?}"
        );
    }
}

#[tokio::test]
async fn not_found_expires_a_session_only_when_one_was_sent() {
    let (url, _) = serve(|| json(StatusCode::NOT_FOUND, "not json")).await;
    let http = backend(1 << 20);
    let with_session = post_ping(&http, &url, Some("s-1"), HashMap::new()).await;
    assert!(
        matches!(with_session, Err(StreamableHttpError::SessionExpired)),
        "{with_session:?}"
    );
    let without = post_ping(&http, &url, None, HashMap::new()).await;
    assert!(
        matches!(
            without,
            Err(StreamableHttpError::Client(UpstreamHttpError::Status {
                status: 404
            }))
        ),
        "{without:?}"
    );
}

#[tokio::test]
async fn an_error_status_with_a_jsonrpc_error_answers_the_posted_request() {
    // Python SDK 1.x: `"id": "server-error"` when it refuses a request before reading it.
    let (url, _) = serve(|| {
        json(
            StatusCode::BAD_REQUEST,
            r#"{"jsonrpc":"2.0","id":"server-error","error":{"code":-32600,"message":"Bad Request: Missing session ID"}}"#,
        )
    })
    .await;
    let answer = post_ping(&backend(1 << 20), &url, None, HashMap::new()).await;
    let Ok(StreamableHttpPostResponse::Json(JsonRpcMessage::Error(error), _)) = answer else {
        panic!("expected a JSON-RPC error, got {answer:?}");
    };
    assert_eq!(error.id, Some(RequestId::Number(7)));
    assert_eq!(error.error.code.0, -32600);
}

#[tokio::test]
async fn json_answers_are_capped() {
    let (url, _) = serve(|| {
        json(
            StatusCode::OK,
            r#"{"jsonrpc":"2.0","id":7,"result":{"padding":"0123456789012345678901234567890123456789"}}"#,
        )
    })
    .await;
    let error = post_ping(&backend(32), &url, None, HashMap::new()).await;
    assert!(
        matches!(
            error,
            Err(StreamableHttpError::Client(
                UpstreamHttpError::ResponseTooLarge(32)
            ))
        ),
        "{error:?}"
    );
    // Without Content-Length: counted while reading.
    let (url, _) = serve(|| {
        let chunks = futures::stream::iter([
            "{\"jsonrpc\":\"2.0\",",
            "\"id\":7,\"result\":{\"padding\":\"0123456789012345678901234567890123456789\"}}",
        ])
        .map(Ok::<_, std::io::Error>);
        Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(chunks))
            .expect("response")
    })
    .await;
    let error = post_ping(&backend(32), &url, None, HashMap::new()).await;
    assert!(
        matches!(
            error,
            Err(StreamableHttpError::Client(
                UpstreamHttpError::ResponseTooLarge(32)
            ))
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_request_answered_with_json_that_is_not_jsonrpc_fails() {
    let (url, _) = serve(|| json(StatusCode::OK, r#"{"not":"jsonrpc"}"#)).await;
    let error = post_ping(&backend(1 << 20), &url, None, HashMap::new()).await;
    assert!(
        matches!(error, Err(StreamableHttpError::Deserialize(_))),
        "{error:?}"
    );
}

#[tokio::test]
async fn sse_events_under_the_cap_pass() {
    let (url, _) = serve(|| {
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from(
                ": keep-alive\n\ndata: {\"small\":1}\n\ndata: {\"small\":2}\n\n",
            ))
            .expect("response")
    })
    .await;
    let answer = post_ping(&backend(1 << 20), &url, None, HashMap::new()).await;
    let Ok(StreamableHttpPostResponse::Sse(events, _)) = answer else {
        panic!("expected SSE, got {answer:?}");
    };
    let data: Vec<_> = events
        .filter_map(|event| async move { event.expect("an event").data })
        .collect()
        .await;
    assert_eq!(data, ["{\"small\":1}", "{\"small\":2}"]);
}

#[tokio::test]
async fn sse_events_are_capped() {
    let (url, _) = serve(|| {
        let big = format!("data: {}\n\n", "x".repeat(2000));
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from(big))
            .expect("response")
    })
    .await;
    let answer = post_ping(&backend(1 << 20), &url, None, HashMap::new()).await;
    let Ok(StreamableHttpPostResponse::Sse(mut events, _)) = answer else {
        panic!("expected SSE, got {answer:?}");
    };
    let error = events
        .next()
        .await
        .expect("an item")
        .expect_err("the big event is refused");
    assert!(error.to_string().contains("1024"), "{error}");
    assert!(
        events.next().await.is_none(),
        "the stream ends after the refusal"
    );
}

#[tokio::test]
async fn a_silent_upstream_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/mcp", listener.local_addr().expect("address"));
    // Accepts connections and never answers.
    let _keep = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let http = UpstreamHttp::new(
        http_client().expect("client"),
        None,
        1 << 20,
        Duration::from_millis(200),
    );
    let error = post_ping(&http, &url, None, HashMap::new()).await;
    assert!(
        matches!(
            error,
            Err(StreamableHttpError::Client(UpstreamHttpError::Timeout(_)))
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn nothing_listening_is_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/mcp", listener.local_addr().expect("address"));
    drop(listener);
    let error = post_ping(&backend(1 << 20), &url, None, HashMap::new()).await;
    assert!(
        matches!(
            error,
            Err(StreamableHttpError::Client(UpstreamHttpError::Unreachable(
                _
            )))
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn get_stream_405_means_no_standalone_stream() {
    let (url, seen) = serve(|| json(StatusCode::METHOD_NOT_ALLOWED, "")).await;
    let error = backend(1 << 20)
        .get_stream(
            url.into(),
            Some(Arc::from("s-1")),
            None,
            Some("agent".into()),
            HashMap::new(),
        )
        .await;
    assert!(matches!(
        error,
        Err(StreamableHttpError::ServerDoesNotSupportSse)
    ));
    let seen = seen.lock().expect("lock");
    assert_eq!(seen[0]["x-api-key"], "gateway-secret");
    assert!(seen[0].get("authorization").is_none());
}

#[test]
fn event_size_counts_retained_data_not_comments() {
    let mut limiter = EventSizeLimiter::new(10);
    assert!(limiter.observe(b": 1234567\n"), "a line of 9 bytes");
    assert!(
        limiter.observe(b"data: 123\n\n"),
        "9 bytes + newline, the comment not counted"
    );
    assert!(
        limiter.observe(b"data: 123\r\n\r\n"),
        "the blank line resets the count"
    );
    assert!(!limiter.observe(b"data: 12345"), "11 bytes");
    let mut split = EventSizeLimiter::new(10);
    assert!(split.observe(b"data: 12"));
    assert!(!split.observe(b"345\n"), "counted across chunks");
}

#[test]
fn the_gateway_declares_no_client_capabilities() {
    let info = GatewayClient::new(rmcp::model::ProtocolVersion::V_2025_11_25).get_info();
    let json = serde_json::to_value(&info).expect("serialize");
    assert_eq!(json["capabilities"], serde_json::json!({}));
    assert_eq!(json["clientInfo"]["name"], "callproof");
    assert_eq!(json["protocolVersion"], "2025-11-25");
}

#[tokio::test]
async fn unreachable_upstream_fails_to_connect_clearly() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/mcp", listener.local_addr().expect("address"));
    drop(listener);
    for protocol in [
        UpstreamProtocol::Auto,
        UpstreamProtocol::Modern,
        UpstreamProtocol::Legacy(rmcp::model::ProtocolVersion::V_2025_06_18),
    ] {
        let config = UpstreamConfig {
            url: url.clone(),
            protocol: protocol.clone(),
            connect_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(5),
            max_response_bytes: 1 << 20,
        };
        let error = Upstream::connect(backend(1 << 20), config)
            .await
            .expect_err("nothing listens");
        assert!(
            matches!(error, UpstreamError::Unreachable),
            "{protocol:?}: {error:?}"
        );
    }
}

/// A legacy MCP server that answers every `tools/call` with `result` (design risk R2: what is
/// not a `CallToolResult` must never pass as one).
async fn serve_tool_result(result: serde_json::Value) -> String {
    let handler = move |body: axum::body::Bytes| {
        let result = result.clone();
        async move {
            let message: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let id = message.get("id").cloned();
            let answer = match (message["method"].as_str(), id) {
                (_, None) => {
                    return Response::builder()
                        .status(202)
                        .body(Body::empty())
                        .expect("202");
                }
                (Some("initialize"), Some(id)) => {
                    serde_json::json!({"jsonrpc": "2.0", "id": id, "result": {
                    "protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                    "serverInfo": {"name": "mock", "version": "1"}}})
                }
                (Some("tools/call"), Some(id)) => {
                    serde_json::json!({"jsonrpc": "2.0", "id": id, "result": result})
                }
                (_, Some(id)) => {
                    serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "no"}})
                }
            };
            Response::builder()
                .header("content-type", "application/json")
                .header("mcp-session-id", "s-1")
                .body(Body::from(answer.to_string()))
                .expect("response")
        }
    };
    let refuse = || async { StatusCode::METHOD_NOT_ALLOWED };
    let app = Router::new().route("/mcp", post(handler).get(refuse).delete(refuse));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}/mcp")
}

async fn call_mock(
    result: serde_json::Value,
) -> Result<rmcp::model::CallToolResult, UpstreamError> {
    let config = UpstreamConfig {
        url: serve_tool_result(result).await,
        protocol: UpstreamProtocol::Legacy(rmcp::model::ProtocolVersion::V_2025_11_25),
        connect_timeout: Duration::from_secs(5),
        call_timeout: Duration::from_secs(5),
        max_response_bytes: 1 << 20,
    };
    let upstream = Upstream::connect(backend(1 << 20), config)
        .await
        .expect("connect");
    let params = rmcp::model::CallToolRequestParams::new("tool");
    let result = upstream
        .call_tool(params, |_| {}, &CancellationToken::new())
        .await;
    upstream.close().await;
    result
}

#[tokio::test]
async fn only_a_call_tool_result_is_a_tool_result() {
    let valid = serde_json::json!({"content": [{"type": "text", "text": "ok"}], "isError": false});
    let result = call_mock(valid).await.expect("a valid result");
    assert_eq!(result.is_error, Some(false));
    for invalid in [
        serde_json::json!({}),
        serde_json::json!({"foo": "bar"}),
        serde_json::json!({"content": "not a list"}),
        serde_json::json!({"content": [{"type": "no-such-type"}]}),
    ] {
        let outcome = call_mock(invalid.clone()).await;
        assert!(
            matches!(outcome, Err(UpstreamError::UnexpectedResult)),
            "{invalid}: {outcome:?}"
        );
    }
}

/// Known fidelity gap (design §2.2): fields rmcp's model does not know are dropped on the way.
#[tokio::test]
async fn unknown_result_fields_are_dropped() {
    let result = call_mock(serde_json::json!({
        "content": [{"type": "text", "text": "ok"}],
        "structuredContent": {"kept": true},
        "futureField": 1
    }))
    .await
    .expect("a valid result");
    let json = serde_json::to_value(&result).expect("serialize");
    assert_eq!(json["structuredContent"], serde_json::json!({"kept": true}));
    assert!(json.get("futureField").is_none(), "{json}");
}
