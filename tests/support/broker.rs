//! The Kafka-protocol broker the tests talk to: the one `.ci/run` (or `scripts/test`) started,
//! named by `KAFKA_BROKERS`, or a private Tansu for tests that must stop a broker.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// Bootstrap servers of the shared test broker.
pub fn bootstrap() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_string())
}

/// A name no other test uses, so tests can share one broker.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Creates a topic and waits until its partitions can be used.
pub async fn create_topic(brokers: &str, name: &str, partitions: i32) -> anyhow::Result<()> {
    create_topic_with(brokers, name, partitions, &[]).await
}

/// As [`create_topic`], through a client with more librdkafka `properties` (TLS, say).
pub async fn create_topic_with(
    brokers: &str,
    name: &str,
    partitions: i32,
    properties: &[(&str, String)],
) -> anyhow::Result<()> {
    let client = client_config(brokers, properties);
    let admin: AdminClient<DefaultClientContext> = client
        .create()
        .context("cannot create the Kafka admin client")?;
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .with_context(|| format!("cannot create topic {name}"))?;
    for result in results {
        if let Err((topic, code)) = result
            && code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists
        {
            bail!("cannot create topic {topic}: {code}");
        }
    }
    let name = name.to_string();
    tokio::task::spawn_blocking(move || wait_for_partitions(client, &name, partitions)).await?
}

fn client_config(brokers: &str, properties: &[(&str, String)]) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", brokers);
    for (key, value) in properties {
        client.set(*key, value);
    }
    client
}

fn wait_for_partitions(client: ClientConfig, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let consumer: BaseConsumer = client.create()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
        let ready = metadata.topics().iter().any(|found| {
            found.error().is_none() && found.partitions().len() == partitions as usize
        });
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("topic {topic} has no {partitions} partitions after 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A message read back from a topic.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// Reads a topic from the beginning with a consumer of its own (a fresh group), until `expected`
/// messages arrived or `timeout` passed. Independent of the code under test.
pub fn consume(
    brokers: &str,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Consumed>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique_name("test-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let deadline = Instant::now() + timeout;
    let mut messages = Vec::new();
    while messages.len() < expected && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => messages.push(Consumed {
                partition: message.partition(),
                offset: message.offset(),
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            }),
            Some(Err(error)) => tracing_like_warn(&format!("consumer error: {error}")),
            None => {}
        }
    }
    Ok(messages)
}

fn tracing_like_warn(message: &str) {
    eprintln!("[test harness] {message}");
}

/// A Tansu broker of the test's own, on a free loopback port, for tests that stop the broker.
pub struct PrivateBroker {
    pub bootstrap: String,
    child: Option<Child>,
}

impl PrivateBroker {
    pub fn start() -> anyhow::Result<PrivateBroker> {
        let port = free_port()?;
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new("tansu")
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start `tansu` (is it installed? .ci/run installs it)")?;
        let broker = PrivateBroker {
            bootstrap: format!("127.0.0.1:{port}"),
            child: Some(child),
        };
        crate::process::wait_for_port(port, Duration::from_secs(20))?;
        Ok(broker)
    }

    /// Kills the broker; its data (in memory) is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
