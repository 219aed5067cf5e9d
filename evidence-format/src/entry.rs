//! The stored entry format: what one log entry holds, byte for byte.
//!
//! An entry is the canonical JSON (object keys sorted by their UTF-8 bytes, no whitespace,
//! `serde_json` string escaping) of one object:
//!
//! ```json
//! {"event":{…masked CallEvent…},"source":{"kafka":{"offset":12,"partition":3,"topic":"callproof.calls.v1"}}}
//! ```
//!
//! A message that is not a decodable call event still gets an entry, so that entry `i` of a
//! partition's log always accounts for the `i`-th message the processor consumed there:
//! `{"source":…,"undecodable":{"payload_bytes":N,"payload_sha256":"<hex>","reason":"…"}}`
//! (the payload itself is never stored: it could hold anything).
//!
//! An optional record added to the event after the first release (`mcp`) is left out when the
//! event has none, rather than written as `null` as the others are: the entries of events
//! without it stay byte for byte what they were before it existed (`CallEvent`'s JSON leaves it
//! out the same way).
//!
//! When the processor numbered an event other than the gateway did (two gateway instances gave
//! one call's events the same `seq`; see `sequencer.rs`), `event.seq` is the processor's number
//! and `source.gateway_seq` the gateway's: `"source":{"gateway_seq":2,"kafka":{…}}`.
//!
//! An entry is at most 65,535 bytes (the tile bundle's length prefix). A larger one moves
//! values out to content-addressed blobs at `blobs/sha256/<hex>`, largest body first
//! (of `/event/response/body` and `/event/request/body`, then the whole `/event`): the value is
//! replaced by `null` and `"blobs":{"<JSON pointer>":"<hex>"}` names where it went. A blob holds
//! the canonical JSON of the value it replaces (a JSON string for a body), and `<hex>` is the
//! SHA-256 of the blob, so the entry's leaf hash covers the blob too.

use std::io::Write as _;

use callproof_schemas::{
    Actor, Approval, ApprovalDecision, Authentication, CallEvent, Decision, EventKind, Failure,
    MaskingFinding, Mcp, McpOutcome, Principal, Request, Response,
};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::FormatError;

/// The largest entry a log can hold.
pub const MAX_ENTRY_BYTES: usize = callproof_tlog::tile::MAX_ENTRY_SIZE;

/// Values moved to blobs when an entry is too large: the larger body first, then the other,
/// then the whole event.
pub const BLOB_CANDIDATES: [&str; 3] = ["/event/response/body", "/event/request/body", "/event"];

/// Where a message came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KafkaSource {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl KafkaSource {
    pub fn to_value(&self) -> Value {
        serde_json::json!({"kafka": {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
        }})
    }
}

/// An entry's `source`: the Kafka message, and the gateway's `seq` when the event's is not it.
#[derive(Debug, Clone, Copy)]
pub struct EntrySource<'a> {
    pub kafka: &'a KafkaSource,
    pub gateway_seq: Option<i32>,
}

impl EntrySource<'_> {
    pub fn to_value(&self) -> Value {
        let mut value = self.kafka.to_value();
        if let (Some(gateway_seq), Some(object)) = (self.gateway_seq, value.as_object_mut()) {
            object.insert("gateway_seq".into(), gateway_seq.into());
        }
        value
    }
}

/// A content-addressed blob to write before the entry that names it.
#[derive(Debug, Clone)]
pub struct Blob {
    pub sha256_hex: String,
    pub bytes: Vec<u8>,
}

impl Blob {
    /// The blob's path in the object store.
    pub fn path(&self) -> String {
        blob_path(&self.sha256_hex)
    }
}

/// `blobs/sha256/<hex>`.
pub fn blob_path(sha256_hex: &str) -> String {
    format!("blobs/sha256/{sha256_hex}")
}

/// An entry ready to append: its bytes and the blobs it refers to.
#[derive(Debug, Clone, Default)]
pub struct EncodedEntry {
    pub bytes: Vec<u8>,
    pub blobs: Vec<Blob>,
}

/// Encodes an entry document (`{"event"|"undecodable", "source"}`), moving values to blobs
/// when it would exceed [`MAX_ENTRY_BYTES`].
pub fn encode_entry(document: &Value) -> Result<EncodedEntry, FormatError> {
    let bytes = canonical_json(document);
    if bytes.len() <= MAX_ENTRY_BYTES {
        return Ok(EncodedEntry {
            bytes,
            blobs: Vec::new(),
        });
    }
    let mut document = document.clone();
    let mut blobs = Vec::new();
    let mut pointers = Map::new();
    let body_size = |pointer: &str| {
        document
            .pointer(pointer)
            .and_then(Value::as_str)
            .map_or(0, str::len)
    };
    let mut candidates = BLOB_CANDIDATES;
    if body_size(candidates[1]) > body_size(candidates[0]) {
        candidates.swap(0, 1);
    }
    for pointer in candidates {
        let Some(value) = document.pointer_mut(pointer) else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        let blob_bytes = canonical_json(value);
        let sha256_hex = hex::encode(Sha256::digest(&blob_bytes));
        *value = Value::Null;
        pointers.insert(pointer.to_string(), Value::String(sha256_hex.clone()));
        blobs.push(Blob {
            sha256_hex,
            bytes: blob_bytes,
        });
        if let Some(object) = document.as_object_mut() {
            object.insert("blobs".to_string(), Value::Object(pointers.clone()));
        }
        let bytes = canonical_json(&document);
        if bytes.len() <= MAX_ENTRY_BYTES {
            return Ok(EncodedEntry { bytes, blobs });
        }
    }
    Err(FormatError::Encode(format!(
        "the entry stays over {MAX_ENTRY_BYTES} bytes with its event in a blob"
    )))
}

/// The entry of a decoded event, written straight from the struct: the bytes are exactly
/// `canonical_json` of `{"event": <event as JSON>, "source": <source>}` (a test checks it),
/// without building that JSON tree first, which cost more than a tenth of the processor's CPU.
///
/// Every struct is destructured without `..`, so a field added to the schema does not compile
/// until it is written here; debug builds check that keys come in canonical order.
pub fn event_entry_bytes(event: &CallEvent, source: EntrySource<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(event_size_hint(event));
    let mut entry = Object::open(&mut out);
    entry.field("event", event);
    entry.field("source", &source);
    entry.close();
    out
}

fn event_size_hint(event: &CallEvent) -> usize {
    let body = |body: Option<&String>| body.map_or(0, |body| body.len() + body.len() / 8);
    1024 + body(
        event
            .request
            .as_ref()
            .and_then(|request| request.body.as_ref()),
    ) + body(
        event
            .response
            .as_ref()
            .and_then(|response| response.body.as_ref()),
    )
}

/// A value written as canonical JSON.
trait Canonical {
    fn write(&self, out: &mut Vec<u8>);
}

/// A JSON object being written; keys must come in canonical (byte) order.
struct Object<'o> {
    out: &'o mut Vec<u8>,
    last_key: Option<&'static str>,
}

impl<'o> Object<'o> {
    fn open(out: &'o mut Vec<u8>) -> Object<'o> {
        out.push(b'{');
        Object {
            out,
            last_key: None,
        }
    }

    fn field(&mut self, key: &'static str, value: &(impl Canonical + ?Sized)) {
        debug_assert!(
            self.last_key.is_none_or(|last| last < key),
            "canonical key order: {key} after {:?}",
            self.last_key
        );
        if self.last_key.is_some() {
            self.out.push(b',');
        }
        self.last_key = Some(key);
        write_str(key, self.out);
        self.out.push(b':');
        value.write(self.out);
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

impl Canonical for str {
    fn write(&self, out: &mut Vec<u8>) {
        write_str(self, out);
    }
}

impl Canonical for String {
    fn write(&self, out: &mut Vec<u8>) {
        write_str(self, out);
    }
}

macro_rules! canonical_number {
    ($($number:ty),*) => {$(
        impl Canonical for $number {
            fn write(&self, out: &mut Vec<u8>) {
                // Writing a number into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, self);
            }
        }
    )*};
}
canonical_number!(i32, i64, u64, bool);

impl<T: Canonical> Canonical for Option<T> {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Some(value) => value.write(out),
            None => out.extend_from_slice(b"null"),
        }
    }
}

impl<T: Canonical> Canonical for Vec<T> {
    fn write(&self, out: &mut Vec<u8>) {
        out.push(b'[');
        for (position, item) in self.iter().enumerate() {
            if position > 0 {
                out.push(b',');
            }
            item.write(out);
        }
        out.push(b']');
    }
}

impl Canonical for EventKind {
    fn write(&self, out: &mut Vec<u8>) {
        write_str(self.as_str(), out);
    }
}

impl Canonical for McpOutcome {
    fn write(&self, out: &mut Vec<u8>) {
        write_str(self.as_str(), out);
    }
}

impl Canonical for Mcp {
    fn write(&self, out: &mut Vec<u8>) {
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
        } = self;
        let mut object = Object::open(out);
        object.field("client", client);
        object.field("error_code", error_code);
        object.field("jsonrpc_id", jsonrpc_id);
        object.field("method", method);
        object.field("outcome", outcome);
        object.field("protocol_version", protocol_version);
        object.field("server", server);
        object.field("session", session);
        object.field("tool", tool);
        object.close();
    }
}

impl Canonical for ApprovalDecision {
    fn write(&self, out: &mut Vec<u8>) {
        write_str(
            match self {
                ApprovalDecision::Approve => "approve",
                ApprovalDecision::Deny => "deny",
            },
            out,
        );
    }
}

impl Canonical for EntrySource<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        let EntrySource { kafka, gateway_seq } = self;
        let mut source = Object::open(out);
        if let Some(gateway_seq) = gateway_seq {
            source.field("gateway_seq", gateway_seq);
        }
        source.field("kafka", &KafkaPosition(kafka));
        source.close();
    }
}

/// The `kafka` object inside an entry's `source`.
struct KafkaPosition<'a>(&'a KafkaSource);

impl Canonical for KafkaPosition<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        let KafkaSource {
            topic,
            partition,
            offset,
        } = self.0;
        let mut kafka = Object::open(out);
        kafka.field("offset", offset);
        kafka.field("partition", partition);
        kafka.field("topic", topic);
        kafka.close();
    }
}

impl Canonical for CallEvent {
    fn write(&self, out: &mut Vec<u8>) {
        let CallEvent {
            event_id,
            call_id,
            seq,
            kind,
            time,
            gateway,
            function,
            principal,
            request,
            response,
            decision,
            approval,
            failure,
            masking,
            mcp,
        } = self;
        let mut object = Object::open(out);
        object.field("approval", approval);
        object.field("call_id", call_id);
        object.field("decision", decision);
        object.field("event_id", event_id);
        object.field("failure", failure);
        object.field("function", function);
        object.field("gateway", gateway);
        object.field("kind", kind);
        object.field("masking", masking);
        if let Some(mcp) = mcp {
            object.field("mcp", mcp);
        }
        object.field("principal", principal);
        object.field("request", request);
        object.field("response", response);
        object.field("seq", seq);
        object.field("time", time);
        object.close();
    }
}

impl Canonical for Principal {
    fn write(&self, out: &mut Vec<u8>) {
        let Principal {
            issuer,
            subject,
            email,
            groups,
            client_id,
            actor,
            authentication,
        } = self;
        let mut object = Object::open(out);
        object.field("actor", actor);
        object.field("authentication", authentication);
        object.field("client_id", client_id);
        object.field("email", email);
        object.field("groups", groups);
        object.field("issuer", issuer);
        object.field("subject", subject);
        object.close();
    }
}

impl Canonical for Actor {
    fn write(&self, out: &mut Vec<u8>) {
        let Actor {
            subject,
            issuer,
            client_id,
        } = self;
        let mut object = Object::open(out);
        object.field("client_id", client_id);
        object.field("issuer", issuer);
        object.field("subject", subject);
        object.close();
    }
}

impl Canonical for Authentication {
    fn write(&self, out: &mut Vec<u8>) {
        let Authentication {
            method,
            algorithm,
            key_id,
            token_id,
            issued_at,
            expires_at,
        } = self;
        let mut object = Object::open(out);
        object.field("algorithm", algorithm);
        object.field("expires_at", expires_at);
        object.field("issued_at", issued_at);
        object.field("key_id", key_id);
        object.field("method", method);
        object.field("token_id", token_id);
        object.close();
    }
}

impl Canonical for Request {
    fn write(&self, out: &mut Vec<u8>) {
        let Request {
            method,
            path,
            body,
            body_bytes,
            content_type,
        } = self;
        let mut object = Object::open(out);
        object.field("body", body);
        object.field("body_bytes", body_bytes);
        object.field("content_type", content_type);
        object.field("method", method);
        object.field("path", path);
        object.close();
    }
}

impl Canonical for Response {
    fn write(&self, out: &mut Vec<u8>) {
        let Response {
            status,
            body,
            body_bytes,
            latency_micros,
        } = self;
        let mut object = Object::open(out);
        object.field("body", body);
        object.field("body_bytes", body_bytes);
        object.field("latency_micros", latency_micros);
        object.field("status", status);
        object.close();
    }
}

impl Canonical for Decision {
    fn write(&self, out: &mut Vec<u8>) {
        let Decision {
            allowed,
            policy_id,
            reason,
        } = self;
        let mut object = Object::open(out);
        object.field("allowed", allowed);
        object.field("policy_id", policy_id);
        object.field("reason", reason);
        object.close();
    }
}

impl Canonical for Approval {
    fn write(&self, out: &mut Vec<u8>) {
        let Approval {
            approvers,
            quorum,
            reviewer,
            decision,
            comment,
            expires_at,
            arguments_sha256,
        } = self;
        let mut object = Object::open(out);
        object.field("approvers", approvers);
        object.field("arguments_sha256", arguments_sha256);
        object.field("comment", comment);
        object.field("decision", decision);
        object.field("expires_at", expires_at);
        object.field("quorum", quorum);
        object.field("reviewer", reviewer);
        object.close();
    }
}

impl Canonical for Failure {
    fn write(&self, out: &mut Vec<u8>) {
        let Failure { code, message } = self;
        let mut object = Object::open(out);
        object.field("code", code);
        object.field("message", message);
        object.close();
    }
}

impl Canonical for MaskingFinding {
    fn write(&self, out: &mut Vec<u8>) {
        let MaskingFinding {
            detector,
            path,
            count,
        } = self;
        let mut object = Object::open(out);
        object.field("count", count);
        object.field("detector", detector);
        object.field("path", path);
        object.close();
    }
}

/// The blobs an entry refers to: (JSON pointer, SHA-256 hex).
pub fn blob_references(entry: &Value) -> Vec<(String, String)> {
    entry
        .get("blobs")
        .and_then(Value::as_object)
        .map(|blobs| {
            blobs
                .iter()
                .filter_map(|(pointer, hex)| Some((pointer.clone(), hex.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Puts a blob's value back into an entry after checking its hash; removes `blobs` once every
/// reference is resolved, so that a resolved entry equals the document before encoding.
pub fn restore_blob(
    entry: &mut Value,
    pointer: &str,
    sha256_hex: &str,
    blob: &[u8],
) -> Result<(), String> {
    let actual = hex::encode(Sha256::digest(blob));
    if actual != sha256_hex {
        return Err(format!(
            "blob {sha256_hex} has SHA-256 {actual}: it was altered"
        ));
    }
    let value: Value = serde_json::from_slice(blob)
        .map_err(|error| format!("blob {sha256_hex} is not JSON: {error}"))?;
    let slot = entry
        .pointer_mut(pointer)
        .ok_or_else(|| format!("the entry has no {pointer} for blob {sha256_hex}"))?;
    *slot = value;
    if let Some(object) = entry.as_object_mut()
        && let Some(Value::Object(blobs)) = object.get_mut("blobs")
    {
        blobs.remove(pointer);
        if blobs.is_empty() {
            object.remove("blobs");
        }
    }
    Ok(())
}

/// The value at a path of object keys. `Value::pointer` does the same from a JSON pointer, but
/// allocates a string per segment to unescape it: it was 5 % of the processor's CPU.
pub fn field<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |value, key| value.get(key))
}

/// Canonical JSON: object keys sorted by their bytes, no whitespace.
///
/// Written by hand rather than relying on `serde_json::Map` ordering, because another crate
/// in the build may turn on serde_json's `preserve_order` feature, which would silently change
/// the bytes (and every hash) of the log.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push(b'{');
            for (position, key) in keys.into_iter().enumerate() {
                if position > 0 {
                    out.push(b',');
                }
                write_str(key, out);
                out.push(b':');
                if let Some(item) = map.get(key) {
                    write_canonical(item, out);
                }
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (position, item) in items.iter().enumerate() {
                if position > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_str(text: &str, out: &mut Vec<u8>) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // Writing a scalar JSON value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
    let _ = out.flush();
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth_without_whitespace() {
        let value = serde_json::json!({"b": [1, {"z": null, "a": "x\"y"}], "a": true});
        assert_eq!(
            String::from_utf8(canonical_json(&value)).unwrap(),
            r#"{"a":true,"b":[1,{"a":"x\"y","z":null}]}"#
        );
    }

    /// Every optional part present, and every kind of value, so that a field written out of
    /// order or missed would show.
    pub(crate) fn full_event() -> CallEvent {
        CallEvent {
            event_id: "e-1".into(),
            call_id: "c-\"1\"\n".into(),
            seq: 3,
            kind: EventKind::ApprovalDecided,
            time: 1_700_000_000_000_000,
            gateway: "gw".into(),
            function: "refund".into(),
            principal: Some(Principal {
                issuer: "https://issuer".into(),
                subject: "ann".into(),
                email: Some("[REDACTED:EMAIL]".into()),
                groups: vec!["support".into(), "ops".into()],
                client_id: Some("app".into()),
                actor: Some(Actor {
                    subject: "agent".into(),
                    issuer: Some("https://agents".into()),
                    client_id: None,
                }),
                authentication: Some(Authentication {
                    method: "bearer".into(),
                    algorithm: "RS256".into(),
                    key_id: Some("k1".into()),
                    token_id: None,
                    issued_at: Some(1),
                    expires_at: Some(-2),
                }),
            }),
            request: Some(Request {
                method: "POST".into(),
                path: "/v1/x".into(),
                body: Some("{\"a\":\"é\\u0000\"}".into()),
                body_bytes: 12,
                content_type: None,
            }),
            response: Some(Response {
                status: 200,
                body: None,
                body_bytes: 0,
                latency_micros: 7,
            }),
            decision: Some(Decision {
                allowed: false,
                policy_id: Some("p".into()),
                reason: "why".into(),
            }),
            approval: Some(Approval {
                approvers: vec!["leads".into()],
                quorum: 1,
                reviewer: Some("bo".into()),
                decision: Some(ApprovalDecision::Deny),
                comment: Some("no".into()),
                expires_at: None,
                arguments_sha256: Some("00ff".into()),
            }),
            failure: Some(Failure {
                code: "timeout".into(),
                message: "slow".into(),
            }),
            masking: vec![MaskingFinding {
                detector: "EMAIL".into(),
                path: "/request/body/a".into(),
                count: 2,
            }],
            mcp: Some(Mcp {
                method: "tools/call".into(),
                server: Some("crm".into()),
                tool: Some("get_customer".into()),
                jsonrpc_id: Some("\"a\"".into()),
                session: Some("0123456789abcdef".into()),
                protocol_version: None,
                client: Some("agent/1.0".into()),
                outcome: Some(McpOutcome::JsonrpcError),
                error_code: Some(-32602),
            }),
        }
    }

    #[test]
    fn event_entries_written_from_the_struct_are_the_canonical_json_of_the_event() {
        let source = KafkaSource {
            topic: "callproof.calls.v1".into(),
            partition: 2,
            offset: 41,
        };
        let mut sparse = full_event();
        sparse.principal = None;
        sparse.approval = None;
        sparse.kind = EventKind::CallCompleted;
        sparse.masking.clear();
        sparse.mcp = None;
        for (event, gateway_seq) in [(full_event(), None), (sparse, Some(2))] {
            let source = EntrySource {
                kafka: &source,
                gateway_seq,
            };
            let document = serde_json::json!({
                "event": serde_json::to_value(&event).unwrap(),
                "source": source.to_value(),
            });
            assert_eq!(
                String::from_utf8(event_entry_bytes(&event, source)).unwrap(),
                String::from_utf8(canonical_json(&document)).unwrap()
            );
        }
    }

    /// An entry of an event without `mcp` is byte for byte what it was before the field
    /// existed (the expected bytes are the canonical JSON of the event's JSON as v1 wrote it,
    /// computed apart), so entries do not change with the schema: the same event read again
    /// from Kafka after a restart gives the same entry whichever release wrote the log.
    #[test]
    fn entries_of_events_without_mcp_are_unchanged_by_its_addition() {
        let event = CallEvent {
            event_id: "e-1".into(),
            call_id: "c-1".into(),
            seq: 1,
            kind: EventKind::CallDenied,
            time: 1_700_000_000_000_000,
            gateway: "gw".into(),
            function: "refund".into(),
            principal: None,
            request: None,
            response: None,
            decision: Some(Decision {
                allowed: false,
                policy_id: None,
                reason: "no rule".into(),
            }),
            approval: None,
            failure: None,
            masking: Vec::new(),
            mcp: None,
        };
        let source = KafkaSource {
            topic: "callproof.calls.v1".into(),
            partition: 0,
            offset: 7,
        };
        let expected = concat!(
            r#"{"event":{"approval":null,"call_id":"c-1","decision":{"allowed":false,"#,
            r#""policy_id":null,"reason":"no rule"},"event_id":"e-1","failure":null,"#,
            r#""function":"refund","gateway":"gw","kind":"call_denied","masking":[],"#,
            r#""principal":null,"request":null,"response":null,"seq":1,"#,
            r#""time":1700000000000000},"source":{"kafka":{"offset":7,"partition":0,"#,
            r#""topic":"callproof.calls.v1"}}}"#
        );
        let entry_source = EntrySource {
            kafka: &source,
            gateway_seq: None,
        };
        assert_eq!(
            String::from_utf8(event_entry_bytes(&event, entry_source)).unwrap(),
            expected
        );
        // The path of entries too large for the log (blobs) goes through the event's JSON.
        let document = serde_json::json!({
            "event": serde_json::to_value(&event).unwrap(),
            "source": entry_source.to_value(),
        });
        assert_eq!(
            String::from_utf8(encode_entry(&document).unwrap().bytes).unwrap(),
            expected
        );
        // And one with `mcp` has it, between `masking` and `principal`.
        let with_mcp = CallEvent {
            mcp: full_event().mcp,
            ..event
        };
        let entry = String::from_utf8(event_entry_bytes(&with_mcp, entry_source)).unwrap();
        assert!(
            entry.contains(r#""masking":[],"mcp":{"client":"agent/1.0","error_code":-32602,"#),
            "{entry}"
        );
    }

    #[test]
    fn large_bodies_go_to_blobs_and_come_back() {
        let body = "x".repeat(70_000);
        let document = serde_json::json!({
            "event": {"request": {"body": "small"}, "response": {"body": body}},
            "source": {"kafka": {"topic": "t", "partition": 0, "offset": 1}},
        });
        let encoded = encode_entry(&document).unwrap();
        assert!(encoded.bytes.len() <= MAX_ENTRY_BYTES);
        assert_eq!(encoded.blobs.len(), 1);
        let mut entry: Value = serde_json::from_slice(&encoded.bytes).unwrap();
        assert_eq!(entry.pointer("/event/response/body"), Some(&Value::Null));
        for (pointer, hex) in blob_references(&entry) {
            let blob = encoded.blobs.iter().find(|b| b.sha256_hex == hex).unwrap();
            restore_blob(&mut entry, &pointer, &hex, &blob.bytes).unwrap();
        }
        assert_eq!(entry, document);
        let mut tampered: Value = serde_json::from_slice(&encoded.bytes).unwrap();
        let hex = &encoded.blobs[0].sha256_hex;
        assert!(restore_blob(&mut tampered, "/event/response/body", hex, b"\"y\"").is_err());
    }
}
