//! Operator commands: backup, point-in-time restore, the state digest at a sequence.
//! Long work shows a progress bar on a terminal and plain progress lines otherwise.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tollgate_server::durability::{self, Reached, Until, b64, hex};

/// Progress for `done / total` events: an indicatif bar on a terminal, a line every
/// few seconds otherwise (logs and CI).
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    what: &'static str,
    last: Instant,
}

impl Progress {
    pub fn new(what: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_message(what);
            bar
        });
        Self { bar, what, last: Instant::now() }
    }

    pub fn update(&mut self, done: u64, total: u64) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(total.max(done));
                bar.set_position(done);
            }
            None if self.last.elapsed() >= Duration::from_secs(2) => {
                eprintln!("{}: {done}/{total} events", self.what);
                self.last = Instant::now();
            }
            None => {}
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

fn print_reached(r: &Reached) {
    say!("tree size:    {}", r.size);
    say!("root:         {}", b64(&r.root));
    say!("state digest: {}", hex(&r.digest));
    match &r.checkpoint {
        Some(cp) => say!("checkpoint:   signed at tree size {}", cp.size),
        None => say!("checkpoint:   none at or below this size"),
    }
}

pub fn backup(data: &Path, out: &Path) -> anyhow::Result<()> {
    let mut p = Progress::new("verifying backup");
    let report = durability::backup(data, out, &mut |d, t| p.update(d, t));
    p.finish();
    let report = report?;
    say!("backup written and verified: {}", report.path.display());
    print_reached(&report.reached);
    if let Some(cp) = report.checkpoint_path {
        say!("newest signed checkpoint: {}", cp.display());
    }
    Ok(())
}

pub fn restore(from: &Path, data: &Path, until_seq: Option<u64>, until_time: Option<String>) -> anyhow::Result<()> {
    let until = match (until_seq, until_time) {
        (Some(_), Some(_)) => anyhow::bail!("give --until-seq or --until-time, not both"),
        (Some(n), None) => Until::Seq(n),
        (None, Some(t)) => {
            Until::Time(tollgate_core::Timestamp::parse(&t).map_err(|e| anyhow::anyhow!("--until-time: {e}"))?)
        }
        (None, None) => Until::End,
    };
    let mut p = Progress::new("restoring");
    let r = durability::restore(from, data, until, &mut |d, t| p.update(d, t));
    p.finish();
    let r = r?;
    say!("restored into {} and verified", data.display());
    print_reached(&r);
    Ok(())
}

pub fn digest(data: &Path, at: Option<u64>) -> anyhow::Result<()> {
    let mut p = Progress::new("folding");
    let r = durability::digest_at(data, at, &mut |d, t| p.update(d, t));
    p.finish();
    print_reached(&r?);
    Ok(())
}

pub fn default_backup_name() -> PathBuf {
    PathBuf::from(format!("tollgate-backup-{}.db", tollgate_server::engine::now().millis()))
}
