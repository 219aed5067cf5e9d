//! The log writer and reader over `object_store` (feature `store`).
//!
//! Layout under the log's prefix, as C2SP tlog-tiles: `checkpoint`, `tile/<L>/<N>[.p/<W>]`,
//! `tile/entries/<N>[.p/<W>]`, plus every published checkpoint kept at `checkpoints/<size>`.
//!
//! Crash safety comes from the order of writes: an append records its sizes in
//! `pending-append`, writes its bundles and tiles, then `checkpoint`, then
//! `checkpoints/<size>`. Only what the signed `checkpoint` covers is ever trusted. Partial
//! tiles of different widths live at different paths, so an append never overwrites a file
//! that the current checkpoint relies on. An append that fails or crashes before its
//! checkpoint leaves tiles and bundles beyond it, holding entries that were never committed:
//! `pending-append` names them (the paths an append writes depend only on the two sizes),
//! and the writer deletes them when it reopens, or before its next append, so that no tile
//! claims an uncommitted entry and a resumed log with other batch sizes leaves no stale
//! partial tile behind. There must be a single writer per log.

use std::collections::HashMap;
use std::sync::Arc;

use futures::{StreamExt as _, TryStreamExt as _};
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};

use crate::checkpoint::Checkpoint;
use crate::hash::{CompactRange, Hash, leaf_hash, tree_hash};
use crate::note::{NoteSigner, NoteVerifier, SignedNote};
use crate::proof::{
    TileHashReader, TileReader, TlogProof, consistency_proof_nodes, inclusion_proof_nodes,
    tiles_for_nodes,
};
use crate::tile::{
    MAX_ENTRY_SIZE, TILE_HEIGHT, TILE_WIDTH, TileId, append_to_bundle, entries_path,
    format_hash_tile, parse_bundle, parse_decimal, parse_hash_tile, tile_width,
};
use crate::{Error, Result};

/// How many objects an append or a proof reads or writes at once.
const CONCURRENT_REQUESTS: usize = 16;

/// The object recording the sizes of the append in progress (`<from> <to>`), written before
/// its tiles, so that a writer resuming after a crash knows which files to remove.
pub const PENDING_APPEND: &str = "pending-append";

/// The most entries in one batch: far more than fits in memory (each entry is a `Vec`), and
/// it bounds the files a `pending-append` can ask a resuming writer to delete.
pub const MAX_BATCH_ENTRIES: u64 = 1 << 28;

/// A checkpoint together with its signed note, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    /// The signed note bytes, exactly as written to `checkpoint`.
    pub note: Vec<u8>,
}

/// Appends entries to a log, one signed checkpoint per batch.
pub struct LogWriter {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    signer: NoteSigner,
    origin: String,
    state: TreeState,
    latest: SignedCheckpoint,
    /// An append failed after it may have written files: they must go before the next one.
    failed_append: bool,
}

/// The in-memory right edge of the tree: enough to append and to compute the root.
#[derive(Clone, Debug, Default)]
struct TreeState {
    range: CompactRange,
    /// The partial tile at each level (level 0 holds leaf hashes), fewer than 256 hashes.
    edge_tiles: Vec<Vec<Hash>>,
    /// The partial entry bundle, already encoded.
    edge_bundle: Vec<u8>,
}

impl TreeState {
    fn size(&self) -> u64 {
        self.range.size()
    }

    /// Appends entries and returns the objects to write: every tile and bundle that became
    /// full, then the partial ones at the new right edge.
    fn append(&mut self, entries: &[Vec<u8>]) -> Result<Vec<(String, Vec<u8>)>> {
        let old_size = self.size();
        let mut writes = Vec::new();
        // A bundle grown entry by entry is copied again at every doubling, into fresh pages:
        // reserve what this batch will put in it (a tenth of the processor's CPU went there).
        let batch_bytes: usize = entries.iter().map(|entry| entry.len() + 2).sum();
        let bundle_bytes = |entries_in_bundle: u64| {
            let average = batch_bytes / entries.len().max(1);
            average * entries_in_bundle.min(entries.len() as u64) as usize
        };
        let first_free = u64::from(TILE_WIDTH) - old_size % u64::from(TILE_WIDTH);
        self.edge_bundle.reserve(bundle_bytes(first_free));
        for entry in entries {
            append_to_bundle(&mut self.edge_bundle, entry)?;
            let hash = leaf_hash(entry);
            self.range.push(hash);
            let size = self.size();
            if size.is_multiple_of(u64::from(TILE_WIDTH)) {
                let bundle = std::mem::replace(
                    &mut self.edge_bundle,
                    Vec::with_capacity(bundle_bytes(u64::from(TILE_WIDTH))),
                );
                writes.push((entries_path((size >> TILE_HEIGHT) - 1, TILE_WIDTH), bundle));
            }
            self.add_hash(0, hash, &mut writes);
        }
        let new_size = self.size();
        if new_size != old_size {
            let width = tile_width(0, new_size >> TILE_HEIGHT, new_size);
            if width > 0 && width < TILE_WIDTH {
                writes.push((
                    entries_path(new_size >> TILE_HEIGHT, width),
                    self.edge_bundle.clone(),
                ));
            }
        }
        for (level, hashes) in self.edge_tiles.iter().enumerate() {
            let level = level as u8;
            let index = hashes_at_level(new_size, level) >> TILE_HEIGHT;
            // Only the partial tiles that changed in this batch.
            if !hashes.is_empty() && tile_width(level, index, old_size) != hashes.len() as u16 {
                let tile = TileId {
                    level,
                    index,
                    width: hashes.len() as u16,
                };
                writes.push((tile.path(), format_hash_tile(hashes)));
            }
        }
        Ok(writes)
    }

    /// Adds a hash to the partial tile at `level`, carrying full tiles up.
    fn add_hash(&mut self, level: u8, hash: Hash, writes: &mut Vec<(String, Vec<u8>)>) {
        let position = usize::from(level);
        if self.edge_tiles.len() <= position {
            self.edge_tiles.resize(position + 1, Vec::new());
        }
        let Some(tile) = self.edge_tiles.get_mut(position) else {
            return;
        };
        tile.push(hash);
        if tile.len() == usize::from(TILE_WIDTH) {
            let hashes = std::mem::take(tile);
            let index = (hashes_at_level(self.size(), level) - 1) >> TILE_HEIGHT;
            let full = TileId {
                level,
                index,
                width: TILE_WIDTH,
            };
            writes.push((full.path(), format_hash_tile(&hashes)));
            self.add_hash(level + 1, tree_hash(&hashes), writes);
        }
    }
}

/// The number of hashes at `level` in a tree of `size` leaves (one per perfect subtree of
/// `2^(8·level)` leaves). Checked: level 8 and above hold none, where a plain shift by 64
/// would overflow.
fn hashes_at_level(size: u64, level: u8) -> u64 {
    size.checked_shr(u32::from(TILE_HEIGHT) * u32::from(level))
        .unwrap_or(0)
}

/// Every path that [`TreeState::append`] writes when the tree grows from `old_size` to
/// `new_size` leaves: it depends on the sizes only, not on the entries. None of them is a
/// file the tree of `old_size` relies on (full tiles it does not reach, partial tiles wider
/// than its own).
fn paths_written(old_size: u64, new_size: u64) -> Vec<String> {
    let mut paths = Vec::new();
    if new_size <= old_size {
        return paths;
    }
    for bundle in (old_size >> TILE_HEIGHT)..(new_size >> TILE_HEIGHT) {
        paths.push(entries_path(bundle, TILE_WIDTH));
    }
    let width = (new_size % u64::from(TILE_WIDTH)) as u16;
    if width > 0 {
        paths.push(entries_path(new_size >> TILE_HEIGHT, width));
    }
    let mut level = 0u8;
    while hashes_at_level(new_size, level) > 0 {
        let (old_hashes, new_hashes) = (
            hashes_at_level(old_size, level),
            hashes_at_level(new_size, level),
        );
        for index in (old_hashes >> TILE_HEIGHT)..(new_hashes >> TILE_HEIGHT) {
            paths.push(
                TileId {
                    level,
                    index,
                    width: TILE_WIDTH,
                }
                .path(),
            );
        }
        let width = (new_hashes % u64::from(TILE_WIDTH)) as u16;
        if width > 0 && new_hashes != old_hashes {
            paths.push(
                TileId {
                    level,
                    index: new_hashes >> TILE_HEIGHT,
                    width,
                }
                .path(),
            );
        }
        level += 1;
    }
    paths
}

/// Parses `pending-append`: `<from> <to>\n`.
fn parse_pending_append(bytes: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(bytes).ok()?.strip_suffix('\n')?;
    let (from, to) = text.split_once(' ')?;
    Some((parse_decimal(from)?, parse_decimal(to)?))
}

impl LogWriter {
    /// Opens the log under `prefix`, resuming from its signed checkpoint, or starts a new
    /// log (and publishes its empty checkpoint) if there is none.
    ///
    /// The checkpoint must verify with `signer`'s own key and name `origin`; the partial
    /// tiles it relies on must hash to its root. Anything else is refused: the writer never
    /// appends to a log it cannot vouch for.
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        signer: NoteSigner,
        origin: String,
    ) -> Result<LogWriter> {
        let checkpoint_path = child(&prefix, "checkpoint");
        let Some(note) = get(&store, &checkpoint_path).await? else {
            let existing = store
                .list(Some(&child(&prefix, "checkpoints")))
                .next()
                .await;
            if existing.is_some() {
                return Err(Error::Corrupt(format!(
                    "{checkpoint_path} is missing but kept checkpoints exist"
                )));
            }
            let mut writer = LogWriter {
                store,
                prefix,
                signer,
                origin: origin.clone(),
                state: TreeState::default(),
                latest: SignedCheckpoint {
                    checkpoint: Checkpoint {
                        origin,
                        size: 0,
                        root_hash: crate::hash::EMPTY_ROOT,
                        extensions: Vec::new(),
                    },
                    note: Vec::new(),
                },
                failed_append: false,
            };
            writer.append(&[], &[]).await?;
            return Ok(writer);
        };
        let text = SignedNote::open(&note, &signer.verifier())
            .map_err(|error| Error::Corrupt(format!("{checkpoint_path}: {error}")))?;
        let checkpoint = Checkpoint::parse(&text)?;
        if checkpoint.origin != origin {
            return Err(Error::Corrupt(format!(
                "{checkpoint_path} has origin {:?}, not {origin:?}",
                checkpoint.origin
            )));
        }
        let state = load_state(&store, &prefix, checkpoint.size).await?;
        if state.range.root() != checkpoint.root_hash {
            return Err(Error::Corrupt(format!(
                "the partial tiles at size {} do not hash to the root of {checkpoint_path}",
                checkpoint.size
            )));
        }
        // Repair a crash between writing `checkpoint` and its kept copy.
        let kept_path = child(&prefix, &format!("checkpoints/{}", checkpoint.size));
        if get(&store, &kept_path).await?.is_none() {
            put(&store, &kept_path, note.clone()).await?;
        }
        let writer = LogWriter {
            store,
            prefix,
            signer,
            origin,
            state,
            latest: SignedCheckpoint { checkpoint, note },
            failed_append: false,
        };
        writer.delete_uncommitted(&[]).await?;
        Ok(writer)
    }

    /// Deletes the tiles and bundles that an append which never published its checkpoint
    /// may have written (those `pending-append` names), except `keep`: they hold entries
    /// that are not in the log, and partial tiles of widths that no checkpoint will ever
    /// have. The checkpoint in the store must be this writer's latest.
    async fn delete_uncommitted(&self, keep: &[String]) -> Result<()> {
        let pending_path = child(&self.prefix, PENDING_APPEND);
        let Some(bytes) = get(&self.store, &pending_path).await? else {
            return Ok(()); // no append ever started, or one written before this file existed
        };
        let size = self.size();
        let (from, to) = parse_pending_append(&bytes).ok_or_else(|| {
            Error::Corrupt(format!("{pending_path} is not two sizes (`<from> <to>`)"))
        })?;
        if to == size {
            return Ok(()); // the append it records was committed
        }
        if from != size || to < from || to - from > MAX_BATCH_ENTRIES {
            // Not written by this writer before its latest checkpoint: something else wrote
            // to the log, so refuse rather than guess which files are whose.
            return Err(Error::Corrupt(format!(
                "{pending_path} records an append from size {from} to {to}, but the checkpoint is at size {size}"
            )));
        }
        let keep: std::collections::HashSet<&String> = keep.iter().collect();
        let store = &self.store;
        let prefix = &self.prefix;
        futures::stream::iter(paths_written(from, to))
            .filter(|path| std::future::ready(!keep.contains(path)))
            .map(|path| async move { delete(store, &child(prefix, &path)).await })
            .buffer_unordered(CONCURRENT_REQUESTS)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Before appending after a failed append: makes sure the store's checkpoint is still
    /// the one this writer published (or the very one it is about to publish, when the
    /// failure came after that write) and deletes what the failed append left.
    async fn recover_from_failed_append(&self, next_note: &[u8], keep: &[String]) -> Result<()> {
        let checkpoint_path = child(&self.prefix, "checkpoint");
        let stored = get(&self.store, &checkpoint_path).await?;
        match stored {
            Some(stored) if stored == self.latest.note => self.delete_uncommitted(keep).await,
            // Ed25519 signatures are deterministic: the same batch gives the same note, and
            // rewriting its files is harmless.
            Some(stored) if stored == next_note => Ok(()),
            _ => Err(Error::Corrupt(format!(
                "{checkpoint_path} is no longer the checkpoint this writer published: reopen the log"
            ))),
        }
    }

    /// The number of entries in the log (as of the latest checkpoint).
    pub fn size(&self) -> u64 {
        self.state.size()
    }

    /// The latest checkpoint published.
    pub fn checkpoint(&self) -> &SignedCheckpoint {
        &self.latest
    }

    /// Appends a batch of entries and publishes one signed checkpoint for it, carrying the
    /// `extensions` lines (each non-empty, without newlines). Entries are at most 65,535
    /// bytes, at most [`MAX_BATCH_ENTRIES`] of them.
    ///
    /// On error the writer stays at its previous size and the same batch can be retried.
    /// The next append after a failed one first deletes the files the failed one wrote; if
    /// the failed one did publish its checkpoint (it failed after that write), only the
    /// same batch is accepted, and anything else is refused: reopen the log.
    pub async fn append(
        &mut self,
        entries: &[Vec<u8>],
        extensions: &[String],
    ) -> Result<SignedCheckpoint> {
        if entries.len() as u64 > MAX_BATCH_ENTRIES {
            return Err(Error::OutOfRange {
                what: "batch size",
                value: entries.len() as u64,
                reason: format!("a batch holds at most {MAX_BATCH_ENTRIES} entries"),
            });
        }
        if let Some((position, entry)) = entries
            .iter()
            .enumerate()
            .find(|(_, entry)| entry.len() > MAX_ENTRY_SIZE)
        {
            return Err(Error::EntryTooLarge {
                position,
                len: entry.len(),
            });
        }
        // Hashing a big batch takes milliseconds: keep it off the async workers.
        let mut state = self.state.clone();
        let batch = entries.to_vec();
        let (state, writes) = tokio::task::spawn_blocking(move || {
            let writes = state.append(&batch);
            writes.map(|writes| (state, writes))
        })
        .await
        .map_err(|error| Error::Corrupt(format!("hashing task failed: {error}")))??;

        let checkpoint = Checkpoint {
            origin: self.origin.clone(),
            size: state.size(),
            root_hash: state.range.root(),
            extensions: extensions.to_vec(),
        };
        checkpoint.validate()?;
        let note = self.signer.sign(&checkpoint.to_text())?;

        if self.failed_append {
            let paths: Vec<String> = writes.iter().map(|(path, _)| path.clone()).collect();
            self.recover_from_failed_append(&note, &paths).await?;
        }
        // From here until the checkpoint is written, a failure leaves files to delete.
        self.failed_append = true;
        let old_size = self.size();
        if checkpoint.size != old_size {
            let pending = format!("{old_size} {}\n", checkpoint.size).into_bytes();
            put(&self.store, &child(&self.prefix, PENDING_APPEND), pending).await?;
        }
        let store = &self.store;
        let prefix = &self.prefix;
        futures::stream::iter(writes)
            .map(|(path, bytes)| async move { put(store, &child(prefix, &path), bytes).await })
            .buffer_unordered(CONCURRENT_REQUESTS)
            .try_collect::<Vec<()>>()
            .await?;
        // The checkpoint last: once it is written, everything it covers is in place.
        put(store, &child(prefix, "checkpoint"), note.clone()).await?;
        // If this write fails, the batch is published but the caller is told it failed: a
        // retry of the same batch finds its checkpoint in place (see
        // `recover_from_failed_append`), and `open` rewrites a missing kept copy.
        put(
            store,
            &child(prefix, &format!("checkpoints/{}", checkpoint.size)),
            note.clone(),
        )
        .await?;

        self.failed_append = false;
        self.state = state;
        self.latest = SignedCheckpoint { checkpoint, note };
        Ok(self.latest.clone())
    }
}

/// Rebuilds the right edge of a tree of `size` leaves from its partial tiles and bundle.
async fn load_state(store: &Arc<dyn ObjectStore>, prefix: &Path, size: u64) -> Result<TreeState> {
    let mut state = TreeState::default();
    let mut levels = 0u8;
    while hashes_at_level(size, levels) > 0 {
        levels += 1;
    }
    state.edge_tiles = vec![Vec::new(); usize::from(levels)];
    // From the top level down, so the compact range receives its subtrees left to right.
    for level in (0..levels).rev() {
        let index = hashes_at_level(size, level) >> TILE_HEIGHT;
        let width = tile_width(level, index, size);
        if width == 0 || width == TILE_WIDTH {
            continue;
        }
        let tile = TileId {
            level,
            index,
            width,
        };
        let path = child(prefix, &tile.path());
        let bytes = get(store, &path)
            .await?
            .ok_or_else(|| Error::Corrupt(format!("{path} is missing")))?;
        let hashes = parse_hash_tile(&bytes, width)
            .map_err(|error| Error::Corrupt(format!("{path}: {error}")))?;
        for hash in &hashes {
            state
                .range
                .push_subtree(TILE_HEIGHT * level, *hash)
                .map_err(|error| Error::Corrupt(format!("{path}: {error}")))?;
        }
        if let Some(edge) = state.edge_tiles.get_mut(usize::from(level)) {
            *edge = hashes;
        }
    }
    let bundle_index = size >> TILE_HEIGHT;
    let width = tile_width(0, bundle_index, size);
    if width > 0 && width < TILE_WIDTH {
        let path = child(prefix, &entries_path(bundle_index, width));
        let bytes = get(store, &path)
            .await?
            .ok_or_else(|| Error::Corrupt(format!("{path} is missing")))?;
        let entries =
            parse_bundle(&bytes).map_err(|error| Error::Corrupt(format!("{path}: {error}")))?;
        let hashes: Vec<Hash> = entries.iter().map(|entry| leaf_hash(entry)).collect();
        if state.edge_tiles.first() != Some(&hashes) {
            return Err(Error::Corrupt(format!(
                "{path} does not match the level-0 tile at size {size}"
            )));
        }
        state.edge_bundle = bytes;
    }
    Ok(state)
}

/// Reads a log (checkpoints, entries, tiles) and builds proofs from its tiles.
pub struct LogReader {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    verifier: NoteVerifier,
}

impl LogReader {
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path, verifier: NoteVerifier) -> Self {
        Self {
            store,
            prefix,
            verifier,
        }
    }

    /// The latest checkpoint, verified.
    pub async fn checkpoint(&self) -> Result<SignedCheckpoint> {
        self.read_checkpoint("checkpoint").await
    }

    /// A kept checkpoint (`checkpoints/<size>`), verified.
    pub async fn kept_checkpoint(&self, size: u64) -> Result<SignedCheckpoint> {
        self.read_checkpoint(&format!("checkpoints/{size}")).await
    }

    async fn read_checkpoint(&self, relative: &str) -> Result<SignedCheckpoint> {
        let path = child(&self.prefix, relative);
        let note = get(&self.store, &path)
            .await?
            .ok_or_else(|| Error::Missing(path.to_string()))?;
        let text = SignedNote::open(&note, &self.verifier)?;
        let checkpoint = Checkpoint::parse(&text)?;
        Ok(SignedCheckpoint { checkpoint, note })
    }

    /// The raw contents of a tile.
    pub async fn tile(&self, tile: TileId) -> Result<Vec<u8>> {
        let path = child(&self.prefix, &tile.path());
        get(&self.store, &path)
            .await?
            .ok_or_else(|| Error::Missing(path.to_string()))
    }

    /// The raw contents of an entry bundle.
    pub async fn bundle(&self, index: u64, width: u16) -> Result<Vec<u8>> {
        let path = child(&self.prefix, &entries_path(index, width));
        get(&self.store, &path)
            .await?
            .ok_or_else(|| Error::Missing(path.to_string()))
    }

    /// Entry `index` of the log whose latest checkpoint has `tree_size` entries.
    pub async fn entry(&self, index: u64, tree_size: u64) -> Result<Vec<u8>> {
        if index >= tree_size {
            return Err(Error::OutOfRange {
                what: "entry index",
                value: index,
                reason: format!("the tree size is {tree_size}"),
            });
        }
        let bundle_index = index >> TILE_HEIGHT;
        let width = tile_width(0, bundle_index, tree_size);
        let bytes = self.bundle(bundle_index, width).await?;
        let entries = parse_bundle(&bytes)?;
        entries
            .get((index % u64::from(TILE_WIDTH)) as usize)
            .map(|entry| entry.to_vec())
            .ok_or_else(|| {
                Error::Corrupt(format!(
                    "{} is too short",
                    entries_path(bundle_index, width)
                ))
            })
    }

    /// The inclusion proof of entry `index` in the tree of `size` entries, read from the
    /// tiles of the tree of `tiles_size` entries (the latest checkpoint's size).
    pub async fn inclusion_proof(
        &self,
        index: u64,
        size: u64,
        tiles_size: u64,
    ) -> Result<Vec<Hash>> {
        check_sizes(size, tiles_size)?;
        let nodes = inclusion_proof_nodes(index, size)?;
        let tiles = self.fetch_tiles(&nodes, tiles_size).await?;
        crate::proof::inclusion_proof(index, size, &TileHashReader::new(&tiles, tiles_size))
    }

    /// The consistency proof from `old_size` to `new_size`, read from the tiles of the tree
    /// of `tiles_size` entries.
    pub async fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
        tiles_size: u64,
    ) -> Result<Vec<Hash>> {
        check_sizes(new_size, tiles_size)?;
        let nodes = consistency_proof_nodes(old_size, new_size)?;
        let tiles = self.fetch_tiles(&nodes, tiles_size).await?;
        crate::proof::consistency_proof(
            old_size,
            new_size,
            &TileHashReader::new(&tiles, tiles_size),
        )
    }

    /// A `c2sp.org/tlog-proof@v1` proof of entry `index` in `checkpoint`.
    pub async fn tlog_proof(&self, index: u64, checkpoint: &SignedCheckpoint) -> Result<TlogProof> {
        let size = checkpoint.checkpoint.size;
        let hashes = self.inclusion_proof(index, size, size).await?;
        Ok(TlogProof {
            extra: None,
            index,
            hashes,
            checkpoint: checkpoint.note.clone(),
        })
    }

    /// Fetches, concurrently, every tile the nodes need.
    async fn fetch_tiles(
        &self,
        nodes: &[Vec<crate::proof::NodeId>],
        tiles_size: u64,
    ) -> Result<FetchedTiles> {
        let nodes: Vec<_> = nodes.iter().flatten().copied().collect();
        let tiles = tiles_for_nodes(&nodes, tiles_size)?;
        let fetched = futures::stream::iter(tiles)
            .map(|tile| async move { self.tile(tile).await.map(|bytes| (tile, bytes)) })
            .buffer_unordered(CONCURRENT_REQUESTS)
            .try_collect::<HashMap<_, _>>()
            .await?;
        Ok(FetchedTiles(fetched))
    }
}

fn check_sizes(size: u64, tiles_size: u64) -> Result<()> {
    if size > tiles_size {
        return Err(Error::OutOfRange {
            what: "tree size",
            value: size,
            reason: format!("the log's tiles only cover {tiles_size} entries"),
        });
    }
    Ok(())
}

/// Tiles fetched ahead of a proof computation.
struct FetchedTiles(HashMap<TileId, Vec<u8>>);

impl TileReader for FetchedTiles {
    fn read_tile(&self, tile: TileId) -> Result<Vec<u8>> {
        self.0
            .get(&tile)
            .cloned()
            .ok_or_else(|| Error::Missing(tile.to_string()))
    }
}

fn child(prefix: &Path, relative: &str) -> Path {
    relative
        .split('/')
        .fold(prefix.clone(), |path, part| path.child(part))
}

async fn get(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<Option<Vec<u8>>> {
    match store.get(path).await {
        Ok(result) => {
            let bytes = result.bytes().await.map_err(|source| Error::Store {
                path: path.to_string(),
                source,
            })?;
            Ok(Some(bytes.to_vec()))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(source) => Err(Error::Store {
            path: path.to_string(),
            source,
        }),
    }
}

/// Deletes an object; one that is already gone is fine.
async fn delete(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<()> {
    match store.delete(path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(source) => Err(Error::Store {
            path: path.to_string(),
            source,
        }),
    }
}

async fn put(store: &Arc<dyn ObjectStore>, path: &Path, bytes: Vec<u8>) -> Result<()> {
    store
        .put(path, PutPayload::from(bytes))
        .await
        .map(|_| ())
        .map_err(|source| Error::Store {
            path: path.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `paths_written` is what a resuming writer deletes: it must name exactly the files an
    /// append writes, or a crash leaves some behind.
    #[test]
    fn paths_written_are_the_paths_an_append_writes() {
        let small = [0u64, 1, 2, 255, 256, 257, 300, 511, 512, 513, 767, 768];
        let mut pairs: Vec<(u64, u64)> = Vec::new();
        for (position, &old_size) in small.iter().enumerate() {
            pairs.extend(
                small[position..]
                    .iter()
                    .map(|&new_size| (old_size, new_size)),
            );
        }
        // Across level-1 and level-2 tile boundaries.
        pairs.extend([
            (65_535, 65_536),
            (65_535, 65_537),
            (65_280, 70_000),
            (0, 65_536),
            (300, 131_329),
            (65_536, 131_072),
        ]);
        for (old_size, new_size) in pairs {
            let mut state = TreeState::default();
            state
                .append(&vec![b"x".to_vec(); old_size as usize])
                .unwrap();
            let batch = vec![b"y".to_vec(); (new_size - old_size) as usize];
            let mut written: Vec<String> = state
                .append(&batch)
                .unwrap()
                .into_iter()
                .map(|(path, _)| path)
                .collect();
            let mut expected = paths_written(old_size, new_size);
            written.sort();
            expected.sort();
            assert_eq!(written, expected, "{old_size} -> {new_size}");
        }
    }

    /// Regression: at 2^56 leaves and more, the edge tile index of level 7 was computed
    /// with a shift by 64, which panics (debug) or wraps (release).
    #[test]
    fn appending_at_two_to_the_56_does_not_overflow_a_shift() {
        let mut state = TreeState::default();
        let top = [7u8; 32];
        state.range.push_subtree(56, top).unwrap();
        state.edge_tiles = vec![Vec::new(); 8];
        if let Some(level7) = state.edge_tiles.get_mut(7) {
            level7.push(top);
        }
        let writes = state.append(&[b"next".to_vec()]).unwrap();
        let paths: Vec<&str> = writes.iter().map(|(path, _)| path.as_str()).collect();
        let edge = (1u64 << 56) >> TILE_HEIGHT;
        assert!(paths.contains(&entries_path(edge, 1).as_str()), "{paths:?}");
        assert!(!paths.contains(&"tile/7/000.p/1"), "{paths:?}");
        assert_eq!(state.size(), (1 << 56) + 1);
        assert_eq!(
            paths_written(1 << 56, (1 << 56) + 1).len(),
            writes.len(),
            "{paths:?}"
        );
        assert_eq!(hashes_at_level(u64::MAX, 8), 0);
        assert_eq!(hashes_at_level(u64::MAX, 7), 255);
    }
}
