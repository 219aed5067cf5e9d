use callproof_schemas::{Actor, Approval, Request};

use super::*;

const ARGUMENTS: &str = r#"{"amount":5000}"#;

fn principal(subject: &str, actor: Option<&str>) -> Principal {
    Principal {
        issuer: "https://issuer".into(),
        subject: subject.into(),
        email: None,
        groups: vec![],
        client_id: None,
        actor: actor.map(|actor| Actor {
            subject: actor.into(),
            issuer: None,
            client_id: None,
        }),
        authentication: None,
    }
}

fn event(kind: EventKind, seq: i32, gateway: &str) -> CallEvent {
    CallEvent {
        event_id: format!("event-{seq}-{gateway}"),
        call_id: "call-1".into(),
        seq,
        kind,
        time: 1_000 + i64::from(seq),
        gateway: gateway.into(),
        function: "transfer".into(),
        principal: Some(principal("alice", Some("agent-7"))),
        request: None,
        response: None,
        decision: None,
        approval: None,
        failure: None,
        masking: vec![],
        mcp: None,
    }
}

fn requested(quorum: i32) -> CallEvent {
    let mut requested = event(EventKind::ApprovalRequested, 1, "gw-a");
    requested.request = Some(Request {
        method: "POST".into(),
        path: "/v1/functions/transfer/invoke".into(),
        body: Some(ARGUMENTS.into()),
        body_bytes: 15,
        content_type: None,
    });
    requested.approval = Some(Approval {
        approvers: vec!["treasury".into()],
        quorum,
        reviewer: None,
        decision: None,
        comment: None,
        expires_at: Some(2_000),
        arguments_sha256: Some(arguments_sha256(ARGUMENTS.as_bytes())),
    });
    requested
}

fn vote(seq: i32, reviewer: &str, decision: ApprovalDecision) -> CallEvent {
    let mut decided = event(EventKind::ApprovalDecided, seq, "gw-b");
    decided.approval = Some(Approval {
        approvers: vec![],
        quorum: 0,
        reviewer: Some(reviewer.into()),
        decision: Some(decision),
        comment: None,
        expires_at: None,
        arguments_sha256: Some(arguments_sha256(ARGUMENTS.as_bytes())),
    });
    decided
}

fn ledger_with(quorum: i32) -> Ledger {
    let mut ledger = Ledger::default();
    assert!(ledger.apply(&requested(quorum)));
    ledger
}

fn status(ledger: &Ledger) -> CallStatus {
    ledger.get("call-1").unwrap().status
}

#[test]
fn quorum_of_two_needs_two_distinct_reviewers() {
    let mut ledger = ledger_with(2);
    ledger.apply(&vote(2, "bob", ApprovalDecision::Approve));
    assert_eq!(status(&ledger), CallStatus::PendingApproval);
    // The same reviewer again (e.g. through another instance) does not count twice.
    let replay = vote(3, "bob", ApprovalDecision::Approve);
    ledger.apply(&replay);
    assert_eq!(status(&ledger), CallStatus::PendingApproval);
    assert!(
        ledger
            .get("call-1")
            .unwrap()
            .counted(&replay.event_id)
            .unwrap()
            .is_err()
    );
    ledger.apply(&vote(4, "carol", ApprovalDecision::Approve));
    assert_eq!(status(&ledger), CallStatus::Approved);
}

#[test]
fn one_deny_ends_it_even_after_an_approve() {
    let mut ledger = ledger_with(2);
    ledger.apply(&vote(2, "bob", ApprovalDecision::Approve));
    ledger.apply(&vote(3, "carol", ApprovalDecision::Deny));
    assert_eq!(status(&ledger), CallStatus::Denied);
    let late = vote(4, "dave", ApprovalDecision::Approve);
    ledger.apply(&late);
    assert_eq!(status(&ledger), CallStatus::Denied);
    assert!(
        ledger
            .get("call-1")
            .unwrap()
            .counted(&late.event_id)
            .unwrap()
            .is_err()
    );
}

#[test]
fn the_caller_and_its_agent_cannot_decide() {
    let mut ledger = ledger_with(1);
    ledger.apply(&vote(2, "alice", ApprovalDecision::Approve));
    ledger.apply(&vote(3, "agent-7", ApprovalDecision::Approve));
    assert_eq!(status(&ledger), CallStatus::PendingApproval);
}

#[test]
fn decisions_for_other_arguments_or_after_expiry_do_not_count() {
    let mut ledger = ledger_with(1);
    let mut other = vote(2, "bob", ApprovalDecision::Approve);
    other.approval.as_mut().unwrap().arguments_sha256 = Some("00".repeat(32));
    ledger.apply(&other);
    let mut late = vote(3, "bob", ApprovalDecision::Approve);
    late.time = 2_001;
    ledger.apply(&late);
    assert_eq!(status(&ledger), CallStatus::PendingApproval);
    ledger.apply(&event(EventKind::ApprovalExpired, 4, "gw-a"));
    assert_eq!(status(&ledger), CallStatus::Expired);
}

#[test]
fn the_first_claim_wins_and_only_its_instance_completes_the_call() {
    let mut ledger = ledger_with(1);
    ledger.apply(&vote(2, "bob", ApprovalDecision::Approve));
    ledger.apply(&event(EventKind::CallForwarded, 3, "gw-b"));
    ledger.apply(&event(EventKind::CallForwarded, 3, "gw-a"));
    let call = ledger.get("call-1").unwrap();
    assert_eq!(call.claim.as_ref().unwrap().gateway, "gw-b");
    ledger.apply(&event(EventKind::CallCompleted, 4, "gw-a"));
    assert_eq!(status(&ledger), CallStatus::Executing);
    ledger.apply(&event(EventKind::CallCompleted, 4, "gw-b"));
    assert_eq!(status(&ledger), CallStatus::Completed);
    assert_eq!(ledger.get("call-1").unwrap().next_seq, 5);
}

#[test]
fn a_claim_before_approval_is_ignored() {
    let mut ledger = ledger_with(1);
    ledger.apply(&event(EventKind::CallForwarded, 2, "gw-a"));
    assert_eq!(status(&ledger), CallStatus::PendingApproval);
    assert!(ledger.get("call-1").unwrap().claim.is_none());
}

#[test]
fn any_instance_may_close_a_claimed_call_as_interrupted_and_the_first_outcome_wins() {
    let mut ledger = ledger_with(1);
    ledger.apply(&vote(2, "bob", ApprovalDecision::Approve));
    ledger.apply(&event(EventKind::CallForwarded, 3, "gw-a"));
    // Another instance's ordinary failure is not an outcome of gw-a's claim.
    ledger.apply(&event(EventKind::CallFailed, 4, "gw-b"));
    assert_eq!(status(&ledger), CallStatus::Executing);
    let mut interrupted = event(EventKind::CallFailed, 5, "gw-b");
    interrupted.failure = Some(Failure {
        code: INTERRUPTED.into(),
        message: "claimant gone".into(),
    });
    ledger.apply(&interrupted);
    assert_eq!(status(&ledger), CallStatus::Failed);
    // A late outcome of the claimant presumed gone changes nothing.
    ledger.apply(&event(EventKind::CallCompleted, 6, "gw-a"));
    let call = ledger.get("call-1").unwrap();
    assert_eq!(call.status, CallStatus::Failed);
    assert_eq!(call.failure.as_ref().unwrap().code, INTERRUPTED);
}
