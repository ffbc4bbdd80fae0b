//! `tollgate serve` settings that shape the process.

use crate::support::{bin, run_remote, start_with};

/// Threads of the process whose name starts with `prefix` (Linux: /proc/PID/task).
fn threads_named(pid: u32, prefix: &str) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end().starts_with(prefix))
        .count()
}

#[test]
fn workers_sets_the_request_threads_and_zero_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start_with(&tmp.path().join("data"), &["--workers", "1"], None);
    // A thread names itself once it runs: give them a moment after start.
    let pid = server.child.id();
    let started = std::time::Instant::now();
    let unnamed = || threads_named(pid, "tollgate-commit") == 0 || threads_named(pid, "tokio-rt-worker") == 0;
    while unnamed() && started.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(threads_named(pid, "tollgate-commit"), 1, "the ledger's writer, a thread of its own");
    assert_eq!(threads_named(pid, "tokio-rt-worker"), 1, "one request thread");
    let (ok, out) = run_remote(&["keys", "list"], &server.base);
    assert!(ok, "{out}");
    server.stop();

    let out = bin().args(["serve", "--workers", "0", "--data"]).arg(tmp.path().join("other")).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--workers"), "{}", String::from_utf8_lossy(&out.stderr));
}
