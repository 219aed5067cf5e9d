//! The indexer: turns each partition's log into search index splits in the object store.
//!
//! The log is its only input. For each partition it follows the checkpoint: once the log holds
//! entries beyond the published splits' end (the cover, `callproof_evidence_format::split`), it
//! reads them with the same code `reindex` uses ([`read_entries`]), builds their documents
//! ([`IndexFields::document`]) into a tantivy index in a local scratch directory, bundles it
//! into one split object, uploads it with one PUT and then publishes it with a create-only
//! marker. A split is therefore searchable only once it is complete and published, and an
//! indexer only publishes a split that starts where the cover it has just listed ends, so two
//! indexers racing on one partition never make an entry searchable twice (the readers' cover
//! takes one of two splits starting at the same entry).
//!
//! In the background of the same loop, [`merge_policy`] merges `merge_factor` adjacent splits
//! of one level into one of the next (a merged split is published, then its sources are marked
//! for deletion), and [`collect_garbage`] deletes what was marked longer than the grace period
//! ago (and the objects of splits that were never published, once as old), so no reader that
//! listed the splits before the merge can still need them.
//!
//! It runs in `callproof-processor` for the partitions the processor owns (a task of its own:
//! anchoring never waits for it) or as `callproof-indexer`, on any host that reaches the store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use callproof_config::IndexConfig;
use callproof_evidence_format::FormatError;
use callproof_evidence_format::index_schema::{IndexFields, SCHEMA_VERSION};
use callproof_evidence_format::split::{
    PartitionListing, SplitId, list_partition, open_split, pack_split,
};
use callproof_evidence_format::store::{log_prefix, read_entries};
use callproof_tlog::note::NoteVerifier;
use callproof_tlog::store::LogReader;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use rand::Rng as _;
use tantivy::schema::TantivyDocument;
use tantivy::{Index, IndexWriter};

/// Everything that stops an indexer step. Messages name the thing and never quote event data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexerError {
    #[error(transparent)]
    Format(#[from] FormatError),
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
    #[error("building split {split}: {reason}")]
    Build { split: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("a worker task failed: {0}")]
    Task(String),
}

impl IndexerError {
    fn store(path: &object_store::path::Path, source: object_store::Error) -> Self {
        IndexerError::Store {
            path: path.to_string(),
            source,
        }
    }

    fn build(split: &SplitId, reason: impl std::fmt::Display) -> Self {
        IndexerError::Build {
            split: split.name(),
            reason: reason.to_string(),
        }
    }
}

/// How the indexer works, from `[index]`.
#[derive(Clone, Debug)]
pub struct Settings {
    pub scratch_dir: PathBuf,
    pub split_interval: Duration,
    pub split_max_entries: u64,
    pub writer_memory_mb: usize,
    pub merge_factor: usize,
    pub merge_max_entries: u64,
    pub gc_grace: Duration,
}

impl From<&IndexConfig> for Settings {
    fn from(config: &IndexConfig) -> Settings {
        Settings {
            scratch_dir: config.scratch_dir.clone(),
            split_interval: Duration::from_millis(config.split_interval_ms),
            split_max_entries: config.split_max_entries,
            writer_memory_mb: config.writer_memory_mb,
            merge_factor: config.merge_factor,
            merge_max_entries: config.merge_max_entries,
            gc_grace: Duration::from_secs(config.gc_grace_secs),
        }
    }
}

/// Creates the scratch directory and empties it: nothing in it outlives a run.
pub fn prepare_scratch(dir: &Path) -> Result<(), IndexerError> {
    let io = |source| IndexerError::Io {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    for entry in std::fs::read_dir(dir).map_err(io)?.flatten() {
        let path = entry.path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(error) = removed {
            tracing::warn!(path = %path.display(), %error, "cannot clear the index scratch directory");
        }
    }
    Ok(())
}

/// What one step of a partition's indexer did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// The log's size at its checkpoint.
    pub log_size: u64,
    /// How many entries are searchable (the cover's end) after the step.
    pub searchable: u64,
    /// A split of new entries was published.
    pub indexed: bool,
    /// A merged split was published.
    pub merged: bool,
    /// Objects deleted by the garbage collection.
    pub deleted: usize,
}

/// The indexer of one partition.
pub struct PartitionIndexer {
    partition: i32,
    store: Arc<dyn ObjectStore>,
    reader: LogReader,
    settings: Settings,
}

impl PartitionIndexer {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        verifier: NoteVerifier,
        partition: i32,
        settings: Settings,
    ) -> PartitionIndexer {
        PartitionIndexer {
            partition,
            reader: LogReader::new(store.clone(), log_prefix(partition), verifier),
            store,
            settings,
        }
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Follows the log until cancelled (dropped): a step every `split_interval`, at once again
    /// while it is behind. A failed step is logged and tried again: the index is derived, and
    /// nothing is published half-done.
    pub async fn run(self) {
        let partition = self.partition;
        tracing::info!(partition, "indexing the partition's log");
        loop {
            let started = Instant::now();
            let behind = match self.step().await {
                Ok(step) => step.searchable < step.log_size,
                Err(error) => {
                    metrics::counter!("callproof_indexer_failures_total").increment(1);
                    tracing::warn!(partition, %error, "indexing step failed; trying again");
                    false
                }
            };
            if !behind {
                tokio::time::sleep(
                    self.settings
                        .split_interval
                        .saturating_sub(started.elapsed()),
                )
                .await;
            }
        }
    }

    /// One round: a split of the entries the log has beyond the cover (at most
    /// `split_max_entries` of them), then a merge if one is due, then the garbage collection.
    pub async fn step(&self) -> Result<Step, IndexerError> {
        let partition = self.partition;
        let log_size = match self.reader.checkpoint().await {
            Ok(checkpoint) => checkpoint.checkpoint.size,
            // No log yet: nothing to index.
            Err(callproof_tlog::Error::Missing(_)) => 0,
            Err(source) => return Err(IndexerError::Log { partition, source }),
        };
        let listing = list_partition(&self.store, partition).await?;
        let (_, covered) = listing.cover();
        let mut step = Step {
            log_size,
            searchable: covered,
            ..Step::default()
        };
        if covered > log_size {
            tracing::warn!(
                partition,
                covered,
                log_size,
                "the published splits cover more entries than the log holds; run `callproof-processor reindex`"
            );
        } else if covered < log_size {
            let end = log_size.min(covered + self.settings.split_max_entries);
            self.index_range(covered, end, log_size, 0).await?;
            step.indexed = true;
            step.searchable = end;
        }
        let listing = if step.indexed {
            list_partition(&self.store, partition).await?
        } else {
            listing
        };
        if let Some(sources) = merge_policy(&listing, &self.settings) {
            self.merge(&sources).await?;
            step.merged = true;
        }
        let listing = if step.merged {
            list_partition(&self.store, partition).await?
        } else {
            listing
        };
        step.deleted = collect_garbage(&self.store, &listing, self.settings.gc_grace).await?;
        let label = partition.to_string();
        metrics::gauge!("callproof_indexer_searchable_entries", "partition" => label.clone())
            .set(step.searchable as f64);
        metrics::gauge!("callproof_indexer_lag_entries", "partition" => label)
            .set(log_size.saturating_sub(step.searchable) as f64);
        Ok(step)
    }

    /// Builds, uploads and publishes the split of log entries `start..end`.
    async fn index_range(
        &self,
        start: u64,
        end: u64,
        log_size: u64,
        level: u32,
    ) -> Result<SplitId, IndexerError> {
        let started = Instant::now();
        let partition = self.partition;
        let entries = read_entries(&self.reader, &self.store, partition, start, end, log_size)
            .await
            .map_err(IndexerError::from)?;
        let split = new_split_id(partition, start, end, level);
        let (scratch, memory) = (
            self.settings.scratch_dir.clone(),
            self.settings.writer_memory_mb,
        );
        let building = split.clone();
        let bytes = blocking(move || {
            let fields = IndexFields::new();
            let documents = entries
                .iter()
                .enumerate()
                .map(|(offset, entry)| fields.document(entry, partition, start + offset as u64));
            build_split(&scratch, &building, documents, memory)
        })
        .await?;
        upload_and_publish(&self.store, &split, bytes).await?;
        metrics::counter!("callproof_indexer_splits_published_total", "kind" => "new").increment(1);
        metrics::counter!("callproof_indexer_entries_indexed_total").increment(end - start);
        metrics::histogram!("callproof_indexer_split_seconds")
            .record(started.elapsed().as_secs_f64());
        tracing::debug!(partition, start, end, "split published");
        Ok(split)
    }

    /// Merges `sources` (adjacent, on the cover) into one split of the next level, publishes
    /// it, then marks the sources that are no longer on the cover for deletion.
    async fn merge(&self, sources: &[SplitId]) -> Result<SplitId, IndexerError> {
        let (Some(first), Some(last)) = (sources.first(), sources.last()) else {
            return Err(IndexerError::Task("a merge of no split".into()));
        };
        let level = sources.iter().map(|split| split.level).max().unwrap_or(0) + 1;
        let merged = new_split_id(self.partition, first.start, last.end, level);
        let work = tempfile::TempDir::new_in(&self.settings.scratch_dir).map_err(|source| {
            IndexerError::Io {
                path: self.settings.scratch_dir.display().to_string(),
                source,
            }
        })?;
        let mut paths = Vec::with_capacity(sources.len());
        for source in sources {
            let path = work.path().join(format!("{}.split", source.name()));
            download(&self.store, source, &path).await?;
            paths.push((path, source.clone()));
        }
        let target = merged.clone();
        let work_dir = work.path().to_path_buf();
        let bytes = blocking(move || merge_splits(&work_dir, &paths, &target)).await?;
        drop(work);
        upload_and_publish(&self.store, &merged, bytes).await?;
        let listing = list_partition(&self.store, self.partition).await?;
        let (cover, _) = listing.cover();
        for source in sources {
            if !cover.contains(source) {
                mark_deleted(&self.store, source).await?;
            }
        }
        metrics::counter!("callproof_indexer_splits_published_total", "kind" => "merge")
            .increment(1);
        tracing::info!(
            partition = self.partition,
            start = merged.start,
            end = merged.end,
            level,
            sources = sources.len(),
            "splits merged"
        );
        Ok(merged)
    }
}

/// The splits to merge next, if any: the oldest run of `merge_factor` adjacent splits of the
/// cover that have the same level and fewer than `merge_max_entries` entries each. Splits
/// built from the log are level 0 and a merge's is one more than its sources', so every entry
/// is rewritten once per level (log base `merge_factor` of the partition's size), and a split
/// of `merge_max_entries` or more is never merged again.
pub fn merge_policy(listing: &PartitionListing, settings: &Settings) -> Option<Vec<SplitId>> {
    let (cover, _) = listing.cover();
    let factor = settings.merge_factor.max(2);
    let mut run: Vec<SplitId> = Vec::new();
    for split in cover {
        let fits = split.entries() < settings.merge_max_entries;
        let continues = run.last().is_some_and(|last| last.level == split.level);
        if !fits {
            run.clear();
            continue;
        }
        if !continues {
            run.clear();
        }
        run.push(split);
        if run.len() == factor {
            return Some(run);
        }
    }
    None
}

/// Deletes what the grace period allows and marks the splits no reader should search any more.
///
/// - A split marked for deletion longer than `grace` ago: its publication marker, then its
///   object, then the mark.
/// - A published split that is not on the cover and ends within it (a racing indexer's, or a
///   merge's source whose mark was not written): marked now.
/// - A split object never published, written longer than `grace` ago (an indexer that died
///   between upload and publication, or lost a race): deleted.
///
/// Returns how many objects were deleted.
pub async fn collect_garbage(
    store: &Arc<dyn ObjectStore>,
    listing: &PartitionListing,
    grace: Duration,
) -> Result<usize, IndexerError> {
    let now = now_ms();
    let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
    let mut deleted = 0;
    for (split, marked_at) in &listing.deleted {
        if now.saturating_sub(*marked_at) < grace_ms {
            continue;
        }
        for path in [
            split.published_path(),
            split.object_path(),
            split.deleted_path(),
        ] {
            if delete(store, &path).await? {
                deleted += 1;
            }
        }
        tracing::debug!(split = %split.name(), "replaced split deleted after its grace period");
    }
    let (cover, end) = listing.cover();
    for split in listing.searchable() {
        if split.end <= end && !cover.contains(split) {
            mark_deleted(store, split).await?;
        }
    }
    for (split, (_, written_at)) in &listing.objects {
        let published = listing.published.contains(split);
        if !published
            && !listing.deleted.contains_key(split)
            && now.saturating_sub(*written_at) >= grace_ms
            && delete(store, &split.object_path()).await?
        {
            deleted += 1;
        }
    }
    if deleted > 0 {
        metrics::counter!("callproof_indexer_objects_deleted_total").increment(deleted as u64);
    }
    Ok(deleted)
}

/// Rebuilds a partition's splits from its log alone (`callproof-processor reindex`): new
/// splits of at most `split_max_entries` entries over the whole log, each published as it is
/// built, then every other split marked for deletion. Readers see the old splits, then a mix
/// (always a chain without overlap), then only the new ones; nothing is deleted before the
/// grace period. Returns the entries indexed.
pub async fn rebuild(
    store: Arc<dyn ObjectStore>,
    verifier: NoteVerifier,
    partition: i32,
    settings: Settings,
) -> Result<u64, IndexerError> {
    let indexer = PartitionIndexer::new(store.clone(), verifier, partition, settings);
    let log_size = indexer
        .reader
        .checkpoint()
        .await
        .map_err(|source| IndexerError::Log { partition, source })?
        .checkpoint
        .size;
    let mut built = Vec::new();
    let mut start = 0;
    while start < log_size {
        let end = log_size.min(start + indexer.settings.split_max_entries);
        built.push(indexer.index_range(start, end, log_size, 0).await?);
        start = end;
    }
    let listing = list_partition(&store, partition).await?;
    for split in listing.searchable() {
        if !built.contains(split) {
            mark_deleted(&store, split).await?;
        }
    }
    Ok(log_size)
}

/// A new split's id: its range and level, and a random part of its own.
fn new_split_id(partition: i32, start: u64, end: u64, level: u32) -> SplitId {
    SplitId {
        partition,
        start,
        end,
        level,
        id: format!("{:016x}", rand::thread_rng().r#gen::<u64>()),
    }
}

/// Builds a split of `documents` in a temporary directory under `scratch` and returns the
/// split object's bytes. Blocking.
pub fn build_split(
    scratch: &Path,
    split: &SplitId,
    documents: impl Iterator<Item = TantivyDocument>,
    writer_memory_mb: usize,
) -> Result<Vec<u8>, IndexerError> {
    let fail = |reason: String| IndexerError::build(split, reason);
    std::fs::create_dir_all(scratch).map_err(|source| IndexerError::Io {
        path: scratch.display().to_string(),
        source,
    })?;
    let dir = tempfile::TempDir::new_in(scratch).map_err(|source| IndexerError::Io {
        path: scratch.display().to_string(),
        source,
    })?;
    let fields = IndexFields::new();
    let index = Index::create_in_dir(dir.path(), fields.schema.clone())
        .map_err(|error| fail(error.to_string()))?;
    let mut writer: IndexWriter<TantivyDocument> = index
        .writer_with_num_threads(1, writer_memory_mb.max(15) * 1024 * 1024)
        .map_err(|error| fail(error.to_string()))?;
    for document in documents {
        writer
            .add_document(document)
            .map_err(|error| fail(error.to_string()))?;
    }
    writer.commit().map_err(|error| fail(error.to_string()))?;
    // One segment per split: a search opens fewer files, and a merge has less to do.
    let segments = index
        .searchable_segment_ids()
        .map_err(|error| fail(error.to_string()))?;
    if segments.len() > 1 {
        writer
            .merge(&segments)
            .wait()
            .map_err(|error| fail(error.to_string()))?;
    }
    writer
        .wait_merging_threads()
        .map_err(|error| fail(error.to_string()))?;
    pack_split(dir.path(), &index, split, SCHEMA_VERSION).map_err(IndexerError::from)
}

/// Merges the split objects `sources` (each downloaded to its path) into one split `target` (built in `work`). Blocking.
fn merge_splits(
    work: &Path,
    sources: &[(PathBuf, SplitId)],
    target: &SplitId,
) -> Result<Vec<u8>, IndexerError> {
    let fail = |reason: String| IndexerError::build(target, reason);
    let indexes = sources
        .iter()
        .map(|(path, split)| open_split(path, split).map(|(index, _)| index))
        .collect::<Result<Vec<_>, _>>()?;
    let out = work.join("merged");
    std::fs::create_dir_all(&out).map_err(|source| IndexerError::Io {
        path: out.display().to_string(),
        source,
    })?;
    let directory =
        tantivy::directory::MmapDirectory::open(&out).map_err(|error| fail(error.to_string()))?;
    let merged = tantivy::indexer::merge_indices(&indexes, directory)
        .map_err(|error| fail(error.to_string()))?;
    pack_split(&out, &merged, target, SCHEMA_VERSION).map_err(IndexerError::from)
}

/// Uploads a split object with one PUT, then publishes it with a create-only marker: a reader
/// never sees a split that is not whole.
pub async fn upload_and_publish(
    store: &Arc<dyn ObjectStore>,
    split: &SplitId,
    bytes: Vec<u8>,
) -> Result<(), IndexerError> {
    let object = split.object_path();
    store
        .put_opts(
            &object,
            PutPayload::from(bytes::Bytes::from(bytes)),
            PutOptions::from(PutMode::Create),
        )
        .await
        .map_err(|source| IndexerError::store(&object, source))?;
    publish(store, split).await
}

/// Publishes a split whose object is complete.
pub async fn publish(store: &Arc<dyn ObjectStore>, split: &SplitId) -> Result<(), IndexerError> {
    create_marker(store, &split.published_path()).await
}

/// Marks a published split for deletion: readers stop searching it at their next listing, and
/// the garbage collection deletes it after the grace period.
pub async fn mark_deleted(
    store: &Arc<dyn ObjectStore>,
    split: &SplitId,
) -> Result<(), IndexerError> {
    create_marker(store, &split.deleted_path()).await
}

async fn create_marker(
    store: &Arc<dyn ObjectStore>,
    path: &object_store::path::Path,
) -> Result<(), IndexerError> {
    match store
        .put_opts(
            path,
            PutPayload::default(),
            PutOptions::from(PutMode::Create),
        )
        .await
    {
        // Someone (another indexer's garbage collection) wrote the same marker: same meaning.
        Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
        Err(source) => Err(IndexerError::store(path, source)),
    }
}

/// Deletes an object; `false` if it was already gone.
async fn delete(
    store: &Arc<dyn ObjectStore>,
    path: &object_store::path::Path,
) -> Result<bool, IndexerError> {
    match store.delete(path).await {
        Ok(()) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(source) => Err(IndexerError::store(path, source)),
    }
}

/// Downloads a split object to `path`.
pub async fn download(
    store: &Arc<dyn ObjectStore>,
    split: &SplitId,
    path: &Path,
) -> Result<(), IndexerError> {
    let object = split.object_path();
    let bytes = store
        .get(&object)
        .await
        .map_err(|source| IndexerError::store(&object, source))?
        .bytes()
        .await
        .map_err(|source| IndexerError::store(&object, source))?;
    tokio::fs::write(path, &bytes)
        .await
        .map_err(|source| IndexerError::Io {
            path: path.display().to_string(),
            source,
        })
}

/// The partitions that have a log under `logs/`.
pub async fn log_partitions(store: &Arc<dyn ObjectStore>) -> Result<Vec<i32>, IndexerError> {
    let prefix = object_store::path::Path::from("logs");
    let listing = store
        .list_with_delimiter(Some(&prefix))
        .await
        .map_err(|source| IndexerError::store(&prefix, source))?;
    let mut partitions: Vec<i32> = listing
        .common_prefixes
        .iter()
        .filter_map(|prefix| prefix.filename()?.parse().ok())
        .collect();
    partitions.sort_unstable();
    Ok(partitions)
}

/// Indexers for a changing set of partitions, each its own task (the processor's, as its
/// partitions are assigned and revoked).
pub struct Indexers {
    store: Arc<dyn ObjectStore>,
    verifier: NoteVerifier,
    settings: Settings,
    running: BTreeMap<i32, tokio::task::JoinHandle<()>>,
}

impl Indexers {
    pub fn new(store: Arc<dyn ObjectStore>, verifier: NoteVerifier, settings: Settings) -> Self {
        Indexers {
            store,
            verifier,
            settings,
            running: BTreeMap::new(),
        }
    }

    /// Starts indexing `partition` (if not already).
    pub fn start(&mut self, partition: i32) {
        if self.running.contains_key(&partition) {
            return;
        }
        let indexer = PartitionIndexer::new(
            self.store.clone(),
            self.verifier.clone(),
            partition,
            self.settings.clone(),
        );
        self.running.insert(partition, tokio::spawn(indexer.run()));
    }

    /// Stops indexing `partition`. A split being built is dropped; one being published is whole
    /// or not there, so stopping at any point is safe.
    pub fn stop(&mut self, partition: i32) {
        if let Some(handle) = self.running.remove(&partition) {
            handle.abort();
        }
    }

    pub fn partitions(&self) -> Vec<i32> {
        self.running.keys().copied().collect()
    }
}

impl Drop for Indexers {
    fn drop(&mut self) {
        for handle in self.running.values() {
            handle.abort();
        }
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, IndexerError> + Send + 'static,
) -> Result<T, IndexerError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| IndexerError::Task(error.to_string()))?
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
