//! The logs, read-only: checkpoints, entries (with their blobs), raw tiles, proofs, and the
//! integrity check behind `GET /v1/integrity` and the report's CC7.2.
//!
//! Everything goes through `callproof_tlog::store::LogReader`, which verifies every checkpoint
//! it returns against the verifier key; this module never writes to the store.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use callproof_evidence_format::entry::{blob_path, blob_references, restore_blob};
use callproof_evidence_format::store::log_prefix;
use callproof_tlog::hash::{CompactRange, Hash, leaf_hash, to_base64, tree_hash};
use callproof_tlog::note::NoteVerifier;
use callproof_tlog::proof::{
    TileHashReader, TileReader, TlogProof, inclusion_proof, inclusion_proof_nodes, tiles_for_nodes,
};
use callproof_tlog::store::{LogReader, SignedCheckpoint};
use callproof_tlog::tile::{
    TILE_HEIGHT, TILE_WIDTH, TileId, entries_path, parse_bundle, parse_hash_tile, tile_width,
};
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::ObjectStore;
use object_store::path::Path;
use serde::Serialize;
use serde_json::Value;

use crate::error::ApiError;

/// How many objects are read at once.
const CONCURRENT_READS: usize = 16;

/// The logs of every partition in one object store.
pub struct Logs {
    store: Arc<dyn ObjectStore>,
    verifier: NoteVerifier,
    verifier_key: String,
}

impl Logs {
    pub fn new(store: Arc<dyn ObjectStore>, verifier_key: &str) -> Result<Logs, String> {
        let verifier: NoteVerifier = verifier_key
            .trim()
            .parse()
            .map_err(|error| format!("evidence.verifier_key: {error}"))?;
        Ok(Logs {
            store,
            verifier,
            verifier_key: verifier_key.trim().to_string(),
        })
    }

    /// The verifier key, as configured (`name+keyid+base64`).
    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }

    pub fn verifier(&self) -> &NoteVerifier {
        &self.verifier
    }

    pub fn reader(&self, partition: i32) -> LogReader {
        LogReader::new(
            self.store.clone(),
            log_prefix(partition),
            self.verifier.clone(),
        )
    }

    /// The partitions that have a log, ascending.
    pub async fn partitions(&self) -> Result<Vec<i32>, ApiError> {
        let listing = self
            .store
            .list_with_delimiter(Some(&Path::from("logs")))
            .await
            .map_err(ApiError::internal)?;
        let mut partitions: Vec<i32> = listing
            .common_prefixes
            .iter()
            .filter_map(|prefix| prefix.filename()?.parse().ok())
            .collect();
        partitions.sort_unstable();
        Ok(partitions)
    }

    /// The latest checkpoint of a partition's log, verified; 404 when there is no such log.
    pub async fn checkpoint(&self, partition: i32) -> Result<SignedCheckpoint, ApiError> {
        self.reader(partition)
            .checkpoint()
            .await
            .map_err(|error| match error {
                callproof_tlog::Error::Missing(_) => {
                    ApiError::NotFound(format!("there is no log for partition {partition}"))
                }
                other => integrity(partition, "checkpoint", other),
            })
    }

    /// A kept checkpoint, verified.
    pub async fn kept_checkpoint(
        &self,
        partition: i32,
        size: u64,
    ) -> Result<SignedCheckpoint, ApiError> {
        self.reader(partition)
            .kept_checkpoint(size)
            .await
            .map_err(|error| match error {
                callproof_tlog::Error::Missing(_) => ApiError::NotFound(format!(
                    "partition {partition} has no kept checkpoint of size {size}"
                )),
                other => integrity(partition, &format!("checkpoints/{size}"), other),
            })
    }

    /// The sizes of a partition's kept checkpoints, ascending.
    pub async fn kept_sizes(&self, partition: i32) -> Result<Vec<u64>, ApiError> {
        let prefix = log_prefix(partition).child("checkpoints");
        let objects: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(ApiError::internal)?;
        let mut sizes: Vec<u64> = objects
            .iter()
            .filter_map(|object| object.location.filename()?.parse().ok())
            .collect();
        sizes.sort_unstable();
        Ok(sizes)
    }

    /// An object of a partition's log exactly as stored (for the raw C2SP paths), or `None`.
    /// `relative` must already be a validated tlog-tiles path.
    pub async fn raw(&self, partition: i32, relative: &str) -> Result<Option<Vec<u8>>, ApiError> {
        let path = relative
            .split('/')
            .fold(log_prefix(partition), |path, part| path.child(part));
        self.get(&path).await
    }

    async fn get(&self, path: &Path) -> Result<Option<Vec<u8>>, ApiError> {
        match self.store.get(path).await {
            Ok(result) => Ok(Some(
                result.bytes().await.map_err(ApiError::internal)?.to_vec(),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(ApiError::internal(error)),
        }
    }

    /// A blob by its SHA-256 hex, as stored (not checked here).
    pub async fn blob(&self, sha256_hex: &str) -> Result<Option<Vec<u8>>, ApiError> {
        self.get(&Path::from(blob_path(sha256_hex))).await
    }

    /// Entry `index` of a partition's log: its bytes, and its JSON with blobs put back (each
    /// checked against the hash the entry holds).
    pub async fn entry(
        &self,
        partition: i32,
        index: u64,
        tree_size: u64,
    ) -> Result<(Vec<u8>, Value), ApiError> {
        let bytes = self
            .reader(partition)
            .entry(index, tree_size)
            .await
            .map_err(|error| integrity(partition, &format!("entry {index}"), error))?;
        let resolved = self.resolve(partition, index, &bytes).await?;
        Ok((bytes, resolved))
    }

    /// The entry's JSON with its blobs put back.
    pub async fn resolve(
        &self,
        partition: i32,
        index: u64,
        bytes: &[u8],
    ) -> Result<Value, ApiError> {
        let mut entry: Value = serde_json::from_slice(bytes).map_err(|error| {
            ApiError::IntegrityFailure(format!(
                "partition {partition} index {index}: the entry is not JSON: {error}"
            ))
        })?;
        for (pointer, sha256_hex) in blob_references(&entry) {
            let blob = self.blob(&sha256_hex).await?.ok_or_else(|| {
                ApiError::IntegrityFailure(format!(
                    "partition {partition} index {index}: blob {sha256_hex} is missing"
                ))
            })?;
            restore_blob(&mut entry, &pointer, &sha256_hex, &blob).map_err(|reason| {
                ApiError::IntegrityFailure(format!("partition {partition} index {index}: {reason}"))
            })?;
        }
        Ok(entry)
    }

    /// Entries of one partition by index, read bundle by bundle (each bundle once).
    pub async fn entries(
        &self,
        partition: i32,
        indexes: &BTreeSet<u64>,
        tree_size: u64,
    ) -> Result<BTreeMap<u64, Vec<u8>>, ApiError> {
        let width = u64::from(TILE_WIDTH);
        let bundles: BTreeSet<u64> = indexes.iter().map(|index| index / width).collect();
        let reader = self.reader(partition);
        let reader = &reader;
        let fetched: Vec<(u64, Vec<u8>)> = futures::stream::iter(bundles)
            .map(|bundle| async move {
                let bytes = reader
                    .bundle(bundle, tile_width(0, bundle, tree_size))
                    .await
                    .map_err(|error| {
                        integrity(
                            partition,
                            &entries_path(bundle, tile_width(0, bundle, tree_size)),
                            error,
                        )
                    })?;
                Ok::<_, ApiError>((bundle, bytes))
            })
            .buffered(CONCURRENT_READS)
            .try_collect()
            .await?;
        let mut entries = BTreeMap::new();
        for (bundle, bytes) in fetched {
            let parsed = parse_bundle(&bytes).map_err(|error| {
                integrity(
                    partition,
                    &entries_path(bundle, tile_width(0, bundle, tree_size)),
                    error,
                )
            })?;
            for (position, entry) in parsed.into_iter().enumerate() {
                let index = bundle * width + position as u64;
                if indexes.contains(&index) {
                    entries.insert(index, entry.to_vec());
                }
            }
        }
        if let Some(missing) = indexes.iter().find(|index| !entries.contains_key(index)) {
            return Err(ApiError::IntegrityFailure(format!(
                "partition {partition} index {missing}: the entry is missing from its bundle"
            )));
        }
        Ok(entries)
    }

    /// The `c2sp.org/tlog-proof@v1` proof of entry `index` in `checkpoint`, read from the tiles
    /// of the tree of `tiles_size` entries (the latest checkpoint's size).
    pub async fn tlog_proof(
        &self,
        partition: i32,
        index: u64,
        checkpoint: &SignedCheckpoint,
        tiles_size: u64,
    ) -> Result<TlogProof, ApiError> {
        let size = checkpoint.checkpoint.size;
        if index >= size {
            return Err(ApiError::NotFound(format!(
                "partition {partition} has no entry {index} at size {size}"
            )));
        }
        let hashes = self
            .reader(partition)
            .inclusion_proof(index, size, tiles_size)
            .await
            .map_err(|error| integrity(partition, &format!("proof of entry {index}"), error))?;
        Ok(TlogProof {
            extra: None,
            index,
            hashes,
            checkpoint: checkpoint.note.clone(),
        })
    }

    /// Proofs of many entries in one checkpoint, fetching each tile they need once.
    pub async fn tlog_proofs(
        &self,
        partition: i32,
        indexes: &BTreeSet<u64>,
        checkpoint: &SignedCheckpoint,
    ) -> Result<BTreeMap<u64, TlogProof>, ApiError> {
        let size = checkpoint.checkpoint.size;
        let mut tiles = BTreeSet::new();
        for &index in indexes {
            let nodes: Vec<_> = inclusion_proof_nodes(index, size)
                .map_err(ApiError::from)?
                .into_iter()
                .flatten()
                .collect();
            tiles.extend(tiles_for_nodes(&nodes, size).map_err(ApiError::from)?);
        }
        let reader = self.reader(partition);
        let reader = &reader;
        let fetched: HashMap<TileId, Vec<u8>> = futures::stream::iter(tiles)
            .map(|tile| async move {
                reader
                    .tile(tile)
                    .await
                    .map(|bytes| (tile, bytes))
                    .map_err(|error| integrity(partition, &tile.path(), error))
            })
            .buffer_unordered(CONCURRENT_READS)
            .try_collect()
            .await?;
        let indexes = indexes.clone();
        let note = checkpoint.note.clone();
        // Hashing thousands of proofs takes a while: off the async workers.
        tokio::task::spawn_blocking(move || {
            let tiles = CachedTiles(fetched);
            let hash_reader = TileHashReader::new(&tiles, size);
            indexes
                .into_iter()
                .map(|index| {
                    let hashes = inclusion_proof(index, size, &hash_reader).map_err(|error| {
                        integrity(partition, &format!("proof of entry {index}"), error)
                    })?;
                    Ok((
                        index,
                        TlogProof {
                            extra: None,
                            index,
                            hashes,
                            checkpoint: note.clone(),
                        },
                    ))
                })
                .collect()
        })
        .await?
    }

    /// Verifies a whole partition's log as stored; see [`PartitionIntegrity`].
    pub async fn verify_partition(&self, partition: i32) -> PartitionIntegrity {
        let mut result = PartitionIntegrity {
            partition,
            valid: false,
            size: 0,
            root_hash: None,
            entries_checked: 0,
            tiles_checked: 0,
            kept_checkpoints_checked: 0,
            blobs_checked: 0,
            failure: None,
        };
        match self.audit(partition, &mut result).await {
            Ok(()) => result.valid = true,
            Err(failure) => {
                tracing::warn!(partition, object = %failure.object, index = ?failure.index, reason = %failure.reason, "log integrity check failed");
                result.failure = Some(failure);
            }
        }
        result
    }

    async fn audit(
        &self,
        partition: i32,
        result: &mut PartitionIntegrity,
    ) -> Result<(), IntegrityFailure> {
        let prefix = log_prefix(partition);
        let object = |relative: &str| format!("{prefix}/{relative}");
        let reader = self.reader(partition);
        let latest = reader
            .checkpoint()
            .await
            .map_err(|error| IntegrityFailure {
                object: object("checkpoint"),
                index: None,
                reason: error.to_string(),
            })?;
        let size = latest.checkpoint.size;
        result.size = size;
        result.root_hash = Some(to_base64(&latest.checkpoint.root_hash));
        // Every kept checkpoint must verify and sign the root of the log's first `size` entries.
        let mut kept: BTreeMap<u64, Hash> = BTreeMap::new();
        for kept_size in self
            .kept_sizes(partition)
            .await
            .map_err(|error| IntegrityFailure {
                object: object("checkpoints"),
                index: None,
                reason: error.to_string(),
            })?
        {
            let relative = format!("checkpoints/{kept_size}");
            let checkpoint =
                reader
                    .kept_checkpoint(kept_size)
                    .await
                    .map_err(|error| IntegrityFailure {
                        object: object(&relative),
                        index: None,
                        reason: error.to_string(),
                    })?;
            if checkpoint.checkpoint.size != kept_size || checkpoint.checkpoint.size > size {
                return Err(IntegrityFailure {
                    object: object(&relative),
                    index: None,
                    reason: format!(
                        "signs size {} (the log is at {size})",
                        checkpoint.checkpoint.size
                    ),
                });
            }
            kept.insert(kept_size, checkpoint.checkpoint.root_hash);
        }
        if let Some(root) = kept.get(&0)
            && *root != callproof_tlog::hash::EMPTY_ROOT
        {
            return Err(IntegrityFailure {
                object: object("checkpoints/0"),
                index: None,
                reason: "a checkpoint of size 0 must sign the empty root".into(),
            });
        }
        // Level 0: every bundle's leaf hashes against its level-0 tile, all of them folded
        // into the tree; the first mismatch is remembered until the root tells which side lies.
        let mut range = CompactRange::default();
        let mut mismatch: Option<(u64, String, String)> = None;
        let mut full_tile_roots: Vec<Hash> = Vec::new();
        let n_bundles = size.div_ceil(u64::from(TILE_WIDTH));
        for bundle in 0..n_bundles {
            let width = tile_width(0, bundle, size);
            let bundle_relative = entries_path(bundle, width);
            let bytes = reader
                .bundle(bundle, width)
                .await
                .map_err(|error| IntegrityFailure {
                    object: object(&bundle_relative),
                    index: Some(bundle * u64::from(TILE_WIDTH)),
                    reason: error.to_string(),
                })?;
            let entries = parse_bundle(&bytes).map_err(|error| IntegrityFailure {
                object: object(&bundle_relative),
                index: Some(bundle * u64::from(TILE_WIDTH)),
                reason: error.to_string(),
            })?;
            if entries.len() != usize::from(width) {
                return Err(IntegrityFailure {
                    object: object(&bundle_relative),
                    index: Some(
                        bundle * u64::from(TILE_WIDTH)
                            + entries.len().min(usize::from(width)) as u64,
                    ),
                    reason: format!("holds {} entries, not {width}", entries.len()),
                });
            }
            let tile = TileId {
                level: 0,
                index: bundle,
                width,
            };
            let tile_bytes = reader.tile(tile).await.map_err(|error| IntegrityFailure {
                object: object(&tile.path()),
                index: Some(bundle * u64::from(TILE_WIDTH)),
                reason: error.to_string(),
            })?;
            let tile_hashes =
                parse_hash_tile(&tile_bytes, width).map_err(|error| IntegrityFailure {
                    object: object(&tile.path()),
                    index: Some(bundle * u64::from(TILE_WIDTH)),
                    reason: error.to_string(),
                })?;
            result.tiles_checked += 1;
            for (position, entry) in entries.iter().enumerate() {
                let index = bundle * u64::from(TILE_WIDTH) + position as u64;
                let leaf = leaf_hash(entry);
                if mismatch.is_none() && tile_hashes.get(position) != Some(&leaf) {
                    mismatch = Some((index, bundle_relative.clone(), tile.path()));
                }
                range.push(leaf);
                if let Some(root) = kept.get(&range.size())
                    && *root != range.root()
                {
                    if let Some((index, bundle_relative, _)) = mismatch {
                        // An entry that hashes neither to its tile nor to the signed roots.
                        return Err(altered_entry(object(&bundle_relative), index));
                    }
                    return Err(IntegrityFailure {
                        object: object(&format!("checkpoints/{}", range.size())),
                        index: Some(index),
                        reason: format!(
                            "signs a root that the log's first {} entries do not hash to: the log was rewritten, or entry {index} or an earlier one was altered",
                            range.size()
                        ),
                    });
                }
                if memchr(entry, b"\"blobs\"") {
                    result.blobs_checked += self.check_blobs(partition, index, entry).await?;
                }
                result.entries_checked += 1;
            }
            if width == TILE_WIDTH {
                full_tile_roots.push(tree_hash(&tile_hashes));
            }
        }
        let root_matches = range.root() == latest.checkpoint.root_hash;
        if let Some((index, bundle_relative, tile_relative)) = mismatch {
            // If the entries hash to the signed root, the tile lies; otherwise the entry does.
            return Err(if root_matches {
                IntegrityFailure {
                    object: object(&tile_relative),
                    index: Some(index),
                    reason: format!(
                        "the hash of entry {index} in the tile differs from the entry, whose bundle matches the signed root: the tile was altered"
                    ),
                }
            } else {
                altered_entry(object(&bundle_relative), index)
            });
        }
        if !root_matches {
            return Err(IntegrityFailure {
                object: object("checkpoint"),
                index: None,
                reason: format!(
                    "the entries hash to root {}, not the signed {}",
                    to_base64(&range.root()),
                    to_base64(&latest.checkpoint.root_hash)
                ),
            });
        }
        // Levels above: tile (L, n) holds the roots of the full tiles (L-1, 256n..).
        let mut level = 1u8;
        let mut below = full_tile_roots;
        while size >> (u32::from(TILE_HEIGHT) * u32::from(level)) > 0 {
            let mut roots = Vec::new();
            let mut n = 0u64;
            loop {
                let width = tile_width(level, n, size);
                if width == 0 {
                    break;
                }
                let tile = TileId {
                    level,
                    index: n,
                    width,
                };
                let first_entry = n << (u32::from(TILE_HEIGHT) * (u32::from(level) + 1));
                let failure = |reason: String| IntegrityFailure {
                    object: object(&tile.path()),
                    index: Some(first_entry),
                    reason,
                };
                let bytes = reader
                    .tile(tile)
                    .await
                    .map_err(|error| failure(error.to_string()))?;
                let hashes =
                    parse_hash_tile(&bytes, width).map_err(|error| failure(error.to_string()))?;
                let start = usize::try_from(n * u64::from(TILE_WIDTH)).unwrap_or(usize::MAX);
                for (position, hash) in hashes.iter().enumerate() {
                    if below.get(start + position) != Some(hash) {
                        let covered = first_entry
                            + ((position as u64) << (u32::from(TILE_HEIGHT) * u32::from(level)));
                        return Err(failure(format!(
                            "hash {position} is not the root of the tiles below it (entries from {covered}): the tile was altered"
                        )));
                    }
                }
                result.tiles_checked += 1;
                if width == TILE_WIDTH {
                    roots.push(tree_hash(&hashes));
                }
                n += 1;
            }
            below = roots;
            level += 1;
        }
        result.kept_checkpoints_checked = kept.len() as u64;
        Ok(())
    }

    async fn check_blobs(
        &self,
        partition: i32,
        index: u64,
        entry: &[u8],
    ) -> Result<u64, IntegrityFailure> {
        let Ok(value) = serde_json::from_slice::<Value>(entry) else {
            return Ok(0);
        };
        let mut checked = 0;
        for (pointer, sha256_hex) in blob_references(&value) {
            let path = blob_path(&sha256_hex);
            let failure = |reason: String| IntegrityFailure {
                object: path.clone(),
                index: Some(index),
                reason: format!("partition {partition} entry {index} ({pointer}): {reason}"),
            };
            let blob = self
                .blob(&sha256_hex)
                .await
                .map_err(|error| failure(error.to_string()))?
                .ok_or_else(|| failure("the blob is missing".into()))?;
            let actual = callproof_tlog::bundle::sha256_hex(&blob);
            if actual != sha256_hex {
                return Err(failure(format!(
                    "the blob has SHA-256 {actual}: it was altered"
                )));
            }
            checked += 1;
        }
        Ok(checked)
    }
}

/// The result of verifying one partition's log as stored: the latest checkpoint's signature,
/// every kept checkpoint (signature, and that it signs the root of the log's prefix of its
/// size: the log only grew), every entry against its level-0 tile, every tile against the tiles
/// below, the root against the checkpoint, and every blob against the hash its entry holds.
#[derive(Clone, Debug, Serialize)]
pub struct PartitionIntegrity {
    pub partition: i32,
    pub valid: bool,
    pub size: u64,
    pub root_hash: Option<String>,
    pub entries_checked: u64,
    pub tiles_checked: u64,
    pub kept_checkpoints_checked: u64,
    pub blobs_checked: u64,
    pub failure: Option<IntegrityFailure>,
}

/// The first thing that failed, naming the object and, when it concerns entries, the index.
#[derive(Clone, Debug, Serialize)]
pub struct IntegrityFailure {
    /// The object's path in the store.
    pub object: String,
    pub index: Option<u64>,
    pub reason: String,
}

fn altered_entry(object: String, index: u64) -> IntegrityFailure {
    IntegrityFailure {
        object,
        index: Some(index),
        reason: format!(
            "entry {index} does not hash to the leaf hash in the level-0 tile, and the entries do not hash to the signed root: the entry was altered"
        ),
    }
}

/// Maps a log read error to the API's error, naming where it happened.
fn integrity(partition: i32, what: &str, error: callproof_tlog::Error) -> ApiError {
    match ApiError::from(error) {
        ApiError::IntegrityFailure(message) => {
            ApiError::IntegrityFailure(format!("partition {partition}, {what}: {message}"))
        }
        ApiError::NotFound(message) => {
            ApiError::NotFound(format!("partition {partition}, {what}: {message}"))
        }
        other => other,
    }
}

fn memchr(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Tiles fetched ahead of a batch of proof computations.
struct CachedTiles(HashMap<TileId, Vec<u8>>);

impl TileReader for CachedTiles {
    fn read_tile(&self, tile: TileId) -> callproof_tlog::Result<Vec<u8>> {
        self.0
            .get(&tile)
            .cloned()
            .ok_or_else(|| callproof_tlog::Error::Missing(tile.to_string()))
    }
}
