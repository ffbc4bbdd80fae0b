//! `tollgate demo`, the README's first command: it starts, seeds a catalog, licenses and
//! a rollout gate, prints examples that work, and keeps its data across a restart.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use serde_json::{Value, json};

use crate::support::{ADMIN, bin, client, count, get_json};

struct Demo {
    child: std::process::Child,
    base: String,
    printed: String,
    /// Kept open: the demo must not see a closed pipe while the test runs (it would
    /// survive one, but the test should not depend on it).
    _stdout: BufReader<std::process::ChildStdout>,
}

/// Starts the demo on a free port and reads what it prints until its last example.
fn start(data: &std::path::Path) -> Demo {
    let mut child = bin()
        .args(["demo", "--data"])
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .env("TOLLGATE_BOOTSTRAP_TOKEN", ADMIN)
        .env("TOLLGATE_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn tollgate demo");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut printed = String::new();
    let mut base = String::new();
    loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).expect("demo output") > 0, "demo stopped printing: {printed}");
        if let Some(b) = line.trim().strip_prefix("listening on ") {
            base = b.to_string();
        }
        printed.push_str(&line);
        if line.contains("/v1/ledger/checkpoint") {
            break;
        }
    }
    Demo { child, base, printed, _stdout: out }
}

async fn post(c: &reqwest::Client, url: &str, body: Value) -> Value {
    let r = c.post(url).bearer_auth(ADMIN).json(&body).send().await.expect("request");
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.json().await.expect("json")
}

#[tokio::test]
async fn the_demo_seeds_licenses_and_a_gate_and_its_examples_work() {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = start(dir.path());
    assert!(demo.printed.contains("Tollgate demo is running at"), "{}", demo.printed);
    assert!(demo.printed.contains("/ofrep/v1/evaluate/flags/gpu-renderer-v2"), "{}", demo.printed);
    let c = client();
    let base = demo.base.clone();
    assert_eq!(count(&c, &base).await, 5, "five demo licenses");
    let licenses = get_json(&c, &format!("{base}/v1/licenses?limit=500")).await;
    let key_of = |who: &str| {
        licenses["items"]
            .as_array()
            .expect("a license list")
            .iter()
            .find(|l| l["licensee"] == who)
            .and_then(|l| l["key"].as_str())
            .unwrap_or_else(|| panic!("no license of {who}: {licenses}"))
            .to_string()
    };
    let (pro, standard) = (key_of("Initech"), key_of("Hooli"));
    // The printed validation example: Initech's Pro license has GPU rendering.
    assert!(demo.printed.contains(&pro), "the examples use Initech's key");
    let v = post(&c, &format!("{base}/v1/validate"), json!({"key": pro, "feature": "render.gpu"})).await;
    assert_eq!(v["code"], "VALID", "{v}");
    // The gate: on for the entitled license, off with the reason for the other one.
    let flag = format!("{base}/ofrep/v1/evaluate/flags/gpu-renderer-v2");
    let on = post(&c, &flag, json!({"context": {"targetingKey": "user-1", "licenseKey": pro}})).await;
    assert_eq!(on["metadata"]["enabled"], true, "{on}");
    assert!(matches!(on["variant"].as_str(), Some("vulkan" | "opengl")), "{on}");
    let off = post(&c, &flag, json!({"context": {"targetingKey": "user-1", "licenseKey": standard}})).await;
    assert_eq!(off["metadata"]["enabled"], false, "{off}");
    assert_eq!(off["metadata"]["licenseCode"], "NOT_ENTITLED", "{off}");
    // A restarted demo keeps its data and seeds nothing twice.
    demo.child.kill().unwrap();
    demo.child.wait().unwrap();
    let mut again = start(dir.path());
    assert_eq!(count(&c, &again.base).await, 5);
    again.child.kill().unwrap();
    again.child.wait().unwrap();
}

/// The demo seeds only its own ledger: pointed (by a flag, or an environment variable a
/// real server's deployment sets) at a PostgreSQL database or at a real server's data
/// directory, it refuses before it writes anything.
#[tokio::test]
async fn the_demo_refuses_a_ledger_that_is_not_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    crate::verify::make_ledger(&real, 1).await;
    let before = std::fs::metadata(tollgate_server::db_path(&real)).unwrap().len();
    let out = bin().args(["demo", "--listen", "127.0.0.1:0"]).env("TOLLGATE_DATA", &real).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("not the demo's"), "{text}");
    assert_eq!(std::fs::metadata(tollgate_server::db_path(&real)).unwrap().len(), before, "nothing written");
    let out = bin()
        .args(["demo", "--listen", "127.0.0.1:0", "--data"])
        .arg(tmp.path().join("fresh"))
        .env("TOLLGATE_DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("its own embedded ledger"), "{text}");
}

/// A first start stopped after the product (Ctrl-C while seeding) is completed by the
/// next start: it used to see the product and seed nothing more, then print examples
/// for a gate and a license that did not exist.
#[tokio::test]
async fn a_demo_seeded_half_way_is_completed_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        let server = crate::support::start(dir.path());
        let product = json!({"key":"acme-cad","name":"Acme CAD","features":[
            {"key":"core","name":"Core modelling"},{"key":"export.pdf","name":"PDF export"},
            {"key":"export.step","name":"STEP export"},{"key":"render.gpu","name":"GPU rendering"},
            {"key":"collab","name":"Real-time collaboration"}]});
        post(&client(), &format!("{}/v1/products", server.base), product).await;
        server.stop();
    }
    let mut demo = start(dir.path());
    let c = client();
    assert_eq!(count(&c, &demo.base).await, 5, "five demo licenses: {}", demo.printed);
    let gate = get_json(&c, &format!("{}/v1/gates/gpu-renderer-v2", demo.base)).await;
    assert_eq!(gate["key"], "gpu-renderer-v2", "{gate}");
    assert!(!demo.printed.contains("\"key\":\"\""), "the examples name a real key: {}", demo.printed);
    demo.child.kill().unwrap();
    demo.child.wait().unwrap();
}
