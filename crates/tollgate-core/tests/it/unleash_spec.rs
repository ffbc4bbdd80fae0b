//! Unleash's client specification, every case of every file, through the core
//! evaluator: `tests` (is the gate on?) and `variantTests` (which variant?).

use std::path::PathBuf;

use serde_json::{Value, json};
use tollgate_core::Timestamp;
use tollgate_core::gate::{Context, FeaturesDocument, Ruleset, evaluate};

fn spec_dir() -> PathBuf {
    let dir = std::env::var_os("TOLLGATE_CONFORMANCE_DIR").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/conformance")),
        PathBuf::from,
    );
    let dir = dir.join("unleash-client-spec");
    assert!(dir.is_dir(), "Unleash client specification not found at {}", dir.display());
    dir
}

/// Evaluates one case the way an Unleash SDK would answer it, in the spec's shapes.
fn answer(rules: &Ruleset, toggle: &str, ctx: &Context, random: u32, variant: bool) -> Value {
    let now = Timestamp::parse("2026-11-23T12:00:00Z").unwrap();
    let e = evaluate(rules, toggle, ctx, None, now, random);
    if !variant {
        return json!(e.is_some_and(|e| e.enabled));
    }
    match e {
        Some(e) => {
            let mut v = serde_json::to_value(e.variant).unwrap();
            if v.get("payload").is_none() {
                v.as_object_mut().unwrap().remove("payload");
            }
            v
        }
        None => json!({"name": "disabled", "enabled": false, "feature_enabled": false}),
    }
}

#[test]
fn every_client_specification_case_passes() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(spec_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "expected the whole specification, found {} files", files.len());
    let (mut cases, mut failures) = (0, Vec::new());
    for file in &files {
        let spec: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let doc: FeaturesDocument = serde_json::from_value(spec["state"].clone())
            .unwrap_or_else(|e| panic!("{name}: state is not a features document: {e}"));
        let rules = Ruleset::from_unleash(&doc);
        assert_eq!(rules.len(), doc.features.len(), "{name}: every feature compiles to a gate");
        for (group, variant) in [("tests", false), ("variantTests", true)] {
            for case in spec[group].as_array().into_iter().flatten() {
                cases += 1;
                let ctx: Context = serde_json::from_value(case["context"].clone()).unwrap();
                let toggle = case["toggleName"].as_str().unwrap();
                // Deterministic cases must not depend on the random draw.
                for random in [0, 42, u32::MAX] {
                    let got = answer(&rules, toggle, &ctx, random, variant);
                    if got != case["expectedResult"] {
                        failures.push(format!(
                            "{name} / {} (random {random}): expected {}, got {got}",
                            case["description"], case["expectedResult"]
                        ));
                        break;
                    }
                }
            }
        }
    }
    assert!(cases > 250, "only {cases} cases found");
    assert!(failures.is_empty(), "{} of {cases} cases failed:\n{}", failures.len(), failures.join("\n"));
}
