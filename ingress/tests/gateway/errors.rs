//! Every failure of the API's error list: its status, its JSON body, its event, and nothing leaked.

use callproof_schemas::EventKind;
use serde_json::json;

use crate::harness::{Harness, UPSTREAM_TOKEN, error_code, kinds};

#[tokio::test]
async fn invalid_json_is_400_and_nothing_is_forwarded() {
    let gateway = Harness::start().await;
    let token = gateway.issuer.token("alice", &["support"]);
    let answer = gateway
        .invoke("echo", Some(&token), "{\"ssn\": \"123-45-6789\",")
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(error_code(&answer), "invalid_json");
    assert!(!answer.text.contains("123-45-6789"));
    let events = gateway.events_of(answer.call_id.as_deref().unwrap(), 1);
    assert_eq!(kinds(&events), [EventKind::CallDenied]);
    assert_refusal_recorded(&events[0], "invalid_json");
    assert_eq!(gateway.functions.calls(), 0);
}

/// Regression: a call the policy allowed but the gateway then refused (400, 413) was recorded
/// with `decision.allowed = true`, which reads as an allowed call in the evidence.
fn assert_refusal_recorded(denied: &callproof_schemas::CallEvent, code: &str) {
    let decision = denied.decision.as_ref().unwrap();
    assert!(!decision.allowed, "{decision:?}");
    assert_eq!(
        decision
            .policy_id
            .as_deref()
            .map(|id| id.ends_with(".policy")),
        Some(true)
    );
    let failure = denied.failure.as_ref().unwrap();
    assert_eq!(failure.code, code);
    assert_eq!(decision.reason, failure.message);
}

#[tokio::test]
async fn unknown_function_is_404() {
    let gateway = Harness::start().await;
    let answer = gateway
        .invoke_as_alice("no_such_function", &json!({}))
        .await;
    assert_eq!(answer.status, 404);
    assert_eq!(error_code(&answer), "unknown_function");
    let events = gateway.events_of(answer.call_id.as_deref().unwrap(), 1);
    assert_eq!(kinds(&events), [EventKind::CallDenied]);
}

#[tokio::test]
async fn oversized_body_is_413_with_or_without_content_length() {
    let gateway = Harness::start().await;
    let big = json!({"padding": "x".repeat(200)});
    let answer = gateway.invoke_as_alice("small", &big).await;
    assert_eq!(answer.status, 413, "{}", answer.text);
    assert_eq!(error_code(&answer), "payload_too_large");
    let events = gateway.events_of(answer.call_id.as_deref().unwrap(), 1);
    assert_eq!(kinds(&events), [EventKind::CallDenied]);
    assert_refusal_recorded(&events[0], "payload_too_large");

    // Chunked, so the limit is enforced while reading rather than from the header.
    let token = gateway.issuer.token("alice", &["support"]);
    let chunks = futures::stream::iter(
        (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 20]))),
    );
    let response = gateway
        .client
        .post(format!("{}/v1/functions/small/invoke", gateway.url))
        .bearer_auth(token)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    assert_eq!(gateway.functions.calls(), 0);
}

#[tokio::test]
async fn upstream_down_is_502_and_recorded_as_failed() {
    let gateway = Harness::start().await;
    let answer = gateway.invoke_as_alice("down", &json!({})).await;
    assert_eq!(answer.status, 502, "{}", answer.text);
    assert_eq!(error_code(&answer), "upstream_failed");
    let events = gateway.events_of(answer.call_id.as_deref().unwrap(), 3);
    assert_eq!(
        kinds(&events),
        [
            EventKind::CallReceived,
            EventKind::CallForwarded,
            EventKind::CallFailed
        ]
    );
}

#[tokio::test]
async fn upstream_timeout_is_504() {
    let gateway = Harness::start().await;
    let answer = gateway.invoke_as_alice("slow", &json!({})).await;
    assert_eq!(answer.status, 504, "{}", answer.text);
    assert_eq!(error_code(&answer), "upstream_timeout");
    let events = gateway.events_of(answer.call_id.as_deref().unwrap(), 3);
    assert_eq!(events[2].kind, EventKind::CallFailed);
    assert_eq!(events[2].failure.as_ref().unwrap().code, "upstream_timeout");
}

#[tokio::test]
async fn upstream_error_is_502_without_its_internals() {
    let gateway = Harness::start().await;
    let answer = gateway.invoke_as_alice("fail", &json!({})).await;
    assert_eq!(answer.status, 502);
    assert!(!answer.text.contains("hunter2"), "{}", answer.text);
    assert!(!answer.text.contains("Traceback"), "{}", answer.text);
    assert!(!answer.text.contains(UPSTREAM_TOKEN));
}

#[tokio::test]
async fn a_text_answer_is_masked_as_text() {
    let gateway = Harness::start().await;
    let answer = gateway.invoke_as_alice("text", &json!({})).await;
    assert_eq!(answer.status, 200);
    assert!(!answer.text.contains("ada@example.com"), "{}", answer.text);
    assert!(answer.text.contains("[REDACTED:EMAIL]"), "{}", answer.text);
}

#[tokio::test]
async fn unknown_endpoints_are_json_404s() {
    let gateway = Harness::start().await;
    let response = gateway
        .client
        .get(format!("{}/v1/nothing", gateway.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn health_and_metrics_answer() {
    let gateway = Harness::start().await;
    gateway.invoke_as_alice("echo", &json!({})).await;
    let get = |path: &str| {
        let url = format!("{}{path}", gateway.url);
        let client = gateway.client.clone();
        async move { client.get(url).send().await.unwrap() }
    };
    assert_eq!(get("/healthz").await.status().as_u16(), 200);
    let metrics = get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("callproof_ingress_calls_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn beyond_max_in_flight_calls_are_429_with_the_json_error_and_call_id() {
    let gateway = Harness::start_with("max_in_flight = 1", "").await;
    let token = gateway.issuer.token("alice", &["support"]);
    // One call holds the only slot while the function takes its time (3 s, under its timeout).
    let in_flight = {
        let client = gateway.client.clone();
        let url = format!("{}/v1/functions/slow_but_patient/invoke", gateway.url);
        let token = token.clone();
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&json!({}))
                .send()
                .await
                .map(|response| response.status().as_u16())
        })
    };
    while gateway.functions.calls() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let refused = gateway.invoke("echo", Some(&token), "{}").await;
    assert_eq!(refused.status, 429, "{}", refused.text);
    assert_eq!(error_code(&refused), "too_many_requests");
    let call_id = refused.call_id.clone().unwrap();
    assert_eq!(refused.body["error"]["call_id"], call_id.as_str());
    assert!(refused.body["error"]["message"].is_string());
    let events = gateway.events_of(&call_id, 1);
    assert_eq!(kinds(&events), [EventKind::CallDenied]);
    assert_eq!(
        events[0].failure.as_ref().unwrap().code,
        "too_many_requests"
    );
    assert!(!events[0].decision.as_ref().unwrap().allowed);

    // The slot is given back once the first call is answered.
    assert_eq!(in_flight.await.unwrap().unwrap(), 200);
    assert_eq!(gateway.invoke("echo", Some(&token), "{}").await.status, 200);
    assert_eq!(
        gateway.functions.calls(),
        2,
        "the refused call reached nothing"
    );
}
