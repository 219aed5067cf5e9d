//! Evidence bundles: what `GET /v1/export` of the evidence API writes and
//! `callproof-verify bundle` checks, offline.
//!
//! A bundle is a gzip-compressed tar archive of plain files:
//!
//! | path | holds |
//! |---|---|
//! | `README.md` | how to verify the bundle |
//! | `manifest.json` | [`Manifest`]: the period, and per partition which entries, checkpoints and consistency proofs the bundle holds |
//! | `verifier.key` | the logs' verifier key, as the API served it (check it against the one you were given) |
//! | `report.json`, `report.html` | the SOC 2 report of the period |
//! | `logs/<p>/checkpoint` | the signed checkpoint every inclusion proof of partition `p` is for |
//! | `logs/<p>/checkpoints/<size>` | kept checkpoints: the last one before the period and the first one that covers it |
//! | `logs/<p>/consistency/<old>-<new>` | consistency proof (one base64 hash per line) from size `old` to `new` |
//! | `logs/<p>/entries/<index>` | the log entry, byte for byte |
//! | `logs/<p>/proofs/<index>` | its `c2sp.org/tlog-proof@v1` inclusion proof |
//! | `blobs/sha256/<hex>` | a value moved out of an entry too large for the log; the entry holds its hash |
//!
//! [`verify_bundle`] checks every signature, every inclusion and consistency proof and every
//! blob hash, and collects every failure (naming the partition, index and file) rather than
//! stopping at the first: an auditor wants the whole list.

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
pub const BUNDLE_FORMAT: &str = "callproof-evidence-bundle@v1";

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
    /// Entry indexes, ascending.
    pub entries: Vec<u64>,
    /// Sizes of the kept checkpoints in `logs/<p>/checkpoints/`.
    pub checkpoints: Vec<u64>,
    /// `(old, new)` sizes of the consistency proofs in `logs/<p>/consistency/`.
    pub consistency: Vec<(u64, u64)>,
}

/// The files of a bundle, by path.
pub type BundleFiles = BTreeMap<String, Vec<u8>>;

/// Reads a `.tar.gz` bundle into memory, refusing files above [`MAX_BUNDLE_FILE_BYTES`], a
/// total above [`MAX_BUNDLE_BYTES`], and paths that are absolute or climb out (`..`).
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
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(io)?.to_string_lossy().into_owned();
        let path = path.trim_start_matches("./").to_string();
        if path.starts_with('/') || path.split('/').any(|part| part == "..") {
            return Err(Error::malformed("bundle", format!("unsafe path {path:?}")));
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
    let manifest = match files.get(MANIFEST_PATH) {
        None => {
            report
                .problems
                .push(problem(None, None, MANIFEST_PATH, "missing".into()));
            return report;
        }
        Some(bytes) => match serde_json::from_slice::<Manifest>(bytes) {
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
        },
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
    report.from = manifest.from.clone();
    report.to = manifest.to.clone();
    report.partitions = manifest.partitions.len();
    match files.get(VERIFIER_KEY_PATH).map(|bytes| String::from_utf8_lossy(bytes)) {
        Some(key) => match key.trim().parse::<NoteVerifier>() {
            Ok(bundled) if bundled == *verifier => {}
            _ => report.warnings.push(format!(
                "{VERIFIER_KEY_PATH} is not the key given; the bundle was checked with the key given"
            )),
        },
        None => report.warnings.push(format!("{VERIFIER_KEY_PATH} is missing")),
    }
    for partition in &manifest.partitions {
        verify_partition(files, verifier, partition, &mut report);
    }
    report
}

fn verify_partition(
    files: &BundleFiles,
    verifier: &NoteVerifier,
    manifest: &ManifestPartition,
    report: &mut BundleReport,
) {
    let partition = manifest.partition;
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
            return;
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
            Ok(()) => report.consistency_proofs_verified += 1,
            Err(reason) => fail(None, &path, reason),
        }
    }
    for &index in &manifest.entries {
        let entry_file = entry_path(partition, index);
        let proof_file = proof_path(partition, index);
        let Some(entry) = files.get(&entry_file) else {
            fail(Some(index), &entry_file, "missing".into());
            continue;
        };
        let proof = match files.get(&proof_file).map(|bytes| TlogProof::parse(bytes)) {
            None => {
                fail(Some(index), &proof_file, "missing".into());
                continue;
            }
            Some(Err(error)) => {
                fail(Some(index), &proof_file, error.to_string());
                continue;
            }
            Some(Ok(proof)) => proof,
        };
        if proof.index != index {
            fail(
                Some(index),
                &proof_file,
                format!("proves index {}, not {index}", proof.index),
            );
            continue;
        }
        match proof.verify(entry, verifier) {
            Ok(checkpoint) if checkpoint != latest => fail(
                Some(index),
                &proof_file,
                format!(
                    "is for a checkpoint of size {}, not the bundle's {latest_path}",
                    checkpoint.size
                ),
            ),
            Ok(_) => {}
            Err(error) => {
                fail(
                    Some(index),
                    &entry_file,
                    format!(
                        "does not verify against {proof_file} (leaf hash {}): {error}",
                        crate::hash::to_base64(&leaf_hash(entry))
                    ),
                );
                continue;
            }
        }
        match check_entry_contents(files, partition, entry) {
            Ok(blobs) => {
                report.entries_verified += 1;
                report.blobs_verified += blobs;
            }
            Err((file, reason)) => {
                fail(Some(index), file.as_deref().unwrap_or(&entry_file), reason)
            }
        }
    }
    // Entries in the archive that the manifest does not list were not checked: say so.
    let listed: BTreeSet<u64> = manifest.entries.iter().copied().collect();
    let prefix = format!("logs/{partition}/entries/");
    for path in files.keys().filter(|path| path.starts_with(&prefix)) {
        let index = path[prefix.len()..].parse::<u64>().ok();
        if index.is_none_or(|index| !listed.contains(&index)) {
            fail(
                index,
                path,
                "is not listed in the manifest, so nothing vouches for it".into(),
            );
        }
    }
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
        let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut archive = tar::Builder::new(encoder);
        for (path, bytes) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            archive.append_data(&mut header, path, *bytes).unwrap();
        }
        archive.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn a_bundle_without_manifest_or_checkpoint_names_what_is_missing() {
        let files = read_bundle(tar_gz(&[("README.md", b"hi")]).as_slice()).unwrap();
        let report = verify_bundle(&files, &verifier());
        assert_eq!(report.problems[0].file, MANIFEST_PATH);

        let manifest = Manifest {
            format: BUNDLE_FORMAT.into(),
            from: "a".into(),
            to: "b".into(),
            generated_at: "c".into(),
            partitions: vec![ManifestPartition {
                partition: 3,
                checkpoint_size: 1,
                entries: vec![0],
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
}
