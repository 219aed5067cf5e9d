//! The test harness: the real broker (`KAFKA_BROKERS`), topics of our own, deployments in
//! temporary directories, the real binary as a child process, and readers of what it wrote.

pub mod events;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callproof_evidence_format::store::log_prefix;
use callproof_evidence_format::store::read_entries;
use callproof_evidence_format::{index_schema, split};
use callproof_schemas::CallEvent;
use callproof_tlog::note::{NoteSigner, NoteVerifier};
use callproof_tlog::store::LogReader;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_string())
}

pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

pub async fn create_topic(name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .expect("create topics");
    for result in results {
        result.expect("topic created");
    }
}

pub fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer")
}

/// Produces events (key = call id, as the gateway does) and waits for every ack.
pub async fn produce(producer: &FutureProducer, topic: &str, events: &[CallEvent]) {
    let payloads: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|event| {
            (
                event.call_id.clone(),
                callproof_schemas::encode(event).expect("encode"),
            )
        })
        .collect();
    let sends = payloads.iter().map(|(key, payload)| {
        producer.send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(30),
        )
    });
    for result in futures::future::join_all(sends).await {
        result.expect("delivered");
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("free port")
}

/// One deployment: a topic, a store, an index, a key, and config files.
pub struct Deployment {
    pub dir: tempfile::TempDir,
    pub topic: String,
    pub siem_topic: String,
    pub group: String,
    pub verifier: NoteVerifier,
}

impl Deployment {
    pub async fn new(partitions: i32) -> Deployment {
        let dir = tempfile::tempdir().expect("tempdir");
        let topic = unique_name("test-calls");
        let siem_topic = format!("{topic}-siem");
        create_topic(&topic, partitions).await;
        create_topic(&siem_topic, 1).await;
        let (signer_key, verifier_key) = NoteSigner::generate("test.callproof/log").expect("key");
        std::fs::write(dir.path().join("log.key"), format!("{signer_key}\n")).expect("key file");
        Deployment {
            verifier: verifier_key.parse().expect("verifier"),
            group: unique_name("test-group"),
            siem_topic,
            topic,
            dir,
        }
    }

    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The indexer's local scratch directory (the splits are in the store, under `index/`).
    pub fn index_dir(&self) -> PathBuf {
        self.dir.path().join("index-scratch")
    }

    /// Where the index splits are: `index/` in the store.
    pub fn splits_dir(&self) -> PathBuf {
        self.store_dir().join("index")
    }

    /// The deployment file; `extra` is appended (e.g. `[[masking.custom]]`).
    pub fn config_text(&self, group: &str, metrics_port: u16, extra: &str) -> String {
        self.config_text_with(group, metrics_port, "", extra)
    }

    /// The deployment file with more `[kafka.properties]` lines (`"key" = "value"`).
    pub fn config_text_with(
        &self,
        group: &str,
        metrics_port: u16,
        kafka_properties: &str,
        extra: &str,
    ) -> String {
        format!(
            r#"
[kafka]
brokers = "{brokers}"
calls_topic = "{topic}"
siem_topic = "{siem}"

[kafka.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
{kafka_properties}

[processor]
group_id = "{group}"
batch_max_events = 500
batch_max_wait_ms = 100
metrics_listen = "127.0.0.1:{metrics_port}"

[storage]
url = "file://{store}"

[log]
signing_key_file = "{key}"

[index]
scratch_dir = "{index}"
split_interval_ms = 200
writer_memory_mb = 20
gc_grace_secs = 60
{extra}
"#,
            brokers = brokers(),
            topic = self.topic,
            siem = self.siem_topic,
            group = group,
            store = self.store_dir().display(),
            key = self.dir.path().join("log.key").display(),
            index = self.index_dir().display(),
        )
    }

    /// Writes a deployment file in the deployment's group with more `[kafka.properties]`;
    /// returns it and its metrics port.
    pub fn write_config_with(
        &self,
        name: &str,
        kafka_properties: &str,
        extra: &str,
    ) -> (PathBuf, u16) {
        let path = self.dir.path().join(name);
        let port = free_port();
        std::fs::write(
            &path,
            self.config_text_with(&self.group, port, kafka_properties, extra),
        )
        .expect("config");
        (path, port)
    }

    pub fn write_config(&self, name: &str, extra: &str) -> PathBuf {
        self.write_config_in_group(name, &self.group, extra)
    }

    pub fn write_config_in_group(&self, name: &str, group: &str, extra: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, self.config_text(group, free_port(), extra)).expect("config");
        path
    }

    pub fn config(&self, extra: &str) -> callproof_config::Config {
        callproof_config::Config::from_toml(
            &self.config_text(&self.group, free_port(), extra),
            "test.toml",
            callproof_config::Service::Processor,
        )
        .expect("config")
    }

    pub fn store(&self) -> Arc<dyn ObjectStore> {
        std::fs::create_dir_all(self.store_dir()).expect("store dir");
        Arc::new(LocalFileSystem::new_with_prefix(self.store_dir()).expect("store"))
    }

    /// Every log's entries, resolved, by partition.
    pub async fn read_logs(&self) -> BTreeMap<i32, Vec<Value>> {
        let mut logs = BTreeMap::new();
        let Ok(partitions) = std::fs::read_dir(self.store_dir().join("logs")) else {
            return logs;
        };
        let store = self.store();
        for partition in partitions.flatten() {
            let Some(partition) = partition.file_name().to_str().and_then(|n| n.parse().ok())
            else {
                continue;
            };
            let reader =
                LogReader::new(store.clone(), log_prefix(partition), self.verifier.clone());
            let size = reader
                .checkpoint()
                .await
                .expect("checkpoint")
                .checkpoint
                .size;
            let entries = read_entries(&reader, &store, partition, 0, size, size)
                .await
                .expect("entries");
            logs.insert(partition, entries);
        }
        logs
    }

    /// Sum of the checkpoint sizes of every log (0 before any).
    pub async fn total_logged(&self) -> u64 {
        let Ok(partitions) = std::fs::read_dir(self.store_dir().join("logs")) else {
            return 0;
        };
        let store = self.store();
        let mut total = 0;
        for partition in partitions.flatten() {
            let Some(partition) = partition.file_name().to_str().and_then(|n| n.parse().ok())
            else {
                continue;
            };
            let reader =
                LogReader::new(store.clone(), log_prefix(partition), self.verifier.clone());
            if let Ok(checkpoint) = reader.checkpoint().await {
                total += checkpoint.checkpoint.size;
            }
        }
        total
    }

    pub async fn wait_for_logged(&self, expected: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let total = self.total_logged().await;
            if total >= expected {
                assert_eq!(total, expected, "more entries than events");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {total} of {expected} events logged"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the published splits hold `expected` documents (the indexer follows the
    /// log on an interval).
    pub async fn wait_for_indexed(&self, expected: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let indexed = self.search("*").len();
            if indexed >= expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {indexed} of {expected} events indexed"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `callproof-verify log` for every partition's log (the same audit, in process).
    pub fn audit_all(&self) {
        for partition in std::fs::read_dir(self.store_dir().join("logs"))
            .expect("logs")
            .flatten()
        {
            let report = callproof_tlog::audit::audit_log_dir(
                &partition.path(),
                &self.verifier,
                &mut |_, _| {},
            )
            .unwrap_or_else(|error| panic!("audit of {}: {error}", partition.path().display()));
            assert!(report.checkpoint.size > 0);
        }
    }

    /// Searches the splits readers search now (each partition's cover), opened where they are
    /// in the local store.
    pub fn search(&self, query: &str) -> Vec<index_schema::Hit> {
        let store = self.store();
        let listing = futures::executor::block_on(split::list_index(&store)).expect("list splits");
        let mut indexes = Vec::new();
        for (partition, listing) in listing {
            for split_id in listing.cover().0 {
                let path = self.store_dir().join(split_id.object_path().as_ref());
                indexes.push((
                    partition,
                    split::open_split(&path, &split_id).expect("split").0,
                ));
            }
        }
        index_schema::search(&indexes, query, 1_000_000).expect("search")
    }

    /// How many entries of each partition's log are searchable (the end of its cover).
    pub fn searchable(&self) -> BTreeMap<i32, u64> {
        let store = self.store();
        futures::executor::block_on(split::list_index(&store))
            .expect("list splits")
            .into_iter()
            .map(|(partition, listing)| (partition, listing.cover().1))
            .collect()
    }
}

/// Checks that every event id appears exactly once across the logs, each log in offset
/// order with an entry for every message, and the index holds each entry once.
pub fn assert_exactly_once(logs: &BTreeMap<i32, Vec<Value>>, expected_ids: &[String]) {
    let mut seen = std::collections::HashMap::new();
    for (partition, entries) in logs {
        let mut previous: Option<i64> = None;
        for (index, entry) in entries.iter().enumerate() {
            let offset = entry
                .pointer("/source/kafka/offset")
                .and_then(Value::as_i64)
                .expect("offset");
            assert_eq!(
                entry
                    .pointer("/source/kafka/partition")
                    .and_then(Value::as_i64),
                Some(i64::from(*partition))
            );
            if let Some(previous) = previous {
                assert_eq!(
                    offset,
                    previous + 1,
                    "partition {partition} entry {index}: offsets not consecutive"
                );
            } else {
                assert_eq!(
                    offset, 0,
                    "partition {partition} does not start at offset 0"
                );
            }
            previous = Some(offset);
            let id = entry
                .pointer("/event/event_id")
                .and_then(Value::as_str)
                .expect("event id")
                .to_string();
            *seen.entry(id).or_insert(0) += 1;
        }
    }
    for id in expected_ids {
        assert_eq!(
            seen.get(id),
            Some(&1),
            "event {id} logged {:?} times",
            seen.get(id)
        );
    }
    assert_eq!(
        seen.len(),
        expected_ids.len(),
        "unexpected events in the logs"
    );
}

/// The real binary as a child process.
pub struct ProcessorProcess {
    pub child: Child,
}

pub fn spawn_processor(config: &Path, stderr_path: &Path, rust_log: &str) -> ProcessorProcess {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(stderr_path)
        .expect("stderr file");
    let child = Command::new(env!("CARGO_BIN_EXE_callproof-processor"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn processor");
    ProcessorProcess { child }
}

impl ProcessorProcess {
    /// SIGKILL: no chance to finish anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "processor exited with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        panic!("processor did not stop within 30 s of SIGTERM");
    }
}

impl Drop for ProcessorProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads every record of a topic with an independent client (Python confluent-kafka): at
/// least `min_records`, then until none has come for 3 s. JSON values, in partition and offset
/// order. (Tansu 0.6's high watermark is the base offset of the last batch plus one, not the
/// end of the partition, so it cannot say when everything was read.)
pub fn consume_all_with_python(topic: &str, min_records: usize) -> Vec<Value> {
    read_topic_with_python(topic, min_records)
        .lines()
        .map(|line| serde_json::from_str(line).expect("record is JSON"))
        .collect()
}

/// What [`consume_all_with_python`] reads, as the raw text of the records, one per line: for
/// tests that search the bytes on the wire rather than the parsed values.
pub fn read_topic_with_python(topic: &str, min_records: usize) -> String {
    let script = r#"
import sys, time, uuid
from confluent_kafka import Consumer, TopicPartition
brokers, topic, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
consumer = Consumer({"bootstrap.servers": brokers, "group.id": "reader-" + uuid.uuid4().hex,
                     "auto.offset.reset": "earliest", "enable.auto.commit": False})
partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
seen, last, deadline = 0, time.time(), time.time() + 120
while time.time() < deadline and (seen < expected or time.time() - last < 3):
    message = consumer.poll(0.5)
    if message is None or message.error():
        continue
    sys.stdout.write(message.value().decode() + "\n")
    seen, last = seen + 1, time.time()
consumer.close()
if seen < expected:
    sys.exit("read %d records of %s, expected at least %d" % (seen, topic, expected))
"#;
    let output = Command::new("python3")
        .args(["-c", script, &brokers(), topic, &min_records.to_string()])
        .output()
        .expect("python3 with confluent_kafka");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The processor's `/metrics` page.
pub fn scrape_metrics(port: u16) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics port");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The value of the first sample of `/metrics` whose line starts with `prefix`.
pub fn metric_value(page: &str, prefix: &str) -> Option<f64> {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}
