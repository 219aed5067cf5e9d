//! Encoding a call event, as the gateway does for every lifecycle event it publishes (issue 17).
//!
//! - `encode/resolving/*`: the encoder before issue 17, `to_value` → `Value::resolve` →
//!   `to_avro_datum`, which built the schema's name table three times per event;
//! - `encode/direct/*`: `callproof_schemas::encode`, apache-avro's schema-aware serializer
//!   writing straight from the struct;
//! - `decode/*`: for scale, what the processor pays to read one back.
//!
//! Events: `received` is what a gateway publishes first for a call (principal, a 1 KiB masked
//! request body); `completed_mcp` adds a response and the MCP record.
//!
//! `cargo bench -p callproof-schemas --bench encode`.

use std::hint::black_box;
use std::time::Duration;

use callproof_schemas::{
    Actor, Authentication, CURRENT_SCHEMA, CallEvent, Decision, EventKind, Mcp, McpOutcome,
    Principal, Request, Response, SINGLE_OBJECT_MARKER, decode, encode, schema_fingerprint,
};
use criterion::{Criterion, criterion_group, criterion_main};

fn received() -> CallEvent {
    let body = format!(
        r#"{{"customer_id":"C-0042","note":"{}","email":"[REDACTED:EMAIL]"}}"#,
        "n".repeat(960)
    );
    CallEvent {
        event_id: "0193a4e2-7f00-7000-8000-000000000001".into(),
        call_id: "0193a4e2-7f00-7000-8000-0000000000aa".into(),
        seq: 0,
        kind: EventKind::CallReceived,
        time: 1_764_000_000_123_456,
        gateway: "gw-1".into(),
        function: "get_customer".into(),
        principal: Some(Principal {
            issuer: "https://issuer.example".into(),
            subject: "alice".into(),
            email: Some("alice@example.com".into()),
            groups: vec!["support".into(), "emea".into()],
            client_id: Some("agent-app".into()),
            actor: Some(Actor {
                subject: "agent-7".into(),
                issuer: None,
                client_id: Some("agent-app".into()),
            }),
            authentication: Some(Authentication {
                method: "oidc_jwt".into(),
                algorithm: "EdDSA".into(),
                key_id: Some("k1".into()),
                token_id: Some("jti-1".into()),
                issued_at: Some(1_764_000_000_000_000),
                expires_at: Some(1_764_000_300_000_000),
            }),
        }),
        request: Some(Request {
            method: "POST".into(),
            path: "/v1/functions/get_customer/invoke".into(),
            body_bytes: body.len() as i64,
            body: Some(body),
            content_type: Some("application/json".into()),
        }),
        response: None,
        decision: Some(Decision {
            allowed: true,
            policy_id: Some("get_customer".into()),
            reason: "group support allowed".into(),
        }),
        approval: None,
        failure: None,
        masking: Vec::new(),
        mcp: None,
    }
}

fn completed_mcp() -> CallEvent {
    let mut event = received();
    event.seq = 2;
    event.kind = EventKind::CallCompleted;
    event.function = "mcp:crm__get_customer".into();
    event.response = Some(Response {
        status: 200,
        body: Some(r#"{"content":[{"type":"text","text":"ok"}]}"#.into()),
        body_bytes: 42,
        latency_micros: 1234,
    });
    event.mcp = Some(Mcp {
        method: "tools/call".into(),
        server: Some("crm".into()),
        tool: Some("get_customer".into()),
        jsonrpc_id: Some("7".into()),
        session: Some("0123456789abcdef".into()),
        protocol_version: Some("2025-11-25".into()),
        client: Some("claude-code/2.1.0".into()),
        outcome: Some(McpOutcome::Result),
        error_code: None,
    });
    event
}

/// The encoder `encode` replaced, as it was.
fn encode_by_resolving(event: &CallEvent, fingerprint: &[u8; 8]) -> Vec<u8> {
    let schema = &*CURRENT_SCHEMA;
    let value = apache_avro::to_value(event)
        .and_then(|value| value.resolve(schema))
        .expect("resolves");
    let datum = apache_avro::to_avro_datum(schema, value).expect("encodes");
    let mut message = Vec::with_capacity(10 + datum.len());
    message.extend_from_slice(&SINGLE_OBJECT_MARKER);
    message.extend_from_slice(fingerprint);
    message.extend_from_slice(&datum);
    message
}

fn bench(c: &mut Criterion) {
    let fingerprint = schema_fingerprint(include_str!("../call_event.avsc"));
    for (name, event) in [("received", received()), ("completed_mcp", completed_mcp())] {
        let message = encode(&event).expect("encodes");
        assert_eq!(message, encode_by_resolving(&event, &fingerprint));
        c.bench_function(&format!("encode/resolving/{name}"), |b| {
            b.iter(|| encode_by_resolving(black_box(&event), &fingerprint))
        });
        c.bench_function(&format!("encode/direct/{name}"), |b| {
            b.iter(|| encode(black_box(&event)))
        });
        c.bench_function(&format!("decode/{name}"), |b| {
            b.iter(|| decode(black_box(&message)))
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
