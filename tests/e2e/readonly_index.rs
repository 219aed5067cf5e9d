//! The evidence API over a read-only object store: the processor binary logs and indexes a few
//! calls (the index splits go to the store, beside the logs), the evidence API binary runs in a
//! mount namespace of its own where the store is a read-only bind mount and its split cache a
//! directory of its own, finds the calls and replays them, and sees the splits the processor
//! publishes later. Nothing is shared but the store, and the evidence API never writes to it.
//!
//! Needs `unshare` and `mount` (util-linux) and root, as in CI: the mount is made inside the
//! namespace and disappears with it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use callproof_schemas::{CallEvent, EventKind};
use callproof_tests::broker::{self, PrivateBroker, free_port};
use callproof_tests::issuer::TestIssuer;
use callproof_tests::process::{Service, binary, wait_for_ok};
use callproof_tests::{logged_entries, published_entries};

use crate::events::{call, now_micros};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

/// The exit status of the namespace's shell when a file could be created on the read-only
/// mount: the test would prove nothing, so it stops there.
const WRITABLE_MOUNT: i32 = 97;

/// Regression (of the local index this replaced): the evidence API did not start over a
/// read-only index (tantivy's reader opened `.tantivy-meta.lock` for writing).
#[tokio::test]
async fn evidence_api_serves_and_follows_the_index_in_a_store_mounted_read_only() {
    require_namespace_tools();
    let kafka = PrivateBroker::start().unwrap();
    let topic = broker::unique_name("ro-index-calls");
    broker::create_topic(&kafka.bootstrap, &topic, 2)
        .await
        .unwrap();
    broker::create_topic(&kafka.bootstrap, &format!("{topic}-siem"), 1)
        .await
        .unwrap();
    let issuer = TestIssuer::start().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let keygen = Command::new(binary("callproof-processor"))
        .args(["keygen", "--name", "ro-index.test/log", "--out"])
        .arg(dir.join("log.key"))
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{keygen:?}");
    std::fs::write(dir.join("verifier.key"), &keygen.stdout).unwrap();
    let deployment = Deployment {
        dir: dir.to_path_buf(),
        issuer_url: issuer.url.clone(),
        brokers: kafka.bootstrap.clone(),
        topic: topic.clone(),
        evidence_port: free_port().unwrap(),
    };
    let index = dir.join("store");
    let read_only_index = dir.join("ro-store");
    std::fs::create_dir(&read_only_index).unwrap();

    // 1. The processor logs and indexes two calls, then stops cleanly, so the evidence API
    //    opens a store nobody is writing.
    let start = now_micros();
    let call_ok = call(
        "call-ok",
        start,
        &[
            EventKind::CallReceived,
            EventKind::CallForwarded,
            EventKind::CallCompleted,
        ],
    );
    let call_denied = call("call-denied", start + 10_000, &[EventKind::CallDenied]);
    // One call per partition, so that both indexes exist before the evidence API starts and
    // the later call can only reach it through a reload, not as a new partition.
    produce(&kafka.bootstrap, &topic, 0, &call_ok).await;
    produce(&kafka.bootstrap, &topic, 1, &call_denied).await;
    let first_calls = [call_ok, call_denied].concat();
    let mut processor = Processor::start(&deployment, "processor-1");
    processor
        .wait_for_log_entries(&dir.join("store"), first_calls.len() as u64)
        .await;
    processor
        .wait_for_published(&dir.join("store"), first_calls.len() as u64)
        .await;
    processor.stop().await;

    // 2. The evidence API, in its own mount namespace, over a read-only bind mount of the store.
    let evidence_config =
        deployment.write_config("evidence.toml", &read_only_index, free_port().unwrap());
    let script = format!(
        "set -e
mount --bind '{index}' '{ro}'
mount -o remount,ro,bind '{ro}'
if touch '{ro}/.write-probe' 2>/dev/null; then
  echo 'the read-only bind mount of the store is writable' >&2
  exit {WRITABLE_MOUNT}
fi
echo $$ > '{pid_file}'
exec '{evidence}' --config '{config}'",
        index = index.display(),
        ro = read_only_index.display(),
        evidence = binary("callproof-evidence").display(),
        config = evidence_config.display(),
        pid_file = dir.join("evidence.pid").display(),
    );
    let mut evidence = Service::start(
        "evidence",
        Path::new("unshare"),
        &["--mount", "sh", "-c", &script],
        dir,
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{}", deployment.evidence_port);
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(error) = wait_for_ok(&format!("{base}/healthz"), Duration::from_secs(1)).await {
        assert!(
            evidence.is_running() && Instant::now() < deadline,
            "the evidence API did not start over the read-only store: {error}\n{}",
            evidence.log_text()
        );
    }
    // The process serving is the evidence API (the shell wrote its pid, then exec'd it), and
    // in its namespace the store is mounted read-only.
    let evidence_pid: u32 = std::fs::read_to_string(dir.join("evidence.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let command_line = std::fs::read(format!("/proc/{evidence_pid}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&command_line).contains("callproof-evidence"),
        "process {evidence_pid} is not the evidence API"
    );
    assert_read_only_mount(evidence_pid, &read_only_index);
    assert!(
        !index.join(".write-probe").exists(),
        "the probe file reached the store"
    );

    let auditor = Auditor {
        base: base.clone(),
        http: reqwest::Client::new(),
        token: issuer.token("ana-auditor", &["auditor"]),
    };
    let hits = auditor
        .wait_for_hits("", first_calls.len(), &evidence)
        .await;
    let mut kinds: Vec<&str> = hits
        .iter()
        .map(|hit| hit["kind"].as_str().unwrap_or_default())
        .collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "call_completed",
            "call_denied",
            "call_forwarded",
            "call_received"
        ]
    );
    let denied = auditor
        .wait_for_hits("kind=call_denied", 1, &evidence)
        .await;
    assert_eq!(denied[0]["call_id"], "call-denied");
    assert_eq!(denied[0]["partition"], 1);
    auditor.assert_complete_timeline("call-ok", 3).await;
    auditor.assert_complete_timeline("call-denied", 1).await;

    // 3. The processor comes back and appends: the evidence API lists the splits it publishes
    //    through the read-only mount, without restarting.
    let later = call(
        "call-later",
        now_micros(),
        &[
            EventKind::CallReceived,
            EventKind::CallForwarded,
            EventKind::CallCompleted,
        ],
    );
    produce(&kafka.bootstrap, &topic, 0, &later).await;
    let processor = Processor::start(&deployment, "processor-2");
    let later_hits = auditor
        .wait_for_hits("call_id=call-later", later.len(), &evidence)
        .await;
    assert!(later_hits.iter().all(|hit| hit["partition"] == 0));
    auditor
        .wait_for_hits("", first_calls.len() + later.len(), &evidence)
        .await;
    auditor.assert_complete_timeline("call-later", 3).await;
    assert!(evidence.is_running(), "{}", evidence.log_text());
    drop(processor);

    // Nothing the evidence API did failed for want of writing.
    let log = evidence.log_text();
    assert!(!log.contains("Read-only file system"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
}

/// Fails, saying what is missing, when the test cannot make a read-only mount of its own.
fn require_namespace_tools() {
    for tool in ["unshare", "mount"] {
        if let Err(error) = Command::new(tool).arg("--version").output() {
            panic!(
                "`{tool}` is missing ({error}): this test runs the evidence API in a mount \
                 namespace over a read-only bind mount; install util-linux (Debian packages \
                 `util-linux` and `mount`)"
            );
        }
    }
    let probe = Command::new("unshare")
        .args(["--mount", "true"])
        .output()
        .unwrap();
    assert!(
        probe.status.success(),
        "`unshare --mount true` failed: {}\nthis test needs root (CAP_SYS_ADMIN) to make a mount \
         namespace, as in CI",
        String::from_utf8_lossy(&probe.stderr).trim()
    );
}

/// The deployment file's values shared by the processor and the evidence API.
struct Deployment {
    dir: PathBuf,
    issuer_url: String,
    brokers: String,
    topic: String,
    evidence_port: u16,
}

impl Deployment {
    /// One deployment file, with the store at `store` and the processor's metrics on
    /// `metrics_port`; each reader of the file has its own local directory.
    fn write_config(&self, name: &str, store: &Path, metrics_port: u16) -> PathBuf {
        let dir = &self.dir;
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!(
                r#"
[oidc]
issuer = "{issuer}"
audiences = ["callproof"]

[kafka]
brokers = "{brokers}"
calls_topic = "{topic}"
siem_topic = "{topic}-siem"

[processor]
group_id = "{topic}-processor"
batch_max_wait_ms = 100
metrics_listen = "127.0.0.1:{metrics_port}"
startup_timeout_ms = 10000

[storage]
url = "file://{store}"

[log]
signing_key_file = "{key}"

[index]
scratch_dir = "{scratch}"
split_interval_ms = 200

[evidence]
listen = "127.0.0.1:{evidence_port}"
auditor_groups = ["auditor"]
verifier_key_file = "{verifier}"
index_cache_dir = "{cache}"
index_refresh_ms = 300
"#,
                issuer = self.issuer_url,
                brokers = self.brokers,
                topic = self.topic,
                store = store.display(),
                key = dir.join("log.key").display(),
                scratch = dir.join(format!("scratch-{name}")).display(),
                cache = dir.join(format!("cache-{name}")).display(),
                evidence_port = self.evidence_port,
                verifier = dir.join("verifier.key").display(),
            ),
        )
        .unwrap();
        path
    }
}

/// The processor binary, stopped with SIGTERM (so it commits the index) or killed when dropped.
struct Processor {
    child: Child,
    log: PathBuf,
}

impl Processor {
    fn start(deployment: &Deployment, name: &str) -> Processor {
        let config = deployment.write_config(
            &format!("{name}.toml"),
            &deployment.dir.join("store"),
            free_port().unwrap(),
        );
        let log = deployment.dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary("callproof-processor"))
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        Processor { child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_for_log_entries(&mut self, store: &Path, expected: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while logged_entries(store) < expected {
            let exited = self.child.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "the events never reached the log ({exited:?})\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the published splits cover `expected` entries in all.
    async fn wait_for_published(&mut self, store: &Path, expected: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while published_entries(store) < expected {
            let exited = self.child.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "the events were never indexed ({exited:?})\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGTERM, then waits for a clean exit.
    async fn stop(&mut self) {
        let pid = self.child.id();
        let signal = Command::new("sh")
            .args(["-c", &format!("kill -TERM {pid}")])
            .status()
            .unwrap();
        assert!(signal.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{status}\n{}", self.log_text());
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the processor did not stop\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Processor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An auditor's client of the evidence API.
struct Auditor {
    base: String,
    http: reqwest::Client,
    token: String,
}

impl Auditor {
    async fn get(&self, path_and_query: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path_and_query}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Searches with `query` until exactly `expected` hits come back.
    async fn wait_for_hits(&self, query: &str, expected: usize, evidence: &Service) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = self.get(&format!("/v1/search?limit=100&{query}")).await;
            let hits = body["hits"].as_array().cloned().unwrap_or_default();
            if status == 200 && hits.len() == expected {
                return hits;
            }
            assert!(
                Instant::now() < deadline,
                "`/v1/search?{query}` answered {status} with {} of {expected} hits: {body}\n{}",
                hits.len(),
                evidence.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn assert_complete_timeline(&self, call_id: &str, n_events: usize) {
        let (status, timeline) = self.get(&format!("/v1/calls/{call_id}")).await;
        assert_eq!(status, 200, "{timeline}");
        assert_eq!(timeline["call_id"], call_id, "{timeline}");
        assert_eq!(timeline["complete"], true, "{timeline}");
        assert_eq!(
            timeline["events"].as_array().map(Vec::len),
            Some(n_events),
            "{timeline}"
        );
    }
}

/// Reads the process's own mount table and checks `mount_point` is mounted read-only there.
fn assert_read_only_mount(pid: u32, mount_point: &Path) {
    let mount_info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    // Fields: id, parent, major:minor, root, mount point, mount options, ... The last mount on
    // a point is the one in effect.
    let options = mount_info
        .lines()
        .rev()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            (fields.get(4) == Some(&mount_point.to_str().unwrap_or_default()))
                .then(|| fields.get(5).map(|options| options.to_string()))
                .flatten()
        })
        .unwrap_or_else(|| {
            panic!(
                "{} is not a mount point of process {pid}:\n{mount_info}",
                mount_point.display()
            )
        });
    assert!(
        options.split(',').any(|option| option == "ro"),
        "{} is mounted {options} for the evidence API, not ro",
        mount_point.display()
    );
    // The mount is the namespace's alone: this process sees a plain directory.
    let own = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !own.contains(&format!(" {} ", mount_point.display())),
        "the bind mount leaked out of the evidence API's namespace"
    );
}

async fn produce(brokers: &str, topic: &str, partition: i32, events: &[CallEvent]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .create()
        .unwrap();
    for event in events {
        let payload = callproof_schemas::encode(event).unwrap();
        producer
            .send(
                FutureRecord::to(topic)
                    .partition(partition)
                    .key(&event.call_id)
                    .payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(error, _)| error)
            .unwrap();
    }
}
