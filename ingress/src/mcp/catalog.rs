//! Each upstream server's tools, as agents see them.
//!
//! The list is fetched by a connection of the gateway's own (it only lists, never calls), kept
//! for `mcp.catalog_ttl_secs`, and filtered per caller: the specification lets a list vary with
//! the authorization of the request, and a tool the caller may not call is one it never sees.
//! Names are `<server>__<tool>`; an upstream tool whose name would not be a valid MCP tool name
//! that way is left out (and counted).

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use callproof_config::TOOL_NAME_SEPARATOR;
use rmcp::model::Tool;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::Server;
use super::upstream::{Upstream, UpstreamError};

/// Longest tool name the specification recommends clients accept.
const MAX_TOOL_NAME: usize = 128;

/// A server's tool list, and the connection that lists it.
#[derive(Default)]
pub struct Catalog {
    /// Held while listing, so concurrent callers wait for one listing instead of each starting
    /// their own.
    state: Mutex<CatalogState>,
}

#[derive(Default)]
struct CatalogState {
    listed: Option<(Instant, Arc<Vec<Tool>>)>,
    connection: Option<Upstream>,
}

/// The name agents see for `tool` of `server`, if it makes a valid MCP tool name.
pub fn exposed_name(server: &str, tool: &str) -> Option<String> {
    let name = format!("{server}{TOOL_NAME_SEPARATOR}{tool}");
    let valid = !tool.is_empty()
        && name.len() <= MAX_TOOL_NAME
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.'));
    valid.then_some(name)
}

/// Splits an exposed name at its first separator: server names hold no `_`.
pub fn split_name(name: &str) -> Option<(&str, &str)> {
    name.split_once(TOOL_NAME_SEPARATOR)
}

impl Server {
    /// The server's tools, listed again once older than `ttl`. A listing that fails drops the
    /// connection (the next one reconnects) and is an error: the gateway offers no tool it
    /// cannot currently confirm.
    pub async fn tools(&self, ttl: Duration) -> Result<Arc<Vec<Tool>>, UpstreamError> {
        let mut state = self.catalog.state.lock().await;
        if let Some((at, tools)) = &state.listed
            && at.elapsed() < ttl
        {
            return Ok(tools.clone());
        }
        if state.connection.is_none() {
            state.connection =
                Some(Upstream::connect(self.http.clone(), self.upstream.clone()).await?);
        }
        let listed = match &state.connection {
            Some(connection) => connection.list_tools().await,
            None => Err(UpstreamError::Unreachable),
        };
        match listed {
            Ok(tools) => {
                let hidden = tools
                    .iter()
                    .filter(|tool| exposed_name(&self.name, &tool.name).is_none())
                    .count();
                if hidden > 0 {
                    tracing::warn!(server = %self.name, hidden, "upstream tools left out: their names would not be valid as <server>__<tool>");
                    metrics::counter!("callproof_mcp_tools_hidden_total", "server" => self.name.clone())
                        .increment(hidden as u64);
                }
                let tools = Arc::new(tools);
                state.listed = Some((Instant::now(), tools.clone()));
                Ok(tools)
            }
            Err(error) => {
                if let Some(connection) = state.connection.take() {
                    connection.close().await;
                }
                state.listed = None;
                Err(error)
            }
        }
    }

    /// How long the current listing stays fresh.
    pub async fn ttl_left(&self, ttl: Duration) -> Duration {
        let state = self.catalog.state.lock().await;
        state
            .listed
            .as_ref()
            .map_or(Duration::ZERO, |(at, _)| ttl.saturating_sub(at.elapsed()))
    }
}

/// Where a `tools/list` page starts: after the last name of the page before. A cursor only moves
/// within the caller's own view, so a forged one reveals nothing, and pages stay stable while
/// the catalog changes.
#[derive(Serialize, Deserialize)]
struct Cursor {
    after: String,
}

pub fn encode_cursor(after: &str) -> String {
    let cursor = Cursor {
        after: after.to_string(),
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&cursor).unwrap_or_default())
}

/// The name a page starts after; `None` when the cursor is not one of ours.
pub fn decode_cursor(cursor: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    serde_json::from_slice::<Cursor>(&bytes)
        .ok()
        .map(|cursor| cursor.after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_join_and_split_at_the_first_separator() {
        assert_eq!(
            exposed_name("crm", "get_customer").as_deref(),
            Some("crm__get_customer")
        );
        assert_eq!(
            split_name("crm__get__customer"),
            Some(("crm", "get__customer"))
        );
        assert_eq!(exposed_name("crm", "has space"), None);
        assert_eq!(exposed_name("crm", ""), None);
        assert_eq!(exposed_name("crm", &"x".repeat(124)), None);
        assert!(exposed_name("crm", &"x".repeat(123)).is_some());
    }

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        assert_eq!(
            decode_cursor(&encode_cursor("crm__echo")).as_deref(),
            Some("crm__echo")
        );
        assert_eq!(decode_cursor("not-a-cursor"), None);
        assert_eq!(decode_cursor(&URL_SAFE_NO_PAD.encode(b"{\"x\":1}")), None);
    }
}
