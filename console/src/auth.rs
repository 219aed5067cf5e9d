//! Sign-in with the organisation's identity provider, and the session that follows.
//!
//! The authorization code flow with PKCE (S256), through `openidconnect`: `/auth/login` keeps a
//! [`PendingLogin`] (state, nonce, PKCE verifier) in this browser's session and sends the browser
//! to the provider; `/auth/callback` takes it out of the session (so each is used once), compares
//! the state in constant time, exchanges the code with the verifier, and verifies the ID token
//! (signature against the provider's keys, `iss`, `aud` = our client id and no untrusted other
//! audience, `exp`, `nonce`, `at_hash` when present). The person is then [`SignedIn`], keyed on
//! `iss` + `sub` as the gateway and the evidence API see them, with the access token the console
//! calls them with; the session id is renewed. `/auth/logout` (a POST with the CSRF token)
//! deletes the session.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, http::StatusCode};
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdTokenVerifier, CoreProviderMetadata,
};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tower_sessions::Session;

use crate::AppState;
use crate::error::ConsoleError;
use crate::pages;

/// The client as discovered: authorization and token endpoints set, the others as the
/// provider's metadata says.
type DiscoveredClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// How long a discovered provider (its endpoints and keys) is used before it is fetched again,
/// so a rotated signing key is picked up.
const DISCOVERY_TTL: Duration = Duration::from_secs(300);
/// How long a sign-in may take at the provider before the pending one is refused.
const LOGIN_TTL_SECS: i64 = 600;

const PENDING_LOGIN: &str = "pending_login";
const SIGNED_IN: &str = "signed_in";

/// The identity provider, as the console's client.
pub struct Provider {
    issuer: IssuerUrl,
    client_id: ClientId,
    client_secret: Option<ClientSecret>,
    redirect_url: RedirectUrl,
    scopes: Vec<String>,
    resource: Option<String>,
    /// No redirects: the `openidconnect` advice against SSRF through the provider's answers.
    http: reqwest::Client,
    discovered: tokio::sync::Mutex<Option<(Instant, Arc<DiscoveredClient>)>>,
    /// Codes already presented at the callback, so a replayed one is refused here too (the
    /// provider refuses it as well); bounded, oldest forgotten first.
    used_codes: Mutex<std::collections::VecDeque<String>>,
}

/// A sign-in started in this browser and not yet finished.
#[derive(Serialize, Deserialize)]
struct PendingLogin {
    state: String,
    nonce: String,
    pkce_verifier: String,
    started_at: i64,
    return_to: String,
}

/// The signed-in person, as stored in the session.
#[derive(Clone, Serialize, Deserialize)]
pub struct SignedIn {
    pub issuer: String,
    pub subject: String,
    pub name: Option<String>,
    pub email: Option<String>,
    /// Sent as the bearer token to the gateway and the evidence API; never shown.
    pub access_token: String,
    /// Unix seconds; the session ends with the token.
    pub access_token_expires_at: Option<i64>,
    /// Unix seconds; the session ends `session_max_secs` after it.
    pub signed_in_at: i64,
}

impl std::fmt::Debug for SignedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedIn")
            .field("issuer", &self.issuer)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl SignedIn {
    /// The name shown in the page header.
    pub fn display_name(&self) -> &str {
        self.name
            .as_deref()
            .or(self.email.as_deref())
            .unwrap_or(&self.subject)
    }

    /// When this session ends whatever happens: the absolute expiry or the token's.
    pub fn ends_at(&self, max_secs: u64) -> i64 {
        let absolute = self
            .signed_in_at
            .saturating_add(i64::try_from(max_secs).unwrap_or(i64::MAX));
        self.access_token_expires_at
            .map_or(absolute, |token| token.min(absolute))
    }
}

pub fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl Provider {
    pub fn new(config: &callproof_config::ConsoleConfig, issuer: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(config.http_timeout_ms))
            .build()
            .context("building the identity provider's HTTP client")?;
        Ok(Provider {
            issuer: IssuerUrl::new(issuer.to_string()).context("oidc.issuer")?,
            client_id: ClientId::new(config.client_id.clone()),
            client_secret: config
                .client_secret
                .as_ref()
                .map(|secret| ClientSecret::new(secret.expose().to_string())),
            redirect_url: RedirectUrl::new(config.redirect_url()).context("console.public_url")?,
            scopes: config.scopes.clone(),
            resource: config.resource.clone(),
            http,
            discovered: tokio::sync::Mutex::new(None),
            used_codes: Mutex::new(std::collections::VecDeque::new()),
        })
    }

    async fn client(&self) -> Result<Arc<DiscoveredClient>, ConsoleError> {
        let mut discovered = self.discovered.lock().await;
        if let Some((at, client)) = discovered.as_ref()
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(client.clone());
        }
        let metadata = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|error| {
                tracing::warn!(error = %error, "identity provider discovery failed");
                ConsoleError::ProviderUnavailable
            })?;
        let client = Arc::new(
            CoreClient::from_provider_metadata(
                metadata,
                self.client_id.clone(),
                self.client_secret.clone(),
            )
            .set_redirect_uri(self.redirect_url.clone()),
        );
        *discovered = Some((Instant::now(), client.clone()));
        Ok(client)
    }

    /// Remembers `code` as presented; false if it was already.
    fn first_use_of(&self, code: &str) -> bool {
        let Ok(mut used) = self.used_codes.lock() else {
            return false;
        };
        if used.iter().any(|seen| seen == code) {
            return false;
        }
        if used.len() >= 10_000 {
            used.pop_front();
        }
        used.push_back(code.to_string());
        true
    }
}

/// The signed-in person, or a redirect to the sign-in page (with why, when a session ended).
pub struct User(pub SignedIn);

impl FromRequestParts<Arc<AppState>> for User {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let session = Session::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let signed_in: Option<SignedIn> = session
            .get(SIGNED_IN)
            .await
            .map_err(|_| ConsoleError::Internal.into_response())?;
        let Some(signed_in) = signed_in else {
            return Err(Redirect::to("/signin").into_response());
        };
        if now_secs() >= signed_in.ends_at(state.config.session_max_secs) {
            // Ends here, on the server, whatever the cookie says.
            let _ = session.flush().await;
            return Err(Redirect::to("/signin?ended=1").into_response());
        }
        Ok(User(signed_in))
    }
}

#[derive(Deserialize)]
pub struct SigninQuery {
    ended: Option<String>,
    return_to: Option<String>,
}

/// `GET /signin`: the sign-in page.
pub async fn signin_page(Query(query): Query<SigninQuery>) -> Response {
    let message = query
        .ended
        .map(|_| "Your session has ended. Sign in again to continue.".to_string());
    let return_to = query
        .return_to
        .filter(|path| is_local_path(path))
        .unwrap_or_else(|| "/".to_string());
    pages::render(&pages::Signin {
        message,
        return_to: &return_to,
    })
}

/// `GET /signed-out`.
pub async fn signed_out() -> Response {
    pages::render(&pages::SignedOut {})
}

#[derive(Deserialize)]
pub struct LoginQuery {
    return_to: Option<String>,
}

/// `GET /auth/login`: starts a sign-in. The state, nonce and PKCE verifier stay in this
/// browser's session; the browser goes to the provider with the state, the nonce and the S256
/// challenge.
pub async fn login(
    State(app): State<Arc<AppState>>,
    session: Session,
    Query(query): Query<LoginQuery>,
) -> Result<Response, ConsoleError> {
    let client = app.provider.client().await?;
    let (pkce_challenge, pkce_verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(pkce_challenge);
    for scope in app
        .provider
        .scopes
        .iter()
        .filter(|scope| *scope != "openid")
    {
        request = request.add_scope(Scope::new(scope.clone()));
    }
    if let Some(resource) = &app.provider.resource {
        request = request.add_extra_param("resource", resource.clone());
    }
    let (url, state, nonce) = request.url();
    let pending = PendingLogin {
        state: state.secret().clone(),
        nonce: nonce.secret().clone(),
        pkce_verifier: pkce_verifier.secret().clone(),
        started_at: now_secs(),
        return_to: query
            .return_to
            .filter(|path| is_local_path(path))
            .unwrap_or_else(|| "/".to_string()),
    };
    session
        .insert(PENDING_LOGIN, pending)
        .await
        .map_err(|_| ConsoleError::Internal)?;
    Ok(Redirect::to(url.as_str()).into_response())
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /auth/callback`: finishes a sign-in started in this browser.
pub async fn callback(
    State(app): State<Arc<AppState>>,
    session: Session,
    Query(query): Query<CallbackQuery>,
) -> Result<Response, ConsoleError> {
    // Taken out first: whatever happens next, this state, nonce and verifier are never used
    // again.
    let pending: Option<PendingLogin> = session
        .remove(PENDING_LOGIN)
        .await
        .map_err(|_| ConsoleError::Internal)?;
    let Some(pending) = pending else {
        return Err(ConsoleError::SignIn(
            "no sign-in was started in this browser, or it was already finished (the state is used once)".into(),
        ));
    };
    let state_matches = query
        .state
        .as_deref()
        .is_some_and(|state| bool::from(state.as_bytes().ct_eq(pending.state.as_bytes())));
    if !state_matches {
        tracing::warn!("sign-in callback with a state that is not this browser's");
        return Err(ConsoleError::SignIn(
            "the answer from the identity provider is not for the sign-in started in this browser (state mismatch)".into(),
        ));
    }
    if now_secs() - pending.started_at > LOGIN_TTL_SECS {
        return Err(ConsoleError::SignIn(
            "the sign-in took too long; start again".into(),
        ));
    }
    if let Some(error) = query.error {
        let description = query.error_description.unwrap_or_default();
        return Err(ConsoleError::SignIn(format!(
            "the identity provider refused the sign-in: {error} {description}"
        )));
    }
    let Some(code) = query.code else {
        return Err(ConsoleError::SignIn(
            "the identity provider sent no authorization code".into(),
        ));
    };
    if !app.provider.first_use_of(&code) {
        tracing::warn!("sign-in callback with an authorization code already presented");
        return Err(ConsoleError::SignIn(
            "this authorization code was already used".into(),
        ));
    }
    let client = app.provider.client().await?;
    let mut exchange = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|_| ConsoleError::ProviderUnavailable)?
        .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier));
    if let Some(resource) = &app.provider.resource {
        exchange = exchange.add_extra_param("resource", resource.clone());
    }
    let token_response = exchange
        .request_async(&app.provider.http)
        .await
        .map_err(|error| {
            tracing::warn!(error = %error, "the token endpoint refused the code");
            ConsoleError::SignIn(
                "the identity provider did not accept the authorization code (it may have been used already or expired)".into(),
            )
        })?;
    let id_token = token_response
        .id_token()
        .ok_or_else(|| ConsoleError::SignIn("the identity provider sent no ID token".into()))?;
    let verifier: CoreIdTokenVerifier<'_> = client.id_token_verifier();
    let nonce = Nonce::new(pending.nonce);
    let claims = id_token.claims(&verifier, &nonce).map_err(|error| {
        tracing::warn!(error = %error, "ID token refused");
        ConsoleError::SignIn(format!("the ID token could not be verified: {error}"))
    })?;
    if let Some(expected) = claims.access_token_hash() {
        let algorithm = id_token
            .signing_alg()
            .map_err(|error| ConsoleError::SignIn(format!("the ID token: {error}")))?;
        let key = id_token
            .signing_key(&verifier)
            .map_err(|error| ConsoleError::SignIn(format!("the ID token: {error}")))?;
        let actual = AccessTokenHash::from_token(token_response.access_token(), algorithm, key)
            .map_err(|error| ConsoleError::SignIn(format!("the ID token: {error}")))?;
        if actual != *expected {
            return Err(ConsoleError::SignIn(
                "the access token is not the one the ID token names (at_hash)".into(),
            ));
        }
    }
    let signed_in_at = now_secs();
    let signed_in = SignedIn {
        issuer: claims.issuer().to_string(),
        subject: claims.subject().to_string(),
        name: claims
            .name()
            .and_then(|name| name.get(None))
            .map(|name| name.to_string()),
        email: claims.email().map(|email| email.to_string()),
        access_token: token_response.access_token().secret().clone(),
        access_token_expires_at: token_response.expires_in().map(|expires_in| {
            signed_in_at.saturating_add(i64::try_from(expires_in.as_secs()).unwrap_or(i64::MAX))
        }),
        signed_in_at,
    };
    // A new session id at the change of privilege, so an id planted before sign-in is useless.
    session
        .cycle_id()
        .await
        .map_err(|_| ConsoleError::Internal)?;
    crate::csrf::renew(&session).await?;
    tracing::info!(issuer = %signed_in.issuer, subject = %signed_in.subject, "signed in");
    session
        .insert(SIGNED_IN, &signed_in)
        .await
        .map_err(|_| ConsoleError::Internal)?;
    Ok(Redirect::to(&pending.return_to).into_response())
}

#[derive(Deserialize)]
pub struct LogoutForm {
    csrf: Option<String>,
}

/// `POST /auth/logout`: deletes the session on the server, whatever the browser keeps.
pub async fn logout(
    session: Session,
    Form(form): Form<LogoutForm>,
) -> Result<Response, ConsoleError> {
    crate::csrf::verify(&session, form.csrf.as_deref()).await?;
    if let Ok(Some(signed_in)) = session.get::<SignedIn>(SIGNED_IN).await {
        tracing::info!(subject = %signed_in.subject, "signed out");
    }
    session.flush().await.map_err(|_| ConsoleError::Internal)?;
    Ok((
        StatusCode::SEE_OTHER,
        [(axum::http::header::LOCATION, "/signed-out")],
    )
        .into_response())
}

/// A path on this site (`/…`, not `//host`), safe to redirect to after sign-in.
fn is_local_path(path: &str) -> bool {
    path.starts_with('/')
        && !path.starts_with("//")
        && !path.starts_with("/\\")
        && !path.contains(['\r', '\n'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_return_targets() {
        assert!(is_local_path("/"));
        assert!(is_local_path("/approvals/abc"));
        for path in [
            "//evil.example",
            "/\\evil.example",
            "https://evil.example",
            "",
            "x",
        ] {
            assert!(!is_local_path(path), "{path}");
        }
    }

    #[test]
    fn a_session_ends_with_the_token_or_the_absolute_expiry() {
        let mut signed_in = SignedIn {
            issuer: "i".into(),
            subject: "s".into(),
            name: None,
            email: None,
            access_token: "t".into(),
            access_token_expires_at: Some(1_000 + 300),
            signed_in_at: 1_000,
        };
        assert_eq!(signed_in.ends_at(3_600), 1_300);
        signed_in.access_token_expires_at = None;
        assert_eq!(signed_in.ends_at(3_600), 4_600);
        assert!(!format!("{signed_in:?}").contains("access_token: \"t\""));
    }
}
