//! The callproof processor: consumes call events from Kafka in a consumer group, masks each one,
//! appends it to its partition's signed Merkle log (C2SP tlog-tiles on object storage) and
//! streams it to SIEMs as OCSF JSON. See `README.md` for the guarantees and the stored entry
//! format. The search index is built from the logs by the indexer (`callproof-indexer`), which
//! the processor runs for its own partitions unless `index.in_process = false`.
//!
//! Stages, one file each: [`decoder::Decoder`], [`masker::Masker`],
//! [`siem::SiemPublisher`], [`log_appender::LogAppender`], wired by
//! [`pipeline::Pipeline`]. What they write is in the `callproof-evidence-format` crate (the entry
//! format, the index schema, opening the store), through which the evidence API reads it.

pub mod decoder;
mod error;
pub mod log_appender;
pub mod masker;
pub mod pipeline;
pub mod sequencer;
pub mod siem;
pub mod storage;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use callproof_config::Config;
use callproof_tlog::note::NoteSigner;
use object_store::ObjectStore;
use rdkafka::consumer::{BaseConsumer, Consumer as _};

pub use error::ProcessorError;
pub use pipeline::Pipeline;

/// The signer and origin prefix from `[log]`.
pub fn log_signer(config: &Config) -> Result<(NoteSigner, String), ProcessorError> {
    let log = config
        .log
        .as_ref()
        .ok_or(ProcessorError::MissingLogSection)?;
    let key = log
        .signing_key
        .as_ref()
        .ok_or(ProcessorError::MissingLogSection)?;
    let signer: NoteSigner = key
        .expose()
        .trim()
        .parse()
        .map_err(|error: callproof_tlog::Error| ProcessorError::BadKey(key_error_reason(&error)))?;
    let origin = log
        .origin
        .clone()
        .unwrap_or_else(|| signer.name().to_string());
    Ok((signer, origin))
}

/// Why a key was refused, without anything of the key itself.
fn key_error_reason(error: &callproof_tlog::Error) -> String {
    match error {
        callproof_tlog::Error::Malformed { what, .. } => format!("malformed {what}"),
        _ => "unreadable key".to_string(),
    }
}

/// Builds every stage and checks, with clear errors, what the processor needs to start: the
/// signing key, a writable store, reachable brokers and the calls topic. `store` replaces the
/// one named by `storage.url` (tests wrap the real store in decorators).
pub async fn build(
    config: Config,
    store: Option<Arc<dyn ObjectStore>>,
) -> Result<Pipeline, ProcessorError> {
    let (signer, origin) = log_signer(&config)?;
    let store = match store {
        Some(store) => store,
        None => callproof_evidence_format::store::open_store(&config.storage)?,
    };
    storage::check_writable(&store, &config.storage.url).await?;
    if config.index.in_process {
        callproof_indexer::prepare_scratch(&config.index.scratch_dir)?;
    }
    check_brokers(&config).await?;
    let masker = masker::Masker::new(&config)
        .map_err(|error| ProcessorError::Encode(format!("masking configuration: {error}")))?;
    let siem = siem::SiemPublisher::new(&config.kafka, "callproof-processor-siem")?;
    Pipeline::new(pipeline::Stages {
        config,
        store,
        signer,
        origin,
        masker: Arc::new(masker),
        siem,
    })
}

/// Builds and runs the pipeline until `shutdown` completes.
pub async fn run(
    config: Config,
    store: Option<Arc<dyn ObjectStore>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProcessorError> {
    build(config, store).await?.run(shutdown).await
}

/// Fails fast, naming the brokers, when they cannot be reached or the topic is missing.
async fn check_brokers(config: &Config) -> Result<(), ProcessorError> {
    let client_config = pipeline::consumer_config(config);
    let brokers = config.kafka.brokers.clone();
    let topic = config.kafka.calls_topic.clone();
    let timeout = Duration::from_millis(config.processor.startup_timeout_ms);
    tokio::task::spawn_blocking(move || {
        let unreachable = |reason: String| ProcessorError::BrokerUnreachable {
            brokers: brokers.clone(),
            reason,
        };
        let consumer: BaseConsumer<LastError> = client_config
            .create_with_context(LastError::default())
            .map_err(|error| unreachable(error.to_string()))?;
        let metadata = consumer
            .fetch_metadata(Some(&topic), timeout)
            .map_err(|error| {
                // "Broker transport failure" says nothing of why: librdkafka's own report of the
                // connection (a TLS handshake or a SASL exchange refused, say) does. It reaches
                // the context only when the client's queue is served, which a metadata request
                // does not do: poll for it a little.
                let mut reason = consumer.context().take();
                for _ in 0..20 {
                    if reason.is_some() {
                        break;
                    }
                    let _ = consumer.poll(Duration::from_millis(100));
                    reason = consumer.context().take();
                }
                unreachable(reason.unwrap_or_else(|| error.to_string()))
            })?;
        let found = metadata
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
        if found {
            Ok(())
        } else {
            Err(ProcessorError::TopicMissing {
                topic: topic.clone(),
                brokers: brokers.clone(),
            })
        }
    })
    .await
    .map_err(ProcessorError::task)?
}

/// Keeps the last error librdkafka reported on its connections, to say why brokers could not
/// be reached.
#[derive(Default)]
struct LastError(std::sync::Mutex<Option<String>>);

impl LastError {
    fn take(&self) -> Option<String> {
        self.0.lock().ok().and_then(|mut last| last.take())
    }
}

impl rdkafka::ClientContext for LastError {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka client error");
        if let Ok(mut last) = self.0.lock() {
            *last = Some(reason.to_string());
        }
    }
}

impl rdkafka::consumer::ConsumerContext for LastError {}

/// Every `stage` label of `callproof_processor_failures_total`.
const FAILURE_STAGES: [&str; 9] = [
    "consume",
    "decode",
    "encode",
    "append",
    "store",
    "siem",
    "unassigned",
    "offset_gap",
    "fenced",
];

/// Serves `/metrics` (Prometheus) and `/healthz` on `address`; installs the global recorder.
pub async fn serve_metrics(address: SocketAddr) -> Result<(), ProcessorError> {
    let failed = |reason: String| ProcessorError::Metrics {
        address: address.to_string(),
        reason,
    };
    // Histograms render as summaries (quantiles 0.5 … 0.999), so p50 and p99 of the lag and
    // of the stage latencies are read off `/metrics` directly.
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|error| failed(error.to_string()))?;
    // Present from the start at zero, so that a rate or an alert on them needs no first failure.
    for stage in FAILURE_STAGES {
        metrics::counter!("callproof_processor_failures_total", "stage" => stage).increment(0);
    }
    metrics::counter!("callproof_processor_duplicates_skipped_total").increment(0);
    metrics::counter!("callproof_processor_events_renumbered_total").increment(0);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|error| failed(error.to_string()))?;
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

/// Writes a new log signing key to `out` (mode 0600, never overwriting a file) and returns the
/// verifier key, which auditors give to `callproof-verify`.
pub fn keygen(name: &str, out: &Path) -> Result<String, ProcessorError> {
    let (signer_key, verifier_key) =
        NoteSigner::generate(name).map_err(|error| ProcessorError::BadKey(error.to_string()))?;
    let io = |source| ProcessorError::Io {
        path: out.display().to_string(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(out).map_err(io)?;
    std::io::Write::write_all(&mut file, format!("{signer_key}\n").as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(verifier_key)
}

/// What `reindex` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReindexReport {
    /// (partition, entries indexed).
    pub partitions: Vec<(i32, u64)>,
}

/// Rebuilds every partition's index splits from its log alone
/// ([`callproof_indexer::rebuild`]): new splits are published, then the old ones are marked for
/// deletion (removed after `index.gc_grace_secs` by a running indexer). Searches stay complete
/// throughout; indexers may keep running.
pub async fn reindex(config: &Config) -> Result<ReindexReport, ProcessorError> {
    let (signer, _origin) = log_signer(config)?;
    let store = callproof_evidence_format::store::open_store(&config.storage)?;
    let settings = callproof_indexer::Settings::from(&config.index);
    callproof_indexer::prepare_scratch(&settings.scratch_dir)?;
    let mut report = ReindexReport {
        partitions: Vec::new(),
    };
    for partition in callproof_indexer::log_partitions(&store).await? {
        tracing::info!(partition, "rebuilding the index splits from the log");
        let entries = callproof_indexer::rebuild(
            store.clone(),
            signer.verifier(),
            partition,
            settings.clone(),
        )
        .await?;
        report.partitions.push((partition, entries));
    }
    Ok(report)
}
