//! The callproof gateway: every function call is authenticated (OIDC), authorized (per-function
//! policy), masked, recorded on Kafka before it proceeds, and executed with a credential the
//! caller never sees.
//!
//! [`App::build`] wires the parts from a [`Config`]; [`router`] gives the HTTP API, so tests can
//! serve it on port 0. The binary (`main.rs`) only parses arguments and calls [`serve`].

pub mod approval;
mod error;
pub mod events;
mod function;
mod invoke;
pub mod mcp;
pub mod rules;
mod upstream;

use axum::serve::ListenerExt as _;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use callproof_config::Config;
use callproof_masking::Masker;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::Semaphore;

pub use error::ApiError;

use crate::approval::Approvals;
use crate::events::EventPublisher;
use crate::function::Function;
use callproof_oidc::Authenticator;

/// Response header naming the call, on every answer of the invoke endpoint.
pub const CALL_ID_HEADER: &str = "x-callproof-call-id";

pub struct AppState {
    pub instance_id: String,
    authenticator: Authenticator,
    functions: HashMap<String, Function>,
    masker: Masker,
    events: Arc<EventPublisher>,
    http: reqwest::Client,
    max_response_bytes: usize,
    /// Invoke calls being served (`ingress.max_in_flight` permits); none left means 429.
    in_flight: Arc<Semaphore>,
    metrics: PrometheusHandle,
    approvals: Arc<Approvals>,
    /// How long a caller may be held for an approval (`Prefer: wait=N` is capped to it).
    approval_max_wait: Duration,
    /// Where callers and reviewers reach this gateway, without a trailing slash.
    public_url: String,
    /// The token claims policy rules may read (`ingress.policy_claims`).
    policy_claims: Vec<String>,
    /// The MCP gateway at `/mcp`, when `[mcp]` is configured.
    mcp: Option<mcp::Mcp>,
}

impl AppState {
    /// How long a call of `function` (a function's name, or `mcp:<server>__<tool>`) may run.
    pub fn call_timeout(&self, function: &str) -> Duration {
        match (self.functions.get(function), &self.mcp) {
            (Some(function), _) => function.timeout,
            (None, Some(mcp)) => mcp.call_timeout(function).unwrap_or(Duration::ZERO),
            (None, None) => Duration::ZERO,
        }
    }

    /// The approval policy of `function` (a function's name, or `mcp:<server>__<tool>`).
    pub fn approval_policy(&self, function: &str) -> Option<&approval::ApprovalPolicy> {
        match self.functions.get(function) {
            Some(function) => function.approval.as_ref(),
            None => self.mcp.as_ref()?.approval_policy(function),
        }
    }

    /// Where the caller of a held call asks for its state.
    pub fn status_url(&self, call_id: &str) -> String {
        format!("{}/v1/calls/{call_id}", self.public_url)
    }
}

/// A gateway wired from its configuration, ready to serve.
pub struct App {
    pub state: Arc<AppState>,
    pub listen: SocketAddr,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let oidc = config
            .oidc
            .clone()
            .context("the `[oidc]` section is required by the gateway")?;
        let authenticator = Authenticator::new(oidc).map_err(anyhow::Error::msg)?;
        let masker = Masker::new(&config.masking).context("`[masking]`")?;
        let functions = config
            .functions
            .iter()
            .map(|(name, function)| {
                Ok((
                    name.clone(),
                    Function::compile(name, function, &config.ingress)?,
                ))
            })
            .collect::<anyhow::Result<HashMap<_, _>>>()?;
        let events = EventPublisher::new(&config.kafka, &config.ingress.instance_id)
            .context("cannot create the Kafka producer")?;
        events.spawn_readiness_probe(Duration::from_secs(2));
        authenticator.warm_up().await;
        let ingress = &config.ingress;
        let approvals = Approvals::new(
            &ingress.instance_id,
            Duration::from_secs(ingress.approval_takeover_secs),
            Duration::from_secs(ingress.approval_retention_secs),
        );
        let public_url = ingress
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", ingress.listen))
            .trim_end_matches('/')
            .to_string();
        let mcp = mcp::Mcp::build(&config, &public_url)?;
        // Held calls older than the longest expiry plus the retention are of no use: reading the
        // topic from there rebuilds every call that is pending or whose result is still kept.
        let longest_expiry = functions
            .values()
            .filter_map(|function| function.approval.as_ref())
            .map(|approval| approval.expiry)
            .chain(mcp.iter().filter_map(mcp::Mcp::longest_expiry))
            .max();
        let state = AppState {
            instance_id: config.ingress.instance_id.clone(),
            authenticator,
            functions,
            masker,
            events,
            http: upstream::client().context("cannot build the upstream HTTP client")?,
            max_response_bytes: config.ingress.max_response_bytes,
            // Validated to at most `MAX_IN_FLIGHT_LIMIT`, far below what a semaphore can count.
            in_flight: Arc::new(Semaphore::new(config.ingress.max_in_flight)),
            metrics: prometheus_handle()?,
            approvals: approvals.clone(),
            approval_max_wait: Duration::from_secs(ingress.approval_max_wait_secs),
            public_url,
            policy_claims: ingress.policy_claims.clone(),
            mcp,
        };
        let state = Arc::new(state);
        if state.mcp.is_some() {
            mcp::Mcp::spawn_reaper(&state);
        }
        if let Some(longest_expiry) = longest_expiry {
            let lookback = longest_expiry
                + Duration::from_secs(
                    ingress.approval_retention_secs + ingress.approval_takeover_secs,
                );
            approvals
                .start(&config.kafka, lookback, Arc::downgrade(&state))
                .context("cannot create the Kafka consumer for approvals")?;
        } else {
            approvals.without_approvals();
        }
        Ok(App {
            state,
            listen: config.ingress.listen,
        })
    }
}

/// The metrics recorder is process-wide; tests build several apps in one process, at once.
fn prometheus_handle() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .install_recorder()
                .map_err(|error| format!("cannot install the metrics recorder: {error}"))?;
            // Present from the start at zero, so that a rate or an alert on them needs no
            // first event.
            metrics::counter!("callproof_ingress_event_publish_failures_total").increment(0);
            metrics::counter!("callproof_ingress_requests_refused_total", "reason" => "headers_too_large")
                .increment(0);
            Ok(handle)
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

pub fn router(state: Arc<AppState>) -> Router {
    let mcp = if state.mcp.is_some() {
        mcp::routes()
    } else {
        Router::new()
    };
    Router::new()
        .merge(mcp)
        .route("/v1/functions/{name}/invoke", post(invoke::invoke))
        .route("/v1/calls/{id}", get(approval::call_status))
        .route("/v1/approvals", get(approval::list))
        .route(
            "/v1/approvals/{id}",
            get(approval::show).post(approval::decide),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::NotFound("no such endpoint".to_string()) })
        .with_state(state)
        .layer(axum::middleware::from_fn(refuse_oversized_headers))
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// Answers 431 to a request whose headers exceed [`callproof_oidc::MAX_HEADER_BYTES`], before it
/// is routed: nothing of it is decoded, so it is no call and records no event.
async fn refuse_oversized_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if callproof_oidc::headers_within_limit(request.headers()) {
        return next.run(request).await;
    }
    metrics::counter!("callproof_ingress_requests_refused_total", "reason" => "headers_too_large")
        .increment(1);
    ApiError::HeadersTooLarge.into_response()
}

async fn readyz(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    let approvals_needed = app
        .functions
        .values()
        .any(|function| function.approval.is_some())
        || app
            .mcp
            .as_ref()
            .is_some_and(|mcp| mcp.longest_expiry().is_some());
    if approvals_needed && !app.approvals.is_caught_up() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                serde_json::json!({"status": "not ready", "reason": "approvals are being read from kafka"}),
            ),
        );
    }
    if app.events.is_ready() {
        (StatusCode::OK, Json(serde_json::json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "not ready", "reason": "kafka is not reachable"})),
        )
    }
}

async fn metrics(State(app): State<Arc<AppState>>) -> String {
    app.metrics.render()
}

/// The runtime the gateway serves on, sized by [`IngressConfig::runtime_workers`] for this
/// machine's cores.
///
/// [`IngressConfig::runtime_workers`]: callproof_config::IngressConfig::runtime_workers
pub fn runtime(
    ingress: &callproof_config::IngressConfig,
) -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(ingress.runtime_workers(cores))
        .enable_all()
        .build()
}

/// Serves the gateway until ctrl-c or SIGTERM, then drains in-flight calls and events.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let app = App::build(config).await?;
    let listener = tokio::net::TcpListener::bind(app.listen)
        .await
        .with_context(|| format!("cannot listen on {}", app.listen))?;
    tracing::info!(address = %listener.local_addr()?, instance = %app.state.instance_id, "gateway listening");
    // A streamed answer (SSE: MCP progress, a held tools/call) is many small writes; with
    // Nagle's algorithm each waits for the agent's delayed ACK, up to 40 ms.
    let listener = listener.tap_io(|connection| {
        if let Err(error) = connection.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY on a connection");
        }
    });
    let events = app.state.events.clone();
    axum::serve(listener, router(app.state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("server failed")?;
    events.flush(Duration::from_secs(10));
    Ok(())
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
