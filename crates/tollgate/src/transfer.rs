//! `tollgate import` and `tollgate export`.
//!
//! Two kinds of file:
//! - **License rows** (CSV with a header, or JSONL objects) from another system: sent
//!   to a running server (`--url`, `--token`), imported all or nothing, idempotent by
//!   `external_id`, with `--dry-run` and a report of refused rows by line number.
//! - **A ledger export** (`tollgate export --format jsonl`: one event per line, the
//!   exact leaf bytes): `tollgate import --format jsonl --data NEWDIR FILE` replays it
//!   into an empty data directory, so the result has the same root and state digest.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use tollgate_core::merkle::{MerkleLog, leaf_hash};
use tollgate_core::{Event, State};
use tollgate_store::{LedgerStore, NewEvent, SqliteStore};

use crate::ops::Progress;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Jsonl,
}

/// What `export` writes: the ledger is events, which have no CSV form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Jsonl,
}

/// Reads license rows: each a JSON object with its 1-based line number.
fn read_rows(path: &Path, format: Format) -> anyhow::Result<Vec<serde_json::Value>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut rows = Vec::new();
    match format {
        Format::Jsonl => {
            for (i, line) in BufReader::new(file).lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let mut v: serde_json::Value = serde_json::from_str(&line)
                    .with_context(|| format!("{}:{}: not a JSON object", path.display(), i + 1))?;
                if let Some(o) = v.as_object_mut() {
                    o.insert("line".into(), serde_json::Value::from(i as u64 + 1));
                }
                rows.push(v);
            }
        }
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(file);
            let headers = reader.headers().with_context(|| format!("{}: no header row", path.display()))?.clone();
            for record in reader.records() {
                let record = record.with_context(|| format!("{}: unreadable CSV", path.display()))?;
                let line = record.position().map(|p| p.line()).unwrap_or(0);
                let mut o = serde_json::Map::new();
                let mut metadata = serde_json::Map::new();
                o.insert("line".into(), serde_json::Value::from(line));
                for (h, v) in headers.iter().zip(record.iter()) {
                    if v.is_empty() {
                        continue;
                    }
                    match h {
                        "machines" => {
                            let fps: Vec<serde_json::Value> =
                                v.split([';', ' ']).filter(|s| !s.is_empty()).map(serde_json::Value::from).collect();
                            o.insert(h.into(), serde_json::Value::Array(fps));
                        }
                        "external_id" | "product" | "plan" | "licensee" | "expires_at" | "status" => {
                            o.insert(h.into(), serde_json::Value::from(v));
                        }
                        // Any other column is kept as metadata: `metadata.crm` or just `crm`.
                        other => {
                            metadata.insert(other.trim_start_matches("metadata.").into(), serde_json::Value::from(v));
                        }
                    }
                }
                if !metadata.is_empty() {
                    o.insert("metadata".into(), serde_json::Value::Object(metadata));
                }
                rows.push(serde_json::Value::Object(o));
            }
        }
    }
    Ok(rows)
}

fn is_ledger_export(path: &Path) -> anyhow::Result<bool> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let first = BufReader::new(file).lines().next().transpose()?.unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&first).unwrap_or_default();
    Ok(v.get("event").is_some() && v.get("v").is_some())
}

pub struct ImportArgs {
    pub format: Format,
    pub file: PathBuf,
    pub dry_run: bool,
    pub server: String,
    pub token: Option<String>,
    pub ca_cert: Option<PathBuf>,
    pub data: Option<PathBuf>,
}

/// Returns whether everything was accepted.
pub fn import(a: ImportArgs) -> anyhow::Result<bool> {
    if a.format == Format::Jsonl && is_ledger_export(&a.file)? {
        let data = a
            .data
            .context("this file is a ledger export: give --data with a new, empty data directory to replay it into")?;
        import_ledger(&a.file, &data, a.dry_run)?;
        return Ok(true);
    }
    let rows = read_rows(&a.file, a.format)?;
    let token = a.token.context("give --token (or TOLLGATE_TOKEN) with an admin or issuer token")?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let url = crate::remote::endpoint(&a.server, "/v1/import/licenses")?;
    let (status, body): (u16, serde_json::Value) = rt.block_on(async {
        let res = crate::remote::http_client(a.ca_cert.as_deref())?
            .post(&url)
            .bearer_auth(&token)
            .json(&serde_json::json!({ "dry_run": a.dry_run, "rows": rows }))
            .send()
            .await
            .with_context(|| crate::remote::unreachable(&url))?;
        let status = res.status().as_u16();
        let body = crate::remote::read_limited(res).await?;
        anyhow::Ok((status, serde_json::from_slice(&body).unwrap_or_default()))
    })?;
    let report = if status == 422 && body["code"] == "IMPORT_REJECTED" { &body["report"] } else { &body };
    if report.get("total").is_none() {
        if !(200..300).contains(&status) {
            anyhow::bail!("the server refused the import ({status} {}): {}", body["code"], body["detail"]);
        }
        // A 2xx that is no import report: not Tollgate answering (a proxy, another
        // service at that address), and nothing says the import happened.
        anyhow::bail!(
            "{url} answered {status} without an import report: is --url (or TOLLGATE_URL) the Tollgate server?"
        );
    }
    let count = |k: &str| report[k].as_array().map_or(0, Vec::len);
    let verb = if a.dry_run {
        "would import"
    } else if report["imported"] == true {
        "imported"
    } else {
        "imported nothing:"
    };
    say!(
        "{verb} {} new, {} unchanged, {} refused, of {} rows",
        count("created"),
        count("unchanged"),
        count("rejected"),
        report["total"]
    );
    for r in report["rejected"].as_array().into_iter().flatten() {
        say!(
            "  line {}: {} ({}): {}",
            r["line"],
            r["external_id"].as_str().unwrap_or("-"),
            r["code"].as_str().unwrap_or(""),
            r["detail"].as_str().unwrap_or("")
        );
    }
    // Only an import that happened made licenses; a refused one made none.
    if !a.dry_run && report["imported"] == true {
        for pair in report["created"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(report["unchanged"].as_array().into_iter().flatten())
        {
            say!("{}\t{}", pair[0].as_str().unwrap_or(""), pair[1].as_str().unwrap_or(""));
        }
    }
    Ok(count("rejected") == 0)
}

/// Replays a ledger export into an empty data directory, verifying every event: all of
/// the file is decoded, folded and hashed first, then written in one transaction, so a
/// bad line anywhere leaves nothing behind, and neither does a crash while writing.
fn import_ledger(file: &Path, data: &Path, dry_run: bool) -> anyhow::Result<()> {
    let lines: Vec<String> = BufReader::new(std::fs::File::open(file)?).lines().collect::<Result<_, _>>()?;
    let mut state = State::default();
    let mut log = MerkleLog::new();
    let mut progress = Progress::new("checking ledger");
    let total = lines.len() as u64;
    let mut events = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        let event =
            Event::decode(line.as_bytes()).with_context(|| format!("{}:{n}: not a ledger event", file.display()))?;
        // The lines are the ledger's leaves: a line that is not its event's canonical
        // form (edited, reformatted) would give other leaf hashes, and may hold what
        // canonical JSON cannot keep (a number past 2^53).
        // (Compared with the line's own canonical form, not the decoded event's: an
        // event of an older schema version is upcast when decoded.)
        let value: serde_json::Value = serde_json::from_str(line)?;
        if tollgate_core::canonical::to_vec(&value).map_err(|e| anyhow::anyhow!("{}:{n}: {e}", file.display()))?
            != line.as_bytes()
        {
            anyhow::bail!(
                "{}:{n}: not in canonical form (RFC 8785): an export's lines are the ledger's leaves byte for byte; was the file edited?",
                file.display()
            );
        }
        state.apply(&event).map_err(|e| anyhow::anyhow!("{}:{n}: does not fold: {e}", file.display()))?;
        let hash = leaf_hash(line.as_bytes());
        log.push(hash);
        events.push(NewEvent { leaf: line.as_bytes(), leaf_hash: hash });
        if log.len().is_multiple_of(10_000) {
            progress.update(log.len(), total);
        }
    }
    progress.finish();
    if !dry_run {
        tollgate_server::create_private_dir(data)?;
        let mut store = SqliteStore::open(&tollgate_server::db_path(data))?;
        if store.len()? != 0 {
            anyhow::bail!(
                "{} already holds a ledger; a ledger export goes into a new, empty data directory",
                data.display()
            );
        }
        store.append(0, &events, &[])?;
    }
    let digest = state.digest().map_err(|e| anyhow::anyhow!("{e}"))?;
    say!("{} {} events", if dry_run { "would import" } else { "imported" }, log.len());
    say!("root:         {}", tollgate_server::durability::b64(&log.root()));
    say!("state digest: {}", tollgate_server::durability::hex(&digest));
    Ok(())
}

/// Writes the ledger, one event per line, exactly as stored.
pub fn export(data: &Path, out: Option<&Path>) -> anyhow::Result<()> {
    let path = tollgate_server::db_path(data);
    if !path.exists() {
        anyhow::bail!("no ledger at {}: pass --data with the directory the server uses", path.display());
    }
    let store = SqliteStore::open_read_only(&path)?;
    let total = store.len()?;
    let mut w: Box<dyn Write> = match out {
        // Only a new file: `--out` next to (or onto) a live database must not clobber it.
        Some(p) => Box::new(std::io::BufWriter::new(
            {
                // Owner-only: the events hold license keys in the clear.
                let mut file = std::fs::OpenOptions::new();
                file.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
                file
            }
            .open(p)
            .with_context(|| {
                format!("cannot write {} (an export goes to a new file; choose another name)", p.display())
            })?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut progress = Progress::new("exporting");
    let mut n = 0u64;
    let mut io_err = None;
    let mut bad = None;
    store
        .scan(0, &mut |e| {
            // Only events that verify leave: an import recomputes every hash from the
            // bytes, so a damaged event exported would pass there as sound.
            if e.index != n || tollgate_core::merkle::leaf_hash(&e.leaf) != e.leaf_hash {
                bad = Some(n);
                return Err(tollgate_store::StoreError::Invalid("damaged event".into()));
            }
            if let Err(err) = w.write_all(&e.leaf).and_then(|()| w.write_all(b"\n")) {
                io_err = Some(err);
                return Err(tollgate_store::StoreError::Invalid("write failed".into()));
            }
            n += 1;
            if n.is_multiple_of(10_000) {
                progress.update(n, total);
            }
            Ok(())
        })
        .map_err(|e| match (bad, io_err.take()) {
            (Some(seq), _) => anyhow::anyhow!(
                "event {seq} is damaged (missing, or its bytes do not hash to its leaf hash); nothing was exported \
                 past it. Run `tollgate ledger verify` and restore from a backup"
            ),
            (None, Some(io)) => io.into(),
            (None, None) => e.into(),
        })?;
    if n < total {
        anyhow::bail!(
            "the ledger holds {total} events but only {n} could be read in order; nothing was exported past {n}"
        );
    }
    w.flush()?;
    progress.finish();
    eprintln!("exported {n} events");
    Ok(())
}
