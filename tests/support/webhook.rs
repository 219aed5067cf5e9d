//! A webhook receiver: an HTTP server that records every JSON message POSTed to it, as a chat
//! service's incoming webhook would receive the gateway's notifications.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::Value;

type Messages = Arc<Mutex<Vec<Value>>>;

pub struct WebhookReceiver {
    /// The URL to configure as the webhook: `http://127.0.0.1:<port>/hook`.
    pub url: String,
    messages: Messages,
}

impl WebhookReceiver {
    pub async fn start() -> anyhow::Result<WebhookReceiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let messages: Messages = Arc::new(Mutex::new(Vec::new()));
        let router = Router::new()
            .route("/hook", post(receive))
            .with_state(messages.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(WebhookReceiver { url, messages })
    }

    pub fn messages(&self) -> Vec<Value> {
        self.messages
            .lock()
            .map(|messages| messages.clone())
            .unwrap_or_default()
    }

    /// Waits up to `timeout` for a message whose text contains `needle`.
    pub async fn wait_for(&self, needle: &str, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.messages().into_iter().find(|message| {
                message["text"]
                    .as_str()
                    .is_some_and(|text| text.contains(needle))
            });
            if found.is_some() || Instant::now() > deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(State(messages): State<Messages>, body: axum::body::Bytes) -> &'static str {
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Ok(mut messages) = messages.lock() {
        messages.push(value);
    }
    "ok"
}
