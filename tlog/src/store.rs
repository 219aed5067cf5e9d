//! The log writer and reader over `object_store` (feature `store`).
//!
//! Layout under the log's prefix, as C2SP tlog-tiles: `checkpoint`, `tile/<L>/<N>[.p/<W>]`,
//! `tile/entries/<N>[.p/<W>]`, every published checkpoint kept at `checkpoints/<size>`, and
//! the claim of every append at `appends/<from>`.
//!
//! **One writer per log, enforced by the store.** An append from size S starts by creating
//! `appends/<S>` with a create-only write (`PutMode::Create`: `If-None-Match: *` on S3, a
//! no-clobber link on a filesystem), holding the append's signed checkpoint and its entries.
//! Only one writer can create it. Any other writer at size S is refused with
//! [`Error::Fenced`] before it writes anything, so the log cannot fork even when two
//! processors both believe they own its partition. Claims are never deleted, so a writer with
//! a stale view always finds its size claimed; a store that cannot create conditionally is
//! refused rather than trusted.
//!
//! **Crashes roll forward.** Once a claim exists, the append it records will happen. Its
//! writer writes the bundles and tiles, then `checkpoint`, then `checkpoints/<size>`, and then
//! rewrites the claim without its entries (they are in the tiles now). A writer opening the
//! log follows the claims from the checkpoint it reads to the last one, and completes an
//! append whose claim still holds entries: the same files with the same bytes its writer
//! would write (Ed25519 signatures are deterministic). So no tile ever holds an entry that
//! will not be in the log, and nothing is ever deleted. The paths an append writes depend only
//! on its two sizes and never hold anything an earlier tree relies on.
//!
//! `checkpoint` is a plain overwrite: a writer delayed between its tiles and its `checkpoint`
//! may set it back to the size it appended after another writer published a larger one. That
//! is an older checkpoint of the same log, never a fork, and lasts until the next append;
//! `open` follows the claims past it.

use std::collections::HashMap;
use std::sync::Arc;

use futures::{StreamExt as _, TryStreamExt as _};
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutPayload};

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

/// The directory of the appends' claims, `appends/<from>`.
pub const APPENDS: &str = "appends";

/// The first word of a claim's header line: `callproof-append <from> <to> <note bytes>`.
const CLAIM_MAGIC: &str = "callproof-append";

/// The most entries in one batch: far more than fits in memory (each entry is a `Vec`).
pub const MAX_BATCH_ENTRIES: u64 = 1 << 28;

/// A checkpoint together with its signed note, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    /// The signed note bytes, exactly as written to `checkpoint`.
    pub note: Vec<u8>,
}

/// Appends entries to a log, one signed checkpoint per batch; the log's only writer (see the
/// module documentation).
pub struct LogWriter {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    signer: NoteSigner,
    origin: String,
    state: TreeState,
    latest: SignedCheckpoint,
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

/// An append as recorded in its claim, `appends/<from>`: `callproof-append <from> <to>
/// <n>\n`, then the `n` bytes of its signed checkpoint, then its entries as an entry bundle
/// (none once the append is complete).
#[derive(Debug)]
pub struct Claim {
    pub from: u64,
    pub to: u64,
    /// The signed checkpoint of size `to` that the append publishes.
    pub note: Vec<u8>,
    /// The batch, until its writer has published it; `None` after.
    pub entries: Option<Vec<Vec<u8>>>,
}

impl Claim {
    /// The claim's bytes; `entries` are left out once the append is complete.
    fn encode(from: u64, to: u64, note: &[u8], entries: Option<&[Vec<u8>]>) -> Result<Vec<u8>> {
        let mut bytes = format!("{CLAIM_MAGIC} {from} {to} {}\n", note.len()).into_bytes();
        bytes.extend_from_slice(note);
        for entry in entries.unwrap_or_default() {
            append_to_bundle(&mut bytes, entry)?;
        }
        Ok(bytes)
    }

    /// Parses a claim, refusing anything else (never panicking on stored bytes).
    pub fn parse(bytes: &[u8]) -> Result<Claim> {
        let bad = |reason: &str| Error::malformed("append claim", reason);
        let newline = bytes
            .iter()
            .position(|&byte| byte == b'\n')
            .ok_or_else(|| bad("no header line"))?;
        let (header, rest) = bytes.split_at(newline);
        let rest = rest.get(1..).unwrap_or_default();
        let header = std::str::from_utf8(header).map_err(|_| bad("header is not UTF-8"))?;
        let mut words = header.split(' ');
        if words.next() != Some(CLAIM_MAGIC) {
            return Err(bad("header does not start with callproof-append"));
        }
        let mut number = |what: &str| {
            words
                .next()
                .and_then(parse_decimal)
                .ok_or_else(|| bad(&format!("no {what} in the header")))
        };
        let (from, to, note_len) = (number("from")?, number("to")?, number("note length")?);
        if words.next().is_some() {
            return Err(bad("extra words in the header"));
        }
        if to <= from || to - from > MAX_BATCH_ENTRIES {
            return Err(bad(&format!("sizes {from} -> {to} are not a batch")));
        }
        let (note, entries) = usize::try_from(note_len)
            .ok()
            .and_then(|len| rest.split_at_checked(len))
            .ok_or_else(|| bad("note length beyond the end"))?;
        let entries = if entries.is_empty() {
            None
        } else {
            // The entry-bundle encoding, without a bundle's limit of 256 entries.
            let mut parsed: Vec<Vec<u8>> = Vec::new();
            let mut rest = entries;
            while !rest.is_empty() {
                let (len, tail) = rest
                    .split_first_chunk::<2>()
                    .ok_or_else(|| bad("an entry's length is cut short"))?;
                let (entry, tail) = tail
                    .split_at_checked(usize::from(u16::from_be_bytes(*len)))
                    .ok_or_else(|| bad("an entry is cut short"))?;
                parsed.push(entry.to_vec());
                rest = tail;
            }
            if parsed.len() as u64 != to - from {
                return Err(bad(&format!(
                    "{} entries for an append from {from} to {to}",
                    parsed.len()
                )));
            }
            Some(parsed)
        };
        Ok(Claim {
            from,
            to,
            note: note.to_vec(),
            entries,
        })
    }
}

/// The path of the claim of the append from `from`.
fn claim_path(prefix: &Path, from: u64) -> Path {
    child(prefix, &format!("{APPENDS}/{from}"))
}

/// Verifies a stored note as a checkpoint of this log.
fn open_note(
    note: Vec<u8>,
    verifier: &NoteVerifier,
    origin: &str,
    path: &Path,
) -> Result<SignedCheckpoint> {
    let text = SignedNote::open(&note, verifier)
        .map_err(|error| Error::Corrupt(format!("{path}: {error}")))?;
    let checkpoint = Checkpoint::parse(&text)?;
    if checkpoint.origin != origin {
        return Err(Error::Corrupt(format!(
            "{path} has origin {:?}, not {origin:?}",
            checkpoint.origin
        )));
    }
    Ok(SignedCheckpoint { checkpoint, note })
}

/// Appends a batch to `state` off the async workers (hashing a big batch takes milliseconds)
/// and returns the grown state with the files to write.
async fn grow(
    mut state: TreeState,
    entries: Vec<Vec<u8>>,
) -> Result<(TreeState, Vec<(String, Vec<u8>)>)> {
    tokio::task::spawn_blocking(move || {
        let writes = state.append(&entries);
        writes.map(|writes| (state, writes))
    })
    .await
    .map_err(|error| Error::Corrupt(format!("hashing task failed: {error}")))?
}

/// Writes objects, several at once.
async fn put_all(
    store: &Arc<dyn ObjectStore>,
    prefix: &Path,
    writes: Vec<(String, Vec<u8>)>,
) -> Result<()> {
    futures::stream::iter(writes)
        .map(|(path, bytes)| async move { put(store, &child(prefix, &path), bytes).await })
        .buffer_unordered(CONCURRENT_REQUESTS)
        .try_collect::<Vec<()>>()
        .await
        .map(|_| ())
}

/// The right edge of the tree of `checkpoint`, from its partial tiles, which must hash to its
/// root.
async fn load_verified_state(
    store: &Arc<dyn ObjectStore>,
    prefix: &Path,
    checkpoint: &Checkpoint,
) -> Result<TreeState> {
    let state = load_state(store, prefix, checkpoint.size).await?;
    if state.range.root() != checkpoint.root_hash {
        return Err(Error::Corrupt(format!(
            "the partial tiles at size {} do not hash to the root of its checkpoint",
            checkpoint.size
        )));
    }
    Ok(state)
}

impl LogWriter {
    /// Opens the log under `prefix` at its last append, or starts a new log (and publishes its
    /// empty checkpoint) if there is none.
    ///
    /// From the stored `checkpoint`, it follows the appends' claims to the last one,
    /// completing any append that was claimed but not finished (its writer crashed, or is
    /// still at it: both write the same bytes). Every checkpoint must verify with `signer`'s
    /// own key and name `origin`, and the partial tiles must hash to the last one's root.
    /// Anything else is refused: the writer never appends to a log it cannot vouch for.
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        signer: NoteSigner,
        origin: String,
    ) -> Result<LogWriter> {
        let checkpoint_path = child(&prefix, "checkpoint");
        let Some(stored_note) = get(&store, &checkpoint_path).await? else {
            return LogWriter::start(store, prefix, signer, origin).await;
        };
        let verifier = signer.verifier();
        let mut latest = open_note(stored_note.clone(), &verifier, &origin, &checkpoint_path)?;
        // Known while the claims followed so far were completed here; read from the tiles
        // otherwise.
        let mut state: Option<TreeState> = None;
        loop {
            let from = latest.checkpoint.size;
            let path = claim_path(&prefix, from);
            let Some(bytes) = get(&store, &path).await? else {
                break;
            };
            let claim =
                Claim::parse(&bytes).map_err(|error| Error::Corrupt(format!("{path}: {error}")))?;
            let next = open_note(claim.note.clone(), &verifier, &origin, &path)?;
            if claim.from != from || next.checkpoint.size != claim.to {
                return Err(Error::Corrupt(format!(
                    "{path} claims an append from {} to {} with a checkpoint of size {}",
                    claim.from, claim.to, next.checkpoint.size
                )));
            }
            if let Some(entries) = claim.entries {
                let current = match state.take() {
                    Some(current) => current,
                    None => load_verified_state(&store, &prefix, &latest.checkpoint).await?,
                };
                let (grown, writes) = grow(current, entries).await?;
                if grown.range.root() != next.checkpoint.root_hash {
                    return Err(Error::Corrupt(format!(
                        "{path}: its entries do not hash to the root of its checkpoint"
                    )));
                }
                put_all(&store, &prefix, writes).await?;
                put(
                    &store,
                    &child(&prefix, &format!("checkpoints/{}", claim.to)),
                    claim.note.clone(),
                )
                .await?;
                put(
                    &store,
                    &path,
                    Claim::encode(claim.from, claim.to, &claim.note, None)?,
                )
                .await?;
                state = Some(grown);
            } else {
                state = None;
            }
            latest = next;
        }
        let state = match state {
            Some(state) => state,
            None => load_verified_state(&store, &prefix, &latest.checkpoint).await?,
        };
        // Repair what a crash left (no kept copy) or a delayed writer set back (`checkpoint`).
        let kept_path = child(&prefix, &format!("checkpoints/{}", latest.checkpoint.size));
        if get(&store, &kept_path).await?.is_none() {
            put(&store, &kept_path, latest.note.clone()).await?;
        }
        if stored_note != latest.note {
            put(&store, &checkpoint_path, latest.note.clone()).await?;
        }
        Ok(LogWriter {
            store,
            prefix,
            signer,
            origin,
            state,
            latest,
        })
    }

    /// Starts a new log: publishes its empty checkpoint. Two writers starting the same log
    /// write the same bytes.
    async fn start(
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        signer: NoteSigner,
        origin: String,
    ) -> Result<LogWriter> {
        for existing in ["checkpoints", APPENDS] {
            if store
                .list(Some(&child(&prefix, existing)))
                .next()
                .await
                .is_some()
            {
                return Err(Error::Corrupt(format!(
                    "{} is missing but {existing}/ is not empty",
                    child(&prefix, "checkpoint")
                )));
            }
        }
        let checkpoint = Checkpoint {
            origin: origin.clone(),
            size: 0,
            root_hash: crate::hash::EMPTY_ROOT,
            extensions: Vec::new(),
        };
        let note = signer.sign(&checkpoint.to_text())?;
        put(&store, &child(&prefix, "checkpoint"), note.clone()).await?;
        put(&store, &child(&prefix, "checkpoints/0"), note.clone()).await?;
        Ok(LogWriter {
            store,
            prefix,
            signer,
            origin,
            state: TreeState::default(),
            latest: SignedCheckpoint { checkpoint, note },
        })
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
    /// `extensions` lines (each non-empty, without newlines). A batch holds 1 to
    /// [`MAX_BATCH_ENTRIES`] entries of at most 65,535 bytes.
    ///
    /// [`Error::Fenced`] when another writer appended from this writer's size: nothing of
    /// this batch is in the log, and the log must be reopened. On any other error the writer
    /// stays at its previous size; the same batch can be retried, and once the append is
    /// claimed nothing else can follow (reopening completes it).
    pub async fn append(
        &mut self,
        entries: &[Vec<u8>],
        extensions: &[String],
    ) -> Result<SignedCheckpoint> {
        if entries.is_empty() || entries.len() as u64 > MAX_BATCH_ENTRIES {
            return Err(Error::OutOfRange {
                what: "batch size",
                value: entries.len() as u64,
                reason: format!("a batch holds 1 to {MAX_BATCH_ENTRIES} entries"),
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
        let (state, writes) = grow(self.state.clone(), entries.to_vec()).await?;
        let checkpoint = Checkpoint {
            origin: self.origin.clone(),
            size: state.size(),
            root_hash: state.range.root(),
            extensions: extensions.to_vec(),
        };
        checkpoint.validate()?;
        let note = self.signer.sign(&checkpoint.to_text())?;

        let (from, to) = (self.size(), checkpoint.size);
        let claim_path = claim_path(&self.prefix, from);
        let claim = Claim::encode(from, to, &note, Some(entries))?;
        self.claim(&claim_path, claim, from, &note).await?;
        let (store, prefix) = (&self.store, &self.prefix);
        put_all(store, prefix, writes).await?;
        // Once `checkpoint` is written, readers see everything it covers in place.
        put(store, &child(prefix, "checkpoint"), note.clone()).await?;
        // If one of these fails, the batch is published but the caller is told it failed: a
        // retry of the same batch finds its own claim and writes the same files again.
        let kept_path = child(prefix, &format!("checkpoints/{to}"));
        futures::try_join!(
            put(store, &kept_path, note.clone()),
            put(store, &claim_path, Claim::encode(from, to, &note, None)?),
        )?;
        self.state = state;
        self.latest = SignedCheckpoint { checkpoint, note };
        Ok(self.latest.clone())
    }

    /// Creates the claim of an append, only if no claim is there. Finding one is fine only if
    /// it is this very append (a retry after a failure past the claim).
    async fn claim(&self, path: &Path, claim: Vec<u8>, from: u64, note: &[u8]) -> Result<()> {
        let created = self
            .store
            .put_opts(path, PutPayload::from(claim), PutMode::Create.into())
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                match get(&self.store, path)
                    .await?
                    .map(|bytes| Claim::parse(&bytes))
                {
                    Some(Ok(stored)) if stored.note == note => Ok(()),
                    _ => Err(Error::Fenced { size: from }),
                }
            }
            Err(object_store::Error::NotImplemented | object_store::Error::NotSupported { .. }) => {
                Err(Error::ConditionalWriteUnsupported {
                    path: path.to_string(),
                })
            }
            Err(source) => Err(Error::Store {
                path: path.to_string(),
                source,
            }),
        }
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
        assert_eq!(hashes_at_level(u64::MAX, 8), 0);
        assert_eq!(hashes_at_level(u64::MAX, 7), 255);
    }
}
