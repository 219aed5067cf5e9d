//! Per-function policy: deny by default, allow by subject, group or CEL rule (docs/policy.md).

use callproof_schemas::EventKind;
use serde_json::json;

use crate::harness::{Harness, error_code, kinds};

#[tokio::test]
async fn callers_outside_the_policy_are_refused_and_the_refusal_is_recorded() {
    let gateway = Harness::start().await;
    let token = gateway.issuer.token("mallory", &["sales"]);
    let answer = gateway
        .invoke(
            "echo",
            Some(&token),
            &json!({"ssn": "123-45-6789"}).to_string(),
        )
        .await;
    assert_eq!(answer.status, 403, "{}", answer.text);
    assert_eq!(error_code(&answer), "forbidden");
    assert_eq!(gateway.functions.calls(), 0);

    let events = gateway.events_of(answer.call_id.as_deref().unwrap(), 1);
    assert_eq!(kinds(&events), [EventKind::CallDenied]);
    // The token verified, so who was refused is part of the evidence.
    let principal = events[0].principal.as_ref().unwrap();
    assert_eq!(principal.subject, "mallory");
    let decision = events[0].decision.as_ref().unwrap();
    assert!(!decision.allowed);
    assert_eq!(decision.policy_id.as_deref(), Some("functions.echo.policy"));
    // A refused call's body was never read, so it cannot be in the event.
    assert!(events[0].request.as_ref().unwrap().body.is_none());
}

#[tokio::test]
async fn allowed_by_subject_or_by_group_and_nothing_else() {
    let gateway = Harness::start().await;
    let carol = gateway.issuer.token("carol", &[]);
    assert_eq!(gateway.invoke("echo", Some(&carol), "{}").await.status, 200);
    let alice = gateway.issuer.token("alice", &["support"]);
    assert_eq!(gateway.invoke("echo", Some(&alice), "{}").await.status, 200);
    // A function with no rule matching anyone: deny by default.
    assert_eq!(
        gateway
            .invoke("admin_only", Some(&alice), "{}")
            .await
            .status,
        403
    );
    assert_eq!(gateway.functions.calls(), 2);
}

#[tokio::test]
async fn groups_come_from_the_configured_claim() {
    let gateway = Harness::start_with("", r#"groups_claim = "realm_access.roles""#).await;
    let issuer = &gateway.issuer;
    let key = issuer.key(jsonwebtoken::Algorithm::ES256);
    let mut in_roles = issuer.claims("dave", &[]);
    in_roles["realm_access"] = json!({"roles": ["support"]});
    let answer = gateway
        .invoke(
            "echo",
            Some(&callproof_tests::issuer::sign(&key, &in_roles)),
            "{}",
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let events = gateway.events_of(answer.call_id.as_deref().unwrap(), 2);
    let principal = events[0].principal.as_ref().unwrap();
    assert_eq!(principal.groups, ["support"]);
    assert_eq!(
        events[0].decision.as_ref().unwrap().reason,
        "group support is allowed"
    );

    // The default `groups` claim no longer counts.
    let in_groups = issuer.token("erin", &["support"]);
    let refused = gateway.invoke("echo", Some(&in_groups), "{}").await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert_eq!(gateway.functions.calls(), 1);
}

/// An allow rule over the arguments (`args.amount <= 100`, nobody listed): decided once the
/// body is read; a call it does not allow, or cannot decide for, is refused and recorded with
/// the rule's key as the reason, never a value.
#[tokio::test]
async fn an_allow_rule_over_the_arguments_decides_and_fails_closed() {
    let gateway = Harness::start().await;
    let mallory = gateway.issuer.token("mallory", &["sales"]);
    let small = gateway
        .invoke(
            "small_refund",
            Some(&mallory),
            &json!({"amount": 40}).to_string(),
        )
        .await;
    assert_eq!(small.status, 200, "{}", small.text);
    let events = gateway.events_of(small.call_id.as_deref().unwrap(), 1);
    let decision = events[0].decision.as_ref().unwrap();
    assert!(decision.allowed);
    assert_eq!(
        decision.reason,
        "rule `functions.small_refund.policy.allow` holds"
    );

    for (arguments, expected) in [
        (json!({"amount": 4000}), "does not hold"),
        // A missing field and a wrong type are errors: denied, not allowed.
        (json!({"note": "no amount"}), "could not be decided"),
        (
            json!({"amount": "4111 1111 1111 1111"}),
            "could not be decided",
        ),
    ] {
        let refused = gateway
            .invoke("small_refund", Some(&mallory), &arguments.to_string())
            .await;
        assert_eq!(refused.status, 403, "{arguments}: {}", refused.text);
        assert_eq!(error_code(&refused), "forbidden");
        let events = gateway.events_of(refused.call_id.as_deref().unwrap(), 1);
        assert_eq!(kinds(&events), [EventKind::CallDenied]);
        let decision = events[0].decision.as_ref().unwrap();
        assert!(!decision.allowed);
        assert_eq!(
            decision.policy_id.as_deref(),
            Some("functions.small_refund.policy")
        );
        assert!(decision.reason.contains(expected), "{}", decision.reason);
        assert!(
            decision
                .reason
                .contains("rule `functions.small_refund.policy.allow`"),
            "{}",
            decision.reason
        );
        assert!(!decision.reason.contains("4111"), "{}", decision.reason);
        assert!(events[0].request.as_ref().unwrap().body.is_none());
    }
    // A body the rule cannot be decided on is refused as such, under the policy's id.
    let invalid = gateway
        .invoke("small_refund", Some(&mallory), "{not json")
        .await;
    assert_eq!(invalid.status, 400, "{}", invalid.text);
    let events = gateway.events_of(invalid.call_id.as_deref().unwrap(), 1);
    let decision = events[0].decision.as_ref().unwrap();
    assert!(!decision.allowed);
    assert_eq!(
        decision.policy_id.as_deref(),
        Some("functions.small_refund.policy")
    );
    assert_eq!(gateway.functions.calls(), 1);
}

/// An allow rule over the caller (the acting agent, a selected claim): an agent acting for a
/// user of the tenant may call, the user alone may not.
#[tokio::test]
async fn an_allow_rule_tells_an_agent_from_its_user_and_reads_selected_claims() {
    let gateway = Harness::start().await;
    let issuer = &gateway.issuer;
    let key = issuer.key(jsonwebtoken::Algorithm::ES256);
    let mut via_agent = issuer.claims("alice", &[]);
    via_agent["act"] = json!({"sub": "agent-7"});
    via_agent["tenant"] = json!("acme");
    let answer = gateway
        .invoke(
            "agents_of_acme",
            Some(&callproof_tests::issuer::sign(&key, &via_agent)),
            "{}",
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);

    let mut alone = issuer.claims("alice", &[]);
    alone["tenant"] = json!("acme");
    let mut other_tenant = via_agent.clone();
    other_tenant["tenant"] = json!("globex");
    for claims in [alone, other_tenant] {
        let refused = gateway
            .invoke(
                "agents_of_acme",
                Some(&callproof_tests::issuer::sign(&key, &claims)),
                "{}",
            )
            .await;
        assert_eq!(refused.status, 403, "{claims}: {}", refused.text);
        let events = gateway.events_of(refused.call_id.as_deref().unwrap(), 1);
        let reason = &events[0].decision.as_ref().unwrap().reason;
        assert!(
            reason.contains("rule `functions.agents_of_acme.policy.allow` does not hold"),
            "{reason}"
        );
    }
    assert_eq!(gateway.functions.calls(), 1);
}
