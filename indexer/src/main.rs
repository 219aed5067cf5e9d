//! `callproof-indexer`: the indexer on its own, on any host that reaches the object store (set
//! `index.in_process = false` for the processors then). No Kafka.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use callproof_indexer::{Indexers, Settings, log_partitions, prepare_scratch};
use clap::Parser;

/// Builds the search index splits of every partition's log (or of `index.partitions`) in the
/// object store, merges them and removes the replaced ones.
#[derive(Parser)]
#[command(name = "callproof-indexer", version)]
struct Args {
    /// The deployment file (TOML): `[storage]` and `[index]`, with `index.verifier_key`.
    #[arg(long, env = "CALLPROOF_CONFIG")]
    config: PathBuf,
    /// Where `/metrics` (Prometheus) and `/healthz` are served.
    #[arg(long, default_value = "127.0.0.1:9465")]
    metrics_listen: SocketAddr,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    json_logs: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing(args.json_logs);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("callproof-indexer: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "stopping");
            eprintln!("callproof-indexer: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Its own sections: the store's write credentials (it writes the splits) and the logs'
    // verifier key, with which it checks the checkpoints it follows. Never the signing key.
    let config = callproof_config::Config::load(&args.config, callproof_config::Service::Indexer)?;
    let verifier: callproof_tlog::note::NoteVerifier = config
        .index
        .verifier_key
        .as_deref()
        .context("`index.verifier_key` is required")?
        .parse()
        .map_err(|error| {
            anyhow::anyhow!("`index.verifier_key` is not a log verifier key: {error}")
        })?;
    let store = callproof_evidence_format::store::open_store(&config.storage)?;
    let settings = Settings::from(&config.index);
    prepare_scratch(&settings.scratch_dir)?;
    serve_metrics(args.metrics_listen).await?;
    let mut indexers = Indexers::new(Arc::clone(&store), verifier, settings);
    let configured = config.index.partitions.clone();
    let shutdown = tokio::signal::ctrl_c();
    tokio::pin!(shutdown);
    loop {
        let partitions = if configured.is_empty() {
            log_partitions(&store).await.unwrap_or_else(|error| {
                tracing::warn!(%error, "cannot list the logs; trying again");
                indexers.partitions()
            })
        } else {
            configured.clone()
        };
        for partition in partitions {
            indexers.start(partition);
        }
        tokio::select! {
            _ = &mut shutdown => break,
            () = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
        }
    }
    tracing::info!("indexer stopped");
    Ok(())
}

async fn serve_metrics(address: SocketAddr) -> anyhow::Result<()> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("metrics recorder")?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot serve metrics on {address}"))?;
    let router = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let handle = handle.clone();
                async move { handle.render() }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "metrics server stopped");
        }
    });
    Ok(())
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
