//! `UpstreamHttp`: rmcp's Streamable HTTP client transport runs over this backend, built on the
//! gateway's own reqwest 0.12 client (`crate::upstream::client()`: no redirects, which could carry
//! the credential elsewhere) instead of rmcp's reqwest 0.13 backend.
//!
//! Adapted from rmcp 3.1.4, `src/transport/common/reqwest/streamable_http_client.rs` and the SSE
//! event size limiter of `src/transport/common/client_side_sse.rs` (Copyright the Model Context
//! Protocol authors, Apache-2.0, <https://github.com/modelcontextprotocol/rust-sdk>). Changes:
//! - the only credential sent is the one configured for the upstream; rmcp's `auth_header` and
//!   any `Authorization` among the custom headers are dropped, never forwarded;
//! - JSON answers are read up to `max_response_bytes`, SSE events up to rmcp's
//!   `max_sse_event_size`, and the head of an answer (and a whole JSON body) within
//!   `answer_timeout`;
//! - 401 and 403 are `UpstreamHttpError::Auth` (the gateway's credential is wrong, not the
//!   agent's), 404 on a request that carried a session is `SessionExpired` (rmcp re-initializes);
//! - a JSON-RPC error answered with an HTTP error status belongs to the request of that POST
//!   (one message per POST): its id is set to that request's when the server could not echo it
//!   (Python SDK 1.x answers `"id": "server-error"`), so the error reaches the waiting request;
//! - a request answered with JSON that is not a JSON-RPC message is an error, not "accepted".

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use rmcp::model::{ClientJsonRpcMessage, JsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::common::http_header::{
    EVENT_STREAM_MIME_TYPE, HEADER_LAST_EVENT_ID, HEADER_SESSION_ID, JSON_MIME_TYPE,
};
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
};
use sse_stream::{Sse, SseStream};

/// Why a request to an upstream MCP server failed below the MCP layer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamHttpError {
    #[error("upstream refused the gateway's credential (HTTP {status})")]
    Auth { status: u16 },
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream is unreachable")]
    Unreachable(#[source] reqwest::Error),
    #[error("upstream answered with more than {0} bytes")]
    ResponseTooLarge(usize),
    #[error("upstream's answer broke off")]
    Broken(#[source] reqwest::Error),
    #[error("upstream answered HTTP {status} without a JSON-RPC error")]
    Status { status: u16 },
}

type HttpResult<T> = Result<T, StreamableHttpError<UpstreamHttpError>>;

/// The HTTP backend of one upstream MCP server. Cheap to clone (rmcp clones it per stream).
#[derive(Clone)]
pub struct UpstreamHttp {
    client: reqwest::Client,
    credential: Option<(HeaderName, HeaderValue)>,
    max_response_bytes: usize,
    answer_timeout: Duration,
}

impl std::fmt::Debug for UpstreamHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamHttp")
            .field(
                "credential",
                &self.credential.as_ref().map(|(name, _)| name),
            )
            .field("max_response_bytes", &self.max_response_bytes)
            .field("answer_timeout", &self.answer_timeout)
            .finish()
    }
}

impl UpstreamHttp {
    /// `client` should come from `crate::upstream::client()`. `credential` is the header the
    /// upstream expects from the gateway (its value is marked sensitive here); `answer_timeout`
    /// bounds the wait for the head of every answer and for a whole JSON body, so it must be at
    /// least the longest tool call expected from a server that answers calls with JSON.
    pub fn new(
        client: reqwest::Client,
        credential: Option<(HeaderName, HeaderValue)>,
        max_response_bytes: usize,
        answer_timeout: Duration,
    ) -> Self {
        let credential = credential.map(|(name, mut value)| {
            value.set_sensitive(true);
            (name, value)
        });
        UpstreamHttp {
            client,
            credential,
            max_response_bytes,
            answer_timeout,
        }
    }

    /// The headers of one request: rmcp's (protocol version, `Mcp-Method`…), then the credential.
    fn headers(
        &self,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        session_id: Option<&str>,
    ) -> HttpResult<HeaderMap> {
        let mut headers = HeaderMap::new();
        for (name, value) in custom_headers {
            if is_reserved(&name) {
                return Err(StreamableHttpError::ReservedHeaderConflict(
                    name.as_str().to_string(),
                ));
            }
            if name == header::AUTHORIZATION {
                tracing::warn!("dropped an Authorization header meant for an upstream MCP server");
                continue;
            }
            headers.insert(name, value);
        }
        if let Some(session_id) = session_id {
            let value = HeaderValue::from_str(session_id).map_err(|_| {
                StreamableHttpError::UnexpectedServerResponse(Cow::Borrowed(
                    "session id is not a valid header value",
                ))
            })?;
            headers.insert(HeaderName::from_static("mcp-session-id"), value);
        }
        if let Some((name, value)) = &self.credential {
            headers.insert(name.clone(), value.clone());
        }
        Ok(headers)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> HttpResult<reqwest::Response> {
        match tokio::time::timeout(self.answer_timeout, request.send()).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(StreamableHttpError::Client(classify(
                error,
                self.answer_timeout,
            ))),
            Err(_) => Err(StreamableHttpError::Client(UpstreamHttpError::Timeout(
                self.answer_timeout,
            ))),
        }
    }

    /// The whole body, at most `max_response_bytes`, within `answer_timeout`.
    async fn body(&self, mut response: reqwest::Response) -> HttpResult<Bytes> {
        let limit = self.max_response_bytes;
        if response
            .content_length()
            .is_some_and(|length| length > limit as u64)
        {
            return Err(StreamableHttpError::Client(
                UpstreamHttpError::ResponseTooLarge(limit),
            ));
        }
        let read = async {
            let mut body = BytesMut::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|error| classify(error, self.answer_timeout))?
            {
                if body.len() + chunk.len() > limit {
                    return Err(UpstreamHttpError::ResponseTooLarge(limit));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body.freeze())
        };
        match tokio::time::timeout(self.answer_timeout, read).await {
            Ok(result) => result.map_err(StreamableHttpError::Client),
            Err(_) => Err(StreamableHttpError::Client(UpstreamHttpError::Timeout(
                self.answer_timeout,
            ))),
        }
    }
}

impl StreamableHttpClient for UpstreamHttp {
    type Error = UpstreamHttpError;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> HttpResult<StreamableHttpPostResponse> {
        self.post_message_with_max_sse_event_size(
            uri,
            message,
            session_id,
            auth_header,
            custom_headers,
            DEFAULT_MAX_SSE_EVENT_BYTES,
        )
        .await
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> HttpResult<StreamableHttpPostResponse> {
        let session_was_attached = session_id.is_some();
        let mut headers = self.headers(custom_headers, session_id.as_deref())?;
        headers.insert(header::ACCEPT, HeaderValue::from_static(ACCEPT_BOTH));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(JSON_MIME_TYPE),
        );
        let body = serde_json::to_vec(&message)?;
        let request = self
            .client
            .request(Method::POST, uri.as_ref())
            .headers(headers)
            .body(body);
        let response = self.send(request).await?;
        let status = response.status();
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Err(StreamableHttpError::Client(UpstreamHttpError::Auth {
                status: status.as_u16(),
            }));
        }
        if matches!(status, StatusCode::ACCEPTED | StatusCode::NO_CONTENT) {
            return Ok(StreamableHttpPostResponse::Accepted);
        }
        if status == StatusCode::NOT_FOUND && session_was_attached {
            return Err(StreamableHttpError::SessionExpired);
        }
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        let new_session_id = response
            .headers()
            .get(HEADER_SESSION_ID)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let is_request = matches!(message, JsonRpcMessage::Request(_));
        // Spec: 202 for notifications and responses; some servers answer an empty 200.
        if status.is_success() && response.content_length() == Some(0) && !is_request {
            return Ok(StreamableHttpPostResponse::Accepted);
        }
        let is_json = content_type
            .as_deref()
            .is_some_and(|value| value.starts_with(JSON_MIME_TYPE));
        if !status.is_success() {
            let body = if is_json {
                Some(self.body(response).await?)
            } else {
                None
            };
            let error = body.and_then(|body| jsonrpc_error_of(&body, &message));
            return match error {
                Some(error) => Ok(StreamableHttpPostResponse::Json(error, new_session_id)),
                None => Err(StreamableHttpError::Client(UpstreamHttpError::Status {
                    status: status.as_u16(),
                })),
            };
        }
        match content_type.as_deref() {
            Some(value) if value.starts_with(EVENT_STREAM_MIME_TYPE) => {
                Ok(StreamableHttpPostResponse::Sse(
                    bounded_sse(response, max_sse_event_size),
                    new_session_id,
                ))
            }
            Some(value) if value.starts_with(JSON_MIME_TYPE) => {
                let body = self.body(response).await?;
                match serde_json::from_slice::<ServerJsonRpcMessage>(&body) {
                    Ok(answer) => Ok(StreamableHttpPostResponse::Json(answer, new_session_id)),
                    Err(error) if is_request => Err(StreamableHttpError::Deserialize(error)),
                    Err(error) => {
                        tracing::debug!(%error, "JSON answer to a notification ignored");
                        Ok(StreamableHttpPostResponse::Accepted)
                    }
                }
            }
            _ => Err(StreamableHttpError::UnexpectedContentType(content_type)),
        }
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> HttpResult<()> {
        let headers = self.headers(custom_headers, Some(session_id.as_ref()))?;
        let request = self
            .client
            .request(Method::DELETE, uri.as_ref())
            .headers(headers);
        let response = self.send(request).await?;
        let status = response.status();
        if status == StatusCode::METHOD_NOT_ALLOWED {
            tracing::debug!("upstream does not support deleting its session");
            return Ok(());
        }
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Err(StreamableHttpError::Client(UpstreamHttpError::Auth {
                status: status.as_u16(),
            }));
        }
        if !status.is_success() {
            return Err(StreamableHttpError::Client(UpstreamHttpError::Status {
                status: status.as_u16(),
            }));
        }
        Ok(())
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> HttpResult<BoxStream<'static, Result<Sse, SseError>>> {
        self.get_stream_with_max_sse_event_size(
            uri,
            session_id,
            last_event_id,
            auth_header,
            custom_headers,
            DEFAULT_MAX_SSE_EVENT_BYTES,
        )
        .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> HttpResult<BoxStream<'static, Result<Sse, SseError>>> {
        let mut headers = self.headers(custom_headers, session_id.as_deref())?;
        headers.insert(header::ACCEPT, HeaderValue::from_static(ACCEPT_BOTH));
        if let Some(last_event_id) = last_event_id
            && let Ok(value) = HeaderValue::from_str(&last_event_id)
        {
            headers.insert(HeaderName::from_static("last-event-id"), value);
        }
        let request = self
            .client
            .request(Method::GET, uri.as_ref())
            .headers(headers);
        let response = self.send(request).await?;
        let status = response.status();
        if status == StatusCode::METHOD_NOT_ALLOWED {
            return Err(StreamableHttpError::ServerDoesNotSupportSse);
        }
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Err(StreamableHttpError::Client(UpstreamHttpError::Auth {
                status: status.as_u16(),
            }));
        }
        if !status.is_success() {
            return Err(StreamableHttpError::Client(UpstreamHttpError::Status {
                status: status.as_u16(),
            }));
        }
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        if !content_type
            .as_deref()
            .is_some_and(|value| value.starts_with(EVENT_STREAM_MIME_TYPE))
        {
            return Err(StreamableHttpError::UnexpectedContentType(content_type));
        }
        Ok(bounded_sse(response, max_sse_event_size))
    }
}

/// rmcp's default, used only if a caller bypasses the transport's configured limit.
const DEFAULT_MAX_SSE_EVENT_BYTES: usize = 16 * 1024 * 1024;

const ACCEPT_BOTH: &str = "application/json, text/event-stream";

/// Headers rmcp reserves for itself; `MCP-Protocol-Version` is reserved too but rmcp passes it
/// among the custom headers on purpose.
fn is_reserved(name: &HeaderName) -> bool {
    name == header::ACCEPT
        || name.as_str().eq_ignore_ascii_case(HEADER_SESSION_ID)
        || name.as_str().eq_ignore_ascii_case(HEADER_LAST_EVENT_ID)
}

fn classify(error: reqwest::Error, timeout: Duration) -> UpstreamHttpError {
    if error.is_timeout() {
        UpstreamHttpError::Timeout(timeout)
    } else if error.is_connect() || error.is_request() {
        UpstreamHttpError::Unreachable(error)
    } else {
        UpstreamHttpError::Broken(error)
    }
}

/// The JSON-RPC error in an HTTP error answer, attributed to the request of that POST.
fn jsonrpc_error_of(body: &[u8], sent: &ClientJsonRpcMessage) -> Option<ServerJsonRpcMessage> {
    match serde_json::from_slice::<ServerJsonRpcMessage>(body) {
        Ok(JsonRpcMessage::Error(mut error)) => {
            if let JsonRpcMessage::Request(request) = sent
                && error.id.as_ref() != Some(&request.id)
            {
                error.id = Some(request.id.clone());
            }
            Some(JsonRpcMessage::Error(error))
        }
        _ => None,
    }
}

/// Why an SSE body was cut off.
#[derive(Debug, thiserror::Error)]
enum SseBodyError {
    #[error("SSE event exceeded the maximum size of {0} bytes")]
    EventTooLarge(usize),
    #[error("upstream's event stream broke off")]
    Body(#[source] reqwest::Error),
}

/// The SSE events of `response`, failing (and ending) at the first event larger than
/// `max_event_bytes`, counted on the raw bytes before parsing.
fn bounded_sse(
    response: reqwest::Response,
    max_event_bytes: usize,
) -> BoxStream<'static, Result<Sse, SseError>> {
    let bytes = response.bytes_stream().scan(
        (EventSizeLimiter::new(max_event_bytes), false),
        |(limiter, failed), chunk| {
            let item = if *failed {
                None
            } else {
                match chunk {
                    Ok(chunk) if limiter.observe(&chunk) => Some(Ok(chunk)),
                    Ok(_) => {
                        *failed = true;
                        tracing::warn!(
                            max_event_bytes = limiter.max_bytes,
                            "upstream sent an SSE event over the limit"
                        );
                        Some(Err(SseBodyError::EventTooLarge(limiter.max_bytes)))
                    }
                    Err(error) => {
                        *failed = true;
                        Some(Err(SseBodyError::Body(error)))
                    }
                }
            };
            std::future::ready(item)
        },
    );
    SseStream::from_bytes_stream(bytes).boxed()
}

/// Size of the SSE event being received, as the parser will retain it: data lines plus one
/// byte each for the newline that joins them; comments do not count; a blank line ends an event.
/// (rmcp's `SseEventSizeLimiter`.)
#[derive(Debug)]
pub(super) struct EventSizeLimiter {
    max_bytes: usize,
    retained_bytes: usize,
    line_bytes: usize,
    line_is_comment: bool,
    previous_was_cr: bool,
}

impl EventSizeLimiter {
    pub(super) fn new(max_bytes: usize) -> Self {
        EventSizeLimiter {
            max_bytes,
            retained_bytes: 0,
            line_bytes: 0,
            line_is_comment: false,
            previous_was_cr: false,
        }
    }

    /// False once an event exceeds the limit.
    pub(super) fn observe(&mut self, chunk: &[u8]) -> bool {
        for &byte in chunk {
            if self.previous_was_cr {
                self.previous_was_cr = false;
                if byte == b'\n' {
                    continue;
                }
            }
            match byte {
                b'\r' => {
                    self.finish_line();
                    self.previous_was_cr = true;
                }
                b'\n' => self.finish_line(),
                _ => {
                    if self.line_bytes == 0 {
                        self.line_is_comment = byte == b':';
                    }
                    self.line_bytes = self.line_bytes.saturating_add(1);
                }
            }
            if self.retained_bytes.saturating_add(self.line_bytes) > self.max_bytes {
                return false;
            }
        }
        true
    }

    fn finish_line(&mut self) {
        if self.line_bytes == 0 {
            self.retained_bytes = 0;
        } else if !self.line_is_comment {
            self.retained_bytes = self
                .retained_bytes
                .saturating_add(self.line_bytes)
                .saturating_add(1);
        }
        self.line_bytes = 0;
        self.line_is_comment = false;
    }
}
