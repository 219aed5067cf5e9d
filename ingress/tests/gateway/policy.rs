//! Per-function policy: deny by default, allow by subject or group.

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
