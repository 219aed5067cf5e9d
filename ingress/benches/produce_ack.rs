//! Spike: acknowledged produce, rdkafka (as the gateway configures it) against krafka.
use std::time::{Duration, Instant};

fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
}

fn payload() -> Vec<u8> {
    (0..420u32).map(|i| (i % 251) as u8).collect()
}

trait Client: Send + Sync + 'static {
    fn send(&self, key: String) -> impl std::future::Future<Output = ()> + Send;
}

struct Rd(
    Vec<rdkafka::producer::FutureProducer>,
    String,
    std::sync::atomic::AtomicUsize,
);
impl Client for Rd {
    async fn send(&self, key: String) {
        let payload = payload();
        let record = rdkafka::producer::FutureRecord::to(&self.1)
            .key(&key)
            .payload(&payload);
        let i = self.2.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.0.len();
        self.0[i]
            .send(record, Duration::from_secs(5))
            .await
            .expect("rdkafka ack");
    }
}

async fn run<C: Client>(
    name: &str,
    client: std::sync::Arc<C>,
    conns: usize,
    secs: u64,
    broker_pid: &str,
) {
    // warm up
    for i in 0..50 {
        client.send(format!("warm-{i}")).await;
    }
    let cpu0 = cpu_ticks("self");
    let b0 = cpu_ticks(broker_pid);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for t in 0..conns {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let s = Instant::now();
                client.send(format!("call-{t}-{n}")).await;
                lat.push(s.elapsed().as_micros() as u32);
                n += 1;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = (cpu_ticks("self") - cpu0) as f64 * 10_000.0; // µs
    let bcpu = (cpu_ticks(broker_pid) - b0) as f64 * 10_000.0;
    all.sort_unstable();
    let n = all.len();
    println!(
        "{name:16} conns={conns:2} acks/s={:8.0} p50={:5}µs p99={:6}µs client_cpu/ack={:5.1}µs broker_cpu/ack={:5.1}µs",
        n as f64 / elapsed,
        all[n / 2],
        all[n * 99 / 100],
        cpu / n as f64,
        bcpu / n as f64
    );
}

fn main() {
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or("127.0.0.1:9092".into());
    let topic = std::env::var("TOPIC").unwrap_or("spike".into());
    let broker_pid = std::env::var("BROKER_PID").unwrap_or("self".into());
    let secs: u64 = std::env::var("SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let make = |n: usize, inflight: &str, linger: &str| {
            let producers = (0..n)
                .map(|_| {
                    let mut c = rdkafka::ClientConfig::new();
                    c.set("bootstrap.servers", &brokers)
                        .set("enable.idempotence", "true")
                        .set("acks", "all")
                        .set("linger.ms", linger)
                        .set("max.in.flight.requests.per.connection", inflight)
                        .set("compression.type", "lz4")
                        .set("message.timeout.ms", "5000");
                    c.create().unwrap()
                })
                .collect();
            std::sync::Arc::new(Rd(producers, topic.clone(), Default::default()))
        };
        for (n, inflight, linger) in [
            (1, "1", "0"),
            (1, "5", "0"),
            (2, "1", "0"),
            (4, "1", "0"),
            (1, "1", "1"),
            (1, "5", "1"),
        ] {
            let client = make(n, inflight, linger);
            for conns in [16usize, 64] {
                run(
                    &format!("p={n} if={inflight} l={linger}"),
                    client.clone(),
                    conns,
                    secs,
                    &broker_pid,
                )
                .await;
            }
        }
    });
}
