//! SiemPublisher: every masked event, as an OCSF API Activity record, to `kafka.siem_topic`.
//!
//! Records are published (and acknowledged by the broker) before the log append that stores
//! their events, so a SIEM sees every event at least once; after a crash between the two it
//! may see one twice, with the same `metadata.uid` (the event id) and the same log position.
//! Each record names that position in `unmapped.callproof.log` (partition, index, origin), so
//! a SIEM alert can be traced to the entry and its inclusion proof.
//!
//! Size: a record must fit in one Kafka message, while an event can carry bodies of any size
//! (the log moves large ones to blobs). So a body over [`SIEM_BODY_MAX_BYTES`] is replaced by
//! its size and hash (`body_omitted`), and a record still over [`SIEM_RECORD_MAX_BYTES`] is cut
//! down to a stub that keeps the OCSF header and the log position ([`stub_record`]). A record
//! the producer or broker still refuses as too large is a permanent, per-record problem: it is
//! replaced by its stub, or dropped if even the stub is refused, logged with its log position
//! and counted; the event stays in the log and the pipeline goes on. Retrying it could never
//! succeed, and giving up on the batch would stop the processor at the same message after
//! every restart.

use std::time::Duration;

use callproof_config::KafkaConfig;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::ProcessorError;
use crate::entry::canonical_json;

/// OCSF schema version the records follow.
pub const OCSF_VERSION: &str = "1.3.0";
/// OCSF class: API Activity.
pub const OCSF_CLASS_UID: i64 = 6003;
/// OCSF category: Application Activity.
pub const OCSF_CATEGORY_UID: i64 = 6;
/// OCSF activity: Other (a function call is none of create/read/update/delete as such).
const ACTIVITY_OTHER: i64 = 99;

/// A body longer than this is left out of the SIEM record (its size and hash stay).
pub const SIEM_BODY_MAX_BYTES: usize = 32 * 1024;

/// A record larger than this is published as its stub. Well under Kafka's default
/// `message.max.bytes` (1,000,000) and `max.message.bytes` (1,048,588).
pub const SIEM_RECORD_MAX_BYTES: usize = 512 * 1024;

/// A record to publish: key (the call id), JSON value, and the log entry it stands for (named
/// in logs when the record cannot be published).
#[derive(Debug, Default)]
pub struct SiemRecord {
    pub key: String,
    pub payload: Vec<u8>,
    pub partition: i32,
    pub log_index: u64,
}

impl SiemRecord {
    /// The record of one masked entry document, within the size limits above.
    pub fn of_entry(
        key: String,
        entry: &Value,
        partition: i32,
        log_index: u64,
        origin: &str,
    ) -> SiemRecord {
        let record = ocsf_record(entry, partition, log_index, origin);
        // Serialising a `Value` cannot fail; `to_vec` skips the `Display` adapter.
        let mut payload = serde_json::to_vec(&record).unwrap_or_default();
        if payload.len() > SIEM_RECORD_MAX_BYTES {
            metrics::counter!("callproof_processor_siem_records_stubbed_total", "reason" => "record_limit")
                .increment(1);
            tracing::warn!(
                partition,
                log_index,
                record_bytes = payload.len(),
                limit = SIEM_RECORD_MAX_BYTES,
                "SIEM record too large; publishing its stub"
            );
            payload = stub_record(&record).to_string().into_bytes();
        }
        SiemRecord {
            key,
            payload,
            partition,
            log_index,
        }
    }
}

/// What [`SiemPublisher::publish`] could not publish in full.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PublishReport {
    /// Records refused as too large and published as their stub instead.
    pub stubbed: usize,
    /// Records refused as too large even as a stub: not published (the log has them).
    pub dropped: usize,
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
    /// deliveries are sent again (at least once), up to `retry_limit`. A record refused as too
    /// large is not retried as it is: its stub is sent instead, and a stub refused as too large
    /// is dropped (see the module documentation); both are logged and counted.
    pub async fn publish(
        &self,
        records: &[SiemRecord],
        retry_limit: Duration,
    ) -> Result<PublishReport, ProcessorError> {
        let started = std::time::Instant::now();
        let mut report = PublishReport::default();
        // (record, payload to send, whether the payload is already the stub)
        let mut pending: Vec<(&SiemRecord, std::borrow::Cow<'_, [u8]>, bool)> = records
            .iter()
            .map(|record| {
                (
                    record,
                    std::borrow::Cow::Borrowed(&record.payload[..]),
                    false,
                )
            })
            .collect();
        let mut backoff = Duration::from_millis(50);
        loop {
            let deliveries = pending.iter().map(|(record, payload, _)| {
                let message = FutureRecord::to(&self.topic)
                    .key(&record.key)
                    .payload(payload.as_ref());
                self.producer.send(message, Duration::from_secs(30))
            });
            let results = futures::future::join_all(deliveries).await;
            let mut failed = Vec::new();
            let mut last_error = None;
            for ((record, payload, is_stub), result) in pending.into_iter().zip(results) {
                let error = match result {
                    Ok(_) => continue,
                    Err((error, _)) => error,
                };
                if !is_too_large(&error) {
                    failed.push((record, payload, is_stub));
                    last_error = Some(error);
                    continue;
                }
                if is_stub {
                    report.dropped += 1;
                    metrics::counter!("callproof_processor_siem_records_dropped_total", "reason" => "too_large")
                        .increment(1);
                    tracing::error!(
                        partition = record.partition,
                        log_index = record.log_index,
                        stub_bytes = payload.len(),
                        "SIEM stub refused as too large; not published (the event is in the log)"
                    );
                    continue;
                }
                report.stubbed += 1;
                metrics::counter!("callproof_processor_siem_records_stubbed_total", "reason" => "too_large")
                    .increment(1);
                tracing::warn!(
                    partition = record.partition,
                    log_index = record.log_index,
                    record_bytes = payload.len(),
                    "SIEM record refused as too large; publishing its stub"
                );
                let stub = stub_of_payload(&payload);
                failed.push((record, std::borrow::Cow::Owned(stub), true));
            }
            if failed.is_empty() {
                return Ok(report);
            }
            if let Some(error) = last_error {
                metrics::counter!("callproof_processor_failures_total", "stage" => "siem")
                    .increment(failed.len() as u64);
                if started.elapsed() > retry_limit {
                    return Err(error.into());
                }
                tracing::warn!(%error, failed = failed.len(), "SIEM records not acknowledged, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            pending = failed;
        }
    }
}

/// Whether the producer (`message.max.bytes`) or the broker (the topic's
/// `max.message.bytes`) refused a message for its size: the same message never goes through.
fn is_too_large(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)
    )
}

/// The stub of a published payload (which is always a record this module made).
fn stub_of_payload(payload: &[u8]) -> Vec<u8> {
    let record: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
    stub_record(&record).to_string().into_bytes()
}

/// A record's stub: the OCSF header, ids, status and the log position, without the event's
/// content, which a SIEM reads from the log entry named in `unmapped.callproof.log`.
pub fn stub_record(record: &Value) -> Value {
    const KEPT: [&str; 14] = [
        "activity_id",
        "activity_name",
        "category_uid",
        "category_name",
        "class_uid",
        "class_name",
        "type_uid",
        "type_name",
        "severity_id",
        "severity",
        "status_id",
        "status",
        "status_code",
        "time",
    ];
    let mut stub = serde_json::Map::new();
    for key in KEPT {
        if let Some(value) = record.get(key) {
            stub.insert(key.to_string(), value.clone());
        }
    }
    let text = |pointer: &str| record.pointer(pointer).cloned().unwrap_or(Value::Null);
    stub.insert(
        "metadata".into(),
        json!({
            "version": OCSF_VERSION,
            "uid": text("/metadata/uid"),
            "correlation_uid": text("/metadata/correlation_uid"),
            "sequence": text("/metadata/sequence"),
            "log_name": text("/metadata/log_name"),
            "product": text("/metadata/product"),
        }),
    );
    stub.insert(
        "api".into(),
        json!({"operation": text("/api/operation"), "request": {"uid": text("/api/request/uid")}}),
    );
    stub.insert(
        "unmapped".into(),
        json!({"callproof": {
            "log": text("/unmapped/callproof/log"),
            "kafka": text("/unmapped/callproof/kafka"),
            "truncated": true,
        }}),
    );
    Value::Object(stub)
}

/// Replaces the body at `pointer` (`/request` or `/response` of a record's copy of the event)
/// by its size and hash when it is over [`SIEM_BODY_MAX_BYTES`]. The hash is the SHA-256 of
/// the body's canonical JSON, which is also its blob's name when the log moved it to one.
fn omit_large_body(event_part: &mut Value) {
    let Some(body) = event_part.get("body").and_then(Value::as_str) else {
        return;
    };
    if body.len() <= SIEM_BODY_MAX_BYTES {
        return;
    }
    let bytes = body.len();
    let sha256 = hex::encode(Sha256::digest(canonical_json(&Value::String(
        body.to_string(),
    ))));
    event_part["body"] = Value::Null;
    event_part["body_omitted"] = json!({
        "bytes": bytes,
        "sha256": sha256,
        "reason": format!("bodies over {SIEM_BODY_MAX_BYTES} bytes are not copied to the SIEM stream; the log entry holds it"),
    });
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
    let mut request = event.get("request").cloned().unwrap_or(Value::Null);
    let mut response = event.get("response").cloned().unwrap_or(Value::Null);
    omit_large_body(&mut request);
    omit_large_body(&mut response);
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
        "unmapped": {"callproof": null},
    });
    // Built apart and moved in: `json!` would copy the bodies a second time.
    let mut callproof = serde_json::Map::with_capacity(8);
    callproof.insert("log".into(), log);
    callproof.insert("kafka".into(), source);
    for key in ["masking", "decision", "approval", "failure"] {
        callproof.insert(key.into(), event.get(key).cloned().unwrap_or(Value::Null));
    }
    callproof.insert("request".into(), request);
    callproof.insert("response".into(), response);
    record["unmapped"]["callproof"] = Value::Object(callproof);
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
