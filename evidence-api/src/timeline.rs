//! Replay: one call's whole timeline, from the log, checked against the index.
//!
//! The index finds the call's events; each is then read from its log (the record), and the
//! timeline says plainly what is wrong with it: an index hit whose entry is absent or is another
//! event, a gap in the call's sequence numbers, or no final event. A call ends with its result,
//! its refusal (`call_denied`, a refused call's only event), an expired approval, or an
//! approval a reviewer denied.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::AppState;
use crate::error::ApiError;
use crate::search::{Filter, IndexedEvent};
use crate::time_param::format_micros;

/// A call's timeline.
#[derive(Debug, Serialize)]
pub struct Timeline {
    pub call_id: String,
    /// True when every sequence number from 0 to the last is there, the last event ends the
    /// call, and every index hit matched its log entry.
    pub complete: bool,
    pub events: Vec<TimelineEvent>,
    /// What is missing or wrong, in words.
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct TimelineEvent {
    pub seq: Option<i64>,
    pub kind: String,
    /// The lifecycle step: authentication and request, policy decision, approval, forwarding,
    /// response.
    pub stage: &'static str,
    pub time: String,
    pub partition: i32,
    pub log_index: u64,
    pub proof: String,
    /// The event as the log holds it (masked), blobs put back.
    pub event: Value,
}

/// The step of the lifecycle an event records.
pub fn stage_of(kind: &str) -> &'static str {
    match kind {
        "call_received" => "authentication and request",
        "call_denied" => "policy decision",
        "approval_requested" | "approval_decided" | "approval_expired" => "approval",
        "call_forwarded" => "forwarding",
        "call_completed" | "call_failed" => "response",
        _ => "unknown",
    }
}

/// Builds the timeline of `call_id`; 404 when the index knows no event of it.
pub async fn timeline(app: &AppState, call_id: &str) -> Result<Timeline, ApiError> {
    let index = app.index.clone();
    let filter = Filter {
        call_id: Some(call_id.to_string()),
        ..Filter::default()
    };
    let hits = tokio::task::spawn_blocking(move || index.scan(&filter))
        .await?
        .map_err(crate::api::search_error)?;
    if hits.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no event of call {call_id:?} is indexed"
        )));
    }
    let mut problems = Vec::new();
    let mut by_partition: BTreeMap<i32, Vec<&IndexedEvent>> = BTreeMap::new();
    for hit in &hits {
        by_partition.entry(hit.partition).or_default().push(hit);
    }
    let mut events = Vec::new();
    for (partition, hits) in by_partition {
        let size = app.logs.checkpoint(partition).await?.checkpoint.size;
        let wanted: BTreeSet<u64> = hits
            .iter()
            .map(|hit| hit.log_index)
            .filter(|index| *index < size)
            .collect();
        for hit in hits.iter().filter(|hit| hit.log_index >= size) {
            problems.push(format!(
                "partition {partition} index {}: indexed, but the log holds only {size} entries",
                hit.log_index
            ));
        }
        let entries = match app.logs.entries(partition, &wanted, size).await {
            Ok(entries) => entries,
            Err(ApiError::IntegrityFailure(reason) | ApiError::NotFound(reason)) => {
                problems.push(reason);
                BTreeMap::new()
            }
            Err(other) => return Err(other),
        };
        for hit in hits {
            let Some(bytes) = entries.get(&hit.log_index) else {
                continue;
            };
            let entry = match app.logs.resolve(partition, hit.log_index, bytes).await {
                Ok(entry) => entry,
                Err(ApiError::IntegrityFailure(reason)) => {
                    problems.push(reason);
                    continue;
                }
                Err(other) => return Err(other),
            };
            let event = entry.get("event").cloned().unwrap_or(Value::Null);
            let text = |key: &str| event.get(key).and_then(Value::as_str).map(str::to_string);
            if text("call_id").as_deref() != Some(call_id) || text("event_id") != hit.event_id {
                problems.push(format!(
                    "partition {partition} index {}: the index says event {} of this call, but the log entry is event {} of call {}",
                    hit.log_index,
                    hit.event_id.as_deref().unwrap_or("?"),
                    text("event_id").as_deref().unwrap_or("?"),
                    text("call_id").as_deref().unwrap_or("?"),
                ));
                continue;
            }
            let kind = text("kind").unwrap_or_else(|| "undecodable".into());
            let time_micros = event
                .get("time")
                .and_then(Value::as_i64)
                .unwrap_or(hit.time_micros);
            events.push(TimelineEvent {
                seq: event.get("seq").and_then(Value::as_i64),
                stage: stage_of(&kind),
                kind,
                time: format_micros(time_micros),
                partition,
                log_index: hit.log_index,
                proof: app.link(&format!("/v1/proofs/{partition}/{}", hit.log_index)),
                event,
            });
        }
    }
    events.sort_by_key(|event| {
        (
            event.seq.unwrap_or(i64::MAX),
            event.partition,
            event.log_index,
        )
    });
    problems.extend(sequence_problems(&events));
    if !events.last().is_some_and(ends_call) {
        problems.push(
            "the call has no final event (completed, failed, refused, approval denied or expired): it is still in progress, or its last events are missing from the log".into(),
        );
    }
    Ok(Timeline {
        call_id: call_id.to_string(),
        complete: problems.is_empty(),
        events,
        problems,
    })
}

/// Whether the event ends its call: a result, a refusal, an expired approval, or an approval
/// a reviewer denied (the same rule as the report's).
fn ends_call(event: &TimelineEvent) -> bool {
    callproof_report::ends_call(
        &event.kind,
        event
            .event
            .pointer("/approval/decision")
            .and_then(Value::as_str),
    )
}

/// Sequence numbers must run 0, 1, 2, … without gaps or repeats.
fn sequence_problems(events: &[TimelineEvent]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut expected = 0i64;
    for event in events {
        let Some(seq) = event.seq else {
            problems.push(format!(
                "partition {} index {}: the event has no sequence number",
                event.partition, event.log_index
            ));
            continue;
        };
        if seq > expected {
            let missing = if seq - 1 == expected {
                format!("event {expected} is")
            } else {
                format!("events {expected} to {} are", seq - 1)
            };
            problems.push(format!(
                "{missing} missing from the log (sequence gap before {seq})"
            ));
        } else if seq < expected {
            problems.push(format!(
                "event {seq} is in the log twice (partition {} index {})",
                event.partition, event.log_index
            ));
        }
        expected = expected.max(seq + 1);
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: i64, kind: &str) -> TimelineEvent {
        TimelineEvent {
            seq: Some(seq),
            kind: kind.into(),
            stage: stage_of(kind),
            time: String::new(),
            partition: 0,
            log_index: seq as u64,
            proof: String::new(),
            event: Value::Null,
        }
    }

    #[test]
    fn gaps_and_repeats_are_named() {
        let events = [
            event(0, "call_received"),
            event(3, "call_completed"),
            event(3, "call_completed"),
        ];
        let problems = sequence_problems(&events);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("events 1 to 2 are missing"),
            "{problems:?}"
        );
        assert!(problems[1].contains("twice"), "{problems:?}");
        assert!(
            sequence_problems(&[event(0, "call_received"), event(1, "call_forwarded")]).is_empty()
        );
    }

    /// A call whose approval was denied showed as incomplete: its last event, an
    /// approval_decided that denies, was not taken as final.
    #[test]
    fn a_denied_approval_ends_the_call() {
        let mut denied = event(2, "approval_decided");
        denied.event = serde_json::json!({"approval": {"decision": "deny"}});
        assert!(ends_call(&denied));
        let mut approved = event(2, "approval_decided");
        approved.event = serde_json::json!({"approval": {"decision": "approve"}});
        assert!(!ends_call(&approved));
        assert!(ends_call(&event(0, "call_denied")));
        assert!(ends_call(&event(2, "approval_expired")));
    }
}
