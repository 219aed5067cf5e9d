//! Offline full audit of a tlog-tiles log directory (what `callproof-verify log` runs).
//!
//! Every entry bundle is read once and hashed; the leaf hashes are checked against the
//! level-0 tiles, tile roots against the tiles above, and the whole log folds into a
//! [`CompactRange`] whose root must match the signed checkpoint. Kept checkpoints
//! (`checkpoints/<size>`, or Tessera's `checkpoint.<size>`) are checked against the root of
//! the same entries at their size, which proves they are prefixes of the latest one. Memory
//! stays at a few tiles whatever the size of the log.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::checkpoint::Checkpoint;
use crate::hash::{CompactRange, EMPTY_ROOT, Hash, leaf_hash, to_base64, tree_hash};
use crate::note::{NoteVerifier, SignedNote};
use crate::tile::{
    TILE_WIDTH, TileId, entries_path, parse_bundle, parse_decimal, parse_hash_tile, tile_width,
};
use crate::{Error, Result};

/// What a successful audit checked.
#[derive(Clone, Debug)]
pub struct AuditReport {
    /// The latest checkpoint (verified).
    pub checkpoint: Checkpoint,
    /// Sizes of the kept checkpoints verified against the entries.
    pub kept_checkpoints: Vec<u64>,
    /// Number of entry bundle files checked (full, partial and older partial ones).
    pub bundles_checked: u64,
    /// Number of hash tile files checked.
    pub tiles_checked: u64,
    /// Files under `tile/` that no checkpoint covers (left over by an interrupted append,
    /// or foreign), and older partial tiles and bundles that differ from the current ones
    /// but that no kept checkpoint relies on; reported, not failed, since an append that
    /// crashed before its checkpoint leaves such files.
    pub unchecked_files: Vec<String>,
}

/// Why an audit failed, and in which file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {error}")]
pub struct AuditFailure {
    /// The file (relative to the log directory) where the problem was found.
    pub path: String,
    pub error: Error,
}

/// Progress of an audit: entries checked so far out of the checkpoint size.
pub type ProgressFn<'a> = dyn FnMut(u64, u64) + 'a;

/// Audits the log in `dir` against `verifier`; `progress` is called every few thousand entries.
pub fn audit_log_dir(
    dir: &Path,
    verifier: &NoteVerifier,
    progress: &mut ProgressFn<'_>,
) -> Result<AuditReport, AuditFailure> {
    Auditor::new(dir, verifier)?.run(progress)
}

fn fail(path: impl Into<String>, error: Error) -> AuditFailure {
    AuditFailure {
        path: path.into(),
        error,
    }
}

fn corrupt(path: &str, reason: String) -> AuditFailure {
    fail(path, Error::Corrupt(reason))
}

/// An entry bundle as read: its bytes, leaf hashes, and where each entry ends.
struct ReadBundle {
    bytes: Vec<u8>,
    leaf_hashes: Vec<Hash>,
    entry_ends: Vec<usize>,
}

struct Auditor<'a> {
    dir: &'a Path,
    latest: Checkpoint,
    /// Kept checkpoints by size: the files claiming that size, and the root they sign.
    kept: BTreeMap<u64, Vec<(String, Hash)>>,
    /// Every file under `tile/`, removed as it gets checked.
    unchecked: BTreeSet<String>,
    bundles_checked: u64,
    tiles_checked: u64,
}

impl<'a> Auditor<'a> {
    fn new(dir: &'a Path, verifier: &NoteVerifier) -> Result<Self, AuditFailure> {
        let latest = read_checkpoint(dir, "checkpoint", verifier)?;
        let mut kept: BTreeMap<u64, Vec<(String, Hash)>> = BTreeMap::new();
        for (size, path) in kept_checkpoint_files(dir)? {
            let checkpoint = read_checkpoint(dir, &path, verifier)?;
            if checkpoint.size != size {
                return Err(corrupt(
                    &path,
                    format!(
                        "the file name says size {size} but the checkpoint says {}",
                        checkpoint.size
                    ),
                ));
            }
            if checkpoint.origin != latest.origin {
                return Err(corrupt(
                    &path,
                    format!(
                        "origin {:?} differs from the latest checkpoint's {:?}",
                        checkpoint.origin, latest.origin
                    ),
                ));
            }
            if size > latest.size {
                return Err(corrupt(
                    &path,
                    format!(
                        "size {size} is beyond the latest checkpoint's {}",
                        latest.size
                    ),
                ));
            }
            kept.entry(size)
                .or_default()
                .push((path, checkpoint.root_hash));
        }
        let mut unchecked = BTreeSet::new();
        list_files(dir, Path::new("tile"), &mut unchecked)?;
        Ok(Self {
            dir,
            latest,
            kept,
            unchecked,
            bundles_checked: 0,
            tiles_checked: 0,
        })
    }

    fn run(mut self, progress: &mut ProgressFn<'_>) -> Result<AuditReport, AuditFailure> {
        let size = self.latest.size;
        let mut range = CompactRange::default();
        self.check_kept_root(&range)?;
        // At each level >= 1, the index and the hashes of the tile being filled (level 0 is
        // checked one bundle at a time).
        let mut upper: Vec<(u64, Vec<Hash>)> = Vec::new();
        let mut bundle_index = 0u64;
        loop {
            let width = tile_width(0, bundle_index, size);
            if width == 0 {
                break;
            }
            let ReadBundle {
                bytes: bundle,
                leaf_hashes,
                entry_ends: ends,
            } = self.read_bundle(bundle_index, width)?;
            let tile = TileId {
                level: 0,
                index: bundle_index,
                width,
            };
            // The level-0 tile first: a changed entry shows up here, next to its bundle.
            self.check_tile(tile, &leaf_hashes)?;
            self.check_older_bundles(bundle_index, width, &bundle, &ends)?;
            for hash in &leaf_hashes {
                range.push(*hash);
                self.check_kept_root(&range)?;
            }
            if width == TILE_WIDTH {
                self.push_full_tile_root(&mut upper, 1, tree_hash(&leaf_hashes))?;
            }
            bundle_index += 1;
            if bundle_index.is_multiple_of(64) {
                progress(range.size(), size);
            }
        }
        progress(range.size(), size);
        // The partial tiles at the right edge of the upper levels.
        for (position, (index, hashes)) in upper.iter().enumerate() {
            if !hashes.is_empty() {
                let tile = TileId {
                    level: position as u8 + 1,
                    index: *index,
                    width: hashes.len() as u16,
                };
                self.check_tile(tile, hashes)?;
            }
        }
        let root = range.root();
        if root != self.latest.root_hash {
            return Err(corrupt(
                "checkpoint",
                format!(
                    "the entries hash to root {} but the checkpoint says {}",
                    to_base64(&root),
                    to_base64(&self.latest.root_hash)
                ),
            ));
        }
        Ok(AuditReport {
            checkpoint: self.latest,
            kept_checkpoints: self.kept.keys().copied().collect(),
            bundles_checked: self.bundles_checked,
            tiles_checked: self.tiles_checked,
            unchecked_files: self.unchecked.into_iter().collect(),
        })
    }

    /// Adds the root of a full tile at `level - 1` to the tile being filled at `level`,
    /// checking and carrying up every tile that becomes full.
    fn push_full_tile_root(
        &mut self,
        upper: &mut Vec<(u64, Vec<Hash>)>,
        level: u8,
        root: Hash,
    ) -> Result<(), AuditFailure> {
        let position = usize::from(level) - 1;
        if upper.len() <= position {
            upper.resize(position + 1, (0, Vec::new()));
        }
        let Some((index, hashes)) = upper.get_mut(position) else {
            return Ok(());
        };
        hashes.push(root);
        if hashes.len() == usize::from(TILE_WIDTH) {
            let full = std::mem::take(hashes);
            let tile = TileId {
                level,
                index: *index,
                width: TILE_WIDTH,
            };
            *index += 1;
            self.check_tile(tile, &full)?;
            self.push_full_tile_root(upper, level + 1, tree_hash(&full))?;
        }
        Ok(())
    }

    /// Checks that every kept checkpoint of the current size signs the current root.
    fn check_kept_root(&self, range: &CompactRange) -> Result<(), AuditFailure> {
        let Some(kept) = self.kept.get(&range.size()) else {
            return Ok(());
        };
        let root = if range.size() == 0 {
            EMPTY_ROOT
        } else {
            range.root()
        };
        for (path, kept_root) in kept {
            if *kept_root != root {
                return Err(corrupt(
                    path,
                    format!(
                        "the first {} entries hash to root {} but this checkpoint says {}: it is not a prefix of the latest checkpoint",
                        range.size(),
                        to_base64(&root),
                        to_base64(kept_root)
                    ),
                ));
            }
        }
        Ok(())
    }

    fn read(&mut self, path: &str) -> Result<Vec<u8>, AuditFailure> {
        self.unchecked.remove(path);
        fs::read(self.dir.join(path)).map_err(|source| {
            fail(
                path,
                Error::Io {
                    path: path.to_owned(),
                    source,
                },
            )
        })
    }

    /// Partial files (`<full path>.p/<W>`) of tile `index` at `level` with a width below
    /// `width`, which a checkpoint covers; wider ones are beyond the latest checkpoint and
    /// stay unchecked. Each comes with whether a kept checkpoint relies on it.
    fn older_partials(
        &self,
        full_path: &str,
        level: u8,
        index: u64,
        width: u16,
    ) -> Vec<OlderPartial> {
        let prefix = format!("{full_path}.p/");
        self.unchecked
            .range(prefix.clone()..)
            .take_while(|path| path.starts_with(&prefix))
            .filter_map(|path| {
                let partial = parse_decimal(&path[prefix.len()..])?;
                (partial >= 1 && partial < u64::from(width)).then(|| {
                    let width = partial as u16;
                    OlderPartial {
                        path: path.clone(),
                        width,
                        kept: self.kept_checkpoint_has_width(level, index, width),
                    }
                })
            })
            .collect()
    }

    /// Whether a kept checkpoint's tree has tile `index` at `level` with exactly `width`
    /// hashes: the sizes from `(256·index + width)·2^(8·level)` up to the next hash.
    fn kept_checkpoint_has_width(&self, level: u8, index: u64, width: u16) -> bool {
        let shift = 8 * u32::from(level);
        let hashes = u128::from(index) * u128::from(TILE_WIDTH) + u128::from(width);
        let (first, last) = (hashes << shift, ((hashes + 1) << shift) - 1);
        let Ok(first) = u64::try_from(first) else {
            return false;
        };
        let last = u64::try_from(last).unwrap_or(u64::MAX);
        self.kept.range(first..=last).next().is_some()
    }

    /// An older partial that differs from the current tile. If a kept checkpoint relies on
    /// it, the log changed what it had published: that fails. Otherwise it was left by an
    /// append that never published its checkpoint (an honest crash leaves such files with
    /// writers that do not clean up after themselves): reported, not failed.
    fn older_partial_differs(
        &mut self,
        partial: &OlderPartial,
        failure: AuditFailure,
    ) -> Result<(), AuditFailure> {
        if partial.kept {
            return Err(failure);
        }
        self.unchecked.insert(partial.path.clone());
        Ok(())
    }

    /// Reads bundle `index` of `width` entries; returns its bytes and the offset where
    /// each entry ends (to compare older partial bundles, which are prefixes of it).
    fn read_bundle(&mut self, index: u64, width: u16) -> Result<ReadBundle, AuditFailure> {
        let path = entries_path(index, width);
        let bytes = self.read(&path)?;
        let entries = parse_bundle(&bytes).map_err(|error| fail(&path, error))?;
        if entries.len() != usize::from(width) {
            return Err(corrupt(
                &path,
                format!("the bundle holds {} entries, not {width}", entries.len()),
            ));
        }
        let hashes = entries.iter().map(|entry| leaf_hash(entry)).collect();
        let mut ends = Vec::with_capacity(entries.len());
        let mut end = 0;
        for entry in &entries {
            end += 2 + entry.len();
            ends.push(end);
        }
        self.bundles_checked += 1;
        Ok(ReadBundle {
            bytes,
            leaf_hashes: hashes,
            entry_ends: ends,
        })
    }

    /// Checks the older partial versions of bundle `index`: each a prefix of the bundle.
    fn check_older_bundles(
        &mut self,
        index: u64,
        width: u16,
        bytes: &[u8],
        ends: &[usize],
    ) -> Result<(), AuditFailure> {
        let path = entries_path(index, width);
        for partial in self.older_partials(&entries_path(index, TILE_WIDTH), 0, index, width) {
            let end = ends
                .get(usize::from(partial.width) - 1)
                .copied()
                .unwrap_or(0);
            if self.read(&partial.path)?.as_slice() != bytes.get(..end).unwrap_or_default() {
                let reason = format!(
                    "this partial bundle differs from the first {} entries of {path}",
                    partial.width
                );
                self.older_partial_differs(&partial, corrupt(&partial.path, reason))?;
                continue;
            }
            self.bundles_checked += 1;
        }
        Ok(())
    }

    /// Checks that `tile` holds exactly `hashes`, and its older partial versions a prefix.
    fn check_tile(&mut self, tile: TileId, hashes: &[Hash]) -> Result<(), AuditFailure> {
        let path = tile.path();
        let bytes = self.read(&path)?;
        let stored = parse_hash_tile(&bytes, tile.width).map_err(|error| fail(&path, error))?;
        compare_tile(&path, tile, &stored, hashes)?;
        self.tiles_checked += 1;
        let full_path = crate::tile::tile_path(tile.level, tile.index, TILE_WIDTH);
        for partial in self.older_partials(&full_path, tile.level, tile.index, tile.width) {
            let bytes = self.read(&partial.path)?;
            let expected = hashes.get(..usize::from(partial.width)).unwrap_or(hashes);
            let result = parse_hash_tile(&bytes, partial.width)
                .map_err(|error| fail(&partial.path, error))
                .and_then(|stored| {
                    let id = TileId {
                        width: partial.width,
                        ..tile
                    };
                    compare_tile(&partial.path, id, &stored, expected)
                });
            if let Err(failure) = result {
                self.older_partial_differs(&partial, failure)?;
                continue;
            }
            self.tiles_checked += 1;
        }
        Ok(())
    }
}

/// An older partial tile or bundle found next to the current one.
struct OlderPartial {
    path: String,
    width: u16,
    /// Whether a kept checkpoint's tree has this very partial tile.
    kept: bool,
}

fn compare_tile(
    path: &str,
    tile: TileId,
    stored: &[Hash],
    expected: &[Hash],
) -> Result<(), AuditFailure> {
    let mismatch = stored
        .iter()
        .zip(expected)
        .position(|(stored, expected)| stored != expected);
    if let Some(position) = mismatch {
        // Which entries the wrong hash stands for, to point at the bad spot.
        let span = 1u128 << (8 * u32::from(tile.level));
        let first = (u128::from(tile.index) * 256 + position as u128) * span;
        let what = if tile.level == 0 {
            let bundle = entries_path(tile.index, tile.width);
            format!("the leaf hash of entry {first} in {bundle}")
        } else {
            format!("the hash of entries {first}..{}", first + span)
        };
        return Err(corrupt(
            path,
            format!("hash {position} of the tile does not match {what}"),
        ));
    }
    if stored.len() != expected.len() {
        return Err(corrupt(
            path,
            format!(
                "the tile holds {} hashes, not {}",
                stored.len(),
                expected.len()
            ),
        ));
    }
    Ok(())
}

/// Reads, verifies and parses a checkpoint file.
fn read_checkpoint(
    dir: &Path,
    path: &str,
    verifier: &NoteVerifier,
) -> Result<Checkpoint, AuditFailure> {
    let bytes = fs::read(dir.join(path)).map_err(|source| {
        fail(
            path,
            Error::Io {
                path: path.to_owned(),
                source,
            },
        )
    })?;
    let text = SignedNote::open(&bytes, verifier).map_err(|error| fail(path, error))?;
    Checkpoint::parse(&text).map_err(|error| fail(path, error))
}

/// Kept checkpoints: `checkpoints/<size>` (callproof) and `checkpoint.<size>` (Tessera).
fn kept_checkpoint_files(dir: &Path) -> Result<Vec<(u64, String)>, AuditFailure> {
    let mut found = Vec::new();
    for (subdir, prefix) in [("checkpoints", ""), ("", "checkpoint.")] {
        let listing = dir.join(subdir);
        let Ok(entries) = fs::read_dir(&listing) else {
            continue; // no kept checkpoints of this kind
        };
        for entry in entries {
            let entry = entry.map_err(|source| {
                fail(
                    subdir,
                    Error::Io {
                        path: listing.display().to_string(),
                        source,
                    },
                )
            })?;
            let name = entry.file_name();
            let Some(size) = name
                .to_str()
                .and_then(|name| name.strip_prefix(prefix))
                .and_then(parse_decimal)
            else {
                continue;
            };
            let path = PathBuf::from(subdir).join(&name);
            found.push((size, path.to_string_lossy().into_owned()));
        }
    }
    found.sort();
    Ok(found)
}

/// Lists the files under `dir/relative`, as `/`-separated paths relative to `dir`.
fn list_files(
    dir: &Path,
    relative: &Path,
    files: &mut BTreeSet<String>,
) -> Result<(), AuditFailure> {
    let Ok(entries) = fs::read_dir(dir.join(relative)) else {
        return Ok(()); // an empty log has no tile directory
    };
    for entry in entries {
        let entry = entry.map_err(|source| {
            fail(
                relative.to_string_lossy(),
                Error::Io {
                    path: relative.display().to_string(),
                    source,
                },
            )
        })?;
        let path = relative.join(entry.file_name());
        if entry.path().is_dir() {
            list_files(dir, &path, files)?;
        } else {
            let components: Vec<String> = path
                .components()
                .map(|component| component.as_os_str().to_string_lossy().into_owned())
                .collect();
            files.insert(components.join("/"));
        }
    }
    Ok(())
}
