//! The event log: append, read, scan, and what a failed append leaves behind.

use super::*;

pub fn append_len_read_scan(h: &mut dyn Harness) {
    let mut s = h.create();
    assert_eq!(s.len().unwrap(), 0);
    assert_eq!(s.read(0, 10).unwrap(), vec![]);
    assert_eq!(scan_all(&*s, 0), vec![]);

    append_range(&mut *s, 0, 3, &[]).unwrap();
    append_range(&mut *s, 3, 4, &[]).unwrap();
    s.append(4, &[], &[]).unwrap(); // an empty batch is fine and changes nothing
    append_range(&mut *s, 4, 10, &[]).unwrap();
    assert_eq!(s.len().unwrap(), 10);

    assert_eq!(s.read(0, 10).unwrap(), expected_range(0, 10));
    assert_eq!(s.read(2, 5).unwrap(), expected_range(2, 5));
    assert_eq!(s.read(8, 20).unwrap(), expected_range(8, 10), "clipped at the end");
    assert_eq!(s.read(u64::MAX - 1, u64::MAX).unwrap(), vec![]);
    assert_eq!(s.read(5, 5).unwrap(), vec![]);
    assert_eq!(s.read(10, 11).unwrap(), vec![]);
    assert!(matches!(s.read(5, 4), Err(StoreError::Invalid(_))));

    assert_eq!(scan_all(&*s, 0), expected_range(0, 10));
    assert_eq!(scan_all(&*s, 7), expected_range(7, 10));
    assert_eq!(scan_all(&*s, 10), vec![]);
    assert_eq!(scan_all(&*s, u64::MAX), vec![]);

    // The callback stops the scan by failing; its error comes back as is.
    let mut seen = Vec::new();
    let err = s
        .scan(2, &mut |e| {
            seen.push(e.index);
            if e.index == 4 { Err(StoreError::NotFound("stop".into())) } else { Ok(()) }
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(ref m) if m == "stop"), "{err:?}");
    assert_eq!(seen, vec![2, 3, 4]);
}

pub fn wrong_expected_len_writes_nothing(h: &mut dyn Harness) {
    let mut s = h.create();
    append_range(&mut *s, 0, 3, &[record("a", "k0")]).unwrap();

    for wrong in [0, 2, 4, 100, u64::MAX] {
        let events = [NewEvent { leaf: b"late", leaf_hash: [1; 32] }];
        let err = s.append(wrong, &events, &[record("a", "k1")]).unwrap_err();
        assert!(matches!(err, StoreError::Conflict { expected, actual: 3 } if expected == wrong), "{err:?}");
    }
    let err = s.append(1, &[], &[record("a", "k2")]).unwrap_err();
    assert!(matches!(err, StoreError::Conflict { expected: 1, actual: 3 }), "{err:?}");

    assert_eq!(s.len().unwrap(), 3);
    assert_eq!(s.read(0, 10).unwrap(), expected_range(0, 3));
    assert_eq!(s.idempotency("a", "k1").unwrap(), None);
    assert_eq!(s.idempotency("a", "k2").unwrap(), None);
    assert_eq!(s.idempotency("a", "k0").unwrap(), Some(record("a", "k0")));
}

pub fn duplicate_idempotency_key_writes_nothing(h: &mut dyn Harness) {
    let mut s = h.create();
    let mut first = record("licenses", "k");
    first.status = 200;
    append_range(&mut *s, 0, 2, &[first.clone()]).unwrap();

    // Already stored: neither the events nor the other, new key are written.
    let mut again = record("licenses", "k");
    again.body = b"another response".to_vec();
    let err = append_range(&mut *s, 2, 4, &[record("licenses", "new"), again]).unwrap_err();
    assert!(matches!(err, StoreError::Duplicate { what: Unique::IdempotencyKey, .. }), "{err:?}");
    assert_eq!(s.len().unwrap(), 2);
    assert_eq!(s.idempotency("licenses", "new").unwrap(), None);
    assert_eq!(s.idempotency("licenses", "k").unwrap(), Some(first));

    // Repeated within one batch.
    let err = append_range(&mut *s, 2, 3, &[record("licenses", "twice"), record("licenses", "twice")]).unwrap_err();
    assert!(matches!(err, StoreError::Duplicate { what: Unique::IdempotencyKey, .. }), "{err:?}");
    assert_eq!(s.len().unwrap(), 2);
    assert_eq!(s.idempotency("licenses", "twice").unwrap(), None);

    // The log is still writable at the same length afterwards.
    append_range(&mut *s, 2, 3, &[record("licenses", "twice")]).unwrap();
    assert_eq!(s.read(0, 3).unwrap(), expected_range(0, 3));
}

/// Appends 100 000 small events and scans them, checking order and, where the harness can
/// measure it, that memory does not grow with the log (a scan that collected every event
/// first would hold about 25 MB here).
pub fn scan_streams_a_large_log(h: &mut dyn Harness) {
    const N: u64 = 100_000;
    const BATCH: u64 = 5_000;
    const LEAF: usize = 200;
    const MAX_GROWTH: u64 = 12 << 20;

    let mut s = h.create();
    let mut buf = Vec::with_capacity(LEAF);
    for from in (0..N).step_by(BATCH as usize) {
        let leaves: Vec<Vec<u8>> = (from..from + BATCH)
            .map(|i| {
                buf.clear();
                buf.extend_from_slice(&i.to_be_bytes());
                buf.resize(LEAF, b'.');
                buf.clone()
            })
            .collect();
        let events: Vec<NewEvent<'_>> =
            leaves.iter().zip(from..).map(|(leaf, i)| NewEvent { leaf, leaf_hash: hash(i) }).collect();
        s.append(from, &events, &[]).unwrap();
    }
    assert_eq!(s.len().unwrap(), N);

    let baseline = h.resident_memory();
    let mut peak = baseline;
    let mut next = 0;
    s.scan(0, &mut |e| {
        assert_eq!(e.index, next);
        assert_eq!(e.leaf.len(), LEAF);
        assert_eq!(e.leaf[..8], e.index.to_be_bytes());
        assert_eq!(e.leaf_hash, hash(e.index));
        next += 1;
        if next % 1_000 == 0 {
            peak = peak.max(h.resident_memory());
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(next, N);
    if let (Some(baseline), Some(peak)) = (baseline, peak) {
        let growth = peak.saturating_sub(baseline);
        assert!(growth < MAX_GROWTH, "scan grew resident memory by {growth} bytes");
    }
}
