//! The callproof evidence API: what auditors read. Search over the index splits, call
//! timelines (replay), inclusion and consistency proofs, the raw tlog-tiles of every log, an
//! integrity check, SOC 2 reports and evidence bundles that `callproof-verify bundle` checks
//! offline.
//!
//! It only reads: the index splits are listed and downloaded from the store into a bounded cache
//! of its own (`search`), and the logs through `callproof_tlog::store::LogReader`, which verifies every checkpoint against
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
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use callproof_config::{Config, FunctionConfig};
use callproof_oidc::Authenticator;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

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
    metrics: PrometheusHandle,
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
        // The store at `storage.url`, with the evidence API's own (read-only) options: it never
        // holds `storage.options`, the processor's write credentials.
        let storage = callproof_config::StorageConfig {
            url: config.storage.url.clone(),
            options: evidence.storage_options.clone(),
        };
        let store = callproof_evidence_format::store::open_store(&storage)
            .map_err(|error| anyhow::anyhow!("`[storage]`: {error}"))?;
        let logs = Logs::new(store.clone(), verifier_key).map_err(anyhow::Error::msg)?;
        let index = SearchIndex::open(
            store,
            tokio::runtime::Handle::current(),
            &evidence.index_cache_dir,
            evidence.index_cache_mb.saturating_mul(1024 * 1024),
            std::time::Duration::from_millis(evidence.index_refresh_ms),
        )
        .with_context(|| {
            format!(
                "cannot use the index cache at {}",
                evidence.index_cache_dir.display()
            )
        })?;
        let index = Arc::new(index);
        spawn_prefetch(
            index.clone(),
            std::time::Duration::from_millis(evidence.index_refresh_ms),
        );
        authenticator.warm_up().await;
        let state = AppState {
            authenticator,
            auditor_groups: evidence.auditor_groups.clone(),
            logs,
            index,
            public_url: evidence
                .public_url
                .as_deref()
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_string(),
            functions: config.functions.clone(),
            max_export_events: evidence.max_export_events,
            max_page_size: evidence.max_page_size,
            metrics: prometheus_handle()?,
        };
        Ok(App {
            state: Arc::new(state),
            listen: evidence.listen,
        })
    }
}

/// Lists the index splits every `refresh` and downloads new ones into the cache ahead of the
/// searches that need them ([`SearchIndex::prefetch`]); stops with the index's last user.
fn spawn_prefetch(index: Arc<SearchIndex>, refresh: std::time::Duration) {
    let index = Arc::downgrade(&index);
    tokio::spawn(async move {
        loop {
            let Some(strong) = index.upgrade() else {
                return;
            };
            let fetched = tokio::task::spawn_blocking(move || strong.prefetch()).await;
            if let Ok(Err(error)) = fetched {
                tracing::warn!(%error, "cannot fetch the index splits; searches will try again");
            }
            tokio::time::sleep(refresh).await;
        }
    });
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
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::NotFound("no such endpoint".to_string()) })
        .with_state(state)
        .layer(axum::middleware::from_fn(count_requests))
        .layer(axum::middleware::from_fn(refuse_oversized_headers))
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// The outcomes `/metrics` shows from the start, at zero until they happen: a scrape (or an
/// alert on a rate) should not have to wait for the first refusal to know the series exists.
const STATUS_CLASSES: [&str; 4] = ["2xx", "4xx", "5xx", "other"];

/// The metrics recorder is process-wide; tests build several apps in one process, at once.
fn prometheus_handle() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .install_recorder()
                .map_err(|error| format!("cannot install the metrics recorder: {error}"))?;
            for class in STATUS_CLASSES {
                metrics::counter!("callproof_evidence_requests_total", "status" => class)
                    .increment(0);
            }
            for reason in ["headers_too_large", "unauthenticated", "forbidden"] {
                metrics::counter!("callproof_evidence_requests_refused_total", "reason" => reason)
                    .increment(0);
            }
            Ok(handle)
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

async fn metrics(State(app): State<Arc<AppState>>) -> String {
    app.metrics.render()
}

/// Counts every answer by status class and the refusals by reason, and times them.
async fn count_requests(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status();
    let class = match status.as_u16() {
        200..=299 => "2xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    };
    metrics::counter!("callproof_evidence_requests_total", "status" => class).increment(1);
    let refusal = match status {
        axum::http::StatusCode::UNAUTHORIZED => Some("unauthenticated"),
        axum::http::StatusCode::FORBIDDEN => Some("forbidden"),
        _ => None,
    };
    if let Some(reason) = refusal {
        metrics::counter!("callproof_evidence_requests_refused_total", "reason" => reason)
            .increment(1);
    }
    metrics::histogram!("callproof_evidence_request_seconds")
        .record(started.elapsed().as_secs_f64());
    response
}

/// Answers 431 to a request whose headers exceed [`callproof_oidc::MAX_HEADER_BYTES`], before it
/// is routed or any of it decoded.
async fn refuse_oversized_headers(request: Request, next: Next) -> Response {
    if callproof_oidc::headers_within_limit(request.headers()) {
        return next.run(request).await;
    }
    metrics::counter!("callproof_evidence_requests_total", "status" => "4xx").increment(1);
    metrics::counter!("callproof_evidence_requests_refused_total", "reason" => "headers_too_large")
        .increment(1);
    ApiError::HeadersTooLarge.into_response()
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
