//! A fresh PostgreSQL schema for a test or a bench, dropped with the value.
//!
//! The server is `TOLLGATE_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). When it cannot be reached, [`TestSchema::create`]
//! fails in CI (`CI=true`) and otherwise prints why and returns `None`, so the caller
//! skips. Public (not behind `cfg(test)`) for the same reason as [`crate::conformance`]:
//! the other crates' tests and benches share it; nothing in the server calls it.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// The PostgreSQL server tests use.
pub fn base_url() -> String {
    std::env::var("TOLLGATE_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub struct TestSchema {
    /// The connection string, with this schema as the search path.
    pub url: String,
    /// The schema's name.
    pub name: String,
    base: String,
}

impl TestSchema {
    /// Creates a schema named `<prefix>_<process>_<n>`. The connections run on a plain
    /// thread of their own, since the sync client must not run on an async runtime's.
    pub fn create(prefix: &str) -> Option<TestSchema> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!("{prefix}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        std::thread::spawn(move || {
            let base = base_url();
            let mut admin = match postgres::Client::connect(&base, postgres::NoTls) {
                Ok(c) => c,
                Err(e) => {
                    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
                    assert!(!in_ci, "PostgreSQL is required in CI but {base} cannot be reached: {e}");
                    let _ = writeln!(std::io::stderr(), "skipping PostgreSQL test: {base} cannot be reached: {e}");
                    return None;
                }
            };
            admin
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"))
                .unwrap_or_else(|e| panic!("cannot create schema {name} on {base}: {e}"));
            let sep = if base.contains('?') { '&' } else { '?' };
            let url = format!("{base}{sep}options=-csearch_path%3D{name}");
            Some(TestSchema { url, name, base })
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// Runs one query that returns one `bigint`, on a plain thread.
    pub fn query_i64(&self, sql: &str) -> i64 {
        let (base, sql) = (self.base.clone(), sql.to_string());
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&base, postgres::NoTls).expect("connect to PostgreSQL");
            c.query_one(&sql, &[]).expect("query").get(0)
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let (base, sql) = (self.base.clone(), format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
        let _ = std::thread::spawn(move || {
            if let Ok(mut c) = postgres::Client::connect(&base, postgres::NoTls) {
                let _ = c.batch_execute(&sql);
            }
        })
        .join();
    }
}
