//! The demo MCP server: three tools served over Streamable HTTP at `/mcp` with the official Rust
//! SDK (`rmcp`), for the quick start to put behind the gateway. `lookup_customer` answers with
//! an e-mail address and a card number (the gateway masks them before the agent sees them),
//! `refund` is the tool the quick start's policy holds for approval, `echo` says back what it
//! is given. Every request must carry the credential the gateway holds for this server: an
//! agent's own token is refused here, which is how the quick start shows it never arrives.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, Implementation, ServerCapabilities, ServerInfo};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct LookupCustomer {
    /// The customer's number.
    pub customer_id: u64,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct Refund {
    /// The order to refund.
    pub order_id: String,
    /// The amount to refund, in whole currency units.
    pub amount: u64,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct Echo {
    pub message: String,
}

#[derive(Clone)]
pub struct DemoTools {
    tool_router: ToolRouter<Self>,
}

impl Default for DemoTools {
    fn default() -> Self {
        DemoTools {
            tool_router: Self::tool_router(),
        }
    }
}

#[tool_router]
impl DemoTools {
    #[tool(description = "Look a customer up by number: name, e-mail, card on file and tier.")]
    fn lookup_customer(
        &self,
        Parameters(LookupCustomer { customer_id }): Parameters<LookupCustomer>,
    ) -> CallToolResult {
        // The same record as text (JSON) and as structuredContent: both are masked upstream of
        // the agent.
        CallToolResult::structured(json!({
            "customer_id": customer_id,
            "name": "Ada Lovelace",
            "email": "ada@example.com",
            "card_number": "4111 1111 1111 1111",
            "tier": "gold",
        }))
    }

    #[tool(description = "Refund an amount on an order. Returns the refund's confirmation.")]
    fn refund(
        &self,
        Parameters(Refund { order_id, amount }): Parameters<Refund>,
    ) -> CallToolResult {
        let refund_id = format!("rf_{}", uuid::Uuid::new_v4().simple());
        tracing::info!(%order_id, amount, %refund_id, "refund executed");
        CallToolResult::structured(json!({
            "refund_id": refund_id,
            "order_id": order_id,
            "refunded": amount,
            "status": "refunded",
        }))
    }

    #[tool(description = "Say the message back.")]
    fn echo(&self, Parameters(Echo { message }): Parameters<Echo>) -> String {
        message
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for DemoTools {
    fn get_info(&self) -> ServerInfo {
        ServerInfo::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "callproof-demo-mcp",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions("Demo tools for the callproof quick start.")
    }
}

/// `/mcp`, answering only requests that carry `Authorization: Bearer <expected_token>`, and
/// `/healthz` (open, for the quick start to wait on).
pub fn router(expected_token: String) -> axum::Router {
    let service: StreamableHttpService<DemoTools, LocalSessionManager> = StreamableHttpService::new(
        || Ok(DemoTools::default()),
        Arc::default(),
        // Loopback `Host`s only (rmcp's default): a web page cannot reach it by DNS rebinding.
        StreamableHttpServerConfig::default(),
    );
    axum::Router::new()
        .nest_service("/mcp", service)
        .layer(middleware::from_fn_with_state(
            Arc::new(format!("Bearer {expected_token}")),
            require_credential,
        ))
        // After the layer, which covers only the routes before it.
        .route("/healthz", get(|| async { "ok\n" }))
}

async fn require_credential(
    State(expected): State<Arc<String>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    if presented == Some(expected.as_str()) {
        return next.run(request).await;
    }
    // Anything else, an agent's own token included, is not the gateway.
    tracing::warn!(
        presented = presented.is_some(),
        "refused a request without the gateway's credential"
    );
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "missing or wrong service credential\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests;
