//! Inclusion and consistency proofs (RFC 6962 section 2.1.1 and 2.1.2, verified as in
//! RFC 9162 section 2.1.3.2 and 2.1.4.2), the `c2sp.org/tlog-proof@v1` format, and proof
//! construction from any [`HashReader`], such as tiles.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use crate::checkpoint::Checkpoint;
use crate::hash::{EMPTY_ROOT, Hash, from_base64, node_hash, to_base64};
use crate::note::{NoteVerifier, SignedNote};
use crate::tile::{TILE_HEIGHT, TileId, parse_decimal, parse_hash_tile};
use crate::{Error, Result};

/// A perfect subtree: the `2^height` leaves starting at leaf `index << height`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub height: u8,
    pub index: u64,
}

/// Source of the hashes of perfect subtrees, which proof construction asks for.
///
/// It is synchronous: asynchronous readers first fetch what [`tiles_for_nodes`] says the
/// proof needs, then answer from memory (see `store::LogReader`).
pub trait HashReader {
    /// The hashes of `nodes`, in the same order.
    fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>>;
}

/// Source of tile contents (full or partial, as named by the [`TileId`]).
pub trait TileReader {
    fn read_tile(&self, tile: TileId) -> Result<Vec<u8>>;
}

/// A [`HashReader`] over the tiles of a tree of `tree_size` leaves: node hashes are the tile
/// hashes at level `height / 8`, hashed together up to `height % 8` levels inside the tile.
///
/// `tree_size` is the size the tiles are read at (the latest checkpoint), which may be larger
/// than the size a proof is for: a proof for an older size uses a prefix of the same tiles.
pub struct TileHashReader<'a, R: ?Sized> {
    tiles: &'a R,
    tree_size: u64,
}

impl<'a, R: TileReader + ?Sized> TileHashReader<'a, R> {
    pub fn new(tiles: &'a R, tree_size: u64) -> Self {
        Self { tiles, tree_size }
    }
}

impl<R: TileReader + ?Sized> HashReader for TileHashReader<'_, R> {
    fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>> {
        let mut cache: HashMap<TileId, Vec<Hash>> = HashMap::new();
        let mut hashes = Vec::with_capacity(nodes.len());
        for &node in nodes {
            let (tile, positions) = tile_for_node(node, self.tree_size)?;
            let tile_hashes = match cache.entry(tile) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => {
                    let bytes = self.tiles.read_tile(tile)?;
                    let hashes = parse_hash_tile(&bytes, tile.width)
                        .map_err(|error| Error::Corrupt(format!("{tile}: {error}")))?;
                    entry.insert(hashes)
                }
            };
            let leaves = tile_hashes
                .get(positions.clone())
                .ok_or_else(|| Error::Missing(format!("{tile} positions {positions:?}")))?;
            hashes.push(crate::hash::tree_hash(leaves));
        }
        Ok(hashes)
    }
}

/// The tile holding the hashes that `node` is computed from in a tree of `tree_size`
/// leaves, and the positions of those hashes in the tile.
pub fn tile_for_node(node: NodeId, tree_size: u64) -> Result<(TileId, std::ops::Range<usize>)> {
    let out_of_range = || Error::OutOfRange {
        what: "node",
        value: node.index,
        reason: format!(
            "the subtree of height {} at index {} is not complete in a tree of size {tree_size}",
            node.height, node.index
        ),
    };
    let end = node
        .index
        .checked_add(1)
        .and_then(|next| next.checked_mul(1u64.checked_shl(node.height.into())?))
        .ok_or_else(out_of_range)?;
    if end > tree_size || node.height >= 64 {
        return Err(out_of_range());
    }
    let level = node.height / TILE_HEIGHT;
    let height_in_tile = node.height % TILE_HEIGHT;
    // Index of the first level-`level` tile hash under this node; cannot overflow because
    // the node ends within the tree.
    let first = node.index << height_in_tile;
    let tile_index = first >> TILE_HEIGHT;
    let start = (first & 0xff) as usize;
    let positions = start..start + (1usize << height_in_tile);
    let tile = TileId::for_tree_size(level, tile_index, tree_size).ok_or_else(out_of_range)?;
    Ok((tile, positions))
}

/// The distinct tiles needed to compute `nodes` in a tree of `tree_size` leaves.
pub fn tiles_for_nodes(nodes: &[NodeId], tree_size: u64) -> Result<Vec<TileId>> {
    let mut tiles: Vec<TileId> = nodes
        .iter()
        .map(|&node| tile_for_node(node, tree_size).map(|(tile, _)| tile))
        .collect::<Result<_>>()?;
    tiles.sort_unstable();
    tiles.dedup();
    Ok(tiles)
}

/// The perfect subtrees whose hashes, folded right to left, give the hash of leaves
/// `[start, end)`. Ranges in RFC 6962 proofs are always split this way: the largest aligned
/// subtree first, then the rest.
fn range_nodes(start: u64, end: u64) -> Vec<NodeId> {
    let mut nodes = Vec::new();
    let mut position = start;
    while position < end {
        let remaining = end - position;
        let mut height = position.trailing_zeros().min(63) as u8;
        while (1u64 << height) > remaining {
            height -= 1;
        }
        nodes.push(NodeId {
            height,
            index: position >> height,
        });
        position += 1u64 << height;
    }
    nodes
}

/// The largest power of two strictly smaller than `n` (for `n >= 2`).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Leaf ranges whose hashes form the inclusion proof of leaf `index` in the tree
/// `[start, end)` (RFC 6962 `PATH`), from the leaf's sibling up.
fn inclusion_ranges(index: u64, start: u64, end: u64, ranges: &mut Vec<(u64, u64)>) {
    let n = end - start;
    if n <= 1 {
        return;
    }
    let k = split_point(n);
    if index < start + k {
        inclusion_ranges(index, start, start + k, ranges);
        ranges.push((start + k, end));
    } else {
        inclusion_ranges(index, start + k, end, ranges);
        ranges.push((start, start + k));
    }
}

/// Leaf ranges forming the consistency proof between sizes `m` and `end - start` of the
/// tree `[start, end)` (RFC 6962 `SUBPROOF`).
fn consistency_ranges(m: u64, start: u64, end: u64, complete: bool, ranges: &mut Vec<(u64, u64)>) {
    let n = end - start;
    if m == n {
        if !complete {
            ranges.push((start, end));
        }
        return;
    }
    let k = split_point(n);
    if m <= k {
        consistency_ranges(m, start, start + k, complete, ranges);
        ranges.push((start + k, end));
    } else {
        consistency_ranges(m - k, start + k, end, false, ranges);
        ranges.push((start, start + k));
    }
}

/// The nodes to read for each proof hash (each hash folds its nodes right to left).
fn ranges_to_nodes(ranges: &[(u64, u64)]) -> Vec<Vec<NodeId>> {
    ranges
        .iter()
        .map(|&(start, end)| range_nodes(start, end))
        .collect()
}

/// The nodes an inclusion proof of `index` in a tree of `size` is made of.
pub fn inclusion_proof_nodes(index: u64, size: u64) -> Result<Vec<Vec<NodeId>>> {
    if index >= size {
        return Err(Error::OutOfRange {
            what: "leaf index",
            value: index,
            reason: format!("the tree size is {size}"),
        });
    }
    let mut ranges = Vec::new();
    inclusion_ranges(index, 0, size, &mut ranges);
    Ok(ranges_to_nodes(&ranges))
}

/// The nodes a consistency proof from `old_size` to `new_size` is made of.
pub fn consistency_proof_nodes(old_size: u64, new_size: u64) -> Result<Vec<Vec<NodeId>>> {
    if old_size > new_size {
        return Err(Error::OutOfRange {
            what: "old tree size",
            value: old_size,
            reason: format!("it is larger than the new size {new_size}"),
        });
    }
    let mut ranges = Vec::new();
    // Proofs from the empty tree or to the same size are empty.
    if old_size > 0 && old_size < new_size {
        consistency_ranges(old_size, 0, new_size, true, &mut ranges);
    }
    Ok(ranges_to_nodes(&ranges))
}

/// The nodes needed to compute the root of a tree of `size` leaves.
pub fn root_nodes(size: u64) -> Vec<NodeId> {
    range_nodes(0, size)
}

/// Reads the nodes of every proof hash in one call and folds them into the proof.
fn read_proof(
    node_groups: &[Vec<NodeId>],
    reader: &(impl HashReader + ?Sized),
) -> Result<Vec<Hash>> {
    let nodes: Vec<NodeId> = node_groups.iter().flatten().copied().collect();
    let hashes = reader.read_hashes(&nodes)?;
    if hashes.len() != nodes.len() {
        return Err(Error::Missing(format!(
            "{} node hashes, the reader returned {}",
            nodes.len(),
            hashes.len()
        )));
    }
    let mut hashes = hashes.into_iter();
    Ok(node_groups
        .iter()
        .map(|group| {
            let group_hashes: Vec<Hash> = hashes.by_ref().take(group.len()).collect();
            fold_right(&group_hashes)
        })
        .collect())
}

/// Hash of a range from its perfect subtrees, left to right: `h0 . (h1 . (h2 ...))`.
fn fold_right(hashes: &[Hash]) -> Hash {
    let mut iter = hashes.iter().rev();
    let Some(&last) = iter.next() else {
        return EMPTY_ROOT;
    };
    iter.fold(last, |right, left| node_hash(left, &right))
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves.
pub fn inclusion_proof(
    index: u64,
    size: u64,
    reader: &(impl HashReader + ?Sized),
) -> Result<Vec<Hash>> {
    read_proof(&inclusion_proof_nodes(index, size)?, reader)
}

/// The consistency proof from the tree of `old_size` leaves to the tree of `new_size`.
pub fn consistency_proof(
    old_size: u64,
    new_size: u64,
    reader: &(impl HashReader + ?Sized),
) -> Result<Vec<Hash>> {
    read_proof(&consistency_proof_nodes(old_size, new_size)?, reader)
}

/// The root hash of the tree of `size` leaves.
pub fn tree_root(size: u64, reader: &(impl HashReader + ?Sized)) -> Result<Hash> {
    let nodes = root_nodes(size);
    let hashes = reader.read_hashes(&nodes)?;
    Ok(fold_right(&hashes))
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidProof(reason.into())
}

/// Number of proof hashes below and at the border of the subtree split (RFC 9162).
fn decompose_inclusion(index: u64, size: u64) -> (usize, usize) {
    let inner = (64 - (index ^ (size - 1)).leading_zeros()) as usize;
    // `inner` may be 64, so shift without overflowing.
    let border = index.checked_shr(inner as u32).unwrap_or(0).count_ones() as usize;
    (inner, border)
}

/// Bit `i` of `value` (0 beyond bit 63).
fn bit(value: u64, i: usize) -> u64 {
    u32::try_from(i)
        .ok()
        .and_then(|i| value.checked_shr(i))
        .unwrap_or(0)
        & 1
}

fn chain_inner(seed: Hash, proof: &[Hash], index: u64) -> Hash {
    proof.iter().enumerate().fold(seed, |seed, (i, hash)| {
        if bit(index, i) == 0 {
            node_hash(&seed, hash)
        } else {
            node_hash(hash, &seed)
        }
    })
}

fn chain_inner_right(seed: Hash, proof: &[Hash], index: u64) -> Hash {
    proof.iter().enumerate().fold(seed, |seed, (i, hash)| {
        if bit(index, i) == 1 {
            node_hash(hash, &seed)
        } else {
            seed
        }
    })
}

fn chain_border_right(seed: Hash, proof: &[Hash]) -> Hash {
    proof.iter().fold(seed, |seed, hash| node_hash(hash, &seed))
}

/// The root an inclusion proof leads to for `leaf_hash` at `index` in a tree of `size`.
pub fn root_from_inclusion_proof(
    index: u64,
    size: u64,
    leaf_hash: &Hash,
    proof: &[Hash],
) -> Result<Hash> {
    if index >= size {
        return Err(invalid(format!(
            "leaf index {index} is not below the tree size {size}"
        )));
    }
    let (inner, border) = decompose_inclusion(index, size);
    if proof.len() != inner + border {
        return Err(invalid(format!(
            "this inclusion proof of index {index} in size {size} has {} hashes, but one needs {}",
            proof.len(),
            inner + border
        )));
    }
    let (inner_proof, border_proof) = proof.split_at(inner);
    let hash = chain_inner(*leaf_hash, inner_proof, index);
    Ok(chain_border_right(hash, border_proof))
}

/// Verifies that `leaf_hash` is leaf `index` of the tree of `size` leaves with root `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf_hash: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<()> {
    let computed = root_from_inclusion_proof(index, size, leaf_hash, proof)?;
    if computed != *root {
        return Err(invalid(format!(
            "the proof leads to root {}, not {}",
            to_base64(&computed),
            to_base64(root)
        )));
    }
    Ok(())
}

/// Verifies that the tree of `old_size` leaves with root `old_root` is a prefix of the tree
/// of `new_size` leaves with root `new_root`.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> Result<()> {
    if new_size < old_size {
        return Err(invalid(format!(
            "the new size {new_size} is below the old size {old_size}"
        )));
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(invalid("the sizes are equal but the proof is not empty"));
        }
        if old_size == 0 && (*old_root != EMPTY_ROOT || *new_root != EMPTY_ROOT) {
            return Err(invalid(
                "the root of the empty tree must be the hash of nothing",
            ));
        }
        if old_root != new_root {
            return Err(invalid("the sizes are equal but the roots differ"));
        }
        return Ok(());
    }
    if old_size == 0 {
        // Every tree extends the empty one: there is nothing to prove, and the
        // transparency-dev vectors require refusing such a proof. Callers that compare a
        // size-0 checkpoint check its root is EMPTY_ROOT instead.
        return Err(invalid(
            "a consistency proof from the empty tree proves nothing",
        ));
    }
    if proof.is_empty() {
        return Err(invalid("the proof is empty"));
    }
    let (inner, border) = decompose_inclusion(old_size - 1, new_size);
    let shift = old_size.trailing_zeros() as usize;
    let inner = inner.saturating_sub(shift); // shift < inner when old_size < new_size
    // The proof starts with the hash of the subtree of size 2^shift ending at old_size,
    // unless the old tree is that very subtree, whose hash is the old root.
    let (seed, rest) = if old_size == 1u64 << shift {
        (*old_root, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (*first, rest),
            None => return Err(invalid("the proof is empty")),
        }
    };
    if rest.len() != inner + border {
        let expected = proof.len() - rest.len() + inner + border;
        return Err(invalid(format!(
            "this consistency proof from {old_size} to {new_size} has {} hashes, but one needs {expected}",
            proof.len()
        )));
    }
    let (inner_proof, border_proof) = rest.split_at(inner);
    let mask = (old_size - 1) >> shift;
    let hash1 = chain_border_right(chain_inner_right(seed, inner_proof, mask), border_proof);
    if hash1 != *old_root {
        return Err(invalid(format!(
            "the proof leads to old root {}, not {}",
            to_base64(&hash1),
            to_base64(old_root)
        )));
    }
    let hash2 = chain_border_right(chain_inner(seed, inner_proof, mask), border_proof);
    if hash2 != *new_root {
        return Err(invalid(format!(
            "the proof leads to new root {}, not {}",
            to_base64(&hash2),
            to_base64(new_root)
        )));
    }
    Ok(())
}

/// Header line of a `c2sp.org/tlog-proof@v1` file.
pub const TLOG_PROOF_HEADER: &str = "c2sp.org/tlog-proof@v1";

/// A `c2sp.org/tlog-proof@v1` proof: an inclusion proof with the signed checkpoint it is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlogProof {
    /// Opaque, unauthenticated extra data.
    pub extra: Option<Vec<u8>>,
    pub index: u64,
    pub hashes: Vec<Hash>,
    /// The signed checkpoint note, verbatim.
    pub checkpoint: Vec<u8>,
}

impl TlogProof {
    /// Parses the text form.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        const WHAT: &str = "tlog-proof";
        use base64::Engine as _;
        let bad = |reason: &str| Error::malformed(WHAT, reason.to_owned());
        // Splits off the next newline-terminated line; `None` when no newline is left.
        fn next_line(rest: &mut &[u8]) -> Option<Result<String>> {
            let end = rest.iter().position(|&byte| byte == b'\n')?;
            let (line, tail) = rest.split_at(end);
            *rest = tail.get(1..).unwrap_or_default();
            Some(
                String::from_utf8(line.to_vec())
                    .map_err(|_| Error::malformed(WHAT, "a line is not UTF-8")),
            )
        }
        let mut rest = bytes;
        let header = next_line(&mut rest).ok_or_else(|| bad("no header line"))??;
        if header != TLOG_PROOF_HEADER {
            return Err(bad("the first line is not c2sp.org/tlog-proof@v1"));
        }
        let mut line = next_line(&mut rest).ok_or_else(|| bad("no index line"))??;
        let mut extra = None;
        if let Some(encoded) = line.strip_prefix("extra ") {
            let data = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|error| {
                    Error::malformed(WHAT, format!("invalid extra base64: {error}"))
                })?;
            extra = Some(data);
            line = next_line(&mut rest).ok_or_else(|| bad("no index line"))??;
        }
        let index = line
            .strip_prefix("index ")
            .and_then(parse_decimal)
            .ok_or_else(|| bad("expected `index <decimal>`"))?;
        let mut hashes = Vec::new();
        loop {
            let line = next_line(&mut rest)
                .ok_or_else(|| bad("no blank line before the checkpoint"))??;
            if line.is_empty() {
                break;
            }
            if hashes.len() == 64 {
                return Err(bad("more than 64 proof hashes"));
            }
            hashes.push(from_base64(&line, "tlog-proof hash")?);
        }
        if rest.is_empty() {
            return Err(bad("no checkpoint"));
        }
        Ok(Self {
            extra,
            index,
            hashes,
            checkpoint: rest.to_vec(),
        })
    }

    /// Formats the text form.
    pub fn to_bytes(&self) -> Vec<u8> {
        use base64::Engine as _;
        let mut text = format!("{TLOG_PROOF_HEADER}\n");
        if let Some(extra) = &self.extra {
            text.push_str("extra ");
            text.push_str(&base64::engine::general_purpose::STANDARD.encode(extra));
            text.push('\n');
        }
        text.push_str(&format!("index {}\n", self.index));
        for hash in &self.hashes {
            text.push_str(&to_base64(hash));
            text.push('\n');
        }
        text.push('\n');
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(&self.checkpoint);
        bytes
    }

    /// Verifies the checkpoint's signature by `verifier` and that `entry` is included at
    /// `index` in it; returns the checkpoint.
    pub fn verify(&self, entry: &[u8], verifier: &NoteVerifier) -> Result<Checkpoint> {
        let text = SignedNote::open(&self.checkpoint, verifier)?;
        let checkpoint = Checkpoint::parse(&text)?;
        verify_inclusion(
            self.index,
            checkpoint.size,
            &crate::hash::leaf_hash(entry),
            &self.hashes,
            &checkpoint.root_hash,
        )?;
        Ok(checkpoint)
    }
}

/// Parses a consistency proof file: one base64 hash per line (an empty file for an empty
/// proof). The sizes and roots come from the two checkpoints it links.
pub fn parse_consistency_proof(bytes: &[u8]) -> Result<Vec<Hash>> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Error::malformed("consistency proof", "not UTF-8"))?;
    let mut hashes = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if hashes.len() == 128 {
            return Err(Error::malformed(
                "consistency proof",
                "more than 128 hashes",
            ));
        }
        hashes.push(from_base64(line, "consistency proof hash")?);
    }
    Ok(hashes)
}

/// Formats a consistency proof file (see [`parse_consistency_proof`]).
pub fn format_consistency_proof(hashes: &[Hash]) -> String {
    hashes.iter().map(|hash| to_base64(hash) + "\n").collect()
}
