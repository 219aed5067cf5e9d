//! SiemPublisher: every masked event, as an OCSF API Activity record, to `kafka.siem_topic`.
//!
//! Records are published (and acknowledged by the broker) before the log append that stores
//! their events, so a SIEM sees every event at least once; after a crash between the two it
//! may see one twice, with the same `metadata.uid` (the event id) and the same log position.
//! Each record names that position in `unmapped.callproof.log` (partition, index, origin), so
//! a SIEM alert can be traced to the entry and its inclusion proof.
//!
//! Validity: every record, stubs and records of messages that are not events included, is a
//! valid API Activity of [`OCSF_VERSION`] (`tests/ocsf.rs` checks each kind against the official
//! schema). Absent values are left out, never `null`; where the class requires what the event
//! lacks (an actor and a source endpoint for a call refused before authentication) the record
//! names it [`UNAUTHENTICATED`] or [`UNKNOWN`] rather than leaving an empty object.
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

use std::borrow::Cow;
use std::time::Duration;

use callproof_config::KafkaConfig;
use callproof_schemas::{
    Approval, ApprovalDecision, CallEvent, Decision, EventKind, Failure, MaskingFinding, Mcp,
    McpOutcome, Request, Response,
};
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use crate::ProcessorError;
use callproof_evidence_format::entry::{KafkaSource, canonical_json, field};

/// OCSF schema version the records follow: 1.4.0 is the first whose API Activity has
/// `http_response`. `tests/ocsf.rs` validates every kind of record against its official schema.
pub const OCSF_VERSION: &str = "1.4.0";
/// OCSF class: API Activity.
pub const OCSF_CLASS_UID: i64 = 6003;
/// OCSF category: Application Activity.
pub const OCSF_CATEGORY_UID: i64 = 6;
/// OCSF activity: Other (a function call is none of create/read/update/delete as such).
const ACTIVITY_OTHER: i64 = 99;

/// The user a record names when the event has no principal: the gateway refused the call
/// before it authenticated anyone (OCSF requires an actor).
pub const UNAUTHENTICATED: &str = "unauthenticated";
/// What a record names where OCSF requires a value the event does not give (the caller's
/// endpoint without a principal; the actor and operation of a message that is not an event).
pub const UNKNOWN: &str = "unknown";

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
    /// The record of one masked event, within the size limits above.
    pub fn of_event(event: &CallEvent, source: &KafkaSource, log: LogPosition<'_>) -> SiemRecord {
        let record = EventRecord::of(event, source, log);
        let mut payload = Vec::with_capacity(4096);
        // Serialising borrowed strings, numbers and JSON values into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut payload, &record);
        SiemRecord::within_limits(event.call_id.clone(), payload, log)
    }

    /// The record of a message that is not a call event (`entry` is its entry document).
    pub fn of_undecodable(entry: &Value, log: LogPosition<'_>) -> SiemRecord {
        let record = undecodable_record(entry, log, field(entry, &["source", "kafka"]));
        SiemRecord::within_limits(String::new(), record.to_string().into_bytes(), log)
    }

    fn within_limits(key: String, mut payload: Vec<u8>, log: LogPosition<'_>) -> SiemRecord {
        let (partition, log_index) = (log.partition, log.index);
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
            payload = stub_of_payload(&payload);
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
        let mut pending: Vec<(&SiemRecord, Cow<'_, [u8]>, bool)> = records
            .iter()
            .map(|record| (record, Cow::Borrowed(&record.payload[..]), false))
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
                failed.push((record, Cow::Owned(stub), true));
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

/// A record's stub: the OCSF header, ids, status, who called (without the groups) and the log
/// position, without the event's content, which a SIEM reads from the log entry named in
/// `unmapped.callproof.log`. Still a valid API Activity of [`OCSF_VERSION`]: it keeps what the
/// class requires (`actor`, `api.operation`, `src_endpoint`, `metadata.product`).
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
    let copy = |from: &Value, keys: &[&str], to: &mut Map<String, Value>| {
        for &key in keys {
            if let Some(value) = from.get(key).filter(|value| !value.is_null()) {
                to.insert(key.to_string(), value.clone());
            }
        }
    };
    let mut stub = Map::new();
    copy(record, &KEPT, &mut stub);

    let mut metadata = Map::new();
    metadata.insert("version".into(), OCSF_VERSION.into());
    copy(
        &record["metadata"],
        &[
            "uid",
            "correlation_uid",
            "sequence",
            "log_name",
            "log_provider",
        ],
        &mut metadata,
    );
    metadata.insert("product".into(), json!(PRODUCT));
    stub.insert("metadata".into(), Value::Object(metadata));

    let mut actor = record
        .get("actor")
        .filter(|actor| actor.is_object())
        .cloned()
        .unwrap_or_else(|| json!({"user": {"name": UNKNOWN}}));
    if let Some(user) = actor.get_mut("user").and_then(Value::as_object_mut) {
        user.remove("groups");
    }
    stub.insert("actor".into(), actor);
    stub.insert(
        "src_endpoint".into(),
        record
            .get("src_endpoint")
            .filter(|endpoint| endpoint.is_object())
            .cloned()
            .unwrap_or_else(|| json!({"name": UNKNOWN})),
    );

    let mut api = Map::new();
    api.insert(
        "operation".into(),
        record["api"]["operation"]
            .as_str()
            .unwrap_or(UNKNOWN)
            .into(),
    );
    if let Some(uid) = record.pointer("/api/request/uid").and_then(Value::as_str) {
        api.insert("request".into(), json!({ "uid": uid }));
    }
    stub.insert("api".into(), Value::Object(api));

    let mut callproof = Map::new();
    copy(
        &record["unmapped"]["callproof"],
        &["log", "kafka"],
        &mut callproof,
    );
    callproof.insert("truncated".into(), true.into());
    stub.insert("unmapped".into(), json!({ "callproof": callproof }));
    Value::Object(stub)
}

/// An OCSF API Activity record, serialised from borrowed parts of the masked event: building
/// a JSON tree first copied both bodies and was a fifth of the processor's CPU. OCSF leaves out
/// what is absent (never `null`), and an object it has must have one of the attributes its
/// class requires, so every optional part is skipped when it is `None` or empty.
#[derive(Serialize)]
struct EventRecord<'a> {
    activity_id: i64,
    activity_name: &'a str,
    category_uid: i64,
    category_name: &'static str,
    class_uid: i64,
    class_name: &'static str,
    type_uid: i64,
    type_name: &'static str,
    severity_id: i64,
    severity: &'static str,
    status_id: i64,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_detail: Option<&'a str>,
    time: i64,
    message: String,
    metadata: Metadata<'a>,
    actor: OcsfActor<'a>,
    api: Api<'a>,
    src_endpoint: Named<'a>,
    dst_endpoint: Named<'a>,
    resources: [Resource<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    http_request: Option<HttpRequest<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_response: Option<Code>,
    unmapped: Unmapped<'a>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    version: &'static str,
    uid: &'a str,
    correlation_uid: &'a str,
    sequence: i32,
    log_name: &'a str,
    log_provider: &'a str,
    product: Product,
}

#[derive(Serialize)]
struct Product {
    name: &'static str,
    vendor_name: &'static str,
    version: &'static str,
}

const PRODUCT: Product = Product {
    name: "callproof",
    vendor_name: "callproof",
    version: env!("CARGO_PKG_VERSION"),
};

/// OCSF requires one of `user`, `app_name`, `app_uid`, … : every record has `user`, named
/// [`UNAUTHENTICATED`] when the event has no principal.
#[derive(Serialize)]
struct OcsfActor<'a> {
    user: User<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idp: Option<Named<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    app_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    app_uid: Option<&'a str>,
}

/// OCSF requires one of `uid`, `name`, `account`.
#[derive(Serialize)]
struct User<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email_addr: Option<&'a str>,
    #[serde(skip_serializing_if = "Groups::is_empty")]
    groups: Groups<'a>,
}

/// The principal's groups as OCSF `group` objects (`[{"name": …}]`), written without
/// collecting them first.
struct Groups<'a>(&'a [String]);

impl Groups<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Groups<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|name| Named {
            name: name.as_str(),
        }))
    }
}

#[derive(Serialize)]
struct Named<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct Api<'a> {
    operation: &'a str,
    service: Named<'a>,
    request: Uid<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<Code>,
}

#[derive(Serialize)]
struct Uid<'a> {
    uid: &'a str,
}

#[derive(Serialize)]
struct Code {
    code: i64,
}

#[derive(Serialize)]
struct Resource<'a> {
    name: &'a str,
    r#type: &'static str,
}

#[derive(Serialize)]
struct HttpRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    http_method: Option<&'a str>,
    url: UrlPath<'a>,
}

/// The method if OCSF's `http_method` enum has it (in 1.4.0: no PATCH, upper case only);
/// another stays in `unmapped.callproof.request.method` alone.
fn ocsf_http_method(method: &str) -> Option<&str> {
    const METHODS: [&str; 8] = [
        "OPTIONS", "GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "CONNECT",
    ];
    METHODS.contains(&method).then_some(method)
}

#[derive(Serialize)]
struct UrlPath<'a> {
    path: &'a str,
}

#[derive(Serialize)]
struct Unmapped<'a> {
    callproof: CallproofDetails<'a>,
}

/// The event's own fields (`unmapped` in OCSF terms), as in the log entry but without the
/// `null`s of absent values.
#[derive(Serialize)]
struct CallproofDetails<'a> {
    log: LogPosition<'a>,
    kafka: &'a KafkaSource,
    masking: &'a [MaskingFinding],
    #[serde(skip_serializing_if = "Option::is_none")]
    decision: Option<DecisionPart<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    approval: Option<ApprovalPart<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<&'a Failure>,
    /// The principal's `email` claim when it is not an address OCSF's `email_t` takes (the
    /// issuer puts what it likes there), instead of `actor.user.email_addr`.
    #[serde(skip_serializing_if = "Option::is_none")]
    principal_email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<RequestPart<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<ResponsePart<'a>>,
    /// What a call through the MCP endpoint adds. OCSF 1.4.0 has no attribute for a JSON-RPC
    /// method, an MCP server or a tool (`api.operation` already names the call as
    /// `mcp:<server>__<tool>`), so all of it stays here.
    #[serde(skip_serializing_if = "Option::is_none")]
    mcp: Option<McpPart<'a>>,
}

#[derive(Serialize)]
struct DecisionPart<'a> {
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy_id: Option<&'a str>,
    reason: &'a str,
}

impl<'a> DecisionPart<'a> {
    fn of(decision: &'a Decision) -> DecisionPart<'a> {
        DecisionPart {
            allowed: decision.allowed,
            policy_id: decision.policy_id.as_deref(),
            reason: &decision.reason,
        }
    }
}

#[derive(Serialize)]
struct ApprovalPart<'a> {
    approvers: &'a [String],
    quorum: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    reviewer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decision: Option<ApprovalDecision>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments_sha256: Option<&'a str>,
}

impl<'a> ApprovalPart<'a> {
    fn of(approval: &'a Approval) -> ApprovalPart<'a> {
        ApprovalPart {
            approvers: &approval.approvers,
            quorum: approval.quorum,
            reviewer: approval.reviewer.as_deref(),
            decision: approval.decision,
            comment: approval.comment.as_deref(),
            expires_at: approval.expires_at,
            arguments_sha256: approval.arguments_sha256.as_deref(),
        }
    }
}

#[derive(Serialize)]
struct McpPart<'a> {
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jsonrpc_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<McpOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<i32>,
}

impl<'a> McpPart<'a> {
    fn of(mcp: &'a Mcp) -> McpPart<'a> {
        let Mcp {
            method,
            server,
            tool,
            jsonrpc_id,
            session,
            protocol_version,
            client,
            outcome,
            error_code,
        } = mcp;
        McpPart {
            method,
            server: server.as_deref(),
            tool: tool.as_deref(),
            jsonrpc_id: jsonrpc_id.as_deref(),
            session: session.as_deref(),
            protocol_version: protocol_version.as_deref(),
            client: client.as_deref(),
            outcome: *outcome,
            error_code: *error_code,
        }
    }
}

/// A request as the SIEM record carries it: whole, or with a body over [`SIEM_BODY_MAX_BYTES`]
/// replaced by its size and hash (`body_omitted`).
#[derive(Serialize)]
struct RequestPart<'a> {
    method: &'a str,
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_omitted: Option<BodyOmitted>,
    body_bytes: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
}

impl<'a> RequestPart<'a> {
    fn of(request: &'a Request) -> RequestPart<'a> {
        let (body, body_omitted) = body_or_omitted(request.body.as_deref());
        RequestPart {
            method: &request.method,
            path: &request.path,
            body,
            body_omitted,
            body_bytes: request.body_bytes,
            content_type: request.content_type.as_deref(),
        }
    }
}

/// A response as the SIEM record carries it (see [`RequestPart`]).
#[derive(Serialize)]
struct ResponsePart<'a> {
    status: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_omitted: Option<BodyOmitted>,
    body_bytes: i64,
    latency_micros: i64,
}

impl<'a> ResponsePart<'a> {
    fn of(response: &'a Response) -> ResponsePart<'a> {
        let (body, body_omitted) = body_or_omitted(response.body.as_deref());
        ResponsePart {
            status: response.status,
            body,
            body_omitted,
            body_bytes: response.body_bytes,
            latency_micros: response.latency_micros,
        }
    }
}

/// What stands for a body over [`SIEM_BODY_MAX_BYTES`]. The hash is the SHA-256 of the body's
/// canonical JSON, which is also its blob's name when the log moved it to one.
#[derive(Serialize)]
struct BodyOmitted {
    bytes: usize,
    sha256: String,
    reason: String,
}

fn body_or_omitted(body: Option<&str>) -> (Option<&str>, Option<BodyOmitted>) {
    match body {
        Some(body) if body.len() > SIEM_BODY_MAX_BYTES => {
            let body_value = Value::String(body.to_string());
            let omitted = BodyOmitted {
                bytes: body.len(),
                sha256: hex::encode(Sha256::digest(canonical_json(&body_value))),
                reason: format!(
                    "bodies over {SIEM_BODY_MAX_BYTES} bytes are not copied to the SIEM stream; the log entry holds it"
                ),
            };
            (None, Some(omitted))
        }
        body => (body, None),
    }
}

/// Whether `text` is an address of the form OCSF's `email_t` requires, i.e. matches
/// ``^[a-zA-Z0-9!#$%&'*+-/=?^_`{|}~.]+@[a-zA-Z0-9-]+\.[a-zA-Z0-9-.]+$`` (in the character class,
/// `+-/` is the range `+,-./`).
fn is_ocsf_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    let Some((first_label, rest)) = domain.split_once('.') else {
        return false;
    };
    let local_ok = local
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+,-./=?^_`{|}~".contains(&byte));
    let label_ok = |label: &str, dots: bool| {
        label
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || (dots && byte == b'.'))
    };
    !local.is_empty()
        && local_ok
        && !first_label.is_empty()
        && label_ok(first_label, false)
        && !rest.is_empty()
        && label_ok(rest, true)
}

/// Where a record's event is in the logs: what a SIEM needs to fetch its inclusion proof.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LogPosition<'a> {
    pub partition: i32,
    pub index: u64,
    /// The partition log's origin (`<log origin>/<partition>`).
    pub origin: &'a str,
}

impl<'a> EventRecord<'a> {
    fn of(event: &'a CallEvent, source: &'a KafkaSource, log: LogPosition<'a>) -> EventRecord<'a> {
        let kind = event.kind.as_str();
        let response_status = event
            .response
            .as_ref()
            .map(|response| i64::from(response.status));
        let (status_id, status) = match event.kind {
            EventKind::CallCompleted => match response_status {
                Some(code) if code >= 400 => (2, "Failure"),
                _ => (1, "Success"),
            },
            EventKind::CallDenied | EventKind::CallFailed | EventKind::ApprovalExpired => {
                (2, "Failure")
            }
            EventKind::ApprovalDecided => {
                match event
                    .approval
                    .as_ref()
                    .and_then(|approval| approval.decision)
                {
                    Some(ApprovalDecision::Approve) => (1, "Success"),
                    Some(ApprovalDecision::Deny) => (2, "Failure"),
                    None => (0, "Unknown"),
                }
            }
            _ => (0, "Unknown"),
        };
        let (severity_id, severity) = match event.kind {
            EventKind::CallDenied => (3, "Medium"),
            EventKind::CallFailed | EventKind::ApprovalExpired => (2, "Low"),
            _ => (1, "Informational"),
        };
        let function = event.function.as_str();
        let principal = event.principal.as_ref();
        let actor = principal.and_then(|principal| principal.actor.as_ref());
        let request = event.request.as_ref();
        let response = event.response.as_ref();
        let gateway = event.gateway.as_str();
        let call_id = event.call_id.as_str();
        EventRecord {
            activity_id: ACTIVITY_OTHER,
            activity_name: kind,
            category_uid: OCSF_CATEGORY_UID,
            category_name: "Application Activity",
            class_uid: OCSF_CLASS_UID,
            class_name: "API Activity",
            type_uid: OCSF_CLASS_UID * 100 + ACTIVITY_OTHER,
            type_name: "API Activity: Other",
            severity_id,
            severity,
            status_id,
            status,
            status_code: response_status.map(|code| code.to_string()),
            status_detail: event
                .decision
                .as_ref()
                .map(|decision| decision.reason.as_str())
                .or(event
                    .failure
                    .as_ref()
                    .map(|failure| failure.message.as_str())),
            time: event.time / 1000,
            message: format!("{kind} {function}"),
            metadata: Metadata {
                version: OCSF_VERSION,
                uid: &event.event_id,
                correlation_uid: call_id,
                sequence: event.seq,
                log_name: &source.topic,
                log_provider: gateway,
                product: PRODUCT,
            },
            actor: OcsfActor {
                user: match principal {
                    Some(principal) => User {
                        uid: Some(principal.subject.as_str()),
                        name: None,
                        email_addr: principal
                            .email
                            .as_deref()
                            .filter(|email| is_ocsf_email(email)),
                        groups: Groups(&principal.groups),
                    },
                    None => User {
                        uid: None,
                        name: Some(UNAUTHENTICATED),
                        email_addr: None,
                        groups: Groups(&[]),
                    },
                },
                idp: principal.map(|principal| Named {
                    name: &principal.issuer,
                }),
                app_name: actor.map(|actor| actor.subject.as_str()),
                app_uid: actor.and_then(|actor| actor.client_id.as_deref()),
            },
            api: Api {
                operation: function,
                service: Named { name: gateway },
                request: Uid { uid: call_id },
                response: response_status.map(|code| Code { code }),
            },
            src_endpoint: Named {
                name: principal.map_or(UNKNOWN, |principal| {
                    principal
                        .client_id
                        .as_deref()
                        .unwrap_or(principal.subject.as_str())
                }),
            },
            dst_endpoint: Named { name: function },
            resources: [Resource {
                name: function,
                r#type: "function",
            }],
            http_request: request.map(|request| HttpRequest {
                http_method: ocsf_http_method(&request.method),
                url: UrlPath {
                    path: &request.path,
                },
            }),
            http_response: response_status.map(|code| Code { code }),
            unmapped: Unmapped {
                callproof: CallproofDetails {
                    log,
                    kafka: source,
                    masking: &event.masking,
                    decision: event.decision.as_ref().map(DecisionPart::of),
                    approval: event.approval.as_ref().map(ApprovalPart::of),
                    failure: event.failure.as_ref(),
                    principal_email: principal
                        .and_then(|principal| principal.email.as_deref())
                        .filter(|email| !is_ocsf_email(email)),
                    request: request.map(RequestPart::of),
                    response: response.map(ResponsePart::of),
                    mcp: event.mcp.as_ref().map(McpPart::of),
                },
            },
        }
    }
}

/// The record of a message that is not an event: activity and type Unknown, its hash and size
/// from the entry, and [`UNKNOWN`] where OCSF requires a caller.
fn undecodable_record(entry: &Value, log: LogPosition<'_>, source: Option<&Value>) -> Value {
    let mut callproof = json!({ "log": log });
    if let Some(source) = source {
        callproof["kafka"] = source.clone();
    }
    if let Some(undecodable) = entry.get("undecodable") {
        callproof["undecodable"] = undecodable.clone();
    }
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
        "metadata": {"version": OCSF_VERSION, "product": PRODUCT},
        "actor": {"user": {"name": UNKNOWN}},
        "api": {"operation": UNKNOWN},
        "src_endpoint": {"name": UNKNOWN},
        "unmapped": {"callproof": callproof},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_ocsf_takes_are_email_addresses() {
        for email in ["jane.doe@example.com", "a+b/c=d@x-y.co.uk", "j@h.c"] {
            assert!(is_ocsf_email(email), "{email}");
        }
        for text in [
            "",
            "Jane Doe",
            "jane@localhost",
            "@example.com",
            "jane@.example.com",
            "jane@example.",
            "jane@ex@ample.com",
            "jané@example.com",
            "jane@exa_mple.com",
            "[REDACTED:EMAIL]",
        ] {
            assert!(!is_ocsf_email(text), "{text}");
        }
    }
}
