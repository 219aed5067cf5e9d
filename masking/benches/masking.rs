//! Throughput of `mask_json` on 1 KiB and 64 KiB tool-call payloads, with and without PII,
//! against baselines measured in the same run:
//! - `serde_parse_serialize`: what any JSON pipeline pays anyway;
//! - `naive_regexes`: a masker that runs one regex after another over the serialized text.
//!
//! `cargo bench -p callproof-masking`; the figures in README.md come from here.

use std::hint::black_box;

use callproof_masking::{FieldRules, Masker, MaskingConfig};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use regex::Regex;
use serde_json::{Value, json};

/// One tool call's worth of arguments; `pii` decides whether it carries personal data.
fn record(i: usize, pii: bool) -> Value {
    let (customer, note) = if pii {
        (
            json!({"email": format!("user{i}@example.com"), "phone": "+1 212 555 0123", "card": "4111 1111 1111 1111"}),
            format!(
                "customer called from 10.0.{}.{} about ssn 123-45-6789",
                i % 250,
                i % 200
            ),
        )
    } else {
        (
            json!({"tier": "gold", "region": "eu-west-1", "since": "2019-04-01"}),
            format!("customer asked about the delivery window for parcel {i}, prefers mornings"),
        )
    };
    json!({
        "call_id": format!("0c1f6223-b380-4c52-9d68-{i:012}"),
        "function": "update_order",
        "args": {
            "order_id": format!("ORD-20240115-{i:06}"),
            "created_at": "2024-01-15T10:30:00.123Z",
            "amount": 1234.56,
            "items": [{"sku": "AB-77", "qty": 2}, {"sku": "ZX-9", "qty": 1}],
            "customer": customer,
            "note": note,
        },
    })
}

/// A JSON array of records, serialized to at least `target_bytes`.
fn payload(target_bytes: usize, pii: bool) -> (Value, Vec<u8>) {
    let mut records = Vec::new();
    loop {
        records.push(record(records.len(), pii));
        let doc = Value::Array(records.clone());
        let bytes = serde_json::to_vec(&doc).unwrap();
        if bytes.len() >= target_bytes {
            return (doc, bytes);
        }
    }
}

fn naive_patterns() -> Vec<Regex> {
    [
        r"\b[0-9](?:[ -]?[0-9]){12,18}\b",
        r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b",
        r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}",
        r"[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}",
        r"\+[1-9][0-9 .()-]{6,22}[0-9]",
        r"\b(?:[0-9]{1,3}\.){3}[0-9]{1,3}\b",
        r"\bAKIA[A-Z2-7]{16}\b",
        r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*",
        r"(?i:bearer)\s+[A-Za-z0-9._~+/-]{16,}",
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
    ]
    .iter()
    .map(|p| Regex::new(p).unwrap())
    .collect()
}

fn bench(c: &mut Criterion) {
    let masker = Masker::new(&MaskingConfig::default()).unwrap();
    let rules = FieldRules::empty();
    let naive = naive_patterns();
    for (size_name, size) in [("1KiB", 1024), ("64KiB", 64 * 1024)] {
        for pii in [false, true] {
            let (doc, bytes) = payload(size, pii);
            let mut group =
                c.benchmark_group(format!("{size_name}/{}", if pii { "pii" } else { "clean" }));
            group.throughput(Throughput::Bytes(bytes.len() as u64));
            group.bench_function("mask_json", |b| {
                b.iter_batched_ref(
                    || doc.clone(),
                    |doc| black_box(masker.mask_json(doc, &rules, true).unwrap()),
                    BatchSize::SmallInput,
                )
            });
            group.bench_function("parse_mask_serialize", |b| {
                b.iter(|| {
                    let mut doc: Value = serde_json::from_slice(black_box(&bytes)).unwrap();
                    masker.mask_json(&mut doc, &rules, true).unwrap();
                    black_box(serde_json::to_vec(&doc).unwrap())
                })
            });
            group.bench_function("baseline_serde_parse_serialize", |b| {
                b.iter(|| {
                    let doc: Value = serde_json::from_slice(black_box(&bytes)).unwrap();
                    black_box(serde_json::to_vec(&doc).unwrap())
                })
            });
            let text = std::str::from_utf8(&bytes).unwrap();
            group.bench_function("baseline_naive_regexes", |b| {
                b.iter(|| {
                    let mut masked = std::borrow::Cow::Borrowed(black_box(text));
                    for regex in &naive {
                        if let std::borrow::Cow::Owned(replaced) =
                            regex.replace_all(&masked, "[REDACTED]")
                        {
                            masked = std::borrow::Cow::Owned(replaced);
                        }
                    }
                    black_box(masked.len())
                })
            });
            group.finish();
        }
    }
}

criterion_group! {
    name = benches;
    // Short runs: the build machine is shared; the ratios are what README.md quotes.
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_secs(1)).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
