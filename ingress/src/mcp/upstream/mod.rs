//! The gateway as the MCP client of an upstream MCP server: rmcp's client (handshake in either
//! protocol era, sessions, SSE, request ids, progress tokens, `Mcp-Method`/`Mcp-Name` headers)
//! over `UpstreamHttp`, the gateway's own HTTP backend.
//!
//! The gateway declares no client capabilities (no sampling, elicitation or roots), so an upstream
//! may not send those requests; any that arrive get -32601 from `GatewayClient` and are logged.

pub mod http;

use std::time::Duration;

use futures::{FutureExt, StreamExt};
use rmcp::handler::client::progress::ProgressDispatcher;
// Sampling and roots are deprecated since 2026-07-28 (SEP-2577), but a legacy upstream may still
// ask for them: `GatewayClient` refuses them.
#[allow(deprecated)]
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, CancelledNotification,
    CancelledNotificationParam, ClientCapabilities, ClientInfo, ClientNotification, ClientRequest,
    CreateMessageRequestMethod, CreateMessageRequestParams, CreateMessageResult, CustomRequest,
    ElicitRequestParams, ElicitResult, ElicitationCreateRequestMethod, ErrorData, Implementation,
    ListRootsRequestMethod, ListRootsResult, ListToolsRequest, PaginatedRequestParams,
    ProgressNotificationParam, ProtocolVersion, ServerResult, Tool,
};
use rmcp::service::{
    ClientInitializeError, NotificationContext, PeerRequestOptions, RequestContext, RunningService,
    ServiceError,
};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClientTransportConfig, StreamableHttpError,
};
use rmcp::{ClientCacheConfig, ClientHandler, ClientLifecycleMode, ClientServiceExt, RoleClient};
use tokio_util::sync::CancellationToken;

pub use self::http::{UpstreamHttp, UpstreamHttpError};

/// At most this many `tools/list` pages are followed for one listing.
pub const MAX_TOOL_PAGES: usize = 100;
/// At most this many tools are accepted from one upstream.
pub const MAX_TOOLS: usize = 10_000;

/// The gateway's outgoing HTTP client (no redirects), for `UpstreamHttp::new`.
pub fn http_client() -> reqwest::Result<reqwest::Client> {
    crate::upstream::client()
}

/// Which protocol era to speak to an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// `server/discover` for 2026-07-28, falling back to the `initialize` handshake (2025-11-25
    /// offered) when the server answers it as a legacy server does.
    Auto,
    /// 2026-07-28 only (stateless).
    Modern,
    /// The `initialize` handshake offering this version.
    Legacy(ProtocolVersion),
}

/// How to reach one upstream MCP server.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The Streamable HTTP endpoint, e.g. `https://mcp.crm.internal/mcp`.
    pub url: String,
    pub protocol: UpstreamProtocol,
    /// Bounds the handshake and each `tools/list` page.
    pub connect_timeout: Duration,
    /// Bounds one `tools/call`.
    pub call_timeout: Duration,
    /// Largest JSON answer and largest SSE event accepted.
    pub max_response_bytes: usize,
}

/// Why talking to an upstream MCP server failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream refused the gateway's credential (HTTP {status})")]
    Auth { status: u16 },
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream is unreachable")]
    Unreachable,
    #[error("upstream answered with more than {0} bytes")]
    ResponseTooLarge(usize),
    #[error("upstream's answer broke off or was not MCP: {0}")]
    Broken(String),
    #[error("upstream answered JSON-RPC error {code}: {message}", code = .0.code.0, message = .0.message)]
    JsonRpc(ErrorData),
    #[error("upstream answered something other than the expected result")]
    UnexpectedResult,
    #[error("upstream listed more than {MAX_TOOLS} tools or {MAX_TOOL_PAGES} pages")]
    TooManyTools,
    #[error("upstream handshake failed: {0}")]
    Handshake(String),
    #[error("the call was cancelled")]
    Cancelled,
}

/// The gateway's side of an MCP connection to one upstream: no client capabilities, progress
/// routed by token to whoever is waiting for that call.
#[derive(Debug, Clone)]
pub struct GatewayClient {
    info: ClientInfo,
    progress: ProgressDispatcher,
}

impl GatewayClient {
    pub fn new(protocol_version: ProtocolVersion) -> Self {
        let info = ClientInfo::new(
            ClientCapabilities::default(),
            Implementation::new("callproof", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(protocol_version);
        GatewayClient {
            info,
            progress: ProgressDispatcher::new(),
        }
    }
}

#[allow(deprecated)]
impl ClientHandler for GatewayClient {
    fn get_info(&self) -> ClientInfo {
        self.info.clone()
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.handle_notification(params).await;
    }

    async fn create_message(
        &self,
        _params: CreateMessageRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        tracing::warn!("upstream asked for sampling, which the gateway does not offer");
        Err(ErrorData::method_not_found::<CreateMessageRequestMethod>())
    }

    async fn list_roots(
        &self,
        _context: RequestContext<RoleClient>,
    ) -> Result<ListRootsResult, ErrorData> {
        tracing::warn!("upstream asked for roots, which the gateway does not offer");
        Err(ErrorData::method_not_found::<ListRootsRequestMethod>())
    }

    async fn create_elicitation(
        &self,
        _params: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        tracing::warn!("upstream asked for elicitation, which the gateway does not offer");
        Err(ErrorData::method_not_found::<ElicitationCreateRequestMethod>())
    }

    async fn on_custom_request(
        &self,
        request: CustomRequest,
        _context: RequestContext<RoleClient>,
    ) -> Result<rmcp::model::CustomResult, ErrorData> {
        tracing::warn!(method = %request.method, "upstream sent a request the gateway does not offer");
        Err(ErrorData::new(
            rmcp::model::ErrorCode::METHOD_NOT_FOUND,
            request.method,
            None,
        ))
    }
}

/// A connected upstream: one MCP session (legacy era) or one stateless client (2026-07-28).
pub struct Upstream {
    service: RunningService<RoleClient, GatewayClient>,
    progress: ProgressDispatcher,
    config: UpstreamConfig,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("url", &self.config.url)
            .field("protocol_version", &self.protocol_version())
            .finish()
    }
}

impl Upstream {
    /// Connects (handshake or discovery) within `config.connect_timeout`.
    pub async fn connect(
        http: UpstreamHttp,
        config: UpstreamConfig,
    ) -> Result<Self, UpstreamError> {
        let transport_config = StreamableHttpClientTransportConfig::with_uri(config.url.as_str())
            .max_sse_event_size(config.max_response_bytes)
            .reinit_on_expired_session(true);
        let transport = StreamableHttpClientTransport::with_client(http, transport_config);
        let (client, lifecycle) = match &config.protocol {
            UpstreamProtocol::Auto => (
                GatewayClient::new(ProtocolVersion::V_2025_11_25),
                ClientLifecycleMode::Auto {
                    preferred_versions: vec![ProtocolVersion::V_2026_07_28],
                    legacy_version: Some(ProtocolVersion::V_2025_11_25),
                },
            ),
            UpstreamProtocol::Modern => (
                GatewayClient::new(ProtocolVersion::V_2026_07_28),
                ClientLifecycleMode::Discover {
                    preferred_versions: vec![ProtocolVersion::V_2026_07_28],
                },
            ),
            UpstreamProtocol::Legacy(version) => (
                GatewayClient::new(version.clone()),
                ClientLifecycleMode::Initialize,
            ),
        };
        let progress = client.progress.clone();
        let service = tokio::time::timeout(
            config.connect_timeout,
            client.serve_with_lifecycle(transport, lifecycle),
        )
        .await
        .map_err(|_| UpstreamError::Timeout(config.connect_timeout))?
        .map_err(|error| handshake_error(&error))?;
        // The catalog keeps its own TTL: rmcp's response cache (which by default also serves
        // stale lists when the upstream fails) must not stand in for it.
        service
            .peer()
            .set_response_cache_config(ClientCacheConfig::disabled())
            .await;
        tracing::debug!(
            url = %config.url,
            protocol_version = ?service.peer().peer_info().map(|info| info.protocol_version.clone()),
            "connected to upstream MCP server"
        );
        Ok(Upstream {
            service,
            progress,
            config,
        })
    }

    /// The protocol version agreed with the upstream.
    pub fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.service
            .peer()
            .peer_info()
            .map(|info| info.protocol_version.clone())
    }

    /// Every tool of the upstream, following `nextCursor` (each page within `connect_timeout`).
    pub async fn list_tools(&self) -> Result<Vec<Tool>, UpstreamError> {
        let mut tools = Vec::new();
        let mut cursor = None;
        for _ in 0..MAX_TOOL_PAGES {
            let request = ClientRequest::ListToolsRequest(ListToolsRequest {
                method: Default::default(),
                params: Some(PaginatedRequestParams::default().with_cursor(cursor)),
                extensions: Default::default(),
            });
            let options = PeerRequestOptions::with_timeout(self.config.connect_timeout);
            let handle = self
                .service
                .peer()
                .send_cancellable_request(request, options)
                .await
                .map_err(|error| service_error(&error))?;
            let page = match handle.await_response().await {
                Ok(ServerResult::ListToolsResult(page)) => page,
                Ok(_) => return Err(UpstreamError::UnexpectedResult),
                Err(error) => return Err(service_error(&error)),
            };
            tools.extend(page.tools);
            if tools.len() > MAX_TOOLS {
                return Err(UpstreamError::TooManyTools);
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(tools),
            }
        }
        Err(UpstreamError::TooManyTools)
    }

    /// Calls a tool within `call_timeout`. Progress the upstream reports for this call goes to
    /// `on_progress` while the call is active, strictly increasing (others are dropped).
    /// Cancelling `cancel` abandons the call and tells the upstream (legacy:
    /// `notifications/cancelled`; 2026-07-28: the response stream is closed).
    pub async fn call_tool(
        &self,
        params: CallToolRequestParams,
        mut on_progress: impl FnMut(ProgressNotificationParam) + Send,
        cancel: &CancellationToken,
    ) -> Result<CallToolResult, UpstreamError> {
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        let options = PeerRequestOptions::with_timeout(self.config.call_timeout);
        let peer = self.service.peer();
        let handle = peer
            .send_cancellable_request(request, options)
            .await
            .map_err(|error| service_error(&error))?;
        let request_id = handle.id.clone();
        let mut progress = self.progress.subscribe(handle.progress_token.clone()).await;
        let mut last_progress = f64::NEG_INFINITY;
        let mut forward = |update: ProgressNotificationParam| {
            if update.progress > last_progress {
                last_progress = update.progress;
                on_progress(update);
            }
        };
        let response = handle.await_response().fuse();
        futures::pin_mut!(response);
        let outcome = loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break None,
                result = &mut response => break Some(result),
                Some(update) = progress.next() => forward(update),
            }
        };
        let Some(result) = outcome else {
            let notification = ClientNotification::CancelledNotification(
                CancelledNotification::new(CancelledNotificationParam::new(
                    Some(request_id),
                    Some("cancelled by the caller".to_string()),
                )),
            );
            if let Err(error) = peer.send_notification(notification).await {
                tracing::debug!(%error, "could not tell the upstream of a cancelled call");
            }
            return Err(UpstreamError::Cancelled);
        };
        // Progress that arrived with the answer (rmcp hands notifications to tasks of their own).
        while let Some(Some(update)) = progress.next().now_or_never() {
            forward(update);
        }
        match result {
            Ok(ServerResult::CallToolResult(result)) => Ok(result),
            Ok(other) => {
                tracing::warn!(result = ?std::mem::discriminant(&other), "upstream answered tools/call with another result");
                Err(UpstreamError::UnexpectedResult)
            }
            Err(error) => Err(service_error(&error)),
        }
    }

    /// Ends the connection (legacy: DELETEs the upstream session).
    pub async fn close(mut self) {
        if let Err(error) = self.service.close().await {
            tracing::debug!(%error, "upstream connection task failed while closing");
        }
    }
}

/// The most precise cause in an rmcp request error.
fn service_error(error: &ServiceError) -> UpstreamError {
    match error {
        ServiceError::McpError(data) => UpstreamError::JsonRpc(data.clone()),
        ServiceError::Timeout { timeout } => UpstreamError::Timeout(*timeout),
        ServiceError::Cancelled { .. } => UpstreamError::Cancelled,
        ServiceError::UnexpectedResponse => UpstreamError::UnexpectedResult,
        ServiceError::TransportSend(transport) => transport_error(transport.error.as_ref())
            .unwrap_or_else(|| UpstreamError::Broken(transport.error.to_string())),
        other => UpstreamError::Broken(other.to_string()),
    }
}

fn handshake_error(error: &ClientInitializeError) -> UpstreamError {
    match error {
        ClientInitializeError::JsonRpcError(data) => UpstreamError::JsonRpc(data.clone()),
        ClientInitializeError::TransportError {
            error: transport, ..
        } => transport_error(transport.error.as_ref())
            .unwrap_or_else(|| UpstreamError::Handshake(error.to_string())),
        // Discovery failed and so did the handshake after it: the handshake's cause is the one
        // a legacy server gave.
        ClientInitializeError::LegacyFallbackFailed { fallback, .. } => handshake_error(fallback),
        other => UpstreamError::Handshake(other.to_string()),
    }
}

/// `UpstreamHttp`'s own error, when `error` is (or wraps) one.
fn transport_error(error: &(dyn std::error::Error + 'static)) -> Option<UpstreamError> {
    let http = error.downcast_ref::<StreamableHttpError<UpstreamHttpError>>()?;
    Some(match http {
        StreamableHttpError::Client(UpstreamHttpError::Auth { status }) => {
            UpstreamError::Auth { status: *status }
        }
        StreamableHttpError::Client(UpstreamHttpError::Timeout(timeout)) => {
            UpstreamError::Timeout(*timeout)
        }
        StreamableHttpError::Client(UpstreamHttpError::Unreachable(_)) => {
            UpstreamError::Unreachable
        }
        StreamableHttpError::Client(UpstreamHttpError::ResponseTooLarge(limit)) => {
            UpstreamError::ResponseTooLarge(*limit)
        }
        other => UpstreamError::Broken(other.to_string()),
    })
}

#[cfg(test)]
mod tests;
