//! OIDC authentication: what is accepted, what is refused, and that every refusal is recorded.

use callproof_schemas::EventKind;
use callproof_tests::issuer::{self, TestIssuer, forge, now_secs, sign, sign_with};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::harness::{Harness, error_code, kinds};

/// Asserts a 401 with `message` in the error, and a `call_denied` event without a principal.
async fn assert_refused(gateway: &Harness, token: Option<&str>, message: &str) {
    let answer = gateway.invoke("echo", token, "{}").await;
    assert_eq!(answer.status, 401, "{message}: {}", answer.text);
    assert_eq!(error_code(&answer), "unauthenticated");
    let text = answer.body["error"]["message"].as_str().unwrap_or("");
    assert!(text.contains(message), "expected {message:?} in {text:?}");
    assert!(answer.headers.get("www-authenticate").is_some());
    let events = gateway.events_of(answer.call_id.as_deref().unwrap(), 1);
    assert_eq!(kinds(&events), [EventKind::CallDenied]);
    assert!(
        events[0].principal.is_none(),
        "claims of an unverified token were recorded"
    );
    assert_eq!(events[0].failure.as_ref().unwrap().code, "unauthenticated");
}

#[tokio::test]
async fn rs256_es256_and_eddsa_tokens_are_accepted() {
    let gateway = Harness::start().await;
    for algorithm in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
        let key = gateway.issuer.key(algorithm);
        let token = sign(&key, &gateway.issuer.claims("alice", &["support"]));
        let answer = gateway.invoke("echo", Some(&token), "{}").await;
        assert_eq!(answer.status, 200, "{algorithm:?}: {}", answer.text);
    }
    assert_eq!(gateway.functions.calls(), 3);
}

#[tokio::test]
async fn missing_and_malformed_tokens_are_refused() {
    let gateway = Harness::start().await;
    assert_refused(&gateway, None, "missing bearer token").await;
    assert_refused(&gateway, Some("not-a-jwt"), "malformed token").await;
    assert_refused(&gateway, Some("a.b.c"), "malformed token").await;
    assert_eq!(gateway.functions.calls(), 0);
}

#[tokio::test]
async fn oversized_tokens_and_headers_are_refused_before_decoding() {
    let gateway = Harness::start().await;
    let key = gateway.issuer.key(Algorithm::EdDSA);
    let claims = gateway.issuer.claims("alice", &["support"]);
    let signed_with_padding = |bytes: usize| {
        sign_with(&key, &claims, |header| {
            header.x5c = Some(vec!["A".repeat(bytes)]);
        })
    };
    // Validly signed, and a little over the limit: refused as a call, and recorded.
    let long = signed_with_padding(callproof_oidc::MAX_TOKEN_BYTES);
    assert_refused(&gateway, Some(&long), "token is longer than 8192 bytes").await;

    // Validly signed with a 200 KB header: refused before routing, as HTTP says.
    let huge = signed_with_padding(200 * 1024);
    let answer = gateway.invoke("echo", Some(&huge), "{}").await;
    assert_eq!(answer.status, 431, "{}", answer.text);
    assert_eq!(error_code(&answer), "headers_too_large");
    // Headers over the limit without any token are refused the same way.
    let padded = gateway
        .client
        .post(format!("{}/v1/functions/echo/invoke", gateway.url))
        .header("x-padding", "p".repeat(callproof_oidc::MAX_HEADER_BYTES))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(padded.status().as_u16(), 431);
    assert_eq!(gateway.functions.calls(), 0);

    // A token just under the limit still works.
    let fits = signed_with_padding(callproof_oidc::MAX_TOKEN_BYTES / 2);
    let answer = gateway.invoke("echo", Some(&fits), "{}").await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}

#[tokio::test]
async fn alg_none_and_hs256_signed_with_the_public_key_are_refused() {
    let gateway = Harness::start().await;
    let claims = gateway.issuer.claims("alice", &["support"]);
    let none = forge(&json!({"alg": "none", "typ": "JWT"}), &claims, b"");
    assert_refused(&gateway, Some(&none), "malformed token").await;

    // The classic confusion attack: HMAC keyed with the issuer's public RSA key.
    let rsa = gateway.issuer.key(Algorithm::RS256);
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(rsa.kid.clone());
    let confused = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(rsa.public_pem.as_bytes()),
    )
    .unwrap();
    assert_refused(&gateway, Some(&confused), "algorithm HS256 is not accepted").await;
    assert_eq!(gateway.functions.calls(), 0);
}

#[tokio::test]
async fn wrong_audience_issuer_signature_and_times_are_refused() {
    let gateway = Harness::start().await;
    let key = gateway.issuer.key(Algorithm::ES256);
    let valid = gateway.issuer.claims("alice", &["support"]);
    let with = |field: &str, value: serde_json::Value| {
        let mut claims = valid.clone();
        claims[field] = value;
        sign(&key, &claims)
    };
    let now = now_secs();
    assert_refused(
        &gateway,
        Some(&with("aud", json!("another-api"))),
        "audience",
    )
    .await;
    assert_refused(&gateway, Some(&with("exp", json!(now - 120))), "expired").await;
    assert_refused(
        &gateway,
        Some(&with("nbf", json!(now + 600))),
        "not valid yet",
    )
    .await;

    // A token from another issuer, even one that names ours and signs with a key id we know.
    let other = TestIssuer::start().await.unwrap();
    let other_key = other.key(Algorithm::ES256);
    assert_refused(
        &gateway,
        Some(&sign(&other_key, &valid)),
        "signature is invalid",
    )
    .await;
    let mut claims_of_other = other.claims("alice", &["support"]);
    claims_of_other["iss"] = json!(other.url);
    let mut keyed_like_ours = other_key.clone();
    keyed_like_ours.kid = "unknown-kid".into();
    assert_refused(
        &gateway,
        Some(&sign(&keyed_like_ours, &claims_of_other)),
        "not known",
    )
    .await;
    let from_other_issuer = sign(&key, &claims_of_other);
    assert_refused(&gateway, Some(&from_other_issuer), "issuer").await;

    // A token without a subject.
    let mut no_subject = valid.clone();
    no_subject.as_object_mut().unwrap().remove("sub");
    assert_refused(&gateway, Some(&sign(&key, &no_subject)), "`sub`").await;
    assert_eq!(gateway.functions.calls(), 0);
}

#[tokio::test]
async fn small_clock_skew_is_tolerated() {
    let gateway = Harness::start().await;
    let key = gateway.issuer.key(Algorithm::ES256);
    let mut claims = gateway.issuer.claims("alice", &["support"]);
    claims["exp"] = json!(now_secs() - 5);
    claims["nbf"] = json!(now_secs() + 5);
    let answer = gateway
        .invoke("echo", Some(&sign(&key, &claims)), "{}")
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}

#[tokio::test]
async fn a_rotated_key_is_fetched_and_unknown_kids_are_rate_limited() {
    let gateway = Harness::start().await;
    let warm = gateway.issuer.jwks_fetches();
    assert!(warm >= 1, "keys are fetched at start");

    // The issuer rotates in a key after the gateway cached its keys.
    let rotated = issuer::ed_key("ed-2").unwrap();
    gateway.issuer.publish(rotated.clone());
    let token = sign(&rotated, &gateway.issuer.claims("alice", &["support"]));
    tokio::time::sleep(std::time::Duration::from_secs(2)).await; // past jwks_min_refresh_secs
    let answer = gateway.invoke("echo", Some(&token), "{}").await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let after_rotation = gateway.issuer.jwks_fetches();
    assert_eq!(after_rotation, warm + 1);

    // A burst of tokens with made-up key ids costs at most one more fetch.
    let mut bogus = issuer::ec_key("bogus").unwrap();
    for attempt in 0..20 {
        bogus.kid = format!("made-up-{attempt}");
        let token = sign(&bogus, &gateway.issuer.claims("alice", &["support"]));
        assert_eq!(gateway.invoke("echo", Some(&token), "{}").await.status, 401);
    }
    assert!(
        gateway.issuer.jwks_fetches() <= after_rotation + 1,
        "unknown kids fetched the JWKS {} times",
        gateway.issuer.jwks_fetches() - after_rotation
    );
}

#[tokio::test]
async fn an_unreachable_issuer_is_503_not_401() {
    let gateway = Harness::start().await;
    gateway.issuer.set_available(false);
    // A key the gateway never saw, so it must ask the issuer; after jwks_min_refresh_secs so
    // that it does ask rather than being rate limited.
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let unseen = issuer::ec_key("ec-unseen").unwrap();
    let token = sign(&unseen, &gateway.issuer.claims("alice", &["support"]));
    let answer = gateway.invoke("echo", Some(&token), "{}").await;
    assert_eq!(answer.status, 503, "{}", answer.text);
    assert_eq!(error_code(&answer), "issuer_unavailable");
    assert_eq!(
        answer.body["error"]["call_id"].as_str(),
        answer.call_id.as_deref()
    );
    assert!(answer.headers.get("www-authenticate").is_none());
    let events = gateway.events_of(answer.call_id.as_deref().unwrap(), 1);
    assert_eq!(kinds(&events), [EventKind::CallDenied]);
    assert!(events[0].principal.is_none());
    assert_eq!(
        events[0].failure.as_ref().unwrap().code,
        "issuer_unavailable"
    );
    assert_eq!(gateway.functions.calls(), 0);
}
