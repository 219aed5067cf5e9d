//! OIDC bearer-token authentication, shared by the gateway (callers) and the evidence API
//! (auditors).
//!
//! Keys come from the issuer's JWKS, found through `/.well-known/openid-configuration`.
//!
//! - The JWKS is trusted for `jwks_cache_secs` after a successful fetch. Once older, the next
//!   token refetches it, even when its `kid` is cached: a key the issuer withdrew (rotated out,
//!   compromised) must stop verifying within the TTL, not live on in the cache.
//! - A token whose `kid` the cache does not know also triggers a refetch (the issuer may have
//!   rotated).
//! - Fetches are single flight and rate limited: at most one attempt per
//!   `min(jwks_min_refresh_secs, jwks_cache_secs)`, decided after taking the fetch lock, so a burst
//!   of made-up `kid`s cannot turn the gateway into a load generator against the issuer.
//! - If the issuer cannot be reached, the cached keys keep verifying until the cache is
//!   [`MAX_STALENESS_FACTOR`] times `jwks_cache_secs` old, so a short outage of the identity
//!   provider does not lock every caller out. Past that, every token is refused with
//!   [`AuthError::IssuerUnavailable`] (fail closed): the gateway no longer knows which keys the
//!   issuer still stands behind. Callers map that error to 503, not 401: the token may be fine.
//!
//! Only asymmetric algorithms are accepted: with HS256 allowed, anyone holding the issuer's
//! *public* key could mint tokens.
//!
//! Verified tokens are cached (`token_cache.rs`): a hit is checked again against the clock (with
//! the verifier's leeway) and against the issuer's current keys under the rules above, so a
//! cached token never outlives its `exp`, its key's removal from the JWKS, or the configuration
//! (the cache is part of the `Authenticator`, built from the configuration at start).

mod token_cache;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callproof_config::OidcConfig;
use callproof_schemas::{Actor, Authentication, Principal};
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use token_cache::{KeyId, Outcome, TokenCache, VerifiedToken};
use tokio::sync::{Mutex, RwLock};

pub use token_cache::{MAX_CACHED_TOKENS, TokenCacheStats};

/// Why a token was refused. The message is safe to return to the caller.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing bearer token")]
    MissingToken,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token algorithm {0} is not accepted")]
    AlgorithmNotAccepted(String),
    #[error("token signing key {0:?} is not known to the issuer")]
    UnknownKey(Option<String>),
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token issuer is not accepted")]
    WrongIssuer,
    #[error("token audience is not accepted")]
    WrongAudience,
    #[error("token lacks the required claim `{0}`")]
    MissingClaim(String),
    #[error("the identity provider's keys cannot be fetched")]
    IssuerUnavailable,
    #[error("token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
}

/// The longest bearer token accepted, in bytes. Tokens of real issuers take 1–4 KiB, a few
/// dozen groups included; a longer one is refused before anything of it is decoded, so that a
/// validly signed token of hundreds of kilobytes cannot make every request parse and verify it.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The most bytes of request headers (names and values together) the HTTP services accept; a
/// request with more is answered 431 before it is routed. It leaves room for a token of
/// [`MAX_TOKEN_BYTES`] and the usual headers of proxies and browsers.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Whether `headers` fit in [`MAX_HEADER_BYTES`].
pub fn headers_within_limit(headers: &http::HeaderMap) -> bool {
    let mut total = 0usize;
    for (name, value) in headers {
        total += name.as_str().len() + value.len();
        if total > MAX_HEADER_BYTES {
            return false;
        }
    }
    true
}

/// Cached keys keep verifying while the issuer is unreachable until the cache is this many times
/// `jwks_cache_secs` old; then tokens are refused as [`AuthError::IssuerUnavailable`].
pub const MAX_STALENESS_FACTOR: u32 = 2;

/// Verifies bearer tokens of one issuer.
pub struct Authenticator {
    config: OidcConfig,
    algorithms: Vec<Algorithm>,
    http: reqwest::Client,
    keys: RwLock<KeyCache>,
    /// Serialises refetches (single flight) and remembers the last attempt, so a burst of tokens
    /// that all want a refetch causes one fetch.
    refetch: Mutex<RefetchState>,
    /// Tokens verified before, keyed by their bytes and the audiences accepted. It lives and dies
    /// with this `Authenticator`, so a configuration change (which rebuilds it) empties it.
    verified: TokenCache,
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, CachedKey>,
    /// Keys published without a `kid`, tried in order for tokens without one.
    anonymous: Vec<CachedKey>,
    /// When these keys were fetched; a failed fetch leaves it alone, so the keys' age keeps
    /// growing while the issuer is down.
    fetched_at: Option<Instant>,
}

struct RefetchState {
    /// The last fetch attempt, successful or not: the rate limit counts both, so an unreachable
    /// issuer is not retried on every token.
    attempted_at: Option<Instant>,
    /// Its outcome, given to the callers the rate limit turns away.
    outcome: Result<(), String>,
}

impl Default for RefetchState {
    fn default() -> Self {
        RefetchState {
            attempted_at: None,
            outcome: Ok(()),
        }
    }
}

#[derive(Clone)]
struct CachedKey {
    key: Arc<DecodingKey>,
    /// The algorithm the JWK is pinned to, if it names one.
    algorithm: Option<Algorithm>,
    /// Which published key this is; a cached token counts only while its `kid` still finds the
    /// key that verified it.
    id: KeyId,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

impl Authenticator {
    pub fn new(config: OidcConfig) -> Result<Authenticator, String> {
        let algorithms = config
            .algorithms
            .iter()
            .map(|name| Algorithm::from_str(name).map_err(|_| format!("unknown algorithm {name}")))
            .collect::<Result<Vec<_>, _>>()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.http_timeout_ms))
            .build()
            .map_err(|error| format!("cannot build the HTTP client: {error}"))?;
        Ok(Authenticator {
            config,
            algorithms,
            http,
            keys: RwLock::new(KeyCache::default()),
            refetch: Mutex::new(RefetchState::default()),
            verified: TokenCache::new(MAX_CACHED_TOKENS),
        })
    }

    /// Fetches the keys ahead of the first call; failure is logged, not fatal, because the
    /// issuer may come up after the gateway.
    pub async fn warm_up(&self) {
        if let Err(error) = self.refetch_keys(true).await {
            tracing::warn!(issuer = %self.config.issuer, %error, "cannot fetch the issuer's keys yet");
        }
    }

    /// Verifies `token` for the configured audiences (`oidc.audiences`) and returns who it names.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        self.authenticate_for(token, &self.config.audiences).await
    }

    /// Verifies `token` as [`Authenticator::authenticate`] does, accepting the audiences given
    /// instead of the configured ones: an endpoint that is a resource of its own (the MCP
    /// endpoint, RFC 8707/9728) requires tokens issued for its URI.
    pub async fn authenticate_for(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<Principal, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        let digest = token_cache::digest(token, audiences);
        match self.verified.get(&digest) {
            Some(cached) => match self.still_valid(&cached).await {
                Ok(true) => {
                    self.verified.count(Outcome::Hit);
                    return Ok(cached.principal.clone());
                }
                // Verified again below, which says why it no longer verifies, if it does not.
                Ok(false) => {
                    self.verified.remove(&digest);
                    self.verified.count(Outcome::Stale);
                }
                // Verification would stop at the same point, on the same key lookup.
                Err(error) => {
                    self.verified.remove(&digest);
                    self.verified.count(Outcome::Stale);
                    return Err(error);
                }
            },
            None => self.verified.count(Outcome::Miss),
        }
        let verified = self.verify(token, audiences).await?;
        let principal = verified.principal.clone();
        self.verified.insert(
            digest,
            verified,
            jsonwebtoken::get_current_timestamp(),
            self.config.clock_skew_secs,
        );
        Ok(principal)
    }

    /// How the cache of verified tokens has done so far.
    pub fn token_cache_stats(&self) -> TokenCacheStats {
        self.verified.stats()
    }

    /// Whether verifying the token of `cached` again would still succeed. The digest fixes the
    /// header, the signature, the claims and the audiences; what can change is the time and the
    /// issuer's keys. The key is looked up as verification looks it up (the JWKS TTL, refetch
    /// and staleness rules apply), and must be the very key that verified the token.
    async fn still_valid(&self, cached: &VerifiedToken) -> Result<bool, AuthError> {
        let key = self
            .key_for(cached.kid.as_deref(), cached.algorithm)
            .await?;
        Ok(key.id == cached.key
            && cached.valid_at(
                jsonwebtoken::get_current_timestamp(),
                self.config.clock_skew_secs,
            ))
    }

    async fn verify(&self, token: &str, audiences: &[String]) -> Result<VerifiedToken, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|error| AuthError::Malformed(describe_malformed(&error)))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(AuthError::AlgorithmNotAccepted(format!("{:?}", header.alg)));
        }
        let key = self.key_for(header.kid.as_deref(), header.alg).await?;
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = self.config.clock_skew_secs;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|error| classify(&error))?;
        let claims = &data.claims;
        // `exp` is required and was read by the verifier, so it is a date.
        let expires_at = claims
            .get("exp")
            .and_then(token_cache::numeric_date)
            .ok_or_else(|| AuthError::MissingClaim("exp".to_string()))?;
        let not_before = claims.get("nbf").and_then(token_cache::numeric_date);
        Ok(VerifiedToken {
            principal: self.principal_from_claims(claims, header.alg, header.kid.clone()),
            algorithm: header.alg,
            kid: header.kid,
            key: key.id,
            expires_at,
            not_before,
        })
    }

    async fn key_for(
        &self,
        kid: Option<&str>,
        algorithm: Algorithm,
    ) -> Result<CachedKey, AuthError> {
        let ttl = Duration::from_secs(self.config.jwks_cache_secs);
        {
            let cache = self.keys.read().await;
            if cache.age().is_some_and(|age| age < ttl)
                && let Some(found) = cache.lookup(kid, algorithm)?
            {
                return Ok(found);
            }
        }
        // The key is unknown (the issuer may have rotated) or the cache is past its TTL (the
        // issuer may have withdrawn the key): ask the issuer, within the rate limit.
        let refreshed = self.refetch_keys(false).await;
        if let Err(error) = &refreshed {
            tracing::warn!(issuer = %self.config.issuer, %error, "cannot fetch the issuer's keys");
        }
        let cache = self.keys.read().await;
        // After a successful (or recent enough) fetch the cache is fresh by definition; after a
        // failed one, stale keys are used only within the grace period.
        let max_staleness = ttl.saturating_mul(MAX_STALENESS_FACTOR);
        let usable = refreshed.is_ok() || cache.age().is_some_and(|age| age < max_staleness);
        if !usable {
            return Err(AuthError::IssuerUnavailable);
        }
        match cache.lookup(kid, algorithm)? {
            Some(found) => Ok(found),
            // The issuer could not say whether it knows this key.
            None if refreshed.is_err() => Err(AuthError::IssuerUnavailable),
            None => Err(AuthError::UnknownKey(kid.map(str::to_string))),
        }
    }

    /// Fetches the keys unless another attempt was made within the rate limit, in which case
    /// that attempt's outcome is returned. `force` (start-up only) ignores the limit.
    async fn refetch_keys(&self, force: bool) -> Result<(), String> {
        let mut state = self.refetch.lock().await;
        // Decided under the lock: tasks that queued behind a fetch find it just made and do not
        // fetch again (single flight), whatever they saw before waiting.
        let min_interval = Duration::from_secs(
            self.config
                .jwks_min_refresh_secs
                .min(self.config.jwks_cache_secs),
        );
        if !force
            && let Some(attempted) = state.attempted_at
            && attempted.elapsed() < min_interval
        {
            return state.outcome.clone();
        }
        let result = self.fetch_keys().await;
        state.attempted_at = Some(Instant::now());
        state.outcome = result.as_ref().map(|_| ()).map_err(Clone::clone);
        if let Ok(fresh) = result {
            *self.keys.write().await = fresh;
        }
        state.outcome.clone()
    }

    async fn fetch_keys(&self) -> Result<KeyCache, String> {
        let issuer = self.config.issuer.trim_end_matches('/');
        let discovery_url = format!("{issuer}/.well-known/openid-configuration");
        let discovery: Discovery = self.get_json(&discovery_url).await?;
        if discovery.issuer.trim_end_matches('/') != issuer {
            return Err(format!(
                "discovery document names issuer {:?}, not the configured {:?}",
                discovery.issuer, self.config.issuer
            ));
        }
        let jwks: JwkSet = self.get_json(&discovery.jwks_uri).await?;
        let mut cache = KeyCache {
            fetched_at: Some(Instant::now()),
            ..KeyCache::default()
        };
        for jwk in &jwks.keys {
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
                continue; // symmetric keys are never trusted for verification
            }
            let (Ok(key), Some(id)) = (DecodingKey::from_jwk(jwk), token_cache::key_id(jwk)) else {
                tracing::warn!(kid = ?jwk.common.key_id, "skipping a JWK that cannot be used");
                continue;
            };
            let algorithm = jwk
                .common
                .key_algorithm
                .and_then(|algorithm| Algorithm::from_str(&format!("{algorithm:?}")).ok());
            let cached = CachedKey {
                key: Arc::new(key),
                algorithm,
                id,
            };
            match &jwk.common.key_id {
                Some(kid) => {
                    cache.keys.insert(kid.clone(), cached);
                }
                None => cache.anonymous.push(cached),
            }
        }
        tracing::info!(
            issuer,
            n_keys = cache.keys.len() + cache.anonymous.len(),
            "fetched the issuer's signing keys"
        );
        Ok(cache)
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(&self, url: &str) -> Result<T, String> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|error| format!("GET {url}: {error}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: status {}", response.status()));
        }
        response
            .json()
            .await
            .map_err(|error| format!("GET {url}: invalid JSON: {error}"))
    }

    fn principal_from_claims(
        &self,
        claims: &Map<String, Value>,
        algorithm: Algorithm,
        key_id: Option<String>,
    ) -> Principal {
        let string = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_string);
        let micros = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_i64)
                .map(|seconds| seconds.saturating_mul(1_000_000))
        };
        Principal {
            issuer: string("iss").unwrap_or_default(),
            subject: string("sub").unwrap_or_default(),
            email: string("email"),
            groups: groups_at(claims, &self.config.groups_claim),
            client_id: string("client_id").or_else(|| string("azp")),
            actor: claims.get("act").and_then(actor_from_claim),
            authentication: Some(Authentication {
                method: "oidc_jwt".to_string(),
                algorithm: format!("{algorithm:?}"),
                key_id,
                token_id: string("jti"),
                issued_at: micros("iat"),
                expires_at: micros("exp"),
            }),
        }
    }
}

impl KeyCache {
    /// Time since the keys were fetched; `None` before the first successful fetch.
    fn age(&self) -> Option<Duration> {
        self.fetched_at.map(|fetched| fetched.elapsed())
    }

    fn lookup(
        &self,
        kid: Option<&str>,
        algorithm: Algorithm,
    ) -> Result<Option<CachedKey>, AuthError> {
        let pinned_to_other = |key: &CachedKey| key.algorithm.is_some_and(|pin| pin != algorithm);
        match kid {
            Some(kid) => match self.keys.get(kid) {
                // A key pinned to one algorithm must not verify a token that claims another.
                Some(key) if pinned_to_other(key) => {
                    Err(AuthError::AlgorithmNotAccepted(format!("{algorithm:?}")))
                }
                Some(key) => Ok(Some(key.clone())),
                None => Ok(None),
            },
            None => Ok(self
                .anonymous
                .iter()
                .chain(self.keys.values())
                .find(|key| !pinned_to_other(key))
                .cloned()),
        }
    }
}

/// Reads the groups claim at a dotted path (`groups`, `realm_access.roles`); a single string
/// counts as one group.
fn groups_at(claims: &Map<String, Value>, path: &str) -> Vec<String> {
    let mut segments = path.split('.');
    let Some(first) = segments.next() else {
        return Vec::new();
    };
    let mut value = claims.get(first);
    for segment in segments {
        value = value.and_then(|value| value.get(segment));
    }
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(group)) => vec![group.clone()],
        _ => Vec::new(),
    }
}

/// The RFC 8693 `act` claim: the party acting for the subject. Nested `act`s (a chain of
/// delegation) name earlier actors; the outermost is the current one, which is what we record.
fn actor_from_claim(act: &Value) -> Option<Actor> {
    let string = |name: &str| act.get(name).and_then(Value::as_str).map(str::to_string);
    let client_id = string("client_id");
    let subject = string("sub").or_else(|| client_id.clone())?;
    Some(Actor {
        subject,
        issuer: string("iss"),
        client_id,
    })
}

fn describe_malformed(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::InvalidToken => "not a JWS compact token".to_string(),
        ErrorKind::Base64(_) => "invalid base64url".to_string(),
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
            "header is not valid JSON or names an unsupported algorithm".to_string()
        }
        _ => "cannot parse the header".to_string(),
    }
}

fn classify(error: &jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim.clone()),
        ErrorKind::InvalidAlgorithm => AuthError::AlgorithmNotAccepted("for this key".to_string()),
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidClaimFormat(claim) => {
            AuthError::Malformed(format!("claim `{claim}` has the wrong type"))
        }
        ErrorKind::InvalidToken | ErrorKind::Base64(_) => {
            AuthError::Malformed("not a JWS compact token".to_string())
        }
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
            AuthError::Malformed("claims are not a JSON object".to_string())
        }
        _ => AuthError::BadSignature,
    }
}

/// The bearer token of an `Authorization` header value.
pub fn bearer_token(authorization: Option<&str>) -> Result<&str, AuthError> {
    let value = authorization.ok_or(AuthError::MissingToken)?;
    let (scheme, token) = value.split_once(' ').ok_or_else(|| {
        AuthError::Malformed("authorization header is not `Bearer <token>`".into())
    })?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Malformed(
            "authorization header is not `Bearer <token>`".into(),
        ));
    }
    let token = token.trim();
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::TooLarge);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn groups_come_from_a_configurable_dotted_claim() {
        let token = claims(json!({
            "groups": ["a", "b", 3],
            "realm_access": {"roles": ["auditor"]},
            "single": "only",
        }));
        assert_eq!(groups_at(&token, "groups"), ["a", "b"]);
        assert_eq!(groups_at(&token, "realm_access.roles"), ["auditor"]);
        assert_eq!(groups_at(&token, "single"), ["only"]);
        assert!(groups_at(&token, "missing.path").is_empty());
    }

    #[test]
    fn the_outermost_act_is_the_acting_agent() {
        let act = json!({"sub": "agent-2", "act": {"sub": "agent-1"}});
        let actor = actor_from_claim(&act).unwrap();
        assert_eq!(actor.subject, "agent-2");
        let by_client = actor_from_claim(&json!({"client_id": "bot"})).unwrap();
        assert_eq!(by_client.subject, "bot");
        assert!(actor_from_claim(&json!({"iss": "x"})).is_none());
    }

    #[test]
    fn only_bearer_authorization_is_read() {
        assert_eq!(bearer_token(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(Some("bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(None), Err(AuthError::MissingToken));
        assert!(bearer_token(Some("Basic dXNlcjpwdw==")).is_err());
        assert!(bearer_token(Some("Bearer ")).is_err());
    }
}
