//! The console: the approvers' and auditors' pages.
//!
//! People sign in with the organisation's identity provider ([`auth`]: OpenID Connect
//! authorization code flow with PKCE, through the `openidconnect` crate), get a server-side
//! session (`tower-sessions`, in memory), and see pages rendered from templates (`askama`). The
//! console decides nothing itself: every page calls the gateway's approvals API or the evidence
//! API with the signed-in person's own access token ([`upstream`]), so who may approve, that no
//! one approves their own call and who may audit are enforced once, where they live.
//!
//! [`App::build`] wires the parts from a [`Config`]; [`router`] gives the pages, so tests can
//! serve them on port 0.

pub mod audit;
pub mod auth;
mod csrf;
mod error;
pub mod inbox;
mod pages;
mod security;
mod session_store;
pub mod upstream;

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::routing::{get, post};
use callproof_config::{Config, ConsoleConfig};
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};

pub use error::ConsoleError;

/// What every handler shares.
pub struct AppState {
    pub config: ConsoleConfig,
    /// The identity provider, discovered on first use and again every few minutes.
    pub provider: auth::Provider,
    /// The gateway and the evidence API, called with the person's token.
    pub upstream: upstream::Upstream,
}

/// The console built from a configuration, ready to serve.
pub struct App {
    pub state: Arc<AppState>,
}

impl App {
    /// Builds the console from a configuration loaded for `Service::Console`. Does no I/O: the
    /// identity provider is discovered at the first sign-in.
    pub fn build(config: &Config) -> anyhow::Result<App> {
        let console = config
            .console
            .clone()
            .context("the configuration has no [console] section")?;
        let oidc = config
            .oidc
            .as_ref()
            .context("the configuration has no [oidc] section")?;
        let provider = auth::Provider::new(&console, &oidc.issuer)?;
        let upstream = upstream::Upstream::new(&console)?;
        Ok(App {
            state: Arc::new(AppState {
                config: console,
                provider,
                upstream,
            }),
        })
    }
}

/// The session cookie's name: with `Secure`, the `__Host-` prefix makes the browser refuse it
/// unless it came over HTTPS for this host and path `/`, without a `Domain`.
pub fn session_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-callproof-console"
    } else {
        "callproof-console"
    }
}

/// The console's pages. Sessions live in memory: one instance, and a restart signs everyone
/// out (see `docs/console.md`).
pub fn router(state: Arc<AppState>) -> Router {
    let secure = !state.config.is_loopback();
    let idle = time::Duration::seconds(
        i64::try_from(state.config.session_idle_secs).unwrap_or(i64::MAX / 2),
    );
    let sessions = SessionManagerLayer::new(session_store::Sessions::default())
        .with_name(session_cookie_name(secure))
        .with_secure(secure)
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_path("/")
        // Saved on every request, so the idle expiry slides; the absolute one is checked
        // against the sign-in time (`auth::SignedIn`).
        .with_always_save(true)
        .with_expiry(Expiry::OnInactivity(idle));
    Router::new()
        .route("/", get(inbox::inbox))
        .route("/inbox/events", get(inbox::events))
        .route("/approvals/{call_id}", get(inbox::show).post(inbox::decide))
        .route("/audit", get(audit::search))
        .route("/audit/calls/{call_id}", get(audit::timeline))
        .route("/audit/proofs/{partition}/{index}", get(audit::proof))
        .route(
            "/audit/proofs/{partition}/{index}/{file}",
            get(audit::proof_file),
        )
        .route("/audit/logs", get(audit::logs))
        .route("/audit/integrity", get(audit::integrity))
        .route("/audit/report", get(audit::report))
        .route("/audit/report/soc2", get(audit::report_file))
        .route("/audit/export", get(audit::export))
        .route("/signin", get(auth::signin_page))
        .route("/auth/login", get(auth::login))
        .route("/auth/callback", get(auth::callback))
        .route("/auth/logout", post(auth::logout))
        .route("/signed-out", get(auth::signed_out))
        .route("/static/console.css", get(security::stylesheet))
        .route("/static/console.js", get(security::script))
        .route("/healthz", get(|| async { "ok" }))
        .layer(sessions)
        .layer(axum::middleware::map_response(security::headers))
        .with_state(state)
}

/// Serves the console on `console.listen` until the process is stopped.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let app = App::build(&config)?;
    let listen = app.state.config.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(%listen, public_url = %app.state.config.public_url, "console listening");
    axum::serve(listener, router(app.state))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving the console")
}
