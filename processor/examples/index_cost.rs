//! What tantivy indexing costs per event, and how much of it the masked bodies take: the
//! processor's documents for the benchmark's events indexed by one writer thread, as they are
//! (`full`), with the body field indexed without positions (`body-freqs`: phrase queries on
//! bodies would stop working), and without the body values (`no-body`). Reports the process's
//! CPU time per event (the writer's thread does the work), each variant `--runs` times,
//! interleaved.
//!
//! `cargo run --release -p callproof-processor --example index_cost -- --events 20000`

#[path = "support/cpu.rs"]
mod cpu;
#[path = "../tests/support/events.rs"]
#[allow(dead_code)]
mod events;

use std::time::Instant;

use anyhow::Context as _;
use callproof_evidence_format::index_schema::IndexFields;
use callproof_processor::decoder::{Decoded, Decoder};
use callproof_processor::masker::Masker;
use clap::Parser;
use rand::SeedableRng;
use tantivy::schema::{
    FieldEntry, FieldType, IndexRecordOption, Schema, TantivyDocument, TextFieldIndexing,
};

/// The processor binary's allocator, so that the figures are the binary's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The variants to measure (all by default), e.g. `--variant no-body` to profile one.
    #[arg(long = "variant", value_enum)]
    variants: Vec<Variant>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Variant {
    Full,
    BodyFreqs,
    NoBody,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let config = callproof_config::Config::from_toml(
        "[kafka]\nbrokers = \"unused:9092\"\n[log]\nsigning_key = \"unused\"\n",
        "cost.toml",
        callproof_config::Service::Processor,
    )?;
    let masker = Masker::new(&config)?;
    let fields = IndexFields::new();
    let mut masked = Vec::with_capacity(args.events);
    for sequence in 0..args.events {
        let payload =
            callproof_schemas::encode(&events::call_event(&mut rng, sequence as u64, 1024))?;
        let Decoded::Event(mut event) = Decoder.decode(&payload) else {
            anyhow::bail!("a benchmark event did not decode");
        };
        masker.mask(&mut event);
        masked.push(event);
    }
    let variants = if args.variants.is_empty() {
        vec![Variant::Full, Variant::BodyFreqs, Variant::NoBody]
    } else {
        args.variants.clone()
    };
    let mut results: Vec<(Variant, Vec<f64>)> = variants
        .into_iter()
        .map(|variant| (variant, Vec::new()))
        .collect();
    for _ in 0..args.runs {
        for (variant, micros) in &mut results {
            let documents: Vec<TantivyDocument> = masked
                .iter()
                .enumerate()
                .map(|(index, event)| {
                    let document = fields.event_document(event, 0, index as u64);
                    match variant {
                        Variant::NoBody => without_body(document, &fields),
                        Variant::Full | Variant::BodyFreqs => document,
                    }
                })
                .collect();
            let schema = match variant {
                Variant::BodyFreqs => body_without_positions(&fields),
                Variant::Full | Variant::NoBody => fields.schema.clone(),
            };
            let dir = tempfile::tempdir()?;
            let index = tantivy::Index::create_in_dir(dir.path(), schema)?;
            let mut writer: tantivy::IndexWriter = index.writer_with_num_threads(1, 128 << 20)?;
            let cpu_before = own_cpu_seconds()?;
            let started = Instant::now();
            for document in documents {
                writer.add_document(document)?;
            }
            writer.commit()?;
            writer.wait_merging_threads()?;
            let per_event = (own_cpu_seconds()? - cpu_before) * 1e6 / args.events as f64;
            micros.push(per_event);
            eprintln!(
                "{variant:?}: {per_event:.1} µs CPU per event ({:.2} s wall)",
                started.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "| variant | CPU µs per event ({} runs of {} events) |",
        args.runs, args.events
    );
    println!("|---|---|");
    for (variant, micros) in &results {
        let low = micros.iter().copied().fold(f64::INFINITY, f64::min);
        let high = micros.iter().copied().fold(0.0, f64::max);
        println!("| {variant:?} | {low:.1}–{high:.1} |");
    }
    Ok(())
}

fn without_body(document: TantivyDocument, fields: &IndexFields) -> TantivyDocument {
    let mut kept = TantivyDocument::default();
    for (field, value) in document.field_values() {
        if field != fields.body {
            kept.add_field_value(field, value);
        }
    }
    kept
}

/// The processor's schema with the body field indexed with frequencies but no positions; the
/// fields keep their ids, so the processor's documents fit it.
fn body_without_positions(fields: &IndexFields) -> Schema {
    let mut builder = Schema::builder();
    for (field, entry) in fields.schema.fields() {
        let entry = match entry.field_type() {
            FieldType::Str(options) if field == fields.body => FieldEntry::new_text(
                entry.name().to_string(),
                options.clone().set_indexing_options(
                    TextFieldIndexing::default()
                        .set_tokenizer("default")
                        .set_index_option(IndexRecordOption::WithFreqs),
                ),
            ),
            _ => entry.clone(),
        };
        builder.add_field(entry);
    }
    builder.build()
}

fn own_cpu_seconds() -> anyhow::Result<f64> {
    cpu::cpu_seconds(std::process::id()).context("cannot read this process's CPU time")
}
