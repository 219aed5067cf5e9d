//! CPU cost per event of each preparing stage, in process (no broker): decode, mask, entry,
//! index document, SIEM record, and tantivy indexing, on the benchmark's events.
//!
//! `cargo run --release -p callproof-processor --example stages -- 20000`

#[path = "../tests/support/events.rs"]
#[allow(dead_code)]
mod events;

use std::time::{Duration, Instant};

use callproof_evidence_format::entry::{EntrySource, KafkaSource, event_entry_bytes};
use callproof_evidence_format::index_schema::IndexFields;
use callproof_processor::decoder::{Decoded, Decoder};
use callproof_processor::masker::Masker;
use callproof_processor::siem::{LogPosition, SiemRecord};
use rand::SeedableRng;

/// The processor binary's allocator, so that the figures are the binary's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(20_000);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let payloads: Vec<Vec<u8>> = (0..n)
        .map(|i| callproof_schemas::encode(&events::call_event(&mut rng, i as u64, 1024)))
        .collect::<Result<_, _>>()?;
    let config = callproof_config::Config::from_toml(
        "[kafka]\nbrokers = \"unused:9092\"\n[log]\nsigning_key = \"unused\"\n",
        "stages.toml",
        callproof_config::Service::Processor,
    )?;
    let masker = Masker::new(&config)?;
    let fields = IndexFields::new();
    let mut times = [Duration::ZERO; 6];
    let mut documents = Vec::with_capacity(n);
    for (i, payload) in payloads.iter().enumerate() {
        let t0 = Instant::now();
        let Decoded::Event(mut event) = Decoder.decode(payload) else {
            anyhow::bail!("undecodable");
        };
        let t1 = Instant::now();
        masker.mask(&mut event);
        let t2 = Instant::now();
        let source = KafkaSource {
            topic: "callproof.calls.v1".into(),
            partition: 0,
            offset: i as i64,
        };
        let entry = event_entry_bytes(
            &event,
            EntrySource {
                kafka: &source,
                gateway_seq: None,
            },
        );
        let t3 = Instant::now();
        let index_document = fields.event_document(&event, 0, i as u64);
        let t4 = Instant::now();
        let log = LogPosition {
            partition: 0,
            index: i as u64,
            origin: "o/0",
        };
        let siem = SiemRecord::of_event(&event, &source, log);
        let t5 = Instant::now();
        std::hint::black_box((&entry, &siem));
        documents.push(index_document);
        for (slot, (from, to)) in
            times
                .iter_mut()
                .zip([(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5)])
        {
            *slot += to - from;
        }
    }
    let dir = tempfile::tempdir()?;
    let index = tantivy::Index::create_in_dir(dir.path(), fields.schema.clone())?;
    let mut writer: tantivy::IndexWriter = index.writer_with_num_threads(1, 256 << 20)?;
    let t = Instant::now();
    for document in documents {
        writer.add_document(document)?;
    }
    writer.commit()?;
    times[5] = t.elapsed();
    for (name, time) in [
        "decode",
        "mask",
        "entry",
        "index document",
        "SIEM record",
        "tantivy add + commit (1 thread)",
    ]
    .iter()
    .zip(times)
    {
        println!(
            "{name:32} {:7.2} µs/event",
            time.as_secs_f64() * 1e6 / n as f64
        );
    }
    Ok(())
}
