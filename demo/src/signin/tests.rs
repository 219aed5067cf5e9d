//! The sign-in as a client sees it, through the issuer's router: what is accepted and every
//! refusal the console relies on.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tower::ServiceExt;

use super::*;
use crate::issuer::{Issuer, router};

const ISSUER: &str = "http://127.0.0.1:9400";
const CLIENT_ID: &str = "callproof-console";
const SECRET: &str = "console-secret";
const REDIRECT: &str = "http://127.0.0.1:8082/auth/callback";
const VERIFIER: &str = "a-verifier-of-at-least-forty-three-characters-0123456789";

struct Fixture {
    issuer: Arc<Issuer>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::load_or_create(ISSUER.into(), "callproof".into(), dir.path())
        .unwrap()
        .with_client(Client {
            id: CLIENT_ID.into(),
            secret: SECRET.into(),
            redirect_url: REDIRECT.into(),
        });
    Fixture {
        issuer: Arc::new(issuer),
        _dir: dir,
    }
}

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The query of an authorization request, with `changes` applied (an empty value removes).
fn authorization_query(changes: &[(&str, &str)]) -> String {
    let mut params: Vec<(String, String)> = [
        ("response_type", "code"),
        ("client_id", CLIENT_ID),
        ("redirect_uri", REDIRECT),
        ("scope", "openid profile email"),
        ("state", "the-state"),
        ("nonce", "the-nonce"),
        ("code_challenge", &challenge(VERIFIER)),
        ("code_challenge_method", "S256"),
    ]
    .iter()
    .map(|(key, value)| (key.to_string(), value.to_string()))
    .collect();
    for (key, value) in changes {
        params.retain(|(name, _)| name != key);
        if !value.is_empty() {
            params.push((key.to_string(), value.to_string()));
        }
    }
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish()
}

async fn send(
    fixture: &Fixture,
    request: Request<Body>,
) -> (StatusCode, HashMap<String, String>, String) {
    let response = router(fixture.issuer.clone())
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap_or("").to_string()))
        .collect();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

async fn get(fixture: &Fixture, uri: &str) -> (StatusCode, HashMap<String, String>, String) {
    send(fixture, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn post_form(
    fixture: &Fixture,
    uri: &str,
    form: &str,
    basic: Option<(&str, &str)>,
) -> (StatusCode, HashMap<String, String>, String) {
    let mut request =
        Request::post(uri).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some((id, secret)) = basic {
        request = request.header(
            header::AUTHORIZATION,
            format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))),
        );
    }
    send(fixture, request.body(Body::from(form.to_string())).unwrap()).await
}

fn query_of(location: &str) -> HashMap<String, String> {
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect()
}

/// Signs `user` in through the form; the code and state the browser is sent back with.
async fn sign_in(fixture: &Fixture, user: &str) -> HashMap<String, String> {
    let form = format!("{}&user={user}", authorization_query(&[]));
    let (status, headers, body) = post_form(fixture, "/authorize", &form, None).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let location = &headers["location"];
    assert!(location.starts_with(REDIRECT), "{location}");
    query_of(location)
}

fn token_form(code: &str, verifier: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ])
        .finish()
}

fn decode(fixture: &Fixture, token: &str, audience: &str) -> Value {
    let x = fixture.issuer.jwks()["keys"][0]["x"]
        .as_str()
        .unwrap()
        .to_string();
    let key = DecodingKey::from_ed_components(&x).unwrap();
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[ISSUER]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .unwrap()
        .claims
}

#[tokio::test]
async fn discovery_advertises_the_code_flow_with_s256_only() {
    let fixture = fixture();
    let (status, _, body) = get(&fixture, "/.well-known/openid-configuration").await;
    assert_eq!(status, StatusCode::OK);
    let metadata: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        metadata["authorization_endpoint"],
        format!("{ISSUER}/authorize")
    );
    assert_eq!(metadata["token_endpoint"], format!("{ISSUER}/oauth/token"));
    assert_eq!(
        metadata["response_types_supported"],
        serde_json::json!(["code"])
    );
    assert_eq!(
        metadata["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
}

#[tokio::test]
async fn a_demo_user_signs_in_and_the_code_gives_tokens_once() {
    let fixture = fixture();
    let (status, headers, page) = get(
        &fixture,
        &format!("/authorize?{}", authorization_query(&[])),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("A demo issuer, not an identity provider"),
        "{page}"
    );
    for user in DEMO_USERS {
        assert!(
            page.contains(&format!("value=\"{}\"", user.subject)),
            "{page}"
        );
    }
    assert!(
        page.contains("name=\"nonce\" value=\"the-nonce\""),
        "{page}"
    );
    assert!(headers["content-security-policy"].contains("frame-ancestors 'none'"));

    let back = sign_in(&fixture, "bob").await;
    assert_eq!(back["state"], "the-state");
    let code = &back["code"];

    let (status, headers, body) = post_form(
        &fixture,
        "/oauth/token",
        &token_form(code, VERIFIER),
        Some((CLIENT_ID, SECRET)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    let tokens: Value = serde_json::from_str(&body).unwrap();
    let id_token = decode(&fixture, tokens["id_token"].as_str().unwrap(), CLIENT_ID);
    assert_eq!(id_token["sub"], "bob");
    assert_eq!(id_token["nonce"], "the-nonce");
    assert_eq!(
        id_token["groups"],
        serde_json::json!(["payments-approvers"])
    );
    // The access token is for the gateway and the evidence API, with the same person.
    let access = decode(
        &fixture,
        tokens["access_token"].as_str().unwrap(),
        "callproof",
    );
    assert_eq!(access["sub"], "bob");
    assert_eq!(access["groups"], serde_json::json!(["payments-approvers"]));

    let (status, _, body) = post_form(
        &fixture,
        "/oauth/token",
        &token_form(code, VERIFIER),
        Some((CLIENT_ID, SECRET)),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("invalid_grant"), "{body}");
}

#[tokio::test]
async fn a_request_without_an_s256_challenge_is_sent_back_refused() {
    let fixture = fixture();
    for changes in [
        vec![
            ("code_challenge_method", "plain"),
            ("code_challenge", VERIFIER),
        ],
        vec![("code_challenge_method", "")],
        vec![("code_challenge", ""), ("code_challenge_method", "")],
        vec![("code_challenge", "short")],
    ] {
        let (status, headers, body) = get(
            &fixture,
            &format!("/authorize?{}", authorization_query(&changes)),
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{changes:?}: {body}");
        let back = query_of(&headers["location"]);
        assert_eq!(back["error"], "invalid_request", "{changes:?}");
        assert_eq!(back["state"], "the-state");
        assert!(!back.contains_key("code"));
        // Nor can the form be posted around the page.
        let form = format!("{}&user=bob", authorization_query(&changes));
        let (_, headers, _) = post_form(&fixture, "/authorize", &form, None).await;
        assert!(
            !query_of(&headers["location"]).contains_key("code"),
            "{changes:?}"
        );
    }
}

#[tokio::test]
async fn an_unknown_client_or_redirect_url_is_refused_on_the_page() {
    let fixture = fixture();
    for changes in [
        [("redirect_uri", "http://evil.example/callback")],
        [("client_id", "someone-else")],
    ] {
        let (status, headers, body) = get(
            &fixture,
            &format!("/authorize?{}", authorization_query(&changes)),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{changes:?}");
        assert!(
            !headers.contains_key("location"),
            "never redirected: {changes:?}"
        );
        assert!(body.contains("refused"), "{body}");
    }
}

#[tokio::test]
async fn a_wrong_verifier_uses_the_code_up() {
    let fixture = fixture();
    let code = sign_in(&fixture, "audrey").await["code"].clone();
    let other = "another-verifier-of-at-least-forty-three-characters-000";
    for verifier in [other, VERIFIER] {
        let (status, _, body) = post_form(
            &fixture,
            "/oauth/token",
            &token_form(&code, verifier),
            Some((CLIENT_ID, SECRET)),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{verifier}");
        assert!(body.contains("invalid_grant"), "{body}");
    }
}

#[tokio::test]
async fn the_client_authenticates_by_basic_or_post_and_a_wrong_secret_is_refused() {
    let fixture = fixture();
    let code = sign_in(&fixture, "alice").await["code"].clone();
    let (status, headers, body) = post_form(
        &fixture,
        "/oauth/token",
        &token_form(&code, VERIFIER),
        Some((CLIENT_ID, "wrong")),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(headers.contains_key("www-authenticate"));

    // The refusal of the client did not use the code; the right secret, in the form, works.
    let form = format!(
        "{}&client_id={CLIENT_ID}&client_secret={SECRET}",
        token_form(&code, VERIFIER)
    );
    let (status, _, body) = post_form(&fixture, "/oauth/token", &form, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn an_expired_code_is_refused() {
    let fixture = fixture();
    let code = sign_in(&fixture, "bob").await["code"].clone();
    fixture
        .issuer
        .sign_in
        .codes
        .lock()
        .unwrap()
        .get_mut(&code)
        .unwrap()
        .expires_at = now_secs() - 1;
    let (status, _, body) = post_form(
        &fixture,
        "/oauth/token",
        &token_form(&code, VERIFIER),
        Some((CLIENT_ID, SECRET)),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("expired"), "{body}");
}

#[tokio::test]
async fn without_a_registered_client_no_one_signs_in() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::load_or_create(ISSUER.into(), "callproof".into(), dir.path()).unwrap();
    let fixture = Fixture {
        issuer: Arc::new(issuer),
        _dir: dir,
    };
    let (status, headers, body) = get(
        &fixture,
        &format!("/authorize?{}", authorization_query(&[])),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!headers.contains_key("location"));
    assert!(body.contains("--console-client-secret"), "{body}");
}
