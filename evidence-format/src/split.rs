//! The search index as immutable splits in the object store, beside the logs.
//!
//! A split is a tantivy index of a contiguous range `[start, end)` of one partition's log
//! entries, bundled into a single object (the index files one after another, then a JSON
//! [`SplitManifest`] saying where each file is, its length and a magic number), so that one PUT
//! writes it whole and one GET fetches it. The layout under the store, per partition `p`:
//!
//! | object | written | means |
//! |---|---|---|
//! | `index/<p>/splits/<name>.split` | once, whole, by the indexer that built it | the split |
//! | `index/<p>/published/<name>` | create-only, after the split object is complete | the split may be searched |
//! | `index/<p>/deleted/<name>` | create-only, when a merge or a rebuild replaced it | it must no longer be searched; removed after the grace period |
//!
//! `<name>` is `<start:020>-<end:020>-<level>-<id>`: the range, the merge level (0 for a split
//! built from the log, one more than its sources for a merged one) and a random id, so that two
//! indexers building the same range never write the same object.
//!
//! **The cover.** Readers search only the published, not deleted splits that form a chain from
//! entry 0 ([`cover`]): at each position the split starting there that leads furthest (then the
//! longest, then the smallest id), and so on from its end. Two indexers racing on a partition (a
//! rebalance where the old owner is slow) may both publish a split starting at the same
//! position; the cover takes one of them, so no entry is ever searched twice, and an indexer
//! only publishes splits starting at the end of the cover it has just read. The cover's end is
//! how much of the log is searchable.
//!
//! No writing to the store here: the indexer writes splits, the evidence API reads them.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt as _;
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};
use tantivy::Index;
use tantivy::directory::error::{DeleteError, LockError, OpenReadError, OpenWriteError};
use tantivy::directory::{
    Directory, DirectoryLock, FileHandle, FileSlice, Lock, WatchCallback, WatchHandle, WritePtr,
};

use crate::FormatError;

/// The object-store prefix under which every partition's splits live.
pub const INDEX_PREFIX: &str = "index";

/// Ends every split object.
const MAGIC: &[u8; 8] = b"CPSPLIT1";

/// The version of the split object's layout.
pub const SPLIT_FORMAT: u32 = 1;

/// One split, as named in the store.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SplitId {
    pub partition: i32,
    /// The first log entry the split covers.
    pub start: u64,
    /// One past the last log entry it covers.
    pub end: u64,
    /// 0 for a split built from the log; a merge's is one more than its sources' highest.
    pub level: u32,
    /// Random, so that two indexers building the same range write different objects.
    pub id: String,
}

impl SplitId {
    /// `<start:020>-<end:020>-<level>-<id>`.
    pub fn name(&self) -> String {
        format!(
            "{:020}-{:020}-{}-{}",
            self.start, self.end, self.level, self.id
        )
    }

    pub fn parse(partition: i32, name: &str) -> Option<SplitId> {
        let mut parts = name.splitn(4, '-');
        let start = parts.next()?.parse().ok()?;
        let end = parts.next()?.parse().ok()?;
        let level = parts.next()?.parse().ok()?;
        let id = parts.next()?;
        (end > start && !id.is_empty() && !id.contains('/')).then(|| SplitId {
            partition,
            start,
            end,
            level,
            id: id.to_string(),
        })
    }

    /// How many log entries it covers.
    pub fn entries(&self) -> u64 {
        self.end - self.start
    }

    pub fn object_path(&self) -> object_store::path::Path {
        object_store::path::Path::from(format!(
            "{INDEX_PREFIX}/{}/splits/{}.split",
            self.partition,
            self.name()
        ))
    }

    pub fn published_path(&self) -> object_store::path::Path {
        object_store::path::Path::from(format!(
            "{INDEX_PREFIX}/{}/published/{}",
            self.partition,
            self.name()
        ))
    }

    pub fn deleted_path(&self) -> object_store::path::Path {
        object_store::path::Path::from(format!(
            "{INDEX_PREFIX}/{}/deleted/{}",
            self.partition,
            self.name()
        ))
    }
}

/// What the store holds of one partition's index, as listed.
#[derive(Clone, Debug, Default)]
pub struct PartitionListing {
    /// Split objects, with their size in bytes and when they were written (ms since the epoch).
    pub objects: BTreeMap<SplitId, (u64, i64)>,
    pub published: Vec<SplitId>,
    /// Splits marked for deletion, with when they were marked (ms since the epoch).
    pub deleted: BTreeMap<SplitId, i64>,
}

impl PartitionListing {
    /// The published splits that are not marked for deletion and whose object is present.
    pub fn searchable(&self) -> impl Iterator<Item = &SplitId> {
        self.published
            .iter()
            .filter(|split| !self.deleted.contains_key(*split) && self.objects.contains_key(*split))
    }

    /// The chain of splits readers search, and its end ([`cover`]).
    pub fn cover(&self) -> (Vec<SplitId>, u64) {
        cover(self.searchable())
    }

    /// The size in bytes of a split's object.
    pub fn object_bytes(&self, split: &SplitId) -> Option<u64> {
        self.objects.get(split).map(|(bytes, _)| *bytes)
    }
}

/// Lists every partition's splits (one listing of `index/`).
pub async fn list_index(
    store: &Arc<dyn ObjectStore>,
) -> Result<BTreeMap<i32, PartitionListing>, FormatError> {
    list_under(store, INDEX_PREFIX.to_string()).await
}

/// Lists one partition's splits.
pub async fn list_partition(
    store: &Arc<dyn ObjectStore>,
    partition: i32,
) -> Result<PartitionListing, FormatError> {
    Ok(list_under(store, format!("{INDEX_PREFIX}/{partition}"))
        .await?
        .remove(&partition)
        .unwrap_or_default())
}

async fn list_under(
    store: &Arc<dyn ObjectStore>,
    prefix: String,
) -> Result<BTreeMap<i32, PartitionListing>, FormatError> {
    let prefix = object_store::path::Path::from(prefix);
    let metas: Vec<object_store::ObjectMeta> = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|source| FormatError::Store {
            path: prefix.to_string(),
            source,
        })?;
    let mut partitions: BTreeMap<i32, PartitionListing> = BTreeMap::new();
    for meta in metas {
        let parts: Vec<&str> = meta.location.as_ref().split('/').collect();
        let [INDEX_PREFIX, partition, kind, name] = parts.as_slice() else {
            continue;
        };
        let Ok(partition) = partition.parse::<i32>() else {
            continue;
        };
        let listing = partitions.entry(partition).or_default();
        let name = match *kind {
            "splits" => name.strip_suffix(".split"),
            _ => Some(*name),
        };
        let Some(split) = name.and_then(|name| SplitId::parse(partition, name)) else {
            continue;
        };
        match *kind {
            "splits" => {
                listing
                    .objects
                    .insert(split, (meta.size, meta.last_modified.timestamp_millis()));
            }
            "published" => listing.published.push(split),
            "deleted" => {
                listing
                    .deleted
                    .insert(split, meta.last_modified.timestamp_millis());
            }
            _ => {}
        }
    }
    Ok(partitions)
}

/// The chain of splits from entry 0 that readers search, and how many log entries it covers.
///
/// At each position it takes, among the splits starting there, the one from which the chain
/// reaches furthest (so a split added never shortens the cover), then the longest (a merged
/// split over its sources), then the smallest id (every reader picks the same).
pub fn cover<'a>(splits: impl IntoIterator<Item = &'a SplitId>) -> (Vec<SplitId>, u64) {
    let mut by_start: BTreeMap<u64, Vec<&SplitId>> = BTreeMap::new();
    for split in splits {
        by_start.entry(split.start).or_default().push(split);
    }
    // How far a chain starting at each position reaches, computed from the last start back.
    let mut reach: HashMap<u64, u64> = HashMap::new();
    let reach_from = |reach: &HashMap<u64, u64>, position: u64| {
        reach.get(&position).copied().unwrap_or(position)
    };
    for (start, splits) in by_start.iter().rev() {
        let furthest = splits
            .iter()
            .map(|split| reach_from(&reach, split.end))
            .max()
            .unwrap_or(*start);
        reach.insert(*start, furthest);
    }
    let mut chain = Vec::new();
    let mut position = 0;
    while let Some(splits) = by_start.get(&position) {
        let Some(best) = splits.iter().max_by(|a, b| {
            (reach_from(&reach, a.end), a.end)
                .cmp(&(reach_from(&reach, b.end), b.end))
                .then_with(|| b.id.cmp(&a.id))
        }) else {
            break;
        };
        chain.push((*best).clone());
        position = best.end;
    }
    (chain, position)
}

/// Says what a split object holds and where each of its files is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitManifest {
    pub format: u32,
    /// The index schema's version ([`crate::index_schema::SCHEMA_VERSION`] when written).
    pub schema_version: u32,
    pub partition: i32,
    pub start: u64,
    pub end: u64,
    pub level: u32,
    /// `(file name, offset, length)` in the object.
    pub files: Vec<(String, u64, u64)>,
}

/// Bundles the committed tantivy index in `dir` into one split object's bytes.
pub fn pack_split(
    dir: &Path,
    index: &Index,
    split: &SplitId,
    schema_version: u32,
) -> Result<Vec<u8>, FormatError> {
    let bad = |reason: String| FormatError::Split {
        name: split.name(),
        reason,
    };
    let mut names = vec![PathBuf::from("meta.json")];
    let mut segment_files: Vec<PathBuf> = index
        .load_metas()
        .map_err(|error| bad(error.to_string()))?
        .list_segment_files()
        .into_iter()
        .collect();
    segment_files.sort();
    names.extend(segment_files);
    let mut bytes = Vec::new();
    let mut files = Vec::new();
    for name in names {
        let path = dir.join(&name);
        let content = match std::fs::read(&path) {
            Ok(content) => content,
            // A segment lists every file its kind of index may have; some are not written.
            Err(error)
                if error.kind() == io::ErrorKind::NotFound && name != Path::new("meta.json") =>
            {
                continue;
            }
            Err(error) => return Err(bad(format!("cannot read {}: {error}", path.display()))),
        };
        let name = name
            .to_str()
            .ok_or_else(|| bad(format!("file name {} is not UTF-8", name.display())))?
            .to_string();
        files.push((name, bytes.len() as u64, content.len() as u64));
        bytes.extend_from_slice(&content);
    }
    let manifest = SplitManifest {
        format: SPLIT_FORMAT,
        schema_version,
        partition: split.partition,
        start: split.start,
        end: split.end,
        level: split.level,
        files,
    };
    let manifest = serde_json::to_vec(&manifest).map_err(|error| bad(error.to_string()))?;
    bytes.extend_from_slice(&manifest);
    bytes.extend_from_slice(&(manifest.len() as u64).to_le_bytes());
    bytes.extend_from_slice(MAGIC);
    Ok(bytes)
}

/// The split object `split` (downloaded to `path` on local disk) opened as a tantivy index
/// (read-only), with its manifest.
///
/// Refused unless the object is the split its name says: the manifest names the same partition,
/// range and level, and the index holds one document per entry of the range. The name is what
/// the cover is built from, so a split that said one range and held another (misbuilt, or
/// swapped in the store) would make entries searchable twice or not at all.
pub fn open_split(path: &Path, split: &SplitId) -> Result<(Index, SplitManifest), FormatError> {
    let bad = |reason: String| FormatError::Split {
        name: split.name(),
        reason,
    };
    // Memory-mapped: tantivy reads empty ranges of a segment's files, which a plain file handle
    // refuses. The mapping outlives the file's deletion from the cache.
    let (Some(parent), Some(file_name)) = (path.parent(), path.file_name()) else {
        return Err(bad("not a file path".into()));
    };
    let whole = tantivy::directory::MmapDirectory::open(parent)
        .map_err(|error| bad(error.to_string()))?
        .open_read(Path::new(file_name))
        .map_err(|error| bad(error.to_string()))?;
    let length = whole.num_bytes().get_bytes() as usize;
    let tail = 16;
    if length < tail {
        return Err(bad("too short to be a split".into()));
    }
    let footer = whole
        .read_bytes_slice(length - tail..length)
        .map_err(|error| bad(error.to_string()))?;
    if &footer.as_slice()[8..] != MAGIC {
        return Err(bad("not a split object (no magic number)".into()));
    }
    let mut manifest_len = [0u8; 8];
    manifest_len.copy_from_slice(&footer.as_slice()[..8]);
    let manifest_len = usize::try_from(u64::from_le_bytes(manifest_len))
        .ok()
        .filter(|len| *len <= length - tail)
        .ok_or_else(|| bad("bad manifest length".into()))?;
    let manifest_bytes = whole
        .read_bytes_slice(length - tail - manifest_len..length - tail)
        .map_err(|error| bad(error.to_string()))?;
    let manifest: SplitManifest = serde_json::from_slice(manifest_bytes.as_slice())
        .map_err(|error| bad(format!("bad manifest: {error}")))?;
    if manifest.format != SPLIT_FORMAT {
        return Err(bad(format!("split format {} unknown", manifest.format)));
    }
    let data_end = (length - tail - manifest_len) as u64;
    let mut files = HashMap::new();
    for (name, offset, len) in &manifest.files {
        let end = offset
            .checked_add(*len)
            .filter(|end| *end <= data_end)
            .ok_or_else(|| bad(format!("file {name} lies outside the split")))?;
        files.insert(
            PathBuf::from(name),
            whole.slice(*offset as usize..end as usize),
        );
    }
    let directory = SplitDirectory {
        files: Arc::new(files),
    };
    let index = Index::open(directory).map_err(|error| bad(error.to_string()))?;
    let named = (split.partition, split.start, split.end, split.level);
    let held = (
        manifest.partition,
        manifest.start,
        manifest.end,
        manifest.level,
    );
    if held != named {
        return Err(bad(format!(
            "its manifest says partition {}, entries [{}, {}), level {}: not what its name says",
            held.0, held.1, held.2, held.3
        )));
    }
    let documents: u64 = index
        .searchable_segment_metas()
        .map_err(|error| bad(error.to_string()))?
        .iter()
        .map(|segment| u64::from(segment.num_docs()))
        .sum();
    if documents != split.end - split.start {
        return Err(bad(format!(
            "it holds {documents} documents for {} entries",
            split.end - split.start
        )));
    }
    Ok((index, manifest))
}

/// The files of one split object, read-only: tantivy reads them as slices of the one file.
#[derive(Clone, Debug)]
struct SplitDirectory {
    files: Arc<HashMap<PathBuf, FileSlice>>,
}

fn read_only() -> io::Error {
    io::Error::new(io::ErrorKind::ReadOnlyFilesystem, "a split is immutable")
}

impl Directory for SplitDirectory {
    fn get_file_handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
        self.files
            .get(path)
            .map(|slice| Arc::new(slice.clone()) as Arc<dyn FileHandle>)
            .ok_or_else(|| OpenReadError::FileDoesNotExist(path.to_path_buf()))
    }

    fn exists(&self, path: &Path) -> Result<bool, OpenReadError> {
        Ok(self.files.contains_key(path))
    }

    fn atomic_read(&self, path: &Path) -> Result<Vec<u8>, OpenReadError> {
        let slice = self
            .files
            .get(path)
            .ok_or_else(|| OpenReadError::FileDoesNotExist(path.to_path_buf()))?;
        slice
            .read_bytes()
            .map(|bytes| bytes.as_slice().to_vec())
            .map_err(|io_error| OpenReadError::wrap_io_error(io_error, path.to_path_buf()))
    }

    fn acquire_lock(&self, _lock: &Lock) -> Result<DirectoryLock, LockError> {
        // Nothing ever changes a split: there is nothing to lock against.
        Ok(DirectoryLock::from(Box::new(())))
    }

    fn watch(&self, _watch_callback: WatchCallback) -> tantivy::Result<WatchHandle> {
        Ok(WatchHandle::empty())
    }

    fn delete(&self, path: &Path) -> Result<(), DeleteError> {
        Err(DeleteError::IoError {
            io_error: Arc::new(read_only()),
            filepath: path.to_path_buf(),
        })
    }

    fn open_write(&self, path: &Path) -> Result<WritePtr, OpenWriteError> {
        Err(OpenWriteError::wrap_io_error(
            read_only(),
            path.to_path_buf(),
        ))
    }

    fn atomic_write(&self, _path: &Path, _data: &[u8]) -> io::Result<()> {
        Err(read_only())
    }

    fn sync_directory(&self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(start: u64, end: u64, id: &str) -> SplitId {
        SplitId {
            partition: 0,
            start,
            end,
            level: 0,
            id: id.into(),
        }
    }

    fn ranges(chain: &[SplitId]) -> Vec<(u64, u64, String)> {
        chain
            .iter()
            .map(|split| (split.start, split.end, split.id.clone()))
            .collect()
    }

    #[test]
    fn a_name_parses_back() {
        let id = SplitId {
            partition: 3,
            start: 10,
            end: 250,
            level: 2,
            id: "ab12".into(),
        };
        assert_eq!(
            id.name(),
            "00000000000000000010-00000000000000000250-2-ab12"
        );
        assert_eq!(SplitId::parse(3, &id.name()), Some(id.clone()));
        assert_eq!(
            id.object_path().as_ref(),
            "index/3/splits/00000000000000000010-00000000000000000250-2-ab12.split"
        );
        assert_eq!(
            SplitId::parse(3, "00000000000000000010-00000000000000000010-0-x"),
            None
        );
        assert_eq!(SplitId::parse(3, "junk"), None);
    }

    #[test]
    fn the_cover_is_a_chain_from_zero_without_overlap() {
        // Two writers raced from 100: one wrote [100,150) then [150,200), the other
        // [100,180) then [180,250). A merge wrote [0,100) over [0,40) and [40,100).
        let splits = [
            split(0, 40, "a"),
            split(40, 100, "a"),
            split(0, 100, "m"),
            split(100, 150, "a"),
            split(150, 200, "a"),
            split(100, 180, "b"),
            split(180, 250, "b"),
            split(300, 400, "c"),
        ];
        let (chain, end) = cover(&splits);
        assert_eq!(
            ranges(&chain),
            [
                (0, 100, "m".to_string()),
                (100, 180, "b".to_string()),
                (180, 250, "b".to_string())
            ]
        );
        assert_eq!(end, 250);
        // Without the merge, the small ones; with nothing from 0, nothing.
        let (chain, _) = cover(&splits[..2]);
        assert_eq!(ranges(&chain).len(), 2);
        assert_eq!(cover(&splits[3..]).1, 0);
        // Equal ranges: every reader takes the same.
        let (chain, _) = cover(&[split(0, 10, "z"), split(0, 10, "k")]);
        assert_eq!(chain[0].id, "k");
    }

    #[test]
    fn the_cover_never_shrinks_when_a_split_is_added() {
        let mut splits = vec![split(0, 50, "a"), split(50, 100, "a")];
        // A slow writer's split from 0 that stops short is not taken.
        splits.push(split(0, 70, "b"));
        assert_eq!(cover(&splits).1, 100);
        splits.push(split(70, 90, "b"));
        assert_eq!(cover(&splits).1, 100);
        splits.push(split(90, 120, "b"));
        assert_eq!(cover(&splits).1, 120);
    }
}
