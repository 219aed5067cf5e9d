//! A demo OIDC issuer: discovery document, JWKS, `GET /token` that mints an EdDSA token for
//! any subject, groups and acting agent (for the configured audience, or for one of the
//! resources it knows, named as RFC 8707's `resource`), and a sign-in for the console ([`crate::signin`]:
//! authorization code flow with PKCE, a page listing the demo users, no password). Its key is
//! kept in the data directory, so tokens and the gateway's cached keys survive a restart.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::signin::{self, SignIn};

const KEY_ID: &str = "demo-ed25519";

pub struct Issuer {
    pub url: String,
    pub audience: String,
    /// The other audiences a token may be asked for with `resource` (e.g. the gateway's MCP
    /// endpoint, whose tokens must name it): only these, so a token for one resource is not a
    /// token for any other.
    pub resources: Vec<String>,
    signing: SigningKey,
    encoding: EncodingKey,
    /// The console's client and the codes handed out at sign-in.
    pub sign_in: SignIn,
}

#[derive(Deserialize)]
pub struct TokenRequest {
    /// The user the token names.
    pub sub: String,
    /// Comma-separated groups.
    #[serde(default)]
    pub groups: String,
    /// The agent acting for the user (RFC 8693 `act`), if any.
    pub act: Option<String>,
    /// Lifetime in seconds.
    #[serde(default = "default_lifetime")]
    pub ttl: u64,
    /// The resource the token is for (RFC 8707), its `aud`: one of the issuer's `resources`.
    /// Absent, the issuer's audience.
    pub resource: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("unknown resource {0:?}: this issuer mints tokens for {1}")]
    UnknownResource(String, String),
    #[error("signing the token: {0}")]
    Signing(#[from] jsonwebtoken::errors::Error),
}

fn default_lifetime() -> u64 {
    3600
}

impl Issuer {
    /// Loads the signing key from `data_dir/issuer-key.pem`, creating it on first run.
    pub fn load_or_create(
        url: String,
        audience: String,
        data_dir: &Path,
    ) -> anyhow::Result<Issuer> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join("issuer-key.pem");
        let signing = if path.exists() {
            let pem = std::fs::read_to_string(&path)?;
            SigningKey::from_pkcs8_pem(&pem).with_context(|| format!("{}", path.display()))?
        } else {
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            std::fs::write(&path, key.to_pkcs8_pem(LineEnding::LF)?.as_bytes())?;
            key
        };
        let pem = signing.to_pkcs8_pem(LineEnding::LF)?;
        let encoding = EncodingKey::from_ed_pem(pem.as_bytes())?;
        Ok(Issuer {
            url,
            audience,
            resources: Vec::new(),
            signing,
            encoding,
            sign_in: SignIn::new(None),
        })
    }

    /// Registers the client that may sign people in (the quick start's console).
    pub fn with_client(mut self, client: signin::Client) -> Issuer {
        self.sign_in = SignIn::new(Some(client));
        self
    }

    /// The resources, besides the audience, tokens may be minted for.
    pub fn with_resources(mut self, resources: Vec<String>) -> Issuer {
        self.resources = resources;
        self
    }

    /// An access token for the gateway and the evidence API (`aud` = the configured audience),
    /// or for the requested resource when it is one of `resources`.
    pub fn mint(&self, request: &TokenRequest) -> Result<String, MintError> {
        let audience = match &request.resource {
            None => &self.audience,
            Some(resource) if *resource == self.audience || self.resources.contains(resource) => {
                resource
            }
            Some(resource) => {
                let known = std::iter::once(&self.audience)
                    .chain(&self.resources)
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(MintError::UnknownResource(resource.clone(), known));
            }
        };
        let now = now_secs();
        let groups: Vec<&str> = request
            .groups
            .split(',')
            .map(str::trim)
            .filter(|group| !group.is_empty())
            .collect();
        let mut claims = json!({
            "iss": self.url,
            "aud": audience,
            "sub": request.sub,
            "email": format!("{}@demo.callproof.dev", request.sub),
            "groups": groups,
            "iat": now,
            "nbf": now,
            "exp": now + request.ttl,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        if let Some(agent) = &request.act {
            claims["act"] = json!({ "sub": agent });
        }
        Ok(self.sign(&claims)?)
    }

    /// A JWT of `claims`, signed with the issuer's key (the one the JWKS publishes).
    pub fn sign(&self, claims: &Value) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(KEY_ID.to_string());
        jsonwebtoken::encode(&header, claims, &self.encoding)
    }

    pub(crate) fn jwks(&self) -> Value {
        json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": KEY_ID,
            "x": URL_SAFE_NO_PAD.encode(self.signing.verifying_key().as_bytes()),
        }]})
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

pub fn router(issuer: Arc<Issuer>) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/token", get(token))
        .route(
            "/authorize",
            get(signin::authorize_page).post(signin::authorize),
        )
        .route("/oauth/token", post(signin::token))
        .with_state(issuer)
}

async fn discovery(State(issuer): State<Arc<Issuer>>) -> Json<Value> {
    Json(json!({
        "issuer": issuer.url,
        "jwks_uri": format!("{}/jwks", issuer.url),
        "authorization_endpoint": format!("{}/authorize", issuer.url),
        "token_endpoint": format!("{}/oauth/token", issuer.url),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["public"],
        "scopes_supported": ["openid", "profile", "email"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "name", "email", "groups"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
    }))
}

async fn jwks(State(issuer): State<Arc<Issuer>>) -> Json<Value> {
    Json(issuer.jwks())
}

async fn token(
    State(issuer): State<Arc<Issuer>>,
    Query(request): Query<TokenRequest>,
) -> Result<String, (axum::http::StatusCode, String)> {
    issuer
        .mint(&request)
        .map_err(|error| (axum::http::StatusCode::BAD_REQUEST, error.to_string()))
}

#[cfg(test)]
mod tests;
