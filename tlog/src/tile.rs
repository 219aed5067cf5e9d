//! C2SP `tlog-tiles`: tile and entry-bundle paths and contents.
//!
//! A tile at level `L` holds up to 256 consecutive hashes of perfect subtrees of height
//! `8 * L`; a level-0 tile holds leaf hashes, and the entry bundle with the same index holds
//! the entries themselves, each behind a big-endian 16-bit length.

use std::fmt;

use crate::hash::{HASH_SIZE, Hash, leaf_hash};
use crate::{Error, Result};

/// Height of the subtree a tile covers: a tile holds `2^8 = 256` hashes.
pub const TILE_HEIGHT: u8 = 8;
/// Number of hashes in a full tile (and of entries in a full bundle).
pub const TILE_WIDTH: u16 = 256;
/// Largest entry an entry bundle can hold (its length prefix is a 16-bit integer).
pub const MAX_ENTRY_SIZE: usize = u16::MAX as usize;
/// Highest tile level allowed by the spec.
pub const MAX_TILE_LEVEL: u8 = 63;

/// A hash tile: its level, its index within the level, and its width (1 to 256; 256 is a
/// full tile, anything less a partial tile served under `.p/<W>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileId {
    pub level: u8,
    pub index: u64,
    pub width: u16,
}

impl TileId {
    /// The path of this tile relative to the log prefix, e.g. `tile/0/x001/234.p/7`.
    pub fn path(&self) -> String {
        tile_path(self.level, self.index, self.width)
    }

    /// Whether this is a full (256-hash) tile.
    pub fn is_full(&self) -> bool {
        self.width == TILE_WIDTH
    }

    /// The tile with this level and index as it exists in a tree of `tree_size` leaves
    /// (full, or partial with the right width), or `None` if the tree does not reach it.
    pub fn for_tree_size(level: u8, index: u64, tree_size: u64) -> Option<TileId> {
        let width = tile_width(level, index, tree_size);
        (width > 0).then_some(TileId {
            level,
            index,
            width,
        })
    }
}

impl fmt::Display for TileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tile {}", self.path())
    }
}

/// The path of a hash tile: `tile/<L>/<N>[.p/<W>]`.
pub fn tile_path(level: u8, index: u64, width: u16) -> String {
    format!("tile/{level}/{}", index_path(index, width))
}

/// The path of an entry bundle: `tile/entries/<N>[.p/<W>]`.
pub fn entries_path(index: u64, width: u16) -> String {
    format!("tile/entries/{}", index_path(index, width))
}

/// The `<N>[.p/<W>]` part of a tile path: `N` in zero-padded groups of three digits, all
/// but the last prefixed with `x` (1234067 → `x001/x234/067`).
fn index_path(index: u64, width: u16) -> String {
    let mut groups = vec![format!("{:03}", index % 1000)];
    let mut rest = index / 1000;
    while rest > 0 {
        groups.push(format!("x{:03}", rest % 1000));
        rest /= 1000;
    }
    groups.reverse();
    let mut path = groups.join("/");
    if width < TILE_WIDTH {
        path.push_str(&format!(".p/{width}"));
    }
    path
}

/// What a tile path names: a hash tile or an entry bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TilePath {
    Hashes(TileId),
    Entries { index: u64, width: u16 },
}

/// Parses a path relative to the log prefix (`tile/0/x001/234.p/7`, `tile/entries/000`),
/// refusing anything that [`tile_path`] or [`entries_path`] would not have produced, so a
/// server can map request paths to tiles without path tricks.
pub fn parse_tile_path(path: &str) -> Result<TilePath> {
    let bad = |reason: &str| Error::malformed("tile path", format!("{reason} in {path:?}"));
    let rest = path
        .strip_prefix("tile/")
        .ok_or_else(|| bad("no `tile/` prefix"))?;
    let (level, rest) = rest.split_once('/').ok_or_else(|| bad("no level"))?;
    let level = if level == "entries" {
        None
    } else {
        let level = parse_decimal(level).ok_or_else(|| bad("invalid level"))?;
        if level > u64::from(MAX_TILE_LEVEL) {
            return Err(bad("level above 63"));
        }
        Some(level as u8)
    };
    let (index_part, width) = match rest.split_once(".p/") {
        Some((index_part, width)) => {
            let width = parse_decimal(width).ok_or_else(|| bad("invalid width"))?;
            if !(1..u64::from(TILE_WIDTH)).contains(&width) {
                return Err(bad("partial width not in 1..=255"));
            }
            (index_part, width as u16)
        }
        None => (rest, TILE_WIDTH),
    };
    let groups: Vec<&str> = index_part.split('/').collect();
    let mut index: u64 = 0;
    for (position, group) in groups.iter().enumerate() {
        let is_last = position + 1 == groups.len();
        let digits = if is_last {
            *group
        } else {
            group
                .strip_prefix('x')
                .ok_or_else(|| bad("index group without `x`"))?
        };
        if digits.len() != 3 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(bad("index group is not three digits"));
        }
        let value: u64 = digits.parse().map_err(|_| bad("invalid index group"))?;
        index = index
            .checked_mul(1000)
            .and_then(|index| index.checked_add(value))
            .ok_or_else(|| bad("index too large"))?;
    }
    // Refuse non-canonical spellings such as `x000/001` for 1.
    if index_path(index, width) != rest {
        return Err(bad("non-canonical index"));
    }
    Ok(match level {
        Some(level) => TilePath::Hashes(TileId {
            level,
            index,
            width,
        }),
        None => TilePath::Entries { index, width },
    })
}

/// Parses ASCII decimal without sign, spaces or leading zeroes (other than `0` itself).
pub(crate) fn parse_decimal(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|byte| byte.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if canonical { text.parse().ok() } else { None }
}

/// The width of tile `index` at `level` in a tree of `tree_size` leaves: 256 for a full tile,
/// `1..=255` for the partial tile at the right edge, 0 for a tile the tree does not reach.
pub fn tile_width(level: u8, index: u64, tree_size: u64) -> u16 {
    let shift = u32::from(level) * u32::from(TILE_HEIGHT);
    let hashes_at_level = tree_size.checked_shr(shift).unwrap_or(0);
    let Some(first) = index.checked_mul(u64::from(TILE_WIDTH)) else {
        return 0;
    };
    let available = hashes_at_level.saturating_sub(first);
    available.min(u64::from(TILE_WIDTH)) as u16
}

/// Splits the contents of a hash tile into hashes, checking it has exactly `width` of them.
pub fn parse_hash_tile(bytes: &[u8], width: u16) -> Result<Vec<Hash>> {
    let expected = usize::from(width) * HASH_SIZE;
    if bytes.len() != expected {
        return Err(Error::malformed(
            "hash tile",
            format!(
                "a tile of width {width} is {expected} bytes, but this one is {}",
                bytes.len()
            ),
        ));
    }
    Ok(bytes
        .chunks_exact(HASH_SIZE)
        .filter_map(|chunk| Hash::try_from(chunk).ok())
        .collect())
}

/// Concatenates hashes into tile contents.
pub fn format_hash_tile(hashes: &[Hash]) -> Vec<u8> {
    hashes.concat()
}

/// Appends one entry to bundle contents, behind its 16-bit big-endian length.
pub fn append_to_bundle(bundle: &mut Vec<u8>, entry: &[u8]) -> Result<()> {
    let len = u16::try_from(entry.len()).map_err(|_| Error::EntryTooLarge {
        position: 0,
        len: entry.len(),
    })?;
    bundle.extend_from_slice(&len.to_be_bytes());
    bundle.extend_from_slice(entry);
    Ok(())
}

/// Splits the contents of an entry bundle into entries.
pub fn parse_bundle(bytes: &[u8]) -> Result<Vec<&[u8]>> {
    let mut entries = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (len_bytes, tail) = rest.split_at_checked(2).ok_or_else(|| {
            Error::malformed(
                "entry bundle",
                format!("truncated length prefix of entry {}", entries.len()),
            )
        })?;
        let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
        let (entry, tail) = tail.split_at_checked(len).ok_or_else(|| {
            Error::malformed(
                "entry bundle",
                format!(
                    "entry {} claims {len} bytes but only {} remain",
                    entries.len(),
                    tail.len()
                ),
            )
        })?;
        if entries.len() == usize::from(TILE_WIDTH) {
            return Err(Error::malformed("entry bundle", "more than 256 entries"));
        }
        entries.push(entry);
        rest = tail;
    }
    Ok(entries)
}

/// The level-0 tile contents for the entries of a bundle.
pub fn bundle_leaf_hashes(entries: &[&[u8]]) -> Vec<Hash> {
    entries.iter().map(|entry| leaf_hash(entry)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_encoding_matches_spec_example() {
        assert_eq!(tile_path(0, 1234067, 256), "tile/0/x001/x234/067");
        assert_eq!(tile_path(2, 0, 1), "tile/2/000.p/1");
        assert_eq!(entries_path(1000, 17), "tile/entries/x001/000.p/17");
        assert_eq!(entries_path(999, 256), "tile/entries/999");
    }

    #[test]
    fn parse_tile_path_round_trips_and_refuses_non_canonical() {
        for (level, index, width) in [(0, 0, 1), (3, 1234067, 256), (63, u64::MAX, 255)] {
            let id = TileId {
                level,
                index,
                width,
            };
            assert_eq!(parse_tile_path(&id.path()).ok(), Some(TilePath::Hashes(id)));
        }
        for bad in [
            "tile/0/x000/001",
            "tile/0/1",
            "tile/64/000",
            "tile/0/000.p/0",
            "tile/0/000.p/256",
            "tile/0/000.p/01",
            "tile/00/000",
            "tile/entries/000/",
            "tile/0/x999/x999/x999/x999/x999/x999/x999/999",
        ] {
            assert!(parse_tile_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tile_width_follows_spec_example() {
        // "a tree of size 70,000 will be represented by 273 full level 0 tiles, one partial
        // level 0 tile of width 112, one full level 1 tile, one partial level 1 tile of width
        // 17, and one partial level 2 tile of width 1."
        assert_eq!(tile_width(0, 272, 70_000), 256);
        assert_eq!(tile_width(0, 273, 70_000), 112);
        assert_eq!(tile_width(0, 274, 70_000), 0);
        assert_eq!(tile_width(1, 0, 70_000), 256);
        assert_eq!(tile_width(1, 1, 70_000), 17);
        assert_eq!(tile_width(2, 0, 70_000), 1);
        assert_eq!(tile_width(3, 0, 70_000), 0);
        assert_eq!(tile_width(63, u64::MAX, u64::MAX), 0);
    }

    #[test]
    fn bundle_round_trip_and_truncation() {
        let mut bundle = Vec::new();
        append_to_bundle(&mut bundle, b"one").unwrap();
        append_to_bundle(&mut bundle, b"").unwrap();
        assert_eq!(parse_bundle(&bundle).unwrap(), vec![&b"one"[..], &b""[..]]);
        assert!(parse_bundle(&bundle[..bundle.len() - 1]).is_err());
        assert!(parse_bundle(&[0]).is_err());
        assert!(append_to_bundle(&mut bundle, &vec![0; MAX_ENTRY_SIZE + 1]).is_err());
    }
}
