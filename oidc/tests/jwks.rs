//! The JWKS cache against a local issuer (its own HTTP server and keys): keys the issuer
//! withdraws stop verifying once the cache is past its TTL, refetches are single flight and rate
//! limited, and an issuer that stays down fails closed. Then the cache of verified tokens: a hit
//! never outlives the token's `exp`, its key's removal or replacement, or the audiences it was
//! verified for.
//!
//! These tests wait for TTLs to pass (seconds); they never assert on how long anything took.

use std::sync::Arc;
use std::time::Duration;

use callproof_config::OidcConfig;
use callproof_oidc::{AuthError, Authenticator, TokenCacheStats};
use callproof_tests::issuer::{AUDIENCE, TestIssuer, ec_key, now_secs, sign};
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

// The cache of verified tokens.

fn stats(hits: u64, misses: u64, stale: u64, entries: usize) -> TokenCacheStats {
    TokenCacheStats {
        hits,
        misses,
        stale,
        entries,
    }
}

#[tokio::test]
async fn a_cached_token_gives_the_same_principal() {
    let issuer = TestIssuer::start().await.unwrap();
    let authenticator = authenticator(config(&issuer, 600, 1)).await;
    let token = sign(
        &issuer.key(Algorithm::EdDSA),
        &issuer.claims("alice", &["support"]),
    );
    let verified = authenticator.authenticate(&token).await.unwrap();
    let cached = authenticator.authenticate(&token).await.unwrap();
    assert_eq!(cached, verified);
    assert_eq!(authenticator.token_cache_stats(), stats(1, 1, 0, 1));
}

/// The token expires at `exp` + the leeway, cached or not; a cached one past that is verified
/// again, which refuses it as `Expired`.
#[tokio::test]
async fn a_cached_token_is_refused_once_past_its_exp_and_the_leeway() {
    let issuer = TestIssuer::start().await.unwrap();
    let authenticator = authenticator(OidcConfig {
        clock_skew_secs: 1,
        ..config(&issuer, 600, 1)
    })
    .await;
    let mut claims = issuer.claims("alice", &[]);
    let expires_at = now_secs();
    claims["exp"] = expires_at.into();
    let token = sign(&issuer.key(Algorithm::EdDSA), &claims);
    // At `exp`, and a second past it, the leeway still accepts the token.
    assert!(authenticator.authenticate(&token).await.is_ok());
    assert!(authenticator.authenticate(&token).await.is_ok());
    assert_eq!(authenticator.token_cache_stats().hits, 1);

    while now_secs() <= expires_at + 1 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        authenticator.authenticate(&token).await,
        Err(AuthError::Expired)
    );
    assert_eq!(authenticator.token_cache_stats(), stats(1, 1, 1, 0));
}

#[tokio::test]
async fn a_key_withdrawn_from_the_jwks_ends_the_cached_tokens_it_verified() {
    let issuer = TestIssuer::start().await.unwrap();
    let authenticator = authenticator(config(&issuer, 1, 1)).await;
    let key = issuer.key(Algorithm::EdDSA);
    let token = sign(&key, &issuer.claims("alice", &[]));
    assert!(authenticator.authenticate(&token).await.is_ok());
    assert!(authenticator.authenticate(&token).await.is_ok());
    assert_eq!(authenticator.token_cache_stats().hits, 1);

    issuer.withdraw(&key.kid);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        authenticator.authenticate(&token).await,
        Err(AuthError::UnknownKey(Some(key.kid.clone())))
    );
    assert_eq!(authenticator.token_cache_stats(), stats(1, 1, 1, 0));
}

/// The `kid` alone is not the key: an issuer that publishes new material under the same `kid`
/// ends the tokens the old material verified.
#[tokio::test]
async fn a_key_replaced_under_the_same_kid_ends_the_cached_tokens_the_old_one_verified() {
    let issuer = TestIssuer::start().await.unwrap();
    let authenticator = authenticator(config(&issuer, 1, 1)).await;
    let old_key = issuer.key(Algorithm::ES256);
    let token = sign(&old_key, &issuer.claims("alice", &[]));
    assert!(authenticator.authenticate(&token).await.is_ok());

    let new_key = ec_key(&old_key.kid).unwrap();
    issuer.withdraw(&old_key.kid);
    issuer.publish(new_key.clone());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        authenticator.authenticate(&token).await,
        Err(AuthError::BadSignature)
    );
    assert_eq!(authenticator.token_cache_stats(), stats(0, 1, 1, 0));
    let renewed = sign(&new_key, &issuer.claims("alice", &[]));
    assert!(authenticator.authenticate(&renewed).await.is_ok());
}

/// A refetch that finds the same keys keeps the tokens they verified: the JWKS TTL does not
/// empty the cache.
#[tokio::test]
async fn an_unchanged_jwks_refetched_keeps_the_cached_tokens() {
    let issuer = TestIssuer::start().await.unwrap();
    let authenticator = authenticator(config(&issuer, 1, 1)).await;
    let token = issuer.token("alice", &[]);
    assert!(authenticator.authenticate(&token).await.is_ok());
    let fetches = issuer.jwks_fetches();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert!(authenticator.authenticate(&token).await.is_ok());
    assert_eq!(
        issuer.jwks_fetches(),
        fetches + 1,
        "the keys were fetched again"
    );
    assert_eq!(authenticator.token_cache_stats(), stats(1, 1, 0, 1));
}

#[tokio::test]
async fn a_token_cached_for_some_audiences_is_refused_for_others() {
    let issuer = TestIssuer::start().await.unwrap();
    let authenticator = authenticator(config(&issuer, 600, 1)).await;
    let mcp = vec!["https://gateway.example/mcp".to_string()];
    let token = issuer.token("alice", &[]);
    assert!(authenticator.authenticate(&token).await.is_ok());
    assert_eq!(
        authenticator.authenticate_for(&token, &mcp).await,
        Err(AuthError::WrongAudience)
    );
    // The refusal is not cached and does not disturb the entry of the configured audiences.
    assert!(authenticator.authenticate(&token).await.is_ok());
    assert_eq!(authenticator.token_cache_stats(), stats(1, 2, 0, 1));

    let mut claims = issuer.claims("alice", &[]);
    claims["aud"] = mcp[0].clone().into();
    let for_mcp = sign(&issuer.key(Algorithm::EdDSA), &claims);
    assert!(authenticator.authenticate_for(&for_mcp, &mcp).await.is_ok());
    assert!(authenticator.authenticate_for(&for_mcp, &mcp).await.is_ok());
    assert_eq!(
        authenticator.authenticate(&for_mcp).await,
        Err(AuthError::WrongAudience)
    );
}

#[tokio::test]
async fn a_tampered_cached_token_is_a_miss_and_fails_verification() {
    let issuer = TestIssuer::start().await.unwrap();
    let authenticator = authenticator(config(&issuer, 600, 1)).await;
    let token = sign(&issuer.key(Algorithm::EdDSA), &issuer.claims("alice", &[]));
    assert!(authenticator.authenticate(&token).await.is_ok());

    // One character in the middle of the signature: six bits of it.
    let mut tampered = token.clone().into_bytes();
    let at = tampered.len() - 20;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(
        authenticator.authenticate(&tampered).await,
        Err(AuthError::BadSignature)
    );
    assert_eq!(authenticator.token_cache_stats(), stats(0, 2, 0, 1));
}
