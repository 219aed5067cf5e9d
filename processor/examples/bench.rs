//! Throughput and lag of the processor on the real broker, with a consume-only baseline.
//!
//! ```sh
//! bench/processor.sh                      # builds release, 100,000 events, 4 partitions
//! bench/evidence.sh                       # the same with --searchable (issue 19's figures)
//! target/release/examples/bench --events 50000 --partitions 4 --index elsewhere
//! ```
//!
//! 1. produces N call events (request and response bodies of ~1 KiB each, with an e-mail, a
//!    phone number and a card number in each body) to a new topic;
//! 2. baseline: a plain rdkafka consumer reads the same N messages (consume only);
//! 3. throughput: the real `callproof-processor` binary drains the N-event backlog (mask, log,
//!    SIEM, and the index splits when `[index] in_process`); events/s from its start to the
//!    checkpoint covering the last event. `--index both` (the default) runs it twice on the
//!    same backlog, each with a store and a consumer group of its own: first with
//!    `in_process = false` (anchoring only: the indexing would run elsewhere), then with
//!    `in_process = true`;
//! 4. lag: events produced at `--lag-rate` per second for `--lag-seconds` while the last
//!    processor runs; lag = checkpoint time − produce time per event (checkpoints polled every
//!    5 ms);
//! 5. with `--searchable` (and an in-process run last): `callproof-evidence` (its token from
//!    `callproof-demo-issuer`, both found next to the processor binary, default settings:
//!    `split_interval_ms` 1,000, `index_refresh_ms` 2,000) over the same store, polled every
//!    25 ms for the searchable sizes its search answers carry; during the lag phase, latency =
//!    the first poll whose answer says the event's partition is searchable past its log
//!    index − the time the broker acknowledged the event. It includes the batch and the
//!    checkpoint, the indexer's split interval, building, uploading and publishing the split,
//!    the API's listing interval and download, and up to 25 ms of polling.
//!
//! Beside each rate it reports the cores used (CPU seconds per wall second, from `/proc`) by
//! the consumer or the processor and by a local Tansu broker: whether a phase was bound by
//! CPU or by waiting.

#[path = "support/cpu.rs"]
mod cpu;
#[path = "../tests/support/events.rs"]
#[allow(dead_code)]
mod events;

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use cpu::cpu_seconds;
use rand::SeedableRng;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message as _};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Bytes of each request and response body.
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    /// Events per second during the lag phase.
    #[arg(long, default_value_t = 5_000)]
    lag_rate: u64,
    #[arg(long, default_value_t = 10)]
    lag_seconds: u64,
    /// Where the index splits are built: by the processor (`in-process`), not by it
    /// (`elsewhere`: `in_process = false`, anchoring only), or one run of each (`both`).
    #[arg(long, value_enum, default_value = "both")]
    index: IndexMode,
    /// Also measure produce → searchable through `callproof-evidence` in the lag phase.
    #[arg(long)]
    searchable: bool,
    /// The processor binary (default: next to this example's directory).
    #[arg(long)]
    binary: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum IndexMode {
    InProcess,
    Elsewhere,
    Both,
}

fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_string())
}

/// The processor's backlog run: rates from its start and after its first checkpoint, cores.
struct Backlog {
    in_process: bool,
    rate: f64,
    steady_rate: f64,
    processor_cores: Option<f64>,
    broker_cores: Option<f64>,
}

/// A running `callproof-processor` with a store, a scratch directory and a group of its own.
struct Processor {
    dir: tempfile::TempDir,
    store: PathBuf,
    config: PathBuf,
    child: Child,
}

impl Processor {
    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Other work on the machine shows here: the rates are only as good as the cores were free.
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let binary = match args.binary.clone() {
        Some(binary) => binary,
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .map(|dir| dir.join("callproof-processor"))
            .context("cannot locate callproof-processor")?,
    };
    let modes: &[bool] = match args.index {
        IndexMode::InProcess => &[true],
        IndexMode::Elsewhere => &[false],
        IndexMode::Both => &[false, true],
    };
    if args.searchable && args.index == IndexMode::Elsewhere {
        bail!("--searchable needs an in-process run: nothing indexes with --index elsewhere");
    }
    let run = format!("{:x}", rand::random::<u64>());
    let topic = format!("bench-calls-{run}");
    let siem_topic = format!("bench-siem-{run}");
    create_topics(&[(&topic, args.partitions), (&siem_topic, args.partitions)]).await?;

    eprintln!(
        "producing {} events to {topic} ({} partitions)",
        args.events, args.partitions
    );
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "2000000")
        .create()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let started = Instant::now();
    let mut payload_bytes = 0usize;
    for chunk_start in (0..args.events).step_by(10_000) {
        let chunk_end = (chunk_start + 10_000).min(args.events);
        let encoded: Vec<(String, Vec<u8>)> = (chunk_start..chunk_end)
            .map(|sequence| {
                let event = events::call_event(&mut rng, sequence as u64, args.body_bytes);
                Ok((event.call_id.clone(), callproof_schemas::encode(&event)?))
            })
            .collect::<anyhow::Result<_>>()?;
        payload_bytes += encoded
            .iter()
            .map(|(_, payload)| payload.len())
            .sum::<usize>();
        let sends = encoded.iter().map(|(key, payload)| {
            producer.send(
                FutureRecord::to(&topic).key(key).payload(payload),
                Duration::from_secs(60),
            )
        });
        for result in futures::future::join_all(sends).await {
            result.map_err(|(error, _)| error)?;
        }
        eprintln!("  produced {chunk_end}");
    }
    let produce_rate = args.events as f64 / started.elapsed().as_secs_f64();
    eprintln!(
        "produced at {produce_rate:.0} events/s, {:.0} bytes per event",
        payload_bytes as f64 / args.events as f64
    );

    // Baseline: consume only, same topic, same client library.
    let broker = broker_pid();
    let (consumer_cpu, broker_cpu) = (
        CpuMeter::start(Some(std::process::id())),
        CpuMeter::start(broker),
    );
    let baseline_rate = {
        let topic = topic.clone();
        let n_events = args.events;
        tokio::task::spawn_blocking(move || consume_only(&topic, n_events)).await??
    };
    let baseline_cores = (consumer_cpu.cores(), broker_cpu.cores());
    eprintln!("baseline consume-only: {baseline_rate:.0} events/s");

    // The processor on the backlog, once per index mode; the last one stays for the lag phase.
    let (signer_key, verifier_key) =
        callproof_tlog::note::NoteSigner::generate("bench.callproof/log")?;
    let mut backlogs = Vec::new();
    let mut processor = None;
    for &in_process in modes {
        if let Some(previous) = processor.take() {
            Processor::stop(previous);
        }
        let started = Instant::now();
        let mut started_processor = start_processor(
            &binary,
            &run,
            &topic,
            &siem_topic,
            &signer_key,
            &verifier_key,
            in_process,
        )?;
        let backlog = drain_backlog(&mut started_processor, started, broker, &args, in_process)?;
        backlogs.push((backlog, started));
        processor = Some(started_processor);
    }
    let processor = processor.context("no processor run")?;
    let last_started = backlogs.last().map(|(_, started)| *started);

    // The evidence API over the last run's store, once the backlog is searchable.
    let mut evidence = None;
    let mut backlog_searchable_after = None;
    if args.searchable {
        let started_evidence = Evidence::start(&binary, &processor)?;
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let searchable: u64 = started_evidence.searchable()?.values().sum();
            if searchable >= args.events as u64 {
                break;
            }
            if Instant::now() > deadline {
                bail!("the backlog was not searchable within 300 s ({searchable} events)");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        backlog_searchable_after = last_started.map(|started| started.elapsed());
        evidence = Some(started_evidence);
    }

    // Lag at a steady rate.
    let lag = measure_lag(
        &producer,
        &topic,
        &processor.store,
        evidence.as_ref(),
        &args,
    )
    .await?;
    if let Some(evidence) = evidence {
        evidence.stop();
    }
    Processor::stop(processor);

    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| events | {} ({} partitions, {}-byte bodies, {:.0}-byte messages) |",
        args.events,
        args.partitions,
        args.body_bytes,
        payload_bytes as f64 / args.events as f64
    );
    println!(
        "| load average (1, 5, 15 min) before / after | {} / {} |",
        load_before
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("| baseline consume-only | {baseline_rate:.0} events/s |");
    println!(
        "| CPU during the baseline (cores) | consumer {}, broker {} |",
        cores(baseline_cores.0),
        cores(baseline_cores.1)
    );
    for (backlog, _) in &backlogs {
        let mode = if backlog.in_process {
            "index in process"
        } else {
            "index elsewhere"
        };
        println!(
            "| processor, {mode} (backlog, from process start) | {:.0} events/s ({:.2} of the baseline) |",
            backlog.rate,
            backlog.rate / baseline_rate
        );
        println!(
            "| processor, {mode} (after first checkpoint) | {:.0} events/s |",
            backlog.steady_rate
        );
        println!(
            "| CPU, {mode} (cores) | processor {}, broker {} |",
            cores(backlog.processor_cores),
            cores(backlog.broker_cores)
        );
    }
    if let Some(after) = backlog_searchable_after {
        println!(
            "| backlog searchable through the evidence API | {:.1} s after the processor started |",
            after.as_secs_f64()
        );
    }
    println!(
        "| lag produce → checkpoint at {} events/s | {} |",
        args.lag_rate,
        lag.checkpoint.describe()
    );
    if let Some(searchable) = lag.searchable {
        println!(
            "| produce ack → searchable through the evidence API at {} events/s | {} |",
            args.lag_rate,
            searchable.describe()
        );
    }
    Ok(())
}

/// Writes the deployment file of one processor run and starts the binary.
fn start_processor(
    binary: &Path,
    run: &str,
    topic: &str,
    siem_topic: &str,
    signer_key: &str,
    verifier_key: &str,
    in_process: bool,
) -> anyhow::Result<Processor> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("log.key"), format!("{signer_key}\n"))?;
    std::fs::write(dir.path().join("verifier.key"), format!("{verifier_key}\n"))?;
    let store = dir.path().join("store");
    let metrics_port = free_port()?;
    let config = format!(
        r#"
[kafka]
brokers = "{brokers}"
calls_topic = "{topic}"
siem_topic = "{siem_topic}"
[processor]
group_id = "bench-{run}-{in_process}"
batch_max_events = 10000
batch_max_wait_ms = 100
metrics_listen = "127.0.0.1:{metrics_port}"
[storage]
url = "file://{store}"
[log]
signing_key_file = "{key}"
[index]
in_process = {in_process}
scratch_dir = "{index}"
writer_memory_mb = 128
"#,
        brokers = brokers(),
        store = store.display(),
        key = dir.path().join("log.key").display(),
        index = dir.path().join("index").display(),
    );
    let config_path = dir.path().join("bench.toml");
    std::fs::write(&config_path, config)?;
    let child = Command::new(binary)
        .arg("--config")
        .arg(&config_path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    Ok(Processor {
        dir,
        store,
        config: config_path,
        child,
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until the processor's checkpoints cover the whole backlog.
fn drain_backlog(
    processor: &mut Processor,
    started: Instant,
    broker: Option<u32>,
    args: &Args,
    in_process: bool,
) -> anyhow::Result<Backlog> {
    let broker_cpu = CpuMeter::start(broker);
    let mut first_at = None;
    let mut first_size = 0;
    let mut processor_cpu_seconds = None;
    loop {
        let total: u64 = checkpoint_sizes(&processor.store, args.partitions)
            .values()
            .sum();
        if total > 0 && first_at.is_none() {
            first_at = Some(started.elapsed());
            first_size = total;
        }
        if total >= args.events as u64 {
            break;
        }
        // The processor's CPU time is read while it still runs, as late as possible.
        processor_cpu_seconds = cpu_seconds(processor.child.id()).or(processor_cpu_seconds);
        if started.elapsed() > Duration::from_secs(600) {
            let _ = processor.child.kill();
            bail!(
                "the processor logged {total} of {} events in 600 s",
                args.events
            );
        }
        if let Some(status) = processor.child.try_wait()? {
            bail!("the processor exited with {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = started.elapsed();
    let rate = args.events as f64 / elapsed.as_secs_f64();
    let steady_rate = first_at
        .map(|first| (args.events as u64 - first_size) as f64 / (elapsed - first).as_secs_f64())
        .unwrap_or(rate);
    eprintln!(
        "processor (index in process: {in_process}): {} events in {:.2} s = {rate:.0} events/s (from its start; {steady_rate:.0}/s after its first checkpoint)",
        args.events,
        elapsed.as_secs_f64()
    );
    Ok(Backlog {
        in_process,
        rate,
        steady_rate,
        processor_cores: processor_cpu_seconds.map(|cpu| cpu / elapsed.as_secs_f64()),
        broker_cores: broker_cpu.cores(),
    })
}

/// `callproof-evidence` over a processor run's store, with `callproof-demo-issuer` for an
/// auditor's token; both binaries next to the processor's.
struct Evidence {
    _issuer: KillOnDrop,
    api: KillOnDrop,
    port: u16,
    token: String,
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Evidence {
    fn start(processor_binary: &Path, processor: &Processor) -> anyhow::Result<Evidence> {
        let bin_dir = processor_binary
            .parent()
            .context("the processor binary has no directory")?;
        let dir = processor.dir.path();
        let issuer_port = free_port()?;
        let issuer = KillOnDrop(
            Command::new(bin_dir.join("callproof-demo-issuer"))
                .args(["--listen", &format!("127.0.0.1:{issuer_port}")])
                .arg("--data-dir")
                .arg(dir.join("issuer"))
                .env("RUST_LOG", "error")
                .stdout(Stdio::null())
                .spawn()
                .context("cannot start callproof-demo-issuer")?,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let token = loop {
            match http_get(issuer_port, "/token?sub=bench-auditor&groups=auditor", None) {
                Ok(token) => break token.trim().to_string(),
                Err(error) if Instant::now() > deadline => {
                    return Err(error.context("the demo issuer did not start"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let port = free_port()?;
        let config = std::fs::read_to_string(&processor.config)?;
        let config_path = dir.join("evidence.toml");
        std::fs::write(
            &config_path,
            format!(
                r#"{config}
[oidc]
issuer = "http://127.0.0.1:{issuer_port}"
audiences = ["callproof"]
[evidence]
listen = "127.0.0.1:{port}"
auditor_groups = ["auditor"]
verifier_key_file = "{verifier}"
index_cache_dir = "{cache}"
"#,
                verifier = dir.join("verifier.key").display(),
                cache = dir.join("evidence-cache").display(),
            ),
        )?;
        let api = KillOnDrop(
            Command::new(bin_dir.join("callproof-evidence"))
                .arg("--config")
                .arg(&config_path)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .context("cannot start callproof-evidence")?,
        );
        let evidence = Evidence {
            _issuer: issuer,
            api,
            port,
            token,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(error) = evidence.searchable() {
            if Instant::now() > deadline {
                return Err(error.context("the evidence API did not start"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(evidence)
    }

    fn searchable(&self) -> anyhow::Result<HashMap<i32, u64>> {
        searchable_sizes(self.port, &self.token)
    }

    fn stop(mut self) {
        let _ = self.api.0.kill();
    }
}

/// The searchable size of each partition, as a search answer of the evidence API says.
fn searchable_sizes(port: u16, token: &str) -> anyhow::Result<HashMap<i32, u64>> {
    let body = http_get(port, "/v1/search?limit=1", Some(token))?;
    let answer: serde_json::Value = serde_json::from_str(&body)?;
    answer["searchable"]
        .as_object()
        .context("no `searchable` in the search answer")?
        .iter()
        .map(|(partition, size)| {
            Ok((
                partition.parse()?,
                size.as_u64().context("a searchable size is not a number")?,
            ))
        })
        .collect()
}

/// A plain HTTP/1.1 GET on 127.0.0.1 (this crate has no HTTP client); the body of a 200.
fn http_get(port: u16, path: &str, token: Option<&str>) -> anyhow::Result<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let authorization = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{authorization}Connection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no end of the response head")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        bail!("GET {path}: chunked answers are not read here");
    }
    Ok(body.to_string())
}

/// The pid of the local `tansu` serving the port of `$KAFKA_BROKERS` (or the only `tansu`
/// here), so that the CPU the broker spends can be reported beside the processor's.
fn broker_pid() -> Option<u32> {
    let port = brokers().rsplit(':').next().map(|port| format!(":{port}"));
    let tansus: Vec<(u32, String)> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            let cmdline = std::fs::read_to_string(entry.path().join("cmdline")).ok()?;
            (comm.trim() == "tansu").then_some((pid, cmdline))
        })
        .collect();
    let serving: Vec<u32> = tansus
        .iter()
        .filter(|(_, cmdline)| {
            port.as_ref()
                .is_some_and(|port| cmdline.split('\0').any(|arg| arg.ends_with(port.as_str())))
        })
        .map(|(pid, _)| *pid)
        .collect();
    match (serving.as_slice(), tansus.as_slice()) {
        ([pid], _) => Some(*pid),
        ([], [(pid, _)]) => Some(*pid),
        _ => None,
    }
}

/// Cores a process used over a phase: CPU seconds over wall seconds (`None` for a process
/// not found or gone).
struct CpuMeter {
    started: Instant,
    pid: Option<u32>,
    cpu_at_start: Option<f64>,
}

impl CpuMeter {
    fn start(pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            started: Instant::now(),
            pid,
            cpu_at_start: pid.and_then(cpu_seconds),
        }
    }

    fn cores(&self) -> Option<f64> {
        let wall = self.started.elapsed().as_secs_f64();
        Some((cpu_seconds(self.pid?)? - self.cpu_at_start?) / wall)
    }
}

fn cores(cores: Option<f64>) -> String {
    cores.map_or_else(|| "unknown".to_string(), |cores| format!("{cores:.2}"))
}

async fn create_topics(topics: &[(&str, i32)]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    for result in admin.create_topics(&new, &AdminOptions::new()).await? {
        result.map_err(|(topic, code)| anyhow::anyhow!("cannot create {topic}: {code}"))?;
    }
    Ok(())
}

fn consume_only(topic: &str, n_events: usize) -> anyhow::Result<f64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("baseline-{topic}"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("queued.min.messages", "20000")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .set("fetch.wait.max.ms", "50")
        .create()?;
    consumer.subscribe(&[topic])?;
    let started = Instant::now();
    let mut seen = 0usize;
    let mut checksum = 0u64;
    while seen < n_events {
        if started.elapsed() > Duration::from_secs(600) {
            bail!("baseline consumed {seen} of {n_events} in 600 s");
        }
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message?;
            checksum = checksum.wrapping_add(message.payload().map_or(0, |p| p.len() as u64));
            seen += 1;
        }
    }
    let rate = n_events as f64 / started.elapsed().as_secs_f64();
    eprintln!("  (baseline read {checksum} payload bytes)");
    Ok(rate)
}

/// Checkpoint size per partition, read straight from the files (line 2 of the note).
fn checkpoint_sizes(store: &Path, partitions: i32) -> HashMap<i32, u64> {
    (0..partitions)
        .filter_map(|partition| {
            let text =
                std::fs::read_to_string(store.join(format!("logs/{partition}/checkpoint"))).ok()?;
            let size = text.lines().nth(1)?.parse().ok()?;
            Some((partition, size))
        })
        .collect()
}

/// Latency quantiles of a lag phase.
struct Latency {
    p50: f64,
    p99: f64,
    max: f64,
    events: usize,
}

impl Latency {
    fn of(mut millis: Vec<f64>) -> Latency {
        millis.sort_by(f64::total_cmp);
        let quantile = |q: f64| {
            millis
                .get(((millis.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        Latency {
            p50: quantile(0.5),
            p99: quantile(0.99),
            max: quantile(1.0),
            events: millis.len(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} events)",
            self.p50, self.p99, self.max, self.events
        )
    }
}

struct Lag {
    /// From the producer's send call to the checkpoint covering the event.
    checkpoint: Latency,
    /// From the broker's acknowledgement to the evidence API's answer saying it is searchable.
    searchable: Option<Latency>,
}

/// When each partition's size grew, as polled every `every`: (partition, old size, new size,
/// when seen), until `stop`.
type Growth = Vec<(i32, u64, u64, Instant)>;

fn poll_sizes(
    sizes: impl Fn() -> HashMap<i32, u64> + Send + 'static,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Growth> {
    std::thread::spawn(move || {
        let mut seen = sizes();
        let mut grown = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            for (partition, size) in sizes() {
                let before = seen.get(&partition).copied().unwrap_or(0);
                if size > before {
                    grown.push((partition, before, size, now));
                    seen.insert(partition, size);
                }
            }
            std::thread::sleep(every);
        }
        grown
    })
}

/// Milliseconds from each event's instant to when its (partition, log index) was seen.
fn latencies(grown: &Growth, at: &HashMap<(i32, u64), Instant>) -> Latency {
    let mut millis = Vec::new();
    for (partition, from, to, seen) in grown {
        for index in *from..*to {
            if let Some(at) = at.get(&(*partition, index)) {
                millis.push(seen.saturating_duration_since(*at).as_secs_f64() * 1000.0);
            }
        }
    }
    Latency::of(millis)
}

/// Produces at `lag_rate` for `lag_seconds`; the latencies to the checkpoint and, with an
/// evidence API, to searchable.
async fn measure_lag(
    producer: &FutureProducer,
    topic: &str,
    store: &Path,
    evidence: Option<&Evidence>,
    args: &Args,
) -> anyhow::Result<Lag> {
    // (partition, log index) -> produce instant. Log index = offset, since every message of
    // a partition has exactly one entry and the logs start at offset 0.
    let total = (args.lag_rate * args.lag_seconds) as usize;
    let stop_polling = Arc::new(AtomicBool::new(false));
    let checkpoint_poller = {
        let store = store.to_path_buf();
        let partitions = args.partitions;
        poll_sizes(
            move || checkpoint_sizes(&store, partitions),
            Duration::from_millis(5),
            stop_polling.clone(),
        )
    };
    let searchable_poller = evidence.map(|evidence| {
        let (port, token) = (evidence.port, evidence.token.clone());
        let client = EvidenceClient { port, token };
        poll_sizes(
            move || client.searchable().unwrap_or_default(),
            Duration::from_millis(25),
            stop_polling.clone(),
        )
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let started = Instant::now();
    let tick = Duration::from_millis(10);
    let per_tick = (args.lag_rate / 100).max(1) as usize;
    let mut produced = 0usize;
    let mut deliveries = Vec::new();
    while produced < total {
        let due = started + tick * (produced / per_tick) as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        for _ in 0..per_tick.min(total - produced) {
            let event = events::call_event(&mut rng, produced as u64, args.body_bytes);
            let payload = callproof_schemas::encode(&event)?;
            let at = Instant::now();
            let delivery = producer.send_result(
                FutureRecord::to(topic)
                    .key(&event.call_id)
                    .payload(&payload),
            );
            match delivery {
                // The acknowledgement's instant is taken by a task of its own as it arrives.
                Ok(delivery) => deliveries.push(tokio::spawn(async move {
                    let delivered = delivery.await;
                    (at, Instant::now(), delivered)
                })),
                Err((error, _)) => bail!("cannot produce: {error}"),
            }
            produced += 1;
        }
    }
    let mut sent = HashMap::new();
    let mut acked = HashMap::new();
    for delivery in deliveries {
        let (at, acked_at, delivered) = delivery.await?;
        let delivered = delivered
            .map_err(|_| anyhow::anyhow!("delivery cancelled"))?
            .map_err(|(error, _)| error)?;
        let key = (delivered.partition, delivered.offset as u64);
        sent.insert(key, at);
        acked.insert(key, acked_at);
    }
    // Wait until everything is checkpointed (and searchable).
    let deadline = Instant::now() + Duration::from_secs(120);
    let expected: u64 = args.events as u64 + total as u64;
    loop {
        let logged: u64 = checkpoint_sizes(store, args.partitions).values().sum();
        let searchable = match evidence {
            Some(evidence) => evidence.searchable()?.values().sum(),
            None => expected,
        };
        if logged >= expected && searchable >= expected {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "lag phase: {logged} logged and {searchable} searchable of {expected} after 120 s"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop_polling.store(true, Ordering::Relaxed);
    let checkpointed = checkpoint_poller
        .join()
        .map_err(|_| anyhow::anyhow!("poller panicked"))?;
    let searchable = match searchable_poller {
        Some(poller) => Some(latencies(
            &poller
                .join()
                .map_err(|_| anyhow::anyhow!("poller panicked"))?,
            &acked,
        )),
        None => None,
    };
    Ok(Lag {
        checkpoint: latencies(&checkpointed, &sent),
        searchable,
    })
}

/// The evidence API's address and token, for the poller's thread.
struct EvidenceClient {
    port: u16,
    token: String,
}

impl EvidenceClient {
    fn searchable(&self) -> anyhow::Result<HashMap<i32, u64>> {
        searchable_sizes(self.port, &self.token)
    }
}
