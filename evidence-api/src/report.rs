//! The SOC 2 report of a period: the evidence the logs hold, mapped to the Trust Services
//! Criteria (AICPA TSC 2017, revised points of focus 2022). JSON by default; an HTML page with
//! `format=html` or `Accept: text/html`.
//!
//! The figures are computed by `callproof_report` from log entries alone: per partition, every
//! entry between the kept checkpoints around the period's events (the entries an evidence
//! bundle holds, [`crate::export::period_entries`]), so `callproof-verify bundle` recomputes
//! the same report from a bundle and compares. The index only says where the period's events
//! are. Every figure links the search that lists exactly what it counts and, where it concerns
//! single events, their proofs; CC7.2 states each log's integrity check, made now.
//!
//! PDF is not offered: no well-kept Rust crate turns HTML into PDF without a browser engine,
//! and laying the report out by hand with a PDF drawing crate would be a second renderer to
//! keep in step. Browsers print the HTML page to PDF faithfully.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Response};
use callproof_evidence_format::entry::blob_references;
use callproof_report::{Context, Inputs, LogState, Period, Report, ReportEvent};
use callproof_tlog::hash::to_base64;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::bad_query;
use crate::error::ApiError;
use crate::export::{PartitionEntries, period_entries};
use crate::time_param::{now_micros, period};
use crate::{AppState, Auditor};

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
        Html(callproof_report::render_html(&report)).into_response()
    } else {
        Json(report).into_response()
    })
}

/// Builds the report of `from..to` (µs) from the log entries around the period. They are all
/// read into memory, so a period is bounded as an export is (`evidence.max_export_events`): a
/// longer one is refused with 400 rather than exhausting memory; report it in shorter periods.
pub async fn build(app: &AppState, from: i64, to: i64) -> Result<Report, ApiError> {
    let parts = period_entries(app, from, to, Some(app.max_export_events)).await?;
    from_entries(app, from, to, now_micros(), &parts).await
}

/// Builds the report of `from..to` (µs) from `parts`, made at `generated_at` (µs): the same
/// computation `callproof-verify bundle` repeats from a bundle's entries.
pub async fn from_entries(
    app: &AppState,
    from: i64,
    to: i64,
    generated_at: i64,
    parts: &[PartitionEntries],
) -> Result<Report, ApiError> {
    let mut events = Vec::new();
    let mut logs = Vec::new();
    for part in parts {
        let partition = part.partition;
        for (index, bytes) in &part.entries {
            // An entry that cannot be read (altered in the store, or a blob missing) is not
            // counted, as `callproof-verify bundle` does not count an entry that fails to
            // verify; CC7.2's integrity check names it, and so does the verifier.
            let Ok(mut entry) = serde_json::from_slice::<Value>(bytes) else {
                tracing::warn!(
                    partition,
                    index,
                    "entry is not JSON; not counted in the report"
                );
                continue;
            };
            // Only an event moved out whole matters to the figures; bodies do not.
            if blob_references(&entry)
                .iter()
                .any(|(pointer, _)| pointer == "/event")
            {
                match app.logs.resolve(partition, *index, bytes).await {
                    Ok(resolved) => entry = resolved,
                    Err(ApiError::IntegrityFailure(reason)) => {
                        tracing::warn!(partition, index, %reason, "entry not counted in the report");
                        continue;
                    }
                    Err(other) => return Err(other),
                }
            }
            events.extend(ReportEvent::from_entry(partition, *index, &entry));
        }
        let integrity = app.logs.verify_partition(partition).await;
        logs.push(LogState {
            partition,
            entries_from: part.entries_from,
            entries_to: part.entries_to,
            log_size: part.latest.checkpoint.size,
            root_hash: to_base64(&part.latest.checkpoint.root_hash),
            verified: integrity.valid,
            entries_checked: integrity.entries_checked,
            tiles_checked: integrity.tiles_checked,
            kept_checkpoints_checked: integrity.kept_checkpoints_checked,
            failure: integrity.failure.map(|failure| {
                format!(
                    "{} (index {}): {}",
                    failure.object,
                    failure
                        .index
                        .map_or("-".to_string(), |index| index.to_string()),
                    failure.reason
                )
            }),
        });
    }
    let policies = app
        .functions
        .iter()
        .map(|(name, function)| {
            let policy = &function.policy;
            let mut listed = json!({
                "allow_groups": policy.allow_groups,
                "allow_subjects": policy.allow_subjects,
                "mask_request": policy.mask_request,
                "mask_response": policy.mask_response,
                "detect": policy.detect,
            });
            // A CEL rule admits callers beside the lists, and an approval holds some calls: an
            // auditor reading the lists alone would see fewer callers and no approval.
            if let Some(rule) = &policy.allow {
                listed["allow_rule"] = json!(rule);
            }
            if let Some(approval) = &function.approval {
                listed["approval"] = json!({
                    "condition": approval.condition.as_deref().unwrap_or("every call"),
                    "approver_groups": approval.approver_groups,
                    "quorum": approval.quorum,
                    "expiry_secs": approval.expiry_secs,
                });
            }
            (name.clone(), listed)
        })
        .collect();
    let inputs = Inputs {
        period: Period::from_micros(from, to),
        generated_at: callproof_report::format_micros(generated_at),
        verifier_key: app.logs.verifier_key().to_string(),
        context: Context {
            link_base: app.link(""),
            policies,
            logs,
        },
    };
    Ok(callproof_report::build(&inputs, &events))
}
