//! `tollgate serve --tls-cert --tls-key`, and the client commands trusting a private CA
//! (`--ca-cert`, `TOLLGATE_CA_CERT`).

use crate::support::{ADMIN, bin, run_remote, start_with};

#[path = "../../../tollgate-sdk/tests/it/pki.rs"]
mod pki;

/// Writes `text` to `dir/name` and returns the path as a flag value.
fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn serves_https_and_clients_trust_the_ca_they_are_given() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki::test_pki();
    let file = |name: &str, text: &str| write(tmp.path(), name, text);
    let (ca, cert, key) = (file("ca.pem", &ca), file("cert.pem", &cert), file("key.pem", &key));
    let data = tmp.path().join("data");
    let server = start_with(&data, &["--tls-cert", &cert, "--tls-key", &key], None);
    assert!(server.base.starts_with("https://127.0.0.1:"), "{}", server.base);

    // Not trusted: the command fails and says why.
    let (ok, out) = run_remote(&["keys", "list"], &server.base);
    assert!(!ok, "{out}");
    assert!(out.contains("cannot reach") && out.to_lowercase().contains("certificate"), "{out}");
    // Trusted through the flag, or the environment.
    let (ok, out) = run_remote(&["keys", "list", "--ca-cert", &ca], &server.base);
    assert!(ok && out.contains("\"keys\""), "{out}");
    let out = bin()
        .args(["keys", "list"])
        .env("TOLLGATE_URL", &server.base)
        .env("TOLLGATE_TOKEN", ADMIN)
        .env("TOLLGATE_CA_CERT", &ca)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A CA file that holds no certificate is named.
    let (ok, out) = run_remote(&["keys", "list", "--ca-cert", &key], &server.base);
    assert!(!ok && out.contains("holds no PEM certificate"), "{out}");
    // `import` takes the flag too (it used to take only the environment variable).
    let rows = file("rows.csv", "external_id,product,plan,licensee\nK-1,app,std,Hooli\n");
    let (ok, out) = run_remote(&["import", "--format", "csv", &rows, "--dry-run", "--ca-cert", &ca], &server.base);
    // (The server answers with its report; the row names a product it does not have.)
    assert!(!ok && out.contains("of 1 rows"), "{out}");
    server.stop();
}

#[test]
fn a_bad_certificate_or_key_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, cert, key) = pki::test_pki();
    let (_, _, other_key) = pki::test_pki();
    let write = |name: &str, text: &str| write(tmp.path(), name, text);
    let (cert, key, other_key) = (write("cert.pem", &cert), write("key.pem", &key), write("other.pem", &other_key));
    let data = tmp.path().join("data");
    let serve = |extra: &[&str]| {
        let out = bin()
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(&data)
            .args(extra)
            .env("TOLLGATE_LOG", "warn")
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let e = serve(&["--tls-cert", &cert]);
    assert!(e.contains("both tls_cert and tls_key"), "{e}");
    let e = serve(&["--tls-cert", &key, "--tls-key", &key]);
    assert!(e.contains("holds no certificate"), "{e}");
    let e = serve(&["--tls-cert", &cert, "--tls-key", &cert]);
    assert!(e.contains("cannot read a private key"), "{e}");
    let e = serve(&["--tls-cert", &cert, "--tls-key", &other_key]);
    assert!(e.contains("does not serve the certificate"), "{e}");
    let missing = tmp.path().join("missing.pem");
    let e = serve(&["--tls-cert", missing.to_str().unwrap(), "--tls-key", &key]);
    assert!(e.contains("missing.pem"), "{e}");
    assert!(!data.exists(), "nothing is written for a server that cannot start");
}

#[test]
fn a_renewed_certificate_is_served_after_sighup_and_a_broken_one_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| write(tmp.path(), name, text);
    let (ca1, cert1, key1) = pki::test_pki();
    let (ca2, cert2, key2) = pki::test_pki();
    let (ca1, ca2) = (write("ca1.pem", &ca1), write("ca2.pem", &ca2));
    let (cert, key) = (write("cert.pem", &cert1), write("key.pem", &key1));
    let log = tmp.path().join("server.log");
    let server = start_with(&tmp.path().join("data"), &["--tls-cert", &cert, "--tls-key", &key], Some(&log));
    let trusts = |ca: &str| run_remote(&["keys", "list", "--ca-cert", ca], &server.base).0;
    let hangup = || {
        let ok = std::process::Command::new("kill").args(["-HUP", &server.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
    };
    assert!(trusts(&ca1) && !trusts(&ca2));

    // A renewal that does not read (a half-written file) keeps the old pair serving.
    write("cert.pem", "-----BEGIN CERTIFICATE-----\nnot base64\n");
    hangup();
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(&log).unwrap().contains("kept the TLS certificate in use") {
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "the failed reload was not logged");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(trusts(&ca1));

    // The renewed pair serves new connections once the server is told.
    write("cert.pem", &cert2);
    write("key.pem", &key2);
    hangup();
    let started = std::time::Instant::now();
    while !trusts(&ca2) {
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "the renewed certificate was not served");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!trusts(&ca1));
    server.stop();
}

/// `systemctl reload` sends SIGHUP whatever the server serves: without HTTPS it is
/// logged, and the server goes on (SIGHUP's default action would end it).
#[test]
fn a_hangup_does_not_stop_a_server_without_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = crate::support::start(&tmp.path().join("data"));
    let ok = std::process::Command::new("kill").args(["-HUP", &server.child.id().to_string()]).status().unwrap();
    assert!(ok.success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(server.child.try_wait().unwrap().is_none(), "the server stopped on SIGHUP");
    let (ok, out) = run_remote(&["keys", "list"], &server.base);
    assert!(ok, "{out}");
    server.stop();
}
