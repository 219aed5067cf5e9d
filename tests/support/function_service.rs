//! A function service behind the gateway that records every request it receives, so tests can
//! check what reached it (the injected credential, masked fields, never the caller's token).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl ReceivedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

pub struct FunctionService {
    pub url: String,
    received: Arc<Mutex<Vec<ReceivedRequest>>>,
}

/// Routes:
/// - `/echo`: answers `{"received": <arguments>, "customer": {...with a card number...}}`;
/// - `/slow`: sleeps 3 s first;
/// - `/fail`: answers 500;
/// - `/text`: answers plain text with an email address in it.
impl FunctionService {
    pub async fn start() -> anyhow::Result<FunctionService> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let received = Arc::new(Mutex::new(Vec::new()));
        let router = Router::new()
            .route("/echo", post(echo))
            .route("/slow", post(slow))
            .route("/fail", post(fail))
            .route("/text", post(text))
            .with_state(received.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(FunctionService { url, received })
    }

    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.received
            .lock()
            .map(|received| received.clone())
            .unwrap_or_default()
    }

    pub fn calls(&self) -> usize {
        self.received().len()
    }
}

type Received = State<Arc<Mutex<Vec<ReceivedRequest>>>>;

fn record(received: &Received, path: &str, headers: HeaderMap, body: Bytes) -> Value {
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Ok(mut received) = received.lock() {
        received.push(ReceivedRequest {
            path: path.to_string(),
            headers,
            body,
        });
    }
    value
}

async fn echo(received: Received, headers: HeaderMap, body: Bytes) -> Response {
    let arguments = record(&received, "/echo", headers, body);
    axum::Json(json!({
        "received": arguments,
        "customer": {
            "name": "Ada Lovelace",
            "card_number": "4111 1111 1111 1111",
            "internal_note": "vip since 2019",
        }
    }))
    .into_response()
}

async fn slow(received: Received, headers: HeaderMap, body: Bytes) -> Response {
    record(&received, "/slow", headers, body);
    tokio::time::sleep(Duration::from_secs(3)).await;
    axum::Json(json!({"slow": true})).into_response()
}

async fn fail(received: Received, headers: HeaderMap, body: Bytes) -> Response {
    record(&received, "/fail", headers, body);
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "Traceback (most recent call last): db password=hunter2",
    )
        .into_response()
}

async fn text(received: Received, headers: HeaderMap, body: Bytes) -> Response {
    record(&received, "/text", headers, body);
    (
        [("content-type", "text/plain")],
        "contact ada@example.com for details",
    )
        .into_response()
}
