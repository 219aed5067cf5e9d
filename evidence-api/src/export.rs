//! `GET /v1/export?from=&to=`: the evidence bundle of a period, a `.tar.gz` laid out as
//! `callproof_tlog::bundle` says, which `callproof-verify bundle --key VKEY FILE` checks offline.
//!
//! The period's events are found in the index; everything in the bundle comes from the logs:
//! per partition, every entry between the last kept checkpoint before the period's first event
//! and the first kept checkpoint after its last, byte for byte, with its inclusion proof in the
//! partition's latest checkpoint; those two kept checkpoints with consistency proofs between
//! them and up to the latest (so the entries are provably all of the log between them); the
//! edge entries just outside them, whose times are outside the period (so the range was not
//! narrowed: the entries left out are outside the period); the blobs the entries name; and the
//! report, computed from exactly the range's entries, which `callproof-verify bundle`
//! recomputes. The index only says where to start looking: the edges are read from the log,
//! and a range whose edge is not outside the period (an index lagging behind the log, an
//! entry without an event time) is widened to the next kept checkpoint, up to the start of the
//! log or its latest checkpoint. The bundle is packed in memory (at most
//! `evidence.max_export_events` entries, edges included), off the async runtime.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use callproof_evidence_format::entry::blob_references;
use callproof_tlog::bundle::{
    self, BUNDLE_FORMAT, MANIFEST_PATH, Manifest, ManifestPartition, README_PATH, REPORT_HTML_PATH,
    REPORT_JSON_PATH, VERIFIER_KEY_PATH,
};
use callproof_tlog::proof::format_consistency_proof;
use callproof_tlog::store::SignedCheckpoint;
use serde::Deserialize;

use crate::api::{bad_query, search_error};
use crate::error::ApiError;
use crate::search::Filter;
use crate::time_param::{format_micros, now_micros, period};
use crate::{AppState, Auditor, report};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    pub from: Option<String>,
    pub to: Option<String>,
}

#[tracing::instrument(skip_all, fields(auditor = %auditor.subject))]
pub async fn export(
    auditor: Auditor,
    State(app): State<Arc<AppState>>,
    params: Result<Query<ExportParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(bad_query)?;
    let (from, to) = period(params.from.as_deref(), params.to.as_deref())?;
    let bytes = build(&app, from, to).await?;
    let name = format!(
        "callproof-evidence-{}-{}.tar.gz",
        format_micros(from).replace(':', ""),
        format_micros(to).replace(':', "")
    );
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/gzip"),
    );
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// One partition's share of a period: every entry between the last kept checkpoint before
/// the period's first event and the first kept checkpoint after its last (the latest
/// checkpoint when no kept one is), so that the entries can be shown complete: they are all
/// of the log between two signed checkpoints, and the edge entries just outside them are
/// outside the period.
pub struct PartitionEntries {
    pub partition: i32,
    pub latest: SignedCheckpoint,
    /// Positions `entries_from..entries_to`; `entries_from` is 0 or a kept checkpoint's size,
    /// `entries_to` a kept checkpoint's size or the latest's.
    pub entries_from: u64,
    pub entries_to: u64,
    /// Every entry of the range, byte for byte.
    pub entries: BTreeMap<u64, Vec<u8>>,
    /// The edge entries ([`bundle::edges`]): at `entries_from - 1`, with a time before the
    /// period, and at `entries_to`, with a time at or after its end, where those positions are
    /// in the log. Not counted by the report.
    pub edges: BTreeMap<u64, Vec<u8>>,
}

/// Every entry of each partition between the kept checkpoints around the period's events (as
/// the index finds them), widened until the edge entries just outside the range are outside
/// the period, with those edges. At most `limit` entries in all (edges included), else 400.
pub async fn period_entries(
    app: &AppState,
    from: i64,
    to: i64,
    limit: Option<usize>,
) -> Result<Vec<PartitionEntries>, ApiError> {
    let index = app.index.clone();
    let filter = Filter {
        from_micros: Some(from),
        to_micros: Some(to),
        ..Filter::default()
    };
    if let Some(limit) = limit {
        let index = index.clone();
        let filter = filter.clone();
        let n_events = tokio::task::spawn_blocking(move || index.count(&filter))
            .await?
            .map_err(search_error)?;
        if n_events > limit {
            return Err(too_many(n_events, "events", limit));
        }
    }
    let events = tokio::task::spawn_blocking(move || index.scan(&filter))
        .await?
        .map_err(search_error)?;
    let mut spans: BTreeMap<i32, (u64, u64)> = BTreeMap::new();
    for event in &events {
        let span = spans
            .entry(event.partition)
            .or_insert((event.log_index, event.log_index));
        span.0 = span.0.min(event.log_index);
        span.1 = span.1.max(event.log_index);
    }
    let mut ranges = Vec::new();
    for (partition, (first, last)) in spans {
        let latest = app.logs.checkpoint(partition).await?;
        let size = latest.checkpoint.size;
        // An index ahead of its log names entries the log does not vouch for: leave them out.
        if first >= size {
            continue;
        }
        let last = last.min(size - 1);
        let kept = app.logs.kept_sizes(partition).await?;
        let edge = |before: bool| {
            let latest = &latest;
            move |index: u64| edge_outside(app, partition, index, latest, before, from, to)
        };
        let (entries_from, left_edge) =
            range_bound(Side::Start, &kept, first, last, size, edge(true)).await?;
        let (entries_to, right_edge) =
            range_bound(Side::End, &kept, first, last, size, edge(false)).await?;
        let mut edges = BTreeMap::new();
        edges.extend(left_edge.map(|bytes| (entries_from - 1, bytes)));
        edges.extend(right_edge.map(|bytes| (entries_to, bytes)));
        debug_assert_eq!(
            edges.keys().copied().collect::<Vec<_>>(),
            bundle::edges(entries_from, entries_to, size)
        );
        ranges.push((partition, latest, entries_from, entries_to, edges));
    }
    let n_entries: u64 = ranges
        .iter()
        .map(|(_, _, from, to, edges)| to - from + edges.len() as u64)
        .sum();
    if let Some(limit) = limit
        && n_entries > limit as u64
    {
        return Err(too_many(
            usize::try_from(n_entries).unwrap_or(usize::MAX),
            "log entries between the kept checkpoints around the period (edges included)",
            limit,
        ));
    }
    let mut parts = Vec::new();
    for (partition, latest, entries_from, entries_to, edges) in ranges {
        let indexes: BTreeSet<u64> = (entries_from..entries_to).collect();
        let entries = app
            .logs
            .entries(partition, &indexes, latest.checkpoint.size)
            .await?;
        parts.push(PartitionEntries {
            partition,
            latest,
            entries_from,
            entries_to,
            entries,
            edges,
        });
    }
    Ok(parts)
}

/// The start or the end of a partition's range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Start,
    End,
}

/// The bound of a partition's range on `side`, with its edge entry: the kept checkpoint
/// nearest the indexed events of the period (`first..=last`) whose edge `edge_outside` accepts
/// (the entry just before a start, the entry at an end), moving outward past edges it does
/// not (an index lagging behind the log, an entry without a time), up to the start of the log
/// or the latest checkpoint's `size`, which need no edge.
async fn range_bound<F, Fut>(
    side: Side,
    kept: &[u64],
    first: u64,
    last: u64,
    size: u64,
    mut edge_outside: F,
) -> Result<(u64, Option<Vec<u8>>), ApiError>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<Option<Vec<u8>>, ApiError>>,
{
    let candidates: Vec<u64> = match side {
        Side::Start => kept
            .iter()
            .copied()
            .filter(|kept| *kept <= first)
            .rev()
            .chain([0])
            .collect(),
        Side::End => kept
            .iter()
            .copied()
            .filter(|kept| *kept > last && *kept < size)
            .chain([size])
            .collect(),
    };
    for candidate in candidates {
        let edge_index = match side {
            Side::Start if candidate == 0 => return Ok((0, None)),
            Side::End if candidate == size => return Ok((size, None)),
            Side::Start => candidate - 1,
            Side::End => candidate,
        };
        if let Some(bytes) = edge_outside(edge_index).await? {
            return Ok((candidate, Some(bytes)));
        }
    }
    // Both lists end with a bound that needs no edge.
    Err(ApiError::internal("no bound for the range"))
}

/// Entry `index` of `partition` if it may be the edge just `before` (else just after) a range
/// for the period `from..to` ([`bundle::is_edge_outside_period`]); `None` when it may not: its
/// time is not outside the period, or it has none (not an event, or its blobs cannot be read).
async fn edge_outside(
    app: &AppState,
    partition: i32,
    index: u64,
    latest: &SignedCheckpoint,
    before: bool,
    from: i64,
    to: i64,
) -> Result<Option<Vec<u8>>, ApiError> {
    let (bytes, resolved) = match app
        .logs
        .entry(partition, index, latest.checkpoint.size)
        .await
    {
        Ok(entry) => entry,
        // An entry that cannot be read shows nothing; the range goes past it, and CC7.2's
        // integrity check names it.
        Err(ApiError::IntegrityFailure(reason)) => {
            tracing::warn!(partition, index, %reason, "entry cannot be an edge of the bundle");
            return Ok(None);
        }
        Err(other) => return Err(other),
    };
    let time = bundle::entry_time_micros(&resolved);
    Ok(bundle::is_edge_outside_period(time, before, from, to).then_some(bytes))
}

fn too_many(n: usize, what: &str, limit: usize) -> ApiError {
    ApiError::BadRequest(format!(
        "the period holds {n} {what}, more than the {limit} one bundle may hold (`evidence.max_export_events`): export a shorter period"
    ))
}

/// Builds the bundle of `from..to` (µs) and returns the `.tar.gz` bytes.
pub async fn build(app: &AppState, from: i64, to: i64) -> Result<Vec<u8>, ApiError> {
    let parts = period_entries(app, from, to, Some(app.max_export_events)).await?;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut manifest_partitions = Vec::new();
    let mut blobs: BTreeSet<String> = BTreeSet::new();
    for part in &parts {
        let partition = part.partition;
        let size = part.latest.checkpoint.size;
        let indexes: BTreeSet<u64> = part.entries.keys().copied().collect();
        let with_edges: BTreeSet<u64> = indexes.iter().chain(part.edges.keys()).copied().collect();
        let proofs = app
            .logs
            .tlog_proofs(partition, &with_edges, &part.latest)
            .await?;
        for (index, entry) in part.entries.iter().chain(&part.edges) {
            if let Ok(value) = serde_json::from_slice(entry) {
                blobs.extend(blob_references(&value).into_iter().map(|(_, hex)| hex));
            }
            files.push((bundle::entry_path(partition, *index), entry.clone()));
        }
        for (index, proof) in &proofs {
            files.push((bundle::proof_path(partition, *index), proof.to_bytes()));
        }
        files.push((bundle::checkpoint_path(partition), part.latest.note.clone()));
        // The two kept checkpoints around the entries, linked to each other and to the
        // latest: the entries are all of the log between them, and the log only grew.
        let mut checkpoints = Vec::new();
        for kept_size in [part.entries_from, part.entries_to] {
            if kept_size == 0 || kept_size == size || checkpoints.contains(&kept_size) {
                continue;
            }
            let checkpoint = app.logs.kept_checkpoint(partition, kept_size).await?;
            files.push((
                bundle::kept_checkpoint_path(partition, kept_size),
                checkpoint.note,
            ));
            checkpoints.push(kept_size);
        }
        let mut consistency = Vec::new();
        for (old, new) in bundle::consistency_chain(part.entries_from, part.entries_to, size) {
            let hashes = app
                .logs
                .reader(partition)
                .consistency_proof(old, new, size)
                .await
                .map_err(ApiError::from)?;
            files.push((
                bundle::consistency_path(partition, old, new),
                format_consistency_proof(&hashes).into_bytes(),
            ));
            consistency.push((old, new));
        }
        manifest_partitions.push(ManifestPartition {
            partition,
            checkpoint_size: size,
            entries_from: part.entries_from,
            entries_to: part.entries_to,
            entries: indexes.into_iter().collect(),
            edges: part.edges.keys().copied().collect(),
            checkpoints,
            consistency,
        });
    }
    for hex in blobs {
        let blob = app.logs.blob(&hex).await?.ok_or_else(|| {
            ApiError::IntegrityFailure(format!("blob {hex} named by an entry is missing"))
        })?;
        files.push((bundle::blob_path(&hex), blob));
    }

    let generated_at = now_micros();
    let report = report::from_entries(app, from, to, generated_at, &parts).await?;
    let manifest = Manifest {
        format: BUNDLE_FORMAT.to_string(),
        from: format_micros(from),
        to: format_micros(to),
        generated_at: format_micros(generated_at),
        partitions: manifest_partitions,
    };
    let mut head = vec![
        (
            README_PATH.to_string(),
            bundle::readme(&manifest, app.logs.verifier_key()).into_bytes(),
        ),
        (
            MANIFEST_PATH.to_string(),
            serde_json::to_vec_pretty(&manifest).map_err(ApiError::internal)?,
        ),
        (
            VERIFIER_KEY_PATH.to_string(),
            format!("{}\n", app.logs.verifier_key()).into_bytes(),
        ),
        (
            REPORT_JSON_PATH.to_string(),
            bundle::report_json(&report).into_bytes(),
        ),
        (
            REPORT_HTML_PATH.to_string(),
            callproof_report::render_html(&report).into_bytes(),
        ),
    ];
    head.append(&mut files);
    let mtime = u64::try_from(generated_at / 1_000_000).unwrap_or_default();
    tokio::task::spawn_blocking(move || pack(&head, mtime))
        .await?
        .map_err(ApiError::internal)
}

/// Writes the files into a `.tar.gz`.
fn pack(files: &[(String, Vec<u8>)], mtime: u64) -> std::io::Result<Vec<u8>> {
    callproof_tlog::bundle::write_bundle(
        files
            .iter()
            .map(|(path, bytes)| (path.as_str(), bytes.as_slice())),
        mtime,
    )
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// The fixture of `tlog/tests/bundle.rs`: 11 entries in batches of 2, 4, 4 and 1 (kept
    /// checkpoints 2, 6, 10), the period's events at 2 to 8, before it at 0 and 1, after it at
    /// 9 and 10. `None`: an entry without a time.
    const FROM: i64 = 1_000;
    const TO: i64 = 2_000;
    const KEPT: [u64; 3] = [2, 6, 10];
    const SIZE: u64 = 11;

    fn times() -> Vec<Option<i64>> {
        let mut times = vec![Some(10), Some(20)];
        times.extend((0..7).map(|n| Some(FROM + n)));
        times.extend([Some(TO + 1), Some(TO + 2)]);
        times
    }

    /// [`range_bound`] on both sides over `times`, with the indexes it read.
    fn range(times: &[Option<i64>], first: u64, last: u64) -> ((u64, u64), Vec<u64>) {
        let read = RefCell::new(Vec::new());
        let probe = |before: bool| {
            let read = &read;
            move |index: u64| {
                read.borrow_mut().push(index);
                let time = times[usize::try_from(index).unwrap()];
                let outside = bundle::is_edge_outside_period(time, before, FROM, TO);
                async move { Ok(outside.then(|| index.to_string().into_bytes())) }
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (start, left) = runtime
            .block_on(range_bound(
                Side::Start,
                &KEPT,
                first,
                last,
                SIZE,
                probe(true),
            ))
            .unwrap();
        let (end, right) = runtime
            .block_on(range_bound(
                Side::End,
                &KEPT,
                first,
                last,
                SIZE,
                probe(false),
            ))
            .unwrap();
        // The edges are the entries the verifier asks for.
        let edges: Vec<u64> = [left, right]
            .into_iter()
            .flatten()
            .map(|bytes| String::from_utf8(bytes).unwrap().parse().unwrap())
            .collect();
        assert_eq!(edges, bundle::edges(start, end, SIZE));
        ((start, end), read.into_inner())
    }

    #[test]
    fn an_index_up_to_date_gives_the_kept_checkpoints_around_the_events() {
        assert_eq!(range(&times(), 2, 8), ((2, 10), vec![1, 10]));
    }

    /// An index that lagged behind the log (it knew entries 2 to 5 only) made the export stop
    /// at the kept checkpoint 6 and leave out the `held` call at 6 to 8: the edge at 6 is in
    /// the period, so the range goes on to 10.
    #[test]
    fn a_lagging_index_widens_the_range_to_an_edge_after_the_period() {
        assert_eq!(range(&times(), 2, 5), ((2, 10), vec![1, 6, 10]));
        // An index that knows nothing past the first batch of the period: to the latest.
        let mut times = times();
        times[10] = Some(FROM);
        assert_eq!(range(&times, 2, 3), ((2, 11), vec![1, 6, 10]));
    }

    /// An entry without a time (an undecodable message) cannot be an edge: the range goes
    /// past it, here to the start of the log.
    #[test]
    fn an_entry_without_a_time_is_never_an_edge() {
        let mut times = times();
        times[1] = None;
        assert_eq!(range(&times, 2, 8), ((0, 10), vec![1, 10]));
        let mut times = self::times();
        times[10] = None;
        assert_eq!(range(&times, 2, 8), ((2, 11), vec![1, 10]));
    }
}
