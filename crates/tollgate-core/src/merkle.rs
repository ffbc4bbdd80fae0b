//! The ledger's Merkle tree, as RFC 6962 and RFC 9162 define it.
//!
//! Any RFC 6962 verifier must be able to check what Tollgate serves, so the
//! hashing and the proof shapes follow the RFC exactly, not a variant of it.
//! The server holds a [`MerkleLog`] to answer for any past tree size; clients
//! hold no tree and use only the free verifier functions.

use sha2::{Digest, Sha256};

/// A SHA-256 digest: a leaf hash, an interior node or a tree root.
pub type Hash = [u8; 32];

/// Leaves and nodes hash with different prefixes so that no leaf can pass for
/// an interior node (the second-preimage defence of RFC 6962 §2.1).
const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// The hash of one ledger entry as it sits in the tree.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([LEAF_PREFIX]);
    hasher.update(data);
    hasher.finalize().into()
}

/// The hash of an interior node over two subtrees.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([NODE_PREFIX]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The root of the tree with no leaves (RFC 6962 defines it as SHA-256 of
/// the empty string).
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Why a proof could not be produced or did not verify.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ProofError {
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("tree size {size} is beyond the log's {len} leaves")]
    SizeOutOfRange { size: u64, len: u64 },
    #[error("first tree size {size1} is larger than second tree size {size2}")]
    SizesReversed { size1: u64, size2: u64 },
    #[error("a consistency proof from the empty tree proves nothing")]
    EmptyTreeConsistency,
    #[error("proof has {got} hashes, expected {expected}")]
    WrongProofLength { expected: usize, got: usize },
    #[error("the proof does not lead to the expected root")]
    RootMismatch,
}

/// An append-only tree of leaf hashes that answers for every past size.
///
/// Only complete (perfect) subtrees are stored: `levels[k][i]` is the root of
/// the subtree over leaves `[i·2^k, (i+1)·2^k)`. Every node that RFC 6962
/// mentions for a tree of size `n ≤ len` is either one of those or a right
/// edge made of at most log₂ n of them, so roots and proofs for any past size
/// cost O(log n) hashes while the whole structure takes about two hashes per
/// leaf.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MerkleLog {
    levels: Vec<Vec<Hash>>,
}

impl MerkleLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of leaves.
    pub fn len(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The leaf hash at `index`, if the log has that many leaves.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        let index = usize::try_from(index).ok()?;
        self.levels.first()?.get(index).copied()
    }

    /// Appends a leaf hash (see [`leaf_hash`]) and completes every perfect
    /// subtree it closes, so later queries never hash a full subtree again.
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let row = &mut self.levels[level];
            row.push(hash);
            let n = row.len();
            if n % 2 == 1 {
                return;
            }
            hash = node_hash(&row[n - 2], &row[n - 1]);
            level += 1;
        }
    }

    /// The root of the whole log.
    pub fn root(&self) -> Hash {
        match self.len() {
            0 => empty_root(),
            len => self.range_hash(0, len),
        }
    }

    /// The root the log had when it held `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        self.check_size(size)?;
        Ok(match size {
            0 => empty_root(),
            size => self.range_hash(0, size),
        })
    }

    /// The audit path of RFC 9162 §2.1.3.1 for leaf `index` in the tree of
    /// `size` leaves, ordered from the leaf up.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(size)?;
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        // Walk PATH(m, D[start:end]) from the root down, collecting siblings;
        // the RFC lists them from the leaf up, hence the final reverse.
        let mut proof = Vec::new();
        let (mut start, mut end) = (0, size);
        while end - start > 1 {
            let mid = start + split_point(end - start);
            if index < mid {
                proof.push(self.range_hash(mid, end));
                end = mid;
            } else {
                proof.push(self.range_hash(start, mid));
                start = mid;
            }
        }
        proof.reverse();
        Ok(proof)
    }

    /// The consistency proof of RFC 9162 §2.1.4.1 (the SUBPROOF algorithm)
    /// between the trees of `from` and `to` leaves.
    ///
    /// It is empty when `from == to` (the roots must simply be equal) and when
    /// `from == 0`: every tree extends the empty one, so there is nothing to
    /// prove, and [`verify_consistency`] refuses to call that a proof.
    pub fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(to)?;
        if from > to {
            return Err(ProofError::SizesReversed { size1: from, size2: to });
        }
        if from == 0 || from == to {
            return Ok(Vec::new());
        }
        // SUBPROOF(m, D[start:end], complete), unrolled from the root down.
        let mut proof = Vec::new();
        let (mut start, mut end, mut m) = (0, to, from);
        let mut complete = true;
        while m != end - start {
            let k = split_point(end - start);
            if m <= k {
                proof.push(self.range_hash(start + k, end));
                end = start + k;
            } else {
                proof.push(self.range_hash(start, start + k));
                start += k;
                m -= k;
                complete = false;
            }
        }
        if !complete {
            // The old tree's root is not a node of the new tree here, so the
            // verifier needs this subtree to rebuild both roots.
            proof.push(self.range_hash(start, end));
        }
        proof.reverse();
        Ok(proof)
    }

    fn check_size(&self, size: u64) -> Result<(), ProofError> {
        let len = self.len();
        if size > len {
            return Err(ProofError::SizeOutOfRange { size, len });
        }
        Ok(())
    }

    /// MTH(D[start:end]) for a range that is a node of an RFC 6962 tree:
    /// `start` is a multiple of a power of two at least `end - start`, so the
    /// range is a run of stored perfect subtrees of decreasing size (one per
    /// set bit of its length). Folding them from the right is the RFC's
    /// recursion.
    ///
    /// Callers guarantee `start < end <= self.len()`.
    fn range_hash(&self, start: u64, end: u64) -> Hash {
        let width = end - start;
        let mut offset = end;
        let mut acc: Option<Hash> = None;
        for level in 0..u64::BITS {
            let bit = 1u64 << level;
            if width & bit == 0 {
                continue;
            }
            offset -= bit;
            // In range by the invariant on `levels` and `end <= len`.
            let piece = self.levels[level as usize][(offset >> level) as usize];
            acc = Some(match acc {
                None => piece,
                Some(right) => node_hash(&piece, &right),
            });
        }
        acc.unwrap_or_else(empty_root)
    }
}

impl Extend<Hash> for MerkleLog {
    fn extend<I: IntoIterator<Item = Hash>>(&mut self, leaves: I) {
        for leaf in leaves {
            self.push(leaf);
        }
    }
}

impl FromIterator<Hash> for MerkleLog {
    fn from_iter<I: IntoIterator<Item = Hash>>(leaves: I) -> Self {
        let mut log = Self::new();
        log.extend(leaves);
        log
    }
}

/// The largest power of two strictly below `n`, where RFC 6962 splits a tree
/// of `n ≥ 2` leaves.
fn split_point(n: u64) -> u64 {
    1 << (u64::BITS - 1 - (n - 1).leading_zeros())
}

/// Checks that `proof` proves leaf `leaf_hash` at `index` in the tree of
/// `size` leaves whose root is `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    let computed = root_from_inclusion_proof(leaf_hash, index, size, proof)?;
    if computed != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The root that an inclusion proof leads to; a client that trusts no root
/// yet can compare it with a signed checkpoint later.
pub fn root_from_inclusion_proof(leaf_hash: &Hash, index: u64, size: u64, proof: &[Hash]) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (inner, border) = decompose_inclusion(index, size);
    let expected = inner + border;
    if proof.len() != expected {
        return Err(ProofError::WrongProofLength { expected, got: proof.len() });
    }
    let (inner_part, border_part) = proof.split_at(inner);
    let hash = chain_inner(*leaf_hash, inner_part, index);
    Ok(chain_border_right(hash, border_part))
}

/// Checks that the tree of `size2` leaves with root `root2` extends the tree
/// of `size1` leaves with root `root1` (RFC 9162 §2.1.4.2).
///
/// Equal sizes need an empty proof and equal roots. A first size of zero is
/// refused rather than accepted: anything extends the empty tree, so such a
/// "proof" would vouch for `root2` without checking it.
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
    root2: &Hash,
) -> Result<(), ProofError> {
    if size1 > size2 {
        return Err(ProofError::SizesReversed { size1, size2 });
    }
    if size1 == 0 {
        return Err(ProofError::EmptyTreeConsistency);
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(ProofError::WrongProofLength { expected: 0, got: proof.len() });
        }
        if root1 != root2 {
            return Err(ProofError::RootMismatch);
        }
        return Ok(());
    }

    // The proof is the tail of the audit path for leaf size1 - 1 in the new
    // tree, above the largest perfect subtree that ends at size1; that
    // subtree's root comes first unless it is the whole old tree (root1).
    let (inner, border) = decompose_inclusion(size1 - 1, size2);
    let shift = size1.trailing_zeros() as usize;
    let inner = inner.saturating_sub(shift);
    let seeded_by_root1 = size1.is_power_of_two();
    let skip = usize::from(!seeded_by_root1);
    let expected = skip + inner + border;
    if proof.len() != expected {
        return Err(ProofError::WrongProofLength { expected, got: proof.len() });
    }
    let (seed, rest) = match proof.split_first() {
        Some((first, rest)) if !seeded_by_root1 => (*first, rest),
        _ => (*root1, proof),
    };
    let mask = (size1 - 1) >> shift;
    let (inner_part, border_part) = rest.split_at(inner);

    let old = chain_border_right(chain_inner_right(seed, inner_part, mask), border_part);
    if old != *root1 {
        return Err(ProofError::RootMismatch);
    }
    let new = chain_border_right(chain_inner(seed, inner_part, mask), border_part);
    if new != *root2 {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Splits the audit path of leaf `index` in a tree of `size` leaves into the
/// part below the point where the paths to `index` and to `size - 1` meet
/// (`inner`) and the part along the right border above it (`border`).
/// Requires `index < size`.
fn decompose_inclusion(index: u64, size: u64) -> (usize, usize) {
    let inner = (u64::BITS - (index ^ (size - 1)).leading_zeros()) as usize;
    let border = index.checked_shr(inner as u32).unwrap_or(0).count_ones() as usize;
    (inner, border)
}

/// Climbs from `seed` at position `index` on its level, taking each proof
/// hash as the sibling on the side the index bit says.
fn chain_inner(mut seed: Hash, proof: &[Hash], index: u64) -> Hash {
    for (i, sibling) in proof.iter().enumerate() {
        if bit(index, i) {
            seed = node_hash(sibling, &seed);
        } else {
            seed = node_hash(&seed, sibling);
        }
    }
    seed
}

/// Like [`chain_inner`] but ignores right siblings, which yields the same
/// subtree as it was before those leaves were appended (the old root).
fn chain_inner_right(mut seed: Hash, proof: &[Hash], index: u64) -> Hash {
    for (i, sibling) in proof.iter().enumerate() {
        if bit(index, i) {
            seed = node_hash(sibling, &seed);
        }
    }
    seed
}

/// Along the right border every sibling is on the left.
fn chain_border_right(mut seed: Hash, proof: &[Hash]) -> Hash {
    for sibling in proof {
        seed = node_hash(sibling, &seed);
    }
    seed
}

fn bit(value: u64, i: usize) -> bool {
    u32::try_from(i).ok().and_then(|i| value.checked_shr(i)).is_some_and(|v| v & 1 == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_point_is_the_largest_power_of_two_below() {
        let cases = [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (u64::MAX, 1 << 63)];
        for (n, want) in cases {
            assert_eq!(split_point(n), want, "n = {n}");
        }
    }

    #[test]
    fn levels_hold_only_complete_subtrees() {
        let log: MerkleLog = (0..13u8).map(|i| leaf_hash(&[i])).collect();
        let widths: Vec<usize> = log.levels.iter().map(Vec::len).collect();
        assert_eq!(widths, [13, 6, 3, 1]);
    }

    #[test]
    fn huge_sizes_do_not_overflow() {
        let h = leaf_hash(b"x");
        let proof = vec![h; 64];
        for (index, size) in [(0, u64::MAX), (u64::MAX - 1, u64::MAX), (1 << 63, u64::MAX)] {
            assert!(verify_inclusion(&h, index, size, &proof, &h).is_err());
        }
        for (size1, size2) in [(1, u64::MAX), (u64::MAX - 1, u64::MAX), (1 << 63, u64::MAX)] {
            assert!(verify_consistency(size1, size2, &proof, &h, &h).is_err());
        }
    }
}
