//! Every conformance case as its own test, each on a fresh SQLite file.

use tollgate_store::conformance;

use crate::SqliteHarness;

crate::conformance_cases!(Some(SqliteHarness::new()));

/// What a PostgreSQL backend would call: the whole suite, case after case.
#[test]
fn run_all_runs_the_whole_suite() {
    conformance::run_all(&mut || Box::new(SqliteHarness::new()));
}
