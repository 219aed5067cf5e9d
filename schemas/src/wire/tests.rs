use apache_avro::schema_compatibility::SchemaCompatibility;

use super::*;
use crate::*;

fn full_event() -> CallEvent {
    CallEvent {
        event_id: "01936a4e-7f00-7000-8000-000000000001".into(),
        call_id: "01936a4e-7f00-7000-8000-0000000000aa".into(),
        seq: 3,
        kind: EventKind::ApprovalDecided,
        time: 1_764_000_000_123_456,
        gateway: "gw-1".into(),
        function: "refund_payment".into(),
        principal: Some(Principal {
            issuer: "https://issuer.example".into(),
            subject: "alice".into(),
            email: Some("alice@example.com".into()),
            groups: vec!["support".into(), "payments".into()],
            client_id: Some("agent-app".into()),
            actor: Some(Actor {
                subject: "agent-7".into(),
                issuer: None,
                client_id: Some("agent-app".into()),
            }),
            authentication: Some(Authentication {
                method: "oidc_jwt".into(),
                algorithm: "ES256".into(),
                key_id: Some("k1".into()),
                token_id: Some("jti-1".into()),
                issued_at: Some(1_764_000_000_000_000),
                expires_at: Some(1_764_000_300_000_000),
            }),
        }),
        request: Some(Request {
            method: "POST".into(),
            path: "/v1/functions/refund_payment/invoke".into(),
            body: Some(r#"{"amount":1200,"card":"[REDACTED:CREDIT_CARD]"}"#.into()),
            body_bytes: 48,
            content_type: Some("application/json".into()),
        }),
        response: Some(Response {
            status: 200,
            body: Some(r#"{"ok":true}"#.into()),
            body_bytes: 11,
            latency_micros: 1234,
        }),
        decision: Some(Decision {
            allowed: true,
            policy_id: Some("refund_payment".into()),
            reason: "group payments allowed".into(),
        }),
        approval: Some(Approval {
            approvers: vec!["payments-leads".into()],
            quorum: 2,
            reviewer: Some("bob".into()),
            decision: Some(ApprovalDecision::Approve),
            comment: Some("ok".into()),
            expires_at: Some(1_764_000_900_000_000),
            arguments_sha256: Some("ab".repeat(32)),
        }),
        failure: Some(Failure {
            code: "upstream_timeout".into(),
            message: "function did not answer within 5000 ms".into(),
        }),
        masking: vec![MaskingFinding {
            detector: "CREDIT_CARD".into(),
            path: "/request/body/card".into(),
            count: 1,
        }],
        mcp: Some(full_mcp()),
    }
}

fn full_mcp() -> Mcp {
    Mcp {
        method: "tools/call".into(),
        server: Some("crm".into()),
        tool: Some("get_customer".into()),
        jsonrpc_id: Some(r#""req-7""#.into()),
        session: Some("0123456789abcdef".into()),
        protocol_version: Some("2025-11-25".into()),
        client: Some("claude-code/2.1.0".into()),
        outcome: Some(McpOutcome::JsonrpcError),
        error_code: Some(-32602),
    }
}

/// What an event written by the v1 release decodes to: the full event without what v2 added.
fn full_event_v1() -> CallEvent {
    CallEvent {
        mcp: None,
        ..full_event()
    }
}

fn minimal_event(kind: EventKind) -> CallEvent {
    CallEvent {
        event_id: "e".into(),
        call_id: "c".into(),
        seq: 0,
        kind,
        time: 0,
        gateway: "gw".into(),
        function: "f".into(),
        principal: None,
        request: None,
        response: None,
        decision: None,
        approval: None,
        failure: None,
        masking: vec![],
        mcp: None,
    }
}

#[test]
fn every_kind_and_every_field_round_trip() {
    let mut events = vec![full_event(), full_event_v1()];
    events.extend(EventKind::ALL.into_iter().map(minimal_event));
    // An MCP record with only its required field, and each outcome.
    let mut sparse_mcp = minimal_event(EventKind::CallDenied);
    sparse_mcp.function = "mcp".into();
    sparse_mcp.mcp = Some(Mcp {
        method: "initialize".into(),
        ..Mcp::default()
    });
    events.push(sparse_mcp);
    for outcome in McpOutcome::ALL {
        let mut event = minimal_event(EventKind::CallCompleted);
        event.mcp = Some(Mcp {
            outcome: Some(outcome),
            ..full_mcp()
        });
        events.push(event);
    }
    for event in events {
        let message = encode(&event).unwrap();
        assert_eq!(decode(&message).unwrap(), event);
    }
}

#[test]
fn fingerprints_match_the_avro_specification_and_other_implementations() {
    // The specification's example: CRC-64-AVRO of "int" is 0x7275d51a3f395c8f.
    assert_eq!(
        schema_fingerprint("\"int\""),
        0x7275_d51a_3f39_5c8f_u64.to_le_bytes()
    );
    assert_eq!(
        schema_fingerprint(r#"{"type":"long","logicalType":"timestamp-micros"}"#),
        schema_fingerprint("\"long\"")
    );
    // Computed independently by Python's fastavro 1.13 (`fingerprint(to_parsing_canonical_form(
    // parse_schema(...)), "CRC-64-AVRO")`, whose hex is the header's byte order): a consumer in
    // another language must find our schema by its fingerprint. One per release, oldest first.
    let released = [
        [0x21, 0x4f, 0x3c, 0x74, 0xb2, 0x2c, 0xc4, 0xdd],
        [0xfc, 0x07, 0x01, 0x2f, 0x0b, 0xde, 0x7a, 0xe1],
    ];
    let computed: Vec<[u8; 8]> = RELEASED_SCHEMAS
        .iter()
        .map(|(_, fingerprint)| *fingerprint)
        .collect();
    assert_eq!(computed, released);
    let current = released[1];
    assert_eq!(
        schema_fingerprint(include_str!("../../call_event.avsc")),
        current
    );
    let message = encode(&full_event()).unwrap();
    assert_eq!(message[..2], SINGLE_OBJECT_MARKER);
    assert_eq!(message[2..10], current);
}

#[test]
fn rust_types_cover_the_schema_file_and_nothing_more() {
    // Resolution fills a schema field the Rust type lacks with its default, so a round trip alone
    // would not notice a field added to the .avsc but not to the types (or the reverse).
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../call_event.avsc")).unwrap();
    let event = serde_json::to_value(full_event()).unwrap();
    assert_same_fields(&schema, &event, "CallEvent");
}

fn assert_same_fields(record_schema: &serde_json::Value, value: &serde_json::Value, at: &str) {
    let schema_fields = record_schema["fields"].as_array().unwrap();
    let mut schema_names: Vec<&str> = schema_fields
        .iter()
        .map(|field| field["name"].as_str().unwrap())
        .collect();
    let mut value_names: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    schema_names.sort_unstable();
    value_names.sort_unstable();
    assert_eq!(schema_names, value_names, "fields of {at}");
    for field in schema_fields {
        let name = field["name"].as_str().unwrap();
        if let Some(nested) = nested_record(&field["type"]) {
            let nested_value = &value[name];
            let nested_value = nested_value
                .as_array()
                .and_then(|items| items.first())
                .unwrap_or(nested_value);
            assert!(
                nested_value.is_object(),
                "full_event() must fill {at}.{name}"
            );
            assert_same_fields(nested, nested_value, &format!("{at}.{name}"));
        }
    }
}

fn nested_record(field_type: &serde_json::Value) -> Option<&serde_json::Value> {
    match field_type {
        serde_json::Value::Array(branches) => branches.iter().find_map(nested_record),
        serde_json::Value::Object(object) => match object.get("type")?.as_str()? {
            "record" => Some(field_type),
            "array" => nested_record(&field_type["items"]),
            _ => None,
        },
        _ => None,
    }
}

#[test]
fn every_released_schema_reads_current_data_and_current_reads_released() {
    for (version, (released, _)) in RELEASED_SCHEMAS.iter().enumerate() {
        let version = version + 1;
        assert!(
            SchemaCompatibility::can_read(&CURRENT_SCHEMA, released).is_ok(),
            "released schema v{version} can no longer read data written by the current schema"
        );
        assert!(
            SchemaCompatibility::can_read(released, &CURRENT_SCHEMA).is_ok(),
            "the current schema can no longer read data written by released schema v{version}"
        );
        // And with real bytes: current data read through the released schema.
        let message = encode(&full_event()).unwrap();
        decode_value(&message, released).unwrap_or_else(|error| {
            panic!("released v{version} cannot read current data: {error}")
        });
    }
}

/// Bytes written by each release and committed, with the event each must decode to.
fn released_messages() -> [(&'static [u8], CallEvent); 2] {
    [
        (
            include_bytes!("../../released/call_event.v1.full_event.bin"),
            full_event_v1(),
        ),
        (
            include_bytes!("../../released/call_event.v2.full_event.bin"),
            full_event(),
        ),
    ]
}

#[test]
fn data_written_by_every_release_still_decodes() {
    // They must decode to the same event for as long as such data may sit in Kafka or in a log.
    for (version, (message, expected)) in released_messages().into_iter().enumerate() {
        let version = version + 1;
        let decoded = decode(message)
            .unwrap_or_else(|error| panic!("v{version} data no longer decodes: {error}"));
        assert_eq!(decoded, expected, "v{version}");
    }
}

#[test]
fn every_release_reads_data_written_by_every_other() {
    // Each release's committed bytes, read through every released schema (not only the
    // current one): a consumer still on an older release must read what a newer gateway wrote.
    for (written_by, (message, _)) in released_messages().into_iter().enumerate() {
        for (read_by, (reader, _)) in RELEASED_SCHEMAS.iter().enumerate() {
            decode_value(message, reader).unwrap_or_else(|error| {
                panic!(
                    "v{} cannot read v{} data: {error}",
                    read_by + 1,
                    written_by + 1
                )
            });
        }
    }
}

#[test]
fn the_current_schema_is_the_latest_release() {
    // A schema change is released with it (a copy in released/ and bytes it wrote), so a
    // consumer can always find the schema of what the gateway writes.
    let latest = include_str!("../../released/call_event.v2.avsc");
    assert_eq!(include_str!("../../call_event.avsc"), latest);
    assert_eq!(
        encode(&full_event()).unwrap(),
        include_bytes!("../../released/call_event.v2.full_event.bin")
    );
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let good = encode(&full_event()).unwrap();
    assert!(matches!(decode(&[]), Err(DecodeError::TooShort(0))));
    assert!(matches!(
        decode(&[0u8; 12]),
        Err(DecodeError::NotSingleObject)
    ));
    let mut unknown = good.clone();
    unknown[2] ^= 0xff;
    assert!(matches!(
        decode(&unknown),
        Err(DecodeError::UnknownSchema(_))
    ));
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(matches!(
        decode(&trailing),
        Err(DecodeError::TrailingBytes(1))
    ));
    // Every cut, those before the trailing `mcp` or between its fields included (apache-avro alone
    // reads a union at the end of its input as null).
    for cut in HEADER_LEN..good.len() {
        assert!(decode(&good[..cut]).is_err(), "truncated at {cut} decoded");
    }
    // Every single-byte corruption of the body must fail cleanly or decode to something; never panic.
    for position in HEADER_LEN..good.len() {
        let mut corrupted = good.clone();
        corrupted[position] = corrupted[position].wrapping_add(0x55);
        let _ = decode(&corrupted);
    }
}

/// `peek_head` reads what the full decode reads, for current and released data, with values
/// that take several varint bytes; and refuses what the decode refuses, without panicking.
#[test]
fn peek_head_agrees_with_decode() {
    let mut messages: Vec<Vec<u8>> = released_messages()
        .iter()
        .map(|(message, _)| message.to_vec())
        .collect();
    for (seq, time, call_id) in [
        (0, 0, "c"),
        (-1, -1, ""),
        (i32::MAX, i64::MAX, "call-ü-0191d2"),
        (i32::MIN, i64::MIN, "x"),
        (
            300,
            1_733_000_000_000_000,
            "0191d2a4-7c3e-7b1a-9a4e-1f2d3c4b5a69",
        ),
    ] {
        let mut event = full_event();
        event.seq = seq;
        event.time = time;
        event.call_id = call_id.into();
        messages.push(encode(&event).unwrap());
    }
    for message in &messages {
        let event = decode(message).unwrap();
        let head = peek_head(message).unwrap();
        assert_eq!(
            (head.call_id, head.seq, head.time),
            (event.call_id.as_str(), event.seq, event.time)
        );
    }
    let good = &messages[2];
    assert!(peek_head(&[]).is_none());
    assert!(peek_head(&[0u8; 12]).is_none());
    let mut unknown = good.clone();
    unknown[2] ^= 0xff;
    assert!(peek_head(&unknown).is_none());
    for cut in 0..HEADER_LEN + 8 {
        let _ = peek_head(&good[..cut.min(good.len())]);
    }
    for position in HEADER_LEN..good.len() {
        let mut corrupted = good.clone();
        corrupted[position] = 0xff;
        let _ = peek_head(&corrupted);
    }
}

/// The encoder before issue 17: the event as a generic value, resolved against the schema, then
/// written (validating it) with `to_avro_datum`. Kept as the reference the fast one must match.
fn encode_by_resolving(event: &CallEvent) -> Vec<u8> {
    let schema = &*CURRENT_SCHEMA;
    let value = apache_avro::to_value(event)
        .and_then(|value| value.resolve(schema))
        .unwrap();
    let datum = apache_avro::to_avro_datum(schema, value).unwrap();
    [
        &SINGLE_OBJECT_MARKER[..],
        &schema_fingerprint(include_str!("../../call_event.avsc")),
        &datum,
    ]
    .concat()
}

/// A small deterministic generator (SplitMix64), so that the comparison below needs no
/// dependency and fails the same way every run.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self) -> bool {
        self.below(2) == 0
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize].clone()
    }

    /// Values whose varints take one byte, several, or the most.
    fn long(&mut self) -> i64 {
        match self.below(4) {
            0 => self.below(64) as i64 - 32,
            1 => self.pick(&[i64::MIN, i64::MAX, -1, 0, 1 << 35]),
            _ => self.next() as i64,
        }
    }

    fn int(&mut self) -> i32 {
        match self.below(3) {
            0 => self.below(64) as i32 - 32,
            1 => self.pick(&[i32::MIN, i32::MAX, -1, 0]),
            _ => self.next() as i32,
        }
    }

    fn text(&mut self) -> String {
        let pieces = [
            "",
            "a",
            "é",
            "日本",
            "\"q\"",
            "\n",
            "\u{0}",
            "[REDACTED:EMAIL]",
            "x",
        ];
        let n = self.pick(&[0u64, 1, 3, 40, 200]);
        (0..n).map(|_| self.pick(&pieces)).collect()
    }

    fn maybe<T>(&mut self, make: impl FnOnce(&mut Self) -> T) -> Option<T> {
        if self.chance() {
            Some(make(self))
        } else {
            None
        }
    }

    fn list<T>(&mut self, mut make: impl FnMut(&mut Self) -> T) -> Vec<T> {
        let n = self.pick(&[0u64, 0, 1, 2, 7]);
        (0..n).map(|_| make(self)).collect()
    }

    fn event(&mut self) -> CallEvent {
        CallEvent {
            event_id: self.text(),
            call_id: self.text(),
            seq: self.int(),
            kind: self.pick(&EventKind::ALL),
            time: self.long(),
            gateway: self.text(),
            function: self.text(),
            principal: self.maybe(|draw| Principal {
                issuer: draw.text(),
                subject: draw.text(),
                email: draw.maybe(Draw::text),
                groups: draw.list(Draw::text),
                client_id: draw.maybe(Draw::text),
                actor: draw.maybe(|draw| Actor {
                    subject: draw.text(),
                    issuer: draw.maybe(Draw::text),
                    client_id: draw.maybe(Draw::text),
                }),
                authentication: draw.maybe(|draw| Authentication {
                    method: draw.text(),
                    algorithm: draw.text(),
                    key_id: draw.maybe(Draw::text),
                    token_id: draw.maybe(Draw::text),
                    issued_at: draw.maybe(Draw::long),
                    expires_at: draw.maybe(Draw::long),
                }),
            }),
            request: self.maybe(|draw| Request {
                method: draw.text(),
                path: draw.text(),
                body: draw.maybe(Draw::text),
                body_bytes: draw.long(),
                content_type: draw.maybe(Draw::text),
            }),
            response: self.maybe(|draw| Response {
                status: draw.int(),
                body: draw.maybe(Draw::text),
                body_bytes: draw.long(),
                latency_micros: draw.long(),
            }),
            decision: self.maybe(|draw| Decision {
                allowed: draw.chance(),
                policy_id: draw.maybe(Draw::text),
                reason: draw.text(),
            }),
            approval: self.maybe(|draw| Approval {
                approvers: draw.list(Draw::text),
                quorum: draw.int(),
                reviewer: draw.maybe(Draw::text),
                decision: draw
                    .maybe(|draw| draw.pick(&[ApprovalDecision::Approve, ApprovalDecision::Deny])),
                comment: draw.maybe(Draw::text),
                expires_at: draw.maybe(Draw::long),
                arguments_sha256: draw.maybe(Draw::text),
            }),
            failure: self.maybe(|draw| Failure {
                code: draw.text(),
                message: draw.text(),
            }),
            masking: self.list(|draw| MaskingFinding {
                detector: draw.text(),
                path: draw.text(),
                count: draw.int(),
            }),
            mcp: self.maybe(|draw| Mcp {
                method: draw.text(),
                server: draw.maybe(Draw::text),
                tool: draw.maybe(Draw::text),
                jsonrpc_id: draw.maybe(Draw::text),
                session: draw.maybe(Draw::text),
                protocol_version: draw.maybe(Draw::text),
                client: draw.maybe(Draw::text),
                outcome: draw.maybe(|draw| draw.pick(&McpOutcome::ALL)),
                error_code: draw.maybe(Draw::int),
            }),
        }
    }
}

/// Issue 17: `encode` writes straight from the struct. Its bytes must be those of the encoder
/// it replaced, which resolved every event against the schema by field and symbol name, so a
/// field or an enum variant declared out of the schema's order would show here.
#[test]
fn encode_writes_what_the_resolving_encoder_wrote() {
    let mut draw = Draw(17);
    let mut events = vec![full_event(), full_event_v1()];
    events.extend(EventKind::ALL.into_iter().map(minimal_event));
    events.extend((0..2_000).map(|_| draw.event()));
    for event in &events {
        let message = encode(event).unwrap();
        assert_eq!(message, encode_by_resolving(event), "{event:#?}");
        assert_eq!(&decode(&message).unwrap(), event);
    }
}
