//! Indexing throughput on its own: writes a log of `--events` events of about 1 KiB each to a
//! local-filesystem store (not timed), then times the indexer turning it into splits from the
//! log alone (`rebuild`: read the entries, build the documents, build, pack, upload and publish
//! each split). One partition, one core's worth of work at a time, as one partition's indexer.
//!
//! `cargo run --release -p callproof-indexer --example throughput -- --events 200000`
//!
//! Measured on 2026-12-02 on the 2-core development machine, 200,000 entries of 1,248 bytes on
//! average (140-word bodies), two runs: 29,197 and 32,484 entries/s (6.9 s and 6.2 s), two
//! splits of 100,000. Rerun later that day (`bench/evidence.sh --only indexer`, then its
//! binary twice): 41,107, 36,176 and 39,818 entries/s (4.9–5.5 s). The processor's goal is
//! 20,000 events/s: one indexer keeps up with it on its own core, off the anchoring path.

use std::sync::Arc;
use std::time::{Duration, Instant};

use callproof_evidence_format::store::log_prefix;
use callproof_indexer::{Settings, rebuild};
use callproof_tlog::note::NoteSigner;
use callproof_tlog::store::LogWriter;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

const WORDS: [&str; 16] = [
    "refund", "order", "shipment", "delayed", "customer", "asked", "about", "invoice", "status",
    "update", "account", "balance", "address", "card", "payment", "ticket",
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut events: u64 = 100_000;
    while let Some(arg) = args.next() {
        if arg == "--events" {
            events = args.next().and_then(|n| n.parse().ok()).unwrap_or(events);
        }
    }
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("store"))?;
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path().join("store"))?);
    let (signer, _) = NoteSigner::generate("throughput.bench/log")?;
    let signer: NoteSigner = signer.parse()?;
    let verifier = signer.verifier();
    let mut writer = LogWriter::open(
        store.clone(),
        log_prefix(0),
        signer,
        "throughput.bench/log/0".into(),
    )
    .await?;
    let mut rng = StdRng::seed_from_u64(1);
    let started = Instant::now();
    let mut bytes = 0usize;
    let mut next = 0;
    while next < events {
        let batch: Vec<Vec<u8>> = (next..(next + 1000).min(events))
            .map(|index| {
                let body: Vec<&str> = (0..140).map(|_| WORDS[rng.gen_range(0..16)]).collect();
                let entry = serde_json::to_vec(&serde_json::json!({"event": {
                    "event_id": format!("e-{index}"),
                    "call_id": format!("call-{}", index / 4),
                    "kind": "call_completed",
                    "time": 1_767_225_600_000_000i64 + index as i64,
                    "function": format!("fn_{}", index % 30),
                    "principal": {"subject": format!("user-{}", index % 500), "groups": ["support"]},
                    "request": {"body": body.join(" ")},
                    "response": {"status": 200},
                }}))
                .unwrap_or_default();
                bytes += entry.len();
                entry
            })
            .collect();
        next += batch.len() as u64;
        writer.append(&batch, &[]).await?;
    }
    eprintln!(
        "log of {events} entries ({} bytes each on average) written in {:.1?}",
        bytes as u64 / events.max(1),
        started.elapsed()
    );
    let settings = Settings {
        scratch_dir: dir.path().join("scratch"),
        split_interval: Duration::from_secs(1),
        split_max_entries: 100_000,
        writer_memory_mb: 128,
        merge_factor: 10,
        merge_max_entries: 5_000_000,
        gc_grace: Duration::from_secs(300),
    };
    let started = Instant::now();
    let indexed = rebuild(store, verifier, 0, settings).await?;
    let elapsed = started.elapsed();
    println!(
        "indexed {indexed} entries from the log into splits in {elapsed:.2?}: {:.0} entries/s",
        indexed as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
