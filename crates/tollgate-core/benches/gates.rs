//! Gate evaluation in process: Tollgate's core evaluator against Unleash's reference
//! engine (`unleash-yggdrasil`), on the same features document and the same
//! contexts, in the same run.
//!
//! Run: `cargo bench -p tollgate-core --bench gates`. Two workloads:
//! - `mixed`: 100 features of the kinds vendors use (flexible rollouts with
//!   constraints, user-id lists, semver/number/date/string constraints, a segment,
//!   variants with payloads), each evaluated for one of 256 contexts per iteration;
//! - `spec`: every case of Unleash's client specification (all files).
//!
//! Each engine answers what an SDK's `getVariant` answers (enabled and variant):
//! `gate::evaluate` for Tollgate, `EngineState::get_variant` for yggdrasil, plus
//! yggdrasil's `is_enabled` alone. Medians are in
//! `target/criterion/<group>/<engine>/new/estimates.json`. The answers of both engines
//! are compared before timing, so the bench cannot time a wrong answer.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use tollgate_core::Timestamp;
use tollgate_core::gate::{Context, FeaturesDocument, Ruleset, evaluate};
use unleash_types::client_features::{ClientFeatures, Context as YContext};
use unleash_yggdrasil::EngineState;

fn mixed_document() -> Value {
    let features: Vec<Value> = (0..100)
        .map(|i| {
            let name = format!("feature-{i}");
            let strategies = match i % 5 {
                0 => json!([{"name": "flexibleRollout",
                    "parameters": {"rollout": "50", "stickiness": "default", "groupId": name},
                    "constraints": [{"contextName": "environment", "operator": "IN", "values": ["production", "staging"]}]}]),
                1 => json!([{"name": "flexibleRollout",
                    "parameters": {"rollout": "30", "stickiness": "userId", "groupId": name},
                    "constraints": [
                        {"contextName": "appVersion", "operator": "SEMVER_GT", "value": "1.2.0"},
                        {"contextName": "country", "operator": "NOT_IN", "values": ["xx", "yy"]}]}]),
                2 => json!([
                    {"name": "userWithId", "parameters": {"userIds": (0..20).map(|u| format!("user-{}", u * 7)).collect::<Vec<_>>().join(",")}},
                    {"name": "default", "constraints": [
                        {"contextName": "email", "operator": "STR_ENDS_WITH", "values": ["@example.com"], "caseInsensitive": true}]}]),
                3 => json!([{"name": "default", "constraints": [
                    {"contextName": "age", "operator": "NUM_GT", "value": "18"},
                    {"contextName": "currentTime", "operator": "DATE_AFTER", "value": "2026-01-01T00:00:00.000Z"}]}]),
                _ => json!([{"name": "gradualRolloutUserId", "parameters": {"percentage": "40", "groupId": name}, "segments": [1]}]),
            };
            let variants = if i % 2 == 0 {
                json!([
                    {"name": "blue", "weight": 500, "stickiness": "default", "payload": {"type": "string", "value": "b"}},
                    {"name": "green", "weight": 300, "stickiness": "default", "payload": {"type": "json", "value": "{\"g\":1}"}},
                    {"name": "red", "weight": 200, "stickiness": "default",
                     "overrides": [{"contextName": "userId", "values": ["user-1", "user-2"]}]}])
            } else {
                json!([])
            };
            json!({"name": name, "enabled": i % 17 != 0, "strategies": strategies, "variants": variants})
        })
        .collect();
    json!({"version": 2, "features": features,
        "segments": [{"id": 1, "constraints": [{"contextName": "plan", "operator": "IN", "values": ["pro", "enterprise"]}]}]})
}

fn mixed_contexts() -> Vec<Value> {
    (0..256)
        .map(|n| {
            json!({"userId": format!("user-{n}"), "sessionId": format!("s-{n}"),
                "environment": if n % 3 == 0 { "development" } else { "production" },
                "appName": "bench", "currentTime": "2026-11-23T12:00:00.000Z",
                "properties": {"appVersion": format!("1.{}.0", n % 5), "country": if n % 7 == 0 { "xx" } else { "no" },
                    "email": format!("User{n}@Example.com"), "age": format!("{}", n % 40), "plan": if n % 2 == 0 { "pro" } else { "free" }}})
        })
        .collect()
}

/// One engine of each kind over one document, with the calls to make.
struct Workload {
    ours: Ruleset,
    theirs: EngineState,
    /// (toggle, our context, their context)
    calls: Vec<(String, Context, YContext)>,
}

fn workload(doc: &Value, calls: impl IntoIterator<Item = (String, Value)>) -> Workload {
    let ours = Ruleset::from_unleash(&serde_json::from_value::<FeaturesDocument>(doc.clone()).unwrap());
    // `initial_state` takes a chrono instant; read it through serde so the bench
    // needs no chrono dependency of its own.
    let started = serde_json::from_str("\"2026-11-23T12:00:00Z\"").unwrap();
    let mut theirs = EngineState::initial_state(started);
    theirs.apply_client_features(serde_json::from_value::<ClientFeatures>(doc.clone()).unwrap());
    let calls = calls
        .into_iter()
        .map(|(t, c)| (t, serde_json::from_value(c.clone()).unwrap(), serde_json::from_value(c).unwrap()))
        .collect();
    Workload { ours, theirs, calls }
}

fn now() -> Timestamp {
    Timestamp::parse("2026-11-23T12:00:00Z").unwrap()
}

/// Both engines agree on every call whose answer does not depend on a random draw.
fn check_agreement(w: &Workload) -> usize {
    let mut agreed = 0;
    for (toggle, ctx, yctx) in &w.calls {
        let ours = evaluate(&w.ours, toggle, ctx, None, now(), 0);
        let theirs = w.theirs.get_variant(toggle, yctx, &None);
        let (on, name) = ours.map_or((false, "disabled"), |e| (e.enabled, e.variant.name));
        if on == theirs.feature_enabled && name == theirs.name {
            agreed += 1;
        }
    }
    agreed
}

fn bench_workload(c: &mut Criterion, group: &str, w: &Workload) {
    let mut g = c.benchmark_group(group);
    let n = w.calls.len();
    let now = now();
    let mut i = 0usize;
    g.bench_function("tollgate", |b| {
        b.iter(|| {
            let (toggle, ctx, _) = &w.calls[i % n];
            i = i.wrapping_add(1);
            black_box(evaluate(&w.ours, black_box(toggle), black_box(ctx), None, now, i as u32).map(|e| e.variant))
        })
    });
    let mut i = 0usize;
    g.bench_function("yggdrasil_get_variant", |b| {
        b.iter(|| {
            let (toggle, _, yctx) = &w.calls[i % n];
            i = i.wrapping_add(1);
            black_box(w.theirs.get_variant(black_box(toggle), black_box(yctx), &None))
        })
    });
    let mut i = 0usize;
    g.bench_function("yggdrasil_is_enabled", |b| {
        b.iter(|| {
            let (toggle, _, yctx) = &w.calls[i % n];
            i = i.wrapping_add(1);
            black_box(w.theirs.is_enabled(black_box(toggle), black_box(yctx), &None))
        })
    });
    g.finish();
}

fn spec_calls() -> Vec<(Value, Vec<(String, Value)>)> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/conformance/unleash-client-spec"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| {
            let spec: Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
            let calls = ["tests", "variantTests"]
                .iter()
                .flat_map(|g| spec[*g].as_array().cloned().unwrap_or_default())
                .map(|case| (case["toggleName"].as_str().unwrap().to_string(), case["context"].clone()))
                .collect();
            (spec["state"].clone(), calls)
        })
        .collect()
}

fn gates(c: &mut Criterion) {
    let doc = mixed_document();
    let contexts = mixed_contexts();
    let calls =
        (0..contexts.len() * 4).map(|k| (format!("feature-{}", (k * 37) % 100), contexts[k % contexts.len()].clone()));
    let mixed = workload(&doc, calls);
    let agreed = check_agreement(&mixed);
    println!("mixed: engines agree on {agreed} of {} calls", mixed.calls.len());
    assert_eq!(agreed, mixed.calls.len(), "the engines disagree on the mixed workload");
    bench_workload(c, "gates_mixed", &mixed);

    // The specification is 20 small documents: one workload each would time map
    // lookups in tiny maps, so the spec group runs every case of every file per iteration.
    let specs: Vec<Workload> = spec_calls().into_iter().map(|(doc, calls)| workload(&doc, calls)).collect();
    let total: usize = specs.iter().map(|w| w.calls.len()).sum();
    let agreed: usize = specs.iter().map(check_agreement).sum();
    // Tollgate answers every case as the specification expects (tests/it/unleash_spec.rs),
    // so every case counted here as a disagreement is one yggdrasil 0.18.2 gets wrong.
    println!("spec: engines agree on {agreed} of {total} cases; yggdrasil differs from the specification on the rest");
    let now = now();
    let mut g = c.benchmark_group("gates_spec_all_cases");
    g.bench_function("tollgate", |b| {
        b.iter(|| {
            for w in &specs {
                for (toggle, ctx, _) in &w.calls {
                    black_box(evaluate(&w.ours, toggle, ctx, None, now, 7).map(|e| e.variant));
                }
            }
        })
    });
    g.bench_function("yggdrasil_get_variant", |b| {
        b.iter(|| {
            for w in &specs {
                for (toggle, _, yctx) in &w.calls {
                    black_box(w.theirs.get_variant(toggle, yctx, &None));
                }
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = gates
}
criterion_main!(benches);
