//! SiemPublisher: every masked event, as an OCSF API Activity record, to `kafka.siem_topic`.
//!
//! Records are published (and acknowledged by the broker) before the log append that stores
//! their events, so a SIEM sees every event at least once; after a crash between the two it
//! may see one twice, with the same `metadata.uid` (the event id) and the same log position.
//! Each record names that position in `unmapped.callproof.log` (partition, index, origin), so
//! a SIEM alert can be traced to the entry and its inclusion proof.

use std::time::Duration;

use callproof_config::KafkaConfig;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

use crate::ProcessorError;

/// OCSF schema version the records follow.
pub const OCSF_VERSION: &str = "1.3.0";
/// OCSF class: API Activity.
pub const OCSF_CLASS_UID: i64 = 6003;
/// OCSF category: Application Activity.
pub const OCSF_CATEGORY_UID: i64 = 6;
/// OCSF activity: Other (a function call is none of create/read/update/delete as such).
const ACTIVITY_OTHER: i64 = 99;

/// A record to publish: key (the call id) and JSON value.
#[derive(Debug, Default)]
pub struct SiemRecord {
    pub key: String,
    pub payload: Vec<u8>,
}

pub struct SiemPublisher {
    producer: FutureProducer,
    topic: String,
}

impl SiemPublisher {
    pub fn new(config: &KafkaConfig, client_id: &str) -> Result<SiemPublisher, ProcessorError> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set("client.id", client_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "1000000")
            .set("message.timeout.ms", "30000");
        for (key, value) in &config.properties {
            client.set(key, value);
        }
        Ok(SiemPublisher {
            producer: client.create()?,
            topic: config.siem_topic.clone(),
        })
    }

    /// Publishes the records and returns once the broker acknowledged all of them; failed
    /// deliveries are sent again (at least once), up to `retry_limit`.
    pub async fn publish(
        &self,
        records: &[SiemRecord],
        retry_limit: Duration,
    ) -> Result<(), ProcessorError> {
        let started = std::time::Instant::now();
        let mut pending: Vec<&SiemRecord> = records.iter().collect();
        let mut backoff = Duration::from_millis(50);
        loop {
            let deliveries = pending.iter().map(|record| {
                let message = FutureRecord::to(&self.topic)
                    .key(&record.key)
                    .payload(&record.payload);
                self.producer.send(message, Duration::from_secs(30))
            });
            let results = futures::future::join_all(deliveries).await;
            let mut failed = Vec::new();
            let mut last_error = None;
            for (record, result) in pending.iter().zip(results) {
                if let Err((error, _)) = result {
                    failed.push(*record);
                    last_error = Some(error);
                }
            }
            let Some(error) = last_error else {
                return Ok(());
            };
            metrics::counter!("callproof_processor_failures_total", "stage" => "siem")
                .increment(failed.len() as u64);
            if started.elapsed() > retry_limit {
                return Err(error.into());
            }
            tracing::warn!(%error, failed = failed.len(), "SIEM records not acknowledged, retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            pending = failed;
        }
    }
}

/// The OCSF API Activity record of one masked entry document (`{"event", "source"}`).
pub fn ocsf_record(entry: &Value, partition: i32, log_index: u64, origin: &str) -> Value {
    let log = json!({"partition": partition, "index": log_index, "origin": origin});
    let source = entry
        .pointer("/source/kafka")
        .cloned()
        .unwrap_or(Value::Null);
    let Some(event) = entry.get("event").filter(|event| event.is_object()) else {
        return undecodable_record(entry, log, source);
    };
    let text = |pointer: &str| event.pointer(pointer).and_then(Value::as_str);
    let kind = text("/kind").unwrap_or("unknown");
    let time_ms = event.get("time").and_then(Value::as_i64).unwrap_or(0) / 1000;
    let response_status = event.pointer("/response/status").and_then(Value::as_i64);
    let (status_id, status) = match kind {
        "call_completed" => match response_status {
            Some(code) if code >= 400 => (2, "Failure"),
            _ => (1, "Success"),
        },
        "call_denied" | "call_failed" | "approval_expired" => (2, "Failure"),
        "approval_decided" => match text("/approval/decision") {
            Some("approve") => (1, "Success"),
            Some(_) => (2, "Failure"),
            None => (0, "Unknown"),
        },
        _ => (0, "Unknown"),
    };
    let (severity_id, severity) = match kind {
        "call_denied" => (3, "Medium"),
        "call_failed" | "approval_expired" => (2, "Low"),
        _ => (1, "Informational"),
    };
    let function = text("/function").unwrap_or_default();
    let groups: Vec<Value> = event
        .pointer("/principal/groups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|group| json!({"name": group}))
        .collect();
    let mut actor = json!({
        "user": {
            "uid": text("/principal/subject"),
            "email_addr": text("/principal/email"),
            "groups": groups,
        },
        "idp": {"name": text("/principal/issuer")},
    });
    if let Some(agent) = text("/principal/actor/subject") {
        actor["app_name"] = json!(agent);
        actor["app_uid"] = json!(text("/principal/actor/client_id"));
    }
    let mut record = json!({
        "activity_id": ACTIVITY_OTHER,
        "activity_name": kind,
        "category_uid": OCSF_CATEGORY_UID,
        "category_name": "Application Activity",
        "class_uid": OCSF_CLASS_UID,
        "class_name": "API Activity",
        "type_uid": OCSF_CLASS_UID * 100 + ACTIVITY_OTHER,
        "type_name": "API Activity: Other",
        "severity_id": severity_id,
        "severity": severity,
        "status_id": status_id,
        "status": status,
        "time": time_ms,
        "message": format!("{kind} {function}"),
        "metadata": {
            "version": OCSF_VERSION,
            "uid": text("/event_id"),
            "correlation_uid": text("/call_id"),
            "sequence": event.get("seq"),
            "log_name": source.get("topic"),
            "log_provider": text("/gateway"),
            "product": {
                "name": "callproof",
                "vendor_name": "callproof",
                "version": env!("CARGO_PKG_VERSION"),
            },
        },
        "actor": actor,
        "api": {
            "operation": function,
            "service": {"name": text("/gateway")},
            "request": {"uid": text("/call_id")},
        },
        "src_endpoint": {
            "name": text("/principal/client_id").or(text("/principal/subject")),
        },
        "dst_endpoint": {"name": function},
        "resources": [{"name": function, "type": "function"}],
        "unmapped": {
            "callproof": {
                "log": log,
                "kafka": source,
                "masking": event.get("masking"),
                "decision": event.get("decision"),
                "approval": event.get("approval"),
                "failure": event.get("failure"),
                "request": event.get("request"),
                "response": event.get("response"),
            }
        },
    });
    if let Some(code) = response_status {
        record["status_code"] = json!(code.to_string());
        record["api"]["response"] = json!({"code": code});
        record["http_response"] = json!({"code": code});
    }
    if let Some(reason) = text("/decision/reason").or(text("/failure/message")) {
        record["status_detail"] = json!(reason);
    }
    if let (Some(method), Some(path)) = (text("/request/method"), text("/request/path")) {
        record["http_request"] = json!({"http_method": method, "url": {"path": path}});
    }
    record
}

fn undecodable_record(entry: &Value, log: Value, source: Value) -> Value {
    json!({
        "activity_id": 0,
        "activity_name": "Unknown",
        "category_uid": OCSF_CATEGORY_UID,
        "category_name": "Application Activity",
        "class_uid": OCSF_CLASS_UID,
        "class_name": "API Activity",
        "type_uid": OCSF_CLASS_UID * 100,
        "type_name": "API Activity: Unknown",
        "severity_id": 3,
        "severity": "Medium",
        "status_id": 2,
        "status": "Failure",
        "status_detail": "the message is not a call event",
        "time": 0,
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": "callproof", "vendor_name": "callproof", "version": env!("CARGO_PKG_VERSION")},
        },
        "actor": {},
        "api": {"operation": "unknown"},
        "src_endpoint": {},
        "unmapped": {"callproof": {"log": log, "kafka": source, "undecodable": entry.get("undecodable")}},
    })
}
