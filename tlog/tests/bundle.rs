//! Evidence bundles: a bundle built as the evidence API builds one (every entry between two
//! kept checkpoints, proofs, consistency, blobs, the report recomputed from the entries)
//! verifies; removing or changing any kind of file in it is named.

use std::collections::BTreeMap;

use callproof_report::{Context, Inputs, LogState, Period, ReportEvent};
use callproof_tlog::bundle::{self, BundleFiles, Manifest, verify_bundle};
use callproof_tlog::hash::to_base64;
use callproof_tlog::proof::format_consistency_proof;
use callproof_tlog::store::LogReader;
use object_store::path::Path;
use serde_json::{Value, json};

use crate::support::*;

/// 2026-01-01T00:00:00Z, in µs.
const FROM: i64 = 1_767_225_600_000_000;
const TO: i64 = FROM + 3_600_000_000;

fn entry(call_id: &str, seq: i64, kind: &str, time: i64) -> Value {
    json!({
        "event": {
            "event_id": format!("{call_id}-{seq}"),
            "call_id": call_id,
            "seq": seq,
            "kind": kind,
            "time": time,
            "function": "get_customer",
            "principal": {"subject": "ana", "actor": {"subject": "agent-7"}},
            "masking": [],
        },
        "source": {"kafka": {"partition": 0, "topic": "calls", "offset": 0}},
    })
}

/// The value of a large request body, moved to a blob.
const BLOB: &[u8] = br#""a request body too large for the log""#;

/// Four batches: before the period, in it (with a blob), in and after it, after it. The
/// period's events are in the second and third, so the bundle holds entries 2..9.
fn batches() -> Vec<Vec<Value>> {
    let mut with_blob = entry("ok", 0, "call_received", FROM + 1_000);
    with_blob["event"]["masking"] =
        json!([{"detector": "EMAIL", "path": "/request/body", "count": 1}]);
    with_blob["blobs"] = json!({"/event/request/body": bundle::sha256_hex(BLOB)});
    with_blob["event"]["request"] = json!({"body": null});
    let mut denied = entry("held", 2, "approval_decided", FROM + 7_000);
    denied["event"]["approval"] = json!({"reviewer": "rita", "decision": "deny"});
    denied["event"]["decision"] = json!({"allowed": false});
    vec![
        vec![
            entry("early", 0, "call_received", FROM - 20_000_000),
            entry("early", 1, "call_forwarded", FROM - 19_000_000),
        ],
        vec![
            with_blob,
            entry("ok", 1, "call_forwarded", FROM + 2_000),
            entry("ok", 2, "call_completed", FROM + 3_000),
            entry("refused", 0, "call_denied", FROM + 4_000),
        ],
        vec![
            entry("held", 0, "call_received", FROM + 5_000),
            entry("held", 1, "approval_requested", FROM + 6_000),
            denied,
            entry("late", 0, "call_received", TO + 1_000),
        ],
        vec![entry("later", 0, "call_received", TO + 2_000)],
    ]
}

/// How [`bundle_of`] builds a bundle: the range of entries, and what `report.json` states.
pub struct Options {
    pub entries_from: u64,
    pub entries_to: u64,
    pub verifier_key: String,
    pub link_base: String,
    /// The log's batches, one append each.
    pub batches: Vec<Vec<Value>>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            entries_from: 2,
            entries_to: 10,
            verifier_key: TESSERA_VERIFIER.into(),
            link_base: "https://evidence.example".into(),
            batches: batches(),
        }
    }
}

/// A bundle of the period over a log written from [`batches`], laid out as the evidence API's
/// export lays it out.
pub fn valid_bundle() -> BundleFiles {
    bundle_of(&Options::default())
}

/// A bundle of the period over a log written from [`batches`] with the entries
/// `entries_from..entries_to` and the edge entries just outside them, and a report computed
/// from those entries, as the export would write it for that range.
pub fn bundle_of(options: &Options) -> BundleFiles {
    let (entries_from, entries_to) = (options.entries_from, options.entries_to);
    runtime().block_on(async {
        let store = memory_store();
        let mut writer = tessera_writer(&store).await;
        for batch in &options.batches {
            let entries: Vec<Vec<u8>> = batch
                .iter()
                .map(|entry| serde_json::to_vec(entry).unwrap())
                .collect();
            writer.append(&entries, &[]).await.unwrap();
        }
        let reader = LogReader::new(store, Path::default(), tessera_verifier());
        let latest = reader.checkpoint().await.unwrap();
        let size = latest.checkpoint.size;
        let mut files = BundleFiles::new();
        let mut events = Vec::new();
        let edges: Vec<u64> = [
            entries_from.checked_sub(1),
            (entries_to < size).then_some(entries_to),
        ]
        .into_iter()
        .flatten()
        .collect();
        for index in (entries_from..entries_to).chain(edges.iter().copied()) {
            let bytes = reader.entry(index, size).await.unwrap();
            let proof = reader.tlog_proof(index, &latest).await.unwrap();
            if (entries_from..entries_to).contains(&index) {
                let value: Value = serde_json::from_slice(&bytes).unwrap();
                events.extend(ReportEvent::from_entry(0, index, &value));
            }
            files.insert(bundle::entry_path(0, index), bytes);
            files.insert(bundle::proof_path(0, index), proof.to_bytes());
        }
        if (entries_from..entries_to).contains(&2) {
            files.insert(bundle::blob_path(&bundle::sha256_hex(BLOB)), BLOB.to_vec());
        }
        files.insert(bundle::checkpoint_path(0), latest.note.clone());
        let kept: Vec<u64> = [entries_from, entries_to]
            .into_iter()
            .filter(|kept| *kept != 0 && *kept != size)
            .collect();
        for &kept in &kept {
            let checkpoint = reader.kept_checkpoint(kept).await.unwrap();
            files.insert(bundle::kept_checkpoint_path(0, kept), checkpoint.note);
        }
        let chain = bundle::consistency_chain(entries_from, entries_to, size);
        for &(old, new) in &chain {
            let hashes = reader.consistency_proof(old, new, size).await.unwrap();
            files.insert(
                bundle::consistency_path(0, old, new),
                format_consistency_proof(&hashes).into_bytes(),
            );
        }
        // As JSON, so that the test reads the same whatever fields the manifest gains.
        let manifest: Manifest = serde_json::from_value(json!({
            "format": bundle::BUNDLE_FORMAT,
            "from": callproof_report::format_micros(FROM),
            "to": callproof_report::format_micros(TO),
            "generated_at": "2026-01-02T00:00:00Z",
            "partitions": [{
                "partition": 0,
                "checkpoint_size": size,
                "entries_from": entries_from,
                "entries_to": entries_to,
                "entries": (entries_from..entries_to).collect::<Vec<u64>>(),
                "edges": edges,
                "checkpoints": kept,
                "consistency": chain,
            }],
        }))
        .unwrap();
        let inputs = Inputs {
            period: Period::from_micros(FROM, TO),
            generated_at: manifest.generated_at.clone(),
            verifier_key: options.verifier_key.clone(),
            context: Context {
                link_base: options.link_base.clone(),
                policies: BTreeMap::from([(
                    "get_customer".to_string(),
                    json!({"allow_groups": ["support"]}),
                )]),
                logs: vec![LogState {
                    partition: 0,
                    entries_from,
                    entries_to,
                    log_size: size,
                    root_hash: to_base64(&latest.checkpoint.root_hash),
                    verified: true,
                    entries_checked: size,
                    ..LogState::default()
                }],
            },
        };
        let report = callproof_report::build(&inputs, &events);
        files.insert(
            bundle::REPORT_JSON_PATH.into(),
            bundle::report_json(&report).into_bytes(),
        );
        files.insert(
            bundle::REPORT_HTML_PATH.into(),
            callproof_report::render_html(&report).into_bytes(),
        );
        files.insert(
            bundle::README_PATH.into(),
            bundle::readme(&manifest, TESSERA_VERIFIER).into_bytes(),
        );
        files.insert(
            bundle::VERIFIER_KEY_PATH.into(),
            format!("{TESSERA_VERIFIER}\n").into_bytes(),
        );
        files.insert(
            bundle::MANIFEST_PATH.into(),
            serde_json::to_vec_pretty(&manifest).unwrap(),
        );
        files
    })
}

/// The files as a `.tar.gz`, as the evidence API sends a bundle.
pub fn tar_gz(files: &BundleFiles) -> Vec<u8> {
    bundle::write_bundle(
        files
            .iter()
            .map(|(path, bytes)| (path.as_str(), bytes.as_slice())),
        0,
    )
    .unwrap()
}

/// The problems `verify_bundle` lists, as `callproof-verify` prints them.
fn problems(files: &BundleFiles) -> Vec<String> {
    verify_bundle(files, &tessera_verifier())
        .problems
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn flip(files: &mut BundleFiles, path: &str, position: usize) {
    let bytes = files.get_mut(path).unwrap_or_else(|| panic!("no {path}"));
    let position = position.min(bytes.len() - 1);
    bytes[position] ^= 0x01;
}

#[track_caller]
fn assert_names(problems: &[String], expected: &str) {
    assert!(
        problems.iter().any(|problem| problem.contains(expected)),
        "no problem names {expected:?}: {problems:#?}"
    );
}

#[test]
fn a_bundle_of_every_entry_between_two_kept_checkpoints_verifies() {
    let files = valid_bundle();
    let report = verify_bundle(&files, &tessera_verifier());
    assert!(report.is_valid(), "{:#?}", report.problems);
    assert_eq!(report.entries_verified, 8);
    // Entry 1 (before the period) and entry 10 (after it).
    assert_eq!(report.edges_verified, 2);
    assert_eq!(report.blobs_verified, 1);
    assert_eq!(report.consistency_proofs_verified, 2);
    assert_eq!(report.checkpoints_verified, 3);
    let stated: Value = serde_json::from_slice(&files[bundle::REPORT_JSON_PATH]).unwrap();
    // The refusal and the denied approval are complete calls; only `late` is outside.
    assert_eq!(stated["calls"], 3, "{stated}");
    assert_eq!(stated["events"], 7);
}

/// `callproof-verify bundle` said OK for a bundle from which an entry, its proof and its
/// manifest line were removed.
#[test]
fn an_entry_removed_with_its_proof_and_manifest_line_is_named() {
    let mut files = valid_bundle();
    files.remove(&bundle::entry_path(0, 5));
    files.remove(&bundle::proof_path(0, 5));
    // The manifest's line `5,` of the partition's entries.
    let mut manifest: Manifest = serde_json::from_slice(&files[bundle::MANIFEST_PATH]).unwrap();
    manifest.partitions[0].entries.retain(|index| *index != 5);
    files.insert(
        bundle::MANIFEST_PATH.into(),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    );
    let problems = problems(&files);
    assert_names(
        &problems,
        "partition 0 index 5: logs/0/entries/5: missing: entry 5 is not in the bundle, but it must hold every entry of 2..10",
    );
    // The README counts the entries, and the report counted the refusal at index 5.
    assert_names(&problems, "README.md");
    assert_names(
        &problems,
        "report.json: CC6.2 / CC6.3: figure \"calls refused",
    );
}

/// `callproof-verify bundle` said OK for a bundle whose report.html was rewritten.
#[test]
fn a_rewritten_report_page_is_named() {
    let mut files = valid_bundle();
    let html = String::from_utf8(files[bundle::REPORT_HTML_PATH].clone()).unwrap();
    let rewritten = html.replace(
        "<td>calls refused (no valid token, policy, limits: call_denied)</td><td>1</td>",
        "<td>calls refused (no valid token, policy, limits: call_denied)</td><td>0</td>",
    );
    assert_ne!(html, rewritten);
    files.insert(bundle::REPORT_HTML_PATH.into(), rewritten.into_bytes());
    let problems = problems(&files);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_names(
        &problems,
        "report.html: is not the page of the report the entries give: line",
    );
    assert_names(&problems, "call_denied)</td><td>0</td>");
}

#[test]
fn every_kind_of_file_removed_is_named() {
    let cases = [
        (
            bundle::entry_path(0, 2),
            "partition 0 index 2: logs/0/entries/2: missing",
        ),
        (
            bundle::proof_path(0, 7),
            "partition 0 index 7: logs/0/proofs/7: missing",
        ),
        (
            bundle::checkpoint_path(0),
            "partition 0: logs/0/checkpoint: missing",
        ),
        (
            bundle::kept_checkpoint_path(0, 2),
            "partition 0: logs/0/checkpoints/2: missing",
        ),
        (
            bundle::kept_checkpoint_path(0, 10),
            "partition 0: logs/0/checkpoints/10: missing",
        ),
        (
            bundle::consistency_path(0, 2, 10),
            "partition 0: logs/0/consistency/2-10: missing",
        ),
        (
            bundle::blob_path(&bundle::sha256_hex(BLOB)),
            "partition 0 index 2: blobs/sha256/",
        ),
        (bundle::REPORT_JSON_PATH.into(), "report.json: missing"),
        (bundle::REPORT_HTML_PATH.into(), "report.html: missing"),
        (bundle::README_PATH.into(), "README.md: missing"),
        (bundle::MANIFEST_PATH.into(), "manifest.json: missing"),
    ];
    for (path, expected) in cases {
        let mut files = valid_bundle();
        assert!(files.remove(&path).is_some(), "{path}");
        assert_names(&problems(&files), expected);
    }
}

#[test]
fn every_kind_of_file_changed_is_named() {
    let cases = [
        (
            bundle::entry_path(0, 6),
            40,
            "partition 0 index 6: logs/0/entries/6: does not verify against logs/0/proofs/6",
        ),
        (bundle::proof_path(0, 8), 60, "partition 0 index 8: logs/0/"),
        (
            bundle::checkpoint_path(0),
            30,
            "partition 0: logs/0/checkpoint: ",
        ),
        (
            bundle::kept_checkpoint_path(0, 10),
            30,
            "partition 0: logs/0/checkpoints/10: ",
        ),
        (
            bundle::consistency_path(0, 10, 11),
            3,
            "partition 0: logs/0/consistency/10-11: ",
        ),
        (
            bundle::blob_path(&bundle::sha256_hex(BLOB)),
            5,
            "partition 0 index 2: blobs/sha256/",
        ),
        (
            bundle::README_PATH.into(),
            3,
            "README.md: is not the README",
        ),
        (
            bundle::REPORT_HTML_PATH.into(),
            200,
            "report.html: is not the page",
        ),
    ];
    for (path, position, expected) in cases {
        let mut files = valid_bundle();
        flip(&mut files, &path, position);
        assert_names(&problems(&files), expected);
    }
}

#[test]
fn a_changed_report_figure_or_manifest_line_is_named() {
    // A figure of report.json.
    let mut files = valid_bundle();
    let mut report: Value = serde_json::from_slice(&files[bundle::REPORT_JSON_PATH]).unwrap();
    let cc72 = report["sections"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|section| section["id"] == "CC7.2")
        .unwrap();
    cc72["figures"][1]["value"] = json!(4);
    files.insert(
        bundle::REPORT_JSON_PATH.into(),
        serde_json::to_vec_pretty(&report).unwrap(),
    );
    assert_names(
        &problems(&files),
        "report.json: CC7.2: figure \"calls begun (call_received, or call_denied for a refused call)\": its value is 4, the entries give 3",
    );

    // Lines of the manifest: the period, the range, the checkpoint's size.
    for (from, to, expected) in [
        (
            "\"from\": \"2026-01-01T00:00:00Z\"",
            "\"from\": \"2025-12-31T00:00:00Z\"",
            "report.json: `from` is \"2026-01-01T00:00:00Z\", but the manifest says \"2025-12-31T00:00:00Z\"",
        ),
        (
            "\"entries_from\": 2",
            "\"entries_from\": 3",
            "partition 0: logs/0/checkpoints/3: missing or invalid: nothing signs size 3",
        ),
        (
            "\"checkpoint_size\": 11",
            "\"checkpoint_size\": 12",
            "partition 0: logs/0/checkpoint: has size 11, but the manifest says 12",
        ),
    ] {
        let mut files = valid_bundle();
        let manifest = String::from_utf8(files[bundle::MANIFEST_PATH].clone()).unwrap();
        assert!(manifest.contains(from), "{manifest}");
        files.insert(
            bundle::MANIFEST_PATH.into(),
            manifest.replacen(from, to, 1).into_bytes(),
        );
        assert_names(&problems(&files), expected);
    }

    // A file that nothing lists.
    let mut files = valid_bundle();
    files.insert(bundle::entry_path(0, 0), b"{}".to_vec());
    assert_names(
        &problems(&files),
        "partition 0 index 0: logs/0/entries/0: is not listed in the manifest",
    );
}

/// `callproof-verify bundle` said OK for a bundle whose range was narrowed to 2..6 (a kept
/// checkpoint is at 6) with a report recomputed from those entries: the `held` call (entries
/// 6 to 8, in the period) disappeared. The entry just after the range is in the period.
#[test]
fn a_range_narrowed_to_another_kept_checkpoint_is_named_at_its_edge() {
    let narrowed = bundle_of(&Options {
        entries_to: 6,
        ..Options::default()
    });
    let problems = problems(&narrowed);
    assert_names(
        &problems,
        "partition 0 index 6: logs/0/entries/6: the entry just after the range 2..6 has time 2026-01-01T00:00:00.005Z, in the period",
    );

    // Without its edge entries the narrowed bundle fails too, naming the missing edge.
    let mut without_edges = narrowed.clone();
    for index in [1, 6] {
        without_edges.remove(&bundle::entry_path(0, index));
        without_edges.remove(&bundle::proof_path(0, index));
    }
    let problems = self::problems(&without_edges);
    assert_names(&problems, "partition 0 index 6: logs/0/entries/6: missing");
    assert_names(&problems, "partition 0 index 1: logs/0/entries/1: missing");

    // Narrowed at the start, to 6..10: the entry before it (5, the refusal) is in the period.
    let narrowed = bundle_of(&Options {
        entries_from: 6,
        ..Options::default()
    });
    assert_names(
        &self::problems(&narrowed),
        "partition 0 index 5: logs/0/entries/5: the entry just before the range 6..10 has time 2026-01-01T00:00:00.004Z, in the period",
    );
}

/// A range that runs from the start of the log to its latest checkpoint has no edges, and
/// widening the range past the period's kept checkpoints still verifies.
#[test]
fn a_range_without_edges_or_wider_than_needed_verifies() {
    for (entries_from, entries_to) in [(0, 11), (0, 10), (2, 11)] {
        let files = bundle_of(&Options {
            entries_from,
            entries_to,
            ..Options::default()
        });
        let report = verify_bundle(&files, &tessera_verifier());
        assert!(
            report.is_valid(),
            "{entries_from}..{entries_to}: {:#?}",
            report.problems
        );
    }
}

/// `report.json` stated a verifier key other than the one the auditor gave, and a link prefix
/// `javascript:`, and the verifier took both as stated.
#[test]
fn a_report_stating_another_key_or_a_script_link_prefix_is_named() {
    let (_, other_key) = callproof_tlog::note::NoteSigner::generate(TESSERA_ORIGIN).unwrap();
    let files = bundle_of(&Options {
        verifier_key: other_key.clone(),
        ..Options::default()
    });
    assert_names(
        &problems(&files),
        &format!("report.json: `verifier_key` is {other_key:?}, not the key given"),
    );

    for link_base in [
        "javascript:alert(1)//",
        "JAVASCRIPT:x",
        "ftp://evidence.example",
        "//evil.example",
    ] {
        let files = bundle_of(&Options {
            link_base: link_base.into(),
            ..Options::default()
        });
        assert_names(
            &problems(&files),
            &format!("report.json: `context.link_base` is {link_base:?}"),
        );
    }
    for link_base in [
        "",
        "http://evidence.example",
        "https://evidence.example/base",
    ] {
        let files = bundle_of(&Options {
            link_base: link_base.into(),
            ..Options::default()
        });
        assert!(
            problems(&files).is_empty(),
            "{link_base}: {:#?}",
            problems(&files)
        );
    }
}

/// An edge entry without an event time (an undecodable message) cannot show where the period
/// begins: it is named, and a range that goes past it to the start of the log verifies.
#[test]
fn an_edge_entry_without_an_event_time_is_named() {
    let mut batches = batches();
    batches[0][1] = json!({
        "source": {"kafka": {"partition": 0, "topic": "calls", "offset": 1}},
        "undecodable": {"payload_bytes": 3, "payload_sha256": "00", "reason": "not avro"},
    });
    let files = bundle_of(&Options {
        batches: batches.clone(),
        ..Options::default()
    });
    assert_names(
        &problems(&files),
        "partition 0 index 1: logs/0/entries/1: the entry just before the range 2..10 has no event time",
    );
    let files = bundle_of(&Options {
        batches,
        entries_from: 0,
        ..Options::default()
    });
    let report = verify_bundle(&files, &tessera_verifier());
    assert!(report.is_valid(), "{:#?}", report.problems);
    assert_eq!(report.edges_verified, 1);
}

/// A bundle of an older format is refused, saying that it is one.
#[test]
fn an_older_bundle_format_is_named_as_such() {
    for older in [
        "callproof-evidence-bundle@v1",
        "callproof-evidence-bundle@v2",
    ] {
        let mut files = valid_bundle();
        let mut manifest: Value = serde_json::from_slice(&files[bundle::MANIFEST_PATH]).unwrap();
        manifest["format"] = json!(older);
        manifest["partitions"][0]
            .as_object_mut()
            .unwrap()
            .remove("edges");
        files.insert(
            bundle::MANIFEST_PATH.into(),
            serde_json::to_vec_pretty(&manifest).unwrap(),
        );
        let problems = problems(&files);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_names(
            &problems,
            &format!("manifest.json: format {older:?} is an older bundle format"),
        );
    }
}
