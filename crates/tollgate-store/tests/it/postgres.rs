//! The conformance suite on PostgreSQL, each case in a fresh schema.
//!
//! The server is `TOLLGATE_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). When it cannot be reached, the tests fail
//! in CI (`CI=true`) and skip with the reason printed elsewhere.

use tollgate_store::conformance::Harness;
use tollgate_store::test_schema::TestSchema;
use tollgate_store::{LedgerStore, PostgresStore};

pub struct PgHarness {
    schema: TestSchema,
}

impl PgHarness {
    pub fn new() -> Option<Self> {
        TestSchema::create("tg_test").map(|schema| Self { schema })
    }
}

impl Harness for PgHarness {
    fn create(&mut self) -> Box<dyn LedgerStore> {
        Box::new(PostgresStore::open(&self.schema.url).expect("open PostgreSQL store"))
    }
    fn open_again(&mut self) -> Box<dyn LedgerStore> {
        Box::new(PostgresStore::open(&self.schema.url).expect("reopen PostgreSQL store"))
    }
    fn open_reader(&mut self) -> Box<dyn LedgerStore> {
        Box::new(PostgresStore::open_read_only(&self.schema.url).expect("open PostgreSQL reader"))
    }
    fn resident_memory(&self) -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }
}

crate::conformance_cases!(PgHarness::new());

#[test]
fn the_events_table_is_append_only() {
    let Some(mut h) = PgHarness::new() else { return };
    let mut store = h.create();
    store.append(0, &[tollgate_store::NewEvent { leaf: b"x", leaf_hash: [1; 32] }], &[]).unwrap();
    let mut c = postgres::Client::connect(&h.schema.url, postgres::NoTls).unwrap();
    let message = |e: postgres::Error| e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
    let e = message(c.execute("UPDATE events SET leaf = 'y'", &[]).unwrap_err());
    assert!(e.contains("append-only"), "{e}");
    let e = message(c.execute("DELETE FROM events", &[]).unwrap_err());
    assert!(e.contains("append-only"), "{e}");
}

/// The server calls its store from async handlers; the sync client must not panic there.
fn use_store_inside_a_runtime(flavor: tokio::runtime::Builder) {
    let Some(mut h) = PgHarness::new() else { return };
    let mut store = h.create();
    let mut builder = flavor;
    let rt = builder.enable_all().build().unwrap();
    rt.block_on(async {
        store.append(0, &[tollgate_store::NewEvent { leaf: b"a", leaf_hash: [2; 32] }], &[]).unwrap();
        assert_eq!(store.len().unwrap(), 1);
        let mut n = 0;
        store
            .scan(0, &mut |_| {
                n += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(n, 1);
    });
}

#[test]
fn works_inside_a_single_threaded_runtime() {
    use_store_inside_a_runtime(tokio::runtime::Builder::new_current_thread());
}

#[test]
fn works_inside_a_multi_threaded_runtime() {
    use_store_inside_a_runtime(tokio::runtime::Builder::new_multi_thread());
}

fn event(b: &[u8]) -> tollgate_store::NewEvent<'_> {
    tollgate_store::NewEvent { leaf: b, leaf_hash: [b[0]; 32] }
}

/// A schema whose name is too long for a notification channel of its own: appends go
/// through and still wake the other nodes. `pg_notify` used to refuse the channel,
/// inside the append's transaction, so every write with events failed.
#[test]
fn a_long_schema_name_still_wakes_the_other_nodes() {
    use std::time::Duration;
    let Some(schema) = TestSchema::create("a_schema_name_far_too_long_for_a_notify_channel") else { return };
    assert!(schema.name.len() > 63 - "tollgate_ledger_".len(), "{}", schema.name);
    let mut a = PostgresStore::open(&schema.url).unwrap();
    let b = PostgresStore::open(&schema.url).unwrap();
    let mut follow = b.follow().unwrap().expect("PostgreSQL can be followed");
    a.append(0, &[event(b"x")], &[]).unwrap();
    assert!(follow.wait(Duration::from_secs(5)).unwrap(), "the append wakes the listener");
}

/// What several nodes on one database rely on: the first identity stored wins, an
/// append by one wakes the others' listeners, the append lock holds the others off,
/// and heartbeats list the live nodes.
#[test]
fn nodes_share_meta_wake_each_other_and_heartbeat() {
    use std::time::Duration;
    let Some(h) = PgHarness::new() else { return };
    let mut a = PostgresStore::open(&h.schema.url).unwrap();
    let mut b = PostgresStore::open(&h.schema.url).unwrap();
    assert!(a.shared());

    assert_eq!(a.meta_insert("k", b"first").unwrap(), b"first");
    assert_eq!(b.meta_insert("k", b"second").unwrap(), b"first", "the first writer's value is kept");

    let mut follow = b.follow().unwrap().expect("PostgreSQL can be followed");
    assert!(!follow.wait(Duration::from_millis(50)).unwrap(), "nothing appended yet");
    a.append(0, &[event(b"x")], &[]).unwrap();
    assert!(follow.wait(Duration::from_secs(5)).unwrap(), "an append by another handle wakes the listener");
    assert!(!follow.wait(Duration::from_millis(50)).unwrap(), "one append, one wake-up");
    assert!(matches!(b.append(0, &[event(b"y")], &[]), Err(tollgate_store::StoreError::Conflict { actual: 1, .. })));

    // While `a` holds the appends, `b` waits; it goes through once `a` lets go.
    a.hold_appends(true).unwrap();
    let url = h.schema.url.clone();
    let t = std::thread::spawn(move || {
        let mut b = PostgresStore::open(&url).unwrap();
        let started = std::time::Instant::now();
        b.append(2, &[event(b"z")], &[]).unwrap();
        started.elapsed()
    });
    std::thread::sleep(Duration::from_millis(300));
    a.append(1, &[event(b"w")], &[]).unwrap();
    a.hold_appends(false).unwrap();
    assert!(t.join().unwrap() >= Duration::from_millis(250), "the other append waited for the hold");
    assert_eq!(a.len().unwrap(), 3);

    // A hold that is never let go (a node frozen while holding it) holds the others up
    // for the append lock timeout, not for ever: they fail and write nothing.
    a.hold_appends(true).unwrap();
    let mut c = PostgresStore::open(&h.schema.url).unwrap();
    c.set_append_lock_timeout(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let refused = c.append(3, &[event(b"v")], &[]);
    assert!(refused.is_err(), "{refused:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "gave up after {:?}", started.elapsed());
    assert!(c.hold_appends(true).is_err(), "a hold waits for the same time");
    a.hold_appends(false).unwrap();
    c.append(3, &[event(b"v")], &[]).unwrap();
    assert_eq!(a.len().unwrap(), 4);

    let node = |id: &str, seq| tollgate_store::NodeRecord {
        id: id.into(),
        address: "127.0.0.1:1".into(),
        seq,
        digest: [seq as u8; 32],
        age_ms: 0,
    };
    a.heartbeat(&node("n1", 3)).unwrap();
    b.heartbeat(&node("n2", 2)).unwrap();
    b.heartbeat(&node("n2", 3)).unwrap();
    let nodes = a.nodes(Duration::from_secs(10)).unwrap();
    assert_eq!(nodes.iter().map(|n| (n.id.as_str(), n.seq)).collect::<Vec<_>>(), vec![("n1", 3), ("n2", 3)]);
    assert!(nodes.iter().all(|n| n.age_ms < 10_000 && n.digest == [3; 32]));
    std::thread::sleep(Duration::from_millis(30));
    assert!(a.nodes(Duration::from_millis(1)).unwrap().is_empty(), "silent nodes are not listed");
    drop(follow);
}

/// A schema version no build wrote is refused with a clear error (a negative one used
/// to index past the migrations and panic).
#[test]
fn a_schema_version_no_build_wrote_is_refused() {
    let Some(mut h) = PgHarness::new() else { return };
    drop(h.create());
    let mut c = postgres::Client::connect(&h.schema.url, postgres::NoTls).unwrap();
    for version in [-1, 9_999] {
        c.execute("UPDATE tollgate_schema SET version = $1", &[&version]).unwrap();
        let Err(err) = PostgresStore::open(&h.schema.url) else { panic!("version {version} was accepted") };
        assert!(
            matches!(err, tollgate_store::StoreError::Incompatible(ref m) if m.contains(&version.to_string())),
            "{err:?}"
        );
    }
}

/// A whole page of the log missing from the table (the length counts past it) is
/// corruption named by its first index, not a scan that never ends.
#[test]
fn a_missing_page_of_events_is_corruption_not_a_hang() {
    let Some(mut h) = PgHarness::new() else { return };
    let store = h.create();
    let mut c = postgres::Client::connect(&h.schema.url, postgres::NoTls).unwrap();
    c.execute("INSERT INTO events (idx, leaf, leaf_hash) VALUES (0, 'a', $1), (5000, 'b', $1)", &[&vec![7u8; 32]])
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = 0;
        let r = store.scan(0, &mut |_| {
            seen += 1;
            Ok(())
        });
        let _ = tx.send((r, seen));
    });
    let (r, seen) = rx.recv_timeout(std::time::Duration::from_secs(30)).expect("the scan ends");
    assert_eq!(seen, 1);
    assert!(matches!(r, Err(tollgate_store::StoreError::Corrupt { index: Some(1), .. })), "{r:?}");
}

/// Nodes raising one mark together end at the highest value any of them raised it to
/// (a read then a write let a node lower another's mark).
#[test]
fn nodes_raising_one_mark_end_at_the_highest() {
    let Some(mut h) = PgHarness::new() else { return };
    drop(h.create());
    let url = h.schema.url.clone();
    let threads: Vec<_> = (0..4i64)
        .map(|t| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut store = PostgresStore::open(&url).unwrap();
                let mut highest = 0;
                for n in 0..150i64 {
                    // Each thread climbs, with values interleaved with the others'.
                    let value = n * 4 + t;
                    let after = store.meta_raise("mark", value).unwrap();
                    assert!(after >= value, "{after} < {value}");
                    highest = highest.max(value);
                }
                highest
            })
        })
        .collect();
    let highest = threads.into_iter().map(|t| t.join().unwrap()).max().unwrap();
    let store = PostgresStore::open(&url).unwrap();
    let stored = store.meta("mark").unwrap().map(|b| i64::from_be_bytes(b.try_into().unwrap()));
    assert_eq!(stored, Some(highest));
    assert!(PostgresStore::open(&url).unwrap().meta_raise("mark", -1).is_err());
}

/// The DNS names a PEM certificate is for (its subject alternative names).
fn dns_names(pem: &str) -> Vec<String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use x509_cert::der::Decode;
    use x509_cert::der::oid::AssociatedOid;
    use x509_cert::ext::pkix::SubjectAltName;
    use x509_cert::ext::pkix::name::GeneralName;
    let der = CertificateDer::from_pem_file(pem).unwrap();
    let cert = x509_cert::Certificate::from_der(&der).unwrap();
    cert.tbs_certificate
        .extensions
        .unwrap_or_default()
        .iter()
        .filter(|e| e.extn_id == SubjectAltName::OID)
        .flat_map(|e| SubjectAltName::from_der(e.extn_value.as_bytes()).map(|s| s.0).unwrap_or_default())
        .filter_map(|g| match g {
            GeneralName::DnsName(n) => Some(n.to_string()),
            _ => None,
        })
        .collect()
}

/// TLS as the URL's `sslmode` asks: verified against the server's certificate given as
/// `sslrootcert` (Debian's PostgreSQL serves a self-signed one, named after the host it
/// was installed on: the test connects by that name to 127.0.0.1 with `hostaddr`), and
/// refused when that certificate is not trusted or names another host. Plaintext by
/// default, as before.
#[test]
fn connects_over_tls_when_asked_and_verifies_the_server() {
    let Some(h) = PgHarness::new() else { return };
    let base = tollgate_store::test_schema::base_url();
    let (ssl, cert) = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&base, postgres::NoTls).unwrap();
        let show = |c: &mut postgres::Client, what: &str| -> String {
            c.query_one(&format!("SHOW {what}"), &[]).unwrap().get(0)
        };
        (show(&mut c, "ssl"), show(&mut c, "ssl_cert_file"))
    })
    .join()
    .unwrap();
    // Where the server has no TLS, or its certificate is not where it says (another
    // machine), there is nothing to connect to: say so rather than pass.
    if ssl != "on" || std::fs::metadata(&cert).is_err() || !h.schema.url.contains("@127.0.0.1:") {
        eprintln!("skipping the PostgreSQL TLS test: ssl={ssl}, certificate {cert}, url {}", h.schema.url);
        return;
    }
    let Some(name) = dns_names(&cert).into_iter().next() else {
        eprintln!("skipping the PostgreSQL TLS test: the server's certificate {cert} names no host");
        return;
    };
    let by_name = format!("{}&hostaddr=127.0.0.1", h.schema.url.replacen("@127.0.0.1:", &format!("@{name}:"), 1));
    let verified = format!("{by_name}&sslmode=verify-full&sslrootcert={cert}");
    let mut store = PostgresStore::open(&verified).unwrap();
    assert!(store.encrypted().unwrap(), "the connection is TLS");
    store.append(0, &[tollgate_store::NewEvent { leaf: b"over tls", leaf_hash: [2; 32] }], &[]).unwrap();
    let reader = PostgresStore::open_read_only(&verified).unwrap();
    assert!(reader.encrypted().unwrap());
    assert_eq!(reader.read(0, 1).unwrap()[0].leaf, b"over tls");
    assert!(!PostgresStore::open(&h.schema.url).unwrap().encrypted().unwrap(), "no sslmode: plaintext");

    let refused = |url: String| match PostgresStore::open(&url) {
        Ok(_) => panic!("{url} connected"),
        Err(e) => e.to_string(),
    };
    // Encrypted to an unknown peer is refused: the certificate is not one of the roots
    // given (the public CAs, which never signed it)...
    let public = "/etc/ssl/certs/ca-certificates.crt";
    if std::fs::metadata(public).is_ok() {
        let e = refused(format!("{by_name}&sslmode=verify-full&sslrootcert={public}"));
        assert!(e.contains("certificate"), "{e}");
    }
    // ...or names another host than the one asked for.
    let e = refused(format!("{}&sslmode=verify-full&sslrootcert={cert}", h.schema.url));
    assert!(e.contains("certificate"), "{e}");
}
