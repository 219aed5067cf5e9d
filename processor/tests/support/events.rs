//! Synthetic call events with realistic PII density, shared by the tests and the benchmark.

use callproof_schemas::{Actor, CallEvent, Decision, EventKind, Principal, Request, Response};
use rand::Rng;

/// One value of every built-in detector, valid for its validator, as a gateway that did not
/// mask inline would let through.
pub const PLANTED: [(&str, &str); 10] = [
    ("CREDIT_CARD", "4111 1111 1111 1111"),
    ("US_SSN", "536-22-8731"),
    ("IBAN", "DE89370400440532013000"),
    ("EMAIL", "jane.planted@example.org"),
    ("PHONE", "+1 415 555 0132"),
    ("IP_ADDRESS", "203.0.113.42"),
    ("AWS_ACCESS_KEY", "AKIAIOSFODNN7QWERTYZ"),
    (
        "JWT",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ),
    ("BEARER_TOKEN", "Bearer zq81Kd0sPl4mTr7wXv2nBc9y"),
    (
        "PRIVATE_KEY",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx7plantedKEYmaterial0123456789\n-----END RSA PRIVATE KEY-----",
    ),
];

/// The part of each planted value that must never appear in any output (for the bearer
/// header, the token; for the PEM block, its body).
pub fn secret_part(value: &str) -> &str {
    if let Some(token) = value.strip_prefix("Bearer ") {
        return token;
    }
    if value.starts_with("-----BEGIN") {
        return "MIIEowIBAAKCAQEAx7plantedKEYmaterial0123456789";
    }
    value
}

const FIRST: [&str; 8] = ["ana", "bo", "chen", "dara", "eli", "fatima", "gus", "hana"];
const WORDS: [&str; 12] = [
    "refund", "order", "shipment", "delayed", "customer", "asked", "about", "invoice", "status",
    "update", "account", "balance",
];

fn luhn_card(rng: &mut impl Rng) -> String {
    let mut digits: Vec<u32> = vec![4];
    for _ in 0..14 {
        digits.push(rng.gen_range(0..10));
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(position, &digit)| {
            if position % 2 == 0 {
                let doubled = digit * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                digit
            }
        })
        .sum();
    digits.push((10 - sum % 10) % 10);
    digits
        .iter()
        .map(|digit| char::from_digit(*digit, 10).unwrap_or('0'))
        .collect()
}

/// A JSON body of about `size` bytes with a few PII values: an e-mail, a phone number and a
/// card number in fields, plus free text.
pub fn body(rng: &mut impl Rng, size: usize) -> String {
    let name = FIRST[rng.gen_range(0..FIRST.len())];
    let mut note = String::new();
    while note.len() + 260 < size {
        note.push_str(WORDS[rng.gen_range(0..WORDS.len())]);
        note.push(' ');
    }
    serde_json::json!({
        "customer": {
            "name": name,
            "email": format!("{name}.{}@example.com", rng.gen_range(1000..9999)),
            "phone": format!("+1 212 555 {:04}", rng.gen_range(0..10000)),
            "card_number": luhn_card(rng),
        },
        "order_id": format!("ORD-{}", rng.gen_range(100000..999999)),
        "note": note,
    })
    .to_string()
}

/// One completed call event with request and response bodies of about `body_bytes` each.
pub fn call_event(rng: &mut impl Rng, sequence: u64, body_bytes: usize) -> CallEvent {
    let call_id = format!("call-{sequence:08}-{:06x}", rng.gen_range(0..0xffffff));
    CallEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        call_id,
        seq: 1,
        kind: EventKind::CallCompleted,
        time: now_micros(),
        gateway: "gw-bench".into(),
        function: "get_customer".into(),
        principal: Some(Principal {
            issuer: "https://issuer.example".into(),
            subject: format!("user-{}", sequence % 50),
            email: None,
            groups: vec!["support".into()],
            client_id: Some("agent-app".into()),
            actor: Some(Actor {
                subject: "agent-7".into(),
                issuer: None,
                client_id: Some("agent-app".into()),
            }),
            authentication: None,
        }),
        request: Some(Request {
            method: "POST".into(),
            path: "/v1/functions/get_customer/invoke".into(),
            body: Some(body(rng, body_bytes)),
            body_bytes: body_bytes as i64,
            content_type: Some("application/json".into()),
        }),
        response: Some(Response {
            status: 200,
            body: Some(body(rng, body_bytes)),
            body_bytes: body_bytes as i64,
            latency_micros: 1200,
        }),
        decision: Some(Decision {
            allowed: true,
            policy_id: Some("support-read".into()),
            reason: "group support may call get_customer".into(),
        }),
        approval: None,
        failure: None,
        masking: Vec::new(),
        mcp: None,
    }
}

pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as i64)
        .unwrap_or_default()
}
