//! The JWKS cache against a local issuer (its own HTTP server and keys): keys the issuer
//! withdraws stop verifying once the cache is past its TTL, refetches are single flight and rate
//! limited, and an issuer that stays down fails closed.
//!
//! These tests wait for TTLs to pass (seconds); they never assert on how long anything took.

use std::sync::Arc;
use std::time::Duration;

use callproof_config::OidcConfig;
use callproof_oidc::{AuthError, Authenticator};
use callproof_tests::issuer::{AUDIENCE, TestIssuer, ec_key, sign};
use jsonwebtoken::Algorithm;

fn config(issuer: &TestIssuer, cache_secs: u64, min_refresh_secs: u64) -> OidcConfig {
    OidcConfig {
        issuer: issuer.url.clone(),
        audiences: vec![AUDIENCE.to_string()],
        groups_claim: "groups".to_string(),
        algorithms: ["RS256", "ES256", "EdDSA"].map(String::from).to_vec(),
        clock_skew_secs: 5,
        jwks_cache_secs: cache_secs,
        jwks_min_refresh_secs: min_refresh_secs,
        http_timeout_ms: 2_000,
    }
}

async fn authenticator(config: OidcConfig) -> Authenticator {
    let authenticator = Authenticator::new(config).unwrap();
    authenticator.warm_up().await;
    authenticator
}

/// Regression: a cached `kid` was never checked again, so a key the issuer removed kept
/// verifying tokens for as long as the process ran.
#[tokio::test]
async fn a_withdrawn_key_stops_verifying_once_the_cache_is_past_its_ttl() {
    let issuer = TestIssuer::start().await.unwrap();
    let authenticator = authenticator(config(&issuer, 1, 1)).await;
    let key = issuer.key(Algorithm::ES256);
    let token = sign(&key, &issuer.claims("alice", &["support"]));
    let principal = authenticator.authenticate(&token).await.unwrap();
    assert_eq!(principal.subject, "alice");

    issuer.withdraw(&key.kid);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        authenticator.authenticate(&token).await,
        Err(AuthError::UnknownKey(Some(key.kid.clone())))
    );
    // The other keys were fetched again and still verify.
    let other = sign(
        &issuer.key(Algorithm::EdDSA),
        &issuer.claims("bob", &["support"]),
    );
    assert!(authenticator.authenticate(&other).await.is_ok());
}

#[tokio::test]
async fn a_key_published_after_start_verifies_once_fetched() {
    let issuer = TestIssuer::start().await.unwrap();
    let authenticator = authenticator(config(&issuer, 600, 0)).await;
    let rotated = ec_key("ec-2").unwrap();
    issuer.publish(rotated.clone());
    let token = sign(&rotated, &issuer.claims("alice", &[]));
    assert!(authenticator.authenticate(&token).await.is_ok());
}

/// Regression: with the cache past its TTL, every task of a burst of unknown `kid`s forced its
/// own fetch after waiting for the previous one; the rate limit is now decided under the lock.
#[tokio::test]
async fn a_burst_of_unknown_kids_on_a_stale_cache_costs_one_fetch() {
    let issuer = TestIssuer::start().await.unwrap();
    let authenticator = Arc::new(authenticator(config(&issuer, 1, 60)).await);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before = issuer.jwks_fetches();
    let forged_key = ec_key("made-up").unwrap();
    let attempts = (0..20).map(|n| {
        let authenticator = authenticator.clone();
        let mut key = forged_key.clone();
        key.kid = format!("made-up-{n}");
        let token = sign(&key, &issuer.claims("mallory", &[]));
        async move { authenticator.authenticate(&token).await }
    });
    let results = futures::future::join_all(attempts).await;
    for result in results {
        assert!(
            matches!(result, Err(AuthError::UnknownKey(_))),
            "{result:?}"
        );
    }
    assert_eq!(issuer.jwks_fetches() - before, 1);
}

#[tokio::test]
async fn known_keys_outlive_a_short_issuer_outage_then_fail_closed() {
    let issuer = TestIssuer::start().await.unwrap();
    // Stale keys are used up to twice the TTL: here from 3 s to 6 s after the fetch.
    let authenticator = authenticator(config(&issuer, 3, 1)).await;
    let token = issuer.token("alice", &["support"]);
    assert!(authenticator.authenticate(&token).await.is_ok());

    issuer.set_available(false);
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert!(
        authenticator.authenticate(&token).await.is_ok(),
        "within the grace period the cached key still verifies"
    );
    let unknown = sign(&ec_key("ec-new").unwrap(), &issuer.claims("alice", &[]));
    assert_eq!(
        authenticator.authenticate(&unknown).await,
        Err(AuthError::IssuerUnavailable),
        "an unknown key cannot be checked while the issuer is down"
    );

    tokio::time::sleep(Duration::from_millis(3_000)).await;
    assert_eq!(
        authenticator.authenticate(&token).await,
        Err(AuthError::IssuerUnavailable)
    );

    issuer.set_available(true);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert!(authenticator.authenticate(&token).await.is_ok());
}

#[tokio::test]
async fn an_issuer_down_from_the_start_is_unavailable_not_an_unknown_key() {
    let issuer = TestIssuer::start().await.unwrap();
    issuer.set_available(false);
    let authenticator = authenticator(config(&issuer, 600, 1)).await;
    assert_eq!(
        authenticator
            .authenticate(&issuer.token("alice", &[]))
            .await,
        Err(AuthError::IssuerUnavailable)
    );
}
