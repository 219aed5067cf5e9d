//! Throughput and lag of the processor on the real broker, with a consume-only baseline.
//!
//! ```sh
//! bench/processor.sh                      # builds release, 100,000 events, 4 partitions
//! target/release/examples/bench --events 50000 --partitions 4 --lag-rate 5000
//! ```
//!
//! 1. produces N call events (request and response bodies of ~1 KiB each, with an e-mail, a
//!    phone number and a card number in each body) to a new topic;
//! 2. baseline: a plain rdkafka consumer reads the same N messages (consume only);
//! 3. throughput: the real `callproof-processor` binary drains the N-event backlog (mask, log,
//!    index, SIEM); events/s from its start to the checkpoint covering the last event;
//! 4. lag: events produced at `--lag-rate` per second for `--lag-seconds` while the processor
//!    runs; lag = checkpoint time − produce time per event (checkpoints polled every 5 ms).
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
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
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
    /// The processor binary (default: next to this example's directory).
    #[arg(long)]
    binary: Option<PathBuf>,
}

fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let binary = match args.binary.clone() {
        Some(binary) => binary,
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .map(|dir| dir.join("callproof-processor"))
            .context("cannot locate callproof-processor")?,
    };
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

    // The processor on the backlog.
    let dir = tempfile::tempdir()?;
    let (signer_key, _) = callproof_tlog::note::NoteSigner::generate("bench.callproof/log")?;
    std::fs::write(dir.path().join("log.key"), format!("{signer_key}\n"))?;
    let store = dir.path().join("store");
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = format!(
        r#"
[kafka]
brokers = "{brokers}"
calls_topic = "{topic}"
siem_topic = "{siem_topic}"
[processor]
group_id = "bench-{run}"
batch_max_events = 10000
batch_max_wait_ms = 100
metrics_listen = "127.0.0.1:{metrics_port}"
[storage]
url = "file://{store}"
[log]
signing_key_file = "{key}"
[index]
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
    let started = Instant::now();
    let broker_cpu = CpuMeter::start(broker);
    let mut child = Command::new(&binary)
        .arg("--config")
        .arg(&config_path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let mut first_at = None;
    let mut first_size = 0;
    let mut processor_cpu_seconds = None;
    loop {
        let total: u64 = checkpoint_sizes(&store, args.partitions).values().sum();
        if total > 0 && first_at.is_none() {
            first_at = Some(started.elapsed());
            first_size = total;
        }
        if total >= args.events as u64 {
            break;
        }
        // The processor's CPU time is read while it still runs, as late as possible.
        processor_cpu_seconds = cpu_seconds(child.id()).or(processor_cpu_seconds);
        if started.elapsed() > Duration::from_secs(600) {
            let _ = child.kill();
            bail!(
                "the processor logged {total} of {} events in 600 s",
                args.events
            );
        }
        if let Some(status) = child.try_wait()? {
            bail!("the processor exited with {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = started.elapsed();
    let broker_cores = broker_cpu.cores();
    let processor_cores = processor_cpu_seconds.map(|cpu| cpu / elapsed.as_secs_f64());
    let processor_rate = args.events as f64 / elapsed.as_secs_f64();
    let steady_rate = first_at
        .map(|first| (args.events as u64 - first_size) as f64 / (elapsed - first).as_secs_f64())
        .unwrap_or(processor_rate);
    eprintln!(
        "processor: {} events in {:.2} s = {processor_rate:.0} events/s (from its start; {steady_rate:.0}/s after its first checkpoint)",
        args.events,
        elapsed.as_secs_f64()
    );

    // Lag at a steady rate.
    let lag = measure_lag(&producer, &topic, &store, &args).await?;
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();

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
    println!("| baseline consume-only | {baseline_rate:.0} events/s |");
    println!("| processor (backlog, from process start) | {processor_rate:.0} events/s |");
    println!("| processor (after first checkpoint) | {steady_rate:.0} events/s |");
    println!(
        "| ratio processor / baseline | {:.2} |",
        processor_rate / baseline_rate
    );
    println!(
        "| CPU during the baseline (cores) | consumer {}, broker {} |",
        cores(baseline_cores.0),
        cores(baseline_cores.1)
    );
    println!(
        "| CPU during the backlog (cores) | processor {}, broker {} |",
        cores(processor_cores),
        cores(broker_cores)
    );
    println!(
        "| lag produce → checkpoint at {} events/s | p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} events) |",
        args.lag_rate, lag.0, lag.1, lag.2, lag.3
    );
    Ok(())
}

/// The broker's pid when exactly one `tansu` process runs here (the broker is local), so that
/// the CPU it spends can be reported beside the processor's.
fn broker_pid() -> Option<u32> {
    let mut found = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            (comm.trim() == "tansu").then_some(pid)
        });
    let pid = found.next()?;
    found.next().is_none().then_some(pid)
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

/// Produces at `lag_rate` for `lag_seconds`; returns (p50 ms, p99 ms, max ms, events).
async fn measure_lag(
    producer: &FutureProducer,
    topic: &str,
    store: &Path,
    args: &Args,
) -> anyhow::Result<(f64, f64, f64, usize)> {
    let base_sizes = checkpoint_sizes(store, args.partitions);
    // (partition, log index) -> produce instant. Log index = offset, since every message of
    // a partition has exactly one entry and the logs start at offset 0.
    let sent: Arc<Mutex<HashMap<(i32, u64), Instant>>> = Arc::default();
    let total = (args.lag_rate * args.lag_seconds) as usize;
    let stop_polling = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let store = store.to_path_buf();
        let partitions = args.partitions;
        let stop = stop_polling.clone();
        std::thread::spawn(move || {
            let mut seen = base_sizes;
            let mut checkpointed: Vec<(i32, u64, u64, Instant)> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let now = Instant::now();
                for (partition, size) in checkpoint_sizes(&store, partitions) {
                    let before = seen.get(&partition).copied().unwrap_or(0);
                    if size > before {
                        checkpointed.push((partition, before, size, now));
                        seen.insert(partition, size);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            checkpointed
        })
    };
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
                Ok(delivery) => deliveries.push((at, delivery)),
                Err((error, _)) => bail!("cannot produce: {error}"),
            }
            produced += 1;
        }
    }
    for (at, delivery) in deliveries {
        let delivered = delivery
            .await
            .map_err(|_| anyhow::anyhow!("delivery cancelled"))?
            .map_err(|(error, _)| error)?;
        sent.lock()
            .map_err(|_| anyhow::anyhow!("lock"))?
            .insert((delivered.partition, delivered.offset as u64), at);
    }
    // Wait until everything is checkpointed.
    let deadline = Instant::now() + Duration::from_secs(120);
    let expected: u64 = args.events as u64 + total as u64;
    while checkpoint_sizes(store, args.partitions)
        .values()
        .sum::<u64>()
        < expected
    {
        if Instant::now() > deadline {
            bail!("lag phase: events not checkpointed within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop_polling.store(true, std::sync::atomic::Ordering::Relaxed);
    let checkpointed = poller
        .join()
        .map_err(|_| anyhow::anyhow!("poller panicked"))?;
    let sent = sent.lock().map_err(|_| anyhow::anyhow!("lock"))?;
    let mut lags: Vec<f64> = Vec::new();
    for (partition, from, to, at) in checkpointed {
        for index in from..to {
            if let Some(produced_at) = sent.get(&(partition, index)) {
                lags.push(at.saturating_duration_since(*produced_at).as_secs_f64() * 1000.0);
            }
        }
    }
    lags.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        lags.get(((lags.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    Ok((quantile(0.5), quantile(0.99), quantile(1.0), lags.len()))
}
