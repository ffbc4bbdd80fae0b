//! Every conformance case as its own test, each on a fresh SQLite file.

use tollgate_store::conformance::{self, CASES};

use crate::SqliteHarness;

macro_rules! sqlite_cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                conformance::$name(&mut SqliteHarness::new());
            }
        )*

        #[test]
        fn every_case_is_listed() {
            let listed = [$(stringify!($name)),*];
            let all: Vec<&str> = CASES.iter().map(|c| c.name).collect();
            assert_eq!(listed.as_slice(), all.as_slice());
        }
    };
}

sqlite_cases!(
    append_len_read_scan,
    wrong_expected_len_writes_nothing,
    duplicate_idempotency_key_writes_nothing,
    idempotency_round_trip,
    checkpoints_ascending_and_latest,
    snapshots_put_list_load_prune,
    meta_round_trip,
    tokens_insert_lookup_revoke,
    survives_reopen,
    reader_sees_committed_data,
    second_writer_gets_conflict,
    concurrent_appends_one_wins,
    scan_streams_a_large_log,
);

/// What a PostgreSQL backend would call: the whole suite, case after case.
#[test]
fn run_all_runs_the_whole_suite() {
    conformance::run_all(&mut || Box::new(SqliteHarness::new()));
}
