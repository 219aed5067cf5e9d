//! The cache of verified tokens: verifying a signature is most of what authenticating a caller
//! costs, and an agent sends the same token with every call until it expires.
//!
//! An entry is keyed by the SHA-256 of the exact token bytes and of the audiences it was
//! accepted for, so it stands for one answer: "these bytes verify for these audiences". What
//! that answer depended on and may change is checked again on every hit:
//! - time: `exp` and `nbf`, with the same leeway and arithmetic as the verifier
//!   ([`VerifiedToken::valid_at`]);
//! - the issuer's keys: the hit asks for the key of the token's `kid` exactly as verification
//!   does (the JWKS TTL, refetch and staleness rules apply), and the entry counts only if that
//!   key is the one that verified it ([`KeyId`]: a fingerprint of the published JWK). A key the
//!   issuer withdrew, or replaced under the same `kid`, ends its entries when the JWKS is next
//!   fetched, as it ends verification;
//! - the configuration (issuer, accepted algorithms, leeway, groups claim): the cache lives in
//!   the `Authenticator`, which the services build from their configuration at start and never
//!   change; a changed configuration takes a restart, which starts with an empty cache.
//!
//! Only successes are cached. Anything that is not a valid hit is verified from scratch, so a
//! cached token past its `exp` fails exactly as verification fails.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use callproof_schemas::Principal;
use jsonwebtoken::Algorithm;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The most verified tokens kept. An entry takes a few hundred bytes (the principal and its
/// groups); 10,000 callers' live tokens fit in a few megabytes.
pub const MAX_CACHED_TOKENS: usize = 10_000;

/// The SHA-256 of a token's bytes and the audiences it is checked against.
pub(crate) type TokenDigest = [u8; 32];

/// A published key's identity: the SHA-256 of its JWK (key material, `kid`, pinned `alg`), so
/// it survives refetches of an unchanged JWKS and changes when the key does.
pub(crate) type KeyId = [u8; 32];

pub(crate) fn digest(token: &str, audiences: &[String]) -> TokenDigest {
    // Length-prefixed, so that no token and audience list can be read as another.
    let mut hasher = Sha256::new();
    hasher.update((token.len() as u64).to_be_bytes());
    hasher.update(token.as_bytes());
    hasher.update((audiences.len() as u64).to_be_bytes());
    for audience in audiences {
        hasher.update((audience.len() as u64).to_be_bytes());
        hasher.update(audience.as_bytes());
    }
    hasher.finalize().into()
}

pub(crate) fn key_id(jwk: &jsonwebtoken::jwk::Jwk) -> Option<KeyId> {
    let bytes = serde_json::to_vec(jwk).ok()?;
    Some(Sha256::digest(bytes).into())
}

/// What verifying a token established, and what that depended on.
pub(crate) struct VerifiedToken {
    pub principal: Principal,
    pub algorithm: Algorithm,
    pub kid: Option<String>,
    pub key: KeyId,
    /// `exp` and `nbf`, in seconds since the epoch.
    pub expires_at: u64,
    pub not_before: Option<u64>,
}

impl VerifiedToken {
    /// Whether `exp` and `nbf` still hold at `now`: jsonwebtoken's checks (`validate`), with its
    /// arithmetic, so that the cache never accepts a token the verifier would refuse.
    pub fn valid_at(&self, now: u64, leeway: u64) -> bool {
        let expired = self.expires_at < now.saturating_sub(leeway);
        let not_yet = self
            .not_before
            .is_some_and(|not_before| not_before > now.saturating_add(leeway));
        !expired && !not_yet
    }
}

/// A NumericDate claim as jsonwebtoken reads it: an integer, or a float rounded.
pub(crate) fn numeric_date(value: &Value) -> Option<u64> {
    if let Some(seconds) = value.as_u64() {
        return Some(seconds);
    }
    let seconds = value.as_f64()?;
    (seconds.is_finite() && seconds >= 0.0 && seconds < u64::MAX as f64)
        .then(|| seconds.round() as u64)
}

/// How a lookup went, for the metric and [`TokenCacheStats`].
#[derive(Clone, Copy)]
pub(crate) enum Outcome {
    /// A valid entry answered.
    Hit,
    /// No entry: verified.
    Miss,
    /// An entry no longer valid (expired, or its key withdrawn or replaced): dropped, verified.
    Stale,
}

/// Counters of the cache of verified tokens since the `Authenticator` was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenCacheStats {
    pub hits: u64,
    pub misses: u64,
    pub stale: u64,
    pub entries: usize,
}

/// A bounded map behind a plain mutex: a lookup holds it for one hash-map probe and an `Arc`
/// clone, far below the cost of anything else per call, and a specialised concurrent cache
/// would buy nothing on a gateway whose other work dominates (see `benches/verify.rs`).
pub(crate) struct TokenCache {
    entries: Mutex<HashMap<TokenDigest, Arc<VerifiedToken>>>,
    capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
}

impl TokenCache {
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            entries: Mutex::new(HashMap::new()),
            capacity,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            stale: AtomicU64::new(0),
        }
    }

    // A panic while the lock is held cannot leave the map half-updated in a way that matters
    // (each operation is one map call), so a poisoned lock is used as is.
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<TokenDigest, Arc<VerifiedToken>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn get(&self, digest: &TokenDigest) -> Option<Arc<VerifiedToken>> {
        self.entries().get(digest).cloned()
    }

    pub fn remove(&self, digest: &TokenDigest) {
        self.entries().remove(digest);
    }

    /// Keeps `token`. When full, the entries no longer valid at `now` go first; if that frees
    /// nothing, everything goes: simpler than an LRU, and a cache of live tokens refills at the
    /// cost of one verification each.
    pub fn insert(&self, digest: TokenDigest, token: VerifiedToken, now: u64, leeway: u64) {
        let mut entries = self.entries();
        if entries.len() >= self.capacity && !entries.contains_key(&digest) {
            entries.retain(|_, cached| cached.valid_at(now, leeway));
            if entries.len() >= self.capacity {
                tracing::debug!(
                    capacity = self.capacity,
                    "the cache of verified tokens is full of live tokens; emptied"
                );
                entries.clear();
            }
        }
        entries.insert(digest, Arc::new(token));
    }

    pub fn count(&self, outcome: Outcome) {
        let (counter, result) = match outcome {
            Outcome::Hit => (&self.hits, "hit"),
            Outcome::Miss => (&self.misses, "miss"),
            Outcome::Stale => (&self.stale, "stale"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("callproof_oidc_token_cache_total", "result" => result).increment(1);
    }

    pub fn stats(&self) -> TokenCacheStats {
        TokenCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
            entries: self.entries().len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn token(expires_at: u64, not_before: Option<u64>) -> VerifiedToken {
        VerifiedToken {
            principal: Principal {
                issuer: "https://issuer.example".into(),
                subject: "alice".into(),
                email: None,
                groups: Vec::new(),
                client_id: None,
                actor: None,
                authentication: None,
            },
            algorithm: Algorithm::EdDSA,
            kid: Some("ed-1".into()),
            key: [0; 32],
            expires_at,
            not_before,
        }
    }

    /// The boundaries of jsonwebtoken's `validate`: expired when `exp < now - leeway`, not yet
    /// valid when `nbf > now + leeway`.
    #[test]
    fn validity_follows_the_verifiers_leeway_to_the_second() {
        let now = 1_000_000;
        assert!(token(now, None).valid_at(now, 0));
        assert!(!token(now - 1, None).valid_at(now, 0));
        assert!(token(now - 5, None).valid_at(now, 5));
        assert!(!token(now - 6, None).valid_at(now, 5));
        assert!(token(now + 60, Some(now + 5)).valid_at(now, 5));
        assert!(!token(now + 60, Some(now + 6)).valid_at(now, 5));
    }

    #[test]
    fn numeric_dates_are_read_as_the_verifier_reads_them() {
        assert_eq!(numeric_date(&json!(1_700_000_000)), Some(1_700_000_000));
        assert_eq!(numeric_date(&json!(1_700_000_000.6)), Some(1_700_000_001));
        assert_eq!(numeric_date(&json!(-1)), None);
        assert_eq!(numeric_date(&json!("1700000000")), None);
    }

    #[test]
    fn the_audiences_are_part_of_the_key() {
        let token = "header.claims.signature";
        let one = digest(token, &["a".into()]);
        assert_ne!(one, digest(token, &["b".into()]));
        assert_ne!(one, digest(token, &[]));
        // Length prefixes: moving bytes between the token and an audience changes the key.
        assert_ne!(digest("ab", &["c".into()]), digest("a", &["bc".into()]));
        assert_eq!(one, digest(token, &["a".into()]));
    }

    #[test]
    fn a_full_cache_drops_expired_entries_first_then_everything() {
        let now = 1_000_000;
        let cache = TokenCache::new(2);
        cache.insert([1; 32], token(now - 100, None), now, 0);
        cache.insert([2; 32], token(now + 100, None), now, 0);
        cache.insert([3; 32], token(now + 100, None), now, 0);
        assert!(
            cache.get(&[1; 32]).is_none(),
            "the expired entry went first"
        );
        assert!(cache.get(&[2; 32]).is_some() && cache.get(&[3; 32]).is_some());
        cache.insert([4; 32], token(now + 100, None), now, 0);
        assert_eq!(cache.stats().entries, 1);
        assert!(cache.get(&[4; 32]).is_some());
    }
}
