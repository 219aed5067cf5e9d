//! Exactly once across SIGKILLs, and partitions shared by several instances.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::support::events::call_event;
use crate::support::{
    Deployment, assert_exactly_once, produce, producer, spawn_processor, unique_name,
};

fn events(seed: u64, n_events: usize) -> (Vec<callproof_schemas::CallEvent>, Vec<String>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let events: Vec<_> = (0..n_events as u64)
        .map(|sequence| call_event(&mut rng, sequence, 400))
        .collect();
    let ids = events.iter().map(|event| event.event_id.clone()).collect();
    (events, ids)
}

/// Produces `events` in chunks in the background, as a live stream.
fn stream(topic: String, events: Vec<callproof_schemas::CallEvent>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let producer = producer();
        for chunk in events.chunks(100) {
            produce(&producer, &topic, chunk).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
}

/// The real binary, SIGKILLed at random points of a live stream of thousands of events and
/// restarted, ten times. Each start joins a new consumer group: Tansu 0.6 never evicts a
/// SIGKILLed member from its group (Apache Kafka does, after `session.timeout.ms`), so a
/// restart in the same group would wait forever for the partitions the dead member holds.
/// A new group also starts from the beginning of every partition, which proves that the
/// position comes from the log's checkpoints and not from the group's commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_and_repeats_nothing() {
    const N_EVENTS: usize = 4_000;
    let deployment = Deployment::new(4).await;
    let (events, ids) = events(0x5eed_0006, N_EVENTS);
    let producing = stream(deployment.topic.clone(), events);
    let stderr = deployment.dir.path().join("processor.log");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0c1d);
    let started = Instant::now();
    for kill in 0..10 {
        let config = deployment.write_config_in_group(
            &format!("run-{kill}.toml"),
            &unique_name("test-group"),
            "",
        );
        let mut processor = spawn_processor(&config, &stderr, "info");
        tokio::time::sleep(Duration::from_millis(rng.gen_range(700..2_500))).await;
        processor.kill();
        eprintln!(
            "SIGKILL {kill} at {:?}: {} events logged",
            started.elapsed(),
            deployment.total_logged().await
        );
    }
    producing.await.expect("producer");
    let config = deployment.write_config("final.toml", "");
    let mut processor = spawn_processor(&config, &stderr, "info");
    deployment
        .wait_for_logged(N_EVENTS as u64, Duration::from_secs(120))
        .await;
    deployment
        .wait_for_indexed(N_EVENTS, Duration::from_secs(60))
        .await;
    processor.stop();

    let logs = deployment.read_logs().await;
    assert_eq!(logs.len(), 4, "one log per partition");
    assert_exactly_once(&logs, &ids);
    deployment.audit_all();

    // The index holds every entry once, whatever the kills interrupted.
    let hits = deployment.search("*");
    assert_eq!(hits.len(), N_EVENTS, "index documents");
    let mut positions: Vec<_> = hits
        .iter()
        .map(|hit| (hit.partition, hit.log_index))
        .collect();
    positions.sort_unstable();
    positions.dedup();
    assert_eq!(positions.len(), N_EVENTS, "an entry is indexed twice");
}

/// Two instances in one group share the partitions; one of them is stopped and restarted
/// during the stream, so partitions are revoked and assigned back and forth (and the
/// restarted instance owns some again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_partitions_across_rebalances() {
    const N_EVENTS: usize = 6_000;
    let deployment = Deployment::new(4).await;
    let (events, ids) = events(0x5eed_0007, N_EVENTS);
    let producing = stream(deployment.topic.clone(), events);
    let configs = [
        deployment.write_config("a.toml", ""),
        deployment.write_config("b.toml", ""),
    ];
    let logs_of = |name: &str| deployment.dir.path().join(name);
    let owns_a_partition = |name: &str| {
        std::fs::read_to_string(logs_of(name)).is_ok_and(|text| text.contains("partition opened"))
    };
    // Tansu takes a few seconds to bring a second member into the group.
    let wait_until_owner = |name: &'static str| async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !owns_a_partition(name) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let mut a = spawn_processor(&configs[0], &logs_of("a.log"), "info");
    let mut b = spawn_processor(&configs[1], &logs_of("b.log"), "info");
    wait_until_owner("b.log").await;
    b.stop();
    std::fs::remove_file(logs_of("b.log")).expect("remove log");
    b = spawn_processor(&configs[1], &logs_of("b.log"), "info");
    wait_until_owner("b.log").await;
    producing.await.expect("producer");
    deployment
        .wait_for_logged(N_EVENTS as u64, Duration::from_secs(120))
        .await;
    deployment
        .wait_for_indexed(N_EVENTS, Duration::from_secs(60))
        .await;
    a.stop();
    b.stop();

    for name in ["a.log", "b.log"] {
        let text = std::fs::read_to_string(logs_of(name)).expect("log");
        let rebalances: Vec<&str> = text
            .lines()
            .filter(|line| {
                line.contains("assigned") || line.contains("revoked") || line.contains("started")
            })
            .collect();
        assert!(
            text.contains("partition opened"),
            "instance {name} never owned a partition:\n{}",
            rebalances.join("\n")
        );
    }
    let logs = deployment.read_logs().await;
    assert_exactly_once(&logs, &ids);
    deployment.audit_all();
    assert_eq!(deployment.search("*").len(), N_EVENTS);
}
