//! Call events as the gateway would publish them, for the tests that feed the processor
//! directly.

use callproof_schemas::{CallEvent, Decision, EventKind, Principal};

pub(crate) fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as i64)
        .unwrap_or_default()
}

/// The events of one call, one kind each, a millisecond apart.
pub(crate) fn call(call_id: &str, start: i64, kinds: &[EventKind]) -> Vec<CallEvent> {
    kinds
        .iter()
        .enumerate()
        .map(|(seq, kind)| CallEvent {
            event_id: uuid::Uuid::now_v7().to_string(),
            call_id: call_id.to_string(),
            seq: seq as i32,
            kind: *kind,
            time: start + seq as i64 * 1_000,
            gateway: "e2e-gateway".into(),
            function: "lookup_customer".into(),
            principal: Some(Principal {
                issuer: "https://issuer.example".into(),
                subject: "alice".into(),
                email: None,
                groups: vec!["support".into()],
                client_id: Some("agent-app".into()),
                actor: None,
                authentication: None,
            }),
            request: None,
            response: None,
            decision: (*kind == EventKind::CallDenied).then(|| Decision {
                allowed: false,
                policy_id: Some("support-read".into()),
                reason: "group sales may not call lookup_customer".into(),
            }),
            approval: None,
            failure: None,
            masking: Vec::new(),
            mcp: None,
        })
        .collect()
}
