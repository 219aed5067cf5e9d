//! Just-in-time approval (issue 7): held calls, reviewers, separation of duties, quorum, deny,
//! expiry, replay, the webhook and the events, on the real broker.

use std::time::Duration;

use callproof_schemas::{ApprovalDecision, EventKind};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::{Harness, error_code, kinds};

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn approve(comment: &str) -> Value {
    json!({"decision": "approve", "comment": comment})
}

#[tokio::test]
async fn a_call_the_condition_does_not_match_runs_without_approval() {
    let gateway = Harness::start().await;
    let answer = gateway
        .invoke_as_alice("transfer", &json!({"amount": 20, "env": "dev"}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let events = gateway.events_of(answer.call_id.as_deref().unwrap(), 3);
    assert_eq!(
        kinds(&events),
        [
            EventKind::CallReceived,
            EventKind::CallForwarded,
            EventKind::CallCompleted
        ]
    );
}

/// Fail closed: a condition that cannot be decided for the arguments (a string where it
/// compares a number) holds the call for approval, and the recorded reason names the
/// condition, not the value.
#[tokio::test]
async fn a_condition_that_errors_requires_approval_and_records_no_value() {
    let gateway = Harness::start().await;
    let answer = gateway
        .invoke_as_alice("transfer", &json!({"amount": "4111 1111 1111 1111"}))
        .await;
    assert_eq!(answer.status, 202, "{}", answer.text);
    assert_eq!(answer.body["status"], "pending_approval");
    assert_eq!(gateway.functions.calls(), 0);
    let events = gateway.events_of(answer.call_id.as_deref().unwrap(), 2);
    assert_eq!(
        kinds(&events),
        [EventKind::CallReceived, EventKind::ApprovalRequested]
    );
    let reason = &events[1].decision.as_ref().unwrap().reason;
    assert!(
        reason.contains("condition `functions.transfer.approval.condition` could not be decided"),
        "{reason}"
    );
    assert!(!reason.contains("4111"), "{reason}");
}

#[tokio::test]
async fn a_held_call_runs_once_approved_with_exactly_the_approved_arguments() {
    let gateway = Harness::start().await;
    let alice = gateway.issuer.token("alice", &["support"]);
    let bob = gateway.issuer.token("bob", &["treasury"]);
    let arguments = json!({"amount": 5000, "iban": "DE89370400440532013000", "to": "ACME"});

    // Alice is held (Prefer: wait) while bob decides.
    let held = {
        let gateway_url = gateway.url.clone();
        let alice = alice.clone();
        let body = arguments.to_string();
        tokio::spawn(async move {
            crate::harness::answer(
                reqwest::Client::new()
                    .post(format!("{gateway_url}/v1/functions/transfer/invoke"))
                    .header("prefer", "wait=15")
                    .bearer_auth(alice)
                    .header("content-type", "application/json")
                    .body(body),
            )
            .await
        })
    };

    // The reviewers are told, with a link to the decision and no argument in the message.
    let message = gateway
        .webhook
        .wait_for("transfer", Duration::from_secs(10))
        .await
        .expect("webhook message");
    let text = message["text"].as_str().unwrap();
    assert!(
        text.contains("alice") && text.contains("/v1/approvals/"),
        "{text}"
    );
    assert!(
        !text.contains("DE89370400440532013000") && !text.contains("ACME"),
        "{text}"
    );
    assert!(message["blocks"].is_array());

    // Bob lists what waits for him: the masked arguments and their hash.
    let pending = gateway.get("/v1/approvals?status=pending", &bob).await;
    assert_eq!(pending.status, 200, "{}", pending.text);
    let listed = &pending.body["approvals"][0];
    let call_id = listed["call_id"].as_str().unwrap().to_string();
    assert!(text.contains(&call_id));
    assert_eq!(listed["caller"]["subject"], "alice");
    assert_eq!(listed["arguments"]["iban"], "[REDACTED:FIELD]");
    assert_eq!(listed["arguments"]["amount"], 5000);
    // Why it waits: the recorded reason names the condition, and the condition in force.
    assert!(
        listed["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("holds") && !reason.contains("5000")),
        "{listed}"
    );
    assert_eq!(
        listed["condition"],
        r#"args.amount > 1000 || (has(args.env) && args.env == "prod")"#
    );
    let held_sha256 = listed["arguments_sha256"].as_str().unwrap().to_string();
    assert_eq!(gateway.functions.calls(), 0, "nothing runs before approval");

    let decided = gateway
        .post(
            &format!("/v1/approvals/{call_id}"),
            &bob,
            &json!({"decision": "approve", "comment": "invoice 2024-118", "arguments_sha256": held_sha256}),
        )
        .await;
    assert_eq!(decided.status, 200, "{}", decided.text);
    assert_eq!(decided.body["status"], "approved");

    // Alice gets the function's answer, as for a direct call.
    let answer = held.await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.call_id.as_deref(), Some(call_id.as_str()));
    assert_eq!(answer.body["received"]["amount"], 5000);
    let received = gateway.functions.received();
    assert_eq!(received.len(), 1, "executed exactly once");
    assert_eq!(
        sha256_hex(&received[0].body),
        held_sha256,
        "the approved bytes ran"
    );
    assert_eq!(received[0].header("x-callproof-subject"), Some("alice"));

    // The decision cannot be replayed or reused.
    let replay = gateway
        .post(&format!("/v1/approvals/{call_id}"), &bob, &approve("again"))
        .await;
    assert_eq!(replay.status, 409, "{}", replay.text);
    let carol = gateway.issuer.token("carol", &["treasury"]);
    let late = gateway
        .post(
            &format!("/v1/approvals/{call_id}"),
            &carol,
            &approve("me too"),
        )
        .await;
    assert_eq!(late.status, 409, "{}", late.text);

    // The result, to the caller only.
    let status = gateway.get(&format!("/v1/calls/{call_id}"), &alice).await;
    assert_eq!(status.status, 200, "{}", status.text);
    assert_eq!(status.body["status"], "completed");
    assert_eq!(status.body["result"]["body"]["received"]["amount"], 5000);
    let mallory = gateway.issuer.token("mallory", &["support"]);
    assert_eq!(
        gateway
            .get(&format!("/v1/calls/{call_id}"), &mallory)
            .await
            .status,
        404
    );
    assert_eq!(
        gateway
            .get(&format!("/v1/calls/{call_id}"), &bob)
            .await
            .status,
        404
    );

    // The evidence, in order, acknowledged on the calls topic.
    let events = gateway.events_of(&call_id, 5);
    assert_eq!(
        kinds(&events),
        [
            EventKind::CallReceived,
            EventKind::ApprovalRequested,
            EventKind::ApprovalDecided,
            EventKind::CallForwarded,
            EventKind::CallCompleted
        ]
    );
    assert_eq!(
        events.iter().map(|event| event.seq).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    let requested = events[1].approval.as_ref().unwrap();
    assert_eq!(requested.approvers, ["treasury"]);
    assert_eq!(requested.quorum, 1);
    assert_eq!(
        requested.arguments_sha256.as_deref(),
        Some(held_sha256.as_str())
    );
    let expires_in = requested.expires_at.unwrap() - events[1].time;
    assert!(
        (899_000_000..=900_000_000).contains(&expires_in),
        "default expiry is 15 minutes"
    );
    assert!(
        events[1]
            .decision
            .as_ref()
            .unwrap()
            .reason
            .contains("condition `functions.transfer.approval.condition` holds")
    );
    let decision = events[2].approval.as_ref().unwrap();
    assert_eq!(decision.reviewer.as_deref(), Some("bob"));
    assert_eq!(decision.decision, Some(ApprovalDecision::Approve));
    assert_eq!(decision.comment.as_deref(), Some("invoice 2024-118"));
    assert_eq!(
        decision.arguments_sha256.as_deref(),
        Some(held_sha256.as_str())
    );
    assert_eq!(events[3].gateway, "gw-test");
}

#[tokio::test]
async fn the_caller_its_agent_and_reviewers_outside_the_groups_cannot_decide() {
    let gateway = Harness::start().await;
    // Alice is in both groups: she may call, and approve others' calls, never her own.
    let mut claims = gateway.issuer.claims("alice", &["support", "treasury"]);
    claims["act"] = json!({"sub": "agent-7"});
    let alice_via_agent =
        callproof_tests::issuer::sign(&gateway.issuer.key(jsonwebtoken::Algorithm::ES256), &claims);
    let answer = gateway
        .invoke(
            "wire",
            Some(&alice_via_agent),
            &json!({"amount": 1}).to_string(),
        )
        .await;
    // No Prefer header: answered at once.
    assert_eq!(answer.status, 202, "{}", answer.text);
    let call_id = answer.body["call_id"].as_str().unwrap().to_string();
    assert_eq!(answer.body["status"], "pending_approval");
    assert!(
        answer.body["status_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/v1/calls/{call_id}"))
    );
    let path = format!("/v1/approvals/{call_id}");

    let alice = gateway.issuer.token("alice", &["support", "treasury"]);
    let own = gateway
        .post(&path, &alice, &approve("looks fine to me"))
        .await;
    assert_eq!(own.status, 403, "{}", own.text);
    assert!(own.text.contains("own call"), "{}", own.text);
    // The acting agent, with a token of its own in the approver group.
    let agent = gateway.issuer.token("agent-7", &["treasury"]);
    assert_eq!(
        gateway.post(&path, &agent, &approve("ok")).await.status,
        403
    );
    // An approver acting through an agent is not a person deciding.
    let mut delegated = gateway.issuer.claims("bob", &["treasury"]);
    delegated["act"] = json!({"sub": "auto-approver"});
    let delegated = callproof_tests::issuer::sign(
        &gateway.issuer.key(jsonwebtoken::Algorithm::ES256),
        &delegated,
    );
    assert_eq!(
        gateway.post(&path, &delegated, &approve("ok")).await.status,
        403
    );
    // Outside the approver groups.
    let mallory = gateway.issuer.token("mallory", &["support"]);
    let outside = gateway.post(&path, &mallory, &approve("ok")).await;
    assert_eq!(outside.status, 403, "{}", outside.text);
    assert_eq!(error_code(&outside), "forbidden");
    // Nor do they see it in their list.
    let listed = gateway.get("/v1/approvals", &mallory).await;
    assert_eq!(listed.body["approvals"], json!([]));
    let listed = gateway.get("/v1/approvals", &alice).await;
    assert_eq!(listed.body["approvals"], json!([]));
    assert_eq!(
        gateway
            .post(&path, &mallory, &json!({"decision": "maybe"}))
            .await
            .status,
        400
    );

    // Still pending, nothing recorded but the request, nothing called.
    let status = gateway.get(&format!("/v1/calls/{call_id}"), &alice).await;
    assert_eq!(status.body["status"], "pending_approval", "{}", status.text);
    assert_eq!(status.body["approvals"], 0);
    let events = gateway.events_of(&call_id, 2);
    assert_eq!(
        kinds(&events),
        [EventKind::CallReceived, EventKind::ApprovalRequested]
    );
    assert_eq!(gateway.functions.calls(), 0);
}

#[tokio::test]
async fn one_deny_after_one_approve_of_a_quorum_of_two_ends_the_call() {
    let gateway = Harness::start().await;
    let alice = gateway.issuer.token("alice", &["support"]);
    let answer = gateway
        .invoke("wire", Some(&alice), &json!({"amount": 99}).to_string())
        .await;
    assert_eq!(answer.status, 202, "{}", answer.text);
    let call_id = answer.body["call_id"].as_str().unwrap().to_string();
    let path = format!("/v1/approvals/{call_id}");

    let bob = gateway.issuer.token("bob", &["treasury"]);
    let first = gateway.post(&path, &bob, &approve("ok")).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.body["status"], "pending_approval");
    assert_eq!(first.body["approvals"], 1);
    // The same approver twice is one approval.
    assert_eq!(gateway.post(&path, &bob, &approve("ok!")).await.status, 409);

    let carol = gateway.issuer.token("carol", &["risk"]);
    let deny = gateway
        .post(
            &path,
            &carol,
            &json!({"decision": "deny", "comment": "not this quarter"}),
        )
        .await;
    assert_eq!(deny.status, 200, "{}", deny.text);
    assert_eq!(deny.body["status"], "denied");
    let dave = gateway.issuer.token("dave", &["treasury"]);
    assert_eq!(gateway.post(&path, &dave, &approve("ok")).await.status, 409);

    // The caller hears a clear 403, and the function was never called.
    let status = gateway.get(&format!("/v1/calls/{call_id}"), &alice).await;
    assert_eq!(status.status, 403, "{}", status.text);
    assert_eq!(error_code(&status), "approval_denied");
    assert!(status.text.contains("not this quarter"));
    let events = gateway.events_of(&call_id, 4);
    assert_eq!(
        kinds(&events),
        [
            EventKind::CallReceived,
            EventKind::ApprovalRequested,
            EventKind::ApprovalDecided,
            EventKind::ApprovalDecided
        ]
    );
    let deny = events[3].approval.as_ref().unwrap();
    assert_eq!(deny.reviewer.as_deref(), Some("carol"));
    assert_eq!(deny.decision, Some(ApprovalDecision::Deny));
    assert_eq!(deny.comment.as_deref(), Some("not this quarter"));
    assert!(
        events[3]
            .decision
            .as_ref()
            .unwrap()
            .reason
            .contains("group risk")
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(gateway.functions.calls(), 0);
}

#[tokio::test]
async fn an_unanswered_approval_expires_and_the_function_is_never_called() {
    let gateway = Harness::start().await;
    let alice = gateway.issuer.token("alice", &["support"]);
    let started = std::time::Instant::now();
    let answer = gateway
        .invoke_waiting("quick_expiry", &alice, &json!({"n": 1}).to_string(), 15)
        .await;
    assert_eq!(answer.status, 403, "{}", answer.text);
    assert_eq!(error_code(&answer), "approval_expired");
    assert!(started.elapsed() < Duration::from_secs(10));
    let call_id = answer.call_id.clone().unwrap();

    let bob = gateway.issuer.token("bob", &["treasury"]);
    let late = gateway
        .post(
            &format!("/v1/approvals/{call_id}"),
            &bob,
            &approve("sorry, late"),
        )
        .await;
    assert_eq!(late.status, 409, "{}", late.text);
    let events = gateway.events_of(&call_id, 3);
    assert_eq!(
        kinds(&events),
        [
            EventKind::CallReceived,
            EventKind::ApprovalRequested,
            EventKind::ApprovalExpired
        ]
    );
    assert_eq!(gateway.functions.calls(), 0);
}

#[tokio::test]
async fn with_the_broker_gone_holds_and_decisions_get_503_and_nothing_happens() {
    let mut kafka = callproof_tests::broker::PrivateBroker::start().unwrap();
    let gateway = Harness::start_on(kafka.bootstrap.clone()).await;
    let alice = gateway.issuer.token("alice", &["support"]);
    let answer = gateway
        .invoke(
            "transfer",
            Some(&alice),
            &json!({"amount": 5000}).to_string(),
        )
        .await;
    assert_eq!(answer.status, 202, "{}", answer.text);
    let call_id = answer.body["call_id"].as_str().unwrap().to_string();

    kafka.stop();
    // The approval cannot be recorded, so it does not happen.
    let bob = gateway.issuer.token("bob", &["treasury"]);
    let decided = gateway
        .post(&format!("/v1/approvals/{call_id}"), &bob, &approve("ok"))
        .await;
    assert_eq!(decided.status, 503, "{}", decided.text);
    assert_eq!(error_code(&decided), "audit_unavailable");
    // A new call needing approval cannot be held without its record.
    let held = gateway
        .invoke(
            "transfer",
            Some(&alice),
            &json!({"amount": 7000}).to_string(),
        )
        .await;
    assert_eq!(held.status, 503, "{}", held.text);
    let status = gateway.get(&format!("/v1/calls/{call_id}"), &alice).await;
    assert_eq!(status.body["status"], "pending_approval", "{}", status.text);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(gateway.functions.calls(), 0);
}
