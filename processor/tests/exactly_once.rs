//! Exactly once across SIGKILLs, and partitions shared by several instances.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::support::events::call_event;
use crate::support::{
    Deployment, assert_exactly_once, brokers, consume_all_with_python, produce, producer,
    spawn_processor, unique_name,
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

/// Waits until a run's log says it opened `n_partitions` partitions (joined the group, read the
/// logs' checkpoints and caught the indexes up), so that the kill that follows lands while it
/// processes new messages.
async fn wait_until_opened(log: &std::path::Path, n_partitions: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let opened = std::fs::read_to_string(log)
            .map(|text| text.matches("partition opened").count())
            .unwrap_or(0);
        if opened >= n_partitions {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} did not open {n_partitions} partitions", log.display());
}

/// Every event id appears at least once on the SIEM topic (read by an independent client):
/// records are acknowledged before the append, so a kill can repeat one but never lose one.
fn assert_siem_has_every_event(deployment: &Deployment, ids: &[String]) {
    let records = consume_all_with_python(&deployment.siem_topic, ids.len());
    let published: std::collections::HashSet<&str> = records
        .iter()
        .filter_map(|record| record["metadata"]["uid"].as_str())
        .collect();
    let missing: Vec<&String> = ids
        .iter()
        .filter(|id| !published.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} events never reached the SIEM topic, e.g. {:?}",
        missing.len(),
        ids.len(),
        missing.first()
    );
    assert!(records.len() >= ids.len());
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
    const N_KILLS: usize = 10;
    let deployment = Deployment::new(4).await;
    let (events, ids) = events(0x5eed_0006, N_EVENTS);
    let producing = stream(deployment.topic.clone(), events);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0c1d);
    let started = Instant::now();
    let mut logged_at_kills = Vec::new();
    for kill in 0..N_KILLS {
        let config = deployment.write_config_in_group(
            &format!("run-{kill}.toml"),
            &unique_name("test-group"),
            "",
        );
        let stderr = deployment.dir.path().join(format!("run-{kill}.log"));
        let mut processor = spawn_processor(&config, &stderr, "info");
        wait_until_opened(&stderr, 4, Duration::from_secs(60)).await;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..2_000))).await;
        processor.kill();
        let logged = deployment.total_logged().await;
        eprintln!(
            "SIGKILL {kill} at {:?}: {logged} events logged",
            started.elapsed()
        );
        logged_at_kills.push(logged);
    }
    // The kills must have interrupted the stream, or this test would prove nothing: several
    // landed with some but not all events logged, the log never shrank, and several
    // restarts got further than the run before. (Not every one: a run re-reads its partitions
    // from offset 0 in its new group, and one killed before it reached new messages adds
    // nothing.) The bounds are loose on purpose: how far a run gets before its kill depends
    // on how busy the machine is, and a timing-sensitive test would fail on a loaded CI host.
    let mid_stream = logged_at_kills
        .iter()
        .filter(|&&logged| 0 < logged && logged < N_EVENTS as u64)
        .count();
    assert!(
        mid_stream >= 3,
        "only {mid_stream} kills landed mid-stream: {logged_at_kills:?}"
    );
    assert!(
        logged_at_kills.windows(2).all(|pair| pair[0] <= pair[1]),
        "the log shrank: {logged_at_kills:?}"
    );
    let progressed = logged_at_kills
        .windows(2)
        .filter(|pair| pair[0] < pair[1])
        .count();
    assert!(
        progressed >= 2,
        "only {progressed} restarts made progress: {logged_at_kills:?}"
    );
    producing.await.expect("producer");
    let config = deployment.write_config("final.toml", "");
    let stderr = deployment.dir.path().join("final.log");
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

    assert_siem_has_every_event(&deployment, &ids);
}

/// Commits the group's offsets of partitions `0..offsets.len()` and checks the broker kept
/// them.
fn commit_group_offsets(deployment: &Deployment, offsets: &[i64]) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", &deployment.group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for (partition, offset) in offsets.iter().enumerate() {
        list.add_partition_offset(&deployment.topic, partition as i32, Offset::Offset(*offset))
            .expect("offset");
    }
    consumer.commit(&list, CommitMode::Sync).expect("commit");
    let committed = consumer
        .committed_offsets(list.clone(), Duration::from_secs(10))
        .expect("committed offsets");
    for element in committed.elements() {
        assert_eq!(
            element.offset(),
            Offset::Offset(offsets[element.partition() as usize]),
            "the broker did not keep the commit of partition {}",
            element.partition()
        );
    }
}

/// Produces events alternately to partitions 0 and 1, so that each holds a known number, one
/// message per batch: Tansu 0.6 answers a fetch from an offset inside a batch with nothing
/// (Apache Kafka returns the batch), so a committed offset must start a batch.
async fn produce_round_robin(deployment: &Deployment, events: &[callproof_schemas::CallEvent]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .create()
        .expect("producer");
    let sends: Vec<_> = events
        .iter()
        .enumerate()
        .map(|(position, event)| {
            (
                (position % 2) as i32,
                event.call_id.clone(),
                callproof_schemas::encode(event).expect("encode"),
            )
        })
        .collect();
    let deliveries = sends.iter().map(|(partition, key, payload)| {
        producer.send(
            FutureRecord::to(&deployment.topic)
                .partition(*partition)
                .key(key)
                .payload(payload),
            Duration::from_secs(30),
        )
    });
    for result in futures::future::join_all(deliveries).await {
        result.expect("delivered");
    }
}

/// The group's committed offset is only where fetching starts; the log's checkpoint is the
/// truth. With the group committed ahead of the log (as after a lost store, or a commit that
/// raced a failed append), a restart in the same group seeks back to where the log ends, both
/// for a log not yet started and for one already holding entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_offset_ahead_of_the_log_is_sought_back() {
    let deployment = Deployment::new(2).await;
    let (events, ids) = events(0x5eed_0008, 600);
    let config = deployment.write_config("deploy.toml", "");
    let stderr = deployment.dir.path().join("processor.log");
    let seeks = || {
        std::fs::read_to_string(&stderr)
            .unwrap_or_default()
            .matches("consumer position is ahead of the log; seeking back")
            .count()
    };

    // No log yet (150 messages in each partition), the group half-way through.
    produce_round_robin(&deployment, &events[..300]).await;
    commit_group_offsets(&deployment, &[75, 75]);
    let mut processor = spawn_processor(&config, &stderr, "info");
    deployment
        .wait_for_logged(300, Duration::from_secs(60))
        .await;
    processor.stop();
    assert!(seeks() >= 1, "no seek back for the new logs");
    let seeks_before = seeks();

    // Logs of 150 entries each, 300 messages in each partition, the group at 225.
    produce_round_robin(&deployment, &events[300..]).await;
    commit_group_offsets(&deployment, &[225, 225]);
    let mut processor = spawn_processor(&config, &stderr, "info");
    deployment
        .wait_for_logged(600, Duration::from_secs(60))
        .await;
    processor.stop();
    assert!(
        seeks() > seeks_before,
        "no seek back for the logs with entries"
    );

    let logs = deployment.read_logs().await;
    assert_exactly_once(&logs, &ids);
    deployment.audit_all();
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

/// The group protocol failed: two processors each believe they own every partition (here,
/// each in a group of its own) and append to the same logs at once. The store fences every
/// append but the first from each log size, the fenced one reopens the log and goes on from
/// it, so no log forks and every event is in the logs exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processors_appending_to_one_partition_never_fork_its_log() {
    const N_EVENTS: usize = 3_000;
    let deployment = Deployment::new(2).await;
    let (events, ids) = events(0x5eed_0009, N_EVENTS);
    let producing = stream(deployment.topic.clone(), events);
    let mut processors = Vec::new();
    let mut stderrs = Vec::new();
    // Two processors write the same bytes for the same messages: what makes a stale one
    // dangerous is a difference, such as the masking config of an older deployment. Without
    // the fence, their entries overwrite each other's tiles and the logs fail the audit.
    let instances = [
        ("a", 500, ""),
        ("b", 37, "[masking]\nreplacement = \"partial\"\n"),
    ];
    for (name, batch, extra) in instances {
        let config = deployment.write_config_in_group(
            &format!("{name}.toml"),
            &unique_name("test-group"),
            extra,
        );
        // Each its own index, as on two hosts; the store is the one they share. Batches of
        // different sizes: two writers appending the very same batch write the same claim,
        // which fences nothing.
        let own_index = deployment.dir.path().join(format!("index-{name}"));
        let text = std::fs::read_to_string(&config)
            .expect("config")
            .replace(
                &deployment.index_dir().display().to_string(),
                &own_index.display().to_string(),
            )
            .replace(
                "batch_max_events = 500",
                &format!("batch_max_events = {batch}"),
            );
        std::fs::write(&config, text).expect("config");
        let stderr = deployment.dir.path().join(format!("{name}.log"));
        processors.push(spawn_processor(&config, &stderr, "info"));
        stderrs.push(stderr);
    }
    producing.await.expect("producer");
    deployment
        .wait_for_logged(N_EVENTS as u64, Duration::from_secs(120))
        .await;
    for processor in &mut processors {
        processor.stop();
    }
    let logs = deployment.read_logs().await;
    assert_eq!(logs.len(), 2, "one log per partition");
    assert_exactly_once(&logs, &ids);
    deployment.audit_all();
    let fenced: usize = stderrs
        .iter()
        .map(|stderr| {
            std::fs::read_to_string(stderr)
                .unwrap_or_default()
                .matches("another writer appended to this partition's log first")
                .count()
        })
        .sum();
    eprintln!("{fenced} appends fenced");
    assert!(
        fenced > 0,
        "the two processors never appended from the same log size: this run proves nothing"
    );
}
