//! The demo issuer's sign-in, so the quick start's console can sign people in: the OpenID
//! Connect authorization code flow with PKCE, for one registered client.
//!
//! `GET /authorize` checks the request and shows a page listing the demo users; choosing one
//! (`POST /authorize`, no password: this is a demo issuer, anyone who reaches it signs in as
//! anyone) sends the browser back to the client with a code. `POST /oauth/token` exchanges the
//! code, once and within [`CODE_TTL_SECS`], for an access token (the same kind `GET /token`
//! mints, so the gateway and the evidence API accept it) and an ID token for the client.
//!
//! What a real provider refuses, this one refuses too, so the console is exercised as it would
//! be in production: an unknown client or redirect URL (answered on the page, never redirected
//! to), a request without an S256 PKCE challenge (`plain` included), a code presented twice,
//! late, by another client, with another redirect URL or without the matching verifier.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use askama::Template;
use axum::Json;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::issuer::{Issuer, TokenRequest, now_secs};

/// How long a code may wait before it is exchanged.
pub const CODE_TTL_SECS: u64 = 60;
/// The lifetime of the tokens handed out at sign-in (the console's session ends with them).
const TOKEN_TTL_SECS: u64 = 3600;
/// Codes kept at most; past that, sign-ins are refused until some are used or expire.
const MAX_PENDING_CODES: usize = 1000;

/// A person the sign-in page offers.
pub struct DemoUser {
    pub subject: &'static str,
    pub name: &'static str,
    pub groups: &'static [&'static str],
    /// What the quick start has them do.
    pub role: &'static str,
}

/// The quick start's people; their groups are the ones `examples/quickstart.toml` names.
pub const DEMO_USERS: &[DemoUser] = &[
    DemoUser {
        subject: "alice",
        name: "Alice",
        groups: &["support"],
        role: "works in support; her agent's refunds above 100 wait for an approver",
    },
    DemoUser {
        subject: "bob",
        name: "Bob",
        groups: &["payments-approvers"],
        role: "approves refunds (never his own)",
    },
    DemoUser {
        subject: "audrey",
        name: "Audrey",
        groups: &["auditors"],
        role: "audits: searches the evidence, checks proofs, reads the SOC 2 report",
    },
];

/// The one client registered here: the quick start's console.
pub struct Client {
    pub id: String,
    pub secret: String,
    /// Compared exactly with the `redirect_uri` of each request.
    pub redirect_url: String,
}

/// The client and the codes handed out and not yet exchanged.
pub struct SignIn {
    client: Option<Client>,
    codes: Mutex<HashMap<String, IssuedCode>>,
}

struct IssuedCode {
    subject: &'static str,
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    nonce: Option<String>,
    expires_at: u64,
}

impl SignIn {
    /// Without a client, every sign-in is refused (the `GET /token` tokens still work).
    pub fn new(client: Option<Client>) -> SignIn {
        SignIn {
            client,
            codes: Mutex::new(HashMap::new()),
        }
    }

    fn issue(&self, request: &Checked, subject: &'static str) -> Option<String> {
        let mut codes = self.codes.lock().unwrap_or_else(PoisonError::into_inner);
        let now = now_secs();
        codes.retain(|_, code| code.expires_at > now);
        if codes.len() >= MAX_PENDING_CODES {
            return None;
        }
        let code = random_token();
        codes.insert(
            code.clone(),
            IssuedCode {
                subject,
                client_id: request.client_id.clone(),
                redirect_uri: request.redirect_uri.clone(),
                code_challenge: request.code_challenge.clone(),
                nonce: request.nonce.clone(),
                expires_at: now + CODE_TTL_SECS,
            },
        );
        Some(code)
    }

    /// The code, taken out: whatever the outcome of this exchange, it is never accepted again.
    fn take(&self, code: &str) -> Option<IssuedCode> {
        let mut codes = self.codes.lock().unwrap_or_else(PoisonError::into_inner);
        codes.remove(code)
    }
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The parameters of an authorization request, as the query of `GET /authorize` or the hidden
/// fields of the sign-in form. Others (e.g. `resource`) are ignored.
#[derive(Deserialize, Default)]
pub struct AuthorizationRequest {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

/// A request that passed every check.
struct Checked {
    client_id: String,
    redirect_uri: String,
    scope: String,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: String,
}

/// Why a request is refused: on the page when the client or its redirect URL is not the
/// registered one (sending the browser there would make this an open redirector), otherwise
/// back to the client with an OAuth error.
enum Refusal {
    Page(String),
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: &'static str,
        description: &'static str,
    },
}

impl AuthorizationRequest {
    fn check(self, sign_in: &SignIn) -> Result<Checked, Refusal> {
        let Some(client) = &sign_in.client else {
            return Err(Refusal::Page(
                "this demo issuer has no client registered for sign-in (start it with --console-client-secret)".into(),
            ));
        };
        if self.client_id.as_deref() != Some(client.id.as_str()) {
            return Err(Refusal::Page(format!(
                "unknown client_id; the one registered here is {:?}",
                client.id
            )));
        }
        if self.redirect_uri.as_deref() != Some(client.redirect_url.as_str()) {
            return Err(Refusal::Page(format!(
                "redirect_uri is not the one registered for this client ({})",
                client.redirect_url
            )));
        }
        let refuse = |error, description| Refusal::Redirect {
            redirect_uri: client.redirect_url.clone(),
            state: self.state.clone(),
            error,
            description,
        };
        if self.response_type.as_deref() != Some("code") {
            return Err(refuse(
                "unsupported_response_type",
                "only the authorization code flow (response_type=code) is offered",
            ));
        }
        let scope = self.scope.clone().unwrap_or_default();
        if !scope.split(' ').any(|scope| scope == "openid") {
            return Err(refuse("invalid_scope", "the scope must include openid"));
        }
        // RFC 7636: without a method the challenge is `plain`, which a stolen code defeats.
        let challenge = self
            .code_challenge
            .as_deref()
            .filter(|challenge| is_s256_challenge(challenge));
        let (Some(challenge), Some("S256")) = (challenge, self.code_challenge_method.as_deref())
        else {
            return Err(refuse(
                "invalid_request",
                "PKCE is required: a code_challenge with code_challenge_method=S256 (plain is refused)",
            ));
        };
        Ok(Checked {
            client_id: client.id.clone(),
            redirect_uri: client.redirect_url.clone(),
            scope,
            state: self.state,
            nonce: self.nonce,
            code_challenge: challenge.to_string(),
        })
    }
}

/// BASE64URL(SHA-256(verifier)) without padding: 43 characters.
fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Page(message) => page(StatusCode::BAD_REQUEST, &ErrorPage { message }),
            Refusal::Redirect {
                redirect_uri,
                state,
                error,
                description,
            } => {
                let mut params = vec![("error", error), ("error_description", description)];
                if let Some(state) = state.as_deref() {
                    params.push(("state", state));
                }
                redirect_with(&redirect_uri, &params)
            }
        }
    }
}

/// A 303 to `url` with `params` added to its query.
fn redirect_with(url: &str, params: &[(&str, &str)]) -> Response {
    match url::Url::parse(url) {
        Ok(mut url) => {
            url.query_pairs_mut().extend_pairs(params);
            Redirect::to(url.as_str()).into_response()
        }
        Err(_) => page(
            StatusCode::BAD_REQUEST,
            &ErrorPage {
                message: "the registered redirect URL is not a URL".into(),
            },
        ),
    }
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SigninPage<'a> {
    client_id: &'a str,
    hidden: Vec<(&'static str, String)>,
    users: &'static [DemoUser],
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    message: String,
}

/// A page with headers that keep it out of frames and caches.
fn page(status: StatusCode, template: &impl Template) -> Response {
    let Ok(html) = template.render() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut response = (status, Html(html)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /authorize`: the sign-in page, for a request that passes the checks.
pub async fn authorize_page(
    State(issuer): State<Arc<Issuer>>,
    Query(request): Query<AuthorizationRequest>,
) -> Response {
    let checked = match request.check(&issuer.sign_in) {
        Ok(checked) => checked,
        Err(refusal) => return refusal.into_response(),
    };
    let mut hidden = vec![
        ("response_type", "code".to_string()),
        ("client_id", checked.client_id.clone()),
        ("redirect_uri", checked.redirect_uri.clone()),
        ("scope", checked.scope.clone()),
        ("code_challenge", checked.code_challenge.clone()),
        ("code_challenge_method", "S256".to_string()),
    ];
    if let Some(state) = &checked.state {
        hidden.push(("state", state.clone()));
    }
    if let Some(nonce) = &checked.nonce {
        hidden.push(("nonce", nonce.clone()));
    }
    page(
        StatusCode::OK,
        &SigninPage {
            client_id: &checked.client_id,
            hidden,
            users: DEMO_USERS,
        },
    )
}

#[derive(Deserialize)]
pub struct SigninForm {
    #[serde(flatten)]
    request: AuthorizationRequest,
    user: Option<String>,
}

/// `POST /authorize`: the chosen user, signed in; the browser goes back to the client with a
/// code and the request's `state`. The request is checked again: the form is the browser's.
pub async fn authorize(
    State(issuer): State<Arc<Issuer>>,
    Form(form): Form<SigninForm>,
) -> Response {
    let checked = match form.request.check(&issuer.sign_in) {
        Ok(checked) => checked,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(user) = DEMO_USERS
        .iter()
        .find(|user| Some(user.subject) == form.user.as_deref())
    else {
        return page(
            StatusCode::BAD_REQUEST,
            &ErrorPage {
                message: "choose one of the demo users".into(),
            },
        );
    };
    let Some(code) = issuer.sign_in.issue(&checked, user.subject) else {
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            &ErrorPage {
                message: "too many sign-ins in progress; try again in a minute".into(),
            },
        );
    };
    tracing::info!(subject = user.subject, "demo sign-in");
    let mut params = vec![("code", code.as_str())];
    if let Some(state) = checked.state.as_deref() {
        params.push(("state", state));
    }
    redirect_with(&checked.redirect_uri, &params)
}

#[derive(Deserialize)]
pub struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    /// `client_secret_post`; `client_secret_basic` comes in the authorization header.
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// An OAuth error answer (RFC 6749 §5.2).
fn token_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut response = (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"callproof demo issuer\""),
        );
    }
    response
}

/// The client's id and secret from `Authorization: Basic` (each form-urlencoded, RFC 6749
/// §2.3.1) or from the form.
fn client_credentials(headers: &HeaderMap, form: &TokenForm) -> Option<(String, String)> {
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
    {
        let decoded = String::from_utf8(STANDARD.decode(basic.trim()).ok()?).ok()?;
        let (id, secret) = decoded.split_once(':')?;
        return Some((form_decode(id)?, form_decode(secret)?));
    }
    Some((form.client_id.clone()?, form.client_secret.clone()?))
}

fn form_decode(text: &str) -> Option<String> {
    percent_encoding::percent_decode_str(&text.replace('+', " "))
        .decode_utf8()
        .ok()
        .map(|text| text.into_owned())
}

/// Equal without saying where they differ: the digests are compared, not the secrets.
fn same_secret(presented: &str, expected: &str) -> bool {
    Sha256::digest(presented.as_bytes()) == Sha256::digest(expected.as_bytes())
}

/// `POST /oauth/token`: a code, once, for the client it was issued to, with the verifier of
/// its challenge.
pub async fn token(
    State(issuer): State<Arc<Issuer>>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    let Some(client) = &issuer.sign_in.client else {
        return token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "no client is registered",
        );
    };
    let authenticated = client_credentials(&headers, &form)
        .is_some_and(|(id, secret)| id == client.id && same_secret(&secret, &client.secret));
    if !authenticated {
        return token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    }
    if form.grant_type.as_deref() != Some("authorization_code") {
        return token_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only authorization_code",
        );
    }
    let Some(issued) = form
        .code
        .as_deref()
        .and_then(|code| issuer.sign_in.take(code))
    else {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown or already used code",
        );
    };
    if issued.expires_at <= now_secs() {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant", "the code expired");
    }
    if issued.client_id != client.id || form.redirect_uri.as_deref() != Some(&issued.redirect_uri) {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "the code was issued for another client or redirect_uri",
        );
    }
    let verified = form.code_verifier.as_deref().is_some_and(|verifier| {
        (43..=128).contains(&verifier.len())
            && URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) == issued.code_challenge
    });
    if !verified {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "the code_verifier does not match the code_challenge",
        );
    }
    match tokens(&issuer, client, &issued) {
        Ok(body) => {
            let mut response = Json(body).into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(error) => {
            tracing::error!(error = %error, "cannot sign the tokens");
            token_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "cannot sign",
            )
        }
    }
}

/// The access token (for the gateway and the evidence API, with the user's groups) and the ID
/// token (for the client, with the request's nonce).
fn tokens(
    issuer: &Issuer,
    client: &Client,
    issued: &IssuedCode,
) -> anyhow::Result<serde_json::Value> {
    let user = DEMO_USERS
        .iter()
        .find(|user| user.subject == issued.subject)
        .ok_or_else(|| anyhow::anyhow!("no demo user {}", issued.subject))?;
    let access_token = issuer.mint(&TokenRequest {
        sub: user.subject.to_string(),
        groups: user.groups.join(","),
        act: None,
        ttl: TOKEN_TTL_SECS,
        resource: None,
    })?;
    let now = now_secs();
    let mut claims = json!({
        "iss": issuer.url,
        "sub": user.subject,
        "aud": client.id,
        "iat": now,
        "exp": now + TOKEN_TTL_SECS,
        "auth_time": now,
        "name": user.name,
        "email": format!("{}@demo.callproof.dev", user.subject),
        "groups": user.groups,
    });
    if let Some(nonce) = &issued.nonce {
        claims["nonce"] = json!(nonce);
    }
    Ok(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": TOKEN_TTL_SECS,
        "id_token": issuer.sign(&claims)?,
    }))
}

#[cfg(test)]
mod tests;
