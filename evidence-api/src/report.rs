//! The SOC 2 report of a period: the evidence the logs hold, mapped to the Trust Services
//! Criteria (AICPA TSC 2017, revised points of focus 2022). JSON by default; an HTML page with
//! `format=html` or `Accept: text/html`.
//!
//! Every figure carries the search that reproduces it and, where it concerns single events, the
//! proofs of those events, so an auditor can check any number against the log itself. The
//! report counts from the index (a derived view) and says so; CC7.2 verifies the logs the
//! index was built from.
//!
//! PDF is not offered: no well-kept Rust crate turns HTML into PDF without a browser engine,
//! and laying the report out by hand with a PDF drawing crate would be a second renderer to
//! keep in step. Browsers print the HTML page to PDF faithfully.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api::{bad_query, search_error, search_link, url_encode};
use crate::error::ApiError;
use crate::search::{Filter, IndexedEvent};
use crate::time_param::{format_micros, now_micros, period};
use crate::{AppState, Auditor};

/// How many single events a figure lists with their proofs (the search lists them all).
const SAMPLE: usize = 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportParams {
    pub from: Option<String>,
    pub to: Option<String>,
    /// `json` (default) or `html`.
    pub format: Option<String>,
}

/// `GET /v1/reports/soc2?from=&to=[&format=html]`.
#[tracing::instrument(skip_all, fields(auditor = %auditor.subject))]
pub async fn soc2(
    auditor: Auditor,
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Result<Query<ReportParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(bad_query)?;
    let (from, to) = period(params.from.as_deref(), params.to.as_deref())?;
    let html = match params.format.as_deref() {
        Some("html") => true,
        Some("json") => false,
        None => headers
            .get(header::ACCEPT)
            .and_then(|accept| accept.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html")),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "`format` must be `json` or `html`, not {other:?}"
            )));
        }
    };
    let report = build(&app, from, to).await?;
    Ok(if html {
        Html(render_html(&report)).into_response()
    } else {
        Json(report).into_response()
    })
}

/// The report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub title: String,
    pub from: String,
    pub to: String,
    pub generated_at: String,
    pub verifier_key: String,
    /// Events and calls of the period, as indexed.
    pub events: usize,
    pub calls: usize,
    pub sections: Vec<Section>,
}

/// The evidence for one criterion.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Section {
    pub id: String,
    pub title: String,
    /// The criterion, as the TSC word it.
    pub criterion: String,
    /// What callproof records that bears on it.
    pub evidence: String,
    pub figures: Vec<Figure>,
    /// Exceptions an auditor should look at; empty when there are none.
    pub exceptions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    pub label: String,
    pub value: Value,
    /// The search that lists what the figure counts.
    pub search: Option<String>,
    /// Proofs of the single events the figure names (at most a sample).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proofs: Vec<String>,
}

fn figure(label: impl Into<String>, value: impl Into<Value>, search: Option<String>) -> Figure {
    Figure {
        label: label.into(),
        value: value.into(),
        search,
        proofs: Vec::new(),
    }
}

/// Builds the report of `from..to` (µs).
pub async fn build(app: &AppState, from: i64, to: i64) -> Result<Report, ApiError> {
    let index = app.index.clone();
    let filter = Filter {
        from_micros: Some(from),
        to_micros: Some(to),
        ..Filter::default()
    };
    let events = tokio::task::spawn_blocking(move || index.scan(&filter))
        .await?
        .map_err(search_error)?;
    let (from_text, to_text) = (format_micros(from), format_micros(to));
    let search = |pairs: &[(&str, &str)]| {
        let mut all = vec![("from", from_text.as_str()), ("to", to_text.as_str())];
        all.extend_from_slice(pairs);
        Some(search_link(app, &all))
    };
    let proof = |event: &IndexedEvent| {
        app.link(&format!(
            "/v1/proofs/{}/{}",
            event.partition, event.log_index
        ))
    };
    let of_kind = |kind: &str| -> Vec<&IndexedEvent> {
        events
            .iter()
            .filter(|event| event.kind.as_deref() == Some(kind))
            .collect()
    };
    let mut calls: BTreeMap<&str, Vec<&IndexedEvent>> = BTreeMap::new();
    for event in &events {
        if let Some(call_id) = event.call_id.as_deref() {
            calls.entry(call_id).or_default().push(event);
        }
    }
    let received = of_kind("call_received");

    // CC6.1: who called, and how they were identified.
    let mut by_principal: BTreeMap<&str, usize> = BTreeMap::new();
    let mut agents: BTreeSet<&str> = BTreeSet::new();
    let mut via_agent = 0;
    for event in &received {
        *by_principal
            .entry(event.subject.as_deref().unwrap_or("(none)"))
            .or_default() += 1;
        if let Some(agent) = event.agent.as_deref() {
            agents.insert(agent);
            via_agent += 1;
        }
    }
    let mut principals: Vec<(&str, usize)> = by_principal.into_iter().collect();
    principals.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut cc61 = vec![
        figure(
            "calls received",
            received.len(),
            search(&[("kind", "call_received")]),
        ),
        figure(
            "distinct principals (token subjects)",
            principals.len(),
            search(&[("kind", "call_received")]),
        ),
        figure(
            "distinct acting agents (RFC 8693 `act`)",
            agents.len(),
            search(&[("kind", "call_received")]),
        ),
        figure(
            "calls made by an agent acting for a user",
            via_agent,
            search(&[("kind", "call_received")]),
        ),
    ];
    for (subject, count) in principals.iter().take(SAMPLE) {
        cc61.push(figure(
            format!("calls by {subject}"),
            *count,
            search(&[("kind", "call_received"), ("principal", subject)]),
        ));
    }
    let unauthenticated: Vec<&&IndexedEvent> = received
        .iter()
        .filter(|event| event.subject.is_none())
        .collect();
    let mut cc61_exceptions = Vec::new();
    if !unauthenticated.is_empty() {
        cc61_exceptions.push(format!(
            "{} call(s) were recorded without a principal",
            unauthenticated.len()
        ));
    }

    // CC6.2 / CC6.3: the policies in force and what they refused.
    let denied = of_kind("call_denied");
    let mut cc62 = Vec::new();
    for (name, function) in &app.functions {
        let policy = &function.policy;
        cc62.push(figure(
            format!("policy of {name}"),
            json!({
                "allow_groups": policy.allow_groups,
                "allow_subjects": policy.allow_subjects,
                "mask_request": policy.mask_request,
                "mask_response": policy.mask_response,
                "detect": policy.detect,
            }),
            search(&[("function", name)]),
        ));
    }
    let allowed_decisions = events
        .iter()
        .filter(|event| event.decision.as_deref() == Some("allow"))
        .count();
    cc62.push(figure(
        "policy decisions: allowed",
        allowed_decisions,
        search(&[("decision", "allow")]),
    ));
    let mut denied_figure = figure(
        "calls denied",
        denied.len(),
        search(&[("kind", "call_denied")]),
    );
    denied_figure.proofs = denied
        .iter()
        .take(SAMPLE)
        .map(|event| proof(event))
        .collect();
    cc62.push(denied_figure);
    let mut denied_by_function: BTreeMap<&str, usize> = BTreeMap::new();
    for event in &denied {
        *denied_by_function
            .entry(event.function.as_deref().unwrap_or("(none)"))
            .or_default() += 1;
    }
    for (function, count) in denied_by_function {
        cc62.push(figure(
            format!("calls to {function} denied"),
            count,
            search(&[("kind", "call_denied"), ("function", function)]),
        ));
    }
    let unknown_functions: BTreeSet<&str> = received
        .iter()
        .filter_map(|event| event.function.as_deref())
        .filter(|function| !app.functions.contains_key(*function))
        .collect();
    let cc62_exceptions: Vec<String> = unknown_functions
        .iter()
        .map(|function| format!("calls to {function}, which the configuration in force does not name (a policy since removed?)"))
        .collect();

    // The approval decisions are needed by CC7.2 (a denied approval ends a call) and CC8.1.
    let requested = of_kind("approval_requested");
    let decided = of_kind("approval_decided");
    let expired = of_kind("approval_expired");
    let decisions = approval_decisions(app, &decided).await?;
    let is_denial = |event: &IndexedEvent| {
        event.kind.as_deref() == Some("approval_decided")
            && decisions
                .get(&(event.partition, event.log_index))
                .and_then(Option::as_deref)
                == Some("deny")
    };

    // CC7.2: every call recorded from start to end, and the logs intact.
    let mut incomplete = Vec::new();
    for (call_id, call_events) in &calls {
        let kinds: BTreeSet<&str> = call_events
            .iter()
            .filter_map(|event| event.kind.as_deref())
            .collect();
        let ends = [
            "call_completed",
            "call_failed",
            "call_denied",
            "approval_expired",
        ]
        .iter()
        .any(|kind| kinds.contains(kind))
            || call_events.iter().any(|event| is_denial(event));
        if !kinds.contains("call_received") || !ends {
            incomplete.push(*call_id);
        }
    }
    let mut cc72 = vec![
        figure("events recorded", events.len(), search(&[])),
        figure(
            "calls recorded",
            calls.len(),
            search(&[("kind", "call_received")]),
        ),
        figure(
            "calls without their first or final event in the period (in progress at its edges, or events missing)",
            incomplete.len(),
            search(&[]),
        ),
    ];
    let mut cc72_exceptions = Vec::new();
    for call_id in incomplete.iter().take(SAMPLE) {
        cc72_exceptions.push(format!(
            "call {call_id} is incomplete in the period: {}",
            app.link(&format!("/v1/calls/{}", url_encode(call_id)))
        ));
    }
    let mut partitions: BTreeMap<i32, (u64, u64)> = BTreeMap::new();
    for event in &events {
        let range = partitions.entry(event.partition).or_insert((u64::MAX, 0));
        range.0 = range.0.min(event.log_index);
        range.1 = range.1.max(event.log_index);
    }
    for (partition, (first, last)) in &partitions {
        let integrity = app.logs.verify_partition(*partition).await;
        let kept = app.logs.kept_sizes(*partition).await.unwrap_or_default();
        let before = kept.iter().copied().filter(|size| *size <= *first).max();
        let covering = kept.iter().copied().filter(|size| *size > *last).min();
        let mut links = vec![app.link(&format!("/logs/{partition}/checkpoint"))];
        for size in before.iter().chain(covering.iter()) {
            links.push(app.link(&format!("/logs/{partition}/checkpoints/{size}")));
        }
        if let (Some(old), Some(new)) = (before, covering) {
            links.push(app.link(&format!(
                "/v1/logs/{partition}/consistency?old={old}&new={new}"
            )));
        }
        if let Some(covering) = covering {
            links.push(app.link(&format!(
                "/v1/logs/{partition}/consistency?old={covering}&new={}",
                integrity.size
            )));
        }
        if let Some(failure) = &integrity.failure {
            cc72_exceptions.push(format!(
                "the log of partition {partition} does not verify: {} (index {}): {}",
                failure.object,
                failure
                    .index
                    .map_or("-".to_string(), |index| index.to_string()),
                failure.reason
            ));
        }
        cc72.push(Figure {
            label: format!("log of partition {partition}"),
            value: json!({
                "entries_in_period": format!("{first}..={last}"),
                "verified": integrity.valid,
                "log_size": integrity.size,
                "root_hash": integrity.root_hash,
                "entries_checked": integrity.entries_checked,
                "tiles_checked": integrity.tiles_checked,
                "kept_checkpoints_checked": integrity.kept_checkpoints_checked,
                "checkpoint_before_period": before,
                "checkpoint_covering_period": covering,
            }),
            search: Some(app.link(&format!("/v1/integrity?partition={partition}"))),
            proofs: links,
        });
    }

    // CC8.1: high-risk calls went through approval.
    let mut approved = 0;
    let mut denied_approvals = 0;
    let mut waits: Vec<i64> = Vec::new();
    let mut self_approved = Vec::new();
    let mut reviewers: BTreeMap<String, usize> = BTreeMap::new();
    for event in &decided {
        let decision = decisions
            .get(&(event.partition, event.log_index))
            .cloned()
            .flatten();
        match decision.as_deref() {
            Some("approve") => approved += 1,
            Some("deny") => denied_approvals += 1,
            _ => {}
        }
        if let Some(reviewer) = &event.reviewer {
            *reviewers.entry(reviewer.clone()).or_default() += 1;
        }
        let call = event.call_id.as_deref().and_then(|id| calls.get(id));
        let caller = call
            .and_then(|events| {
                events
                    .iter()
                    .find(|e| e.kind.as_deref() == Some("call_received"))
            })
            .and_then(|e| e.subject.clone())
            .or_else(|| event.subject.clone());
        if event.reviewer.is_some() && event.reviewer == caller {
            self_approved.push(*event);
        }
        if let Some(request) = call.and_then(|events| {
            events
                .iter()
                .find(|e| e.kind.as_deref() == Some("approval_requested"))
        }) {
            waits.push(event.time_micros - request.time_micros);
        }
    }
    waits.sort_unstable();
    let seconds = |micros: Option<&i64>| micros.map(|micros| *micros as f64 / 1e6);
    let mut forwarded_unapproved = Vec::new();
    for (call_id, call_events) in &calls {
        let has = |kind: &str| call_events.iter().any(|e| e.kind.as_deref() == Some(kind));
        if has("approval_requested") && has("call_forwarded") {
            let approved_here = call_events.iter().any(|e| {
                e.kind.as_deref() == Some("approval_decided")
                    && decisions
                        .get(&(e.partition, e.log_index))
                        .cloned()
                        .flatten()
                        .as_deref()
                        == Some("approve")
            });
            if !approved_here {
                forwarded_unapproved.push(*call_id);
            }
        }
    }
    let mut self_figure = figure(
        "self-approved calls (reviewer is the caller)",
        self_approved.len(),
        search(&[("kind", "approval_decided")]),
    );
    self_figure.proofs = self_approved
        .iter()
        .take(SAMPLE)
        .map(|event| proof(event))
        .collect();
    let mut cc81 = vec![
        figure(
            "approvals requested",
            requested.len(),
            search(&[("kind", "approval_requested")]),
        ),
        figure(
            "approved",
            approved,
            search(&[("kind", "approval_decided")]),
        ),
        figure(
            "denied by a reviewer",
            denied_approvals,
            search(&[("kind", "approval_decided")]),
        ),
        figure(
            "expired undecided",
            expired.len(),
            search(&[("kind", "approval_expired")]),
        ),
        figure(
            "time to decision, seconds (median, max)",
            json!([seconds(waits.get(waits.len() / 2)), seconds(waits.last())]),
            search(&[("kind", "approval_decided")]),
        ),
        self_figure,
    ];
    for (reviewer, count) in &reviewers {
        cc81.push(figure(
            format!("decisions by {reviewer}"),
            *count,
            search(&[("kind", "approval_decided"), ("reviewer", reviewer)]),
        ));
    }
    let mut cc81_exceptions: Vec<String> = self_approved
        .iter()
        .map(|event| {
            format!(
                "call {} was approved by its own caller",
                event.call_id.as_deref().unwrap_or("?")
            )
        })
        .collect();
    cc81_exceptions.extend(forwarded_unapproved.iter().map(|call_id| {
        format!(
            "call {call_id} was forwarded without an approval in the period: {}",
            app.link(&format!("/v1/calls/{}", url_encode(call_id)))
        )
    }));

    // C1.1: confidential data found and masked.
    let mut by_detector: BTreeMap<&str, usize> = BTreeMap::new();
    for event in &events {
        for detector in &event.detectors {
            *by_detector.entry(detector.as_str()).or_default() += 1;
        }
    }
    let with_findings = events
        .iter()
        .filter(|event| !event.detectors.is_empty())
        .count();
    let mut c11 = vec![figure(
        "events in which masking found confidential data",
        with_findings,
        search(&[]),
    )];
    for (detector, count) in by_detector {
        c11.push(figure(
            format!("events with {detector} masked"),
            count,
            search(&[("detector", detector)]),
        ));
    }

    let sections = vec![
        Section {
            id: "CC6.1".into(),
            title: "Logical access: identification and authentication".into(),
            criterion: "The entity implements logical access security software, infrastructure, and architectures over protected information assets to protect them from security events to meet the entity's objectives.".into(),
            evidence: "Every call is authenticated by a verified OIDC bearer token before anything else happens; the call_received event records the principal (issuer, subject, groups, client) and the agent acting for it, and how the token was verified (algorithm, key id).".into(),
            figures: cc61,
            exceptions: cc61_exceptions,
        },
        Section {
            id: "CC6.2 / CC6.3".into(),
            title: "Authorization: policies in force and denied calls".into(),
            criterion: "CC6.2: Prior to issuing system credentials and granting system access, the entity registers and authorizes new internal and external users whose access is administered by the entity. CC6.3: The entity authorizes, modifies, or removes access to data, software, functions, and other protected information assets based on roles, responsibilities, or the system design and changes, giving consideration to the concepts of least privilege and segregation of duties, to meet the entity's objectives.".into(),
            evidence: "Functions are deny-by-default: only the groups and subjects a function's policy names may call it, and the gateway holds the functions' credentials. Every decision is recorded with the policy and the reason; the policies listed are those of the configuration this API runs with.".into(),
            figures: cc62,
            exceptions: cc62_exceptions,
        },
        Section {
            id: "CC7.2".into(),
            title: "Monitoring: every call recorded, logs intact".into(),
            criterion: "The entity monitors system components and the operation of those components for anomalies that are indicative of malicious acts, natural disasters, and errors affecting the entity's ability to meet its objectives; anomalies are analyzed to determine whether they represent security events.".into(),
            evidence: "The gateway does not make a call whose events the broker has not acknowledged; the processor appends every event to a signed Merkle log per partition. The logs were verified when this report was made: every checkpoint signature, every entry and tile, and that every kept checkpoint is a prefix of the latest (the log only grew). The checkpoints before and covering the period, with consistency proofs between them, are linked.".into(),
            figures: cc72,
            exceptions: cc72_exceptions,
        },
        Section {
            id: "CC8.1".into(),
            title: "High-risk calls approved".into(),
            criterion: "The entity authorizes, designs, develops or acquires, configures, documents, tests, approves, and implements changes to infrastructure, data, software, and procedures to meet its objectives.".into(),
            evidence: "Functions whose policy requires approval are held until a member of an approver group decides; the caller can never approve its own call. approval_requested, approval_decided and approval_expired events record who decided, what and when.".into(),
            figures: cc81,
            exceptions: cc81_exceptions,
        },
        Section {
            id: "C1.1".into(),
            title: "Confidential information identified and protected".into(),
            criterion: "The entity identifies and maintains confidential information to meet the entity's objectives related to confidentiality.".into(),
            evidence: "Request and response bodies are masked by the gateway and again by the processor before anything is stored; events record which detector found what where, never the value.".into(),
            figures: c11,
            exceptions: Vec::new(),
        },
    ];
    Ok(Report {
        title: "callproof SOC 2 evidence report".into(),
        from: format_micros(from),
        to: format_micros(to),
        generated_at: format_micros(now_micros()),
        verifier_key: app.logs.verifier_key().to_string(),
        events: events.len(),
        calls: calls.len(),
        sections,
    })
}

/// The `approval.decision` of each approval_decided event, read from the log (the index does
/// not hold it).
async fn approval_decisions(
    app: &AppState,
    decided: &[&IndexedEvent],
) -> Result<BTreeMap<(i32, u64), Option<String>>, ApiError> {
    let mut by_partition: BTreeMap<i32, BTreeSet<u64>> = BTreeMap::new();
    for event in decided {
        by_partition
            .entry(event.partition)
            .or_default()
            .insert(event.log_index);
    }
    let mut decisions = BTreeMap::new();
    for (partition, indexes) in by_partition {
        let size = app.logs.checkpoint(partition).await?.checkpoint.size;
        let indexes: BTreeSet<u64> = indexes.into_iter().filter(|index| *index < size).collect();
        for (index, bytes) in app.logs.entries(partition, &indexes, size).await? {
            let entry = app.logs.resolve(partition, index, &bytes).await?;
            let decision = entry
                .pointer("/event/approval/decision")
                .and_then(Value::as_str)
                .map(str::to_string);
            decisions.insert((partition, index), decision);
        }
    }
    Ok(decisions)
}

/// The report as a self-contained HTML page.
pub fn render_html(report: &Report) -> String {
    let mut html = String::with_capacity(16 * 1024);
    html.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    html.push_str(&format!("<title>{}</title>", escape(&report.title)));
    html.push_str(
        "<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}\
         table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem}td,th{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}\
         th{background:#f4f4f4}blockquote{color:#555;border-left:3px solid #ccc;margin:0;padding-left:1rem}\
         .ok{color:#1a7f37}.bad{color:#cf222e}code{font-size:.85em;word-break:break-all}</style></head><body>\n",
    );
    html.push_str(&format!(
        "<h1>{}</h1>\n<p>Period <b>{}</b> to <b>{}</b> (end excluded). Generated {}. {} events, {} calls.</p>\n<p>Log verifier key: <code>{}</code></p>\n",
        escape(&report.title),
        escape(&report.from),
        escape(&report.to),
        escape(&report.generated_at),
        report.events,
        report.calls,
        escape(&report.verifier_key),
    ));
    for section in &report.sections {
        html.push_str(&format!(
            "<h2>{} — {}</h2>\n<blockquote>{}</blockquote>\n<p>{}</p>\n",
            escape(&section.id),
            escape(&section.title),
            escape(&section.criterion),
            escape(&section.evidence)
        ));
        html.push_str("<table><tr><th>Figure</th><th>Value</th><th>Evidence</th></tr>\n");
        for figure in &section.figures {
            let value = match &figure.value {
                Value::String(text) => escape(text),
                other => format!("<code>{}</code>", escape(&other.to_string())),
            };
            let mut links = Vec::new();
            if let Some(search) = &figure.search {
                links.push(format!("<a href=\"{}\">search</a>", escape(search)));
            }
            for (position, proof) in figure.proofs.iter().enumerate() {
                links.push(format!(
                    "<a href=\"{}\">{}</a>",
                    escape(proof),
                    position + 1
                ));
            }
            html.push_str(&format!(
                "<tr><td>{}</td><td>{value}</td><td>{}</td></tr>\n",
                escape(&figure.label),
                links.join(" ")
            ));
        }
        html.push_str("</table>\n");
        if section.exceptions.is_empty() {
            html.push_str("<p class=\"ok\">No exceptions.</p>\n");
        } else {
            html.push_str("<p class=\"bad\">Exceptions:</p><ul>\n");
            for exception in &section.exceptions {
                html.push_str(&format!("<li>{}</li>\n", escape(exception)));
            }
            html.push_str("</ul>\n");
        }
    }
    html.push_str("</body></html>\n");
    html
}

/// Escapes text for HTML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_everything_that_comes_from_events() {
        let report = Report {
            title: "t".into(),
            from: "a".into(),
            to: "b".into(),
            generated_at: "c".into(),
            verifier_key: "k".into(),
            events: 1,
            calls: 1,
            sections: vec![Section {
                id: "CC6.1".into(),
                title: "x".into(),
                criterion: "y".into(),
                evidence: "z".into(),
                figures: vec![figure(
                    "calls by <script>alert(1)</script>",
                    1,
                    Some("/v1/search?a=\"b\"".into()),
                )],
                exceptions: vec!["call <b> was approved by its own caller".into()],
            }],
        };
        let html = render_html(&report);
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("&quot;b&quot;"));
        assert!(html.contains("call &lt;b&gt;"));
    }
}
