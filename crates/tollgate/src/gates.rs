//! `tollgate gates …`: rollout gates on a running server over HTTP.
//!
//! `import --unleash FILE` sends an Unleash client features document (what Unleash's
//! `/api/client/features` serves, or a client-specification `state`) to
//! `POST /v1/gates/import`; the server parses and checks it with core's code, so the
//! CLI only reads the file and reports.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use crate::remote::{Remote, call, pretty, runtime};

#[derive(Subcommand)]
pub enum GatesCmd {
    /// Import an Unleash client features document ({"version","features","segments"}).
    Import {
        #[command(flatten)]
        remote: Remote,
        /// The Unleash features file.
        #[arg(long, value_name = "FILE")]
        unleash: PathBuf,
        /// Bind an imported gate to a catalog feature: GATE=PRODUCT/FEATURE (repeatable).
        /// Unmapped gates evaluate exactly as Unleash would, with no license required.
        #[arg(long = "map", value_name = "GATE=PRODUCT/FEATURE")]
        map: Vec<String>,
    },
    /// List the gates and their current versions.
    List {
        #[command(flatten)]
        remote: Remote,
    },
}

/// `GATE=PRODUCT/FEATURE` pairs as the import body's `map` object.
fn parse_map(pairs: &[String]) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let mut map = serde_json::Map::new();
    for p in pairs {
        let (gate, feature) = p
            .split_once('=')
            .filter(|(g, f)| !g.is_empty() && f.contains('/'))
            .with_context(|| format!("--map '{p}': expected GATE=PRODUCT/FEATURE"))?;
        if map.insert(gate.to_string(), serde_json::Value::from(feature)).is_some() {
            anyhow::bail!("--map names gate '{gate}' twice");
        }
    }
    Ok(map)
}

pub fn run(cmd: GatesCmd) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    match cmd {
        GatesCmd::Import { remote, unleash, map } => {
            let text =
                std::fs::read_to_string(&unleash).with_context(|| format!("cannot read {}", unleash.display()))?;
            let document: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("{} is not JSON", unleash.display()))?;
            let body = serde_json::json!({ "unleash": document, "map": parse_map(&map)? });
            let out = rt.block_on(call(&remote, reqwest::Method::POST, "/v1/gates/import", Some(body)))?;
            let report: serde_json::Value = serde_json::from_str(&out).unwrap_or(serde_json::Value::String(out));
            let gates = report["gates"].as_array().map_or(0, Vec::len);
            let segments = report["segments"].as_array().map_or(0, Vec::len);
            eprintln!("imported {gates} gates and {segments} segments from {}", unleash.display());
            say!("{}", serde_json::to_string_pretty(&report)?);
        }
        GatesCmd::List { remote } => {
            let out = rt.block_on(call(&remote, reqwest::Method::GET, "/v1/gates", None))?;
            say!("{}", pretty(&out));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_map;

    #[test]
    fn map_pairs_parse_and_bad_ones_are_refused() {
        let m = parse_map(&["beta=cad/a".into(), "x=app/pro".into()]).unwrap();
        assert_eq!(m["beta"], "cad/a");
        assert_eq!(m["x"], "app/pro");
        assert!(parse_map(&["beta".into()]).is_err());
        assert!(parse_map(&["beta=a".into()]).is_err(), "a feature names its product");
        assert!(parse_map(&["b=p/a".into(), "b=p/c".into()]).is_err());
    }
}
