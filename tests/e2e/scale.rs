//! Scale-out and crash on the real broker (issue 19, item 4): two `callproof-processor`
//! processes in one consumer group, each with local directories of its own, and a
//! `callproof-evidence` with a third, share nothing but the object store (a `file://` URL) and
//! the broker (`KAFKA_BROKERS`, the Tansu of `scripts/broker.sh`). Events stream in over four
//! partitions; every partition becomes searchable; one processor is SIGKILLed mid-stream, the
//! other takes its partitions over and goes on anchoring and indexing them. At the end every
//! event is found by search exactly once, every log passes `callproof-verify log`, and the
//! splits rebuilt from the logs by `callproof-processor reindex` answer the same search.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use callproof_schemas::{CallEvent, EventKind};
use callproof_tests::broker::{self, free_port};
use callproof_tests::issuer::TestIssuer;
use callproof_tests::process::{Service, binary, wait_for_ok};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

use crate::events::{call, now_micros};

const N_PARTITIONS: i32 = 4;
/// Three events each: 3,000 events.
const N_CALLS: usize = 1_000;
/// Calls produced at once; the stream pauses briefly between chunks.
const CHUNK_CALLS: usize = 50;
/// The stream stops after this many chunks until the kill (which also waits until every
/// partition is searchable), so that events come after it...
const CHUNKS_BEFORE_KILL: usize = 10;
/// ...and after this many until the survivor owns every partition, so that it has new events
/// of each to anchor and index.
const CHUNKS_BEFORE_TAKEOVER: usize = 18;
/// Generous: the machine may be busy with other tests; nothing here is a timing assertion.
const DEADLINE: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processors_one_killed_every_event_searchable_once_and_rebuilt_alike() {
    let kafka = broker::bootstrap();
    let topic = broker::unique_name("scale-calls");
    broker::create_topic(&kafka, &topic, N_PARTITIONS)
        .await
        .unwrap();
    broker::create_topic(&kafka, &format!("{topic}-siem"), 1)
        .await
        .unwrap();
    let issuer = TestIssuer::start().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let deployment = Deployment::new(work.path(), &kafka, &topic, &issuer.url);

    // 1. Two processors in one group, each with its own scratch directory and metrics port.
    //    a joins first, alone, so it leads the group; then b joins and they share the
    //    partitions (Tansu takes a few seconds to bring the second member in).
    let mut a = deployment.start_processor("processor-a");
    wait_until(&mut [&mut a], "a owns every partition", |[a]| {
        owned(a).len() == N_PARTITIONS as usize
    })
    .await;
    let mut b = deployment.start_processor("processor-b");
    wait_until(
        &mut [&mut a, &mut b],
        "a and b share the partitions",
        |[a, b]| {
            let (owned_a, owned_b) = (owned(a), owned(b));
            !owned_a.is_empty()
                && !owned_b.is_empty()
                && owned_a.len() + owned_b.len() == N_PARTITIONS as usize
        },
    )
    .await;

    // 2. The evidence API, with its own split cache, reading the same store.
    let evidence_port = free_port().unwrap();
    let mut evidence = deployment.start_evidence("evidence", evidence_port).await;
    let auditor = Auditor {
        base: format!("http://127.0.0.1:{evidence_port}"),
        http: reqwest::Client::new(),
        token: issuer.token("ana-auditor", &["auditor"]),
    };

    // 3. The stream, in the background, held at two points (see the constants).
    let calls = calls(N_CALLS);
    let expected: BTreeSet<String> = calls.iter().map(|event| event.event_id.clone()).collect();
    assert_eq!(expected.len(), calls.len());
    let (reached_tx, reached_rx) = tokio::sync::oneshot::channel();
    let (killed_tx, killed_rx) = tokio::sync::oneshot::channel::<()>();
    let (taken_over_tx, taken_over_rx) = tokio::sync::oneshot::channel::<()>();
    let producing = {
        let kafka = kafka.clone();
        let topic = topic.clone();
        tokio::spawn(async move {
            let producer: FutureProducer = ClientConfig::new()
                .set("bootstrap.servers", &kafka)
                .set("acks", "all")
                .set("linger.ms", "5")
                .create()
                .unwrap();
            let mut reached = Some(reached_tx);
            let mut killed = Some(killed_rx);
            let mut taken_over = Some(taken_over_rx);
            for (chunk, events) in calls.chunks(CHUNK_CALLS * 3).enumerate() {
                if chunk == CHUNKS_BEFORE_KILL {
                    let _ = reached.take().map(|reached| reached.send(()));
                    if let Some(killed) = killed.take() {
                        let _ = killed.await;
                    }
                }
                if chunk == CHUNKS_BEFORE_TAKEOVER
                    && let Some(taken_over) = taken_over.take()
                {
                    let _ = taken_over.await;
                }
                produce(&producer, &topic, events).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // 4. Every partition becomes searchable through the evidence API while the stream runs.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let searchable = auditor.searchable().await;
        if searchable.len() == N_PARTITIONS as usize && searchable.values().all(|&size| size > 0) {
            break;
        }
        assert!(
            evidence.is_running() && Instant::now() < deadline,
            "not every partition became searchable: {searchable:?}\n{}",
            evidence.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 5. SIGKILL processor b as soon as the stream reaches its middle.
    reached_rx.await.unwrap();
    let taken = owned(&b);
    assert!(!taken.is_empty(), "b owns nothing to take over");
    let rebalances_before_kill = rebalances(&a);
    b.kill();
    let logged_at_kill = deployment.log_sizes();
    eprintln!("SIGKILL of b, which owned {taken:?}; logs then: {logged_at_kill:?}");
    killed_tx.send(()).unwrap();

    // 6. b leaves the group once it has missed `session.timeout.ms` of heartbeats, and a
    //    rebalance follows.
    wait_until(&mut [&mut a], "the group evicts b", |[a]| {
        rebalances(a) > rebalances_before_kill
    })
    .await;
    if owned(&a).len() < N_PARTITIONS as usize {
        // Tansu 0.6 evicts b on a's heartbeat but keeps the group's assignment (tansu-broker
        // 0.6.0, `Inner<Formed>::heartbeat` removes the member without re-forming the group),
        // so a rejoins with its own partitions only and b's wait for a member to join or
        // leave. Apache Kafka hands them to a at once. A third processor c (local directories
        // of its own) joins and leaves cleanly: the group re-forms with a alone.
        eprintln!("the broker left b's partitions unassigned; c joins and leaves");
        let mut c = deployment.start_processor("processor-c");
        wait_until(&mut [&mut a, &mut c], "c joins the group", |[a, c]| {
            !owned(c).is_empty() && owned(a).len() + owned(c).len() == N_PARTITIONS as usize
        })
        .await;
        c.stop().await;
    }
    wait_until(&mut [&mut a], "a owns every partition", |[a]| {
        owned(a).len() == N_PARTITIONS as usize
    })
    .await;
    // The rest of the stream, which only a is left to anchor and index.
    let logged_at_takeover = deployment.log_sizes();
    taken_over_tx.send(()).unwrap();
    producing.await.unwrap();

    // 7. Everything is logged and searchable: the searchable sizes in the search answers reach
    //    every log's size, and the logs hold as many entries as events were produced.
    let deadline = Instant::now() + DEADLINE;
    let logged = loop {
        let logged = deployment.log_sizes();
        let searchable = auditor.searchable().await;
        if logged.values().sum::<u64>() >= expected.len() as u64 && searchable == logged {
            break logged;
        }
        assert!(
            a.is_running() && evidence.is_running() && Instant::now() < deadline,
            "not everything became searchable: logged {logged:?}, searchable {searchable:?}\n\
             {}\nevidence API:\n{}",
            a.log_tail(),
            evidence.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(
        logged.values().sum::<u64>(),
        expected.len() as u64,
        "the logs hold more entries than events were produced: {logged:?}"
    );
    // The survivor anchored and indexed b's partitions: they grew after it took them over,
    // and are searchable to their end (checked just above).
    for partition in &taken {
        let before = logged_at_takeover.get(partition).copied().unwrap_or(0);
        assert!(
            logged[partition] > before
                && before >= logged_at_kill.get(partition).copied().unwrap_or(0),
            "partition {partition} did not grow after a took it over: {logged_at_kill:?} at \
             the kill, {logged_at_takeover:?} at the takeover, then {logged:?}"
        );
    }
    let hits = auditor.all_hits().await;
    assert_found_once(&hits, &expected, &logged);

    // 8. Every partition's log passes the auditor's offline check.
    a.kill();
    for partition in 0..N_PARTITIONS {
        let output = Command::new(binary("callproof-verify"))
            .args(["log", "--quiet", "--key"])
            .arg(work.path().join("verifier.key"))
            .arg(deployment.store.join("logs").join(partition.to_string()))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "callproof-verify log of partition {partition}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    // 9. The splits rebuilt from the logs alone, searched by a new evidence API with a new
    //    cache, answer the same hits.
    evidence.kill();
    let reindex_config =
        deployment.write_config("reindex", free_port().unwrap(), free_port().unwrap());
    let output = Command::new(binary("callproof-processor"))
        .arg("--config")
        .arg(&reindex_config)
        .arg("reindex")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "reindex: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Only the rebuilt splits are left to search (the earlier ones are marked for deletion),
    // so the answers below come from them.
    for (partition, size) in &logged {
        let live = deployment.live_splits(*partition);
        assert!(
            live.len() == 1 && live[0].starts_with(&format!("{:020}-{size:020}-", 0)),
            "partition {partition}: after reindex the splits to search are {live:?}, not the one \
             rebuilt over its {size} entries"
        );
    }
    let rebuilt_port = free_port().unwrap();
    let rebuilt_evidence = deployment
        .start_evidence("evidence-rebuilt", rebuilt_port)
        .await;
    let rebuilt_auditor = Auditor {
        base: format!("http://127.0.0.1:{rebuilt_port}"),
        ..auditor
    };
    assert_eq!(rebuilt_auditor.searchable().await, logged);
    let rebuilt_hits = rebuilt_auditor.all_hits().await;
    assert_eq!(
        rebuilt_hits.len(),
        hits.len(),
        "the rebuilt splits answer another number of hits"
    );
    assert_eq!(
        rebuilt_hits.iter().collect::<BTreeSet<_>>(),
        hits.iter().collect::<BTreeSet<_>>(),
        "the rebuilt splits answer other hits"
    );
    drop(rebuilt_evidence);
}

/// What identifies a hit: the event, and the log position it was found at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Hit {
    event_id: String,
    partition: i32,
    log_index: u64,
}

/// Every produced event is found exactly once, no other is, and each at a distinct position
/// within its partition's log.
fn assert_found_once(hits: &[Hit], expected: &BTreeSet<String>, logged: &BTreeMap<i32, u64>) {
    let mut found: HashMap<&str, usize> = HashMap::new();
    for hit in hits {
        *found.entry(hit.event_id.as_str()).or_default() += 1;
        assert!(
            hit.log_index < logged.get(&hit.partition).copied().unwrap_or(0),
            "hit {hit:?} is beyond its partition's log {logged:?}"
        );
    }
    let repeated: Vec<_> = found.iter().filter(|&(_, &count)| count > 1).collect();
    assert!(
        repeated.is_empty(),
        "{} events found more than once, e.g. {:?}",
        repeated.len(),
        repeated.first()
    );
    let missing: Vec<_> = expected
        .iter()
        .filter(|id| !found.contains_key(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} events never found, e.g. {:?}",
        missing.len(),
        expected.len(),
        missing.first()
    );
    let unexpected: Vec<_> = found.keys().filter(|id| !expected.contains(**id)).collect();
    assert!(
        unexpected.is_empty(),
        "events found that were never produced: {unexpected:?}"
    );
    let positions: BTreeSet<(i32, u64)> = hits
        .iter()
        .map(|hit| (hit.partition, hit.log_index))
        .collect();
    assert_eq!(positions.len(), hits.len(), "two hits at one log position");
    assert_eq!(hits.len(), expected.len());
}

/// The deployment file's values, and the store every process shares.
struct Deployment {
    dir: PathBuf,
    store: PathBuf,
    kafka: String,
    topic: String,
    issuer_url: String,
}

impl Deployment {
    fn new(dir: &Path, kafka: &str, topic: &str, issuer_url: &str) -> Deployment {
        let keygen = Command::new(binary("callproof-processor"))
            .args(["keygen", "--name", "scale.test/log", "--out"])
            .arg(dir.join("log.key"))
            .output()
            .unwrap();
        assert!(keygen.status.success(), "{keygen:?}");
        std::fs::write(dir.join("verifier.key"), &keygen.stdout).unwrap();
        let store = dir.join("store");
        std::fs::create_dir(&store).unwrap();
        Deployment {
            dir: dir.to_path_buf(),
            store,
            kafka: kafka.to_string(),
            topic: topic.to_string(),
            issuer_url: issuer_url.to_string(),
        }
    }

    /// The deployment file of process `name`: the shared store and broker, and local
    /// directories (`<name>-scratch`, `<name>-cache`) of its own.
    fn write_config(&self, name: &str, metrics_port: u16, evidence_port: u16) -> PathBuf {
        let path = self.dir.join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                r#"
[oidc]
issuer = "{issuer}"
audiences = ["callproof"]

[kafka]
brokers = "{kafka}"
calls_topic = "{topic}"
siem_topic = "{topic}-siem"

[kafka.properties]
# A SIGKILLed member leaves the group once it misses this much of heartbeats.
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"

[processor]
group_id = "{topic}-processors"
batch_max_events = 500
batch_max_wait_ms = 100
metrics_listen = "127.0.0.1:{metrics_port}"

[storage]
url = "file://{store}"

[log]
signing_key_file = "{dir}/log.key"

[index]
scratch_dir = "{dir}/{name}-scratch"
split_interval_ms = 200
writer_memory_mb = 20
merge_factor = 4
gc_grace_secs = 30

[evidence]
listen = "127.0.0.1:{evidence_port}"
auditor_groups = ["auditor"]
verifier_key_file = "{dir}/verifier.key"
index_cache_dir = "{dir}/{name}-cache"
index_refresh_ms = 300
"#,
                issuer = self.issuer_url,
                kafka = self.kafka,
                topic = self.topic,
                store = self.store.display(),
                dir = self.dir.display(),
            ),
        )
        .unwrap();
        path
    }

    /// The processor binary, logging JSON lines (read by [`owned`]).
    fn start_processor(&self, name: &str) -> Processor {
        let config = self.write_config(name, free_port().unwrap(), free_port().unwrap());
        let log = self.dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary("callproof-processor"))
            .arg("--json-logs")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        Processor {
            name: name.to_string(),
            child,
            log,
        }
    }

    async fn start_evidence(&self, name: &str, port: u16) -> Service {
        let config = self.write_config(name, free_port().unwrap(), port);
        let mut evidence = Service::start(
            name,
            &binary("callproof-evidence"),
            &["--config", config.to_str().unwrap()],
            &self.dir,
        )
        .unwrap();
        let deadline = Instant::now() + DEADLINE;
        while let Err(error) = wait_for_ok(
            &format!("http://127.0.0.1:{port}/healthz"),
            Duration::from_secs(1),
        )
        .await
        {
            assert!(
                evidence.is_running() && Instant::now() < deadline,
                "the evidence API did not start: {error}\n{}",
                evidence.log_text()
            );
        }
        evidence
    }

    /// Each partition's log size, from its checkpoint in the store (its second line).
    fn log_sizes(&self) -> BTreeMap<i32, u64> {
        (0..N_PARTITIONS)
            .filter_map(|partition| {
                let checkpoint = std::fs::read_to_string(
                    self.store
                        .join("logs")
                        .join(partition.to_string())
                        .join("checkpoint"),
                )
                .ok()?;
                Some((partition, checkpoint.lines().nth(1)?.parse().ok()?))
            })
            .collect()
    }

    /// The names of a partition's published splits not marked for deletion
    /// (`index/<p>/published/` less `index/<p>/deleted/`, as `docs/deployment.md` lays them out).
    fn live_splits(&self, partition: i32) -> Vec<String> {
        let names = |marker: &str| -> BTreeSet<String> {
            std::fs::read_dir(
                self.store
                    .join("index")
                    .join(partition.to_string())
                    .join(marker),
            )
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect()
        };
        let deleted = names("deleted");
        names("published")
            .into_iter()
            .filter(|name| !deleted.contains(name))
            .collect()
    }
}

/// A processor process: SIGKILLed when dropped.
struct Processor {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Processor {
    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What the processor logged: JSON lines, one record each.
    fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The end of its log, for failure messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("{} ({}):\n{tail}", self.name, self.log.display())
    }

    /// SIGKILL: no chance to finish anything.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit (the processor leaves the group).
    async fn stop(&mut self) {
        let signal = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(signal.success());
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{status}\n{}", self.log_tail());
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Processor {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The partitions a processor owns now, from its log: opened, and not closed since.
fn owned(processor: &Processor) -> BTreeSet<i32> {
    let mut owned = BTreeSet::new();
    for record in processor.records() {
        let fields = &record["fields"];
        let Some(partition) = fields["partition"].as_i64() else {
            continue;
        };
        match fields["message"].as_str() {
            Some("partition opened") => owned.insert(partition as i32),
            Some("partition closed") => owned.remove(&(partition as i32)),
            _ => false,
        };
    }
    owned
}

/// How many assignments the processor has received (one per rebalance it took part in).
fn rebalances(processor: &Processor) -> usize {
    processor
        .records()
        .iter()
        .filter(|record| record["fields"]["message"] == "partitions assigned")
        .count()
}

/// Polls `done` over the processors until it holds; fails, with their logs, if one of them
/// exits or the deadline passes.
async fn wait_until<const N: usize>(
    processors: &mut [&mut Processor; N],
    what: &str,
    done: impl Fn(&[&mut Processor; N]) -> bool,
) {
    let deadline = Instant::now() + DEADLINE;
    while !done(processors) {
        let running = processors
            .iter_mut()
            .all(|processor| processor.is_running());
        if !running || Instant::now() > deadline {
            let logs: Vec<String> = processors
                .iter()
                .map(|processor| processor.log_tail())
                .collect();
            let owners: Vec<String> = processors
                .iter()
                .map(|processor| format!("{} owns {:?}", processor.name, owned(processor)))
                .collect();
            panic!(
                "waited in vain until {what} ({}; {})\n{}",
                if running {
                    "deadline passed"
                } else {
                    "a processor exited"
                },
                owners.join(", "),
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An auditor's client of an evidence API.
struct Auditor {
    base: String,
    http: reqwest::Client,
    token: String,
}

impl Auditor {
    async fn search(&self, query: &str) -> Value {
        let response = self
            .http
            .get(format!("{}/v1/search?{query}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "/v1/search?{query}: {status} {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// How far each partition is searchable, as the search answers say.
    async fn searchable(&self) -> BTreeMap<i32, u64> {
        let answer = self.search("limit=1").await;
        answer["searchable"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(partition, size)| (partition.parse().unwrap(), size.as_u64().unwrap()))
            .collect()
    }

    /// Every hit, following the cursors page by page.
    async fn all_hits(&self) -> Vec<Hit> {
        let mut hits = Vec::new();
        let mut query = "limit=1000".to_string();
        loop {
            let page = self.search(&query).await;
            for hit in page["hits"].as_array().unwrap() {
                hits.push(Hit {
                    event_id: hit["event_id"].as_str().unwrap().to_string(),
                    partition: hit["partition"].as_i64().unwrap() as i32,
                    log_index: hit["log_index"].as_u64().unwrap(),
                });
            }
            match page["next_cursor"].as_str() {
                Some(cursor) => query = format!("limit=1000&cursor={cursor}"),
                None => return hits,
            }
        }
    }
}

/// `n_calls` calls of three events each (received, forwarded, completed), a millisecond apart,
/// every call with an id of its own, so that the keys spread the calls over the partitions.
fn calls(n_calls: usize) -> Vec<CallEvent> {
    let start = now_micros();
    let kinds = [
        EventKind::CallReceived,
        EventKind::CallForwarded,
        EventKind::CallCompleted,
    ];
    (0..n_calls)
        .flat_map(|n| {
            let call_id = format!("scale-call-{n}-{}", uuid::Uuid::new_v4().simple());
            call(&call_id, start + (n * kinds.len()) as i64 * 1_000, &kinds)
        })
        .collect()
}

async fn produce(producer: &FutureProducer, topic: &str, events: &[CallEvent]) {
    let payloads: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|event| {
            (
                event.call_id.clone(),
                callproof_schemas::encode(event).unwrap(),
            )
        })
        .collect();
    // Queued all at once (send_result does not wait), then every delivery awaited.
    let deliveries: Vec<_> = payloads
        .iter()
        .map(|(key, payload)| {
            producer
                .send_result(FutureRecord::to(topic).key(key).payload(payload))
                .map_err(|(error, _)| error)
                .unwrap()
        })
        .collect();
    for delivery in deliveries {
        delivery.await.unwrap().map_err(|(error, _)| error).unwrap();
    }
}
