//! The pages, as `askama` templates (`console/templates/`), escaped by default. Each page struct
//! names the template it fills; [`render`] turns one into an answer.

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

use crate::AppState;
use crate::audit::{LogView, ProofView, SearchForm, SearchHit, TimelineView};
use crate::auth::SignedIn;
use crate::error::ConsoleError;
use crate::inbox::CallCard;

/// What every signed-in page shows around its content.
pub struct Layout {
    pub name: String,
    pub subject: String,
    pub issuer: String,
    pub csrf: String,
    pub auditor_pages: bool,
}

impl Layout {
    pub async fn new(
        app: &AppState,
        user: &SignedIn,
        session: &Session,
    ) -> Result<Layout, ConsoleError> {
        Ok(Layout {
            name: user.display_name().to_string(),
            subject: user.subject.clone(),
            issuer: user.issuer.clone(),
            csrf: crate::csrf::token(session).await?,
            auditor_pages: app.upstream.evidence_url.is_some(),
        })
    }
}

/// A message for the next page, kept in the session (post/redirect/get).
#[derive(Serialize, Deserialize)]
pub struct Flash {
    pub ok: bool,
    pub text: String,
}

const FLASH: &str = "flash";

pub async fn set_flash(session: &Session, ok: bool, text: &str) -> Result<(), ConsoleError> {
    session
        .insert(
            FLASH,
            Flash {
                ok,
                text: text.to_string(),
            },
        )
        .await
        .map_err(|_| ConsoleError::Internal)
}

pub async fn take_flash(session: &Session) -> Option<Flash> {
    session.remove::<Flash>(FLASH).await.ok().flatten()
}

pub fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => {
            let mut response = Html(html).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            response
        }
        Err(error) => {
            tracing::error!(error = %error, "a page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

pub fn render_string(page: &impl Template) -> Option<String> {
    page.render()
        .inspect_err(|error| tracing::error!(error = %error, "a fragment failed to render"))
        .ok()
}

#[derive(Template)]
#[template(path = "signin.html")]
pub struct Signin<'a> {
    pub message: Option<String>,
    pub return_to: &'a str,
}

#[derive(Template)]
#[template(path = "signed_out.html")]
pub struct SignedOut {}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    pub sign_in: bool,
}

#[derive(Template)]
#[template(path = "inbox_list.html")]
pub struct InboxList {
    pub calls: Vec<CallCard>,
    pub csrf: String,
}

#[derive(Template)]
#[template(path = "inbox.html")]
pub struct Inbox {
    pub layout: Layout,
    pub list: InboxList,
    pub decided: Vec<CallCard>,
    pub flash: Option<Flash>,
}

#[derive(Template)]
#[template(path = "call.html")]
pub struct CallPage<'a> {
    pub layout: Layout,
    pub call_id: &'a str,
    pub card: Option<CallCard>,
    pub refusal: Option<String>,
    pub flash: Option<Flash>,
}

#[derive(Template)]
#[template(path = "search.html")]
pub struct Search {
    pub layout: Layout,
    pub form: SearchForm,
    pub hits: Vec<SearchHit>,
    pub searched: bool,
    pub next: Option<String>,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "timeline.html")]
pub struct Timeline {
    pub layout: Layout,
    pub timeline: TimelineView,
}

#[derive(Template)]
#[template(path = "proof.html")]
pub struct Proof {
    pub layout: Layout,
    pub proof: ProofView,
}

#[derive(Template)]
#[template(path = "logs.html")]
pub struct Logs {
    pub layout: Layout,
    pub logs: Vec<LogView>,
    pub verifier_key: String,
    pub integrity: Option<crate::audit::IntegrityView>,
}

#[derive(Template)]
#[template(path = "report.html")]
pub struct Report {
    pub layout: Layout,
    pub from: String,
    pub to: String,
    pub links: Option<crate::audit::ReportLinks>,
}

/// An MCP tool as the pages name it: the upstream server and the tool there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpTool {
    pub server: String,
    pub tool: String,
}

impl McpTool {
    /// The tool of a call through the gateway's `/mcp`: from the event's `mcp` record when it
    /// names both server and tool, else from the function name the gateway gives such a call,
    /// `mcp:<server>__<tool>` (split at the first `__`, as the gateway splits it). `None` for a
    /// function called over HTTP.
    pub fn of(function: &str, record: Option<&serde_json::Value>) -> Option<McpTool> {
        let named = |key: &str| {
            record
                .and_then(|record| record.get(key))
                .and_then(serde_json::Value::as_str)
                .filter(|name| !name.is_empty())
        };
        if let (Some(server), Some(tool)) = (named("server"), named("tool")) {
            return Some(McpTool {
                server: server.to_string(),
                tool: tool.to_string(),
            });
        }
        let (server, tool) = function.strip_prefix("mcp:")?.split_once("__")?;
        (!server.is_empty() && !tool.is_empty()).then(|| McpTool {
            server: server.to_string(),
            tool: tool.to_string(),
        })
    }
}

impl std::fmt::Display for McpTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MCP tool {} on server {}", self.tool, self.server)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_mcp_tool_is_named_from_its_record_or_else_its_function_name() {
        let tool = |server: &str, tool: &str| {
            Some(McpTool {
                server: server.into(),
                tool: tool.into(),
            })
        };
        assert_eq!(McpTool::of("mcp:crm__refund", None), tool("crm", "refund"));
        // The gateway splits at the first separator: the rest is the tool's own name.
        assert_eq!(
            McpTool::of("mcp:crm__get__customer", None),
            tool("crm", "get__customer")
        );
        // The record wins: it is what the gateway recorded, not a reading of a name.
        let record = json!({"method": "tools/call", "server": "billing", "tool": "refund"});
        assert_eq!(
            McpTool::of("mcp:crm__refund", Some(&record)),
            tool("billing", "refund")
        );
        // A record without the tool (a denied unknown name) falls back to the name.
        let partial = json!({"method": "tools/call", "server": null, "tool": null});
        assert_eq!(
            McpTool::of("mcp:crm__refund", Some(&partial)),
            tool("crm", "refund")
        );
        for function in ["refund", "mcp:crm", "mcp:__refund", "mcp:crm__"] {
            assert_eq!(McpTool::of(function, None), None, "{function}");
        }
        assert_eq!(
            tool("crm", "refund").unwrap().to_string(),
            "MCP tool refund on server crm"
        );
    }
}
