//! Evidence bundles: what `GET /v1/export` of the evidence API writes and
//! `callproof-verify bundle` checks, offline.
//!
//! A bundle is a gzip-compressed tar archive of plain files:
//!
//! | path | holds |
//! |---|---|
//! | `README.md` | how to verify the bundle |
//! | `manifest.json` | [`Manifest`]: the period, and per partition which entries, edge entries, checkpoints and consistency proofs the bundle holds |
//! | `verifier.key` | the logs' verifier key, as the API served it (check it against the one you were given) |
//! | `report.json`, `report.html` | the SOC 2 report of the period |
//! | `logs/<p>/checkpoint` | the signed checkpoint every inclusion proof of partition `p` is for |
//! | `logs/<p>/checkpoints/<size>` | kept checkpoints: the nearest one before the period's first event and the nearest one after its last whose edge entries are outside the period |
//! | `logs/<p>/consistency/<old>-<new>` | consistency proof (one base64 hash per line) from size `old` to `new` |
//! | `logs/<p>/entries/<index>` | every log entry between those two checkpoints, byte for byte, and the two edge entries just outside them |
//! | `logs/<p>/proofs/<index>` | its `c2sp.org/tlog-proof@v1` inclusion proof |
//! | `blobs/sha256/<hex>` | a value moved out of an entry too large for the log; the entry holds its hash |
//!
//! **Complete, not only authentic.** A partition's entries are *all* of its log between two
//! signed sizes: positions `entries_from..entries_to`, where `entries_from` is 0 or the size
//! of a kept checkpoint in the bundle and `entries_to` the size of one (or of the latest). The
//! consistency proofs tie both to the latest checkpoint, and every entry's inclusion proof
//! places it at its position in that tree, so no entry inside the range can be left out (its
//! position would be empty). Every published checkpoint is kept, though, so the range could be
//! narrowed to other kept sizes; the **edges** show it was not: the entry just before the range
//! (position `entries_from - 1`, when `entries_from > 0`) must have an event time before the
//! period's `from`, and the entry just after it (position `entries_to`, when `entries_to` is
//! below the latest checkpoint's size) a time at or after its `to`, each with its inclusion
//! proof. An entry's *time* is its event's `time` (µs), read with the event put back from its
//! blob when it was moved out whole; an entry with none (an undecodable message, an entry
//! that is not JSON, or whose event blob is missing) has no time and cannot be an edge: the
//! export then moves the range out to the next kept checkpoint, and finally to the start of
//! the log or its latest checkpoint, where there is no edge. This rests on the log's order
//! following time: a partition's events are appended as the gateway publishes them, so an
//! entry before one that precedes the period is taken to precede it too (a gateway whose
//! clock ran back across an edge could place an in-period event outside the range).
//!
//! [`verify_bundle`] checks every signature, every inclusion and consistency proof and every
//! blob hash; that every position of each range is there and both edges are, outside the
//! period; that nothing else is in the archive; that the README is the one the manifest
//! gives; that `report.json` states the key given to the verifier and a link prefix that is
//! empty or `http(s)://`; and it recomputes the report from the range's entries
//! (`callproof_report`) and compares it with `report.json` and `report.html`, figure by figure
//! and byte for byte. It collects every failure (naming the partition, index and file, or the
//! report's section and figure) rather than stopping at the first: an auditor wants the whole
//! list.
//!
//! What a bundle cannot show: that it holds every partition that has events in the period (a
//! partition left out whole, with its report figures rewritten to match, leaves nothing behind;
//! compare the partitions with `GET /v1/logs`); the integrity check of each whole log that the
//! API made when it built the report (the bundle holds only the period's part of each log);
//! and the rest of `report.json`'s context, taken as stated: the policies in force and the
//! link prefix's host.
//!
//! [`read_bundle`] refuses anything but regular files and directories (a symlink or hard link
//! would be skipped here but extracted by `tar`) and a path that is in the archive twice (`tar`
//! keeps the last copy, which would not be the one verified).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::checkpoint::Checkpoint;
use crate::hash::{EMPTY_ROOT, leaf_hash};
use crate::note::{NoteVerifier, SignedNote};
use crate::proof::{TlogProof, parse_consistency_proof, verify_consistency};
use crate::{Error, Result};

/// The `format` of a bundle's manifest.
/// v3: every entry between the two kept checkpoints (`entries_from`, `entries_to`), the edge
/// entries just outside them (`edges`), and a report that the entries recompute. Older formats
/// are refused ([`OLDER_FORMATS`]): v1 held the period's entries only, v2 had no edges, so
/// neither can show that no entry of the period was left out.
pub const BUNDLE_FORMAT: &str = "callproof-evidence-bundle@v3";

/// Formats of earlier exports, named as such when refused.
pub const OLDER_FORMATS: [&str; 2] = [
    "callproof-evidence-bundle@v1",
    "callproof-evidence-bundle@v2",
];

/// The largest file a bundle may hold (entries are at most 64 KiB; blobs hold large bodies).
pub const MAX_BUNDLE_FILE_BYTES: u64 = 256 << 20;

/// The most bytes a bundle may unpack to: the verifier holds it in memory.
pub const MAX_BUNDLE_BYTES: u64 = 8 << 30;

pub const README_PATH: &str = "README.md";
pub const MANIFEST_PATH: &str = "manifest.json";
pub const VERIFIER_KEY_PATH: &str = "verifier.key";
pub const REPORT_JSON_PATH: &str = "report.json";
pub const REPORT_HTML_PATH: &str = "report.html";

/// `logs/<p>/checkpoint`.
pub fn checkpoint_path(partition: i32) -> String {
    format!("logs/{partition}/checkpoint")
}

/// `logs/<p>/checkpoints/<size>`.
pub fn kept_checkpoint_path(partition: i32, size: u64) -> String {
    format!("logs/{partition}/checkpoints/{size}")
}

/// `logs/<p>/consistency/<old>-<new>`.
pub fn consistency_path(partition: i32, old_size: u64, new_size: u64) -> String {
    format!("logs/{partition}/consistency/{old_size}-{new_size}")
}

/// `logs/<p>/entries/<index>`.
pub fn entry_path(partition: i32, index: u64) -> String {
    format!("logs/{partition}/entries/{index}")
}

/// `logs/<p>/proofs/<index>`.
pub fn proof_path(partition: i32, index: u64) -> String {
    format!("logs/{partition}/proofs/{index}")
}

/// `blobs/sha256/<hex>`, as in the object store.
pub fn blob_path(sha256_hex: &str) -> String {
    format!("blobs/sha256/{sha256_hex}")
}

/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// [`BUNDLE_FORMAT`].
    pub format: String,
    /// The period (RFC 3339), `from` included, `to` excluded.
    pub from: String,
    pub to: String,
    pub generated_at: String,
    pub partitions: Vec<ManifestPartition>,
}

/// What a bundle holds of one partition's log.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestPartition {
    pub partition: i32,
    /// The size of `logs/<p>/checkpoint`.
    pub checkpoint_size: u64,
    /// The bundle holds every entry at positions `entries_from..entries_to`: from 0 or a kept
    /// checkpoint's size to a kept checkpoint's size or `checkpoint_size`.
    pub entries_from: u64,
    pub entries_to: u64,
    /// Entry indexes, ascending: exactly `entries_from..entries_to`.
    pub entries: Vec<u64>,
    /// The edge entries, ascending: `entries_from - 1` when `entries_from > 0` (its time is
    /// before the period) and `entries_to` when `entries_to < checkpoint_size` (its time is at
    /// or after the period's end). [`edges`] gives them.
    pub edges: Vec<u64>,
    /// Sizes of the kept checkpoints in `logs/<p>/checkpoints/`.
    pub checkpoints: Vec<u64>,
    /// `(old, new)` sizes of the consistency proofs in `logs/<p>/consistency/`.
    pub consistency: Vec<(u64, u64)>,
}

/// The consistency proofs a partition's bundle holds: from `entries_from` to `entries_to` and
/// from `entries_to` to the latest checkpoint's `size`, leaving out those from size 0 (the
/// empty tree is a prefix of every tree) and between equal sizes.
pub fn consistency_chain(entries_from: u64, entries_to: u64, size: u64) -> Vec<(u64, u64)> {
    [(entries_from, entries_to), (entries_to, size)]
        .into_iter()
        .filter(|(old, new)| *old > 0 && old < new)
        .collect()
}

/// The edge entries of the range `entries_from..entries_to` of a log of `size` entries: the
/// one just before it and the one just after it, where there are such positions.
pub fn edges(entries_from: u64, entries_to: u64, size: u64) -> Vec<u64> {
    [
        entries_from.checked_sub(1),
        (entries_to < size).then_some(entries_to),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// An entry's time, as an edge shows it: its event's `time` (µs since the epoch), from the
/// entry's JSON with the event put back from its blob when it was moved out whole. `None` for
/// an entry without one (not JSON, an undecodable message, a missing event blob): such an
/// entry cannot be an edge.
pub fn entry_time_micros(resolved_entry: &Value) -> Option<i64> {
    resolved_entry
        .get("event")
        .filter(|event| event.is_object())?
        .get("time")?
        .as_i64()
}

/// Whether an entry with `time` (µs) may be the edge just `before` (else just after) a range
/// for the period `from..to`: before its start, or at or after its end.
pub fn is_edge_outside_period(time: Option<i64>, before: bool, from: i64, to: i64) -> bool {
    match time {
        None => false,
        Some(time) if before => time < from,
        Some(time) => time >= to,
    }
}

/// `report.json`: the report, pretty-printed.
pub fn report_json(report: &callproof_report::Report) -> String {
    serde_json::to_string_pretty(report).unwrap_or_default()
}

/// `README.md` of a bundle with `manifest`, as the API served `verifier_key`.
pub fn readme(manifest: &Manifest, verifier_key: &str) -> String {
    let n_entries: usize = manifest.partitions.iter().map(|p| p.entries.len()).sum();
    format!(
        r#"# callproof evidence bundle

Period: {from} to {to} (end excluded). Generated {generated}.
{n_entries} log entries from {n_partitions} partition log(s): in each, every entry between the
last kept checkpoint before the period and the first after it, and the entry just outside each
end (its time is outside the period, so nothing of the period was left out there).

## Verify it

Get the logs' verifier key from your own records (not from this bundle: `verifier.key` is
only what the API served, to compare with), then run, offline:

    callproof-verify bundle --key VKEY callproof-evidence-....tar.gz

It checks every checkpoint signature, every entry against its inclusion proof in its
partition's checkpoint, every consistency proof between the kept checkpoints (the log only
grew across the period), that every entry between the kept checkpoints is here and the entries
just outside them are outside the period, and every blob against the hash its entry holds; it
recomputes the report from the entries and compares it with report.json and report.html. It lists by partition, entry index and file (or by the
report's section and figure) anything that fails. Exit status 0 means all of it verified.

The key the API served: {verifier_key}

## What is inside

| path | holds |
|---|---|
| `manifest.json` | the period; per partition the range of entries, the checkpoints and consistency proofs here |
| `report.json`, `report.html` | the SOC 2 report of the period, computed from these entries (links point at the evidence API) |
| `logs/<p>/checkpoint` | the signed checkpoint (C2SP tlog-checkpoint, signed-note Ed25519) all proofs of `p` are for |
| `logs/<p>/checkpoints/<size>` | the kept checkpoints just before and just after the period |
| `logs/<p>/consistency/<old>-<new>` | RFC 6962 consistency proof, one base64 hash per line |
| `logs/<p>/entries/<index>` | the log entry: canonical JSON of the masked event (and the two edge entries) |
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

/// The files of a bundle, by path.
pub type BundleFiles = BTreeMap<String, Vec<u8>>;

/// Packs `files` into a `.tar.gz` in the order given, as the evidence API sends a bundle:
/// regular files of mode 0644, all with modification time `mtime` (seconds), so that the same
/// files give the same bytes.
pub fn write_bundle<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    mtime: u64,
) -> std::io::Result<Vec<u8>> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut archive = tar::Builder::new(encoder);
    for (path, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        archive.append_data(&mut header, path, bytes)?;
    }
    archive.into_inner()?.finish()
}

/// Reads a `.tar.gz` bundle into memory, refusing files above [`MAX_BUNDLE_FILE_BYTES`], a
/// total above [`MAX_BUNDLE_BYTES`], paths that are absolute or climb out (`..`), entries
/// other than regular files and directories (links, devices: `tar` would extract what the
/// verifier never saw), and a path that is in the archive twice (`tar` keeps the last).
pub fn read_bundle(reader: impl Read) -> Result<BundleFiles> {
    let io = |error: std::io::Error| Error::Io {
        path: "bundle".to_string(),
        source: error,
    };
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    let mut files = BundleFiles::new();
    let mut total = 0u64;
    for entry in archive.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        let path = entry.path().map_err(io)?.to_string_lossy().into_owned();
        let path = path.trim_start_matches("./").to_string();
        if path.starts_with('/') || path.split('/').any(|part| part == "..") {
            return Err(Error::malformed("bundle", format!("unsafe path {path:?}")));
        }
        let entry_type = entry.header().entry_type();
        if entry_type.is_dir() {
            continue;
        }
        if !entry_type.is_file() {
            return Err(Error::malformed(
                "bundle",
                format!(
                    "{path} is a tar entry of type {entry_type:?}: a bundle holds only regular files and directories"
                ),
            ));
        }
        if files.contains_key(&path) {
            return Err(Error::malformed(
                "bundle",
                format!("{path} is in the archive twice: tar would keep the last copy"),
            ));
        }
        let size = entry.header().size().map_err(io)?;
        if size > MAX_BUNDLE_FILE_BYTES {
            return Err(Error::malformed(
                "bundle",
                format!("{path} is {size} bytes, more than {MAX_BUNDLE_FILE_BYTES}"),
            ));
        }
        total += size;
        if total > MAX_BUNDLE_BYTES {
            return Err(Error::malformed(
                "bundle",
                format!("it unpacks to more than {MAX_BUNDLE_BYTES} bytes"),
            ));
        }
        // The header's size is a claim: reserve at most 1 MiB up front, let reading grow it.
        let capacity = usize::try_from(size.min(1 << 20)).unwrap_or_default();
        let mut bytes = Vec::with_capacity(capacity);
        entry
            .by_ref()
            .take(MAX_BUNDLE_FILE_BYTES)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        files.insert(path, bytes);
    }
    Ok(files)
}

/// One thing in a bundle that failed to verify.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BundleProblem {
    pub partition: Option<i32>,
    /// The entry index, when the problem concerns one entry.
    pub index: Option<u64>,
    /// The file in the bundle.
    pub file: String,
    pub reason: String,
}

impl std::fmt::Display for BundleProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.partition, self.index) {
            (Some(partition), Some(index)) => write!(f, "partition {partition} index {index}: ")?,
            (Some(partition), None) => write!(f, "partition {partition}: ")?,
            _ => {}
        }
        write!(f, "{}: {}", self.file, self.reason)
    }
}

/// What [`verify_bundle`] checked, and what failed.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BundleReport {
    pub from: String,
    pub to: String,
    pub partitions: usize,
    pub entries_verified: u64,
    /// Edge entries verified: in their place, and outside the period.
    pub edges_verified: u64,
    pub checkpoints_verified: u64,
    pub consistency_proofs_verified: u64,
    pub blobs_verified: u64,
    /// Not failures: e.g. a `verifier.key` that differs from the key given.
    pub warnings: Vec<String>,
    pub problems: Vec<BundleProblem>,
}

impl BundleReport {
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verifies a bundle against `verifier` (the key the auditor trusts, not the bundle's own).
pub fn verify_bundle(files: &BundleFiles, verifier: &NoteVerifier) -> BundleReport {
    let mut report = BundleReport::default();
    let problem =
        |partition: Option<i32>, index: Option<u64>, file: &str, reason: String| BundleProblem {
            partition,
            index,
            file: file.to_string(),
            reason,
        };
    let Some(manifest_bytes) = files.get(MANIFEST_PATH) else {
        report
            .problems
            .push(problem(None, None, MANIFEST_PATH, "missing".into()));
        return report;
    };
    // The format first: an older manifest lacks fields, and deserves a clearer word than that.
    let format = serde_json::from_slice::<Value>(manifest_bytes)
        .ok()
        .and_then(|value| {
            value
                .get("format")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
    match format.as_deref() {
        Some(BUNDLE_FORMAT) | None => {}
        Some(older) if OLDER_FORMATS.contains(&older) => {
            report.problems.push(problem(
                None,
                None,
                MANIFEST_PATH,
                format!(
                    "format {older:?} is an older bundle format, which cannot show that no entry of the period was left out (it has no edge entries); this verifier checks {BUNDLE_FORMAT}: export the bundle again"
                ),
            ));
            return report;
        }
        Some(other) => {
            report.problems.push(problem(
                None,
                None,
                MANIFEST_PATH,
                format!("format {other:?} is not {BUNDLE_FORMAT}"),
            ));
            return report;
        }
    }
    let manifest = match serde_json::from_slice::<Manifest>(manifest_bytes) {
        Ok(manifest) => manifest,
        Err(error) => {
            report.problems.push(problem(
                None,
                None,
                MANIFEST_PATH,
                format!("malformed: {error}"),
            ));
            return report;
        }
    };
    if manifest.format != BUNDLE_FORMAT {
        report.problems.push(problem(
            None,
            None,
            MANIFEST_PATH,
            format!("format {:?} is not {BUNDLE_FORMAT}", manifest.format),
        ));
        return report;
    }
    // The period, which the edges are checked against.
    let period = callproof_report::Period::parse(&manifest.from, &manifest.to);
    if let Err(reason) = &period {
        report.problems.push(problem(
            None,
            None,
            MANIFEST_PATH,
            format!("its period: {reason}"),
        ));
    }
    let period = period.ok();
    report.from = manifest.from.clone();
    report.to = manifest.to.clone();
    report.partitions = manifest.partitions.len();
    let bundled_key = files
        .get(VERIFIER_KEY_PATH)
        .map(|bytes| String::from_utf8_lossy(bytes).trim().to_string());
    match &bundled_key {
        Some(key) => match key.parse::<NoteVerifier>() {
            Ok(bundled) if bundled == *verifier => {}
            _ => report.warnings.push(format!(
                "{VERIFIER_KEY_PATH} is not the key given; the bundle was checked with the key given"
            )),
        },
        None => report.warnings.push(format!("{VERIFIER_KEY_PATH} is missing")),
    }
    let mut seen = BTreeSet::new();
    let mut verified = Vec::new();
    for partition in &manifest.partitions {
        if !seen.insert(partition.partition) {
            report.problems.push(problem(
                Some(partition.partition),
                None,
                MANIFEST_PATH,
                "the partition is listed twice".into(),
            ));
            continue;
        }
        verified.push(verify_partition(
            files,
            verifier,
            partition,
            period.as_ref(),
            &mut report,
        ));
    }
    let expected_readme = readme(&manifest, bundled_key.as_deref().unwrap_or_default());
    match files.get(README_PATH) {
        None => report
            .problems
            .push(problem(None, None, README_PATH, "missing".into())),
        Some(bytes) if bytes.as_slice() != expected_readme.as_bytes() => {
            report.problems.push(problem(
                None,
                None,
                README_PATH,
                "is not the README the manifest and verifier.key give: it was altered".into(),
            ))
        }
        Some(_) => {}
    }
    unlisted_files(files, &manifest, &mut report);
    check_report(files, verifier, &manifest, &verified, &mut report);
    report
}

/// What [`verify_partition`] found: the partition's latest checkpoint, if it verified, and the
/// entries that verified (index → bytes).
struct VerifiedPartition<'a> {
    partition: i32,
    latest: Option<Checkpoint>,
    entries: BTreeMap<u64, &'a [u8]>,
}

fn verify_partition<'a>(
    files: &'a BundleFiles,
    verifier: &NoteVerifier,
    manifest: &ManifestPartition,
    period: Option<&callproof_report::Period>,
    report: &mut BundleReport,
) -> VerifiedPartition<'a> {
    let partition = manifest.partition;
    let mut verified = VerifiedPartition {
        partition,
        latest: None,
        entries: BTreeMap::new(),
    };
    let mut fail = |index: Option<u64>, file: &str, reason: String| {
        report.problems.push(BundleProblem {
            partition: Some(partition),
            index,
            file: file.to_string(),
            reason,
        })
    };
    let open = |path: &str| -> std::result::Result<Checkpoint, String> {
        let bytes = files.get(path).ok_or("missing")?;
        let text = SignedNote::open(bytes, verifier).map_err(|error| error.to_string())?;
        Checkpoint::parse(&text).map_err(|error| error.to_string())
    };
    let latest_path = checkpoint_path(partition);
    let latest = match open(&latest_path) {
        Ok(checkpoint) => checkpoint,
        Err(reason) => {
            // Without the checkpoint no proof of this partition can be checked.
            fail(None, &latest_path, reason);
            return verified;
        }
    };
    if latest.size != manifest.checkpoint_size {
        fail(
            None,
            &latest_path,
            format!(
                "has size {}, but the manifest says {}",
                latest.size, manifest.checkpoint_size
            ),
        );
    }
    let mut verified_checkpoints = 1u64;
    // Checkpoints by size: the latest and every kept one that verifies.
    let mut by_size: BTreeMap<u64, Checkpoint> = BTreeMap::new();
    by_size.insert(latest.size, latest.clone());
    for &size in &manifest.checkpoints {
        let path = kept_checkpoint_path(partition, size);
        match open(&path) {
            Ok(checkpoint) if checkpoint.size != size => fail(
                None,
                &path,
                format!("has size {}, not {size}", checkpoint.size),
            ),
            Ok(checkpoint) if checkpoint.origin != latest.origin => fail(
                None,
                &path,
                format!(
                    "has origin {:?}, not {:?}",
                    checkpoint.origin, latest.origin
                ),
            ),
            Ok(checkpoint) => {
                if let Some(existing) = by_size.get(&size)
                    && existing.root_hash != checkpoint.root_hash
                {
                    fail(
                        None,
                        &path,
                        format!(
                            "signs another root than {latest_path} at size {size}: the log forked"
                        ),
                    );
                    continue;
                }
                verified_checkpoints += 1;
                by_size.insert(size, checkpoint);
            }
            Err(reason) => fail(None, &path, reason),
        }
    }
    report.checkpoints_verified += verified_checkpoints;
    let mut consistent: BTreeSet<(u64, u64)> = BTreeSet::new();
    for &(old_size, new_size) in &manifest.consistency {
        let path = consistency_path(partition, old_size, new_size);
        let (Some(old), Some(new)) = (by_size.get(&old_size), by_size.get(&new_size)) else {
            fail(
                None,
                &path,
                format!(
                    "no verified checkpoint of size {old_size} and {new_size} to check it with"
                ),
            );
            continue;
        };
        let result = files
            .get(&path)
            .ok_or_else(|| "missing".to_string())
            .and_then(|bytes| parse_consistency_proof(bytes).map_err(|error| error.to_string()))
            .and_then(|proof| {
                if old.size == 0 {
                    // The empty tree is a prefix of every tree; only its root can be wrong.
                    return if old.root_hash == EMPTY_ROOT && proof.is_empty() {
                        Ok(())
                    } else {
                        Err("a proof from size 0 must be empty, from the empty root".into())
                    };
                }
                verify_consistency(old.size, new.size, &proof, &old.root_hash, &new.root_hash)
                    .map_err(|error| error.to_string())
            });
        match result {
            Ok(()) => {
                report.consistency_proofs_verified += 1;
                consistent.insert((old_size, new_size));
            }
            Err(reason) => fail(None, &path, reason),
        }
    }

    // The range: all of the log between two signed sizes, tied to the latest.
    let (entries_from, entries_to) = (manifest.entries_from, manifest.entries_to);
    if entries_from > entries_to || entries_to > latest.size {
        fail(
            None,
            MANIFEST_PATH,
            format!(
                "entries {entries_from}..{entries_to} are not within the log of size {}",
                latest.size
            ),
        );
        return verified;
    }
    for (size, which) in [(entries_from, "first"), (entries_to, "end")] {
        if size != 0 && !by_size.contains_key(&size) {
            fail(
                None,
                &kept_checkpoint_path(partition, size),
                format!(
                    "missing or invalid: nothing signs size {size}, where the entries' range {entries_from}..{entries_to} has its {which} position"
                ),
            );
        }
    }
    for (old_size, new_size) in consistency_chain(entries_from, entries_to, latest.size) {
        if !consistent.contains(&(old_size, new_size)) {
            fail(
                None,
                &consistency_path(partition, old_size, new_size),
                format!(
                    "missing or invalid: nothing shows that the log of size {old_size} is a prefix of the log of size {new_size}"
                ),
            );
        }
    }
    let listed: BTreeSet<u64> = manifest.entries.iter().copied().collect();
    for &index in listed
        .range(..entries_from)
        .chain(listed.range(entries_to..))
    {
        fail(
            Some(index),
            MANIFEST_PATH,
            format!("lists entry {index}, outside the range {entries_from}..{entries_to}"),
        );
    }
    let mut missing: Vec<(u64, bool)> = Vec::new();
    let mut entry_results = Vec::new();
    for index in entries_from..entries_to {
        match check_entry(files, verifier, partition, index, &latest, &latest_path) {
            EntryCheck::Missing => missing.push((index, listed.contains(&index))),
            result => {
                if !listed.contains(&index) {
                    fail(
                        Some(index),
                        MANIFEST_PATH,
                        format!(
                            "does not list entry {index}, which the range {entries_from}..{entries_to} holds"
                        ),
                    );
                }
                entry_results.push((index, result));
            }
        }
    }
    for (index, result) in entry_results {
        match result {
            EntryCheck::Verified { bytes, blobs } => {
                report.entries_verified += 1;
                report.blobs_verified += blobs;
                verified.entries.insert(index, bytes);
            }
            EntryCheck::Failed { file, reason } => fail(Some(index), &file, reason),
            EntryCheck::Missing => {}
        }
    }

    // The edges: the entries just outside the range, outside the period.
    let expected_edges = edges(entries_from, entries_to, latest.size);
    if manifest.edges != expected_edges {
        fail(
            None,
            MANIFEST_PATH,
            format!(
                "lists the edge entries {:?}, but the range {entries_from}..{entries_to} of a log of size {} has {expected_edges:?}",
                manifest.edges, latest.size
            ),
        );
    }
    for index in expected_edges {
        let before = index < entries_from;
        let (which, side) = if before {
            ("just before", "before")
        } else {
            ("just after", "after")
        };
        let entry_file = entry_path(partition, index);
        let bytes = match check_entry(files, verifier, partition, index, &latest, &latest_path) {
            EntryCheck::Missing => {
                fail(
                    Some(index),
                    &entry_file,
                    format!(
                        "missing: the entry {which} the range {entries_from}..{entries_to} must be in the bundle, to show that the entries {side} it are outside the period"
                    ),
                );
                continue;
            }
            EntryCheck::Failed { file, reason } => {
                fail(Some(index), &file, reason);
                continue;
            }
            EntryCheck::Verified { bytes, blobs } => {
                report.blobs_verified += blobs;
                bytes
            }
        };
        let Some(period) = period else {
            // The manifest's period is named already; nothing to check the edge against.
            continue;
        };
        let time = resolved_entry(files, bytes)
            .as_ref()
            .and_then(entry_time_micros);
        if is_edge_outside_period(time, before, period.from_micros, period.to_micros) {
            report.edges_verified += 1;
            continue;
        }
        let reason = match time {
            None => format!(
                "the entry {which} the range {entries_from}..{entries_to} has no event time (not a call event, or its event's blob is missing), so it cannot show that the entries {side} it are outside the period {} to {}",
                period.from, period.to
            ),
            Some(time) => {
                let place = if period.contains(time) {
                    "in the period"
                } else if time < period.from_micros {
                    "before the period"
                } else {
                    "after the period"
                };
                format!(
                    "the entry {which} the range {entries_from}..{entries_to} has time {}, {place} {} to {}: entries of the period {side} the range may have been left out",
                    callproof_report::format_micros(time),
                    period.from,
                    period.to
                )
            }
        };
        fail(Some(index), &entry_file, reason);
    }
    // Runs of missing entries, one problem each.
    let mut position = 0;
    while position < missing.len() {
        let (first, _) = missing[position];
        let mut last = first;
        let mut unlisted = !missing[position].1;
        while position + 1 < missing.len() && missing[position + 1].0 == last + 1 {
            position += 1;
            last = missing[position].0;
            unlisted |= !missing[position].1;
        }
        position += 1;
        let what = if first == last {
            format!("entry {first} is")
        } else {
            format!("entries {first} to {last} are")
        };
        fail(
            Some(first),
            &entry_path(partition, first),
            format!(
                "missing: {what} not in the bundle, but it must hold every entry of {entries_from}..{entries_to}, between the signed sizes {entries_from} and {entries_to}{}",
                if unlisted {
                    " (and the manifest's list of entries was cut to match)"
                } else {
                    ""
                }
            ),
        );
    }
    verified.latest = Some(latest);
    verified
}

/// What [`check_entry`] found of one entry.
enum EntryCheck<'a> {
    /// No `logs/<p>/entries/<index>`.
    Missing,
    /// The entry is at its position in the latest checkpoint, its blobs are there with their
    /// hashes, and it is filed under its partition.
    Verified {
        bytes: &'a [u8],
        blobs: u64,
    },
    Failed {
        file: String,
        reason: String,
    },
}

/// Checks entry `index` of `partition` against its inclusion proof in `latest` and its blobs.
fn check_entry<'a>(
    files: &'a BundleFiles,
    verifier: &NoteVerifier,
    partition: i32,
    index: u64,
    latest: &Checkpoint,
    latest_path: &str,
) -> EntryCheck<'a> {
    let entry_file = entry_path(partition, index);
    let proof_file = proof_path(partition, index);
    let failed = |file: &str, reason: String| EntryCheck::Failed {
        file: file.to_string(),
        reason,
    };
    let Some(entry) = files.get(&entry_file) else {
        return EntryCheck::Missing;
    };
    let proof = match files.get(&proof_file).map(|bytes| TlogProof::parse(bytes)) {
        None => return failed(&proof_file, "missing".into()),
        Some(Err(error)) => return failed(&proof_file, error.to_string()),
        Some(Ok(proof)) => proof,
    };
    if proof.index != index {
        return failed(
            &proof_file,
            format!("proves index {}, not {index}", proof.index),
        );
    }
    match proof.verify(entry, verifier) {
        Ok(checkpoint) if checkpoint != *latest => {
            return failed(
                &proof_file,
                format!(
                    "is for a checkpoint of size {}, not the bundle's {latest_path}",
                    checkpoint.size
                ),
            );
        }
        Ok(_) => {}
        Err(error) => {
            return failed(
                &entry_file,
                format!(
                    "does not verify against {proof_file} (leaf hash {}): {error}",
                    crate::hash::to_base64(&leaf_hash(entry))
                ),
            );
        }
    }
    match check_entry_contents(files, partition, entry) {
        Ok(blobs) => EntryCheck::Verified {
            bytes: entry.as_slice(),
            blobs,
        },
        Err((file, reason)) => failed(file.as_deref().unwrap_or(&entry_file), reason),
    }
}

/// Files under `logs/` and `blobs/` that the manifest and the entries do not account for, and
/// anything else that is not one of the bundle's named files.
fn unlisted_files(files: &BundleFiles, manifest: &Manifest, report: &mut BundleReport) {
    let mut expected: BTreeSet<String> = [
        README_PATH,
        MANIFEST_PATH,
        VERIFIER_KEY_PATH,
        REPORT_JSON_PATH,
        REPORT_HTML_PATH,
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    for partition in &manifest.partitions {
        let p = partition.partition;
        expected.insert(checkpoint_path(p));
        for &size in &partition.checkpoints {
            expected.insert(kept_checkpoint_path(p, size));
        }
        for &(old, new) in &partition.consistency {
            expected.insert(consistency_path(p, old, new));
        }
        // The edges the manifest lists; whether they are the right ones is checked with the
        // partition.
        let edge_indexes = partition.edges.iter().copied();
        for index in (partition.entries_from..partition.entries_to).chain(edge_indexes) {
            expected.insert(entry_path(p, index));
            expected.insert(proof_path(p, index));
            let blobs = files
                .get(&entry_path(p, index))
                .and_then(|entry| serde_json::from_slice::<Value>(entry).ok())
                .and_then(|entry| entry.get("blobs").and_then(Value::as_object).cloned())
                .unwrap_or_default();
            for hex in blobs.values().filter_map(Value::as_str) {
                expected.insert(blob_path(hex));
            }
        }
    }
    for path in files.keys().filter(|path| !expected.contains(*path)) {
        let mut parts = path.split('/');
        let partition = match (parts.next(), parts.next()) {
            (Some("logs"), Some(partition)) => partition.parse().ok(),
            _ => None,
        };
        let index = match (parts.next(), parts.next()) {
            (Some("entries" | "proofs"), Some(index)) => index.parse().ok(),
            _ => None,
        };
        report.problems.push(BundleProblem {
            partition,
            index,
            file: path.clone(),
            reason:
                "is not listed in the manifest nor named by an entry, so nothing vouches for it"
                    .into(),
        });
    }
}

/// Recomputes the report from the entries that verified and compares it with `report.json` and
/// `report.html`, after checking what it states that the entries do not give: the verifier
/// key (the one given), the link prefix (empty or `http(s)://`) and the logs' ranges, sizes and
/// roots (the bundle's).
fn check_report(
    files: &BundleFiles,
    verifier: &NoteVerifier,
    manifest: &Manifest,
    verified: &[VerifiedPartition<'_>],
    report: &mut BundleReport,
) {
    let mut fail = |file: &str, reason: String| {
        report.problems.push(BundleProblem {
            partition: None,
            index: None,
            file: file.to_string(),
            reason,
        })
    };
    let Some(json_bytes) = files.get(REPORT_JSON_PATH) else {
        fail(REPORT_JSON_PATH, "missing".into());
        return;
    };
    let delivered: Value = match serde_json::from_slice(json_bytes) {
        Ok(value) => value,
        Err(error) => {
            fail(REPORT_JSON_PATH, format!("malformed: {error}"));
            return;
        }
    };
    let stated = match serde_json::from_value::<callproof_report::Report>(delivered.clone()) {
        Ok(stated) => stated,
        Err(error) => {
            fail(REPORT_JSON_PATH, format!("is not a report: {error}"));
            return;
        }
    };
    for (field, stated_value, manifest_value) in [
        ("from", &stated.from, &manifest.from),
        ("to", &stated.to, &manifest.to),
        ("generated_at", &stated.generated_at, &manifest.generated_at),
    ] {
        if stated_value != manifest_value {
            fail(
                REPORT_JSON_PATH,
                format!("`{field}` is {stated_value:?}, but the manifest says {manifest_value:?}"),
            );
        }
    }
    // The key the report names is the one the auditor trusts, as the bundle was checked with it.
    match stated.verifier_key.trim().parse::<NoteVerifier>() {
        Ok(stated_key) if stated_key == *verifier => {}
        Ok(_) => fail(
            REPORT_JSON_PATH,
            format!(
                "`verifier_key` is {:?}, not the key given to the verifier",
                stated.verifier_key
            ),
        ),
        Err(error) => fail(
            REPORT_JSON_PATH,
            format!(
                "`verifier_key` is {:?}, not the key given to the verifier: {error}",
                stated.verifier_key
            ),
        ),
    }
    // Every link of the page starts with the prefix: only the evidence API's http(s) URL, or
    // nothing (relative links), never a `javascript:` or other scheme.
    let link_base = &stated.context.link_base;
    if !(link_base.is_empty()
        || link_base.starts_with("http://")
        || link_base.starts_with("https://"))
    {
        fail(
            REPORT_JSON_PATH,
            format!(
                "`context.link_base` is {link_base:?}: links must be relative (empty) or start with http:// or https://"
            ),
        );
    }
    // The logs the report states must be the bundle's, range for range and root for root.
    let stated_logs: BTreeMap<i32, &callproof_report::LogState> = stated
        .context
        .logs
        .iter()
        .map(|log| (log.partition, log))
        .collect();
    for partition in &manifest.partitions {
        let p = partition.partition;
        let Some(log) = stated_logs.get(&p) else {
            fail(
                REPORT_JSON_PATH,
                format!("states nothing of the log of partition {p}, which the bundle holds"),
            );
            continue;
        };
        let latest = verified
            .iter()
            .find(|verified| verified.partition == p)
            .and_then(|verified| verified.latest.as_ref());
        let mut mismatches = Vec::new();
        if (log.entries_from, log.entries_to) != (partition.entries_from, partition.entries_to) {
            mismatches.push(format!(
                "entries {}..{} (the bundle's are {}..{})",
                log.entries_from, log.entries_to, partition.entries_from, partition.entries_to
            ));
        }
        if let Some(latest) = latest {
            if log.log_size != latest.size {
                mismatches.push(format!(
                    "log size {} (the checkpoint's is {})",
                    log.log_size, latest.size
                ));
            }
            let root = crate::hash::to_base64(&latest.root_hash);
            if log.root_hash != root {
                mismatches.push(format!(
                    "root {} (the checkpoint's is {root})",
                    log.root_hash
                ));
            }
        }
        if !mismatches.is_empty() {
            fail(
                REPORT_JSON_PATH,
                format!(
                    "states of the log of partition {p}: {}",
                    mismatches.join(", ")
                ),
            );
        }
    }
    for p in stated_logs.keys() {
        if !manifest
            .partitions
            .iter()
            .any(|partition| partition.partition == *p)
        {
            fail(
                REPORT_JSON_PATH,
                format!("states the log of partition {p}, which the bundle does not hold"),
            );
        }
    }
    let inputs = match stated.inputs() {
        Ok(inputs) => inputs,
        Err(reason) => {
            fail(REPORT_JSON_PATH, format!("its period: {reason}"));
            return;
        }
    };
    let mut events = Vec::new();
    for partition in verified {
        for (&index, entry) in &partition.entries {
            if let Some(entry) = resolved_entry(files, entry) {
                events.extend(callproof_report::ReportEvent::from_entry(
                    partition.partition,
                    index,
                    &entry,
                ));
            }
        }
    }
    let recomputed = callproof_report::build(&inputs, &events);
    for difference in callproof_report::differences(&recomputed, &delivered) {
        fail(REPORT_JSON_PATH, difference);
    }
    if json_bytes.as_slice() != report_json(&recomputed).as_bytes()
        && callproof_report::differences(&recomputed, &delivered).is_empty()
    {
        fail(
            REPORT_JSON_PATH,
            "holds the recomputed report, but not byte for byte as the API writes it".into(),
        );
    }
    match files.get(REPORT_HTML_PATH) {
        None => fail(REPORT_HTML_PATH, "missing".into()),
        Some(html) => {
            if let Some(difference) = callproof_report::html_difference(&recomputed, html) {
                fail(
                    REPORT_HTML_PATH,
                    format!("is not the page of the report the entries give: {difference}"),
                );
            }
        }
    }
}

/// An entry's JSON with its event put back from its blob when it was moved out whole (the
/// blob's hash was checked with the entry); `None` for an entry that is not JSON.
fn resolved_entry(files: &BundleFiles, entry: &[u8]) -> Option<Value> {
    let mut entry: Value = serde_json::from_slice(entry).ok()?;
    let event_blob = entry
        .pointer("/blobs/~1event")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(hex) = event_blob
        && let Some(event) = files
            .get(&blob_path(&hex))
            .and_then(|blob| serde_json::from_slice::<Value>(blob).ok())
        && let Some(object) = entry.as_object_mut()
    {
        object.insert("event".into(), event);
    }
    Some(entry)
}

/// Checks what the log's hash cannot: that the blobs an entry names are in the bundle with the
/// right hash, and that the entry is in the partition it is filed under. Returns the number
/// of blobs checked, or the file (`None`: the entry itself) and reason of a failure.
fn check_entry_contents(
    files: &BundleFiles,
    partition: i32,
    entry: &[u8],
) -> std::result::Result<u64, (Option<String>, String)> {
    // Entries are JSON (the processor's entry format); anything else has nothing more to check.
    let Ok(document) = serde_json::from_slice::<Value>(entry) else {
        return Ok(0);
    };
    if let Some(filed) = document
        .pointer("/source/kafka/partition")
        .and_then(Value::as_i64)
        && filed != i64::from(partition)
    {
        return Err((
            None,
            format!("the entry says it came from partition {filed}"),
        ));
    }
    let mut checked = 0;
    for (pointer, hex) in document
        .get("blobs")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let Some(hex) = hex.as_str() else {
            return Err((
                None,
                format!("the entry's blob reference for {pointer} is not a string"),
            ));
        };
        let path = blob_path(hex);
        let Some(blob) = files.get(&path) else {
            return Err((Some(path), format!("missing (the entry's {pointer})")));
        };
        let actual = hex_string(&Sha256::digest(blob));
        if actual != hex {
            return Err((
                Some(path),
                format!("has SHA-256 {actual}: it was altered (the entry's {pointer})"),
            ));
        }
        checked += 1;
    }
    Ok(checked)
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// SHA-256 of `bytes`, in lowercase hex, as blob names use.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex_string(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::NoteSigner;

    fn verifier() -> NoteVerifier {
        let (_, verifier_key) = NoteSigner::generate("test/log").unwrap();
        verifier_key.parse().unwrap()
    }

    fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
        write_bundle(files.iter().copied(), 0).unwrap()
    }

    #[test]
    fn a_bundle_without_manifest_or_checkpoint_names_what_is_missing() {
        let files = read_bundle(tar_gz(&[("README.md", b"hi")]).as_slice()).unwrap();
        let report = verify_bundle(&files, &verifier());
        assert_eq!(report.problems[0].file, MANIFEST_PATH);

        let manifest = Manifest {
            format: BUNDLE_FORMAT.into(),
            from: "2026-01-01T00:00:00Z".into(),
            to: "2026-02-01T00:00:00Z".into(),
            generated_at: "c".into(),
            partitions: vec![ManifestPartition {
                partition: 3,
                checkpoint_size: 1,
                entries_from: 0,
                entries_to: 1,
                entries: vec![0],
                edges: vec![],
                checkpoints: vec![],
                consistency: vec![],
            }],
        };
        let manifest = serde_json::to_vec(&manifest).unwrap();
        let files = read_bundle(
            tar_gz(&[(MANIFEST_PATH, &manifest), ("logs/3/entries/0", b"{}")]).as_slice(),
        )
        .unwrap();
        let report = verify_bundle(&files, &verifier());
        assert!(!report.is_valid());
        assert_eq!(report.problems[0].partition, Some(3));
        assert_eq!(report.problems[0].file, "logs/3/checkpoint");
        assert!(report.problems[0].to_string().starts_with("partition 3: "));
    }

    #[test]
    fn unsafe_paths_are_refused() {
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        let mut archive = tar::Builder::new(Vec::new());
        // `append_data` refuses `..` itself, so write the name into the header by hand.
        header.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
        header.set_cksum();
        archive.append(&header, &b"x"[..]).unwrap();
        let tar = archive.into_inner().unwrap();
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut encoder, &tar).unwrap();
        let error = read_bundle(encoder.finish().unwrap().as_slice()).unwrap_err();
        assert!(error.to_string().contains("unsafe path"), "{error}");
    }

    /// A symlink `report.html` after the verified regular file: the verifier skipped it, tar
    /// extracted it over the file.
    #[test]
    fn a_link_entry_is_refused() {
        for entry_type in [tar::EntryType::Symlink, tar::EntryType::Link] {
            let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            let mut archive = tar::Builder::new(encoder);
            let mut header = tar::Header::new_gnu();
            header.set_size(4);
            header.set_mode(0o644);
            archive
                .append_data(&mut header, REPORT_HTML_PATH, &b"page"[..])
                .unwrap();
            let mut link = tar::Header::new_gnu();
            link.set_entry_type(entry_type);
            link.set_size(0);
            archive
                .append_link(&mut link, REPORT_HTML_PATH, "/etc/passwd")
                .unwrap();
            let bytes = archive.into_inner().unwrap().finish().unwrap();
            let error = read_bundle(bytes.as_slice()).unwrap_err().to_string();
            assert!(
                error.contains("report.html") && error.contains("only regular files"),
                "{error}"
            );
        }
    }

    /// A second `report.html` replaced the first in the verifier, while tar keeps the last.
    #[test]
    fn a_path_twice_is_refused() {
        let bytes = tar_gz(&[(REPORT_HTML_PATH, b"one"), (REPORT_HTML_PATH, b"two")]);
        let error = read_bundle(bytes.as_slice()).unwrap_err().to_string();
        assert!(
            error.contains("report.html is in the archive twice"),
            "{error}"
        );
        // `./report.html` is the same path.
        let bytes = tar_gz(&[(REPORT_HTML_PATH, b"one"), ("./report.html", b"two")]);
        assert!(read_bundle(bytes.as_slice()).is_err());
        // Directories are fine.
        let bytes = tar_gz(&[("logs/0/entries/1", b"{}")]);
        assert!(read_bundle(bytes.as_slice()).is_ok());
    }
}
