//! Indexer: adds each partition's entries to its tantivy index.
//!
//! The writer is kept open between batches (documents go to tantivy's indexing thread as they
//! come) and commits at most every `index.commit_interval_ms`, on revocation and on shutdown:
//! few large commits. Each commit's payload ([`CommitPayload`]) records how many log entries
//! the index covers. Documents added after the last commit are lost if the process dies, and
//! the log entries beyond the payload's size are indexed again on the next open, so the index
//! never misses an entry nor holds one twice.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callproof_tlog::store::LogReader;
use callproof_tlog::tile::TILE_WIDTH;
use object_store::ObjectStore;
use tantivy::schema::TantivyDocument;
use tantivy::{Index, IndexWriter, TantivyError};

use crate::ProcessorError;
use callproof_evidence_format::index_schema::{
    CommitPayload, IndexFields, SCHEMA_VERSION, partition_index_dir,
};
use callproof_evidence_format::store::read_entries;

/// How long opening a writer waits for the partition's previous owner (another processor on
/// this host) to release the index lock after a rebalance.
pub const LOCK_WAIT: Duration = Duration::from_secs(60);

/// Entries read from the log per step when catching up or rebuilding.
const CATCH_UP_CHUNK: u64 = 16 * TILE_WIDTH as u64;

/// The index writer of one partition.
pub struct Indexer {
    partition: i32,
    dir: PathBuf,
    fields: IndexFields,
    writer: IndexWriter<TantivyDocument>,
    /// Log entries covered by the documents added so far (committed or not).
    added_log_size: u64,
    committed_log_size: u64,
    commit_interval: Duration,
    last_commit: Instant,
}

impl Indexer {
    /// Opens or creates the partition's index under `root`. Blocking: call from
    /// `spawn_blocking`. Waits up to [`LOCK_WAIT`] for another writer to let go.
    pub fn open(
        root: &Path,
        partition: i32,
        writer_memory_mb: usize,
        commit_interval: Duration,
    ) -> Result<Indexer, ProcessorError> {
        let dir = partition_index_dir(root, partition);
        std::fs::create_dir_all(&dir).map_err(|source| ProcessorError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let fields = IndexFields::new();
        let directory = tantivy::directory::MmapDirectory::open(&dir)
            .map_err(|error| ProcessorError::index(&dir, error))?;
        let index = Index::open_or_create(directory, fields.schema.clone())
            .map_err(|error| ProcessorError::index(&dir, error))?;
        let payload =
            CommitPayload::of(&index).map_err(|error| ProcessorError::index(&dir, error))?;
        let started = Instant::now();
        let writer = loop {
            match index.writer_with_num_threads(1, writer_memory_mb * 1024 * 1024) {
                Ok(writer) => break writer,
                Err(TantivyError::LockFailure(..)) if started.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(error) => return Err(ProcessorError::index(&dir, error)),
            }
        };
        let mut indexer = Indexer {
            partition,
            dir,
            fields,
            writer,
            added_log_size: 0,
            committed_log_size: 0,
            commit_interval,
            last_commit: Instant::now(),
        };
        match payload {
            Some(payload) if payload.schema_version == SCHEMA_VERSION => {
                indexer.added_log_size = payload.log_size;
                indexer.committed_log_size = payload.log_size;
            }
            Some(_) => indexer.reset()?,
            None => {}
        }
        Ok(indexer)
    }

    /// Log entries the index holds as of its last commit.
    pub fn committed_log_size(&self) -> u64 {
        self.committed_log_size
    }

    /// Log entries covered by the documents added so far.
    pub fn added_log_size(&self) -> u64 {
        self.added_log_size
    }

    pub fn fields(&self) -> &IndexFields {
        &self.fields
    }

    /// Drops every document (the index is ahead of its log, or being rebuilt).
    pub fn reset(&mut self) -> Result<(), ProcessorError> {
        self.writer
            .delete_all_documents()
            .map_err(|error| ProcessorError::index(&self.dir, error))?;
        self.added_log_size = 0;
        self.commit()
    }

    /// Adds the documents of log entries `added_log_size..log_size_after`. Blocking when
    /// tantivy's indexing queue is full.
    pub fn add(
        &mut self,
        documents: Vec<TantivyDocument>,
        log_size_after: u64,
    ) -> Result<(), ProcessorError> {
        // A mismatch would put documents at the wrong log positions, or miss some for good:
        // the next commit payload would claim entries the index does not hold.
        let expected = self.added_log_size + documents.len() as u64;
        if expected != log_size_after {
            return Err(ProcessorError::index(
                &self.dir,
                format!(
                    "documents must follow the log without gaps: the index covers {} entries, {} documents were added, but the log has {log_size_after}",
                    self.added_log_size,
                    documents.len()
                ),
            ));
        }
        for document in documents {
            self.writer
                .add_document(document)
                .map_err(|error| ProcessorError::index(&self.dir, error))?;
        }
        self.added_log_size = log_size_after;
        Ok(())
    }

    /// Whether the commit interval has passed since the last commit and there is something to
    /// commit.
    pub fn commit_due(&self) -> bool {
        self.last_commit.elapsed() >= self.commit_interval
            && self.added_log_size != self.committed_log_size
    }

    /// Commits what was added, recording the covered log size in the payload. Blocking.
    pub fn commit(&mut self) -> Result<(), ProcessorError> {
        let started = Instant::now();
        let payload = CommitPayload {
            schema_version: SCHEMA_VERSION,
            partition: self.partition,
            log_size: self.added_log_size,
        };
        let payload = serde_json::to_string(&payload)
            .map_err(|error| ProcessorError::index(&self.dir, error))?;
        let mut prepared = self
            .writer
            .prepare_commit()
            .map_err(|error| ProcessorError::index(&self.dir, error))?;
        prepared.set_payload(&payload);
        prepared
            .commit()
            .map_err(|error| ProcessorError::index(&self.dir, error))?;
        self.committed_log_size = self.added_log_size;
        self.last_commit = Instant::now();
        metrics::histogram!("callproof_processor_index_commit_seconds")
            .record(started.elapsed().as_secs_f64());
        tracing::debug!(
            partition = self.partition,
            log_size = self.committed_log_size,
            "index committed"
        );
        Ok(())
    }
}

/// Indexes the log entries beyond what `indexer` covers, up to `tree_size`, then commits.
/// An index that claims more entries than the log has is rebuilt from scratch.
pub async fn catch_up(
    mut indexer: Indexer,
    reader: &LogReader,
    store: &Arc<dyn ObjectStore>,
    tree_size: u64,
) -> Result<Indexer, ProcessorError> {
    let partition = indexer.partition;
    if indexer.added_log_size > tree_size {
        tracing::warn!(
            partition,
            index_size = indexer.added_log_size,
            tree_size,
            "index is ahead of its log; rebuilding it"
        );
        indexer = blocking(move || indexer.reset().map(|()| indexer)).await?;
    }
    let from = indexer.added_log_size;
    if from == tree_size {
        return Ok(indexer);
    }
    tracing::info!(
        partition,
        from,
        to = tree_size,
        "indexing log entries beyond the index"
    );
    let started = Instant::now();
    let mut next = from;
    while next < tree_size {
        let end = (next + CATCH_UP_CHUNK).min(tree_size);
        let entries = read_entries(reader, store, partition, next, end, tree_size).await?;
        indexer = blocking(move || {
            let documents = entries
                .iter()
                .enumerate()
                .map(|(offset, entry)| {
                    indexer
                        .fields
                        .document(entry, partition, next + offset as u64)
                })
                .collect();
            indexer.add(documents, end).map(|()| indexer)
        })
        .await?;
        next = end;
        if started.elapsed() > Duration::from_secs(1) {
            tracing::info!(
                partition,
                indexed = next,
                of = tree_size,
                "indexing from the log"
            );
        }
    }
    indexer = blocking(move || indexer.commit().map(|()| indexer)).await?;
    Ok(indexer)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ProcessorError> + Send + 'static,
) -> Result<T, ProcessorError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ProcessorError::task)?
}
