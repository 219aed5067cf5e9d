//! A successful call: what the function saw, what the caller got back, and the events on Kafka.

use callproof_schemas::EventKind;
use callproof_tests::broker::PrivateBroker;
use serde_json::json;

use crate::harness::{API_KEY, BASIC_PASSWORD, Harness, UPSTREAM_TOKEN, error_code, kinds};

#[tokio::test]
async fn a_call_is_forwarded_with_the_gateway_credential_and_masked_both_ways() {
    let gateway = Harness::start().await;
    let token = gateway.issuer.token("alice", &["support"]);
    let arguments = json!({
        "customer_id": 42,
        "ssn": "123-45-6789",
        "nested": {"password": "p@ss-word-1"},
        "note": "card 4111-1111-1111-1111 on file",
    });
    let answer = gateway
        .invoke("echo", Some(&token), &arguments.to_string())
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let call_id = answer.call_id.clone().expect("call id header");

    // What reached the function.
    let received = gateway.functions.received();
    assert_eq!(received.len(), 1);
    let seen = &received[0];
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {UPSTREAM_TOKEN}").as_str())
    );
    assert_eq!(seen.header("x-callproof-call-id"), Some(call_id.as_str()));
    assert_eq!(seen.header("x-callproof-subject"), Some("alice"));
    let body = String::from_utf8_lossy(&seen.body).into_owned();
    assert!(
        !body.contains(&token),
        "the caller's token reached the function"
    );
    assert!(!body.contains("123-45-6789") && !body.contains("p@ss-word-1"));
    assert!(!body.contains("4111-1111-1111-1111"));
    assert_eq!(seen.json()["ssn"], "[REDACTED:FIELD]");
    assert_eq!(seen.json()["nested"]["password"], "[REDACTED:FIELD]");
    assert_eq!(seen.json()["customer_id"], 42);

    // What the caller got: the card number and the policy-masked field are gone.
    assert!(
        !answer.text.contains("4111 1111 1111 1111"),
        "{}",
        answer.text
    );
    assert_eq!(answer.body["customer"]["internal_note"], "[REDACTED:FIELD]");
    assert_eq!(answer.body["customer"]["name"], "Ada Lovelace");

    // The events, read back from the broker.
    let events = gateway.events_of(&call_id, 3);
    assert_eq!(
        kinds(&events),
        [
            EventKind::CallReceived,
            EventKind::CallForwarded,
            EventKind::CallCompleted
        ]
    );
    assert_eq!(
        events.iter().map(|event| event.seq).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let received_event = &events[0];
    let principal = received_event.principal.as_ref().expect("principal");
    assert_eq!(principal.subject, "alice");
    assert_eq!(principal.groups, ["support"]);
    assert_eq!(principal.issuer, gateway.issuer.url);
    let authentication = principal.authentication.as_ref().unwrap();
    assert_eq!(authentication.algorithm, "ES256");
    assert_eq!(authentication.key_id.as_deref(), Some("ec-1"));
    let decision = received_event.decision.as_ref().unwrap();
    assert!(decision.allowed);
    assert_eq!(decision.reason, "group support is allowed");
    let detectors: Vec<(&str, &str)> = received_event
        .masking
        .iter()
        .map(|finding| (finding.detector.as_str(), finding.path.as_str()))
        .collect();
    assert!(
        detectors.contains(&("FIELD", "/request/body/ssn")),
        "{detectors:?}"
    );
    assert!(
        detectors.contains(&("CREDIT_CARD", "/request/body/note")),
        "{detectors:?}"
    );
    let completed = &events[2];
    let response = completed.response.as_ref().unwrap();
    assert_eq!(response.status, 200);
    assert!(
        completed
            .masking
            .iter()
            .any(|finding| finding.path == "/response/body/customer/card_number")
    );

    // All of one call's events share its key, and no secret is in any event.
    for (key, payload) in gateway.all_raw_events() {
        assert_eq!(key.as_deref(), Some(call_id.as_bytes()));
        let bytes = String::from_utf8_lossy(&payload);
        for secret in [
            UPSTREAM_TOKEN,
            token.as_str(),
            "123-45-6789",
            "p@ss-word-1",
            "4111",
        ] {
            assert!(!bytes.contains(secret), "an event carries {secret:?}");
        }
    }
}

#[tokio::test]
async fn header_and_basic_credentials_are_injected() {
    let gateway = Harness::start().await;
    assert_eq!(
        gateway.invoke_as_alice("keyed", &json!({})).await.status,
        200
    );
    assert_eq!(
        gateway.invoke_as_alice("basic", &json!({})).await.status,
        200
    );
    let received = gateway.functions.received();
    assert_eq!(received[0].header("x-api-key"), Some(API_KEY));
    assert!(received[0].header("authorization").is_none());
    use base64::Engine;
    let expected =
        base64::engine::general_purpose::STANDARD.encode(format!("svc:{BASIC_PASSWORD}"));
    assert_eq!(
        received[1].header("authorization"),
        Some(format!("Basic {expected}").as_str())
    );
}

#[tokio::test]
async fn the_acting_agent_of_an_act_claim_is_recorded() {
    let gateway = Harness::start().await;
    let mut claims = gateway.issuer.claims("alice", &["support"]);
    claims["act"] = json!({"sub": "agent-7", "client_id": "support-copilot"});
    let key = gateway.issuer.key(jsonwebtoken::Algorithm::ES256);
    let token = callproof_tests::issuer::sign(&key, &claims);
    let answer = gateway.invoke("echo", Some(&token), "{}").await;
    assert_eq!(answer.status, 200);
    let events = gateway.events_of(answer.call_id.as_deref().unwrap(), 3);
    let actor = events[0]
        .principal
        .as_ref()
        .unwrap()
        .actor
        .as_ref()
        .unwrap();
    assert_eq!(actor.subject, "agent-7");
    assert_eq!(actor.client_id.as_deref(), Some("support-copilot"));
    assert_eq!(
        gateway.functions.received()[0].header("x-callproof-actor"),
        Some("agent-7")
    );
}

#[tokio::test]
async fn concurrent_calls_are_all_recorded_in_order_per_call() {
    let gateway = Harness::start().await;
    let calls = (0..40).map(|index| {
        let gateway = &gateway;
        async move { gateway.invoke_as_alice("echo", &json!({"i": index})).await }
    });
    let answers = futures::future::join_all(calls).await;
    assert!(answers.iter().all(|answer| answer.status == 200));
    let events: Vec<_> = gateway
        .all_raw_events()
        .into_iter()
        .map(|(_, payload)| callproof_schemas::decode(&payload).unwrap())
        .collect();
    assert_eq!(events.len(), 40 * 3);
    for answer in &answers {
        let call_id = answer.call_id.as_deref().unwrap();
        let of_call: Vec<_> = events
            .iter()
            .filter(|event| event.call_id == call_id)
            .collect();
        let seqs: Vec<i32> = of_call.iter().map(|event| event.seq).collect();
        assert_eq!(seqs, [0, 1, 2], "events of one call out of order");
    }
}

#[tokio::test]
async fn with_the_broker_gone_calls_get_503_and_the_function_is_never_called() {
    let mut private = PrivateBroker::start().unwrap();
    let gateway = Harness::start_on(private.bootstrap.clone()).await;
    assert_eq!(
        gateway.invoke_as_alice("echo", &json!({})).await.status,
        200
    );
    assert_eq!(gateway.functions.calls(), 1);

    private.stop();
    // Refused within kafka.delivery_timeout_ms (3 s here) and the documented margin, however
    // late librdkafka notices; the extra second is for a loaded test machine, not the gateway.
    let bound = std::time::Duration::from_millis(3_000)
        + callproof_ingress::events::DELIVERY_TIMEOUT_MARGIN
        + std::time::Duration::from_secs(1);
    let started = std::time::Instant::now();
    let answer = gateway
        .invoke_as_alice("echo", &json!({"after": "stop"}))
        .await;
    let waited = started.elapsed();
    assert!(
        waited < bound,
        "refused after {waited:?}, more than {bound:?}"
    );
    assert_eq!(answer.status, 503, "{}", answer.text);
    assert_eq!(error_code(&answer), "audit_unavailable");
    assert!(answer.call_id.is_some());
    assert_eq!(
        gateway.functions.calls(),
        1,
        "the function was called without an audit record"
    );

    // Refusals cannot be recorded either, and say so rather than pretend.
    let started = std::time::Instant::now();
    let unauthenticated = gateway.invoke("echo", None, "{}").await;
    let waited = started.elapsed();
    assert!(
        waited < bound,
        "refused after {waited:?}, more than {bound:?}"
    );
    assert_eq!(unauthenticated.status, 503);

    let ready = gateway
        .client
        .get(format!("{}/readyz", gateway.url))
        .send()
        .await
        .unwrap();
    // The probe runs every 2 s; give it time to notice.
    let mut status = ready.status().as_u16();
    for _ in 0..50 {
        if status == 503 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        status = gateway
            .client
            .get(format!("{}/readyz", gateway.url))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
    }
    assert_eq!(status, 503);
}
