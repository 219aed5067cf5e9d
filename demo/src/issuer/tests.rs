//! `GET /token`: the audience it mints for, and the resources (RFC 8707) it will and will not.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tower::ServiceExt;

use super::{Issuer, router};

const MCP: &str = "http://127.0.0.1:8080/mcp";

/// The status and body of `GET /token?<query>` from an issuer that knows the MCP resource.
async fn token(issuer: &Arc<Issuer>, query: &str) -> (StatusCode, String) {
    let response = router(issuer.clone())
        .oneshot(
            Request::get(format!("/token?{query}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The token's claims, verified with the issuer's published key for `audience`.
fn claims(issuer: &Issuer, token: &str, audience: &str) -> Value {
    let x = issuer.jwks()["keys"][0]["x"].as_str().unwrap().to_string();
    let key = DecodingKey::from_ed_components(&x).unwrap();
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&[audience]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .unwrap_or_else(|error| panic!("not a token for {audience}: {error}"))
        .claims
}

#[tokio::test]
async fn a_token_names_the_requested_resource_and_only_a_known_one() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Arc::new(
        Issuer::load_or_create(
            "http://127.0.0.1:9400".into(),
            "callproof".into(),
            dir.path(),
        )
        .unwrap()
        .with_resources(vec![MCP.into()]),
    );

    let (status, plain) = token(&issuer, "sub=alice&groups=support").await;
    assert_eq!(status, StatusCode::OK, "{plain}");
    assert_eq!(claims(&issuer, &plain, "callproof")["aud"], "callproof");

    // Unencoded, as the quick start prints it.
    let (status, for_mcp) = token(
        &issuer,
        &format!("sub=alice&groups=support&act=support-copilot&resource={MCP}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{for_mcp}");
    let claims = claims(&issuer, &for_mcp, MCP);
    assert_eq!(claims["aud"], MCP);
    assert_eq!(claims["act"]["sub"], "support-copilot");

    for unknown in [
        "https://elsewhere.example/mcp",
        "http://127.0.0.1:8080/mcp/",
    ] {
        let (status, body) = token(&issuer, &format!("sub=alice&resource={unknown}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{unknown}: {body}");
        assert!(body.contains("unknown resource"), "{body}");
    }
}
