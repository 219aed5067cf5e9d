//! Hostile input: every parser over many random and mutated inputs (none may panic), and
//! specific attacks that must be refused with a reason.

use callproof_tlog::Error;
use callproof_tlog::checkpoint::Checkpoint;
use callproof_tlog::hash::leaf_hash;
use callproof_tlog::note::SignedNote;
use callproof_tlog::proof::{
    TlogProof, inclusion_proof_nodes, verify_consistency, verify_inclusion,
};
use callproof_tlog::{fuzzing, tile};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::*;

/// Valid inputs of every format, for the mutations to start from.
fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for file in list_files(&tessera_log()) {
        if file != "LICENSE" {
            seeds.push(std::fs::read(tessera_log().join(file)).unwrap());
        }
    }
    let checkpoint = std::fs::read(tessera_log().join("checkpoint.3")).unwrap();
    let proof = TlogProof {
        extra: Some(b"extra".to_vec()),
        index: 1,
        hashes: vec![leaf_hash(b"one"), leaf_hash(b"three")],
        checkpoint: checkpoint.clone(),
    };
    seeds.push(proof.to_bytes());
    seeds.push(TESSERA_VERIFIER.as_bytes().to_vec());
    seeds.push(TESSERA_SIGNER.as_bytes().to_vec());
    seeds.push(b"tile/1/x001/x234/067.p/12".to_vec());
    seeds.push(b"tile/entries/000".to_vec());
    seeds.push(b"47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n".to_vec());
    let (manifest, tar) = evidence_bundle_of_the_golden_log();
    seeds.push(manifest);
    seeds.push(gzip(&tar));
    seeds.push(tar);
    seeds
}

/// A valid evidence bundle over the golden log (partition 0: every entry, as the golden
/// entries have no event time and so cannot be edges; the kept checkpoint of size 3 and the
/// consistency proof from it, and the report of the period, which counts nothing: the golden
/// entries are not events): its manifest and its uncompressed tar.
fn evidence_bundle_of_the_golden_log() -> (Vec<u8>, Vec<u8>) {
    use callproof_tlog::bundle::{self, Manifest, ManifestPartition};
    use callproof_tlog::proof::format_consistency_proof;
    use callproof_tlog::store::LogReader;
    use object_store::local::LocalFileSystem;

    let old_size = 3u64;
    let indexes: Vec<u64> = (0..15).collect();
    let store = std::sync::Arc::new(LocalFileSystem::new_with_prefix(tessera_log()).unwrap());
    let reader = LogReader::new(store, Default::default(), tessera_verifier());
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    runtime().block_on(async {
        let latest = reader.checkpoint().await.unwrap();
        let size = latest.checkpoint.size;
        for &index in &indexes {
            let proof = reader.tlog_proof(index, &latest).await.unwrap();
            let entry = reader.entry(index, size).await.unwrap();
            files.push((bundle::entry_path(0, index), entry));
            files.push((bundle::proof_path(0, index), proof.to_bytes()));
        }
        let consistency = reader
            .consistency_proof(old_size, size, size)
            .await
            .unwrap();
        files.push((
            bundle::consistency_path(0, old_size, size),
            format_consistency_proof(&consistency).into_bytes(),
        ));
        files.push((bundle::checkpoint_path(0), latest.note.clone()));
    });
    files.push((
        bundle::kept_checkpoint_path(0, old_size),
        std::fs::read(tessera_log().join("checkpoint.3")).unwrap(),
    ));
    files.push((bundle::VERIFIER_KEY_PATH.into(), TESSERA_VERIFIER.into()));
    let manifest = Manifest {
        format: bundle::BUNDLE_FORMAT.into(),
        from: "2026-01-01T00:00:00Z".into(),
        to: "2026-02-01T00:00:00Z".into(),
        generated_at: "2026-02-01T00:00:01Z".into(),
        partitions: vec![ManifestPartition {
            partition: 0,
            checkpoint_size: 15,
            entries_from: 0,
            entries_to: 15,
            entries: indexes.clone(),
            edges: vec![],
            checkpoints: vec![old_size],
            consistency: vec![(old_size, 15)],
        }],
    };
    let root = std::fs::read_to_string(tessera_log().join("checkpoint")).unwrap();
    let root = root.lines().nth(2).unwrap().to_string();
    let report = callproof_report::build(
        &callproof_report::Inputs {
            period: callproof_report::Period::parse(&manifest.from, &manifest.to).unwrap(),
            generated_at: manifest.generated_at.clone(),
            verifier_key: TESSERA_VERIFIER.into(),
            context: callproof_report::Context {
                logs: vec![callproof_report::LogState {
                    partition: 0,
                    entries_from: 0,
                    entries_to: 15,
                    log_size: 15,
                    root_hash: root,
                    verified: true,
                    ..Default::default()
                }],
                ..Default::default()
            },
        },
        &[],
    );
    files.push((
        bundle::REPORT_JSON_PATH.into(),
        bundle::report_json(&report).into_bytes(),
    ));
    files.push((
        bundle::REPORT_HTML_PATH.into(),
        callproof_report::render_html(&report).into_bytes(),
    ));
    files.push((
        bundle::README_PATH.into(),
        bundle::readme(&manifest, TESSERA_VERIFIER).into_bytes(),
    ));
    let manifest = serde_json::to_vec(&manifest).unwrap();
    files.push((bundle::MANIFEST_PATH.into(), manifest.clone()));
    let mut archive = tar::Builder::new(Vec::new());
    for (path, bytes) in &files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        archive
            .append_data(&mut header, path, bytes.as_slice())
            .unwrap();
    }
    let tar = archive.into_inner().unwrap();
    // The seed must be a bundle that verifies, or the mutations start from a refusal.
    let read = bundle::read_bundle(gzip(&tar).as_slice()).unwrap();
    let report = bundle::verify_bundle(&read, &tessera_verifier());
    assert!(report.is_valid(), "{:?}", report.problems);
    assert_eq!(
        (report.entries_verified, report.consistency_proofs_verified),
        (15, 1)
    );
    (manifest, tar)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut encoder, bytes).unwrap();
    encoder.finish().unwrap()
}

fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..rng.gen_range(1..4) {
        let len = data.len();
        match rng.gen_range(0..7) {
            0 if len > 0 => {
                let position = rng.gen_range(0..len);
                data[position] ^= 1 << rng.gen_range(0..8);
            }
            1 => {
                let position = rng.gen_range(0..=len);
                let byte = *[b'\n', b' ', b'+', b'=', 0, 0xff, b'0', b'/']
                    .get(rng.gen_range(0..8))
                    .unwrap();
                data.insert(position, byte);
            }
            2 if len > 0 => {
                let start = rng.gen_range(0..len);
                let end = rng.gen_range(start..=len);
                data.drain(start..end);
            }
            3 => data.truncate(rng.gen_range(0..=len)),
            4 if len > 0 => {
                // Duplicate a chunk (repeats lines, signatures, entries).
                let start = rng.gen_range(0..len);
                let end = rng.gen_range(start..=len);
                let chunk = data[start..end].to_vec();
                let at = rng.gen_range(0..=data.len());
                data.splice(at..at, chunk);
            }
            5 => data.extend((0..rng.gen_range(0..64)).map(|_| rng.r#gen::<u8>())),
            _ => {
                if let Some(digit) = data.iter().position(u8::is_ascii_digit) {
                    // Huge numbers where numbers are expected.
                    data.splice(digit..digit, b"99999999999999999999".iter().copied());
                }
            }
        }
    }
    data
}

#[test]
fn parsers_survive_random_and_mutated_input() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let seeds = seeds();
    for round in 0..20_000 {
        let input = if round % 10 == 0 {
            (0..rng.gen_range(0..300))
                .map(|_| rng.r#gen::<u8>())
                .collect()
        } else {
            mutate(&mut rng, &seeds[round % seeds.len()])
        };
        fuzzing::all(&input);
    }
    for seed in &seeds {
        fuzzing::all(seed);
    }
}

#[test]
fn huge_sizes_and_indexes_are_refused_not_panics() {
    let hash = [1u8; 32];
    assert!(verify_inclusion(u64::MAX, u64::MAX, &hash, &[], &hash).is_err());
    assert!(verify_inclusion(5, 5, &hash, &[], &hash).is_err());
    assert!(verify_inclusion(u64::MAX - 1, u64::MAX, &hash, &[hash; 64], &hash).is_err());
    assert!(verify_consistency(u64::MAX, 1, &[], &hash, &hash).is_err());
    assert!(verify_consistency(u64::MAX - 1, u64::MAX, &[hash; 70], &hash, &hash).is_err());
    assert!(matches!(
        inclusion_proof_nodes(7, 7),
        Err(Error::OutOfRange { .. })
    ));
    assert!(inclusion_proof_nodes(u64::MAX - 1, u64::MAX).unwrap().len() <= 64);
    assert_eq!(tile::tile_width(7, u64::MAX, u64::MAX), 0);
    let text = "o\n18446744073709551615\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n";
    assert_eq!(Checkpoint::parse(text).unwrap().size, u64::MAX);
}

#[test]
fn duplicate_signatures_unknown_and_wrong_keys_are_refused() {
    let note = std::fs::read(tessera_log().join("checkpoint.1")).unwrap();
    let text = String::from_utf8(note.clone()).unwrap();
    let line = text.lines().last().unwrap();
    let duplicated = format!("{text}{line}\n");
    let error = SignedNote::open(duplicated.as_bytes(), &tessera_verifier()).unwrap_err();
    assert!(
        error.to_string().contains("duplicate signatures"),
        "{error}"
    );

    // A signature from an unknown key is ignored; the known one still verifies.
    let (other, _) = callproof_tlog::note::NoteSigner::generate("witness.example").unwrap();
    let other: callproof_tlog::note::NoteSigner = other.parse().unwrap();
    let body = text.split("\n\n").next().unwrap().to_owned() + "\n";
    let cosigned = String::from_utf8(other.sign(&body).unwrap()).unwrap();
    let cosignature = cosigned.lines().last().unwrap();
    let with_cosignature = format!("{text}{cosignature}\n");
    SignedNote::open(with_cosignature.as_bytes(), &tessera_verifier()).unwrap();
    // Only the unknown key: refused.
    let error = SignedNote::open(cosigned.as_bytes(), &tessera_verifier()).unwrap_err();
    assert!(error.to_string().contains("no signature by key"), "{error}");
}

#[test]
fn truncated_tiles_and_garbage_proofs_are_refused() {
    let tile_bytes = std::fs::read(tessera_log().join("tile/0/000.p/15")).unwrap();
    assert!(tile::parse_hash_tile(&tile_bytes[..tile_bytes.len() - 1], 15).is_err());
    assert!(tile::parse_hash_tile(&tile_bytes, 16).is_err());
    for garbage in [
        &b""[..],
        b"c2sp.org/tlog-proof@v1\n",
        b"c2sp.org/tlog-proof@v1\nindex 01\n\nx",
        b"c2sp.org/tlog-proof@v1\nindex 1\nAAAA\n\nx",
    ] {
        assert!(TlogProof::parse(garbage).is_err(), "{garbage:?}");
    }
}

/// Regression: the length errors named the needed count where the proof's own belonged.
#[test]
fn proof_length_errors_give_the_proofs_count_then_the_needed_one() {
    let hash = [1u8; 32];
    let error = verify_inclusion(0, 2, &hash, &[hash; 3], &hash).unwrap_err();
    assert!(
        error.to_string().contains("has 3 hashes, but one needs 1"),
        "{error}"
    );
    let error = verify_consistency(3, 4, &[hash; 5], &hash, &hash).unwrap_err();
    assert!(
        error.to_string().contains("has 5 hashes, but one needs 3"),
        "{error}"
    );
}
