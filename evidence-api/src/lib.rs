//! The callproof evidence API: what auditors read. Search over the processor's index, call
//! timelines (replay), inclusion and consistency proofs, the raw tlog-tiles of every log, an
//! integrity check, SOC 2 reports and evidence bundles that `callproof-verify bundle` checks
//! offline.
//!
//! It only reads: the index is opened with readers that follow the processor's commits, and
//! the logs through `callproof_tlog::store::LogReader`, which verifies every checkpoint against
//! the verifier key. Nothing here holds the signing key or writes to the store.
//!
//! [`App::build`] wires the parts from a [`Config`]; [`router`] gives the HTTP API, so tests can
//! serve it on port 0. The binary (`main.rs`) only parses arguments and calls [`serve`].

mod api;
mod auth;
mod error;
pub mod export;
pub mod logs;
pub mod report;
pub mod search;
mod time_param;
pub mod timeline;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::routing::get;
use callproof_config::{Config, FunctionConfig};
use callproof_oidc::Authenticator;

pub use auth::Auditor;
pub use error::ApiError;

use crate::logs::Logs;
use crate::search::SearchIndex;

/// What the handlers share.
pub struct AppState {
    authenticator: Authenticator,
    auditor_groups: Vec<String>,
    pub logs: Logs,
    pub index: Arc<SearchIndex>,
    /// Prefix of every link (no trailing slash); empty for relative links.
    public_url: String,
    /// The policies in force, for the report's CC6.2/CC6.3 section.
    functions: BTreeMap<String, FunctionConfig>,
    max_export_events: usize,
    max_page_size: usize,
}

impl AppState {
    /// An absolute link when `public_url` is set, else a relative one.
    pub fn link(&self, path: &str) -> String {
        format!("{}{path}", self.public_url)
    }
}

/// An evidence API wired from its configuration, ready to serve.
pub struct App {
    pub state: Arc<AppState>,
    pub listen: SocketAddr,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let evidence = config
            .evidence
            .clone()
            .context("the `[evidence]` section is required by the evidence API")?;
        let oidc = config
            .oidc
            .clone()
            .context("the `[oidc]` section is required by the evidence API")?;
        let authenticator = Authenticator::new(oidc).map_err(anyhow::Error::msg)?;
        let verifier_key = evidence
            .verifier_key
            .as_deref()
            .context("`evidence.verifier_key` is required")?;
        let store = callproof_processor::storage::open_store(&config.storage)
            .map_err(|error| anyhow::anyhow!("`[storage]`: {error}"))?;
        let logs = Logs::new(store, verifier_key).map_err(anyhow::Error::msg)?;
        let index_root = config.index.path.clone();
        let index = tokio::task::spawn_blocking(move || SearchIndex::open(&index_root))
            .await?
            .with_context(|| format!("cannot open the index at {}", config.index.path.display()))?;
        authenticator.warm_up().await;
        let state = AppState {
            authenticator,
            auditor_groups: evidence.auditor_groups.clone(),
            logs,
            index: Arc::new(index),
            public_url: evidence
                .public_url
                .as_deref()
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_string(),
            functions: config.functions.clone(),
            max_export_events: evidence.max_export_events,
            max_page_size: evidence.max_page_size,
        };
        Ok(App {
            state: Arc::new(state),
            listen: evidence.listen,
        })
    }
}

/// The HTTP API. Every route but `/healthz` requires an auditor (see [`Auditor`]).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/search", get(api::search))
        .route("/v1/calls/{call_id}", get(api::call_timeline))
        .route("/v1/proofs/{partition}/{index}", get(api::proof))
        .route("/v1/proofs/{partition}/{index}/proof", get(api::proof_file))
        .route("/v1/proofs/{partition}/{index}/entry", get(api::entry_file))
        .route("/v1/logs", get(api::logs))
        .route("/v1/logs/{partition}/checkpoints", get(api::checkpoints))
        .route("/v1/logs/{partition}/consistency", get(api::consistency))
        .route("/v1/integrity", get(api::integrity))
        .route("/v1/key", get(api::verifier_key))
        .route("/v1/reports/soc2", get(report::soc2))
        .route("/v1/export", get(export::export))
        .route("/logs/{partition}/checkpoint", get(api::raw_checkpoint))
        .route(
            "/logs/{partition}/checkpoints/{size}",
            get(api::raw_kept_checkpoint),
        )
        .route("/logs/{partition}/tile/{*path}", get(api::raw_tile))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { ApiError::NotFound("no such endpoint".to_string()) })
        .with_state(state)
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// Serves the API until ctrl-c or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let app = App::build(config).await?;
    let listener = tokio::net::TcpListener::bind(app.listen)
        .await
        .with_context(|| format!("cannot listen on {}", app.listen))?;
    tracing::info!(address = %listener.local_addr()?, "evidence API listening");
    axum::serve(listener, router(app.state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("server failed")
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
