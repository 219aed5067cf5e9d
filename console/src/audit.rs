//! The auditor pages, over the evidence API with the person's own token (which it refuses, 403,
//! to anyone outside `evidence.auditor_groups`): search with its filters and cursor paging, a
//! call's timeline, an event's proof with the `callproof-verify` command and its files, the logs'
//! checkpoints and the integrity check, the SOC 2 report and the evidence bundle for a period.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use tower_sessions::Session;

use crate::AppState;
use crate::auth::User;
use crate::error::ConsoleError;
use crate::pages::{self, Layout, McpTool};
use crate::upstream::{EVIDENCE, encode, with_query};

/// How long a bundle download may take before the console gives up on it.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(600);

/// The search form: the evidence API's filters, as typed.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct SearchForm {
    pub q: String,
    pub from: String,
    pub to: String,
    pub principal: String,
    pub group: String,
    pub agent: String,
    pub function: String,
    pub kind: String,
    pub decision: String,
    pub detector: String,
    pub reviewer: String,
    pub call_id: String,
    /// Calls through the gateway's `/mcp`: the upstream server, its tool, how it answered.
    pub mcp_server: String,
    pub mcp_tool: String,
    pub mcp_outcome: String,
    pub limit: String,
    pub cursor: String,
}

/// The outcomes the evidence API's `mcp_outcome` filter accepts.
pub const MCP_OUTCOMES: [&str; 4] = ["result", "tool_error", "jsonrpc_error", "transport_error"];

impl SearchForm {
    fn pairs(&self) -> Vec<(&'static str, &str)> {
        [
            ("q", &self.q),
            ("from", &self.from),
            ("to", &self.to),
            ("principal", &self.principal),
            ("group", &self.group),
            ("agent", &self.agent),
            ("function", &self.function),
            ("kind", &self.kind),
            ("decision", &self.decision),
            ("detector", &self.detector),
            ("reviewer", &self.reviewer),
            ("call_id", &self.call_id),
            ("mcp_server", &self.mcp_server),
            ("mcp_tool", &self.mcp_tool),
            ("mcp_outcome", &self.mcp_outcome),
            ("limit", &self.limit),
            ("cursor", &self.cursor),
        ]
        .into_iter()
        .map(|(key, value)| (key, value.trim()))
        .filter(|(_, value)| !value.is_empty())
        .collect()
    }

    fn is_empty(&self) -> bool {
        self.pairs().is_empty()
    }
}

/// One search hit, as the page shows it.
pub struct SearchHit {
    pub time: String,
    pub kind: String,
    pub call_id: String,
    pub principal: String,
    pub agent: String,
    pub function: String,
    /// The MCP tool, read from `function` (the index keeps no MCP record in a hit).
    pub mcp: Option<McpTool>,
    pub decision: String,
    pub reviewer: String,
    pub detectors: String,
    pub partition: String,
    pub log_index: String,
}

/// A JSON value as text: strings bare, lists joined, nothing for null.
fn text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| text(Some(item)))
            .collect::<Vec<_>>()
            .join(", "),
        Some(other) => other.to_string(),
    }
}

impl SearchHit {
    fn from_json(hit: &Value) -> SearchHit {
        let field = |name: &str| text(hit.get(name));
        let function = field("function");
        SearchHit {
            mcp: McpTool::of(&function, hit.get("mcp")),
            function,
            time: field("time"),
            kind: field("kind"),
            call_id: field("call_id"),
            principal: field("principal"),
            agent: field("agent"),
            decision: field("decision"),
            reviewer: field("reviewer"),
            detectors: field("detectors"),
            partition: field("partition"),
            log_index: field("log_index"),
        }
    }
}

/// `GET /audit`: the search form and, when filled, one page of hits, newest first.
pub async fn search(
    State(app): State<Arc<AppState>>,
    User(user): User,
    session: Session,
    Query(form): Query<SearchForm>,
) -> Result<Response, ConsoleError> {
    let base = app.upstream.evidence()?.to_string();
    let layout = Layout::new(&app, &user, &session).await?;
    let mut page = pages::Search {
        layout,
        hits: Vec::new(),
        searched: false,
        next: None,
        error: None,
        form: form.clone(),
    };
    if !form.is_empty() {
        let url = with_query(&format!("{base}/v1/search"), &form.pairs());
        match app
            .upstream
            .get::<Value>(EVIDENCE, &url, &user.access_token)
            .await
        {
            Ok(answer) => {
                page.searched = true;
                page.hits = answer
                    .get("hits")
                    .and_then(Value::as_array)
                    .map(|hits| hits.iter().map(SearchHit::from_json).collect())
                    .unwrap_or_default();
                if let Some(cursor) = answer.get("next_cursor").and_then(Value::as_str) {
                    let mut next = form.clone();
                    next.cursor = cursor.to_string();
                    page.next = Some(with_query("/audit", &next.pairs()));
                }
            }
            Err(ConsoleError::Upstream {
                status: 400,
                message,
                ..
            }) => page.error = Some(message),
            Err(error) => return Err(error),
        }
    }
    Ok(pages::render(&page))
}

pub struct TimelineView {
    pub call_id: String,
    pub complete: bool,
    pub problems: Vec<String>,
    pub events: Vec<TimelineEventView>,
}

pub struct TimelineEventView {
    pub seq: String,
    pub kind: String,
    pub stage: String,
    pub time: String,
    pub partition: String,
    pub log_index: String,
    pub principal: String,
    pub agent: String,
    pub function: String,
    /// For a call through `/mcp`: the tool and what the event recorded of the exchange.
    pub mcp: Option<McpTool>,
    pub mcp_details: String,
    pub decision: String,
    pub approval: String,
    pub request_body: String,
    pub response: String,
    pub findings: Vec<String>,
}

impl TimelineEventView {
    fn from_json(entry: &Value) -> TimelineEventView {
        let event = entry.get("event").cloned().unwrap_or(Value::Null);
        let at = |pointer: &str| text(event.pointer(pointer));
        let decision = match event.get("decision") {
            Some(Value::Object(decision)) => format!(
                "{} — {}",
                if decision.get("allowed").and_then(Value::as_bool) == Some(true) {
                    "allowed"
                } else {
                    "not allowed"
                },
                text(decision.get("reason"))
            ),
            _ => String::new(),
        };
        let approval = match event.get("approval") {
            Some(approval @ Value::Object(_)) => {
                serde_json::to_string_pretty(approval).unwrap_or_default()
            }
            _ => String::new(),
        };
        let response = match event.pointer("/response") {
            Some(response @ Value::Object(_)) => {
                serde_json::to_string_pretty(response).unwrap_or_default()
            }
            _ => String::new(),
        };
        let findings = event
            .get("masking")
            .and_then(Value::as_array)
            .map(|findings| {
                findings
                    .iter()
                    .map(|finding| {
                        format!(
                            "{} at {} ×{}",
                            text(finding.get("detector")),
                            text(finding.get("path").or(finding.get("json_path"))),
                            text(finding.get("count"))
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let function = at("/function");
        let record = event.get("mcp").filter(|record| record.is_object());
        let mcp_details = record
            .map(|record| {
                [
                    ("method", "method"),
                    ("outcome", "outcome"),
                    ("error_code", "JSON-RPC error"),
                    ("protocol_version", "protocol"),
                    ("client", "client"),
                    ("session", "session"),
                ]
                .into_iter()
                .filter_map(|(key, label)| {
                    let value = text(record.get(key));
                    (!value.is_empty()).then(|| format!("{label} {value}"))
                })
                .collect::<Vec<_>>()
                .join(" · ")
            })
            .unwrap_or_default();
        TimelineEventView {
            mcp: McpTool::of(&function, record),
            mcp_details,
            function,
            seq: text(entry.get("seq")),
            kind: text(entry.get("kind")),
            stage: text(entry.get("stage")),
            time: text(entry.get("time")),
            partition: text(entry.get("partition")),
            log_index: text(entry.get("log_index")),
            principal: at("/principal/subject"),
            agent: at("/principal/actor/subject"),
            decision,
            approval,
            request_body: at("/request/body"),
            response,
            findings,
        }
    }
}

/// `GET /audit/calls/{call_id}`: the call's timeline, from the log.
pub async fn timeline(
    State(app): State<Arc<AppState>>,
    User(user): User,
    session: Session,
    Path(call_id): Path<String>,
) -> Result<Response, ConsoleError> {
    let base = app.upstream.evidence()?.to_string();
    let layout = Layout::new(&app, &user, &session).await?;
    let url = format!("{base}/v1/calls/{}", encode(&call_id));
    let answer: Value = app.upstream.get(EVIDENCE, &url, &user.access_token).await?;
    let timeline = TimelineView {
        call_id: text(answer.get("call_id")),
        complete: answer.get("complete").and_then(Value::as_bool) == Some(true),
        problems: answer
            .get("problems")
            .and_then(Value::as_array)
            .map(|problems| problems.iter().map(|p| text(Some(p))).collect())
            .unwrap_or_default(),
        events: answer
            .get("events")
            .and_then(Value::as_array)
            .map(|events| events.iter().map(TimelineEventView::from_json).collect())
            .unwrap_or_default(),
    };
    Ok(pages::render(&pages::Timeline { layout, timeline }))
}

pub struct ProofView {
    pub partition: u32,
    pub index: u64,
    pub served: bool,
    pub problem: String,
    pub leaf_hash: String,
    pub proof: String,
    pub entry: String,
}

/// `GET /audit/proofs/{partition}/{index}`: an event's inclusion proof, the files to download
/// and the exact command that checks them offline.
pub async fn proof(
    State(app): State<Arc<AppState>>,
    User(user): User,
    session: Session,
    Path((partition, index)): Path<(u32, u64)>,
) -> Result<Response, ConsoleError> {
    let base = app.upstream.evidence()?.to_string();
    let layout = Layout::new(&app, &user, &session).await?;
    let url = format!("{base}/v1/proofs/{partition}/{index}");
    let mut view = ProofView {
        partition,
        index,
        served: false,
        problem: String::new(),
        leaf_hash: String::new(),
        proof: String::new(),
        entry: String::new(),
    };
    match app
        .upstream
        .get::<Value>(EVIDENCE, &url, &user.access_token)
        .await
    {
        Ok(answer) => {
            view.served = true;
            view.leaf_hash = text(answer.get("leaf_hash"));
            view.proof = text(answer.get("proof"));
            view.entry = answer
                .get("entry")
                .map(|entry| serde_json::to_string_pretty(entry).unwrap_or_default())
                .unwrap_or_default();
        }
        Err(ConsoleError::Upstream {
            status, message, ..
        }) if status != 401 && status != 403 => view.problem = message,
        Err(error) => return Err(error),
    }
    Ok(pages::render(&pages::Proof {
        layout,
        proof: view,
    }))
}

/// `GET /audit/proofs/{partition}/{index}/{entry|proof}`: the file, relayed for download.
pub async fn proof_file(
    State(app): State<Arc<AppState>>,
    User(user): User,
    Path((partition, index, file)): Path<(u32, u64, String)>,
) -> Result<Response, ConsoleError> {
    let base = app.upstream.evidence()?.to_string();
    if file != "entry" && file != "proof" {
        return Err(ConsoleError::BadRequest("no such file".into()));
    }
    let url = format!("{base}/v1/proofs/{partition}/{index}/{file}");
    let response = app
        .upstream
        .get_raw(EVIDENCE, &url, &user.access_token, None)
        .await?;
    Ok(download(response, &format!("{file}-{partition}-{index}")))
}

pub struct LogView {
    pub partition: String,
    pub origin: String,
    pub size: String,
    pub root_hash: String,
    pub checkpoint: String,
}

pub struct IntegrityView {
    pub valid: bool,
    pub checked_at: String,
    pub details: String,
}

/// `GET /audit/logs`: every log's latest signed checkpoint, and the key the API names.
pub async fn logs(
    State(app): State<Arc<AppState>>,
    User(user): User,
    session: Session,
) -> Result<Response, ConsoleError> {
    logs_page(app, user, session, None).await
}

/// `GET /audit/integrity`: the logs page with the API's integrity check of every log, run now.
pub async fn integrity(
    State(app): State<Arc<AppState>>,
    User(user): User,
    session: Session,
) -> Result<Response, ConsoleError> {
    let base = app.upstream.evidence()?.to_string();
    let answer: Value = app
        .upstream
        .get(
            EVIDENCE,
            &format!("{base}/v1/integrity"),
            &user.access_token,
        )
        .await?;
    let integrity = IntegrityView {
        valid: answer.get("valid").and_then(Value::as_bool) == Some(true),
        checked_at: text(answer.get("checked_at")),
        details: serde_json::to_string_pretty(answer.get("partitions").unwrap_or(&Value::Null))
            .unwrap_or_default(),
    };
    logs_page(app, user, session, Some(integrity)).await
}

async fn logs_page(
    app: Arc<AppState>,
    user: crate::auth::SignedIn,
    session: Session,
    integrity: Option<IntegrityView>,
) -> Result<Response, ConsoleError> {
    let base = app.upstream.evidence()?.to_string();
    let layout = Layout::new(&app, &user, &session).await?;
    let answer: Value = app
        .upstream
        .get(EVIDENCE, &format!("{base}/v1/logs"), &user.access_token)
        .await?;
    let logs = answer
        .get("partitions")
        .and_then(Value::as_array)
        .map(|logs| {
            logs.iter()
                .map(|log| LogView {
                    partition: text(log.get("partition")),
                    origin: text(log.get("origin")),
                    size: text(log.get("size")),
                    root_hash: text(log.get("root_hash")),
                    checkpoint: text(log.get("checkpoint")),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(pages::render(&pages::Logs {
        layout,
        logs,
        verifier_key: text(answer.get("verifier_key")),
        integrity,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PeriodQuery {
    pub from: String,
    pub to: String,
}

pub struct ReportLinks {
    pub html: String,
    pub json: String,
    pub bundle: String,
    pub bundle_file: String,
}

/// `GET /audit/report`: pick a period; links to its SOC 2 report and its evidence bundle.
pub async fn report(
    State(app): State<Arc<AppState>>,
    User(user): User,
    session: Session,
    Query(period): Query<PeriodQuery>,
) -> Result<Response, ConsoleError> {
    app.upstream.evidence()?;
    let layout = Layout::new(&app, &user, &session).await?;
    let (from, to) = (period.from.trim(), period.to.trim());
    let links = (!from.is_empty() && !to.is_empty()).then(|| {
        let pairs = [("from", from), ("to", to)];
        ReportLinks {
            html: with_query(
                "/audit/report/soc2",
                &[("from", from), ("to", to), ("format", "html")],
            ),
            json: with_query("/audit/report/soc2", &pairs),
            bundle: with_query("/audit/export", &pairs),
            bundle_file: bundle_name(from, to),
        }
    });
    Ok(pages::render(&pages::Report {
        layout,
        from: from.to_string(),
        to: to.to_string(),
        links,
    }))
}

fn bundle_name(from: &str, to: &str) -> String {
    let day = |time: &str| {
        time.chars()
            .take(10)
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect::<String>()
    };
    format!("evidence-{}-{}.tar.gz", day(from), day(to))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ReportQuery {
    pub from: String,
    pub to: String,
    pub format: String,
}

/// `GET /audit/report/soc2`: the evidence API's report (JSON, or its HTML page with a policy
/// that allows its inline styles and no script).
pub async fn report_file(
    State(app): State<Arc<AppState>>,
    User(user): User,
    Query(query): Query<ReportQuery>,
) -> Result<Response, ConsoleError> {
    let base = app.upstream.evidence()?.to_string();
    let mut pairs = vec![("from", query.from.as_str()), ("to", query.to.as_str())];
    let html = query.format == "html";
    if html {
        pairs.push(("format", "html"));
    }
    let url = with_query(&format!("{base}/v1/reports/soc2"), &pairs);
    let response = app
        .upstream
        .get_raw(EVIDENCE, &url, &user.access_token, Some(EXPORT_TIMEOUT))
        .await?;
    let mut answer = relay(response);
    if html {
        answer.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(crate::security::REPORT_CONTENT_SECURITY_POLICY),
        );
    }
    Ok(answer)
}

/// `GET /audit/export`: the evidence bundle for a period, streamed through.
pub async fn export(
    State(app): State<Arc<AppState>>,
    User(user): User,
    Query(period): Query<PeriodQuery>,
) -> Result<Response, ConsoleError> {
    let base = app.upstream.evidence()?.to_string();
    let url = with_query(
        &format!("{base}/v1/export"),
        &[("from", period.from.as_str()), ("to", period.to.as_str())],
    );
    let response = app
        .upstream
        .get_raw(EVIDENCE, &url, &user.access_token, Some(EXPORT_TIMEOUT))
        .await?;
    Ok(download(response, &bundle_name(&period.from, &period.to)))
}

/// An upstream answer relayed with its content type, streamed.
fn relay(response: reqwest::Response) -> Response {
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let mut answer = Body::from_stream(response.bytes_stream()).into_response();
    answer
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    answer
}

fn download(response: reqwest::Response, file_name: &str) -> Response {
    let mut answer = relay(response);
    let safe: String = file_name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")) {
        answer
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    answer
}
