//! What is stored beside the log: idempotency records, checkpoints, snapshots, meta, tokens.

use super::*;

pub fn idempotency_round_trip(h: &mut dyn Harness) {
    let mut s = h.create();
    assert_eq!(s.idempotency("a", "k").unwrap(), None);

    let full = IdempotencyRecord {
        scope: "token:tok_1".to_owned(),
        key: "0b6f…ünïcode key".to_owned(),
        request_hash: hash(42),
        status: u16::MAX,
        body: vec![0, 1, 2, 0xff],
        created_at: "2025-06-30T23:59:60.123456Z".to_owned(),
    };
    let empty_body = IdempotencyRecord { body: vec![], status: 204, ..record("a", "k") };
    // Records need not come with events.
    s.append(0, &[], &[full.clone(), empty_body.clone()]).unwrap();
    // Same key, another scope: a different record.
    append_range(&mut *s, 0, 1, &[record("b", "k")]).unwrap();

    assert_eq!(s.idempotency(&full.scope, &full.key).unwrap(), Some(full.clone()));
    assert_eq!(s.idempotency("a", "k").unwrap(), Some(empty_body));
    assert_eq!(s.idempotency("b", "k").unwrap(), Some(record("b", "k")));
    assert_eq!(s.idempotency("c", "k").unwrap(), None);
    assert_eq!(s.idempotency(&full.scope, "other").unwrap(), None);
}

pub fn idempotency_claimed_once(h: &mut dyn Harness) {
    let mut first = h.create();
    let mut second = h.open_again();
    let mine = IdempotencyRecord { created_at: "2025-01-01T00:00:00Z".to_owned(), ..record("outside", "k") };
    assert_eq!(first.claim_idempotency(&mine).unwrap(), mine);
    // Another handle (another node) claiming the key later gets the first claim back,
    // and changes nothing.
    let theirs = IdempotencyRecord { body: b"theirs".to_vec(), request_hash: hash(9), ..mine.clone() };
    assert_eq!(second.claim_idempotency(&theirs).unwrap(), mine);
    assert_eq!(first.idempotency("outside", "k").unwrap(), Some(mine.clone()));
    // A claim is a record like any other: an append with its key is refused, and it is
    // pruned by age.
    let dup = append_range(&mut *first, 0, 1, &[record("outside", "k")]).unwrap_err();
    assert!(matches!(dup, StoreError::Duplicate { what: Unique::IdempotencyKey, .. }), "{dup:?}");
    assert_eq!(first.len().unwrap(), 0);
    assert_eq!(first.prune_idempotency("2025-01-01T00:00:01", 10).unwrap(), 1);
    assert_eq!(second.claim_idempotency(&theirs).unwrap(), theirs, "a pruned key is free again");
}

/// Claims earlier builds kept in `meta`, never pruned, become idempotency records
/// stamped at the move; what is not a claim goes; other meta stays.
pub fn legacy_claims_are_adopted(h: &mut dyn Harness) {
    let mut s = h.create();
    let hash = "ab".repeat(32);
    let legacy = [
        ("idempotency/token/tok_1/k1", format!(r#"{{"request":"{hash}","answer":{{"id":"tok_2"}}}}"#)),
        ("idempotency/license-token/tok_1/k/2", format!(r#"{{"answer":{{"exp":1,"jti":"j"}},"request":"{hash}"}}"#)),
        ("idempotency/token/tok_1/bad", r#"{"request":"not hex","answer":{}}"#.to_owned()),
        ("idempotency/token/tok_1/torn", r#"{"request":"#.to_owned()),
    ];
    for (k, v) in &legacy {
        s.set_meta(k, v.as_bytes()).unwrap();
    }
    s.set_meta("signing-key", &[0xff, 0x00]).unwrap();
    // A key claimed anew already: the new claim stands.
    let newer = IdempotencyRecord { scope: crate::OUTSIDE_LEDGER_SCOPE.into(), ..record("x", "token/tok_1/k1") };
    s.claim_idempotency(&newer).unwrap();

    assert_eq!(s.adopt_legacy_claims("2026-11-29T13:00:00Z").unwrap(), 4);
    assert_eq!(s.adopt_legacy_claims("2026-11-29T13:00:01Z").unwrap(), 0, "none left");
    let scope = crate::OUTSIDE_LEDGER_SCOPE;
    assert_eq!(s.idempotency(scope, "token/tok_1/k1").unwrap(), Some(newer));
    let minted = s.idempotency(scope, "license-token/tok_1/k/2").unwrap().expect("moved");
    assert_eq!(minted.request_hash, [0xab; 32]);
    assert_eq!(minted.body, br#"{"exp":1,"jti":"j"}"#);
    assert_eq!(minted.created_at, "2026-11-29T13:00:00Z");
    assert_eq!(s.idempotency(scope, "token/tok_1/bad").unwrap(), None);
    assert_eq!(s.idempotency(scope, "token/tok_1/torn").unwrap(), None);
    for (k, _) in &legacy {
        assert_eq!(s.meta(k).unwrap(), None, "{k} left meta");
    }
    assert_eq!(s.meta("signing-key").unwrap(), Some(vec![0xff, 0x00]));
    // Pruned like every record once past the retention (with the newer claim, of 2025).
    assert_eq!(s.prune_idempotency("2026-11-29T13:00:00", 10).unwrap(), 1);
    assert_eq!(s.prune_idempotency("2026-11-29T13:00:01", 10).unwrap(), 1);
    assert_eq!(s.idempotency(scope, "license-token/tok_1/k/2").unwrap(), None);
}

pub fn idempotency_pruned_by_age(h: &mut dyn Harness) {
    let mut s = h.create();
    let at = |key: &str, created_at: &str| IdempotencyRecord { created_at: created_at.to_owned(), ..record("a", key) };
    let old = [
        at("old-1", "2025-01-01T00:00:00Z"),
        at("old-2", "2025-01-01T00:00:01.5Z"),
        at("old-3", "2025-01-01T23:59:59Z"),
    ];
    let young = [at("young-1", "2025-01-02T00:00:00Z"), at("young-2", "2026-01-01T00:00:00.001Z")];
    append_range(&mut *s, 0, 1, &[old[2].clone(), young[0].clone(), old[0].clone(), young[1].clone(), old[1].clone()])
        .unwrap();

    // A limit stops it early, oldest first; nothing young goes.
    assert_eq!(s.prune_idempotency("2025-01-02T00:00:00Z", 2).unwrap(), 2);
    assert_eq!(s.idempotency("a", "old-1").unwrap(), None);
    assert_eq!(s.idempotency("a", "old-2").unwrap(), None);
    assert_eq!(s.idempotency("a", "old-3").unwrap(), Some(old[2].clone()));
    assert_eq!(s.prune_idempotency("2025-01-02T00:00:00Z", 100).unwrap(), 1);
    assert_eq!(s.prune_idempotency("2025-01-02T00:00:00Z", 100).unwrap(), 0);
    for r in &young {
        assert_eq!(s.idempotency(&r.scope, &r.key).unwrap().as_ref(), Some(r));
    }
    // A key whose record was pruned can be used again.
    append_range(&mut *s, 1, 2, &[at("old-1", "2026-06-01T00:00:00Z")]).unwrap();
    assert_eq!(s.idempotency("a", "old-1").unwrap().unwrap().created_at, "2026-06-01T00:00:00Z");
    // The events stay: only the records go.
    assert_eq!(s.len().unwrap(), 2);

    // Cut to the second, a cutoff keeps every record of its own second, whatever its
    // fraction, and takes the whole of the second before.
    let (keep, take) = (at("frac-keep", "2027-01-01T00:00:01.5Z"), at("frac-take", "2027-01-01T00:00:00.999Z"));
    let whole = at("frac-whole", "2027-01-01T00:00:01Z");
    append_range(&mut *s, 2, 3, &[keep.clone(), take.clone(), whole.clone()]).unwrap();
    assert_eq!(s.prune_idempotency("2027-01-01T00:00:01", 100).unwrap(), 4, "young-1, young-2, old-1 and frac-take");
    assert_eq!(s.idempotency("a", "frac-take").unwrap(), None);
    assert_eq!(s.idempotency("a", "frac-keep").unwrap(), Some(keep));
    assert_eq!(s.idempotency("a", "frac-whole").unwrap(), Some(whole));
}

pub fn checkpoints_ascending_and_latest(h: &mut dyn Harness) {
    let mut s = h.create();
    assert_eq!(s.latest_checkpoint().unwrap(), None);
    assert_eq!(s.checkpoints().unwrap(), vec![]);

    append_range(&mut *s, 0, 5, &[]).unwrap();
    for (size, root) in [(3, 3), (0, 0), (5, 5), (1, 1)] {
        s.put_checkpoint(&checkpoint(size, root)).unwrap();
    }
    let all = [checkpoint(0, 0), checkpoint(1, 1), checkpoint(3, 3), checkpoint(5, 5)];
    assert_eq!(s.checkpoints().unwrap(), all);
    assert_eq!(s.latest_checkpoint().unwrap(), Some(checkpoint(5, 5)));

    // Same size and root: fine, and the first note stays.
    let mut resigned = checkpoint(3, 3);
    resigned.note.push_str("— another signature\n");
    s.put_checkpoint(&resigned).unwrap();
    // Same size, another root: refused.
    let err = s.put_checkpoint(&checkpoint(3, 9)).unwrap_err();
    assert!(matches!(err, StoreError::Duplicate { what: Unique::Checkpoint, .. }), "{err:?}");
    // Beyond the end of the log: refused.
    let err = s.put_checkpoint(&checkpoint(6, 6)).unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    let err = s.put_checkpoint(&checkpoint(u64::MAX, 6)).unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");

    assert_eq!(s.checkpoints().unwrap(), all);
    assert_eq!(s.latest_checkpoint().unwrap(), Some(checkpoint(5, 5)));
}

pub fn snapshots_put_list_load_prune(h: &mut dyn Harness) {
    let mut s = h.create();
    assert_eq!(s.snapshot_seqs().unwrap(), vec![]);
    assert_eq!(s.load_snapshot(0).unwrap(), None);
    s.prune_snapshots(3).unwrap();

    append_range(&mut *s, 0, 40, &[]).unwrap();
    for seq in [10, 0, 30, 20, 40] {
        s.put_snapshot(&snapshot(seq, seq as u8)).unwrap();
    }
    let seqs = |s: &dyn LedgerStore| s.snapshot_seqs().unwrap();
    assert_eq!(seqs(&*s), vec![(40, [40; 32]), (30, [30; 32]), (20, [20; 32]), (10, [10; 32]), (0, [0; 32])]);
    assert_eq!(s.load_snapshot(20).unwrap(), Some(snapshot(20, 20)));
    assert_eq!(s.load_snapshot(0).unwrap(), Some(snapshot(0, 0)));
    assert_eq!(s.load_snapshot(21).unwrap(), None);
    assert_eq!(s.load_snapshot(u64::MAX).unwrap(), None);

    // Same seq and digest: fine, the first state stays. Another digest: refused.
    s.put_snapshot(&SnapshotRecord { state: vec![], ..snapshot(20, 20) }).unwrap();
    assert_eq!(s.load_snapshot(20).unwrap(), Some(snapshot(20, 20)));
    let err = s.put_snapshot(&snapshot(20, 21)).unwrap_err();
    assert!(matches!(err, StoreError::Duplicate { what: Unique::Snapshot, .. }), "{err:?}");
    let err = s.put_snapshot(&snapshot(41, 41)).unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");

    s.prune_snapshots(10).unwrap();
    assert_eq!(seqs(&*s).len(), 5);
    s.prune_snapshots(2).unwrap();
    assert_eq!(seqs(&*s), vec![(40, [40; 32]), (30, [30; 32])]);
    assert_eq!(s.load_snapshot(20).unwrap(), None);
    assert_eq!(s.load_snapshot(30).unwrap(), Some(snapshot(30, 30)));
    s.prune_snapshots(usize::MAX).unwrap();
    assert_eq!(seqs(&*s).len(), 2);
    s.prune_snapshots(0).unwrap();
    assert_eq!(seqs(&*s), vec![]);
}

pub fn meta_round_trip(h: &mut dyn Harness) {
    let mut s = h.create();
    assert_eq!(s.meta("cursor.webhooks").unwrap(), None);
    s.set_meta("cursor.webhooks", b"17").unwrap();
    s.set_meta("empty", b"").unwrap();
    s.set_meta("binary", &[0, 0xff, 0]).unwrap();
    assert_eq!(s.meta("cursor.webhooks").unwrap(), Some(b"17".to_vec()));
    s.set_meta("cursor.webhooks", b"18").unwrap();
    assert_eq!(s.meta("cursor.webhooks").unwrap(), Some(b"18".to_vec()));
    assert_eq!(s.meta("empty").unwrap(), Some(vec![]));
    assert_eq!(s.meta("binary").unwrap(), Some(vec![0, 0xff, 0]));
    assert_eq!(s.meta("Cursor.webhooks").unwrap(), None, "keys are case-sensitive");
}

pub fn tokens_insert_lookup_revoke(h: &mut dyn Harness) {
    let mut s = h.create();
    assert_eq!(s.tokens().unwrap(), vec![]);
    assert_eq!(s.token_by_hash(&[1; 32]).unwrap(), None);

    let a = token("tok_a", 1, "2025-01-02T00:00:00Z");
    let b = TokenRecord {
        product: Some("acme-cad".to_owned()),
        role: "product".to_owned(),
        ..token("tok_b", 2, "2025-01-01T00:00:00Z")
    };
    s.insert_token(&a).unwrap();
    s.insert_token(&b).unwrap();
    assert_eq!(s.token_by_hash(&[1; 32]).unwrap(), Some(a.clone()));
    assert_eq!(s.token_by_hash(&[2; 32]).unwrap(), Some(b.clone()));
    assert_eq!(s.token_by_hash(&[3; 32]).unwrap(), None);
    assert_eq!(s.tokens().unwrap(), vec![b.clone(), a.clone()], "ordered by created_at");

    let err = s.insert_token(&token("tok_a", 3, "2025-01-03T00:00:00Z")).unwrap_err();
    assert!(matches!(err, StoreError::Duplicate { what: Unique::TokenId, .. }), "{err:?}");
    let err = s.insert_token(&token("tok_c", 1, "2025-01-03T00:00:00Z")).unwrap_err();
    assert!(matches!(err, StoreError::Duplicate { what: Unique::TokenHash, .. }), "{err:?}");
    assert_eq!(s.tokens().unwrap().len(), 2);
    assert_eq!(s.token_by_hash(&[3; 32]).unwrap(), None);

    assert!(s.revoke_token("tok_a", "2025-02-01T00:00:00Z").unwrap());
    assert!(!s.revoke_token("tok_a", "2025-03-01T00:00:00Z").unwrap(), "already revoked");
    assert!(!s.revoke_token("tok_nope", "2025-03-01T00:00:00Z").unwrap());
    let revoked = TokenRecord { revoked_at: Some("2025-02-01T00:00:00Z".to_owned()), ..a };
    assert_eq!(s.token_by_hash(&[1; 32]).unwrap(), Some(revoked.clone()));
    assert_eq!(s.tokens().unwrap(), vec![b, revoked]);
}
