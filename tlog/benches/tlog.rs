//! Append and proof throughput: `cargo bench -p callproof-tlog --bench tlog`.
//!
//! 1. Appends of 1 KiB entries through `LogWriter`, in batches of 1 and 256, on the
//!    in-memory object store and on the local filesystem (a temporary directory). Baseline
//!    in the same run: hashing the same entries alone (`leaf_hash`, and `tree_hash` of each
//!    batch), the least work an append can do.
//! 2. Inclusion and consistency proofs through `LogReader` at `CALLPROOF_BENCH_ENTRIES`
//!    entries (default 10,000,000), in the in-memory store, for random indexes and old
//!    sizes. Baseline: verifying the same proofs (`verify_inclusion`, `verify_consistency`),
//!    which needs no tiles.
//!
//! The large log holds 8-byte entries: proofs read hash tiles only (never bundles), and a
//! hash tile is the same whatever the size of its entries, so the entry size does not change
//! what part 2 measures; 10 million 1 KiB entries would be 10 GiB of bundles to hold. It is
//! built in batches of at most 65,536 entries (timed too), which also end at the random old
//! sizes of the consistency proofs, so that those have kept checkpoints to verify against.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callproof_tlog::hash::{Hash, leaf_hash, tree_hash};
use callproof_tlog::note::NoteSigner;
use callproof_tlog::proof::{verify_consistency, verify_inclusion};
use callproof_tlog::store::{LogReader, LogWriter};
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ORIGIN: &str = "bench.example/log";
const ENTRY_SIZE: usize = 1024;
/// How long each append measurement runs, at least.
const APPEND_TIME: Duration = Duration::from_secs(3);
const PROOFS: usize = 20_000;
const CONSISTENCY_PROOFS: usize = 2_000;
const BUILD_BATCH: u64 = 65_536;

fn main() {
    let n_entries: u64 = std::env::var("CALLPROOF_BENCH_ENTRIES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(10_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (signer_key, verifier_key) = NoteSigner::generate(ORIGIN).expect("key");
    let signer: NoteSigner = signer_key.parse().expect("signer");

    println!("appends of {ENTRY_SIZE}-byte entries through LogWriter");
    for batch in [1usize, 256] {
        let hashing = hashing_rate(batch);
        println!(
            "  baseline: hashing alone, batch {batch:>3}      {:>12.0} entries/s",
            hashing
        );
        let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let rate = runtime.block_on(append_rate(memory, &signer, batch));
        report_append("in-memory store", batch, rate, hashing);
        let dir = tempfile::tempdir().expect("temp dir");
        let local: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("local store"));
        let rate = runtime.block_on(append_rate(local, &signer, batch));
        report_append("local filesystem", batch, rate, hashing);
    }

    println!("proofs through LogReader at {n_entries} entries (in-memory store)");
    let mut rng = StdRng::seed_from_u64(10);
    let old_sizes: BTreeSet<u64> = (0..CONSISTENCY_PROOFS)
        .map(|_| rng.gen_range(1..n_entries))
        .collect();
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let started = Instant::now();
    runtime.block_on(build_log(store.clone(), &signer, n_entries, &old_sizes));
    let build = started.elapsed();
    println!(
        "  built in {:.1} s ({:.0} entries/s, 8-byte entries, batches of {BUILD_BATCH})",
        build.as_secs_f64(),
        n_entries as f64 / build.as_secs_f64()
    );
    let reader = LogReader::new(
        store,
        Path::default(),
        verifier_key.parse().expect("verifier"),
    );
    runtime.block_on(proof_rates(&reader, n_entries, &mut rng, &old_sizes));
}

fn entry(index: u64) -> Vec<u8> {
    let mut entry = vec![b'x'; ENTRY_SIZE];
    entry[..8].copy_from_slice(&index.to_be_bytes());
    entry
}

/// Entries hashed per second when an append is nothing but its hashing: the leaf hashes,
/// and the tree hash of each batch (about what the writer hashes above the leaves).
fn hashing_rate(batch: usize) -> f64 {
    let entries: Vec<Vec<u8>> = (0..batch as u64).map(entry).collect();
    let started = Instant::now();
    let mut hashed = 0u64;
    let mut sink = [0u8; 32];
    while started.elapsed() < APPEND_TIME {
        let hashes: Vec<Hash> = entries.iter().map(|entry| leaf_hash(entry)).collect();
        sink[0] ^= tree_hash(&hashes)[0];
        hashed += batch as u64;
    }
    std::hint::black_box(sink);
    hashed as f64 / started.elapsed().as_secs_f64()
}

/// Entries appended per second in batches of `batch`, on a fresh log.
async fn append_rate(store: Arc<dyn ObjectStore>, signer: &NoteSigner, batch: usize) -> f64 {
    let mut writer = LogWriter::open(store, Path::default(), signer.clone(), ORIGIN.into())
        .await
        .expect("open");
    let mut next = 0u64;
    let started = Instant::now();
    while started.elapsed() < APPEND_TIME {
        let entries: Vec<Vec<u8>> = (next..next + batch as u64).map(entry).collect();
        writer.append(&entries, &[]).await.expect("append");
        next += batch as u64;
    }
    next as f64 / started.elapsed().as_secs_f64()
}

fn report_append(store: &str, batch: usize, rate: f64, hashing: f64) {
    println!(
        "  {store:<17} batch {batch:>3}      {rate:>12.0} entries/s {:>10.0} appends/s   hashing alone is {:.1}x faster",
        rate / batch as f64,
        hashing / rate
    );
}

/// Appends `n_entries` 8-byte entries, in batches that also end at each of `breaks`.
async fn build_log(
    store: Arc<dyn ObjectStore>,
    signer: &NoteSigner,
    n_entries: u64,
    breaks: &BTreeSet<u64>,
) {
    let mut writer = LogWriter::open(store, Path::default(), signer.clone(), ORIGIN.into())
        .await
        .expect("open");
    let mut next = 0u64;
    while next < n_entries {
        let next_break = breaks.range(next + 1..).next().copied().unwrap_or(u64::MAX);
        let end = (next + BUILD_BATCH).min(n_entries).min(next_break);
        let entries: Vec<Vec<u8>> = (next..end)
            .map(|index| index.to_be_bytes().to_vec())
            .collect();
        writer.append(&entries, &[]).await.expect("append");
        next = end;
    }
}

async fn proof_rates(reader: &LogReader, size: u64, rng: &mut StdRng, old_sizes: &BTreeSet<u64>) {
    let checkpoint = reader.checkpoint().await.expect("checkpoint");
    assert_eq!(checkpoint.checkpoint.size, size);
    let root = checkpoint.checkpoint.root_hash;

    // Inclusion: entry `index` in the latest tree, read from its tiles.
    let indexes: Vec<u64> = (0..PROOFS).map(|_| rng.gen_range(0..size)).collect();
    let started = Instant::now();
    let mut proofs = Vec::with_capacity(PROOFS);
    for &index in &indexes {
        proofs.push(
            reader
                .inclusion_proof(index, size, size)
                .await
                .expect("inclusion proof"),
        );
    }
    let proving = PROOFS as f64 / started.elapsed().as_secs_f64();
    let leaves: Vec<Hash> = indexes
        .iter()
        .map(|index| leaf_hash(&index.to_be_bytes()))
        .collect();
    let started = Instant::now();
    for ((index, leaf), proof) in indexes.iter().zip(&leaves).zip(&proofs) {
        verify_inclusion(*index, size, leaf, proof, &root).expect("inclusion proof verifies");
    }
    let verifying = PROOFS as f64 / started.elapsed().as_secs_f64();
    report_proofs("inclusion", proving, verifying);

    // Consistency: from each random old size (a kept checkpoint) to the latest.
    let mut old_roots = Vec::with_capacity(old_sizes.len());
    for &old_size in old_sizes {
        let kept = reader
            .kept_checkpoint(old_size)
            .await
            .expect("kept checkpoint");
        old_roots.push(kept.checkpoint.root_hash);
    }
    let started = Instant::now();
    let mut proofs = Vec::with_capacity(old_sizes.len());
    for &old_size in old_sizes {
        proofs.push(
            reader
                .consistency_proof(old_size, size, size)
                .await
                .expect("consistency proof"),
        );
    }
    let proving = old_sizes.len() as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for ((old_size, old_root), proof) in old_sizes.iter().zip(&old_roots).zip(&proofs) {
        verify_consistency(*old_size, size, proof, old_root, &root)
            .expect("consistency proof verifies");
    }
    let verifying = old_sizes.len() as f64 / started.elapsed().as_secs_f64();
    report_proofs("consistency", proving, verifying);
}

fn report_proofs(kind: &str, proving: f64, verifying: f64) {
    println!(
        "  {kind:<12} proofs {proving:>10.0} /s   baseline: verifying them {verifying:>10.0} /s, {:.1}x faster",
        verifying / proving
    );
}
