//! The index is a derived view: `reindex` rebuilds it from the logs alone, same results.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use callproof_evidence_format::index_schema::{self, IndexFields};
use callproof_schemas::{Mcp, McpOutcome};
use rand::SeedableRng;
use serde_json::Value;
use tantivy::schema::{Schema, TantivyDocument};
use tantivy::{DateTime, Index, IndexWriter};

use crate::support::events::call_event;
use crate::support::{Deployment, produce, producer, spawn_processor};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_from_the_logs_gives_the_same_search_results() {
    let deployment = Deployment::new(3).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut events: Vec<_> = (0..600)
        .map(|sequence| call_event(&mut rng, sequence, 300))
        .collect();
    // Two bodies over 64 KiB: their entries hold blob hashes, and reindex must fetch them.
    if let Some(body) = events[10].response.as_mut().and_then(|r| r.body.as_mut()) {
        *body = format!("\"large body {} needle-large-body\"", "x".repeat(100_000));
    }
    if let Some(body) = events[20].request.as_mut().and_then(|r| r.body.as_mut()) {
        *body = format!(
            "{{\"blob\":\"{} needle-large-request\"}}",
            "y ".repeat(60_000)
        );
    }
    events[30].kind = callproof_schemas::EventKind::CallDenied;
    if let Some(decision) = events[30].decision.as_mut() {
        decision.allowed = false;
    }
    produce(&producer(), &deployment.topic, &events).await;

    let config = deployment.write_config("deploy.toml", "");
    let mut processor = spawn_processor(&config, &deployment.dir.path().join("p.log"), "info");
    deployment
        .wait_for_logged(600, Duration::from_secs(60))
        .await;
    processor.stop();
    let blobs = std::fs::read_dir(deployment.store_dir().join("blobs/sha256"))
        .expect("blobs")
        .count();
    assert_eq!(blobs, 2, "one blob per large body");

    let queries = [
        "*",
        "needle-large-body",
        "needle-large-request",
        "kind:call_denied",
        "decision:deny",
        "decision:allow AND detectors:EMAIL",
        "detectors:CREDIT_CARD",
        "subject:user-7",
        "agent:agent-7 AND function:get_customer",
        "groups:support",
        "body:refund AND body:invoice",
        "partition:1 AND log_index:[0 TO 9]",
        "time:[2000-01-01T00:00:00Z TO 2100-01-01T00:00:00Z]",
    ];
    let before: Vec<_> = queries
        .iter()
        .map(|query| deployment.search(query))
        .collect();
    // An empty result would compare equal to an empty result after the rebuild, proving
    // nothing: every query must find something.
    for (query, hits) in queries.iter().zip(&before) {
        assert!(!hits.is_empty(), "query {query:?} finds nothing");
    }
    assert_eq!(before[0].len(), 600);
    assert_eq!(before[1].len(), 1);
    assert_eq!(before[2].len(), 1);
    assert_eq!(before[3].len(), 1);
    assert_eq!(before[4].len(), 1);
    assert!(before[5].len() > 500, "{}", before[5].len());
    assert_eq!(before[11].len(), 10);

    // Throw the index away entirely: the log alone must be enough.
    std::fs::remove_dir_all(deployment.index_dir()).expect("remove index");
    let status = Command::new(env!("CARGO_BIN_EXE_callproof-processor"))
        .args(["reindex", "--config"])
        .arg(&config)
        .status()
        .expect("reindex");
    assert!(status.success());
    let after: Vec<_> = queries
        .iter()
        .map(|query| deployment.search(query))
        .collect();
    for ((query, before), after) in queries.iter().zip(&before).zip(&after) {
        assert_eq!(before, after, "query {query:?}");
    }

    // Reindex over an existing index is the same again.
    let status = Command::new(env!("CARGO_BIN_EXE_callproof-processor"))
        .args(["reindex", "--config"])
        .arg(&config)
        .status()
        .expect("reindex");
    assert!(status.success());
    assert_eq!(deployment.search("*"), before[0]);
}

/// Regression: a processor with new index fields failed to open an index written before them
/// (tantivy's `open_or_create` refuses other fields), so it could not start after an upgrade,
/// nor could `reindex` rebuild. The stale index must be set aside and rebuilt from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_of_an_older_schema_is_set_aside_and_rebuilt_from_the_log() {
    let deployment = Deployment::new(2).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut events: Vec<_> = (0..300)
        .map(|sequence| call_event(&mut rng, sequence, 100))
        .collect();
    for event in events.iter_mut().step_by(4) {
        event.mcp = Some(Mcp {
            method: "tools/call".into(),
            server: Some("crm".into()),
            tool: Some("get_customer".into()),
            outcome: Some(McpOutcome::Result),
            ..Mcp::default()
        });
    }
    let mcp_calls = events.iter().filter(|event| event.mcp.is_some()).count();
    let (before_upgrade, after_upgrade) = events.split_at(200);
    produce(&producer(), &deployment.topic, before_upgrade).await;
    let config = deployment.write_config("deploy.toml", "");
    let log = deployment.dir.path().join("p.log");
    let mut processor = spawn_processor(&config, &log, "info");
    deployment
        .wait_for_logged(200, Duration::from_secs(60))
        .await;
    deployment
        .wait_for_indexed(200, Duration::from_secs(60))
        .await;
    processor.stop();

    // What an older processor left: partition 0 without the `mcp_*` fields (index schema 1),
    // partition 1 with today's fields but version 1 in its payload. Each covers half its log,
    // so the entries it lacks are indexed as well.
    let logs = deployment.read_logs().await;
    assert_eq!(logs.len(), 2, "both partitions have a log");
    let old_index = |partition: i32, keep_mcp_fields: bool| {
        let entries = &logs[&partition];
        write_old_index(
            &deployment.index_dir(),
            partition,
            keep_mcp_fields,
            &entries[..entries.len() / 2],
        );
    };
    old_index(0, false);
    old_index(1, true);
    produce(&producer(), &deployment.topic, after_upgrade).await;

    let mut processor = spawn_processor(&config, &log, "info");
    deployment
        .wait_for_logged(300, Duration::from_secs(60))
        .await;
    deployment
        .wait_for_indexed(300, Duration::from_secs(60))
        .await;
    let expected: BTreeSet<Option<String>> = events
        .iter()
        .map(|event| Some(event.event_id.clone()))
        .collect();
    let assert_each_event_once = |what: &str| {
        let found: Vec<Option<String>> = deployment
            .search("*")
            .into_iter()
            .map(|hit| hit.event_id)
            .collect();
        assert_eq!(found.len(), events.len(), "{what}: hits");
        let distinct: BTreeSet<Option<String>> = found.into_iter().collect();
        assert_eq!(distinct, expected, "{what}: every event exactly once");
        for query in [
            "mcp_server:crm",
            "mcp_tool:get_customer",
            "mcp_outcome:result",
        ] {
            assert_eq!(deployment.search(query).len(), mcp_calls, "{what}: {query}");
        }
    };
    assert_each_event_once("processor after the upgrade");
    processor.stop();
    let processor_log = std::fs::read_to_string(&log).expect("processor log");
    assert!(
        processor_log.contains("its fields differ from this version's"),
        "{processor_log}"
    );
    assert!(
        processor_log.contains("written with schema version 1"),
        "{processor_log}"
    );
    let set_aside = |partition: i32| {
        std::fs::read_dir(deployment.index_dir())
            .expect("index dir")
            .flatten()
            .filter(|entry| {
                entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{partition}.set-aside-"))
            })
            .count()
    };
    assert_eq!(
        (set_aside(0), set_aside(1)),
        (1, 1),
        "each old index kept aside"
    );

    // `reindex` starts on an old index too.
    let logs = deployment.read_logs().await;
    let entries = &logs[&0];
    write_old_index(
        &deployment.index_dir(),
        0,
        false,
        &entries[..entries.len() / 2],
    );
    let status = Command::new(env!("CARGO_BIN_EXE_callproof-processor"))
        .args(["reindex", "--config"])
        .arg(&config)
        .status()
        .expect("reindex");
    assert!(status.success());
    assert_each_event_once("reindex");
}

/// Replaces a partition's index with one as an older processor wrote it: the current fields
/// (without the `mcp_*` ones unless `keep_mcp_fields`), a document per given entry, and a
/// payload of schema version 1 covering them.
fn write_old_index(root: &Path, partition: i32, keep_mcp_fields: bool, entries: &[Value]) {
    let dir = index_schema::partition_index_dir(root, partition);
    std::fs::remove_dir_all(&dir).expect("remove the index");
    std::fs::create_dir_all(&dir).expect("index dir");
    let mut builder = Schema::builder();
    for (_, entry) in IndexFields::new().schema.fields() {
        if keep_mcp_fields || !entry.name().starts_with("mcp_") {
            builder.add_field(entry.clone());
        }
    }
    let schema = builder.build();
    let field = |name: &str| schema.get_field(name).expect("field");
    let index = Index::create_in_dir(&dir, schema.clone()).expect("old index");
    let mut writer: IndexWriter<TantivyDocument> = index
        .writer_with_num_threads(1, 15_000_000)
        .expect("writer");
    for (log_index, entry) in entries.iter().enumerate() {
        let event = &entry["event"];
        let mut document = TantivyDocument::default();
        document.add_text(field("event_id"), event["event_id"].as_str().expect("id"));
        document.add_text(field("kind"), event["kind"].as_str().expect("kind"));
        document.add_date(
            field("time"),
            DateTime::from_timestamp_micros(event["time"].as_i64().expect("time")),
        );
        document.add_u64(field("partition"), partition as u64);
        document.add_u64(field("log_index"), log_index as u64);
        writer.add_document(document).expect("add");
    }
    let payload = index_schema::CommitPayload {
        schema_version: 1,
        partition,
        log_size: entries.len() as u64,
    };
    let mut prepared = writer.prepare_commit().expect("prepare");
    prepared.set_payload(&serde_json::to_string(&payload).expect("payload"));
    prepared.commit().expect("commit");
}
