//! The floor under the gateway's latency: the two acknowledged publishes of a call and nothing
//! else. Each of `--concurrency` workers publishes, as a call through `/v1/functions` does,
//! `call_received` with `call_forwarded` and waits for the broker, then `call_completed` and
//! waits again; no HTTP, token, policy, masking or upstream. Same publisher, settings and
//! runtime size as the gateway, so `bench/gateway.sh` can say how much of what callproof adds
//! is the broker's acknowledgements and how much is the gateway.
//!
//! `KAFKA_BROKERS=... cargo bench -p callproof-ingress --bench acks -- --concurrency 16 --seconds 5`
//! (or `--config gateway.toml` for a gateway's own `[kafka]` and `[ingress]`) prints one line:
//! calls/s, p50 and p99 of a call in µs, calls, and this process's CPU per call in µs (the
//! publisher's, librdkafka's threads included).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callproof_config::{Config, IngressConfig, KafkaConfig, Service};
use callproof_ingress::events::{CallRecorder, EventPublisher};
use callproof_schemas::{EventKind, Principal, Request, Response};

struct Args {
    concurrency: usize,
    seconds: u64,
    config: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        concurrency: 1,
        seconds: 5,
        config: None,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let mut value = || given.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--concurrency" => args.concurrency = value()?.parse().map_err(|e| format!("{e}"))?,
            "--seconds" => args.seconds = value()?.parse().map_err(|e| format!("{e}"))?,
            "--config" => args.config = Some(PathBuf::from(value()?)),
            // cargo bench passes --bench to every harness-less bench.
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// User plus system CPU of this process, in clock ticks (/proc/self/stat fields 14 and 15).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    after_name
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|ticks| ticks.parse::<u64>().ok())
        .sum()
}

fn caller() -> Principal {
    Principal {
        issuer: "http://127.0.0.1/bench-issuer".into(),
        subject: "bench-1".into(),
        email: None,
        groups: vec!["support".into()],
        client_id: None,
        actor: None,
        authentication: None,
    }
}

/// One call's events, published as the gateway publishes them.
async fn call(publisher: &EventPublisher, principal: &Principal) {
    let mut call = CallRecorder::new(
        uuid::Uuid::now_v7().to_string(),
        "bench-acks",
        "lookup_customer",
    );
    call.principal = Some(principal.clone());
    let mut received = call.event(EventKind::CallReceived);
    received.request = Some(Request {
        method: "POST".into(),
        path: "/v1/functions/lookup_customer/invoke".into(),
        body: Some(r#"{"customer_id":42}"#.into()),
        body_bytes: 19,
        content_type: Some("application/json".into()),
    });
    let forwarded = call.event(EventKind::CallForwarded);
    publisher
        .publish(&[received, forwarded])
        .await
        .expect("the broker acknowledges call_received and call_forwarded");
    let mut completed = call.event(EventKind::CallCompleted);
    let answer = r#"{"customer_id":42,"name":"Ada Lovelace","status":"active","balance":1250}"#;
    completed.response = Some(Response {
        status: 200,
        body: Some(answer.into()),
        body_bytes: answer.len() as i64,
        latency_micros: 80,
    });
    publisher
        .publish(&[completed])
        .await
        .expect("the broker acknowledges call_completed");
}

fn main() {
    let args = parse_args().unwrap_or_else(|error| panic!("{error}"));
    // The gateway's own settings when given its file, so that the floor moves with them
    // (`bench/gateway.sh --kafka-property`, `--worker-threads`).
    let (kafka, ingress) = match &args.config {
        Some(path) => {
            let config = Config::load(path, Service::Ingress).unwrap_or_else(|e| panic!("{e}"));
            (config.kafka, config.ingress)
        }
        None => {
            let kafka = KafkaConfig {
                brokers: std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into()),
                ..KafkaConfig::default()
            };
            (kafka, IngressConfig::default())
        }
    };
    let runtime = callproof_ingress::runtime(&ingress).expect("a runtime");
    runtime.block_on(async move {
        let publisher = EventPublisher::new(&kafka, "bench-acks").expect("a producer");
        let principal = Arc::new(caller());
        for _ in 0..20 {
            call(&publisher, &principal).await;
        }
        let started = Instant::now();
        let deadline = started + Duration::from_secs(args.seconds);
        let cpu_before = cpu_ticks();
        let workers: Vec<_> = (0..args.concurrency)
            .map(|_| {
                let publisher = publisher.clone();
                let principal = principal.clone();
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    while Instant::now() < deadline {
                        let began = Instant::now();
                        call(&publisher, &principal).await;
                        latencies.push(began.elapsed().as_micros());
                    }
                    latencies
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for worker in workers {
            latencies.extend(worker.await.expect("a worker"));
        }
        let elapsed = started.elapsed().as_secs_f64();
        let cpu_micros = (cpu_ticks() - cpu_before) as f64 * 1e6 / clock_ticks_per_second();
        assert!(!latencies.is_empty(), "no call completed in {elapsed:.1} s");
        latencies.sort_unstable();
        let calls = latencies.len();
        println!(
            "{:.1} {} {} {} {:.1}",
            calls as f64 / elapsed,
            latencies[calls / 2],
            latencies[(calls * 99 / 100).min(calls - 1)],
            calls,
            cpu_micros / calls as f64
        );
        publisher.flush(Duration::from_secs(5));
    });
}

/// `getconf CLK_TCK`: 100 on every Linux this runs on, but asked rather than assumed.
fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|ticks| ticks.trim().parse().ok())
        .unwrap_or(100.0)
}
