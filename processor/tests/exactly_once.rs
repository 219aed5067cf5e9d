//! Exactly once across SIGKILLs and rebalances, with several processor instances.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::support::events::call_event;
use crate::support::{Deployment, assert_exactly_once, produce, producer, spawn_processor};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_and_repeats_nothing() {
    const N_EVENTS: usize = 4_000;
    let deployment = Deployment::new(4).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_0006);
    let events: Vec<_> = (0..N_EVENTS as u64)
        .map(|sequence| call_event(&mut rng, sequence, 400))
        .collect();
    let ids: Vec<String> = events.iter().map(|event| event.event_id.clone()).collect();

    // The stream: produced in chunks while processors are killed and restarted.
    let topic = deployment.topic.clone();
    let producing = tokio::spawn(async move {
        let producer = producer();
        for chunk in events.chunks(200) {
            produce(&producer, &topic, chunk).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    });

    let configs = [
        deployment.write_config("a.toml", ""),
        deployment.write_config("b.toml", ""),
    ];
    let stderr = deployment.dir.path().join("processor.log");
    let mut instances = [
        Some(spawn_processor(&configs[0], &stderr, "info")),
        Some(spawn_processor(&configs[1], &stderr, "info")),
    ];
    let mut kills = 0;
    let started = Instant::now();
    while kills < 8 {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..2_500))).await;
        let victim = rng.gen_range(0..2);
        if let Some(mut instance) = instances[victim].take() {
            instance.kill();
            kills += 1;
            eprintln!(
                "killed instance {victim} at {:?}, {} events logged",
                started.elapsed(),
                deployment.total_logged().await
            );
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..800))).await;
        instances[victim] = Some(spawn_processor(&configs[victim], &stderr, "info"));
    }
    producing.await.expect("producer");
    deployment
        .wait_for_logged(N_EVENTS as u64, Duration::from_secs(120))
        .await;
    for instance in instances.iter_mut().flatten() {
        instance.stop();
    }

    let logs = deployment.read_logs().await;
    assert_eq!(logs.len(), 4, "one log per partition");
    assert_exactly_once(&logs, &ids);
    deployment.audit_all();

    // The index holds every entry once, whatever the kills interrupted.
    let hits = deployment.search("*");
    assert_eq!(hits.len(), N_EVENTS, "index documents");
    let mut positions: Vec<_> = hits.iter().map(|hit| (hit.partition, hit.log_index)).collect();
    positions.sort_unstable();
    positions.dedup();
    assert_eq!(positions.len(), N_EVENTS, "an entry is indexed twice");
}
