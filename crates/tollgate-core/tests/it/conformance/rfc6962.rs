//! RFC 6962 / RFC 9162 proof vectors from transparency-dev/merkle.
//!
//! Not run: `rfc6962/subtreeinclusion` and `rfc6962/subtreeconsistency`.
//! They test proofs about arbitrary leaf ranges `[start, end)` of a tree
//! (the subtree proofs of the Merkle Tree Certificates draft), where the
//! empty range and ranges not starting at 0 have meanings our API does not
//! have: Tollgate only proves statements about prefixes `[0, size)` of its
//! ledger, which the `inclusion` and `consistency` folders cover.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tollgate_core::merkle::{self, Hash, MerkleLog};

use super::{conformance_dir, json_files, read_json, unhex};

fn hash_from_hex(s: &str) -> Hash {
    unhex(s).try_into().expect("32-byte hex hash")
}

/// The eight leaves and nine roots of `rfc6962/roots.json`.
struct Reference {
    leaves: Vec<Vec<u8>>,
    roots: Vec<Hash>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RootsFile {
    #[allow(dead_code)]
    source: String,
    #[allow(dead_code)]
    hash: String,
    leaf_inputs_hex: Vec<String>,
    root_hash_hex_by_tree_size: Vec<String>,
}

fn reference() -> Reference {
    let file: RootsFile = read_json(&conformance_dir().join("rfc6962/roots.json"));
    let reference = Reference {
        leaves: file.leaf_inputs_hex.iter().map(|h| unhex(h)).collect(),
        roots: file.root_hash_hex_by_tree_size.iter().map(|h| hash_from_hex(h)).collect(),
    };
    assert_eq!(reference.leaves.len(), 8);
    assert_eq!(reference.roots.len(), 9, "one root per size 0..=8");
    reference
}

impl Reference {
    fn log(&self) -> MerkleLog {
        self.leaves.iter().map(|l| merkle::leaf_hash(l)).collect()
    }
}

#[test]
fn roots_of_the_reference_tree() {
    let reference = reference();
    let mut growing = MerkleLog::new();
    for (size, leaf) in reference.leaves.iter().enumerate() {
        assert_eq!(growing.root(), reference.roots[size], "root of {size} leaves");
        growing.push(merkle::leaf_hash(leaf));
    }
    assert_eq!(growing.root(), reference.roots[8]);
    assert_eq!(reference.roots[0], merkle::empty_root());

    let log = reference.log();
    assert_eq!(log, growing);
    for (size, root) in reference.roots.iter().enumerate() {
        assert_eq!(log.root_at(size as u64), Ok(*root), "root_at({size})");
    }
    for size in 1..=8u64 {
        let root = reference.roots[size as usize];
        for index in 0..size {
            let leaf = log.leaf(index).expect("leaf");
            let proof = log.inclusion_proof(index, size).expect("inclusion proof");
            assert_eq!(merkle::verify_inclusion(&leaf, index, size, &proof, &root), Ok(()));
        }
        for from in 1..=size {
            let old = reference.roots[from as usize];
            let proof = log.consistency_proof(from, size).expect("consistency proof");
            assert_eq!(merkle::verify_consistency(from, size, &proof, &old, &root), Ok(()));
        }
    }
}

/// A vector's base64 value as our typed API sees it: a [`Hash`], or bytes
/// that no `Hash` can hold (the vectors test byte-slice verifiers with empty
/// and short values).
fn decode(b64: &str) -> Result<Hash, Vec<u8>> {
    let bytes = STANDARD.decode(b64).unwrap_or_else(|e| panic!("bad base64 {b64:?}: {e}"));
    Hash::try_from(bytes.as_slice()).map_err(|_| bytes)
}

/// How a vector's values reach the verifier.
///
/// A value that is not 32 bytes cannot be a `Hash`, so a client decoding it
/// is refused before any verifier runs: for a vector that expects an error,
/// that refusal is the error. A vector that expects success with such values
/// (equal sizes, equal "don't care" roots, compared byte for byte and never
/// hashed) is run with SHA-256 of each value standing in, which keeps equal
/// values equal and distinct values distinct.
struct Decoder {
    want_err: bool,
    unrepresentable: bool,
    stand_ins: usize,
}

impl Decoder {
    fn new(want_err: bool) -> Self {
        Self { want_err, unrepresentable: false, stand_ins: 0 }
    }

    fn hash(&mut self, b64: &str) -> Hash {
        decode(b64).unwrap_or_else(|bytes| {
            self.unrepresentable = true;
            self.stand_ins += usize::from(!self.want_err);
            Sha256::digest(&bytes).into()
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InclusionCase {
    leaf_idx: u64,
    tree_size: u64,
    root: String,
    leaf_hash: String,
    proof: Option<Vec<String>>,
    desc: String,
    want_err: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConsistencyCase {
    size1: u64,
    size2: u64,
    root1: String,
    root2: String,
    proof: Option<Vec<String>>,
    desc: String,
    want_err: bool,
}

/// Tallies of one folder of vectors, so that a glob that finds nothing, or
/// a harness that skips cases, cannot pass.
#[derive(Default, Debug)]
struct Tally {
    files: usize,
    accepted: usize,
    rejected_by_verifier: usize,
    rejected_by_type: usize,
    stand_ins: usize,
    same_proof_as_log: usize,
    type_only: Vec<String>,
}

impl Tally {
    fn checked(&self) -> usize {
        self.accepted + self.rejected_by_verifier + self.rejected_by_type
    }

    fn assert_complete(&self, what: &str) {
        eprintln!("{what}: {self:?}");
        assert!(self.files > 0, "no {what} vectors found");
        assert_eq!(self.checked(), self.files, "{what}: every file must be one checked case");
        assert!(self.accepted > 0 && self.rejected_by_verifier > 0, "{what}: {self:?}");
        assert!(self.same_proof_as_log > 0, "{what}: no vector was compared with MerkleLog's proofs");
    }

    fn record(&mut self, path: &Path, desc: &str, decoder: &Decoder, result: Result<(), merkle::ProofError>) {
        self.stand_ins += decoder.stand_ins;
        match (decoder.want_err, result) {
            (false, Ok(())) => self.accepted += 1,
            (false, Err(e)) => panic!("{} ({desc}): valid proof refused: {e}", path.display()),
            (true, Err(_)) if decoder.unrepresentable => self.rejected_by_type += 1,
            // Only the type refuses it: with stand-ins the values agree.
            (true, Ok(())) if decoder.unrepresentable => {
                self.rejected_by_type += 1;
                self.type_only.push(desc.to_owned());
            }
            (true, Err(_)) => self.rejected_by_verifier += 1,
            (true, Ok(())) => panic!("{} ({desc}): invalid proof accepted", path.display()),
        }
    }
}

#[test]
fn inclusion_vectors() {
    let reference = reference();
    let log = reference.log();
    let mut tally = Tally::default();
    for path in json_files(&conformance_dir().join("rfc6962/inclusion")) {
        tally.files += 1;
        let case: InclusionCase = read_json(&path);
        let mut decoder = Decoder::new(case.want_err);
        let leaf = decoder.hash(&case.leaf_hash);
        let root = decoder.hash(&case.root);
        let proof: Vec<Hash> = case.proof.iter().flatten().map(|h| decoder.hash(h)).collect();
        let result = merkle::verify_inclusion(&leaf, case.leaf_idx, case.tree_size, &proof, &root);
        tally.record(&path, &case.desc, &decoder, result);

        // Proofs over the reference leaves must be exactly what we generate.
        let (index, size) = (case.leaf_idx, case.tree_size);
        if !case.want_err
            && size <= 8
            && reference.roots[size as usize] == root
            && merkle::leaf_hash(&reference.leaves[index as usize]) == leaf
        {
            assert_eq!(log.inclusion_proof(index, size).as_ref(), Ok(&proof), "{}", path.display());
            tally.same_proof_as_log += 1;
        }
    }
    assert_eq!(tally.stand_ins, 0, "every valid inclusion vector uses real hashes");
    // These pair an empty leaf or root with SHA-256 of nothing (the empty
    // tree's root), so only the hash length tells them apart from a proof.
    for desc in &tally.type_only {
        assert!(["empty root", "empty root and leaf"].contains(&desc.as_str()), "{desc}");
    }
    tally.assert_complete("rfc6962/inclusion");
}

#[test]
fn consistency_vectors() {
    let reference = reference();
    let log = reference.log();
    let mut tally = Tally::default();
    for path in json_files(&conformance_dir().join("rfc6962/consistency")) {
        tally.files += 1;
        let case: ConsistencyCase = read_json(&path);
        let mut decoder = Decoder::new(case.want_err);
        let root1 = decoder.hash(&case.root1);
        let root2 = decoder.hash(&case.root2);
        let proof: Vec<Hash> = case.proof.iter().flatten().map(|h| decoder.hash(h)).collect();
        let result = merkle::verify_consistency(case.size1, case.size2, &proof, &root1, &root2);
        tally.record(&path, &case.desc, &decoder, result);

        let (from, to) = (case.size1, case.size2);
        if !case.want_err && to <= 8 && reference.roots[from as usize] == root1 && reference.roots[to as usize] == root2
        {
            assert_eq!(log.consistency_proof(from, to).as_ref(), Ok(&proof), "{}", path.display());
            tally.same_proof_as_log += 1;
        }
    }
    assert_eq!(tally.type_only, Vec::<String>::new());
    tally.assert_complete("rfc6962/consistency");
}
