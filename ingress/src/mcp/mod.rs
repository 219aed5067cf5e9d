//! The MCP gateway (issue 16): callproof as the MCP server agents talk to at `/mcp`, and as the
//! MCP client of each configured upstream server (`[mcp.servers.<name>]`), whose tools it offers
//! as `<server>__<tool>`.
//!
//! A `tools/call` is a call like `POST /v1/functions/{name}/invoke`: authenticated (a token for
//! this endpoint's own resource URI), authorized by the tool's policy (deny by default; a tool the
//! caller may not call is hidden and answers as unknown), arguments masked before the upstream
//! sees them and results before the agent does, lifecycle events acknowledged by Kafka before the
//! upstream is called and before the answer leaves, and the gateway's credential upstream, never
//! the agent's token. The event's `function` is `mcp:<server>__<tool>` and its `mcp` record holds
//! the method, tool, session (hashed), JSON-RPC id and how the upstream answered.
//!
//! - `endpoint.rs`: the HTTP handler (both protocol eras on one endpoint) and its checks;
//! - `jsonrpc.rs`: the envelope and the error codes;
//! - `sessions.rs`: sessions of legacy-era agents, and the upstream connections per agent;
//! - `catalog.rs`: each server's tool list, the names agents see, and paging;
//! - `call.rs`: `tools/call` on the gateway's call flow, and masking of results;
//! - `hold.rs`: a `tools/call` held for its approvers, and the same call made again;
//! - `upstream/`: rmcp's MCP client over the gateway's HTTP backend.

mod call;
mod catalog;
mod endpoint;
mod hold;
pub mod jsonrpc;
mod sessions;
pub mod upstream;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use callproof_config::policy::Vocabulary;
use callproof_config::{Config, McpProtocol, McpServerConfig, McpToolConfig};
use rmcp::model::ProtocolVersion;

use crate::AppState;
use crate::approval::ApprovalPolicy;
use crate::function::{Policy, credential_header};

pub use call::forward_approved;
pub use catalog::exposed_name;

use self::catalog::Catalog;
use self::sessions::{Clients, Sessions};
use self::upstream::{UpstreamConfig, UpstreamHttp, UpstreamProtocol};

/// Events of a tool call name it `mcp:<server>__<tool>`.
pub const MCP_FUNCTION_PREFIX: &str = "mcp:";

/// Whether a call's `function` is an MCP tool call.
pub fn is_mcp_call(function: &str) -> bool {
    function.starts_with(MCP_FUNCTION_PREFIX)
}

/// The revisions `/mcp` speaks, newest first.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["2026-07-28", "2025-11-25", "2025-06-18"];
/// The stateless revision: no `initialize`, no sessions, `_meta` on every request.
pub const MODERN_VERSION: &str = "2026-07-28";

/// The MCP gateway's compiled configuration and state.
pub struct Mcp {
    /// The audience tokens must carry here (RFC 8707).
    pub resource: String,
    /// Where the protected resource metadata (RFC 9728) is served.
    pub metadata_url: String,
    issuer: String,
    allowed_origins: Vec<String>,
    scopes: Vec<String>,
    max_message_bytes: usize,
    list_page_size: usize,
    catalog_ttl: Duration,
    /// How long a `tools/call` that needs approval holds the agent.
    hold_wait: Duration,
    /// How often a held agent hears that it is still waiting.
    hold_progress: Duration,
    instructions: Option<String>,
    pub servers: BTreeMap<String, Server>,
    sessions: Sessions,
    clients: Clients,
}

/// One upstream MCP server.
pub struct Server {
    pub name: String,
    upstream: UpstreamConfig,
    http: UpstreamHttp,
    default: Option<ToolPolicy>,
    tools: HashMap<String, ToolPolicy>,
    catalog: Catalog,
}

/// Who may call a tool, what is masked, and whether a call waits for approval.
pub struct ToolPolicy {
    pub policy: Policy,
    pub approval: Option<ApprovalPolicy>,
}

impl Server {
    /// The policy of `tool`: its own table, else the server's `default`, else none (hidden).
    pub fn policy_of(&self, tool: &str) -> Option<&ToolPolicy> {
        self.tools.get(tool).or(self.default.as_ref())
    }

    pub fn call_timeout(&self) -> Duration {
        self.upstream.call_timeout
    }
}

impl Mcp {
    /// `None` when the deployment has no `[mcp]` table.
    pub fn build(config: &Config, public_url: &str) -> anyhow::Result<Option<Mcp>> {
        let Some(mcp) = &config.mcp else {
            return Ok(None);
        };
        let ingress = &config.ingress;
        let issuer = config
            .oidc
            .as_ref()
            .map(|oidc| oidc.issuer.clone())
            .context("`[mcp]` needs `[oidc]`")?;
        let vocabulary = Vocabulary {
            claims: &ingress.policy_claims,
        };
        let client = crate::upstream::client().context("cannot build the MCP HTTP client")?;
        let mut servers = BTreeMap::new();
        for (name, server) in &mcp.servers {
            servers.insert(
                name.clone(),
                compile_server(name, server, ingress, vocabulary, client.clone())?,
            );
        }
        let resource = mcp.resource_uri(public_url);
        Ok(Some(Mcp {
            metadata_url: metadata_url(&resource)?,
            resource,
            issuer,
            allowed_origins: mcp.allowed_origins.clone(),
            scopes: mcp.scopes.clone(),
            max_message_bytes: mcp.max_message_bytes.unwrap_or(ingress.max_request_bytes),
            list_page_size: mcp.list_page_size,
            instructions: mcp.instructions.clone(),
            servers,
            sessions: Sessions::new(
                Duration::from_secs(mcp.session_idle_secs),
                mcp.max_sessions_per_caller,
            ),
            clients: Clients::new(Duration::from_secs(mcp.session_idle_secs)),
            catalog_ttl: Duration::from_secs(mcp.catalog_ttl_secs),
            hold_wait: Duration::from_secs(
                mcp.hold_wait_secs.unwrap_or(ingress.approval_max_wait_secs),
            ),
            hold_progress: Duration::from_secs(mcp.hold_progress_secs),
        }))
    }

    /// The server, upstream tool name and policy of a call's `function` (`mcp:<server>__<tool>`).
    pub fn tool_of<'s, 'f>(
        &'s self,
        function: &'f str,
    ) -> Option<(&'s Server, &'f str, &'s ToolPolicy)> {
        let name = function.strip_prefix(MCP_FUNCTION_PREFIX)?;
        let (server, tool) = catalog::split_name(name)?;
        let server = self.servers.get(server)?;
        let policy = server.policy_of(tool)?;
        Some((server, tool, policy))
    }

    pub fn call_timeout(&self, function: &str) -> Option<Duration> {
        self.tool_of(function)
            .map(|(server, _, _)| server.call_timeout())
    }

    pub fn approval_policy(&self, function: &str) -> Option<&ApprovalPolicy> {
        self.tool_of(function)?.2.approval.as_ref()
    }

    /// The longest approval expiry of any tool, if any tool may need approval.
    pub fn longest_expiry(&self) -> Option<Duration> {
        self.servers
            .values()
            .flat_map(|server| server.default.iter().chain(server.tools.values()))
            .filter_map(|tool| tool.approval.as_ref().map(|approval| approval.expiry))
            .max()
    }

    /// Ends idle sessions and upstream connections now and then.
    pub fn spawn_reaper(app: &Arc<AppState>) {
        let app = Arc::downgrade(app);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tick.tick().await;
                let Some(app) = app.upgrade() else {
                    return;
                };
                if let Some(mcp) = &app.mcp {
                    let ended = mcp.sessions.end_idle();
                    mcp.clients.close_sessions(&ended).await;
                    mcp.clients.close_idle().await;
                }
            }
        });
    }
}

fn compile_server(
    name: &str,
    server: &McpServerConfig,
    ingress: &callproof_config::IngressConfig,
    vocabulary: Vocabulary<'_>,
    client: reqwest::Client,
) -> anyhow::Result<Server> {
    let prefix = format!("mcp.servers.{name}");
    let compile_tool = |key: String, tool: &McpToolConfig| -> anyhow::Result<ToolPolicy> {
        Ok(ToolPolicy {
            policy: Policy::compile(&key, &tool.policy, vocabulary)?,
            approval: tool
                .approval
                .as_ref()
                .map(|approval| ApprovalPolicy::compile(&key, approval, vocabulary))
                .transpose()?,
        })
    };
    let default = server
        .default
        .as_ref()
        .map(|tool| compile_tool(format!("{prefix}.default"), tool))
        .transpose()?;
    let tools = server
        .tools
        .iter()
        .map(|(tool, config)| {
            compile_tool(format!("{prefix}.tools.{tool}"), config).map(|p| (tool.clone(), p))
        })
        .collect::<anyhow::Result<HashMap<_, _>>>()?;
    let credential = credential_header(&server.credential)
        .map_err(|reason| anyhow::anyhow!("`{prefix}.credential`: {reason}"))?;
    let call_timeout =
        Duration::from_millis(server.timeout_ms.unwrap_or(ingress.default_timeout_ms));
    let max_response_bytes = server
        .max_response_bytes
        .unwrap_or(ingress.max_response_bytes);
    let upstream = UpstreamConfig {
        url: server.url.clone(),
        protocol: match server.protocol {
            McpProtocol::Auto => UpstreamProtocol::Auto,
            McpProtocol::V2026_07_28 => UpstreamProtocol::Modern,
            McpProtocol::V2025_11_25 => UpstreamProtocol::Legacy(ProtocolVersion::V_2025_11_25),
            McpProtocol::V2025_06_18 => UpstreamProtocol::Legacy(ProtocolVersion::V_2025_06_18),
        },
        connect_timeout: Duration::from_millis(server.connect_timeout_ms),
        call_timeout,
        max_response_bytes,
    };
    // The HTTP timeout of an answer's head (and of a whole JSON body) must let the longest call
    // finish; rmcp bounds each request itself.
    let http = UpstreamHttp::new(
        client,
        credential,
        max_response_bytes,
        call_timeout.max(upstream.connect_timeout) + Duration::from_secs(1),
    );
    Ok(Server {
        name: name.to_string(),
        upstream,
        http,
        default,
        tools,
        catalog: Catalog::default(),
    })
}

/// Where RFC 9728 puts the metadata of `resource`: its well-known path inserted between the host
/// and the resource's path (`https://gw/mcp` → `https://gw/.well-known/oauth-protected-resource/mcp`).
fn metadata_url(resource: &str) -> anyhow::Result<String> {
    let url = reqwest::Url::parse(resource).context("`mcp.resource` is not a URL")?;
    let origin = url.origin().ascii_serialization();
    let path = url.path().trim_end_matches('/');
    Ok(format!(
        "{origin}/.well-known/oauth-protected-resource{path}"
    ))
}

/// `/mcp` and its protected resource metadata, when `[mcp]` is configured.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/mcp",
            post(endpoint::post)
                .get(endpoint::get)
                .delete(endpoint::delete),
        )
        .route("/.well-known/oauth-protected-resource", get(metadata))
        .route("/.well-known/oauth-protected-resource/mcp", get(metadata))
}

/// RFC 9728 protected resource metadata: which issuer's tokens `/mcp` takes, for what resource.
async fn metadata(State(app): State<Arc<AppState>>) -> axum::response::Response {
    let Some(mcp) = &app.mcp else {
        return crate::ApiError::NotFound("no such endpoint".to_string()).into_response();
    };
    let mut document = serde_json::json!({
        "resource": mcp.resource,
        "authorization_servers": [mcp.issuer],
        "bearer_methods_supported": ["header"],
        "resource_name": "callproof",
    });
    if !mcp.scopes.is_empty() {
        document["scopes_supported"] = serde_json::json!(mcp.scopes);
    }
    (
        [(header::CACHE_CONTROL, "max-age=300")],
        axum::Json(document),
    )
        .into_response()
}
