//! LogAppender: appends a partition's masked entries to its Merkle log.
//!
//! One log per partition, under `logs/<partition>/`. Every append publishes one signed
//! checkpoint whose extension line records the Kafka offset it covers:
//!
//! ```text
//! callproof-kafka-offset <topic> <partition> <next offset>
//! ```
//!
//! `<next offset>` is the offset of the next message to consume (the last appended message's
//! offset + 1), as Kafka commits are. It is the source of truth on restart: the writer writes
//! entries, tiles and blobs before the checkpoint, so the checkpoint is the commit point, and a
//! message is in the log exactly when its offset is below the checkpoint's next offset.

use std::sync::Arc;
use std::time::{Duration, Instant};

use callproof_tlog::checkpoint::Checkpoint;
use callproof_tlog::note::NoteSigner;
use callproof_tlog::store::{LogWriter, SignedCheckpoint};
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};

use crate::ProcessorError;
use callproof_evidence_format::entry::{Blob, EncodedEntry};
pub use callproof_evidence_format::store::log_prefix;

/// The first word of the checkpoint extension line that records the Kafka offset.
pub const OFFSET_EXTENSION: &str = "callproof-kafka-offset";

/// How long an append keeps retrying object-store failures before the processor gives up.
/// Kept well under the consumer's `max.poll.interval.ms` (300 s by default): a processor
/// that stopped polling for longer would lose its partitions to another instance while it
/// still holds their writers.
pub const APPEND_RETRY_LIMIT: Duration = Duration::from_secs(60);

/// The checkpoint extension line for a partition's next offset.
pub fn offset_extension(topic: &str, partition: i32, next_offset: i64) -> String {
    format!("{OFFSET_EXTENSION} {topic} {partition} {next_offset}")
}

/// The next offset recorded in a checkpoint for `topic`/`partition`, if any.
pub fn next_offset_of(checkpoint: &Checkpoint, topic: &str, partition: i32) -> Option<i64> {
    checkpoint.extensions.iter().find_map(|line| {
        let mut words = line.split(' ');
        (words.next() == Some(OFFSET_EXTENSION)
            && words.next() == Some(topic)
            && words.next() == Some(partition.to_string().as_str()))
        .then(|| words.next()?.parse().ok())
        .flatten()
    })
}

/// The log of one partition, open for appending.
pub struct LogAppender {
    store: Arc<dyn ObjectStore>,
    writer: LogWriter,
    topic: String,
    partition: i32,
    next_offset: Option<i64>,
}

impl LogAppender {
    /// Opens (or starts) the partition's log, retrying transient store failures.
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        signer: NoteSigner,
        origin: String,
        topic: &str,
        partition: i32,
    ) -> Result<LogAppender, ProcessorError> {
        let writer = retry(partition, "open", || {
            LogWriter::open(
                store.clone(),
                log_prefix(partition),
                signer.clone(),
                origin.clone(),
            )
        })
        .await?;
        let next_offset = next_offset_of(&writer.checkpoint().checkpoint, topic, partition);
        Ok(LogAppender {
            store,
            writer,
            topic: topic.to_string(),
            partition,
            next_offset,
        })
    }

    /// Entries in the log.
    pub fn size(&self) -> u64 {
        self.writer.size()
    }

    /// The offset of the first message not yet in the log (`None` for a log that has
    /// never recorded one: start from the beginning of the partition).
    pub fn next_offset(&self) -> Option<i64> {
        self.next_offset
    }

    pub fn checkpoint(&self) -> &SignedCheckpoint {
        self.writer.checkpoint()
    }

    /// Writes the entries' blobs, then appends the entries and publishes the checkpoint that
    /// records `next_offset`, and the `extensions` lines after it. Object-store failures are retried (with backoff, up to
    /// [`APPEND_RETRY_LIMIT`]); a failed attempt publishes nothing, so a retry can neither
    /// leave a gap nor write an entry twice.
    pub async fn append(
        &mut self,
        entries: Vec<EncodedEntry>,
        next_offset: i64,
        extensions: Vec<String>,
    ) -> Result<SignedCheckpoint, ProcessorError> {
        let mut blobs: Vec<Blob> = Vec::new();
        let mut bytes: Vec<Vec<u8>> = Vec::with_capacity(entries.len());
        for entry in entries {
            blobs.extend(entry.blobs);
            bytes.push(entry.bytes);
        }
        if !blobs.is_empty() {
            retry(self.partition, "blob write", || {
                write_blobs(self.store.clone(), blobs.clone())
            })
            .await?;
        }
        let extension: Vec<String> =
            std::iter::once(offset_extension(&self.topic, self.partition, next_offset))
                .chain(extensions)
                .collect();
        let partition = self.partition;
        let writer = &mut self.writer;
        let started = Instant::now();
        let mut backoff = Duration::from_millis(20);
        let checkpoint = loop {
            match writer.append(&bytes, &extension).await {
                Ok(checkpoint) => break checkpoint,
                Err(error) if is_transient(&error) && started.elapsed() < APPEND_RETRY_LIMIT => {
                    metrics::counter!("callproof_processor_failures_total", "stage" => "append")
                        .increment(1);
                    tracing::warn!(partition, %error, retry_in_ms = backoff.as_millis() as u64, "log append failed, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(source) => return Err(ProcessorError::Log { partition, source }),
            }
        };
        self.next_offset = Some(next_offset);
        Ok(checkpoint)
    }
}

/// Writes blobs, several at once. Content addressed: rewriting an existing blob is harmless.
async fn write_blobs(store: Arc<dyn ObjectStore>, blobs: Vec<Blob>) -> callproof_tlog::Result<()> {
    let writes = blobs.into_iter().map(|blob| {
        let store = store.clone();
        async move {
            let path = Path::from(blob.path());
            store
                .put(&path, PutPayload::from(blob.bytes))
                .await
                .map(|_| ())
                .map_err(|source| callproof_tlog::Error::Store {
                    path: path.to_string(),
                    source,
                })
        }
    });
    futures::stream::iter(writes)
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await
        .map(|_| ())
}

fn is_transient(error: &callproof_tlog::Error) -> bool {
    matches!(error, callproof_tlog::Error::Store { .. })
}

async fn retry<T, F, Fut>(partition: i32, what: &str, mut attempt: F) -> Result<T, ProcessorError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = callproof_tlog::Result<T>>,
{
    let started = Instant::now();
    let mut backoff = Duration::from_millis(20);
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if is_transient(&error) && started.elapsed() < APPEND_RETRY_LIMIT => {
                metrics::counter!("callproof_processor_failures_total", "stage" => "store")
                    .increment(1);
                tracing::warn!(partition, %error, what, retry_in_ms = backoff.as_millis() as u64, "object store failed, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(source) => return Err(ProcessorError::Log { partition, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_extension_round_trips_and_ignores_other_partitions() {
        let checkpoint = Checkpoint {
            origin: "o".into(),
            size: 3,
            root_hash: callproof_tlog::hash::EMPTY_ROOT,
            extensions: vec!["other line".into(), offset_extension("calls", 4, 1234)],
        };
        assert_eq!(next_offset_of(&checkpoint, "calls", 4), Some(1234));
        assert_eq!(next_offset_of(&checkpoint, "calls", 5), None);
        assert_eq!(next_offset_of(&checkpoint, "other", 4), None);
    }
}
