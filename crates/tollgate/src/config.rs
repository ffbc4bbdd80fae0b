//! Settings for `serve` and `demo`, layered: defaults < TOML file (`--config`) <
//! `TOLLGATE_*` environment < flags. Clap merges flags over the environment; the file
//! fills what neither gave. Loading never writes anything.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

/// The most request-serving threads `--workers` takes.
const MAX_WORKERS: u16 = 1024;

#[derive(clap::Args, Clone, Debug, Default)]
pub struct ServeArgs {
    /// A TOML file with any of the settings below (keys as the flags, `-` written `_`).
    #[arg(long, env = "TOLLGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory holding the SQLite ledger and the bootstrap token [default: ./tollgate-data, ./tollgate-demo-data for demo].
    #[arg(long, env = "TOLLGATE_DATA")]
    pub data: Option<PathBuf>,
    /// Keep the ledger in PostgreSQL (postgres://user@host/db) instead of SQLite in --data.
    #[arg(long, env = "TOLLGATE_DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "TOLLGATE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Serve HTTPS with this PEM certificate chain (the server's certificate first); needs --tls-key.
    #[arg(long, env = "TOLLGATE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "TOLLGATE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Snapshot the state every this many events; 0: never by count [default: 10000].
    #[arg(long, env = "TOLLGATE_SNAPSHOT_EVERY")]
    pub snapshot_every: Option<u64>,
    /// Also snapshot when this many seconds passed and the state changed; 0: never [default: 300].
    #[arg(long, env = "TOLLGATE_SNAPSHOT_SECONDS")]
    pub snapshot_seconds: Option<u64>,
    /// Keep the newest this many snapshots [default: 3].
    #[arg(long, env = "TOLLGATE_SNAPSHOT_KEEP")]
    pub snapshot_keep: Option<usize>,
    /// Seconds between checkpoint signings while the log grows [default: 1].
    #[arg(long, env = "TOLLGATE_CHECKPOINT_SECONDS")]
    pub checkpoint_seconds: Option<u64>,
    /// Keep the answer to an Idempotency-Key this many seconds; a retry after that is a new request; 0: for ever [default: 86400].
    #[arg(long, env = "TOLLGATE_IDEMPOTENCY_SECONDS")]
    pub idempotency_seconds: Option<u64>,
    /// Threads that serve requests; the ledger's writer has its own. Fewer than the cores leaves the writer a core (more writes per second, fewer reads) [default: the number of cores].
    #[arg(long, env = "TOLLGATE_WORKERS", value_parser = clap::value_parser!(u16).range(1..=MAX_WORKERS as i64))]
    pub workers: Option<u16>,
}

/// The same settings as they may appear in the TOML file.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data: Option<PathBuf>,
    database: Option<String>,
    listen: Option<SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    snapshot_every: Option<u64>,
    snapshot_seconds: Option<u64>,
    snapshot_keep: Option<usize>,
    checkpoint_seconds: Option<u64>,
    idempotency_seconds: Option<u64>,
    workers: Option<u16>,
}

/// Resolved settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub data: PathBuf,
    pub database: Option<String>,
    pub listen: SocketAddr,
    /// HTTPS: the certificate chain and its key (both or neither).
    pub tls: Option<(PathBuf, PathBuf)>,
    pub snapshot_every: u64,
    pub snapshot_seconds: u64,
    pub snapshot_keep: usize,
    pub checkpoint_seconds: u64,
    pub idempotency_seconds: u64,
    /// Request-serving threads; `None`: one per core.
    pub workers: Option<u16>,
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {}", path.display(), e.message()))
}

impl ServeArgs {
    pub fn resolve(self, default_data: &str) -> anyhow::Result<Settings> {
        let file = match &self.config {
            Some(p) => read_file(p)?,
            None => FileConfig::default(),
        };
        Ok(Settings {
            data: self.data.or(file.data).unwrap_or_else(|| PathBuf::from(default_data)),
            database: self.database.or(file.database),
            listen: self.listen.or(file.listen).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            tls: match (self.tls_cert.or(file.tls_cert), self.tls_key.or(file.tls_key)) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (None, None) => None,
                _ => {
                    anyhow::bail!("HTTPS needs both tls_cert and tls_key (or --tls-cert and --tls-key); one was given")
                }
            },
            snapshot_every: self.snapshot_every.or(file.snapshot_every).unwrap_or(10_000),
            snapshot_seconds: self.snapshot_seconds.or(file.snapshot_seconds).unwrap_or(300),
            snapshot_keep: match self.snapshot_keep.or(file.snapshot_keep).unwrap_or(3) {
                0 => anyhow::bail!("snapshot_keep must be at least 1 (the newest snapshot is what start-up loads)"),
                n => n,
            },
            checkpoint_seconds: match self.checkpoint_seconds.or(file.checkpoint_seconds).unwrap_or(1) {
                0 => anyhow::bail!("checkpoint_seconds must be at least 1 (a checkpoint is signed at most that often)"),
                n if n > 86_400 => anyhow::bail!("checkpoint_seconds must be at most 86400 (a day)"),
                n => n,
            },
            idempotency_seconds: self
                .idempotency_seconds
                .or(file.idempotency_seconds)
                .unwrap_or(tollgate_server::DEFAULT_IDEMPOTENCY_RETENTION.as_secs()),
            workers: match self.workers.or(file.workers) {
                Some(0) => anyhow::bail!("workers must be at least 1"),
                Some(n) if n > MAX_WORKERS => anyhow::bail!("workers must be at most {MAX_WORKERS}"),
                w => w,
            },
        })
    }
}

impl Settings {
    pub fn server_config(&self) -> tollgate_server::Config {
        let mut c = tollgate_server::Config::new(&self.data);
        c.bootstrap_token = std::env::var("TOLLGATE_BOOTSTRAP_TOKEN").ok().filter(|s| !s.is_empty());
        c.master_key = crate::signing::master_key_from_env();
        c.engine.snapshot_every = self.snapshot_every;
        c.engine.snapshot_interval = (self.snapshot_seconds > 0).then(|| Duration::from_secs(self.snapshot_seconds));
        c.engine.snapshot_keep = self.snapshot_keep;
        c.checkpoint_interval = Duration::from_secs(self.checkpoint_seconds);
        c.database_url = self.database.clone();
        c.idempotency_retention = (self.idempotency_seconds > 0).then(|| Duration::from_secs(self.idempotency_seconds));
        // The id this node heartbeats under on a shared ledger; random when unset.
        c.node_id = std::env::var("TOLLGATE_NODE_ID").ok().filter(|s| !s.is_empty());
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn defaults_then_file_then_flags() {
        let d = ServeArgs::default().resolve("./d").unwrap();
        assert_eq!((d.data.to_str(), d.listen.port(), d.snapshot_every), (Some("./d"), 8080, 10_000));
        let f = file("data = \"/srv/tg\"\nlisten = \"0.0.0.0:9000\"\nsnapshot_every = 50\n");
        let from_file = ServeArgs { config: Some(f.path().into()), ..Default::default() }.resolve("./d").unwrap();
        assert_eq!(
            (from_file.data.to_str(), from_file.listen.port(), from_file.snapshot_every),
            (Some("/srv/tg"), 9000, 50)
        );
        // A flag (or its environment variable, which clap puts in the same field) wins.
        let flags = ServeArgs {
            config: Some(f.path().into()),
            listen: Some("127.0.0.1:7000".parse().unwrap()),
            ..Default::default()
        };
        let s = flags.resolve("./d").unwrap();
        assert_eq!((s.data.to_str(), s.listen.port()), (Some("/srv/tg"), 7000));
    }

    #[test]
    fn tls_takes_a_certificate_and_its_key() {
        assert_eq!(ServeArgs::default().resolve("./d").unwrap().tls, None);
        let f = file("tls_cert = \"/etc/tg/cert.pem\"\ntls_key = \"/etc/tg/key.pem\"\n");
        let both = ServeArgs { config: Some(f.path().into()), ..Default::default() }.resolve("./d").unwrap();
        assert_eq!(both.tls, Some(("/etc/tg/cert.pem".into(), "/etc/tg/key.pem".into())));
        let f = file("tls_cert = \"/etc/tg/cert.pem\"\n");
        let e = ServeArgs { config: Some(f.path().into()), ..Default::default() }.resolve("./d").unwrap_err();
        assert!(e.to_string().contains("both tls_cert and tls_key"), "{e}");
    }

    #[test]
    fn workers_come_from_the_file_or_a_flag_and_zero_is_refused() {
        assert_eq!(ServeArgs::default().resolve("./d").unwrap().workers, None);
        let f = file("workers = 3\n");
        let from_file = ServeArgs { config: Some(f.path().into()), ..Default::default() }.resolve("./d").unwrap();
        assert_eq!(from_file.workers, Some(3));
        let flag = ServeArgs { config: Some(f.path().into()), workers: Some(1), ..Default::default() };
        assert_eq!(flag.resolve("./d").unwrap().workers, Some(1));
        let zero = file("workers = 0\n");
        let e = ServeArgs { config: Some(zero.path().into()), ..Default::default() }.resolve("./d").unwrap_err();
        assert!(e.to_string().contains("at least 1"), "{e}");
        let many = file("workers = 5000\n");
        let e = ServeArgs { config: Some(many.path().into()), ..Default::default() }.resolve("./d").unwrap_err();
        assert!(e.to_string().contains("at most 1024"), "{e}");
    }

    #[test]
    fn settings_that_cannot_work_are_refused_not_changed() {
        for (text, says) in [
            ("snapshot_keep = 0\n", "snapshot_keep must be at least 1"),
            ("checkpoint_seconds = 0\n", "checkpoint_seconds must be at least 1"),
            // A period the timer cannot add to an instant stopped checkpoint signing.
            ("checkpoint_seconds = 18446744073709551615\n", "at most 86400"),
        ] {
            let f = file(text);
            let e = ServeArgs { config: Some(f.path().into()), ..Default::default() }.resolve("./d").unwrap_err();
            assert!(e.to_string().contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn idempotency_retention_defaults_to_a_day_and_zero_keeps_for_ever() {
        let d = ServeArgs::default().resolve("./d").unwrap();
        assert_eq!(d.server_config().idempotency_retention, Some(Duration::from_secs(86_400)));
        let f = file("idempotency_seconds = 0\n");
        let forever = ServeArgs { config: Some(f.path().into()), ..Default::default() }.resolve("./d").unwrap();
        assert_eq!(forever.server_config().idempotency_retention, None);
        let flag = ServeArgs { config: Some(f.path().into()), idempotency_seconds: Some(60), ..Default::default() };
        assert_eq!(flag.resolve("./d").unwrap().server_config().idempotency_retention, Some(Duration::from_secs(60)));
    }

    #[test]
    fn a_bad_file_says_what_is_wrong() {
        let f = file("listen = \"127.0.0.1:8080\"\nsnapshot_evry = 5\n");
        let e =
            ServeArgs { config: Some(f.path().into()), ..Default::default() }.resolve("./d").unwrap_err().to_string();
        assert!(e.contains("snapshot_evry") && e.contains("unknown field"), "{e}");
        let f = file("listen = \"not an address\"\n");
        let e =
            ServeArgs { config: Some(f.path().into()), ..Default::default() }.resolve("./d").unwrap_err().to_string();
        assert!(e.contains("listen") || e.contains("address"), "{e}");
        let e =
            ServeArgs { config: Some("/nonexistent.toml".into()), ..Default::default() }.resolve("./d").unwrap_err();
        assert!(format!("{e:#}").contains("cannot read the config file"), "{e:#}");
    }
}
