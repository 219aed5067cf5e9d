//! The processor's sections: `[processor]`, `[storage]`, `[log]` and `[index]`.
//!
//! They live in their own file so that the processor's keys and checks stay in one place;
//! `sections.rs` only names them in [`Config`](crate::Config) and calls the two hooks below.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::sections::KeyError;
use crate::{Config, ConfigErrorKind, Secret};

/// `[processor]`: the consumer group and how batches are cut.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessorConfig {
    /// The Kafka consumer group; every processor instance of a deployment uses the same one
    /// and they share the partitions of `kafka.calls_topic`.
    pub group_id: String,
    /// A batch is cut when it holds this many events...
    pub batch_max_events: usize,
    /// ...or this many bytes of Kafka payload...
    pub batch_max_bytes: usize,
    /// ...or this long after its first event arrived, whichever comes first.
    pub batch_max_wait_ms: u64,
    /// Where `/metrics` (Prometheus) and `/healthz` are served.
    pub metrics_listen: SocketAddr,
    /// How long the processor waits for the brokers at start before it gives up.
    pub startup_timeout_ms: u64,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        ProcessorConfig {
            group_id: "callproof-processor".to_string(),
            batch_max_events: 5_000,
            batch_max_bytes: 16 * 1024 * 1024,
            batch_max_wait_ms: 200,
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            startup_timeout_ms: 10_000,
        }
    }
}

/// `[storage]`: the object store that holds the logs, the blobs and the index splits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `file:///absolute/path` (the default kind), a plain local path (relative to the working
    /// directory), `s3://bucket/prefix`, or `memory:///` (tests only: nothing survives a
    /// restart).
    pub url: String,
    /// Options for the store, by `object_store` key (`aws_endpoint`, `aws_region`,
    /// `aws_access_key_id`, `aws_secret_access_key`, ...). Values may be `${ENV}` references and
    /// never print.
    pub options: BTreeMap<String, Secret>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            url: "file:///var/lib/callproof/store".to_string(),
            options: BTreeMap::new(),
        }
    }
}

/// `[log]`: how the per-partition Merkle logs are signed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// The Ed25519 note signer key (`PRIVATE+KEY+<name>+<id>+<base64>`, as written by
    /// `callproof-processor keygen`): a literal or a `${ENV}` reference. Set this or
    /// `signing_key_file`.
    pub signing_key: Option<Secret>,
    /// A file holding the signer key.
    pub signing_key_file: Option<String>,
    /// Origin prefix of the logs; partition `p`'s checkpoints name `<origin>/<p>`. Defaults to
    /// the key's name.
    pub origin: Option<String>,
}

/// `[index]`: the indexer, which turns each partition's log into search index splits in the
/// object store (`storage.url`, under `index/`): a derived view of the logs, rebuilt from them
/// by `callproof-processor reindex`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexConfig {
    /// A local directory of the indexer's own, where splits are built and merged before they
    /// are uploaded; never shared, emptied at start. Nothing in it is needed after a restart.
    pub scratch_dir: PathBuf,
    /// Whether `callproof-processor` indexes the partitions it owns, in its own process. Set
    /// `false` when `callproof-indexer` runs elsewhere.
    pub in_process: bool,
    /// The partitions `callproof-indexer` indexes; empty: every partition with a log.
    pub partitions: Vec<i32>,
    /// How often the indexer reads a partition's checkpoint and, if the log grew, writes a split
    /// of the new entries.
    pub split_interval_ms: u64,
    /// The most log entries one new split covers (a partition far behind gets several).
    pub split_max_entries: u64,
    /// Memory budget for building one split, in MiB (tantivy needs at least 15).
    pub writer_memory_mb: usize,
    /// This many adjacent splits of the same merge level are merged into one.
    pub merge_factor: usize,
    /// A split with at least this many entries is not merged any further.
    pub merge_max_entries: u64,
    /// A split replaced by a merge (or a rebuild) is deleted this long after it was replaced:
    /// longer than any evidence API's refresh plus its longest query.
    pub gc_grace_secs: u64,
    /// The logs' verifier key (`name+keyid+base64`, printed by `callproof-processor keygen`),
    /// with which `callproof-indexer` checks each checkpoint it follows. Set this or
    /// `verifier_key_file` for `callproof-indexer`; the processor uses its own signing key.
    pub verifier_key: Option<String>,
    /// A file holding the verifier key.
    pub verifier_key_file: Option<String>,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            scratch_dir: PathBuf::from("/var/lib/callproof/index-scratch"),
            in_process: true,
            partitions: Vec::new(),
            split_interval_ms: 1_000,
            split_max_entries: 100_000,
            writer_memory_mb: 64,
            merge_factor: 10,
            merge_max_entries: 5_000_000,
            gc_grace_secs: 300,
            verifier_key: None,
            verifier_key_file: None,
        }
    }
}

impl Config {
    /// Resolves the processor's secrets: the log signing key and the storage options.
    pub(crate) fn resolve_processor_secrets(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), KeyError> {
        for (name, value) in &mut self.storage.options {
            let key_path = format!("storage.options.{name}");
            value
                .resolve(&key_path, env)
                .map_err(|kind| (key_path, kind))?;
        }
        // Left only for `callproof-indexer` (`drop_secrets_not_used_by`): the others never read it.
        if let Some(path) = &self.index.verifier_key_file {
            let key_path = "index.verifier_key".to_string();
            if self.index.verifier_key.is_some() {
                return Err((
                    key_path.clone(),
                    ConfigErrorKind::Invalid {
                        key: key_path,
                        reason: "and `verifier_key_file` are both set; set one".into(),
                    },
                ));
            }
            let text = std::fs::read_to_string(path).map_err(|error| {
                (
                    key_path.clone(),
                    ConfigErrorKind::Invalid {
                        key: key_path.clone(),
                        reason: format!("cannot read `verifier_key_file` {path}: {error}"),
                    },
                )
            })?;
            self.index.verifier_key = Some(text.trim().to_string());
        }
        if let Some(log) = &mut self.log {
            let key_path = "log.signing_key".to_string();
            match (log.signing_key.as_mut(), &log.signing_key_file) {
                (Some(secret), None) => secret
                    .resolve(&key_path, env)
                    .map_err(|kind| (key_path, kind))?,
                (None, Some(path)) => {
                    let secret = Secret::from_file("log.signing_key_file", path)
                        .map_err(|kind| (key_path, kind))?;
                    log.signing_key = Some(secret);
                }
                (Some(_), Some(_)) => {
                    return Err((
                        key_path.clone(),
                        ConfigErrorKind::Invalid {
                            key: key_path,
                            reason: "and `signing_key_file` are both set; set one".into(),
                        },
                    ));
                }
                (None, None) => {
                    return Err((
                        key_path.clone(),
                        ConfigErrorKind::Invalid {
                            key: key_path,
                            reason: "is missing: set `signing_key` (a value or ${ENV}) or `signing_key_file`".into(),
                        },
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks the processor's values; no I/O.
    pub(crate) fn validate_processor(&self) -> Result<(), KeyError> {
        let invalid = |key: &str, reason: &str| {
            (
                key.to_string(),
                ConfigErrorKind::Invalid {
                    key: key.to_string(),
                    reason: reason.to_string(),
                },
            )
        };
        let processor = &self.processor;
        if processor.group_id.trim().is_empty() {
            return Err(invalid("processor.group_id", "must not be empty"));
        }
        for (key, value) in [
            (
                "processor.batch_max_events",
                processor.batch_max_events as u64,
            ),
            (
                "processor.batch_max_bytes",
                processor.batch_max_bytes as u64,
            ),
            ("processor.batch_max_wait_ms", processor.batch_max_wait_ms),
            ("processor.startup_timeout_ms", processor.startup_timeout_ms),
            ("index.split_interval_ms", self.index.split_interval_ms),
            ("index.split_max_entries", self.index.split_max_entries),
            ("index.merge_max_entries", self.index.merge_max_entries),
            ("index.gc_grace_secs", self.index.gc_grace_secs),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be positive"));
            }
        }
        if self.index.scratch_dir.as_os_str().is_empty() {
            return Err(invalid("index.scratch_dir", "must not be empty"));
        }
        if !(2..=100).contains(&self.index.merge_factor) {
            return Err(invalid("index.merge_factor", "must be between 2 and 100"));
        }
        if let Some(partition) = self.index.partitions.iter().find(|p| **p < 0) {
            return Err(invalid(
                "index.partitions",
                &format!("must list partition numbers (0 or more), not {partition}"),
            ));
        }
        if !(15..=65_536).contains(&self.index.writer_memory_mb) {
            return Err(invalid(
                "index.writer_memory_mb",
                "must be between 15 and 65536 (MiB)",
            ));
        }
        let url = self.storage.url.as_str();
        // A plain path (no scheme) is a local directory, relative to the working directory.
        let scheme_ok = !url.contains("://")
            || ["file:///", "s3://", "memory:///"]
                .iter()
                .any(|prefix| url.starts_with(prefix));
        if url.trim().is_empty() || !scheme_ok {
            return Err(invalid(
                "storage.url",
                "must be a file:///absolute/path, s3://bucket[/prefix] or memory:/// URL, or a local path",
            ));
        }
        // Parsed by the indexer with the log's own parser; here only the shape.
        if let Some(key) = &self.index.verifier_key
            && key.splitn(3, '+').count() != 3
        {
            return Err(invalid(
                "index.verifier_key",
                "must be a verifier key `name+keyid+base64`, as printed by `callproof-processor keygen`",
            ));
        }
        if let Some(log) = &self.log
            && let Some(origin) = &log.origin
            && (origin.trim().is_empty() || origin.contains(char::is_whitespace))
        {
            return Err(invalid(
                "log.origin",
                "must be non-empty and contain no whitespace",
            ));
        }
        Ok(())
    }
}
