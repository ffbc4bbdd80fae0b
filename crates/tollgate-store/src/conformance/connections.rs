//! More than one handle on the same database: reopening, readers, competing writers.

use std::sync::Barrier;

use super::*;

pub fn survives_reopen(h: &mut dyn Harness) {
    {
        let mut s = h.create();
        append_range(&mut *s, 0, 5, &[record("a", "k")]).unwrap();
        s.put_checkpoint(&checkpoint(5, 5)).unwrap();
        s.put_snapshot(&snapshot(4, 4)).unwrap();
        s.set_meta("m", b"v").unwrap();
        s.insert_token(&token("tok", 1, "2025-01-01T00:00:00Z")).unwrap();
    }
    let mut s = h.open_again();
    assert_eq!(s.len().unwrap(), 5);
    assert_eq!(s.read(0, 5).unwrap(), expected_range(0, 5));
    assert_eq!(s.idempotency("a", "k").unwrap(), Some(record("a", "k")));
    assert_eq!(s.checkpoints().unwrap(), vec![checkpoint(5, 5)]);
    assert_eq!(s.load_snapshot(4).unwrap(), Some(snapshot(4, 4)));
    assert_eq!(s.meta("m").unwrap(), Some(b"v".to_vec()));
    assert_eq!(s.tokens().unwrap(), vec![token("tok", 1, "2025-01-01T00:00:00Z")]);
    // And it keeps appending where it left off.
    append_range(&mut *s, 5, 6, &[]).unwrap();
    assert_eq!(s.read(0, 10).unwrap(), expected_range(0, 6));
}

pub fn reader_sees_committed_data(h: &mut dyn Harness) {
    let mut w = h.create();
    let mut r = h.open_reader();
    assert_eq!(r.len().unwrap(), 0);

    append_range(&mut *w, 0, 3, &[record("a", "k")]).unwrap();
    w.put_checkpoint(&checkpoint(3, 3)).unwrap();
    w.set_meta("m", b"v").unwrap();
    assert_eq!(r.len().unwrap(), 3);
    assert_eq!(r.read(0, 3).unwrap(), expected_range(0, 3));
    assert_eq!(scan_all(&*r, 1), expected_range(1, 3));
    assert_eq!(r.idempotency("a", "k").unwrap(), Some(record("a", "k")));
    assert_eq!(r.latest_checkpoint().unwrap(), Some(checkpoint(3, 3)));
    assert_eq!(r.meta("m").unwrap(), Some(b"v".to_vec()));

    // A scan sees the log as it was when it began, even if the writer appends meanwhile.
    let mut seen = 0;
    r.scan(0, &mut |_| {
        if seen == 0 {
            append_range(&mut *w, 3, 5, &[]).unwrap();
        }
        seen += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, 3);
    assert_eq!(r.len().unwrap(), 5);

    // The reader cannot write.
    let events = [NewEvent { leaf: b"x", leaf_hash: [0; 32] }];
    assert!(r.append(5, &events, &[]).is_err());
    assert!(r.set_meta("m", b"w").is_err());
    assert_eq!(w.len().unwrap(), 5);
    assert_eq!(w.meta("m").unwrap(), Some(b"v".to_vec()));
}

pub fn second_writer_gets_conflict(h: &mut dyn Harness) {
    let mut a = h.create();
    let mut b = h.open_again();
    append_range(&mut *a, 0, 2, &[]).unwrap();
    let err = append_range(&mut *b, 0, 2, &[]).unwrap_err();
    assert!(matches!(err, StoreError::Conflict { expected: 0, actual: 2 }), "{err:?}");
    // b catches up and appends; a sees it.
    assert_eq!(b.len().unwrap(), 2);
    append_range(&mut *b, 2, 3, &[]).unwrap();
    assert_eq!(a.read(0, 10).unwrap(), expected_range(0, 3));
}

pub fn concurrent_appends_one_wins(h: &mut dyn Harness) {
    const ROUNDS: u64 = 20;
    let stores = [h.create(), h.open_again()];
    let barrier = Barrier::new(stores.len());
    let wins: Vec<Vec<u64>> = std::thread::scope(|scope| {
        let threads: Vec<_> = stores
            .into_iter()
            .enumerate()
            .map(|(writer, mut store)| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let mut wins = Vec::new();
                    for round in 0..ROUNDS {
                        barrier.wait();
                        let leaf = format!("writer {writer} round {round}");
                        let events = [NewEvent { leaf: leaf.as_bytes(), leaf_hash: hash(round) }];
                        let key = [record("race", &format!("{writer}-{round}"))];
                        match store.append(round, &events, &key) {
                            Ok(()) => wins.push(round),
                            Err(StoreError::Conflict { expected, actual }) => {
                                assert_eq!((expected, actual), (round, round + 1));
                            }
                            Err(e) => panic!("writer {writer} round {round}: {e}"),
                        }
                        barrier.wait();
                    }
                    wins
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(wins[0].len() + wins[1].len(), ROUNDS as usize, "one winner per round: {wins:?}");

    let s = h.open_reader();
    assert_eq!(s.len().unwrap(), ROUNDS);
    for e in s.read(0, ROUNDS).unwrap() {
        let writer = usize::from(!wins[0].contains(&e.index));
        assert_eq!(e.leaf, format!("writer {writer} round {}", e.index).into_bytes());
        let key = format!("{writer}-{}", e.index);
        let loser = format!("{}-{}", 1 - writer, e.index);
        assert!(s.idempotency("race", &key).unwrap().is_some());
        assert_eq!(s.idempotency("race", &loser).unwrap(), None);
    }
}
