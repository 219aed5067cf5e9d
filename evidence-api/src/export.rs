//! `GET /v1/export?from=&to=`: the evidence bundle of a period, a `.tar.gz` laid out as
//! `callproof_tlog::bundle` says, which `callproof-verify bundle --key VKEY FILE` checks offline.
//!
//! The period's events are found in the index; everything in the bundle comes from the logs:
//! the entries byte for byte, their inclusion proofs in each partition's latest checkpoint, the
//! kept checkpoints before and covering the period with consistency proofs up to the latest,
//! and the blobs the entries name. The bundle is packed in memory (at most
//! `evidence.max_export_events` events), off the async runtime.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use callproof_processor::entry::blob_references;
use callproof_tlog::bundle::{
    self, BUNDLE_FORMAT, MANIFEST_PATH, Manifest, ManifestPartition, README_PATH, REPORT_HTML_PATH,
    REPORT_JSON_PATH, VERIFIER_KEY_PATH,
};
use callproof_tlog::proof::format_consistency_proof;
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

/// Builds the bundle of `from..to` (µs) and returns the `.tar.gz` bytes.
pub async fn build(app: &AppState, from: i64, to: i64) -> Result<Vec<u8>, ApiError> {
    let index = app.index.clone();
    let filter = Filter {
        from_micros: Some(from),
        to_micros: Some(to),
        ..Filter::default()
    };
    let n_events = {
        let index = index.clone();
        let filter = filter.clone();
        tokio::task::spawn_blocking(move || index.count(&filter))
            .await?
            .map_err(search_error)?
    };
    if n_events > app.max_export_events {
        return Err(ApiError::BadRequest(format!(
            "the period holds {n_events} events, more than the {} one bundle may hold (`evidence.max_export_events`): export a shorter period",
            app.max_export_events
        )));
    }
    let events = tokio::task::spawn_blocking(move || index.scan(&filter))
        .await?
        .map_err(search_error)?;
    let mut by_partition: BTreeMap<i32, BTreeSet<u64>> = BTreeMap::new();
    for event in &events {
        by_partition
            .entry(event.partition)
            .or_default()
            .insert(event.log_index);
    }

    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut manifest_partitions = Vec::new();
    let mut blobs: BTreeSet<String> = BTreeSet::new();
    for (partition, indexes) in by_partition {
        let latest = app.logs.checkpoint(partition).await?;
        let size = latest.checkpoint.size;
        // An index ahead of its log names entries the log does not vouch for: leave them out.
        let indexes: BTreeSet<u64> = indexes.into_iter().filter(|index| *index < size).collect();
        let (Some(&first), Some(&last)) = (indexes.first(), indexes.last()) else {
            continue;
        };
        let entries = app.logs.entries(partition, &indexes, size).await?;
        let proofs = app.logs.tlog_proofs(partition, &indexes, &latest).await?;
        for (index, entry) in &entries {
            if let Ok(value) = serde_json::from_slice(entry) {
                blobs.extend(blob_references(&value).into_iter().map(|(_, hex)| hex));
            }
            files.push((bundle::entry_path(partition, *index), entry.clone()));
        }
        for (index, proof) in &proofs {
            files.push((bundle::proof_path(partition, *index), proof.to_bytes()));
        }
        files.push((bundle::checkpoint_path(partition), latest.note.clone()));
        // The log before the period and the first checkpoint that covers all of it, linked to
        // each other and to the latest: the log only grew across the period.
        let kept = app.logs.kept_sizes(partition).await?;
        let before = kept.iter().copied().filter(|kept| *kept <= first).max();
        let covering = kept
            .iter()
            .copied()
            .filter(|kept| *kept > last && *kept < size)
            .min();
        let mut checkpoints = Vec::new();
        for kept_size in before.iter().chain(covering.iter()) {
            let checkpoint = app.logs.kept_checkpoint(partition, *kept_size).await?;
            files.push((
                bundle::kept_checkpoint_path(partition, *kept_size),
                checkpoint.note,
            ));
            checkpoints.push(*kept_size);
        }
        let mut consistency = Vec::new();
        let chain: Vec<u64> = checkpoints.iter().copied().chain([size]).collect();
        for pair in chain.windows(2) {
            let (old, new) = (pair[0], pair[1]);
            if old == new {
                continue;
            }
            let hashes = if old == 0 {
                Vec::new()
            } else {
                app.logs
                    .reader(partition)
                    .consistency_proof(old, new, size)
                    .await
                    .map_err(ApiError::from)?
            };
            files.push((
                bundle::consistency_path(partition, old, new),
                format_consistency_proof(&hashes).into_bytes(),
            ));
            consistency.push((old, new));
        }
        manifest_partitions.push(ManifestPartition {
            partition,
            checkpoint_size: size,
            entries: indexes.into_iter().collect(),
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

    let report = report::build(app, from, to).await?;
    let manifest = Manifest {
        format: BUNDLE_FORMAT.to_string(),
        from: format_micros(from),
        to: format_micros(to),
        generated_at: format_micros(now_micros()),
        partitions: manifest_partitions,
    };
    let mut head = vec![
        (
            README_PATH.to_string(),
            readme(&manifest, app.logs.verifier_key()).into_bytes(),
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
            serde_json::to_vec_pretty(&report).map_err(ApiError::internal)?,
        ),
        (
            REPORT_HTML_PATH.to_string(),
            report::render_html(&report).into_bytes(),
        ),
    ];
    head.append(&mut files);
    let mtime = u64::try_from(now_micros() / 1_000_000).unwrap_or_default();
    tokio::task::spawn_blocking(move || pack(&head, mtime))
        .await?
        .map_err(ApiError::internal)
}

/// Writes the files into a `.tar.gz`.
fn pack(files: &[(String, Vec<u8>)], mtime: u64) -> std::io::Result<Vec<u8>> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut archive = tar::Builder::new(encoder);
    for (path, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        archive.append_data(&mut header, path, bytes.as_slice())?;
    }
    let mut encoder = archive.into_inner()?;
    encoder.flush()?;
    encoder.finish()
}

fn readme(manifest: &Manifest, verifier_key: &str) -> String {
    let n_entries: usize = manifest.partitions.iter().map(|p| p.entries.len()).sum();
    format!(
        r#"# callproof evidence bundle

Period: {from} to {to} (end excluded). Generated {generated}.
{n_entries} log entries from {n_partitions} partition log(s).

## Verify it

Get the logs' verifier key from your own records (not from this bundle: `verifier.key` is
only what the API served, to compare with), then run, offline:

    callproof-verify bundle --key VKEY callproof-evidence-....tar.gz

It checks every checkpoint signature, every entry against its inclusion proof in its
partition's checkpoint, every consistency proof between the kept checkpoints (the log only
grew across the period) and every blob against the hash its entry holds, and lists by
partition, entry index and file anything that fails. Exit status 0 means all of it verified.

The key the API served: {verifier_key}

## What is inside

| path | holds |
|---|---|
| `manifest.json` | the period; per partition the entries, checkpoints and consistency proofs here |
| `report.json`, `report.html` | the SOC 2 report of the period (links point at the evidence API) |
| `logs/<p>/checkpoint` | the signed checkpoint (C2SP tlog-checkpoint, signed-note Ed25519) all proofs of `p` are for |
| `logs/<p>/checkpoints/<size>` | the kept checkpoints just before and just covering the period |
| `logs/<p>/consistency/<old>-<new>` | RFC 6962 consistency proof, one base64 hash per line |
| `logs/<p>/entries/<index>` | the log entry: canonical JSON of the masked event |
| `logs/<p>/proofs/<index>` | its c2sp.org/tlog-proof@v1 inclusion proof |
| `blobs/sha256/<hex>` | a value moved out of an entry too large for the log |

Single files can be checked too:

    callproof-verify proof --key VKEY logs/0/entries/12 logs/0/proofs/12
    callproof-verify consistency --key VKEY logs/0/checkpoints/100 logs/0/checkpoint logs/0/consistency/100-250
"#,
        from = manifest.from,
        to = manifest.to,
        generated = manifest.generated_at,
        n_partitions = manifest.partitions.len(),
    )
}
