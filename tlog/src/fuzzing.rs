//! Entry points shared by the fuzz targets (`tlog/fuzz/`) and the randomized parser test:
//! each feeds arbitrary bytes to one parser and checks that accepted input round-trips.
//! None of them may panic, whatever the input; a panic is a bug.

use crate::bundle::{BundleFiles, MANIFEST_PATH, Manifest, read_bundle, verify_bundle};
use crate::checkpoint::Checkpoint;
use crate::hash::Hash;
use crate::note::{NoteSigner, NoteVerifier, SignedNote};
use crate::proof::{
    TlogProof, format_consistency_proof, parse_consistency_proof, verify_consistency,
    verify_inclusion,
};
use crate::tile::{parse_bundle, parse_hash_tile, parse_tile_path};

/// The key of the golden Tessera test log (a published test key).
const TEST_VERIFIER: &str =
    "example.com/log/testdata+33d7b496+AeHTu4Q3hEIMHNqc6fASMsq3rKNx280NI+oO5xCFkkSx";

pub fn checkpoint(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(checkpoint) = Checkpoint::parse(text) {
        assert_eq!(checkpoint.to_text(), text, "checkpoint does not round-trip");
    }
}

pub fn signed_note(data: &[u8]) {
    if let Ok(note) = SignedNote::parse(data) {
        assert!(note.text.ends_with('\n'));
        if let Ok(verifier) = TEST_VERIFIER.parse::<NoteVerifier>() {
            let _ = note.verify(&verifier);
        }
    }
}

pub fn keys(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(verifier) = text.parse::<NoteVerifier>() {
        assert_eq!(
            verifier.to_string().parse::<NoteVerifier>().ok(),
            Some(verifier)
        );
    }
    if let Ok(signer) = text.parse::<NoteSigner>() {
        let _ = signer.sign("text\n");
    }
}

pub fn tlog_proof(data: &[u8]) {
    if let Ok(proof) = TlogProof::parse(data) {
        assert_eq!(
            TlogProof::parse(&proof.to_bytes()).ok().as_ref(),
            Some(&proof)
        );
        if let Ok(verifier) = TEST_VERIFIER.parse::<NoteVerifier>() {
            let _ = proof.verify(b"one", &verifier);
        }
    }
}

pub fn tiles(data: &[u8]) {
    if let Ok(entries) = parse_bundle(data) {
        let mut bundle = Vec::new();
        for entry in &entries {
            assert!(crate::tile::append_to_bundle(&mut bundle, entry).is_ok());
        }
        assert_eq!(bundle, data, "bundle does not round-trip");
    }
    let width = data.first().map_or(1, |&byte| u16::from(byte) + 1);
    let _ = parse_hash_tile(data.get(1..).unwrap_or_default(), width);
}

pub fn tile_path(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(path) = parse_tile_path(text) {
        let formatted = match path {
            crate::tile::TilePath::Hashes(tile) => tile.path(),
            crate::tile::TilePath::Entries { index, width } => {
                crate::tile::entries_path(index, width)
            }
        };
        assert_eq!(formatted, text, "tile path does not round-trip");
    }
}

pub fn consistency_proof(data: &[u8]) {
    if let Ok(hashes) = parse_consistency_proof(data) {
        let formatted = format_consistency_proof(&hashes);
        assert_eq!(
            parse_consistency_proof(formatted.as_bytes()).ok(),
            Some(hashes)
        );
    }
}

/// Interprets the input as sizes, indexes and hashes and runs both proof verifiers.
pub fn proof_verification(data: &[u8]) {
    let number = |offset: usize| -> u64 {
        let mut bytes = [0u8; 8];
        for (position, byte) in bytes.iter_mut().enumerate() {
            *byte = data.get(offset + position).copied().unwrap_or(0);
        }
        // Favour small numbers and the edges, where the arithmetic is interesting.
        match bytes[0] % 4 {
            0 => u64::from_be_bytes(bytes),
            1 => u64::MAX - u64::from(bytes[1]),
            _ => u64::from(u16::from_be_bytes([bytes[1], bytes[2]])),
        }
    };
    let hashes: Vec<Hash> = data
        .get(24..)
        .unwrap_or_default()
        .chunks_exact(32)
        .filter_map(|chunk| Hash::try_from(chunk).ok())
        .collect();
    let (first, rest) = hashes
        .split_first()
        .map_or(([0; 32], &[][..]), |(first, rest)| (*first, rest));
    let (second, proof) = rest
        .split_first()
        .map_or(([0; 32], &[][..]), |(second, rest)| (*second, rest));
    let (a, b) = (number(0), number(8));
    let _ = verify_inclusion(a, b, &first, proof, &second);
    let _ = verify_consistency(a, b, proof, &first, &second);
    let _ = crate::proof::inclusion_proof_nodes(a, b.min(1 << 40));
    let _ = crate::proof::consistency_proof_nodes(a.min(b), b);
}

/// Evidence bundles (`callproof-verify bundle`): the archive reader on the input as a
/// `.tar.gz`, and on the input gzipped here as a plain tar (so that mutations reach the
/// tar parser rather than stopping at gzip's checksum), with the verifier on whatever
/// they read; then the manifest parser and the verifier on the input as `manifest.json`.
pub fn bundle(data: &[u8]) {
    let Ok(verifier) = TEST_VERIFIER.parse::<NoteVerifier>() else {
        return;
    };
    if let Ok(files) = read_bundle(data) {
        let _ = verify_bundle(&files, &verifier);
    }
    let mut gzipped = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    if std::io::Write::write_all(&mut gzipped, data).is_ok()
        && let Ok(gzipped) = gzipped.finish()
        && let Ok(files) = read_bundle(gzipped.as_slice())
    {
        assert!(
            files
                .keys()
                .all(|path| !path.starts_with('/') && !path.split('/').any(|part| part == "..")),
            "read_bundle let an unsafe path through"
        );
        let _ = verify_bundle(&files, &verifier);
    }
    if let Ok(manifest) = serde_json::from_slice::<Manifest>(data) {
        let json = serde_json::to_vec(&manifest).unwrap_or_default();
        assert_eq!(
            serde_json::from_slice::<Manifest>(&json).ok().as_ref(),
            Some(&manifest),
            "manifest does not round-trip"
        );
    }
    let files = BundleFiles::from([(MANIFEST_PATH.to_owned(), data.to_vec())]);
    let report = verify_bundle(&files, &verifier);
    // With no checkpoint in the bundle, no partition can verify.
    if report.is_valid() {
        assert_eq!(
            report.partitions, 0,
            "a partition verified without a checkpoint"
        );
    }
}

/// Every parser on the same input.
pub fn all(data: &[u8]) {
    checkpoint(data);
    signed_note(data);
    keys(data);
    tlog_proof(data);
    tiles(data);
    tile_path(data);
    consistency_proof(data);
    proof_verification(data);
    bundle(data);
}
