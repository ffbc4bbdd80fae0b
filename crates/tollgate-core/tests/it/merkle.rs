//! `MerkleLog` against a literal transcription of the RFC 9162 definitions,
//! and the verifiers against every single-bit change.

use proptest::prelude::*;
use proptest::sample::Index;
use tollgate_core::merkle::{
    self, Hash, MerkleLog, ProofError, empty_root, leaf_hash, node_hash, verify_consistency, verify_inclusion,
};

/// The split point k of RFC 9162 §2.1.1: the largest power of two below n.
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// MTH(D[n]), by the RFC's recursion and nothing cleverer.
fn mth(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [leaf] => *leaf,
        _ => {
            let k = split(leaves.len());
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

/// PATH(m, D[n]) of RFC 9162 §2.1.3.1.
fn path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    if leaves.len() <= 1 {
        return Vec::new();
    }
    let k = split(leaves.len());
    let (mut proof, sibling) =
        if m < k { (path(m, &leaves[..k]), mth(&leaves[k..])) } else { (path(m - k, &leaves[k..]), mth(&leaves[..k])) };
    proof.push(sibling);
    proof
}

/// SUBPROOF(m, D[n], b) of RFC 9162 §2.1.4.1.
fn subproof(m: usize, leaves: &[Hash], complete: bool) -> Vec<Hash> {
    let n = leaves.len();
    if m == n {
        return if complete { Vec::new() } else { vec![mth(leaves)] };
    }
    let k = split(n);
    let (mut proof, sibling) = if m <= k {
        (subproof(m, &leaves[..k], complete), mth(&leaves[k..]))
    } else {
        (subproof(m - k, &leaves[k..], false), mth(&leaves[..k]))
    };
    proof.push(sibling);
    proof
}

fn leaves(n: usize, salt: u64) -> Vec<Hash> {
    (0..n as u64).map(|i| leaf_hash(&[salt.to_be_bytes(), i.to_be_bytes()].concat())).collect()
}

fn flip(hash: &mut Hash, bit: usize) {
    hash[bit / 8] ^= 1 << (bit % 8);
}

#[test]
fn every_size_index_and_pair_up_to_64_leaves() {
    let leaves = leaves(64, 0);
    let log: MerkleLog = leaves.iter().copied().collect();
    for size in 0..=64usize {
        let root = mth(&leaves[..size]);
        assert_eq!(log.root_at(size as u64), Ok(root), "root_at({size})");
        for index in 0..size {
            let proof = log.inclusion_proof(index as u64, size as u64).expect("in range");
            assert_eq!(proof, path(index, &leaves[..size]), "PATH({index}, D[{size}])");
            assert_eq!(verify_inclusion(&leaves[index], index as u64, size as u64, &proof, &root), Ok(()));
        }
        for from in 1..=size {
            let proof = log.consistency_proof(from as u64, size as u64).expect("in range");
            assert_eq!(proof, subproof(from, &leaves[..size], true), "PROOF({from}, D[{size}])");
            let old = mth(&leaves[..from]);
            assert_eq!(verify_consistency(from as u64, size as u64, &proof, &old, &root), Ok(()));
        }
    }
}

#[test]
fn requests_beyond_the_log_are_refused() {
    let log: MerkleLog = leaves(5, 1).into_iter().collect();
    assert_eq!(log.len(), 5);
    assert_eq!(log.leaf(5), None);
    assert_eq!(log.root_at(6), Err(ProofError::SizeOutOfRange { size: 6, len: 5 }));
    assert_eq!(log.inclusion_proof(0, 6), Err(ProofError::SizeOutOfRange { size: 6, len: 5 }));
    assert_eq!(log.inclusion_proof(3, 3), Err(ProofError::IndexOutOfRange { index: 3, size: 3 }));
    assert_eq!(log.consistency_proof(1, 6), Err(ProofError::SizeOutOfRange { size: 6, len: 5 }));
    assert_eq!(log.consistency_proof(4, 3), Err(ProofError::SizesReversed { size1: 4, size2: 3 }));

    assert!(MerkleLog::new().is_empty());
    assert_eq!(MerkleLog::new().root(), empty_root());
    assert_eq!(MerkleLog::new().inclusion_proof(0, 0), Err(ProofError::IndexOutOfRange { index: 0, size: 0 }));
}

#[test]
fn nothing_is_proved_from_the_empty_tree() {
    let log: MerkleLog = leaves(3, 2).into_iter().collect();
    assert_eq!(log.consistency_proof(0, 3), Ok(Vec::new()));
    assert_eq!(log.consistency_proof(3, 3), Ok(Vec::new()));
    assert_eq!(verify_consistency(0, 3, &[], &empty_root(), &log.root()), Err(ProofError::EmptyTreeConsistency));
    assert_eq!(verify_consistency(0, 0, &[], &empty_root(), &empty_root()), Err(ProofError::EmptyTreeConsistency));
}

#[test]
fn wrong_lengths_are_reported_as_such() {
    let log: MerkleLog = leaves(8, 3).into_iter().collect();
    let proof = log.inclusion_proof(2, 8).expect("in range");
    let leaf = log.leaf(2).expect("leaf");
    assert_eq!(
        verify_inclusion(&leaf, 2, 8, &proof[..2], &log.root()),
        Err(ProofError::WrongProofLength { expected: 3, got: 2 })
    );
    let proof = log.consistency_proof(3, 8).expect("in range");
    let old = log.root_at(3).expect("in range");
    assert_eq!(
        verify_consistency(3, 8, &[], &old, &log.root()),
        Err(ProofError::WrongProofLength { expected: proof.len(), got: 0 })
    );
}

/// A log size with a past size and a leaf index within it.
fn log_index_size() -> impl Strategy<Value = (usize, usize, usize)> {
    (1usize..300).prop_flat_map(|n| (Just(n), 1..=n)).prop_flat_map(|(n, size)| (Just(n), 0..size, Just(size)))
}

/// A log size with two past sizes `1 ≤ from ≤ to ≤ n`.
fn log_from_to() -> impl Strategy<Value = (usize, usize, usize)> {
    (1usize..300).prop_flat_map(|n| (Just(n), 1..=n)).prop_flat_map(|(n, to)| (Just(n), 1..=to, Just(to)))
}

proptest! {
    #[test]
    fn inclusion_proofs_follow_the_rfc_and_any_flipped_bit_breaks_them(
        (n, index, size) in log_index_size(),
        salt in any::<u64>(),
        which in any::<Index>(),
    ) {
        let leaves = leaves(n, salt);
        let log: MerkleLog = leaves.iter().copied().collect();
        let root = mth(&leaves[..size]);
        prop_assert_eq!(log.root_at(size as u64), Ok(root));
        let proof = log.inclusion_proof(index as u64, size as u64).expect("in range");
        prop_assert_eq!(&proof, &path(index, &leaves[..size]));
        let (index, size) = (index as u64, size as u64);
        let leaf = leaves[index as usize];
        prop_assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root), Ok(()));
        prop_assert_eq!(merkle::root_from_inclusion_proof(&leaf, index, size, &proof), Ok(root));

        // One bit anywhere in proof ‖ root ‖ leaf.
        let mut hashes: Vec<Hash> = proof.iter().copied().chain([root, leaf]).collect();
        let bit = which.index(hashes.len() * 256);
        flip(&mut hashes[bit / 256], bit % 256);
        let (leaf, rest) = hashes.split_last().expect("leaf");
        let (root, proof) = rest.split_last().expect("root");
        prop_assert_eq!(verify_inclusion(leaf, index, size, proof, root), Err(ProofError::RootMismatch));
    }

    #[test]
    fn consistency_proofs_follow_the_rfc_and_any_flipped_bit_breaks_them(
        (n, from, to) in log_from_to(),
        salt in any::<u64>(),
        which in any::<Index>(),
    ) {
        let leaves = leaves(n, salt);
        let log: MerkleLog = leaves.iter().copied().collect();
        let proof = log.consistency_proof(from as u64, to as u64).expect("in range");
        prop_assert_eq!(&proof, &subproof(from, &leaves[..to], true));
        let (old, new) = (mth(&leaves[..from]), mth(&leaves[..to]));
        let (from, to) = (from as u64, to as u64);
        prop_assert_eq!(verify_consistency(from, to, &proof, &old, &new), Ok(()));

        // One bit anywhere in proof ‖ root1 ‖ root2.
        let mut hashes: Vec<Hash> = proof.iter().copied().chain([old, new]).collect();
        let bit = which.index(hashes.len() * 256);
        flip(&mut hashes[bit / 256], bit % 256);
        let (new, rest) = hashes.split_last().expect("root2");
        let (old, proof) = rest.split_last().expect("root1");
        prop_assert_eq!(verify_consistency(from, to, proof, old, new), Err(ProofError::RootMismatch));
    }

    /// Garbage in, an error out: never a panic, whatever the sizes.
    #[test]
    fn verifiers_never_panic(
        index in any::<u64>(),
        size in any::<u64>(),
        size1 in prop_oneof![any::<u64>(), 0u64..70],
        size2 in prop_oneof![any::<u64>(), 0u64..70],
        proof in prop::collection::vec(any::<[u8; 32]>(), 0..80),
        a in any::<[u8; 32]>(),
        b in any::<[u8; 32]>(),
    ) {
        let _ = verify_inclusion(&a, index, size, &proof, &b);
        let _ = merkle::root_from_inclusion_proof(&a, index, size, &proof);
        let _ = verify_consistency(size1, size2, &proof, &a, &b);
    }

    #[test]
    fn appending_never_changes_the_past(n in 1usize..200, more in 1usize..100) {
        let leaves = leaves(n + more, 4);
        let mut log: MerkleLog = leaves[..n].iter().copied().collect();
        let before: Vec<Hash> = (0..=n as u64).map(|s| log.root_at(s).expect("in range")).collect();
        log.extend(leaves[n..].iter().copied());
        let after: Vec<Hash> = (0..=n as u64).map(|s| log.root_at(s).expect("in range")).collect();
        prop_assert_eq!(before, after);
        prop_assert_eq!(log.root(), mth(&leaves));
    }
}
