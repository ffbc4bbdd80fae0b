//! The `tollgate` command: a thin shell over the server library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use config::{ServeArgs, Settings};

/// `println!` that a closed stdout (`tollgate … | head`) does not turn into a panic:
/// what the command did stands, and its exit code says so.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod config;
mod demo;
mod gates;
mod ops;
mod remote;
mod signing;
mod transfer;

#[derive(Parser)]
#[command(name = "tollgate", version, about = "License and entitlement server", propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server.
    Serve(ServeArgs),
    /// Run the server with a demo catalog and licenses (data in ./tollgate-demo-data).
    Demo(ServeArgs),
    /// Inspect the ledger.
    Ledger {
        #[command(subcommand)]
        command: LedgerCmd,
    },
    /// Copy the store consistently (the server may run) and verify the copy.
    Backup {
        #[arg(long, env = "TOLLGATE_DATA", default_value = "./tollgate-data")]
        data: PathBuf,
        /// The backup file to write (must not exist). Default: tollgate-backup-<ms>.db
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Restore a backup into a new data directory, optionally to a point in time.
    Restore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        /// A new, empty data directory.
        #[arg(long)]
        data: PathBuf,
        /// Stop after the first N events (sequence N).
        #[arg(long, conflicts_with = "until_time")]
        until_seq: Option<u64>,
        /// Keep every event stamped at or before this RFC 3339 instant.
        #[arg(long)]
        until_time: Option<String>,
    },
    /// Token signing keys on a running server (TOLLGATE_URL, TOLLGATE_TOKEN).
    Keys {
        #[command(subcommand)]
        command: signing::KeysCmd,
    },
    /// Air-gapped activation through a running server.
    Offline {
        #[command(subcommand)]
        command: signing::OfflineCmd,
    },
    /// Import licenses (CSV or JSONL rows) into a running server, or a ledger export
    /// into a new data directory.
    Import {
        #[arg(long, value_enum)]
        format: transfer::Format,
        /// The file to import.
        file: PathBuf,
        /// Check every row and report, without writing anything.
        #[arg(long)]
        dry_run: bool,
        /// The server to import license rows into [default: http://127.0.0.1:8080]
        /// (`--server` and TOLLGATE_SERVER are its older names).
        #[arg(long = "url", alias = "server", env = "TOLLGATE_URL")]
        server: Option<String>,
        /// An admin or issuer token.
        #[arg(long, env = "TOLLGATE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// PEM certificates of a CA to trust for an `https://` --url besides the
        /// system's (a private CA, or the server's own certificate).
        #[arg(long, env = "TOLLGATE_CA_CERT")]
        ca_cert: Option<PathBuf>,
        /// For a ledger export: the new, empty data directory to replay it into.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Write the whole ledger out, one event per line (import it with `import --format jsonl --data NEWDIR`).
    Export {
        /// jsonl, the only one: the ledger's events, one per line.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: transfer::ExportFormat,
        #[arg(long, env = "TOLLGATE_DATA", default_value = "./tollgate-data")]
        data: PathBuf,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Rollout gates on a running server (TOLLGATE_URL, TOLLGATE_TOKEN).
    Gates {
        #[command(subcommand)]
        command: gates::GatesCmd,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCmd,
    },
}

#[derive(Subcommand)]
enum LedgerCmd {
    /// Recompute every leaf hash and root and check every checkpoint signature, offline.
    Verify {
        #[arg(long, env = "TOLLGATE_DATA", default_value = "./tollgate-data")]
        data: PathBuf,
        /// Verify the ledger in PostgreSQL (postgres://…) instead of SQLite in --data.
        #[arg(long, env = "TOLLGATE_DATABASE_URL", hide_env_values = true)]
        database: Option<String>,
        /// Also check that the ledger extends this signed checkpoint, kept outside it
        /// (the `.checkpoint` file a backup writes, or a saved /v1/ledger/checkpoint).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// The log's verifier key (`GET /v1/ledger/key`), or a file holding it, kept outside
        /// the ledger: the ledger must be signed by it, and the checkpoint is checked with it.
        #[arg(long)]
        key: Option<String>,
    },
    /// Print the tree size, root and state digest at sequence N (default: the end).
    Digest {
        #[arg(long, env = "TOLLGATE_DATA", default_value = "./tollgate-data")]
        data: PathBuf,
        #[arg(long)]
        at: Option<u64>,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a token and print its secret (shown only once).
    Create {
        #[arg(long, env = "TOLLGATE_DATA", default_value = "./tollgate-data")]
        data: PathBuf,
        /// admin, issuer, auditor or product.
        #[arg(long)]
        role: String,
        #[arg(long, default_value = "")]
        name: String,
        /// Restrict a product token to one product's licenses.
        #[arg(long)]
        product: Option<String>,
    },
    /// Verify a license token offline against a JWKS (URL or file), as the SDK does.
    Verify(signing::VerifyArgs),
}

/// mimalloc: glibc malloc's cross-thread frees (events decoded on one thread and
/// dropped on another) showed up in replay and writer profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
                .unwrap_or_else(|_| "info,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::Serve(args) => {
            serve(args.resolve("./tollgate-data")?, false)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Demo(args) => {
            let settings = args.resolve("./tollgate-demo-data")?;
            demo::check_target(&settings)?;
            serve(settings, true)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Ledger { command: LedgerCmd::Verify { data, database, checkpoint, key } } => {
            ledger_verify(data, database, checkpoint, key)
        }
        Cmd::Ledger { command: LedgerCmd::Digest { data, at } } => ops::digest(&data, at).map(|()| ExitCode::SUCCESS),
        Cmd::Import { format, file, dry_run, server, token, ca_cert, data } => {
            // TOLLGATE_SERVER was this command's variable before it took TOLLGATE_URL like
            // the others: a script that still sets it must not reach another server.
            let server = server
                .or_else(|| std::env::var("TOLLGATE_SERVER").ok().filter(|s| !s.is_empty()))
                .unwrap_or_else(|| remote::DEFAULT_URL.into());
            let ok = transfer::import(transfer::ImportArgs { format, file, dry_run, server, token, ca_cert, data })?;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Cmd::Export { format: transfer::ExportFormat::Jsonl, data, out } => {
            transfer::export(&data, out.as_deref()).map(|()| ExitCode::SUCCESS)
        }
        Cmd::Backup { data, out } => {
            ops::backup(&data, &out.unwrap_or_else(ops::default_backup_name)).map(|()| ExitCode::SUCCESS)
        }
        Cmd::Restore { from, data, until_seq, until_time } => {
            ops::restore(&from, &data, until_seq, until_time).map(|()| ExitCode::SUCCESS)
        }
        Cmd::Token { command: TokenCmd::Create { data, role, name, product } } => {
            token_create(data, &role, &name, product)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Token { command: TokenCmd::Verify(args) } => signing::verify(args),
        Cmd::Keys { command } => signing::keys(command),
        Cmd::Offline { command } => signing::offline(command),
        Cmd::Gates { command } => gates::run(command),
    }
}

fn serve(args: Settings, demo: bool) -> anyhow::Result<()> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.workers {
        rt.worker_threads(usize::from(n));
    }
    let rt = rt.enable_all().build()?;
    // SIGHUP's default action ends the process: it is caught from the very start,
    // before the ledger loads, with or without a certificate to reload, so that a
    // `systemctl reload` or a renewal hook never stops the server.
    #[cfg(unix)]
    let hangups = {
        let _rt = rt.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
    };
    // The address first: a port in use is refused before anything is written (a data
    // directory, an admin token, a master key).
    let listener = rt.block_on(tokio::net::TcpListener::bind(args.listen)).with_context(|| {
        format!("cannot listen on {}: is another server running there? pick another with --listen", args.listen)
    })?;
    // The certificate and key next, for the same reason.
    let tls = match &args.tls {
        Some((cert, key)) => Some(tollgate_server::tls::TlsConfig::from_pem_files(cert, key)?),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let opened = tollgate_server::open(&args.server_config())
        .with_context(|| format!("cannot open the data directory {}", args.data.display()))?;
    match &opened.bootstrap {
        tollgate_server::Bootstrap::File(p) => {
            tracing::warn!(path = %p.display(), "first start: an admin token was written to this file (mode 0600)")
        }
        tollgate_server::Bootstrap::FromEnv => {
            tracing::info!("TOLLGATE_BOOTSTRAP_TOKEN is registered as an admin token")
        }
        tollgate_server::Bootstrap::OtherNode => tracing::warn!(
            "first start: another node starting at the same time created the admin token, in its own data directory"
        ),
        tollgate_server::Bootstrap::Existing => {}
    }
    let app = opened.app.clone();
    rt.block_on(async {
        let addr = listener.local_addr()?;
        tracing::info!(%addr, data = %args.data.display(), seq = app.engine.state().seq(), "tollgate listening");
        // One line on stdout that scripts (and tests using --listen 127.0.0.1:0) can read.
        {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "listening on {scheme}://{addr}");
            let _ = out.flush();
        }
        if demo {
            demo::seed(&app).await?;
            demo::print_welcome(&app, &format!("{scheme}://{addr}"), &args.data);
        }
        #[cfg(unix)]
        if let Some(hangups) = hangups {
            tokio::spawn(on_hangup(hangups, tls.clone()));
        }
        match &tls {
            Some(tls) => tollgate_server::serve_tls(listener, tls, app, shutdown_signal()).await?,
            None => tollgate_server::serve(listener, app, shutdown_signal()).await?,
        }
        anyhow::Ok(())
    })?;
    drop(opened.app);
    let _ = opened.writer.join();
    Ok(())
}

/// `kill -HUP`: read the certificate and key files again (a renewed certificate), for
/// the connections from then on. A file that does not read keeps the old ones serving.
/// Without HTTPS there is nothing to reload, and the signal is only logged.
#[cfg(unix)]
async fn on_hangup(mut hangups: tokio::signal::unix::Signal, tls: Option<tollgate_server::tls::TlsConfig>) {
    while hangups.recv().await.is_some() {
        match &tls {
            Some(tls) => match tls.reload() {
                Ok(()) => tracing::info!("SIGHUP: reloaded the TLS certificate and key"),
                Err(e) => tracing::error!(error = %format!("{e:#}"), "SIGHUP: kept the TLS certificate in use"),
            },
            None => tracing::info!("SIGHUP: nothing to reload (no --tls-cert)"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

/// A connection string without its credentials, to name it in output.
fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            format!("{scheme}://{}", host.split('?').next().unwrap_or(host))
        }
        None => "(a key=value connection string)".into(),
    }
}

fn existing_db(data: &std::path::Path) -> anyhow::Result<PathBuf> {
    let path = tollgate_server::db_path(data);
    if !path.exists() {
        anyhow::bail!(
            "no ledger at {}: pass --data with the directory the server uses (or set TOLLGATE_DATA)",
            path.display()
        );
    }
    Ok(path)
}

fn open_existing(data: &std::path::Path) -> anyhow::Result<tollgate_store::SqliteStore> {
    Ok(tollgate_store::SqliteStore::open(&existing_db(data)?)?)
}

fn ledger_verify(
    data: PathBuf,
    database: Option<String>,
    checkpoint: Option<PathBuf>,
    key: Option<String>,
) -> anyhow::Result<ExitCode> {
    // The key itself, or a file holding it (as `curl …/v1/ledger/key > key.txt` leaves).
    let key = match key {
        Some(k) if std::path::Path::new(&k).is_file() => {
            Some(std::fs::read_to_string(&k).with_context(|| format!("cannot read the --key file {k}"))?)
        }
        other => other,
    };
    let key = key.map(|k| tollgate_core::note::Verifier::parse(k.trim())).transpose().map_err(|e| {
        anyhow::anyhow!("--key is not a note verifier key (name+hex id+base64, as GET /v1/ledger/key gives): {e}")
    })?;
    let outside = checkpoint
        .map(|p| {
            std::fs::read_to_string(&p).map(|t| (p.clone(), t)).with_context(|| format!("cannot read {}", p.display()))
        })
        .transpose()?;
    // Which ledger is said before it is opened, since TOLLGATE_DATABASE_URL in the
    // environment wins over --data (a URL may carry a password: its host and database
    // only). Both read-only: verifying never writes, even by accident, and a file that
    // may be evidence is not migrated.
    let store: Box<dyn tollgate_store::LedgerStore> = match &database {
        Some(url) => {
            eprintln!("verifying the PostgreSQL ledger at {} (--database or TOLLGATE_DATABASE_URL)", redacted(url));
            Box::new(tollgate_store::PostgresStore::open_read_only(url)?)
        }
        None => {
            eprintln!("verifying the SQLite ledger in {}", data.display());
            Box::new(tollgate_store::SqliteStore::open_read_only(&existing_db(&data)?)?)
        }
    };
    let started = std::time::Instant::now();
    let signed = outside.as_ref().map(|(_, text)| text.as_str());
    let verified = tollgate_server::replay::verify_against(
        &*store,
        &mut |n| {
            if n.is_multiple_of(100_000) {
                eprintln!("verified {n} events…");
            }
        },
        signed,
        key.as_ref(),
    );
    match verified {
        Ok((r, extends)) => {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::STANDARD;
            say!(
                "ok: {} events, {} checkpoints, {} snapshots verified in {:.2?}",
                r.events,
                r.checkpoints,
                r.snapshots,
                started.elapsed()
            );
            say!("root: {}", b64.encode(r.root));
            say!("state digest: {}", hex_encode(&r.digest));
            if key.is_some() {
                let tail = r.events.saturating_sub(r.signed_size);
                if tail == 0 {
                    say!("signed by the key given, up to its last event");
                } else {
                    say!(
                        "signed by the key given up to tree size {}; the last {tail} events came after the newest checkpoint",
                        r.signed_size
                    );
                }
            }
            if let (Some((path, _)), Some(size)) = (&outside, extends) {
                say!("extends the checkpoint in {} (tree size {size})", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            say!("FAILED: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn token_create(data: PathBuf, role: &str, name: &str, product: Option<String>) -> anyhow::Result<()> {
    use tollgate_store::LedgerStore;
    let role = tollgate_server::auth::Role::parse(role)
        .ok_or_else(|| anyhow::anyhow!("unknown role '{role}': use admin, issuer, auditor or product"))?;
    if let Some(p) = &product {
        tollgate_core::ids::ProductKey::parse(p)?;
    }
    tollgate_server::auth::check_scope(role, product.as_deref()).map_err(|why| anyhow::anyhow!(why))?;
    let mut store = open_existing(&data)?;
    let (secret, record) =
        tollgate_server::auth::new_token(role, name, product, tollgate_server::engine::now().to_string());
    store.insert_token(&record)?;
    eprintln!("created token {} with role {} (the secret below is shown only once)", record.id, role.as_str());
    say!("{secret}");
    Ok(())
}
