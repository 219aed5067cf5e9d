//! Search latency over one million events: `cargo bench -p callproof-evidence --bench search`.
//!
//! Builds (once, then reuses) an index of `CALLPROOF_BENCH_EVENTS` events (default 1,000,000)
//! over 4 partitions with the indexer's own schema, document builder and split writer, one split
//! per partition published in a local-filesystem object store, then times the evidence API's
//! search path over them (downloaded into its cache first, as a running API would have them)
//! (`SearchIndex::search`, one page of 50, newest first) for filtered queries and for the
//! unfiltered match-all top 50. Baseline in the same run: the same documents in one local
//! tantivy index (the index before splits, on the searching host's disk), the same queries
//! (`SearchIndex::query`), top 50 newest first and their stored documents read. Prints p50,
//! p99 and max of each, and the ratios of the p99s.
//!
//! Measured on 2026-12-02 on the 2-core development machine (`bench/evidence.sh`): see
//! `evidence-api/README.md`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callproof_evidence::search::{Filter, SearchIndex, newest_first};
use callproof_evidence_format::index_schema::IndexFields;
use callproof_evidence_format::split::{SplitId, list_index};
use object_store::ObjectStore;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tantivy::collector::TopDocs;
use tantivy::schema::TantivyDocument;
use tantivy::{Index, IndexReader, IndexWriter};

const PARTITIONS: i32 = 4;
const QUERIES: usize = 1_000;
const KINDS: [&str; 8] = [
    "call_received",
    "call_forwarded",
    "call_completed",
    "call_denied",
    "approval_requested",
    "approval_decided",
    "approval_expired",
    "call_failed",
];
const DETECTORS: [&str; 5] = ["EMAIL", "PHONE", "CREDIT_CARD", "US_SSN", "IBAN"];
const WORDS: [&str; 16] = [
    "refund", "order", "shipment", "delayed", "customer", "asked", "about", "invoice", "status",
    "update", "account", "balance", "address", "card", "payment", "ticket",
];
/// One simulated month.
const SPAN_MICROS: i64 = 30 * 24 * 3_600 * 1_000_000;
const START_MICROS: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z

fn main() {
    let n_events: u64 = std::env::var("CALLPROOF_BENCH_EVENTS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1_000_000);
    // v2: documents seeded per partition, so the local baseline index can rebuild the same.
    let root =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("evidence-bench-v2-{n_events}"));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    std::fs::create_dir_all(root.join("store")).expect("store dir");
    let store: Arc<dyn ObjectStore> = Arc::new(
        object_store::local::LocalFileSystem::new_with_prefix(root.join("store")).expect("store"),
    );
    build_if_missing(&runtime, &store, &root, n_events);
    let local = open_local(&root, n_events);
    let index = SearchIndex::open(
        store,
        runtime.handle().clone(),
        &root.join("cache"),
        u64::MAX,
        Duration::from_secs(3600),
    )
    .expect("open");
    assert_eq!(
        index.count(&Filter::default()).expect("count") as u64,
        n_events
    );

    let mut rng = StdRng::seed_from_u64(7);
    let baseline: Vec<Filter> = (0..QUERIES).map(|_| Filter::default()).collect();
    let filtered: Vec<Filter> = (0..QUERIES).map(|_| random_filter(&mut rng)).collect();
    // Warm the OS cache and tantivy's once, as a running API would be.
    for filter in baseline.iter().chain(&filtered).take(50) {
        let _ = index.search(filter, 50, None).expect("search");
    }
    for filter in baseline.iter().chain(&filtered).take(50) {
        let _ = local_search(&index, &local, filter);
    }
    // Each query on the splits then at once on the local index: a burst of other work on the
    // machine falls on both alike.
    let (baseline_times, local_baseline_times, _, local_baseline_hits) =
        time_queries(&index, &local, &baseline);
    let (filtered_times, local_filtered_times, hits, local_hits) =
        time_queries(&index, &local, &filtered);
    assert_eq!(
        (local_hits, local_baseline_hits),
        (hits, QUERIES * 50),
        "the local index answers as many hits as the splits"
    );
    let report = |name: &str, times: &[Duration]| {
        println!(
            "{name:<44} p50 {:>8.2} ms   p99 {:>8.2} ms   max {:>8.2} ms",
            ms(percentile(times, 0.50)),
            ms(percentile(times, 0.99)),
            ms(percentile(times, 1.0))
        );
    };
    println!(
        "search over {n_events} events in {PARTITIONS} partition indexes, {QUERIES} queries each, page of 50"
    );
    report("splits: match-all, newest first", &baseline_times);
    report("splits: 2-4 filters (+ query text, range)", &filtered_times);
    report(
        "local index: match-all, newest first",
        &local_baseline_times,
    );
    report(
        "local index: 2-4 filters (+ query text, range)",
        &local_filtered_times,
    );
    let p99 = |times: &[Duration]| ms(percentile(times, 0.99)).max(1e-9);
    println!(
        "p99 splits / local index: match-all {:.2}, filtered {:.2}; filtered / match-all on splits {:.2}; filtered queries returned {hits} hits in all",
        p99(&baseline_times) / p99(&local_baseline_times),
        p99(&filtered_times) / p99(&local_filtered_times),
        p99(&filtered_times) / p99(&baseline_times)
    );
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn percentile(times: &[Duration], quantile: f64) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let position = ((sorted.len() as f64 - 1.0) * quantile).round() as usize;
    sorted.get(position).copied().unwrap_or_default()
}

/// Times of each query on the splits and on the local index, and the hits of each.
fn time_queries(
    index: &SearchIndex,
    local: &IndexReader,
    filters: &[Filter],
) -> (Vec<Duration>, Vec<Duration>, usize, usize) {
    let (mut split_times, mut local_times) = (Vec::new(), Vec::new());
    let (mut split_hits, mut local_hits) = (0, 0);
    for filter in filters {
        let started = Instant::now();
        let page = index.search(filter, 50, None).expect("search");
        split_times.push(started.elapsed());
        split_hits += page.hits.len();
        let started = Instant::now();
        local_hits += local_search(index, local, filter);
        local_times.push(started.elapsed());
    }
    (split_times, local_times, split_hits, local_hits)
}

/// What auditors ask: a principal's or function's calls of a kind over a day or a week,
/// denied calls of a group, masked findings of a detector with words from the bodies.
fn random_filter(rng: &mut StdRng) -> Filter {
    let day = rng.gen_range(0..30i64);
    let days = [1i64, 7][rng.gen_range(0..2)];
    let from = START_MICROS + day * SPAN_MICROS / 30;
    let range = (Some(from), Some(from + days * SPAN_MICROS / 30));
    match rng.gen_range(0..4) {
        0 => Filter {
            subject: Some(format!("user-{}", rng.gen_range(0..500))),
            kind: Some("call_received".into()),
            from_micros: range.0,
            to_micros: range.1,
            ..Filter::default()
        },
        1 => Filter {
            function: Some(format!("fn_{}", rng.gen_range(0..30))),
            kind: Some(KINDS[rng.gen_range(0..KINDS.len())].into()),
            from_micros: range.0,
            to_micros: range.1,
            ..Filter::default()
        },
        2 => Filter {
            group: Some(format!("team-{}", rng.gen_range(0..10))),
            decision: Some("deny".into()),
            ..Filter::default()
        },
        _ => Filter {
            detector: Some(DETECTORS[rng.gen_range(0..DETECTORS.len())].into()),
            query: Some(WORDS[rng.gen_range(0..WORDS.len())].into()),
            agent: Some(format!("agent-{}", rng.gen_range(0..20))),
            ..Filter::default()
        },
    }
}

fn build_if_missing(
    runtime: &tokio::runtime::Runtime,
    store: &Arc<dyn ObjectStore>,
    root: &Path,
    n_events: u64,
) {
    let per_partition = n_events / PARTITIONS as u64;
    let listed = runtime.block_on(list_index(store)).expect("list");
    let complete = (0..PARTITIONS).all(|partition| {
        listed
            .get(&partition)
            .is_some_and(|listing| listing.cover().1 == per_partition)
    });
    if complete {
        return;
    }
    let _ = std::fs::remove_dir_all(root.join("store/index"));
    let started = Instant::now();
    let fields = IndexFields::new();
    for partition in 0..PARTITIONS {
        let documents = documents(&fields, partition, per_partition);
        let split = SplitId {
            partition,
            start: 0,
            end: per_partition,
            level: 0,
            id: "bench".into(),
        };
        let bytes = callproof_indexer::build_split(&root.join("scratch"), &split, documents, 256)
            .expect("split");
        runtime
            .block_on(callproof_indexer::upload_and_publish(store, &split, bytes))
            .expect("publish");
        eprintln!(
            "partition {partition}: {per_partition} events indexed ({:.0?})",
            started.elapsed()
        );
    }
}

/// The documents of one partition, the same on every call (seeded by the partition).
fn documents(
    fields: &IndexFields,
    partition: i32,
    per_partition: u64,
) -> impl Iterator<Item = TantivyDocument> + '_ {
    let mut rng = StdRng::seed_from_u64(42 + partition as u64);
    (0..per_partition).map(move |log_index| {
        let kind = KINDS[rng.gen_range(0..KINDS.len())];
        let time = START_MICROS + rng.gen_range(0..SPAN_MICROS);
        let body: Vec<&str> = (0..30)
            .map(|_| WORDS[rng.gen_range(0..WORDS.len())])
            .collect();
        let findings: Vec<_> = DETECTORS
            .iter()
            .filter(|_| rng.gen_bool(0.1))
            .map(|detector| json!({"detector": detector, "path": "/response/body/x", "count": 1}))
            .collect();
        let denied = kind == "call_denied";
        let entry = json!({"event": {
            "event_id": format!("e-{partition}-{log_index}"),
            "call_id": format!("call-{partition}-{}", log_index / 3),
            "kind": kind,
            "time": time,
            "function": format!("fn_{}", rng.gen_range(0..30)),
            "principal": {
                "subject": format!("user-{}", rng.gen_range(0..500)),
                "groups": [format!("team-{}", rng.gen_range(0..10))],
                "actor": {"subject": format!("agent-{}", rng.gen_range(0..20))},
            },
            "decision": {"allowed": !denied, "reason": "policy"},
            "request": {"body": body.join(" ")},
            "response": {"status": if denied { 403 } else { 200 }},
            "masking": findings,
        }});
        fields.document(&entry, partition, log_index)
    })
}

/// The baseline: every partition's documents in one tantivy index on local disk (built once,
/// then reused), merged into one segment as the splits are.
fn open_local(root: &Path, n_events: u64) -> IndexReader {
    let dir = root.join("local");
    let done = dir.join("complete");
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("local index dir");
        let started = Instant::now();
        let fields = IndexFields::new();
        let index = Index::create_in_dir(&dir, fields.schema.clone()).expect("local index");
        let mut writer: IndexWriter<TantivyDocument> = index
            .writer_with_num_threads(1, 256 * 1024 * 1024)
            .expect("writer");
        for partition in 0..PARTITIONS {
            for document in documents(&fields, partition, n_events / PARTITIONS as u64) {
                writer.add_document(document).expect("add");
            }
        }
        writer.commit().expect("commit");
        let segments = index.searchable_segment_ids().expect("segments");
        if segments.len() > 1 {
            writer.merge(&segments).wait().expect("merge");
        }
        writer.wait_merging_threads().expect("merge threads");
        std::fs::write(&done, b"").expect("marker");
        eprintln!(
            "local index: {n_events} events indexed ({:.0?})",
            started.elapsed()
        );
    }
    Index::open_in_dir(&dir)
        .expect("open local index")
        .reader()
        .expect("reader")
}

/// One page of 50 from the local index: the query the evidence API builds, newest first, and
/// the stored documents of the page.
fn local_search(index: &SearchIndex, local: &IndexReader, filter: &Filter) -> usize {
    let query = index.query(filter).expect("query");
    let searcher = local.searcher();
    let top = searcher
        .search(&query, &TopDocs::with_limit(50).order_by(newest_first))
        .expect("search");
    for (_, address) in &top {
        let _: TantivyDocument = searcher.doc(*address).expect("doc");
    }
    top.len()
}
