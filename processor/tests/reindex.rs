//! The index is a derived view: `reindex` rebuilds its splits from the logs alone, same results.

use std::process::Command;
use std::time::Duration;

use rand::SeedableRng;

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
    deployment
        .wait_for_indexed(600, Duration::from_secs(60))
        .await;
    processor.stop();
    assert_eq!(deployment.searchable().values().sum::<u64>(), 600);
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
    std::fs::remove_dir_all(deployment.splits_dir()).expect("remove the splits");
    assert!(deployment.search("*").is_empty());
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

    // Reindex over existing splits replaces them, with the same results.
    let status = Command::new(env!("CARGO_BIN_EXE_callproof-processor"))
        .args(["reindex", "--config"])
        .arg(&config)
        .status()
        .expect("reindex");
    assert!(status.success());
    assert_eq!(deployment.search("*"), before[0]);
}
