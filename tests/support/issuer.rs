//! A local OIDC issuer: its own HTTP server (discovery document and JWKS) and its own keys, one
//! per accepted algorithm, generated at start. Tests mint tokens with it; nothing leaves loopback.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub const AUDIENCE: &str = "callproof";

/// A signing key with its public JWK.
#[derive(Clone)]
pub struct IssuerKey {
    pub kid: String,
    pub algorithm: Algorithm,
    encoding: EncodingKey,
    pub jwk: Value,
    /// The public key as PEM, for the "HS256 signed with the public key" attack.
    pub public_pem: String,
}

pub struct TestIssuer {
    pub url: String,
    pub address: SocketAddr,
    state: Arc<IssuerState>,
}

struct IssuerState {
    url: String,
    published: Mutex<Vec<IssuerKey>>,
    jwks_fetches: AtomicUsize,
    /// While false, discovery and JWKS answer 503, as an identity provider that is down.
    available: AtomicBool,
}

impl TestIssuer {
    /// Starts an issuer publishing one RS256, one ES256 and one EdDSA key.
    pub async fn start() -> anyhow::Result<TestIssuer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let url = format!("http://{address}");
        let keys = vec![rsa_key("rsa-1")?, ec_key("ec-1")?, ed_key("ed-1")?];
        let state = Arc::new(IssuerState {
            url: url.clone(),
            published: Mutex::new(keys),
            jwks_fetches: AtomicUsize::new(0),
            available: AtomicBool::new(true),
        });
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(TestIssuer {
            url,
            address,
            state,
        })
    }

    pub fn key(&self, algorithm: Algorithm) -> IssuerKey {
        self.state
            .published
            .lock()
            .map(|keys| keys.iter().find(|key| key.algorithm == algorithm).cloned())
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("the test issuer has no {algorithm:?} key"))
    }

    /// Publishes another key, as an issuer rotating its keys does.
    pub fn publish(&self, key: IssuerKey) {
        if let Ok(mut keys) = self.state.published.lock() {
            keys.push(key);
        }
    }

    /// Stops publishing the key `kid`, as an issuer that rotated it out (or found it leaked)
    /// does. Tokens signed with it can still be made; verifiers should stop accepting them.
    pub fn withdraw(&self, kid: &str) {
        if let Ok(mut keys) = self.state.published.lock() {
            keys.retain(|key| key.kid != kid);
        }
    }

    /// Makes discovery and JWKS answer 503 (`false`) or work again (`true`), as an identity
    /// provider going down and coming back.
    pub fn set_available(&self, available: bool) {
        self.state.available.store(available, Ordering::SeqCst);
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    /// The claims of a valid token for `subject`, to adjust before signing.
    pub fn claims(&self, subject: &str, groups: &[&str]) -> Value {
        let now = now_secs();
        json!({
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": subject,
            "email": format!("{subject}@example.com"),
            "groups": groups,
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "jti": uuid::Uuid::new_v4().to_string(),
        })
    }

    /// A valid ES256 token for `subject` in `groups`.
    pub fn token(&self, subject: &str, groups: &[&str]) -> String {
        sign(&self.key(Algorithm::ES256), &self.claims(subject, groups))
    }
}

/// Signs `claims` with `key`, putting its `kid` in the header.
pub fn sign(key: &IssuerKey, claims: &Value) -> String {
    sign_with(key, claims, |_| {})
}

/// As [`sign`], with the header changed by `edit` first (a padded `x5c`, say): still a token
/// the issuer's key validly signs.
pub fn sign_with(key: &IssuerKey, claims: &Value, edit: impl FnOnce(&mut Header)) -> String {
    let mut header = Header::new(key.algorithm);
    header.kid = Some(key.kid.clone());
    edit(&mut header);
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap_or_else(|error| panic!("{error}"))
}

/// A token with a hand-made header and claims and the given signature bytes: for `alg: none`
/// and other forgeries no library will produce.
pub fn forge(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

async fn discovery(State(state): State<Arc<IssuerState>>) -> Response {
    if !state.available.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    Json(json!({
        "issuer": state.url,
        "jwks_uri": format!("{}/jwks", state.url),
        "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
    }))
    .into_response()
}

async fn jwks(State(state): State<Arc<IssuerState>>) -> Response {
    state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    if !state.available.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let keys: Vec<Value> = state
        .published
        .lock()
        .map(|keys| keys.iter().map(|key| key.jwk.clone()).collect())
        .unwrap_or_default();
    Json(json!({ "keys": keys })).into_response()
}

/// RSA keys are slow to generate in debug builds; one per process is enough.
fn rsa_private_key() -> anyhow::Result<rsa::RsaPrivateKey> {
    static KEY: std::sync::OnceLock<rsa::RsaPrivateKey> = std::sync::OnceLock::new();
    if let Some(key) = KEY.get() {
        return Ok(key.clone());
    }
    let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)?;
    Ok(KEY.get_or_init(|| key).clone())
}

pub fn rsa_key(kid: &str) -> anyhow::Result<IssuerKey> {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    use rsa::traits::PublicKeyParts;
    let private = rsa_private_key()?;
    let public = private.to_public_key();
    let pem = private.to_pkcs8_pem(LineEnding::LF)?;
    Ok(IssuerKey {
        kid: kid.to_string(),
        algorithm: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_pem(pem.as_bytes()).context("rsa pem")?,
        jwk: json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
        }),
        public_pem: public.to_public_key_pem(LineEnding::LF)?,
    })
}

pub fn ec_key(kid: &str) -> anyhow::Result<IssuerKey> {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let public = secret.public_key();
    let point = public.to_encoded_point(false);
    let pem = secret.to_pkcs8_pem(LineEnding::LF)?;
    Ok(IssuerKey {
        kid: kid.to_string(),
        algorithm: Algorithm::ES256,
        encoding: EncodingKey::from_ec_pem(pem.as_bytes()).context("ec pem")?,
        jwk: json!({
            "kty": "EC", "use": "sig", "alg": "ES256", "crv": "P-256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(point.x().context("x")?),
            "y": URL_SAFE_NO_PAD.encode(point.y().context("y")?),
        }),
        public_pem: public.to_public_key_pem(LineEnding::LF)?,
    })
}

pub fn ed_key(kid: &str) -> anyhow::Result<IssuerKey> {
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
    let signing = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = signing.to_pkcs8_pem(LineEnding::LF)?;
    Ok(IssuerKey {
        kid: kid.to_string(),
        algorithm: Algorithm::EdDSA,
        encoding: EncodingKey::from_ed_pem(pem.as_bytes()).context("ed pem")?,
        jwk: json!({
            "kty": "OKP", "use": "sig", "alg": "EdDSA", "crv": "Ed25519", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes()),
        }),
        public_pem: signing.verifying_key().to_public_key_pem(LineEnding::LF)?,
    })
}
