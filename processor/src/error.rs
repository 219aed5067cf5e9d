//! The processor's error type.

/// Everything that stops the processor or one of its commands. Messages name the thing and
/// the reason, and never quote event data or key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessorError {
    #[error(
        "the `[log]` section is missing: the processor needs `log.signing_key` to sign checkpoints"
    )]
    MissingLogSection,
    #[error(
        "`log.signing_key` is not a usable log signing key ({0}); make one with `callproof-processor keygen`"
    )]
    BadKey(String),
    #[error("the object store at {url} is not writable: {reason}")]
    StoreUnwritable { url: String, reason: String },
    #[error("cannot reach the Kafka brokers at {brokers}: {reason}")]
    BrokerUnreachable { brokers: String, reason: String },
    #[error("topic {topic} does not exist on {brokers}")]
    TopicMissing { topic: String, brokers: String },
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("log of partition {partition}: {source}")]
    Log {
        partition: i32,
        #[source]
        source: callproof_tlog::Error,
    },
    #[error("object store at {path}: {source}")]
    Store {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("cannot encode an entry: {0}")]
    Encode(String),
    #[error("cannot serve metrics on {address}: {reason}")]
    Metrics { address: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "partition {partition} has no message at offset {expected} (the next one is {found}), even when read from the beginning: the broker no longer holds messages the log has not recorded (retention or compaction?); the log is not extended past them"
    )]
    OffsetGap {
        partition: i32,
        expected: i64,
        found: i64,
    },
    #[error("a worker task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Format(#[from] callproof_evidence_format::FormatError),
    #[error("index: {0}")]
    Indexer(#[from] callproof_indexer::IndexerError),
}

impl ProcessorError {
    pub(crate) fn task(error: tokio::task::JoinError) -> Self {
        ProcessorError::Task(error.to_string())
    }
}
