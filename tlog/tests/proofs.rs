//! Proofs read from tiles agree with a naive in-memory RFC 6962 tree, for many sizes.

use callproof_tlog::hash::{Hash, leaf_hash, node_hash};
use callproof_tlog::proof::{verify_consistency, verify_inclusion};
use callproof_tlog::store::LogReader;
use object_store::path::Path;
use proptest::prelude::*;

use crate::support::*;

/// RFC 6962 section 2.1, straight from the definitions.
fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => callproof_tlog::hash::EMPTY_ROOT,
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

fn path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    let n = leaves.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = split(n);
    if m < k {
        let mut proof = path(m, &leaves[..k]);
        proof.push(mth(&leaves[k..]));
        proof
    } else {
        let mut proof = path(m - k, &leaves[k..]);
        proof.push(mth(&leaves[..k]));
        proof
    }
}

fn subproof(m: usize, leaves: &[Hash], complete: bool) -> Vec<Hash> {
    let n = leaves.len();
    if m == n {
        return if complete {
            Vec::new()
        } else {
            vec![mth(leaves)]
        };
    }
    let k = split(n);
    if m <= k {
        let mut proof = subproof(m, &leaves[..k], complete);
        proof.push(mth(&leaves[k..]));
        proof
    } else {
        let mut proof = subproof(m - k, &leaves[k..], false);
        proof.push(mth(&leaves[..k]));
        proof
    }
}

fn naive_consistency(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    if m == 0 || m == leaves.len() {
        Vec::new()
    } else {
        subproof(m, leaves, true)
    }
}

fn entry(index: u64) -> Vec<u8> {
    format!("entry {index}").into_bytes()
}

/// Writes a log of `size` entries in batches of `batch`, then checks proofs for the given
/// (index, size) and (old, new) pairs against the naive tree.
fn check_log(size: u64, batch: u64, inclusions: &[(u64, u64)], consistencies: &[(u64, u64)]) {
    let leaves: Vec<Hash> = (0..size).map(|index| leaf_hash(&entry(index))).collect();
    runtime().block_on(async {
        let store = memory_store();
        let mut writer = tessera_writer(&store).await;
        let mut start = 0;
        while start < size {
            let end = (start + batch).min(size);
            writer
                .append(&(start..end).map(entry).collect::<Vec<_>>(), &[])
                .await
                .unwrap();
            start = end;
        }
        let reader = LogReader::new(store.clone(), Path::default(), tessera_verifier());
        let latest = reader.checkpoint().await.unwrap().checkpoint;
        assert_eq!(latest.root_hash, mth(&leaves));
        for &(index, tree_size) in inclusions {
            let proof = reader
                .inclusion_proof(index, tree_size, size)
                .await
                .unwrap();
            let prefix = &leaves[..tree_size as usize];
            assert_eq!(
                proof,
                path(index as usize, prefix),
                "inclusion {index} in {tree_size}"
            );
            verify_inclusion(
                index,
                tree_size,
                &leaves[index as usize],
                &proof,
                &mth(prefix),
            )
            .unwrap();
        }
        for &(old, new) in consistencies {
            let proof = reader.consistency_proof(old, new, size).await.unwrap();
            let new_leaves = &leaves[..new as usize];
            assert_eq!(
                proof,
                naive_consistency(old as usize, new_leaves),
                "consistency {old} to {new}"
            );
            if old == 0 && new > 0 {
                // Nothing to prove from the empty tree; the verifier refuses such proofs.
                assert!(proof.is_empty());
            } else {
                verify_consistency(
                    old,
                    new,
                    &proof,
                    &mth(&leaves[..old as usize]),
                    &mth(new_leaves),
                )
                .unwrap();
            }
        }
        // A tlog-proof of the last entry verifies against the latest checkpoint.
        let signed = reader.checkpoint().await.unwrap();
        let tlog_proof = reader.tlog_proof(size - 1, &signed).await.unwrap();
        tlog_proof
            .verify(&entry(size - 1), &tessera_verifier())
            .unwrap();
        assert!(
            tlog_proof
                .verify(&entry(size), &tessera_verifier())
                .is_err()
        );
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn proofs_from_tiles_match_naive_tree(
        size in 1u64..1500,
        batch in 1u64..400,
        picks in proptest::collection::vec((any::<u64>(), any::<u64>()), 8),
    ) {
        let inclusions: Vec<(u64, u64)> = picks
            .iter()
            .map(|&(a, b)| {
                let tree_size = 1 + b % size;
                (a % tree_size, tree_size)
            })
            .collect();
        let consistencies: Vec<(u64, u64)> = picks
            .iter()
            .map(|&(a, b)| {
                let new = b % (size + 1);
                (a % (new + 1), new)
            })
            .collect();
        check_log(size, batch, &inclusions, &consistencies);
    }
}

/// Tiles up to level 2, and proofs whose nodes span several tile levels.
#[test]
fn proofs_in_a_log_with_three_tile_levels() {
    let size = 70_000;
    let inclusions = [
        (0, size),
        (65_535, size),
        (65_536, size),
        (69_999, size),
        (300, 65_537),
        (12_345, 66_000),
    ];
    let consistencies = [
        (1, size),
        (256, size),
        (65_536, size),
        (65_537, 69_999),
        (1000, 66_000),
        (size, size),
    ];
    check_log(size, 4096, &inclusions, &consistencies);
}
