//! RFC 6962 Merkle tree hashing (SHA-256, leaf prefix 0x00, node prefix 0x01).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use crate::Error;

/// A SHA-256 Merkle tree hash.
pub type Hash = [u8; 32];

/// Length of a [`Hash`] in bytes.
pub const HASH_SIZE: usize = 32;

/// The root of the empty tree: SHA-256 of the empty string (RFC 6962, section 2.1).
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// The leaf hash of an entry: `SHA-256(0x00 || entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(entry);
    hasher.finalize().into()
}

/// The hash of an interior node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The Merkle tree hash of a list of leaf hashes (RFC 6962 `MTH`), computed in memory.
///
/// Used for tiles (at most 256 hashes) and by tests; the log itself never loads all its
/// leaves at once (see [`crate::proof::HashReader`]).
pub fn tree_hash(hashes: &[Hash]) -> Hash {
    let mut stack = CompactRange::default();
    for hash in hashes {
        stack.push(*hash);
    }
    stack.root()
}

/// The perfect subtrees covering `[0, size)`, as a stack of `(height, hash)` from the
/// largest (leftmost) to the smallest: enough to compute the root and to keep appending.
///
/// This is what the writer keeps in memory and what the auditor folds the whole log into,
/// so both need O(log n) memory whatever the size of the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    nodes: Vec<(u8, Hash)>,
}

impl CompactRange {
    /// The number of leaves pushed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash, merging equal-height subtrees as a binary counter does.
    pub fn push(&mut self, leaf: Hash) {
        // Only a tree of 2^64 - 1 leaves refuses one more leaf, and reaching it would take
        // 2^64 hashes: the error is unreachable, which is why `push` stays infallible.
        let pushed = self.push_subtree(0, leaf);
        debug_assert!(pushed.is_ok(), "{pushed:?}");
    }

    /// Appends the hash of a perfect subtree of `2^height` leaves. The current size must be
    /// a multiple of `2^height` (the subtree is aligned), and the new size must fit in a
    /// `u64`; otherwise nothing changes and the subtree is refused.
    pub fn push_subtree(&mut self, height: u8, hash: Hash) -> Result<(), Error> {
        let out_of_range = |reason: String| Error::OutOfRange {
            what: "subtree height",
            value: u64::from(height),
            reason,
        };
        let leaves = 1u64
            .checked_shl(u32::from(height))
            .ok_or_else(|| out_of_range("a tree has fewer than 2^64 leaves".into()))?;
        if !self.size.is_multiple_of(leaves) {
            return Err(out_of_range(format!(
                "a subtree of 2^{height} leaves cannot start at leaf {}",
                self.size
            )));
        }
        self.size = self.size.checked_add(leaves).ok_or_else(|| {
            out_of_range(format!(
                "{} leaves and 2^{height} more do not fit in a u64",
                self.size
            ))
        })?;
        let mut height = height;
        let mut hash = hash;
        while let Some(&(top_height, top_hash)) = self.nodes.last() {
            if top_height != height {
                break;
            }
            self.nodes.pop();
            hash = node_hash(&top_hash, &hash);
            height += 1;
        }
        self.nodes.push((height, hash));
        Ok(())
    }

    /// The root hash of the tree of the leaves pushed so far.
    pub fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        let Some(&(_, mut root)) = nodes.next() else {
            return EMPTY_ROOT;
        };
        for (_, left) in nodes {
            root = node_hash(left, &root);
        }
        root
    }
}

/// Encodes a hash as standard base64 (the form used in checkpoints and proofs).
pub fn to_base64(hash: &Hash) -> String {
    STANDARD.encode(hash)
}

/// Decodes a standard-base64 hash, refusing anything that is not exactly 32 bytes.
pub fn from_base64(text: &str, what: &'static str) -> Result<Hash, Error> {
    let bytes = STANDARD
        .decode(text)
        .map_err(|error| Error::malformed(what, format!("invalid base64: {error}")))?;
    Hash::try_from(bytes.as_slice()).map_err(|_| {
        Error::malformed(
            what,
            format!(
                "a hash is {HASH_SIZE} bytes, but this one is {}",
                bytes.len()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A subtree of 2^64 leaves, or one that overflows the size, is refused instead of
    /// panicking on a shift or an addition.
    #[test]
    fn push_subtree_refuses_heights_and_sizes_beyond_u64() {
        let mut range = CompactRange::default();
        assert!(range.push_subtree(64, [0; 32]).is_err());
        assert!(range.push_subtree(255, [0; 32]).is_err());
        assert_eq!(range.size(), 0);
        range.push_subtree(63, [1; 32]).unwrap();
        range.push_subtree(62, [2; 32]).unwrap();
        // 2^63 + 2^62 + 2^63 would overflow; the misaligned 2^63 is refused first.
        assert!(range.push_subtree(63, [3; 32]).is_err());
        range.push_subtree(61, [3; 32]).unwrap();
        assert_eq!(range.size(), (1 << 63) + (1 << 62) + (1 << 61));
        let mut full = CompactRange::default();
        for height in (0..64).rev() {
            full.push_subtree(height, [height; 32]).unwrap();
        }
        assert_eq!(full.size(), u64::MAX);
        let root = full.root();
        assert!(full.push_subtree(0, [9; 32]).is_err());
        assert_eq!((full.size(), full.root()), (u64::MAX, root));
    }

    #[test]
    fn push_subtree_refuses_an_unaligned_subtree() {
        let mut range = CompactRange::default();
        range.push([1; 32]);
        assert!(range.push_subtree(1, [2; 32]).is_err());
        range.push([2; 32]);
        range
            .push_subtree(1, node_hash(&[3; 32], &[4; 32]))
            .unwrap();
        assert_eq!(
            range.root(),
            tree_hash(&[[1; 32], [2; 32], [3; 32], [4; 32]])
        );
    }
}
