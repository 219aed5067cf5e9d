//! The RFC 6962 vectors of transparency-dev/merkle: every `wantErr: false` proof accepted,
//! every `wantErr: true` one refused. The counts are exact, so that a loader that skips
//! files, or vectors that change upstream, fail here instead of passing with fewer cases.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use callproof_tlog::hash::Hash;
use callproof_tlog::proof::{verify_consistency, verify_inclusion};
use serde_json::Value;

use crate::support::testdata;

fn json_files(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            json_files(&path, files);
        } else if path
            .extension()
            .is_some_and(|extension| extension == "json")
        {
            files.push(path);
        }
    }
}

/// A hash field; `None` when it is not base64.
///
/// Some vectors use roots that are not 32 bytes ("don't care" values) where only their
/// equality matters (equal sizes). Those map to SHA-256 of a tag and the bytes: equal
/// values stay equal, and none can equal a real computed hash.
fn hash(value: &Value) -> Option<Hash> {
    let bytes = STANDARD.decode(value.as_str()?).ok()?;
    Some(Hash::try_from(bytes.as_slice()).unwrap_or_else(|_| {
        use sha2::Digest as _;
        sha2::Sha256::digest([b"not a 32-byte hash:".as_slice(), &bytes].concat()).into()
    }))
}

/// A leaf hash or proof element must be exactly 32 bytes; anything else is refused.
fn strict_hash(value: &Value) -> Option<Hash> {
    let bytes = STANDARD.decode(value.as_str()?).ok()?;
    Hash::try_from(bytes.as_slice()).ok()
}

fn hashes(value: &Value) -> Option<Vec<Hash>> {
    value
        .as_array()
        .map(|items| items.iter().map(strict_hash).collect::<Option<Vec<_>>>())
        .unwrap_or(Some(Vec::new())) // `null` is an empty proof
}

/// Runs every vector of `kind`; returns how many files were loaded, accepted and refused.
fn run_cases(kind: &str, check: impl Fn(&Value) -> bool) -> (usize, usize, usize) {
    let mut files = Vec::new();
    json_files(
        &testdata().join("transparency-dev-merkle").join(kind),
        &mut files,
    );
    let loaded = files.len();
    let (mut accepted, mut refused) = (0, 0);
    for file in files {
        let case: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let want_error = case["wantErr"].as_bool().unwrap();
        let ok = check(&case);
        assert_eq!(ok, !want_error, "{}: {}", file.display(), case["desc"]);
        if ok {
            accepted += 1;
        } else {
            refused += 1;
        }
    }
    (loaded, accepted, refused)
}

#[test]
fn inclusion_vectors() {
    let counts = run_cases("inclusion", |case| {
        let (Some(leaf), Some(root), Some(proof)) = (
            strict_hash(&case["leafHash"]),
            hash(&case["root"]),
            hashes(&case["proof"]),
        ) else {
            return false;
        };
        let index = case["leafIdx"].as_u64().unwrap();
        let size = case["treeSize"].as_u64().unwrap();
        verify_inclusion(index, size, &leaf, &proof, &root).is_ok()
    });
    // 98 files under `inclusion/`: 6 with `wantErr: false`, 92 with `wantErr: true`.
    assert_eq!(counts, (98, 6, 92), "(files, accepted, refused)");
}

#[test]
fn consistency_vectors() {
    let counts = run_cases("consistency", |case| {
        let (Some(root1), Some(root2), Some(proof)) = (
            hash(&case["root1"]),
            hash(&case["root2"]),
            hashes(&case["proof"]),
        ) else {
            return false;
        };
        let size1 = case["size1"].as_u64().unwrap();
        let size2 = case["size2"].as_u64().unwrap();
        verify_consistency(size1, size2, &proof, &root1, &root2).is_ok()
    });
    // 98 files under `consistency/`: 6 with `wantErr: false`, 92 with `wantErr: true`.
    assert_eq!(counts, (98, 6, 92), "(files, accepted, refused)");
}
