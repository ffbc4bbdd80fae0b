//! The C2SP signed-note vector from golang.org/x/mod/sumdb/note.

use ed25519_dalek::SigningKey;
use serde::Deserialize;
use tollgate_core::note::{self, NoteError, Signer, Verifier};

use super::{conformance_dir, read_json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignedNoteFile {
    #[allow(dead_code)]
    source: String,
    #[allow(dead_code)]
    spec: String,
    verifier_key: String,
    signer_key: String,
    text: String,
    signed_note: String,
    other_verifier_key: String,
}

fn signed_note_file() -> SignedNoteFile {
    read_json(&conformance_dir().join("signed-note.json"))
}

/// The key ID as the key string states it, to check our computation against.
fn stated_key_id(vkey: &str) -> u32 {
    let id = vkey.split('+').nth(1).expect("key ID field");
    u32::from_str_radix(id, 16).expect("hex key ID")
}

#[test]
fn keys() {
    let file = signed_note_file();
    for vkey in [&file.verifier_key, &file.other_verifier_key] {
        let verifier = Verifier::parse(vkey).expect("verifier key parses");
        assert_eq!(verifier.key_id(), stated_key_id(vkey));
        assert_eq!(note::key_id(verifier.name(), verifier.key()), stated_key_id(vkey));
        assert_eq!(&verifier.to_string(), vkey, "verifier keys print back unchanged");
    }
    let signer = Signer::parse(&file.signer_key).expect("signer key parses");
    assert_eq!(signer.verifier_key(), file.verifier_key);
    assert_eq!(signer.name(), "PeterNeumann");
    assert_eq!(signer.key_id(), stated_key_id(&file.verifier_key));

    // A stated key ID that is not the key's is refused, both ways round.
    let id = format!("+{:08x}+", stated_key_id(&file.verifier_key));
    let wrong = format!("+{:08x}+", stated_key_id(&file.verifier_key) ^ 1);
    assert!(matches!(
        Verifier::parse(&file.verifier_key.replacen(&id, &wrong, 1)),
        Err(NoteError::KeyIdMismatch { .. })
    ));
    assert!(matches!(Signer::parse(&file.signer_key.replacen(&id, &wrong, 1)), Err(NoteError::KeyIdMismatch { .. })));
    // The same key under another name has another ID.
    assert!(matches!(
        Verifier::parse(&file.verifier_key.replacen("PeterNeumann", "PeterNeuman", 1)),
        Err(NoteError::KeyIdMismatch { .. })
    ));
    // A public key is not a signer key.
    assert!(Signer::parse(&file.verifier_key).is_err());
}

#[test]
fn signs_and_opens() {
    let file = signed_note_file();
    let peter = Verifier::parse(&file.verifier_key).expect("verifier key");
    let enoch = Verifier::parse(&file.other_verifier_key).expect("other verifier key");
    let signer = Signer::parse(&file.signer_key).expect("signer key");

    // Ed25519 is deterministic, so our note is byte for byte the vector's.
    assert_eq!(signer.sign(&file.text).as_ref(), Ok(&file.signed_note));

    let opened = note::open(&file.signed_note, std::slice::from_ref(&peter)).expect("opens");
    assert_eq!(opened.text, file.text);
    assert_eq!(
        opened.signatures,
        [note::NoteSignature { name: "PeterNeumann".into(), key_id: peter.key_id(), verified: true }]
    );

    // Signed by a key we do not know: well formed, but not trusted.
    for known in [vec![], vec![enoch.clone()]] {
        match note::open(&file.signed_note, &known) {
            Err(NoteError::Unverified(note)) => {
                assert_eq!(note.text, file.text);
                assert_eq!(note.signatures.len(), 1);
                assert!(!note.signatures[0].verified);
            }
            other => panic!("expected Unverified, got {other:?}"),
        }
    }
    // A known key does not vouch for anything under another key's name.
    assert!(note::open(&file.signed_note, &[enoch.clone(), peter.clone()]).is_ok());
}

/// The other key of the Go tests is the one an all-zero seed gives; with it
/// we can cosign the vector's note and exercise multi-signature notes on
/// the file's own keys.
#[test]
fn with_a_cosignature() {
    let file = signed_note_file();
    let peter = Verifier::parse(&file.verifier_key).expect("verifier key");
    let enoch = Verifier::parse(&file.other_verifier_key).expect("other verifier key");
    let cosigner = Signer::new(enoch.name(), SigningKey::from_bytes(&[0; 32])).expect("name");
    assert_eq!(cosigner.verifier_key(), file.other_verifier_key);

    let cosigned = cosigner.sign(&file.text).expect("signs");
    let enoch_line = cosigned.strip_prefix(&format!("{}\n", file.text)).expect("one line");
    let both = format!("{}{enoch_line}", file.signed_note);

    let opened = note::open(&both, &[peter.clone(), enoch.clone()]).expect("opens");
    assert_eq!(opened.text, file.text);
    let flags: Vec<(&str, bool)> = opened.signatures.iter().map(|s| (s.name.as_str(), s.verified)).collect();
    assert_eq!(flags, [("PeterNeumann", true), ("EnochRoot", true)]);

    let opened = note::open(&both, std::slice::from_ref(&peter)).expect("opens");
    let flags: Vec<(&str, bool)> = opened.signatures.iter().map(|s| (s.name.as_str(), s.verified)).collect();
    assert_eq!(flags, [("PeterNeumann", true), ("EnochRoot", false)]);

    // The same known key twice is ambiguous, as in Go.
    assert!(matches!(
        note::open(&both, &[enoch.clone(), peter.clone(), enoch.clone()]),
        Err(NoteError::AmbiguousKey { .. })
    ));
    // Repeated lines are dropped, known or not.
    let peter_line = file.signed_note.strip_prefix(&format!("{}\n", file.text)).expect("one line");
    let repeated = format!("{}\n{peter_line}{peter_line}{enoch_line}{enoch_line}", file.text);
    let opened = note::open(&repeated, std::slice::from_ref(&peter)).expect("opens");
    assert_eq!(opened.signatures.len(), 2);
}

/// The negative cases of Go's `TestOpen`, built from the file's note.
#[test]
fn malformed_and_tampered() {
    let file = signed_note_file();
    let peter = Verifier::parse(&file.verifier_key).expect("verifier key");
    let known = std::slice::from_ref(&peter);
    let text = &file.text;
    let sig_line = file.signed_note.strip_prefix(&format!("{text}\n")).expect("one line");

    let malformed = [
        text.clone(),
        format!("{text}\n"),
        format!("{text}\n{}", sig_line.trim_end_matches('\n')),
        format!("\x01{text}\n{sig_line}"),
        format!("{text}\n{}", sig_line.replacen("PeterNeumann", "Bad Name", 1)),
        format!("{text}\n{sig_line}Unexpected line.\n"),
        format!("{text}\n{}", sig_line.replacen('\u{2014}', "-", 1)),
        format!("{text}\n\u{2014} PeterNeumann\n"),
        format!("{text}\n\u{2014} PeterNeumann \n"),
        format!("{text}\n\u{2014} PeterNeumann AAAA\n"),
        format!("{text}\n\u{2014} PeterNeumann not base64!\n"),
    ];
    for msg in &malformed {
        assert!(
            matches!(note::open(msg, known), Err(NoteError::Malformed(_))),
            "{msg:?}: {:?}",
            note::open(msg, known)
        );
    }

    let too_many = format!("{text}\n{}", sig_line.repeat(note::MAX_SIGNATURES + 1));
    assert_eq!(note::open(&too_many, known), Err(NoteError::TooManySignatures));
    let at_limit = format!("{text}\n{}", sig_line.repeat(note::MAX_SIGNATURES));
    assert!(note::open(&at_limit, known).is_ok());

    let bad_signature = NoteError::InvalidSignature { name: "PeterNeumann".into(), key_id: peter.key_id() };
    // Go's case: four base64 characters spliced into the signature.
    let spliced = format!("{text}\n{}ABCD{}", &sig_line[..60], &sig_line[60..]);
    assert_eq!(note::open(&spliced, known), Err(bad_signature.clone()));
    // Any change to the signed text.
    let altered = file.signed_note.replacen("cryptography", "Cryptography", 1);
    assert_eq!(note::open(&altered, known), Err(bad_signature));
}
