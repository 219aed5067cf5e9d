//! The console's security properties, in process: the console served on port 0 against a small
//! identity provider of the test's own (discovery, JWKS, a token endpoint that checks PKCE S256
//! and hands out ID tokens with whatever nonce and audience a test asks for) and a stand-in for
//! the gateway's approvals list. The browser tests (`console/tests/browser/`) do the same
//! against an independent provider and the real gateway.

mod browser;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use callproof_tests::issuer::{IssuerKey, now_secs, rsa_key, sign};
use serde_json::{Value, json};
use sha2::Digest;

const CLIENT_ID: &str = "callproof-console";
const CLIENT_SECRET: &str = "console-secret";

/// What the next token request should put in the ID token.
#[derive(Clone, Default)]
struct Twist {
    nonce: Option<String>,
    audience: Option<String>,
}

struct IdpState {
    url: String,
    key: IssuerKey,
    /// Codes issued: code -> (PKCE challenge, nonce).
    codes: Mutex<HashMap<String, (String, String)>>,
    twist: Mutex<Twist>,
    /// The query strings the evidence API's search was sent.
    searches: Mutex<Vec<String>>,
}

struct Idp {
    url: String,
    state: Arc<IdpState>,
}

impl Idp {
    async fn start() -> Idp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(IdpState {
            url: url.clone(),
            key: rsa_key("rsa-console").unwrap(),
            codes: Mutex::new(HashMap::new()),
            twist: Mutex::new(Twist::default()),
            searches: Mutex::new(Vec::new()),
        });
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/token", post(token))
            // The gateway's approvals list, for the signed-in person's token only.
            .route("/v1/approvals", get(approvals))
            // The evidence API's search, keeping what it was asked.
            .route("/v1/search", get(search))
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Idp { url, state }
    }

    /// What the provider's login page would do: a code for this authorization request.
    fn authorize(&self, authorization_url: &str) -> (String, String) {
        let query = query_of(authorization_url);
        assert_eq!(query["code_challenge_method"], "S256");
        assert_eq!(query["response_type"], "code");
        assert_eq!(query["client_id"], CLIENT_ID);
        let code = format!("code-{}", uuid_like());
        self.state.codes.lock().unwrap().insert(
            code.clone(),
            (query["code_challenge"].clone(), query["nonce"].clone()),
        );
        (code, query["state"].clone())
    }

    fn twist(&self, twist: Twist) {
        *self.state.twist.lock().unwrap() = twist;
    }
}

fn uuid_like() -> String {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn query_of(url: &str) -> HashMap<String, String> {
    let query = url.split_once('?').map(|(_, query)| query).unwrap_or("");
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| {
            (
                key.to_string(),
                percent_encoding::percent_decode_str(&value.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned(),
            )
        })
        .collect()
}

async fn discovery(State(state): State<Arc<IdpState>>) -> Json<Value> {
    Json(json!({
        "issuer": state.url,
        "authorization_endpoint": format!("{}/authorize", state.url),
        "token_endpoint": format!("{}/token", state.url),
        "jwks_uri": format!("{}/jwks", state.url),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": ["S256"],
    }))
}

async fn jwks(State(state): State<Arc<IdpState>>) -> Json<Value> {
    Json(json!({"keys": [state.key.jwk]}))
}

async fn token(
    State(state): State<Arc<IdpState>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let refuse =
        |error: &str| (StatusCode::BAD_REQUEST, Json(json!({"error": error}))).into_response();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(basic.as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    // Single use, as any provider: the code is gone once presented.
    let Some((challenge, nonce)) = form
        .get("code")
        .and_then(|code| state.codes.lock().unwrap().remove(code))
    else {
        return refuse("invalid_grant");
    };
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    if URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes())) != challenge {
        return refuse("invalid_grant");
    }
    let twist = state.twist.lock().unwrap().clone();
    let now = now_secs();
    let access_token = format!("access-{}", uuid_like());
    let id_token = sign(
        &state.key,
        &json!({
            "iss": state.url,
            "aud": twist.audience.unwrap_or_else(|| CLIENT_ID.to_string()),
            "sub": "alice",
            "name": "Alice Approver",
            "email": "alice@example.com",
            "nonce": twist.nonce.unwrap_or(nonce),
            "iat": now,
            "exp": now + 300,
        }),
    );
    Json(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": 300,
        "id_token": id_token,
    }))
    .into_response()
}

async fn approvals(headers: HeaderMap) -> Response {
    let bearer = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if !bearer.starts_with("Bearer access-") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"code": "unauthenticated", "message": "no token"}})),
        )
            .into_response();
    }
    Json(json!({"approvals": []})).into_response()
}

async fn search(
    State(state): State<Arc<IdpState>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let signed_in = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|bearer| bearer.starts_with("Bearer access-"));
    if !signed_in {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    state
        .searches
        .lock()
        .unwrap()
        .push(uri.query().unwrap_or_default().to_string());
    Json(json!({"hits": [{
        "time": "2026-03-01T10:00:00Z", "kind": "call_completed", "call_id": "c-1",
        "principal": "alice", "agent": "claude", "function": "mcp:crm__refund",
        "partition": 0, "log_index": 7,
    }]}))
    .into_response()
}

struct Console {
    url: String,
}

async fn start_console(idp: &Idp, extra: &str) -> Console {
    let port = callproof_tests::broker::free_port().unwrap();
    let source = format!(
        r#"
[oidc]
issuer = "{issuer}"
audiences = ["callproof"]

[console]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
client_id = "{CLIENT_ID}"
client_secret = "${{CONSOLE_SECRET}}"
ingress_url = "{issuer}"
{extra}
"#,
        issuer = idp.url
    );
    let config = callproof_config::Config::from_toml_with_env(
        &source,
        "console.toml",
        callproof_config::Service::Console,
        &|name| (name == "CONSOLE_SECRET").then(|| CLIENT_SECRET.to_string()),
    )
    .unwrap();
    let app = callproof_console::App::build(&config).unwrap();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let router = callproof_console::router(app.state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Console {
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// A browser without redirects, keeping the session cookie by hand.
struct Browser {
    http: reqwest::Client,
    cookie: Mutex<Option<String>>,
}

impl Browser {
    fn new() -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: Mutex::new(None),
        }
    }

    fn keep(&self, response: &reqwest::Response) {
        if let Some(set) = response.headers().get("set-cookie") {
            let set = set.to_str().unwrap().to_string();
            let pair = set.split(';').next().unwrap().to_string();
            *self.cookie.lock().unwrap() = Some(pair);
        }
    }

    fn cookie(&self) -> Option<String> {
        self.cookie.lock().unwrap().clone()
    }

    async fn get(&self, url: &str) -> reqwest::Response {
        let mut request = self.http.get(url);
        if let Some(cookie) = self.cookie() {
            request = request.header("cookie", cookie);
        }
        let response = request.send().await.unwrap();
        self.keep(&response);
        response
    }

    async fn post(&self, url: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.http.post(url).form(form);
        if let Some(cookie) = self.cookie() {
            request = request.header("cookie", cookie);
        }
        let response = request.send().await.unwrap();
        self.keep(&response);
        response
    }

    /// Starts a sign-in: the provider's authorization URL.
    async fn start_sign_in(&self, console: &Console) -> String {
        let response = self.get(&format!("{}/auth/login", console.url)).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        location(&response)
    }

    async fn callback(&self, console: &Console, code: &str, state: &str) -> reqwest::Response {
        self.get(&format!(
            "{}/auth/callback?code={code}&state={state}",
            console.url
        ))
        .await
    }

    async fn sign_in(&self, console: &Console, idp: &Idp) {
        let authorization = self.start_sign_in(console).await;
        let (code, state) = idp.authorize(&authorization);
        let response = self.callback(console, &code, &state).await;
        assert_eq!(
            response.status(),
            StatusCode::SEE_OTHER,
            "{}",
            response.text().await.unwrap()
        );
        assert_eq!(location(&response), "/");
    }

    async fn page(&self, url: &str) -> (StatusCode, String) {
        let response = self.get(url).await;
        let status = response.status();
        let body = if status.is_redirection() {
            format!("redirect to {}", location(&response))
        } else {
            response.text().await.unwrap()
        };
        (status, body)
    }
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .map(|value| value.to_str().unwrap().to_string())
        .unwrap_or_default()
}

fn csrf_of(page: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).expect("a form with a csrf token") + marker.len();
    page[start..].split('"').next().unwrap().to_string()
}

#[tokio::test]
async fn sign_in_with_pkce_gives_a_new_session_with_safe_cookies_and_headers() {
    let idp = Idp::start().await;
    let console = start_console(&idp, "").await;
    let browser = Browser::new();
    let (_, page) = browser.page(&format!("{}/", console.url)).await;
    assert_eq!(page, "redirect to /signin");

    let authorization = browser.start_sign_in(&console).await;
    assert!(authorization.starts_with(&format!("{}/authorize?", idp.url)));
    let query = query_of(&authorization);
    assert!(query["scope"].split(' ').any(|scope| scope == "openid"));
    assert_eq!(
        query["redirect_uri"],
        format!("{}/auth/callback", console.url)
    );
    let before = browser
        .cookie()
        .expect("the pending sign-in is in a session");

    let (code, state) = idp.authorize(&authorization);
    let response = browser.callback(&console, &code, &state).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let set_cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Lax"), "{set_cookie}");
    // Loopback: no Secure (a plain-http browser would drop it); anywhere else it is set.
    assert!(!set_cookie.contains("Secure"), "{set_cookie}");
    assert_ne!(
        browser.cookie().unwrap(),
        before,
        "the session id changes at sign-in"
    );

    let response = browser.get(&format!("{}/", console.url)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["x-frame-options"], "DENY");
    let page = response.text().await.unwrap();
    assert!(page.contains("Alice Approver"), "{page}");
    assert!(
        page.contains("No call is waiting for your decision"),
        "{page}"
    );
    // The planted id from before sign-in is not signed in.
    let old = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/", console.url))
        .header("cookie", before)
        .send()
        .await
        .unwrap();
    assert_eq!(location(&old), "/signin");
}

#[tokio::test]
async fn a_callback_with_another_state_is_refused_and_uses_up_the_sign_in() {
    let idp = Idp::start().await;
    let console = start_console(&idp, "").await;
    let browser = Browser::new();
    let authorization = browser.start_sign_in(&console).await;
    let (code, state) = idp.authorize(&authorization);
    let response = browser.callback(&console, &code, "forged-state").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("state mismatch"));
    // The right state afterwards does not work either: the pending sign-in is gone.
    let response = browser.callback(&console, &code, &state).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let (_, page) = browser.page(&format!("{}/", console.url)).await;
    assert_eq!(page, "redirect to /signin");
}

#[tokio::test]
async fn a_state_from_another_browser_is_refused() {
    let idp = Idp::start().await;
    let console = start_console(&idp, "").await;
    let victim = Browser::new();
    let attacker = Browser::new();
    let authorization = attacker.start_sign_in(&console).await;
    let (code, state) = idp.authorize(&authorization);
    // The attacker's callback link opened in the victim's browser signs no one in.
    let response = victim.callback(&console, &code, &state).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let (_, page) = victim.page(&format!("{}/", console.url)).await;
    assert_eq!(page, "redirect to /signin");
}

#[tokio::test]
async fn a_replayed_code_is_refused() {
    let idp = Idp::start().await;
    let console = start_console(&idp, "").await;
    let browser = Browser::new();
    let authorization = browser.start_sign_in(&console).await;
    let (code, state) = idp.authorize(&authorization);
    assert_eq!(
        browser.callback(&console, &code, &state).await.status(),
        StatusCode::SEE_OTHER
    );
    // The same callback again, and the old code with a fresh sign-in's state.
    let response = browser.callback(&console, &code, &state).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let other = Browser::new();
    let authorization = other.start_sign_in(&console).await;
    let state = query_of(&authorization)["state"].clone();
    let response = other.callback(&console, &code, &state).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("already used"));
}

#[tokio::test]
async fn an_id_token_with_another_nonce_is_refused() {
    let idp = Idp::start().await;
    let console = start_console(&idp, "").await;
    let browser = Browser::new();
    idp.twist(Twist {
        nonce: Some("someone-elses-nonce".into()),
        audience: None,
    });
    let authorization = browser.start_sign_in(&console).await;
    let (code, state) = idp.authorize(&authorization);
    let response = browser.callback(&console, &code, &state).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let page = response.text().await.unwrap();
    assert!(page.contains("could not be verified"), "{page}");
    assert!(page.to_lowercase().contains("nonce"), "{page}");
    let (_, page) = browser.page(&format!("{}/", console.url)).await;
    assert_eq!(page, "redirect to /signin");
}

#[tokio::test]
async fn an_id_token_for_another_client_is_refused() {
    let idp = Idp::start().await;
    let console = start_console(&idp, "").await;
    for audience in ["another-client", "callproof"] {
        let browser = Browser::new();
        idp.twist(Twist {
            nonce: None,
            audience: Some(audience.into()),
        });
        let authorization = browser.start_sign_in(&console).await;
        let (code, state) = idp.authorize(&authorization);
        let response = browser.callback(&console, &code, &state).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{audience}");
        let page = response.text().await.unwrap();
        assert!(
            page.to_lowercase().contains("audience"),
            "{audience}: {page}"
        );
    }
}

#[tokio::test]
async fn logout_is_a_post_with_the_csrf_token_and_ends_the_session_on_the_server() {
    let idp = Idp::start().await;
    let console = start_console(&idp, "").await;
    let browser = Browser::new();
    browser.sign_in(&console, &idp).await;
    let (status, page) = browser.page(&format!("{}/", console.url)).await;
    assert_eq!(status, StatusCode::OK);
    let csrf = csrf_of(&page);
    let session = browser.cookie().unwrap();

    // No logout by GET, none without the token or with another.
    let response = browser.get(&format!("{}/auth/logout", console.url)).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let logout = format!("{}/auth/logout", console.url);
    let response = browser.post(&logout, &[]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.text().await.unwrap().contains("security token"));
    let response = browser.post(&logout, &[("csrf", "not-the-token")]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // A decision form without the token is refused the same way, before anything is sent.
    let response = browser
        .post(
            &format!("{}/approvals/some-call", console.url),
            &[("decision", "approve"), ("arguments_sha256", "00")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        browser.page(&format!("{}/", console.url)).await.0,
        StatusCode::OK
    );

    let response = browser.post(&logout, &[("csrf", &csrf)]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/signed-out");
    // The old cookie, replayed, is signed out: the session is gone on the server.
    *browser.cookie.lock().unwrap() = Some(session);
    let (_, page) = browser.page(&format!("{}/", console.url)).await;
    assert_eq!(page, "redirect to /signin");
}

#[tokio::test]
async fn a_session_past_its_absolute_expiry_is_signed_out() {
    let idp = Idp::start().await;
    let console = start_console(&idp, "session_idle_secs = 1\nsession_max_secs = 1\n").await;
    let browser = Browser::new();
    browser.sign_in(&console, &idp).await;
    assert_eq!(
        browser.page(&format!("{}/", console.url)).await.0,
        StatusCode::OK
    );
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let (_, page) = browser.page(&format!("{}/", console.url)).await;
    assert!(page.starts_with("redirect to /signin"), "{page}");
}

#[tokio::test]
async fn the_return_path_after_sign_in_stays_on_the_console() {
    let idp = Idp::start().await;
    let console = start_console(&idp, "").await;
    let browser = Browser::new();
    let response = browser
        .get(&format!(
            "{}/auth/login?return_to=//evil.example/x",
            console.url
        ))
        .await;
    let (code, state) = idp.authorize(&location(&response));
    let response = browser.callback(&console, &code, &state).await;
    assert_eq!(location(&response), "/");
}

#[tokio::test]
async fn the_auditor_search_passes_the_mcp_filters_on_and_names_the_tool() {
    let idp = Idp::start().await;
    let console = start_console(&idp, &format!("evidence_url = \"{}\"\n", idp.url)).await;
    let browser = Browser::new();
    browser.sign_in(&console, &idp).await;
    let (status, page) = browser
        .page(&format!(
            "{}/audit?mcp_server=crm&mcp_tool=refund&mcp_outcome=tool_error&principal=alice",
            console.url
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let searches = idp.state.searches.lock().unwrap().clone();
    assert_eq!(
        searches,
        // Percent-encoded as every value the console passes on (`_` is `%5F`).
        ["principal=alice&mcp_server=crm&mcp_tool=refund&mcp_outcome=tool%5Ferror"]
    );
    // The form keeps what was asked, and the hit names the tool, not only the gateway's name.
    assert!(page.contains(r#"name="mcp_server" value="crm""#), "{page}");
    assert!(page.contains(r#"name="mcp_tool" value="refund""#), "{page}");
    assert!(
        page.contains(r#"<option value="tool_error" selected>"#),
        "{page}"
    );
    assert!(page.contains("MCP tool refund on server crm"), "{page}");
    assert!(page.contains("<code>mcp:crm__refund</code>"), "{page}");

    // An MCP filter alone is a search too.
    let (_, page) = browser
        .page(&format!("{}/audit?mcp_outcome=result&limit=1", console.url))
        .await;
    assert!(
        page.contains(r#"<option value="result" selected>"#),
        "{page}"
    );
    assert_eq!(
        idp.state.searches.lock().unwrap().last().unwrap(),
        "mcp_outcome=result&limit=1"
    );
}
