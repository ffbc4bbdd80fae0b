//! Signed notes: keys, sign → open round trips, and tampering.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use proptest::sample::Index;
use sha2::{Digest, Sha256};
use tollgate_core::note::{self, NoteError, NoteSignature, Signer, Verifier};

fn signer(name: &str, seed: u8) -> Signer {
    Signer::new(name, SigningKey::from_bytes(&[seed; 32])).expect("valid name")
}

/// A verifier key with an arbitrary encoded key and its correct key ID, to
/// reach the checks that come after the ID check.
fn vkey_with(name: &str, encoded: &[u8]) -> String {
    let digest = Sha256::new().chain_update(name).chain_update("\n").chain_update(encoded).finalize();
    let id = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    format!("{name}+{id:08x}+{}", STANDARD.encode(encoded))
}

#[test]
fn verifier_keys_round_trip_and_bad_ones_are_refused() {
    let s = signer("example.com/log", 1);
    let vkey = s.verifier_key();
    let v = Verifier::parse(&vkey).expect("own key parses");
    assert_eq!(v, s.verifier());
    assert_eq!(v.to_string(), vkey);
    assert_eq!(note::key_id(v.name(), v.key()), s.key_id());

    // Upper-case hex is the same ID (Go accepts it too).
    let upper = vkey.replacen(&format!("{:08x}", s.key_id()), &format!("{:08X}", s.key_id()), 1);
    assert_eq!(Verifier::parse(&upper), Ok(v.clone()));

    let mut public = vec![0x01];
    public.extend_from_slice(s.verifier().key().as_bytes());
    let mut unknown_type = public.clone();
    unknown_type[0] = 0x02;
    let cases = [
        ("", "no separator"),
        ("name", "no separator"),
        ("name+0000", "one separator"),
        ("+00000000+AQ==", "empty name"),
        ("a b+00000000+AQ==", "space in name"),
        ("name+0000000+AQ==", "short ID"),
        ("name+0000000g+AQ==", "non-hex ID"),
        ("name+-0000000+AQ==", "signed ID"),
        ("name+00000000+", "empty key"),
        ("name+00000000+!!!!", "bad base64"),
    ];
    for (vkey, why) in cases {
        assert!(Verifier::parse(vkey).is_err(), "{why}: {vkey:?}");
    }
    assert_eq!(Verifier::parse(&vkey_with("name", &unknown_type)), Err(NoteError::UnknownAlgorithm(0x02)));
    assert!(matches!(Verifier::parse(&vkey_with("name", &public[..32])), Err(NoteError::MalformedKey(_))));
    // The identity point: a key every signature check would have to refuse.
    let mut identity = vec![0x01, 0x01];
    identity.extend_from_slice(&[0; 31]);
    assert!(matches!(Verifier::parse(&vkey_with("name", &identity)), Err(NoteError::MalformedKey(_))));
    assert!(Verifier::parse(&vkey_with("name", &public)).is_ok());
}

#[test]
fn names_and_texts_that_could_not_be_opened_are_refused() {
    for name in ["", "has space", "has+plus", "tab\there", "nl\n"] {
        assert_eq!(
            Signer::new(name, SigningKey::from_bytes(&[1; 32])).map(|_| ()),
            Err(NoteError::InvalidName(name.to_owned()))
        );
    }
    let s = signer("log", 2);
    for text in ["", "no newline", "bell\x07\n", "cr\r\n"] {
        assert!(matches!(s.sign(text), Err(NoteError::InvalidText(_))), "{text:?}");
    }
    // A lone newline is a non-empty text and makes a valid note.
    let msg = s.sign("\n").expect("signs");
    assert_eq!(note::open(&msg, &[s.verifier()]).map(|n| n.text), Ok("\n".to_owned()));
}

#[test]
fn signer_keys_parse_and_refuse() {
    let seed = [5u8; 32];
    let s = Signer::new("log", SigningKey::from_bytes(&seed)).expect("name");
    let mut encoded = vec![0x01];
    encoded.extend_from_slice(&seed);
    let skey = format!("PRIVATE+KEY+log+{:08x}+{}", s.key_id(), STANDARD.encode(&encoded));
    let parsed = Signer::parse(&skey).expect("parses");
    assert_eq!(parsed.verifier_key(), s.verifier_key());
    assert_eq!(parsed.sign("x\n"), s.sign("x\n"));

    assert!(Signer::parse(&skey.replacen("PRIVATE+KEY+", "PRIVATE+", 1)).is_err());
    encoded[0] = 0x09;
    let other_type = format!("PRIVATE+KEY+log+{:08x}+{}", s.key_id(), STANDARD.encode(&encoded));
    assert_eq!(Signer::parse(&other_type).map(|_| ()), Err(NoteError::UnknownAlgorithm(0x09)));
    // Debug output never shows the seed, whatever it is.
    assert!(!format!("{parsed:?}").contains(&STANDARD.encode(seed)));
}

#[test]
fn unknown_keys_are_kept_unverified_and_one_known_key_suffices() {
    let log = signer("log", 1);
    let witness = signer("witness", 2);
    let text = "body\n";
    let line =
        |s: &Signer| s.sign(text).expect("signs").strip_prefix(&format!("{text}\n")).expect("one line").to_owned();
    let msg = format!("{text}\n{}{}", line(&witness), line(&log));
    let opened = note::open(&msg, &[log.verifier()]).expect("opens");
    assert_eq!(
        opened.signatures,
        [
            NoteSignature { name: "witness".into(), key_id: witness.key_id(), verified: false },
            NoteSignature { name: "log".into(), key_id: log.key_id(), verified: true },
        ]
    );
    // Same name, another key: a different key ID, so simply unknown.
    let impostor = signer("log", 3);
    assert!(matches!(note::open(&msg, &[impostor.verifier()]), Err(NoteError::Unverified(_))));
}

/// Key names as logs use them, including non-ASCII.
fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9./_:é-]{1,24}"
}

/// Texts that a note can carry: lines without control characters, possibly
/// empty, each ending in a newline.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec("[^\\x00-\\x1f]{0,30}", 1..6)
        .prop_map(|lines| lines.iter().map(|line| format!("{line}\n")).collect::<String>())
}

proptest! {
    #[test]
    fn sign_then_open(name in name(), seed in any::<[u8; 32]>(), text in text()) {
        let signer = Signer::new(name.clone(), SigningKey::from_bytes(&seed)).expect("name");
        let msg = signer.sign(&text).expect("signs");
        let opened = note::open(&msg, &[signer.verifier()]).expect("opens");
        prop_assert_eq!(opened.text, text);
        prop_assert_eq!(
            opened.signatures,
            vec![NoteSignature { name, key_id: signer.key_id(), verified: true }]
        );
        let reparsed = Verifier::parse(&signer.verifier_key()).expect("vkey parses");
        prop_assert_eq!(reparsed, signer.verifier());
    }

    #[test]
    fn any_change_to_the_text_is_caught(
        seed in any::<[u8; 32]>(),
        text in text(),
        at in any::<Index>(),
        insert in "[^\\x00-\\x1f]",
    ) {
        let signer = Signer::new("log", SigningKey::from_bytes(&seed)).expect("name");
        let msg = signer.sign(&text).expect("signs");
        // Insert before the text's final newline, at a character boundary.
        let boundaries: Vec<usize> = text[..text.len() - 1]
            .char_indices()
            .map(|(i, _)| i)
            .chain([text.len() - 1])
            .collect();
        let pos = boundaries[at.index(boundaries.len())];
        let mut tampered = msg.clone();
        tampered.insert_str(pos, &insert);
        prop_assert_eq!(
            note::open(&tampered, &[signer.verifier()]),
            Err(NoteError::InvalidSignature { name: "log".into(), key_id: signer.key_id() })
        );
    }

    #[test]
    fn any_flipped_signature_bit_is_caught(
        seed in any::<[u8; 32]>(),
        text in text(),
        bit in 0usize..(68 * 8),
    ) {
        let signer = Signer::new("log", SigningKey::from_bytes(&seed)).expect("name");
        let msg = signer.sign(&text).expect("signs");
        let (head, b64) = msg.trim_end_matches('\n').rsplit_once(' ').expect("signature");
        let mut raw = STANDARD.decode(b64).expect("base64");
        prop_assert_eq!(raw.len(), 68);
        raw[bit / 8] ^= 1 << (bit % 8);
        let tampered = format!("{head} {}\n", STANDARD.encode(&raw));
        let result = note::open(&tampered, &[signer.verifier()]);
        if bit < 32 {
            // The key ID changed: the line now names a key we do not know.
            prop_assert!(matches!(result, Err(NoteError::Unverified(_))), "{:?}", result);
        } else {
            prop_assert_eq!(
                result,
                Err(NoteError::InvalidSignature { name: "log".into(), key_id: signer.key_id() })
            );
        }
    }

    /// Garbage in, an error out: never a panic.
    #[test]
    fn open_never_panics(
        prefix in text(),
        garbage in "(\\PC|\n|\u{2014}| |\\+|=){0,120}",
        anything in any::<String>(),
    ) {
        let verifiers = [signer("log", 1).verifier()];
        let _ = note::open(&anything, &verifiers);
        let _ = note::open(&format!("{prefix}\n\u{2014} log {garbage}\n"), &verifiers);
        let _ = note::open(&format!("{prefix}\n{garbage}"), &verifiers);
        let _ = Verifier::parse(&garbage);
        let _ = Signer::parse(&format!("PRIVATE+KEY+{garbage}"));
    }
}
