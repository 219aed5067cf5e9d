//! Call lifecycle events on Kafka.
//!
//! The gateway is fail-closed: a call goes on only after the broker has acknowledged its events
//! (`acks=all`, idempotent producer). Events of one call share the call id as key, so they land
//! in one partition in order. Many calls publish concurrently, and waiting for
//! acknowledgements does not serialise them: the producer batches without waiting (see
//! [`EventPublisher::new`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use callproof_config::KafkaConfig;
use callproof_schemas::{CallEvent, EventKind, Principal};
use futures::future::try_join_all;
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot encode the event: {0}")]
    Encode(#[from] callproof_schemas::EncodeError),
    #[error("the broker did not acknowledge the event: {0}")]
    Kafka(#[from] KafkaError),
    #[error("the broker did not acknowledge the event within {0:?}")]
    Timeout(Duration),
}

/// How much longer than `kafka.delivery_timeout_ms` a publish may take before the gateway gives
/// up on it: librdkafka looks for expired messages about once a second, so its own timeout
/// fires up to that late (observed: 4–10 s for a 3 s timeout with the broker down).
pub const DELIVERY_TIMEOUT_MARGIN: Duration = Duration::from_millis(1_000);

/// Publishes call events and knows whether the broker is reachable.
pub struct EventPublisher {
    producer: FutureProducer,
    topic: String,
    delivery_timeout: Duration,
    ready: AtomicBool,
}

impl EventPublisher {
    pub fn new(config: &KafkaConfig, instance_id: &str) -> Result<Arc<EventPublisher>, KafkaError> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set("client.id", format!("callproof-ingress-{instance_id}"))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Batching without a timer: an event leaves at once when no produce request is in
            // flight, and those that arrive during a request's round trip leave together in
            // the next one. An idle gateway then pays one broker round trip per
            // acknowledgement instead of `linger.ms` on top (2 ms cost 5 ms of the 6 ms added
            // per call), and a busy one still sends few large requests (bench/gateway.sh).
            .set("linger.ms", "0")
            .set("max.in.flight.requests.per.connection", "1")
            .set("compression.type", "lz4")
            .set("message.timeout.ms", config.delivery_timeout_ms.to_string());
        for (key, value) in &config.properties {
            client.set(key, value);
        }
        Ok(Arc::new(EventPublisher {
            producer: client.create()?,
            topic: config.calls_topic.clone(),
            delivery_timeout: Duration::from_millis(config.delivery_timeout_ms),
            ready: AtomicBool::new(false),
        }))
    }

    /// Publishes events of one call and returns once the broker has acknowledged all of them.
    /// They are sent together so they share one round trip; the idempotent producer keeps their
    /// order within the partition.
    pub async fn publish(&self, events: &[CallEvent]) -> Result<(), PublishError> {
        self.publish_at(events).await.map(|_| ())
    }

    /// As [`EventPublisher::publish`], returning where each event landed (partition, offset), so
    /// the caller can wait until its own consumer has read them back.
    pub async fn publish_at(&self, events: &[CallEvent]) -> Result<Vec<(i32, i64)>, PublishError> {
        let started = Instant::now();
        let encoded = events
            .iter()
            .map(|event| Ok((event.call_id.as_str(), callproof_schemas::encode(event)?)))
            .collect::<Result<Vec<_>, PublishError>>()?;
        let deliveries = encoded.iter().map(|(key, payload)| {
            let record = FutureRecord::to(&self.topic).key(*key).payload(payload);
            async move {
                self.producer
                    .send(record, Timeout::After(self.delivery_timeout))
                    .await
                    .map(|delivery| (delivery.partition, delivery.offset))
                    .map_err(|(error, _message)| error)
            }
        });
        // The caller is answered within the bound whatever librdkafka does: a message still
        // queued after it has not been acknowledged, so the call is refused either way.
        let bound = self.delivery_timeout + DELIVERY_TIMEOUT_MARGIN;
        let result = match tokio::time::timeout(bound, try_join_all(deliveries)).await {
            Ok(result) => result.map_err(PublishError::from),
            Err(_) => Err(PublishError::Timeout(bound)),
        };
        metrics::histogram!("callproof_ingress_event_publish_seconds")
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(positions) => Ok(positions),
            Err(error) => {
                metrics::counter!("callproof_ingress_event_publish_failures_total").increment(1);
                tracing::error!(%error, "the broker did not acknowledge call events");
                Err(error)
            }
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Probes the broker for the calls topic every `interval`, for `/readyz`.
    pub fn spawn_readiness_probe(self: &Arc<Self>, interval: Duration) {
        let publisher = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(strong) = publisher.upgrade() else {
                    return;
                };
                let probe = strong.clone();
                let reachable = tokio::task::spawn_blocking(move || {
                    probe
                        .producer
                        .client()
                        .fetch_metadata(Some(&probe.topic), Duration::from_secs(2))
                        .map(|metadata| {
                            metadata.topics().iter().any(|topic| {
                                topic.error().is_none() && !topic.partitions().is_empty()
                            })
                        })
                        .unwrap_or(false)
                })
                .await
                .unwrap_or(false);
                if reachable != strong.ready.swap(reachable, Ordering::Relaxed) {
                    tracing::info!(reachable, topic = %strong.topic, "broker reachability changed");
                }
                metrics::gauge!("callproof_ingress_broker_ready")
                    .set(f64::from(u8::from(reachable)));
                drop(strong);
                tokio::time::sleep(interval).await;
            }
        });
    }

    /// Waits for in-flight events on shutdown.
    pub fn flush(&self, timeout: Duration) {
        if let Err(error) = self.producer.flush(Timeout::After(timeout)) {
            tracing::warn!(%error, "events still in flight at shutdown");
        }
    }
}

/// Builds the events of one call: ids, sequence numbers and time are filled in here, so no
/// handler can get them wrong.
pub struct CallRecorder {
    pub call_id: String,
    gateway: String,
    /// What is called: a function's name, or `mcp:<server>__<tool>` once an MCP request names
    /// its tool.
    pub function: String,
    next_seq: i32,
    pub principal: Option<Principal>,
    /// Recorded on every event of a call through `/mcp`.
    pub mcp: Option<callproof_schemas::Mcp>,
}

impl CallRecorder {
    pub fn new(call_id: String, gateway: &str, function: &str) -> CallRecorder {
        CallRecorder {
            call_id,
            gateway: gateway.to_string(),
            function: function.to_string(),
            next_seq: 0,
            principal: None,
            mcp: None,
        }
    }

    /// Continues a call known from its events (a held call): its caller and next `seq`.
    pub fn resume(
        call_id: &str,
        gateway: &str,
        function: &str,
        caller: Principal,
        next_seq: i32,
    ) -> CallRecorder {
        CallRecorder {
            call_id: call_id.to_string(),
            gateway: gateway.to_string(),
            function: function.to_string(),
            next_seq,
            principal: Some(caller),
            mcp: None,
        }
    }

    pub fn with_mcp(mut self, mcp: callproof_schemas::Mcp) -> CallRecorder {
        self.mcp = Some(mcp);
        self
    }

    pub fn next_seq(&self) -> i32 {
        self.next_seq
    }

    pub fn event(&mut self, kind: EventKind) -> CallEvent {
        let seq = self.next_seq;
        self.next_seq += 1;
        CallEvent {
            event_id: uuid::Uuid::now_v7().to_string(),
            call_id: self.call_id.clone(),
            seq,
            kind,
            time: now_micros(),
            gateway: self.gateway.clone(),
            function: self.function.clone(),
            principal: self.principal.clone(),
            request: None,
            response: None,
            decision: None,
            approval: None,
            failure: None,
            masking: Vec::new(),
            mcp: self.mcp.clone(),
        }
    }
}

pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use rdkafka::config::ClientConfig;

    use super::EventPublisher;

    /// librdkafka is built with OpenSSL (TLS, SCRAM) and SASL PLAIN and OAUTHBEARER: without
    /// them `security.protocol = "ssl"` fails at start ("OpenSSL not available at build time").
    #[test]
    fn the_kafka_client_supports_tls_and_sasl() {
        let native = ClientConfig::new().create_native_config().unwrap();
        let features = native.get("builtin.features").unwrap();
        for feature in ["ssl", "sasl_plain", "sasl_scram", "sasl_oauthbearer"] {
            assert!(
                features.split(',').any(|built| built == feature),
                "librdkafka lacks {feature}: {features}"
            );
        }
    }

    /// The documented example, TLS to Kafka included, gives a producer the gateway can start.
    #[test]
    fn the_example_deployment_makes_a_producer() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/callproof.toml");
        let source = std::fs::read_to_string(path).unwrap();
        let config = callproof_config::Config::from_toml_with_env(
            &source,
            path,
            callproof_config::Service::Ingress,
            &|_| Some("example-secret".to_string()),
        )
        .unwrap();
        assert_eq!(config.kafka.properties["security.protocol"], "ssl");
        EventPublisher::new(&config.kafka, &config.ingress.instance_id)
            .unwrap_or_else(|error| panic!("{error}"));
    }
}
