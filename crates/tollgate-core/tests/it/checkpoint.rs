//! Checkpoints: one spelling per checkpoint, and signed round trips.

use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use tollgate_core::checkpoint::{self, Checkpoint, CheckpointError};
use tollgate_core::merkle::{MerkleLog, leaf_hash};
use tollgate_core::note::{NoteError, Signer};

fn signer(name: &str, seed: u8) -> Signer {
    Signer::new(name, SigningKey::from_bytes(&[seed; 32])).expect("valid name")
}

/// A root whose base64 is easy to write by hand: 32 zero bytes.
const ZERO_ROOT: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

fn check(body: &str, expected: Result<Checkpoint, CheckpointError>) {
    assert_eq!(Checkpoint::parse(body), expected, "{body:?}");
}

#[test]
fn bodies_parse_strictly() {
    let cp = |size, extensions: &[&str]| Checkpoint {
        origin: "example.com/log".into(),
        size,
        root: [0; 32],
        extensions: extensions.iter().map(|e| e.to_string()).collect(),
    };
    check(&format!("example.com/log\n0\n{ZERO_ROOT}\n"), Ok(cp(0, &[])));
    check(&format!("example.com/log\n42\n{ZERO_ROOT}\n"), Ok(cp(42, &[])));
    check(&format!("example.com/log\n18446744073709551615\n{ZERO_ROOT}\n"), Ok(cp(u64::MAX, &[])));
    check(&format!("example.com/log\n1\n{ZERO_ROOT}\nts 5\n— x\n"), Ok(cp(1, &["ts 5", "— x"])));

    use CheckpointError::*;
    let invalid_size = |s: &str| Err(InvalidSize(s.to_owned()));
    check(&format!("example.com/log\n1\n{ZERO_ROOT}"), Err(MissingNewline));
    check("", Err(MissingNewline));
    check("\n", Err(EmptyOrigin));
    check(&format!("\n1\n{ZERO_ROOT}\n"), Err(EmptyOrigin));
    check("example.com/log\n", Err(MissingLine("tree size")));
    check("example.com/log\n1\n", Err(MissingLine("root hash")));
    for size in ["01", "00", "+1", "-1", " 1", "1.0", "", "18446744073709551616"] {
        check(&format!("example.com/log\n{size}\n{ZERO_ROOT}\n"), invalid_size(size));
    }
    let short = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==";
    let long = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let unpadded = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let trailing_bits = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=";
    let url_safe = "_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    for root in [short, long, unpadded, trailing_bits, url_safe, "", " "] {
        check(&format!("example.com/log\n1\n{root}\n"), Err(InvalidRoot(root.to_owned())));
    }
    check(&format!("example.com/log\n1\n{ZERO_ROOT}\n\n"), Err(EmptyExtension(0)));
    check(&format!("example.com/log\n1\n{ZERO_ROOT}\na\n\nb\n"), Err(EmptyExtension(1)));
    check(&format!("example\tlog\n1\n{ZERO_ROOT}\n"), Err(ControlCharacter));
    check(&format!("example.com/log\r\n1\n{ZERO_ROOT}\n"), Err(ControlCharacter));
}

#[test]
fn sign_and_open_a_log_checkpoint() {
    let log: MerkleLog = (0..10u8).map(|i| leaf_hash(&[i])).collect();
    let cp = Checkpoint::new("tollgate.example/ledger", log.len(), log.root());
    let key = signer("tollgate.example/ledger", 1);
    let signed = checkpoint::sign(&cp, &key).expect("signs");
    assert!(signed.starts_with(&cp.body()));
    assert_eq!(checkpoint::open(&signed, &key.verifier()), Ok(cp.clone()));

    // Signed under a key name other than the origin: still valid.
    let other_name = signer("ops-key-2026", 2);
    let signed_by_other = checkpoint::sign(&cp, &other_name).expect("signs");
    assert_eq!(checkpoint::open(&signed_by_other, &other_name.verifier()), Ok(cp.clone()));

    // The expected verifier must have signed; another key's signature alone
    // is not enough.
    assert!(matches!(
        checkpoint::open(&signed_by_other, &key.verifier()),
        Err(CheckpointError::Note(NoteError::Unverified(_)))
    ));
    // A witness cosignature does not get in the way.
    let witness = signer("witness", 3);
    let cosig = witness.sign(&cp.body()).expect("signs");
    let cosig_line = cosig.strip_prefix(&format!("{}\n", cp.body())).expect("one line");
    assert_eq!(checkpoint::open(&format!("{signed}{cosig_line}"), &key.verifier()), Ok(cp.clone()));

    // A rewritten size is caught by the signature.
    let forged = signed.replacen("\n10\n", "\n11\n", 1);
    assert!(matches!(
        checkpoint::open(&forged, &key.verifier()),
        Err(CheckpointError::Note(NoteError::InvalidSignature { .. }))
    ));
}

#[test]
fn a_signed_note_that_is_not_a_checkpoint_is_refused() {
    let key = signer("log", 4);
    let signed = key.sign("just some text\n").expect("signs");
    assert_eq!(checkpoint::open(&signed, &key.verifier()), Err(CheckpointError::MissingLine("tree size")));
}

#[test]
fn checkpoints_that_would_not_parse_back_are_not_signed() {
    let key = signer("log", 5);
    let base = Checkpoint::new("log", 1, [7; 32]);
    let with = |f: &dyn Fn(&mut Checkpoint)| {
        let mut cp = base.clone();
        f(&mut cp);
        checkpoint::sign(&cp, &key)
    };
    assert_eq!(with(&|cp| cp.origin.clear()), Err(CheckpointError::EmptyOrigin));
    assert_eq!(with(&|cp| cp.origin.push('\n')), Err(CheckpointError::ControlCharacter));
    assert_eq!(with(&|cp| cp.extensions = vec!["a".into(), String::new()]), Err(CheckpointError::EmptyExtension(1)));
    assert_eq!(with(&|cp| cp.extensions = vec!["two\nlines".into()]), Err(CheckpointError::ControlCharacter));
}

fn line() -> impl Strategy<Value = String> {
    "[^\\x00-\\x1f]{1,40}"
}

fn any_checkpoint() -> impl Strategy<Value = Checkpoint> {
    (line(), any::<u64>(), any::<[u8; 32]>(), prop::collection::vec(line(), 0..4))
        .prop_map(|(origin, size, root, extensions)| Checkpoint { origin, size, root, extensions })
}

proptest! {
    #[test]
    fn body_parse_round_trip(cp in any_checkpoint()) {
        prop_assert_eq!(Checkpoint::parse(&cp.body()), Ok(cp));
    }

    #[test]
    fn sign_open_round_trip(cp in any_checkpoint(), seed in any::<[u8; 32]>()) {
        let key = Signer::new("log", SigningKey::from_bytes(&seed)).expect("name");
        let signed = checkpoint::sign(&cp, &key).expect("signs");
        prop_assert_eq!(checkpoint::open(&signed, &key.verifier()), Ok(cp));
    }

    #[test]
    fn parse_never_panics(body in "(\\PC|\n){0,200}") {
        let _ = Checkpoint::parse(&body);
    }
}
