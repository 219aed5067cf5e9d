//! Every SIEM record is valid OCSF: events of every kind (and a message that is not an event)
//! go through the real binary, and each record it publishes, read back with Python
//! `confluent-kafka`, is checked by `validate_ocsf.py` against the official OCSF schema of the
//! version the record declares (PyPI `ocsf-json-schema` and `jsonschema`, nothing of ours).

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use callproof_processor::siem::{OCSF_VERSION, stub_record};
use callproof_schemas::{
    Actor, Approval, ApprovalDecision, CallEvent, Decision, EventKind, Failure, Mcp, McpOutcome,
    Principal,
};
use rand::SeedableRng;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

use crate::support::events::call_event;
use crate::support::{Deployment, brokers, read_topic_with_python, spawn_processor};

/// The events of one call each of the ways a call goes, plus the odd ones: an unauthenticated
/// refusal (no principal), principals with and without e-mail, groups and acting agent, a body
/// over the SIEM record's limit, and a failure message so long that the record becomes a stub.
fn events_of_every_kind() -> Vec<CallEvent> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(6003);
    let mut next = |kind: EventKind| {
        let mut event = call_event(&mut rng, 0, 1000);
        event.kind = kind;
        event
    };
    let mut events = Vec::new();

    // A call that goes through: received, forwarded, completed.
    let mut received = next(EventKind::CallReceived);
    received.response = None;
    received.decision = None;
    let mut forwarded = next(EventKind::CallForwarded);
    forwarded.response = None;
    let completed = next(EventKind::CallCompleted);
    // One the function answered with an error, and one it never answered.
    let mut completed_with_error = next(EventKind::CallCompleted);
    completed_with_error
        .response
        .as_mut()
        .expect("response")
        .status = 404;
    let mut failed = next(EventKind::CallFailed);
    failed.response = None;
    failed.failure = Some(Failure {
        code: "upstream_timeout".into(),
        message: "the function did not answer within 30 s".into(),
    });
    events.extend([received, forwarded, completed, completed_with_error, failed]);

    // Refusals: by policy, and before anyone was authenticated (no principal at all).
    let mut denied = next(EventKind::CallDenied);
    denied.response = None;
    denied.decision = Some(Decision {
        allowed: false,
        policy_id: Some("support-read".into()),
        reason: "group sales may not call get_customer".into(),
    });
    denied.failure = Some(Failure {
        code: "forbidden".into(),
        message: "not allowed to call `get_customer`".into(),
    });
    let mut unauthenticated = next(EventKind::CallDenied);
    unauthenticated.principal = None;
    unauthenticated.response = None;
    unauthenticated.request.as_mut().expect("request").body = None;
    unauthenticated.decision = Some(Decision {
        allowed: false,
        policy_id: None,
        reason: "missing bearer token".into(),
    });
    unauthenticated.failure = Some(Failure {
        code: "unauthenticated".into(),
        message: "missing bearer token".into(),
    });
    events.extend([denied, unauthenticated]);

    // Approvals: requested, decided both ways, expired.
    let approval = Approval {
        approvers: vec!["leads".into()],
        quorum: 1,
        reviewer: None,
        decision: None,
        comment: None,
        expires_at: Some(1_767_229_200_000_000),
        arguments_sha256: Some("ab".repeat(32)),
    };
    let mut requested = next(EventKind::ApprovalRequested);
    requested.response = None;
    requested.approval = Some(approval.clone());
    let mut approved = next(EventKind::ApprovalDecided);
    approved.response = None;
    approved.approval = Some(Approval {
        reviewer: Some("lead-1".into()),
        decision: Some(ApprovalDecision::Approve),
        comment: Some("ok".into()),
        ..approval.clone()
    });
    let mut refused = next(EventKind::ApprovalDecided);
    refused.response = None;
    refused.approval = Some(Approval {
        reviewer: Some("lead-2".into()),
        decision: Some(ApprovalDecision::Deny),
        ..approval.clone()
    });
    let mut expired = next(EventKind::ApprovalExpired);
    expired.response = None;
    expired.approval = Some(approval);
    events.extend([requested, approved, refused, expired]);

    // Principals: the least a token gives (no e-mail, groups, client or agent), and the most.
    let mut bare_principal = next(EventKind::CallCompleted);
    bare_principal.principal = Some(Principal {
        issuer: "https://issuer.example".into(),
        subject: "user-bare".into(),
        email: None,
        groups: Vec::new(),
        client_id: None,
        actor: None,
        authentication: None,
    });
    let mut full_principal = next(EventKind::CallCompleted);
    if let Some(principal) = full_principal.principal.as_mut() {
        principal.email = Some("jane.doe@example.com".into());
        principal.groups.push("leads".into());
        principal.actor = Some(Actor {
            subject: "agent-9".into(),
            issuer: Some("https://issuer.example".into()),
            client_id: None,
        });
    }
    // An `email` claim that is not an address OCSF takes (issuers put what they like there).
    let mut odd_email = next(EventKind::CallCompleted);
    if let Some(principal) = odd_email.principal.as_mut() {
        principal.email = Some("Jane Doe (support)".into());
    }
    // A method OCSF 1.4.0's `http_method` enum lacks.
    let mut patch = next(EventKind::CallCompleted);
    patch.request.as_mut().expect("request").method = "PATCH".into();
    events.extend([bare_principal, full_principal, odd_email, patch]);

    // Sizes: a body left out of the record, and a record cut down to its stub.
    let mut large_body = next(EventKind::CallCompleted);
    large_body.response.as_mut().expect("response").body =
        Some(format!("\"{}\"", "b".repeat(40 * 1024)));
    let mut oversized = next(EventKind::CallFailed);
    oversized.response = None;
    oversized.failure = Some(Failure {
        code: "upstream_error".into(),
        message: "x".repeat(600 * 1024),
    });
    events.extend([large_body, oversized]);

    // MCP: a tool call the upstream answered with a JSON-RPC error, and a request refused
    // before any tool was known.
    let mut tool_call = next(EventKind::CallCompleted);
    tool_call.function = "mcp:crm__get_customer".into();
    tool_call.mcp = Some(Mcp {
        method: "tools/call".into(),
        server: Some("crm".into()),
        tool: Some("get_customer".into()),
        jsonrpc_id: Some("7".into()),
        session: Some("0123456789abcdef".into()),
        protocol_version: Some("2025-11-25".into()),
        client: Some("claude-code/2.1.0".into()),
        outcome: Some(McpOutcome::JsonrpcError),
        error_code: Some(-32602),
    });
    let mut mcp_refused = next(EventKind::CallDenied);
    mcp_refused.function = "mcp".into();
    mcp_refused.response = None;
    mcp_refused.mcp = Some(Mcp {
        method: "tools/call".into(),
        ..Mcp::default()
    });
    events.extend([tool_call, mcp_refused]);
    events
}

/// Produces the events, then a message that is not an event, to the deployment's calls topic.
async fn produce_all(deployment: &Deployment, events: &[CallEvent]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("message.max.bytes", "10000000")
        .create()
        .expect("producer");
    crate::support::produce(&producer, &deployment.topic, events).await;
    producer
        .send(
            FutureRecord::to(&deployment.topic)
                .key("not-an-event")
                .payload(&b"\xc3\x01 this is not an Avro call event"[..]),
            Duration::from_secs(30),
        )
        .await
        .expect("delivered");
}

/// Runs the processor over the deployment's topic until every message is logged; returns the
/// SIEM records as published, one per line.
async fn process(deployment: &Deployment, n_messages: usize, kafka_properties: &str) -> String {
    let (config, _) = deployment.write_config_with("deploy.toml", kafka_properties, "");
    let stderr = deployment.dir.path().join("processor.log");
    let mut processor = spawn_processor(&config, &stderr, "info");
    deployment
        .wait_for_logged(n_messages as u64, Duration::from_secs(120))
        .await;
    processor.stop();
    read_topic_with_python(&deployment.siem_topic, 1)
}

/// `validate_ocsf.py` over the records (JSON lines): its report, and whether all are valid.
fn validate(records: &str) -> (bool, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/validate_ocsf.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(records.as_bytes())
        .expect("records to the validator");
    let output = child.wait_with_output().expect("validator");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), report)
}

fn assert_valid(what: &str, records: &str) {
    let (valid, report) = validate(records);
    assert!(valid, "{what} are not valid OCSF:\n{report}");
}

fn parse(records: &str) -> Vec<Value> {
    records
        .lines()
        .map(|line| serde_json::from_str(line).expect("SIEM record is JSON"))
        .collect()
}

fn is_stub(record: &Value) -> bool {
    record["unmapped"]["callproof"]["truncated"] == true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_siem_record_is_valid_ocsf_of_the_version_it_declares() {
    let events = events_of_every_kind();
    let n_messages = events.len() + 1;
    let deployment = Deployment::new(1).await;
    produce_all(&deployment, &events).await;
    let text = process(&deployment, n_messages, "").await;
    let records = parse(&text);
    assert_eq!(records.len(), n_messages, "one record per message:\n{text}");
    for record in &records {
        assert_eq!(record["metadata"]["version"], OCSF_VERSION);
        assert_eq!(record["class_uid"], 6003);
    }
    // Every kind is there, the message that is not an event too; the oversized one as a stub.
    for kind in EventKind::ALL {
        assert!(
            records
                .iter()
                .any(|record| record["activity_name"] == kind.as_str()),
            "no {kind} record"
        );
    }
    assert!(
        records
            .iter()
            .any(|record| record["activity_name"] == "Unknown")
    );
    assert_eq!(records.iter().filter(|record| is_stub(record)).count(), 1);
    assert!(
        records
            .iter()
            .any(|record| record["unmapped"]["callproof"]["response"]["body_omitted"].is_object())
    );
    assert_valid("the SIEM records", &text);

    // Where OCSF requires what the event lacks, the record says so.
    let unauthenticated = records
        .iter()
        .find(|record| record["unmapped"]["callproof"]["failure"]["code"] == "unauthenticated")
        .expect("the unauthenticated refusal's record");
    assert_eq!(unauthenticated["actor"]["user"]["name"], "unauthenticated");
    assert_eq!(unauthenticated["src_endpoint"]["name"], "unknown");
    let odd_email = records
        .iter()
        .find(|record| record["unmapped"]["callproof"]["principal_email"].is_string())
        .expect("the record of the odd e-mail claim");
    assert_eq!(
        odd_email["unmapped"]["callproof"]["principal_email"],
        "Jane Doe (support)"
    );
    assert!(odd_email["actor"]["user"].get("email_addr").is_none());
    assert!(records.iter().any(|record| {
        record["unmapped"]["callproof"]["request"]["method"] == "PATCH"
            && record["http_request"].get("http_method").is_none()
    }));
    assert!(records.iter().any(|record| {
        record["actor"]["user"]["email_addr"] == "jane.doe@example.com"
            && record["actor"]["app_name"] == "agent-9"
    }));
    // An MCP call carries its MCP facts, absent values left out; other calls have none.
    let tool_call = records
        .iter()
        .find(|record| record["api"]["operation"] == "mcp:crm__get_customer")
        .expect("the MCP tool call's record");
    assert_eq!(
        tool_call["unmapped"]["callproof"]["mcp"],
        serde_json::json!({
            "method": "tools/call", "server": "crm", "tool": "get_customer", "jsonrpc_id": "7",
            "session": "0123456789abcdef", "protocol_version": "2025-11-25",
            "client": "claude-code/2.1.0", "outcome": "jsonrpc_error", "error_code": -32602,
        })
    );
    let mcp_refused = records
        .iter()
        .find(|record| record["api"]["operation"] == "mcp")
        .expect("the MCP refusal's record");
    assert_eq!(
        mcp_refused["unmapped"]["callproof"]["mcp"],
        serde_json::json!({"method": "tools/call"})
    );
    assert_eq!(
        records
            .iter()
            .filter(|record| record["unmapped"]["callproof"].get("mcp").is_some())
            .count(),
        2
    );

    // The stub of each of them (what a record too large for the broker becomes) is valid too.
    let stubs: Vec<String> = records
        .iter()
        .map(|record| stub_record(record).to_string())
        .collect();
    assert_valid("the records' stubs", &stubs.join("\n"));
}

/// The stubs the processor publishes when the producer refuses records for their size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn siem_stubs_of_records_refused_as_too_large_are_valid_ocsf() {
    let events: Vec<CallEvent> = events_of_every_kind()
        .into_iter()
        .filter(|event| {
            event
                .failure
                .as_ref()
                .is_none_or(|failure| failure.message.len() < 1000)
        })
        .collect();
    let n_messages = events.len() + 1;
    let deployment = Deployment::new(1).await;
    produce_all(&deployment, &events).await;
    let text = process(&deployment, n_messages, r#""message.max.bytes" = "1800""#).await;
    let records = parse(&text);
    assert_eq!(records.len(), n_messages, "one record per message:\n{text}");
    let n_stubs = records.iter().filter(|record| is_stub(record)).count();
    assert!(n_stubs >= events.len() / 2, "{n_stubs} stubs:\n{text}");
    assert_valid("the SIEM records and stubs", &text);
}
