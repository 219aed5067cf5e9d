//! Indexer: adds each partition's entries to its tantivy index.
//!
//! The writer is kept open between batches (documents go to tantivy's indexing thread as they
//! come) and commits at most every `index.commit_interval_ms`, on revocation and on shutdown:
//! few large commits. Each commit's payload ([`CommitPayload`]) records how many log entries
//! the index covers. Documents added after the last commit are lost if the process dies, and
//! the log entries beyond the payload's size are indexed again on the next open, so the index
//! never misses an entry nor holds one twice.
//!
//! An index written with other fields or another schema version (an upgrade) is renamed to
//! `<partition>.set-aside-<unix seconds>` beside the partitions and rebuilt from the log, at
//! open, by the same catch-up that follows the log: the processor and `reindex` start on it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callproof_tlog::store::LogReader;
use callproof_tlog::tile::TILE_WIDTH;
use object_store::ObjectStore;
use tantivy::schema::TantivyDocument;
use tantivy::{Index, IndexSettings, IndexWriter, TantivyError};

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
    ///
    /// An index this version cannot continue (written with other fields or another
    /// [`SCHEMA_VERSION`], or holding documents with no payload saying which entries they
    /// are) is set aside and a new one created in its place: it then covers no entry, so
    /// [`catch_up`] rebuilds it from the log, as `reindex` does.
    pub fn open(
        root: &Path,
        partition: i32,
        writer_memory_mb: usize,
        commit_interval: Duration,
    ) -> Result<Indexer, ProcessorError> {
        let dir = partition_index_dir(root, partition);
        let fields = IndexFields::new();
        let (writer, payload) = match open_writer(&dir, &fields, writer_memory_mb)? {
            Opened::Current { writer, payload } => (writer, payload),
            Opened::Stale { writer, reason } => {
                // Holding its writer lock proves the previous owner let go: moving the
                // directory while it still wrote would have it write into the new index.
                drop(writer);
                let aside = set_aside(root, partition, &dir)?;
                tracing::warn!(
                    partition,
                    %reason,
                    set_aside = %aside.display(),
                    "the partition's index cannot be continued by this version; set it aside and rebuilding it from the log (delete the old one once no older processor may need it)"
                );
                match open_writer(&dir, &fields, writer_memory_mb)? {
                    Opened::Current { writer, payload } => (writer, payload),
                    Opened::Stale { reason, .. } => {
                        return Err(ProcessorError::index(
                            &dir,
                            format!("the index created in place of a stale one is stale: {reason}"),
                        ));
                    }
                }
            }
        };
        let covered = payload.map_or(0, |payload| payload.log_size);
        Ok(Indexer {
            partition,
            dir,
            fields,
            writer,
            added_log_size: covered,
            committed_log_size: covered,
            commit_interval,
            last_commit: Instant::now(),
        })
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

/// A partition's index opened for writing.
enum Opened {
    /// Written by this schema: the payload (none for a new index) says what it covers.
    Current {
        writer: IndexWriter<TantivyDocument>,
        payload: Option<CommitPayload>,
    },
    /// Written by another schema, or unknown coverage: to be set aside and rebuilt.
    Stale {
        writer: IndexWriter<TantivyDocument>,
        reason: String,
    },
}

/// Opens the index in `dir` (creating it if there is none) with whatever schema it was written
/// with, and takes its writer lock.
fn open_writer(
    dir: &Path,
    fields: &IndexFields,
    writer_memory_mb: usize,
) -> Result<Opened, ProcessorError> {
    std::fs::create_dir_all(dir).map_err(|source| ProcessorError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let directory = tantivy::directory::MmapDirectory::open(dir)
        .map_err(|error| ProcessorError::index(dir, error))?;
    // Not `Index::open_or_create`: it refuses an index whose fields differ, before the
    // version could be read and the index rebuilt.
    let index = if Index::exists(&directory).map_err(|error| ProcessorError::index(dir, error))? {
        Index::open(directory).map_err(|error| ProcessorError::index(dir, error))?
    } else {
        Index::create(directory, fields.schema.clone(), IndexSettings::default())
            .map_err(|error| ProcessorError::index(dir, error))?
    };
    let payload = CommitPayload::of(&index).map_err(|error| ProcessorError::index(dir, error))?;
    let stale = if index.schema() != fields.schema {
        Some(format!(
            "its fields differ from this version's (schema version {})",
            payload
                .as_ref()
                .map_or_else(|| "unknown".to_string(), |p| p.schema_version.to_string())
        ))
    } else {
        match &payload {
            Some(payload) if payload.schema_version != SCHEMA_VERSION => Some(format!(
                "it was written with schema version {}, this version writes {SCHEMA_VERSION}",
                payload.schema_version
            )),
            Some(_) => None,
            // Without a payload, documents it holds would be added again from the log.
            None if !index
                .searchable_segment_metas()
                .map_err(|error| ProcessorError::index(dir, error))?
                .is_empty() =>
            {
                Some("it holds documents but no commit payload says which log entries".into())
            }
            None => None,
        }
    };
    let started = Instant::now();
    let writer = loop {
        match index.writer_with_num_threads(1, writer_memory_mb * 1024 * 1024) {
            Ok(writer) => break writer,
            Err(TantivyError::LockFailure(..)) if started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(error) => return Err(ProcessorError::index(dir, error)),
        }
    };
    Ok(match stale {
        None => Opened::Current { writer, payload },
        Some(reason) => Opened::Stale { writer, reason },
    })
}

/// Moves a stale index out of the way, to `<partition>.set-aside-<unix seconds>` beside it (a
/// name the evidence API does not take for a partition), so an older processor put back in
/// service can be given it again instead of rebuilding. Renaming, not deleting: a crash
/// halfway leaves either the whole old index or none at the partition's path.
fn set_aside(root: &Path, partition: i32, dir: &Path) -> Result<PathBuf, ProcessorError> {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let mut aside = root.join(format!("{partition}.set-aside-{seconds}"));
    let mut attempt = 1;
    while aside.exists() {
        aside = root.join(format!("{partition}.set-aside-{seconds}-{attempt}"));
        attempt += 1;
    }
    std::fs::rename(dir, &aside).map_err(|source| ProcessorError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    Ok(aside)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ProcessorError> + Send + 'static,
) -> Result<T, ProcessorError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ProcessorError::task)?
}
