//! Tollgate's server: the engine that sequences commands into the ledger, and the
//! axum API in front of it.
//!
//! - [`engine`]: the single writer (group commit) and the published, committed state.
//! - [`replay`]: start-up from snapshot + ledger, and the offline `verify`.
//! - [`api`]: the `/v1` handlers; [`auth`] tokens and roles; [`extract`] and
//!   [`problem`]: every input error becomes an RFC 9457 problem in one place.
//!
//! The library exposes [`open`], [`router`] and [`serve`]; the binary is thin, and tests
//! bind `127.0.0.1:0` and call the same functions.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod cluster;
pub mod durability;
pub mod engine;
pub mod extract;
pub mod http;
pub mod kek;
pub mod keys;
pub mod openapi;
pub mod problem;
pub mod replay;
pub mod tail;
pub mod tls;

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use tokio::net::TcpListener;
use tollgate_store::{LedgerStore, PostgresStore, SqliteStore};

use crate::auth::{Role, TokenCache, new_token};
use crate::engine::{Engine, EngineConfig};
use crate::extract::RequestId;
use crate::problem::ApiError;

pub const DB_FILE: &str = "tollgate.db";
/// The largest import request body (licenses or an Unleash document).
const IMPORT_BODY_LIMIT: usize = 32 * 1024 * 1024;
pub const BOOTSTRAP_TOKEN_FILE: &str = "bootstrap-admin.token";

/// What the server needs to start. Built by the binary from flags, environment and
/// defaults; never written back.
#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    /// From `TOLLGATE_BOOTSTRAP_TOKEN`: becomes an admin token if not yet known.
    pub bootstrap_token: Option<String>,
    pub engine: EngineConfig,
    /// How often a checkpoint is signed while the log grows.
    pub checkpoint_interval: Duration,
    /// The key-encryption key for signing keys; `None`: generated into the data directory.
    pub master_key: Option<kek::MasterKeySource>,
    /// The `iss` of license tokens.
    pub token_issuer: String,
    /// `postgres://…`: keep the ledger in PostgreSQL instead of `<data>/tollgate.db`. The
    /// data directory still holds the generated master key and bootstrap token, if any.
    pub database_url: Option<String>,
    /// This node's id in the cluster view (`TOLLGATE_NODE_ID`); random when `None`.
    pub node_id: Option<String>,
    /// How long an `Idempotency-Key`'s answer is kept (`None`: for ever). A retry after
    /// that is a new request.
    pub idempotency_retention: Option<Duration>,
    /// What the connection loop allows a client (header read timeout, connections).
    pub http: http::Limits,
}

impl Config {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            bootstrap_token: None,
            engine: EngineConfig::default(),
            checkpoint_interval: Duration::from_secs(1),
            master_key: None,
            token_issuer: "tollgate".into(),
            database_url: None,
            node_id: None,
            idempotency_retention: Some(DEFAULT_IDEMPOTENCY_RETENTION),
            http: http::Limits::default(),
        }
    }
}

/// As long as Stripe keeps an idempotency key: a day covers a client's retries.
pub const DEFAULT_IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(24 * 3600);

pub struct AppState {
    pub engine: Engine,
    pub tokens: TokenCache,
    /// A side connection for reads of the ledger and token administration.
    pub reader: Mutex<Box<dyn LedgerStore>>,
    checkpoint_interval: Duration,
    idempotency_retention: Option<Duration>,
    http_limits: http::Limits,
    /// Token signing keys, sealed under the master key.
    pub keys: keys::KeyVault,
    /// This node among the others on a shared ledger.
    pub cluster: cluster::Cluster,
    /// The revocation events read so far, for `GET /v1/revocations`.
    pub(crate) revocations: tokio::sync::Mutex<api::revocations::RevocationIndex>,
    /// Requests that may read the whole state or ledger (a gate preview, an events
    /// query) run [`SCANS`] at a time: read-only roles may ask for them.
    pub(crate) scans: Arc<tokio::sync::Semaphore>,
}

/// Whole-state or whole-ledger reads at once; more are answered 429.
pub(crate) const SCANS: usize = 2;

impl AppState {
    /// A place among the [`SCANS`], or 429 `TOO_MANY_SCANS` to retry. Owned, so that
    /// the blocking task doing the scan holds it: a client that hangs up does not free
    /// its place while the scan goes on.
    pub fn scan_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, problem::ApiError> {
        self.scans.clone().try_acquire_owned().map_err(|_| {
            problem::ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_SCANS",
                format!(
                    "{SCANS} previews or event queries, which read every license or the whole ledger, are running; retry in a moment"
                ),
            )
        })
    }
}

/// How the first start provided an admin token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// Tokens already existed.
    Existing,
    /// `TOLLGATE_BOOTSTRAP_TOKEN` was registered as an admin token.
    FromEnv,
    /// A random admin token was written to this file (mode 0600).
    File(PathBuf),
    /// Another node starting on the same empty database at the same time created the
    /// admin token; it is in that node's data directory.
    OtherNode,
}

pub struct Opened {
    pub app: Arc<AppState>,
    pub writer: std::thread::JoinHandle<()>,
    pub bootstrap: Bootstrap,
}

pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DB_FILE)
}

/// Creates a directory (and its parents), owner-only where it is created here: a data
/// directory's database holds license keys in the clear.
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut dir = std::fs::DirBuilder::new();
    dir.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
    dir.create(path)
}

/// Opens (creating if needed) the data directory, loads the ledger and starts the
/// writer.
pub fn open(config: &Config) -> anyhow::Result<Opened> {
    create_private_dir(&config.data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create data directory {}: {e}", config.data_dir.display()))?;
    let lock = lock_data_dir(&config.data_dir)?;
    type Boxed = Box<dyn LedgerStore>;
    let (mut store, reader, token_reader): (Boxed, Boxed, Boxed) = match &config.database_url {
        Some(url) => (
            {
                let store = PostgresStore::open(url)?;
                // TLS when the URL says `sslmode=require|verify-full` (see the store's `tls`).
                tracing::info!(tls = store.encrypted().unwrap_or(false), "connected to PostgreSQL");
                Box::new(store)
            },
            Box::new(PostgresStore::open(url)?),
            Box::new(PostgresStore::open_read_only(url)?),
        ),
        None => {
            let path = db_path(&config.data_dir);
            let store = SqliteStore::open(&path)?;
            (Box::new(store), Box::new(SqliteStore::open(&path)?), Box::new(SqliteStore::open_read_only(&path)?))
        }
    };
    let bootstrap = bootstrap_tokens(&mut *store, config)?;
    let mut reader = reader;
    adopt_legacy_claims(&mut *reader)?;
    let cluster_store: Option<Box<dyn LedgerStore>> = match &config.database_url {
        Some(url) => Some(Box::new(PostgresStore::open(url)?)),
        None => None,
    };
    let node_id = config.node_id.clone().unwrap_or_else(|| format!("node_{}", auth::random_hex(6)));
    let (kek, kek_origin) = kek::MasterKey::load(config.master_key.as_ref(), &config.data_dir)?;
    if let kek::KekOrigin::Generated(p) = &kek_origin {
        tracing::warn!(path = %p.display(), "no TOLLGATE_MASTER_KEY or key file given: generated a master key beside the data (mode 0600); keep a copy elsewhere, and prefer TOLLGATE_MASTER_KEY in production");
    }
    let kek = Arc::new(kek);
    let engine_config =
        EngineConfig { master_key: Some(kek.clone()), data_lock: Some(Arc::new(lock)), ..config.engine.clone() };
    let (engine, writer) = Engine::start(store, engine_config)?;
    let app = Arc::new(AppState {
        engine,
        tokens: TokenCache::new(token_reader),
        reader: Mutex::new(reader),
        checkpoint_interval: config.checkpoint_interval,
        idempotency_retention: config.idempotency_retention,
        http_limits: config.http,
        keys: keys::KeyVault::new(kek, kek_origin, config.token_issuer.clone()),
        cluster: cluster::Cluster::new(node_id, cluster_store),
        revocations: Default::default(),
        scans: Arc::new(tokio::sync::Semaphore::new(SCANS)),
    });
    Ok(Opened { app, writer, bootstrap })
}

/// The lock file a running server holds in its data directory.
pub const LOCK_FILE: &str = "tollgate.lock";

/// Takes the data directory's lock, or says which directory another server holds. Two
/// servers on one SQLite file would each serve their own state (one never sees the
/// other's writes), and on PostgreSQL would share one bootstrap token file. The lock
/// is the OS's (`flock`): it goes with the process, even after `kill -9`.
pub fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot open the lock file {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another Tollgate server is running on the data directory {} (it holds {}); stop it, or start this one \
             with its own --data",
            dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => anyhow::bail!("cannot lock {}: {e}", path.display()),
    }
}

fn bootstrap_tokens(store: &mut dyn LedgerStore, config: &Config) -> anyhow::Result<Bootstrap> {
    let now = engine::now().to_string();
    if let Some(secret) = &config.bootstrap_token {
        if secret.len() < 16 {
            anyhow::bail!("TOLLGATE_BOOTSTRAP_TOKEN is too short: use at least 16 random characters");
        }
        if store.token_by_hash(&auth::hash_token(secret))?.is_none() {
            let (_, mut record) = new_token(Role::Admin, "bootstrap (TOLLGATE_BOOTSTRAP_TOKEN)", None, now);
            record.hash = auth::hash_token(secret);
            match store.insert_token(&record) {
                // Another node starting at the same time registered it first.
                Err(tollgate_store::StoreError::Duplicate { what: tollgate_store::Unique::TokenHash, .. }) => {}
                other => other?,
            }
        }
        return Ok(Bootstrap::FromEnv);
    }
    if !store.tokens()?.is_empty() {
        return Ok(Bootstrap::Existing);
    }
    let (secret, record) = new_token(Role::Admin, "bootstrap", None, now);
    // Nodes starting together on one empty database would each create an admin token.
    // The first to claim the bootstrap creates it; the others wait for it to appear. A
    // claim whose token never appears (its node died before writing it) is taken over.
    let claimed = store.meta_insert(BOOTSTRAP_CLAIM, record.id.as_bytes())?;
    if claimed != record.id.as_bytes() {
        let deadline = std::time::Instant::now() + BOOTSTRAP_WAIT;
        while std::time::Instant::now() < deadline {
            if !store.tokens()?.is_empty() {
                return Ok(Bootstrap::OtherNode);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::warn!("another node claimed the bootstrap but registered no token; creating it here");
        store.set_meta(BOOTSTRAP_CLAIM, record.id.as_bytes())?;
    }
    // The file first: a node that dies after it starts over on the next start, as no
    // token exists yet; one that died after the token would have left nobody its secret.
    let path = config.data_dir.join(BOOTSTRAP_TOKEN_FILE);
    write_secret(&path, &secret)?;
    store.insert_token(&record)?;
    Ok(Bootstrap::File(path))
}

/// The meta key under which the first node to start on an empty database claims the
/// creation of the bootstrap admin token.
const BOOTSTRAP_CLAIM: &str = "bootstrap_token_claim";
/// How long a node waits for the node that claimed the bootstrap to register its token.
const BOOTSTRAP_WAIT: Duration = Duration::from_secs(10);

fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    write_secret_with(path, secret, false)
}

/// Like `write_secret`, but only into a file that does not exist yet (a symlink counts
/// as existing and is not followed): a backup never overwrites what is there.
fn write_new_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    write_secret_with(path, secret, true)
}

fn write_secret_with(path: &Path, secret: &str, new: bool) -> anyhow::Result<()> {
    if !new {
        // Replaced, never rewritten in place: a file left with a looser mode (or a
        // symlink to somewhere else) must not receive the secret. `remove_file` takes a
        // symlink itself away, not its target.
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => anyhow::bail!("cannot replace {}: {e}", path.display()),
        }
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    writeln!(f, "{secret}")?;
    f.sync_all()?;
    Ok(())
}

async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| format!("req_{}", auth::random_hex(8)));
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut res = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

/// A request may wait (at most this long) for the node to reach `Tollgate-Min-Seq`.
pub const MIN_SEQ_WAIT: Duration = Duration::from_secs(5);
pub const MIN_SEQ_HEADER: &str = "tollgate-min-seq";

/// Read-your-writes across nodes: with `Tollgate-Min-Seq: N` the request waits until
/// this node has folded N events (503 `SEQ_NOT_REACHED` after `MIN_SEQ_WAIT`). Every
/// response carries `Tollgate-Seq`, the sequence it reflects at least.
///
/// Waiting holds a connection and a task for up to `MIN_SEQ_WAIT`, so only a caller
/// with a valid token may ask for it (401 before any wait, on every route): otherwise
/// anyone could park requests on the server for free.
async fn sequence(
    axum::extract::State(app): axum::extract::State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let req = if req.headers().contains_key(MIN_SEQ_HEADER) {
        use axum::extract::FromRequestParts;
        let (mut parts, body) = req.into_parts();
        if let Err(e) = auth::Principal::from_request_parts(&mut parts, &app).await {
            return e.into_response();
        }
        Request::from_parts(parts, body)
    } else {
        req
    };
    if let Some(v) = req.headers().get(MIN_SEQ_HEADER) {
        let Some(min) = v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) else {
            return ApiError::bad_request("INVALID_MIN_SEQ", "Tollgate-Min-Seq must be a non-negative integer")
                .into_response();
        };
        let reached = app.engine.wait_for_seq(min, MIN_SEQ_WAIT).await;
        if reached < min {
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SEQ_NOT_REACHED",
                format!(
                    "this node has folded {reached} events, not the {min} asked for, within {} s; retry, or ask another node",
                    MIN_SEQ_WAIT.as_secs()
                ),
            );
            e.retry_after = Some(1);
            return e.into_response();
        }
    }
    let seq = app.engine.state().seq();
    let mut res = next.run(req).await;
    if !res.headers().contains_key(api::SEQ_HEADER) {
        res.headers_mut().insert(api::SEQ_HEADER, HeaderValue::from(seq));
    }
    res
}

async fn not_found() -> ApiError {
    ApiError::not_found("ROUTE_NOT_FOUND", "no such endpoint; see /v1/openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "this endpoint does not take that method; see /v1/openapi.json",
    )
}

fn panic_to_problem(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal("the server hit a bug handling this request; it has been logged").into_response()
}

pub fn router(app: Arc<AppState>) -> Router {
    use api::*;
    Router::new()
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/v1/openapi.json", get(system::openapi))
        .route("/v1/products", post(catalog::create_product).get(catalog::list_products))
        .route("/v1/products/{key}", get(catalog::get_product).put(catalog::update_product))
        .route("/v1/plans", post(catalog::create_plan).get(catalog::list_plans))
        .route("/v1/plans/{key}", get(catalog::get_plan).put(catalog::update_plan))
        .route("/v1/licenses", post(licenses::issue).get(licenses::list))
        .route("/v1/licenses/{id}", get(licenses::get))
        .route("/v1/licenses/{id}/suspend", post(licenses::suspend))
        .route("/v1/licenses/{id}/reinstate", post(licenses::reinstate))
        .route("/v1/licenses/{id}/revoke", post(licenses::revoke))
        .route("/v1/licenses/{id}/renew", post(licenses::renew))
        .route("/v1/licenses/{id}/change-plan", post(licenses::change_plan))
        .route("/v1/licenses/{id}/machines", post(machines::activate).get(machines::list))
        .route("/v1/licenses/{id}/machines/{fingerprint}", delete(machines::deactivate))
        .route("/v1/licenses/{id}/users", post(machines::assign).get(machines::users))
        .route("/v1/licenses/{id}/users/{user}", delete(machines::unassign))
        .route("/v1/licenses/{id}/leases", post(leases::checkout).get(leases::list))
        .route("/v1/leases/{lease_id}/heartbeat", post(leases::heartbeat))
        .route("/v1/leases/{lease_id}", delete(leases::release))
        .route("/v1/licenses/{id}/usage", post(usage::record))
        .route("/v1/licenses/{id}/overrides", post(entitlements::set_overrides))
        .route("/v1/licensees/{licensee}/entitlements", get(entitlements::entitlements))
        .route("/v1/validate", post(validate::validate))
        .route("/.well-known/jwks.json", get(keys::jwks))
        .route("/v1/keys", get(keys::list))
        .route("/v1/keys/rotate", post(keys::rotate))
        .route("/v1/licenses/{id}/tokens", post(license_tokens::issue))
        .route("/v1/revocations", get(revocations::feed))
        .route("/v1/offline/activate", post(offline::activate))
        .route("/v1/offline/deactivate", post(offline::deactivate))
        .route("/v1/events", get(events::list))
        // Imports take up to 10,000 rows (or gates): more than the general 1 MiB.
        .route("/v1/import/licenses", post(import::licenses).layer(DefaultBodyLimit::max(IMPORT_BODY_LIMIT)))
        .route("/v1/ledger/checkpoint", get(ledger::checkpoint))
        .route("/v1/ledger/key", get(ledger::key))
        .route("/v1/ledger/entries", get(ledger::entries))
        .route("/v1/ledger/proof/inclusion", get(ledger::inclusion))
        .route("/v1/ledger/proof/consistency", get(ledger::consistency))
        .route("/v1/gates", get(gates::list))
        .route("/v1/gates/ruleset", get(gates::ruleset))
        .route("/v1/gates/import", post(gates::import).layer(DefaultBodyLimit::max(IMPORT_BODY_LIMIT)))
        .route("/v1/gates/{key}", get(gates::get).put(gates::put))
        .route("/v1/gates/{key}/history", get(gates::history))
        .route("/v1/gates/{key}/rollback", post(gates::rollback))
        .route("/v1/gates/{key}/kill", post(gates::kill))
        .route("/v1/gates/{key}/preview", post(gates::preview))
        .route("/ofrep/v1/evaluate/flags", post(ofrep::evaluate_all))
        .route("/ofrep/v1/evaluate/flags/{key}", post(ofrep::evaluate_one))
        .route("/v1/tokens", post(system::create_token).get(system::list_tokens))
        .route("/v1/tokens/{id}", delete(system::revoke_token))
        .route("/v1/cluster/status", get(cluster::status))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(1024 * 1024))
        .layer(middleware::from_fn_with_state(app.clone(), sequence))
        .layer(middleware::from_fn(request_id))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_to_problem))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(app)
}

/// Serves until `shutdown` resolves, signing checkpoints in the background; returns
/// after in-flight requests finished.
pub async fn serve(
    listener: TcpListener,
    app: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_on(listener, app, shutdown).await
}

/// [`serve`] over HTTPS: each connection's TLS handshake is done before axum sees it.
pub async fn serve_tls(
    listener: TcpListener,
    tls: &tls::TlsConfig,
    app: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_on(tls::TlsListener::new(listener, tls)?, app, shutdown).await
}

async fn serve_on<L>(
    listener: L,
    app: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
{
    // The first token signing key is created before the first request, so the JWKS is never empty.
    if let Err(e) = app.keys.current(&app).await {
        tracing::warn!(error = %e.detail, "could not create the first token signing key");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let reaper = tokio::spawn(api::leases::reaper(app.clone(), stop_rx.clone()));
    if let Ok(addr) = listener.local_addr() {
        let _ = app.cluster.address.set(addr.to_string());
    }
    let heart = tokio::spawn(cluster::heartbeat_job(app.clone(), stop_rx.clone()));
    let pruner = tokio::spawn(idempotency_job(app.clone(), stop_rx.clone()));
    let ticker = tokio::spawn(checkpoint_job(app.clone(), stop_rx));
    let limits = app.http_limits;
    http::serve(listener, router(app), shutdown, limits).await;
    let _ = stop_tx.send(true);
    let _ = ticker.await;
    let _ = pruner.await;
    let _ = heart.await;
    let _ = reaper.await;
    Ok(())
}

/// Deletes idempotency records older than the retention, a tenth of the retention
/// apart (at least a second, at most ten minutes), in chunks of 500 on the committer
/// (the one writer: a chunk waits for no lock and no batch waits for one), with a pause
/// between chunks for the batches. On a shared store every node prunes; deleting what
/// another node deleted is no error.
async fn idempotency_job(app: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    const CHUNK: usize = 500;
    let Some(retention) = app.idempotency_retention else { return };
    let mut tick = tokio::time::interval((retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(600)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick comes at once: `open` has just moved the legacy claims.
    let mut adopt = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if std::mem::replace(&mut adopt, true) {
            // On a blocking thread: on PostgreSQL a call may wait on the network.
            let app2 = app.clone();
            let adopted = tokio::task::spawn_blocking(move || {
                let mut reader = app2.reader.lock().unwrap_or_else(|p| p.into_inner());
                adopt_legacy_claims(&mut **reader)
            })
            .await
            .unwrap_or_else(|e| Err(tollgate_store::StoreError::Invalid(e.to_string())));
            if let Err(e) = adopted {
                tracing::warn!(error = %e, "could not move idempotency claims kept in meta by an earlier build");
            }
        }
        let Some(before) = prune_cutoff(engine::now(), retention) else { continue };
        let mut pruned = 0;
        loop {
            match app.engine.prune_idempotency(before.clone(), CHUNK).await {
                Ok(n) => {
                    pruned += n;
                    if n < CHUNK || *stop.borrow() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not prune idempotency records");
                    break;
                }
            }
        }
        if pruned > 0 {
            tracing::info!(pruned, before = %before, "pruned idempotency records past their retention");
        }
    }
}

/// Moves the idempotency claims earlier builds kept in `meta` to idempotency records
/// (`LedgerStore::adopt_legacy_claims`), a thousand per transaction: at start, and at
/// every pruning tick for those that nodes of an earlier build still make during a
/// rolling upgrade.
fn adopt_legacy_claims(store: &mut dyn LedgerStore) -> Result<usize, tollgate_store::StoreError> {
    let now = engine::now().to_string();
    let mut moved = 0;
    loop {
        let n = store.adopt_legacy_claims(&now)?;
        moved += n;
        if n == 0 {
            break;
        }
    }
    if moved > 0 {
        tracing::info!(moved, "moved idempotency claims kept in meta by an earlier build to idempotency records");
    }
    Ok(moved)
}

/// The text that records older than `retention` at `now` sort before: the cutoff
/// instant cut to its second, without the `Z`. Records are stamped `…:SS[.mmm]Z`, and
/// text comparison is exact to the second only, so the cutoff's own second is kept: a
/// record is never pruned early, at most a second late.
fn prune_cutoff(now: tollgate_core::Timestamp, retention: Duration) -> Option<String> {
    let millis = i64::try_from(retention.as_millis()).ok()?;
    let cutoff = tollgate_core::Timestamp::from_millis(now.millis().checked_sub(millis)?)?;
    let text = cutoff.to_string();
    text.get(..19).map(str::to_owned)
}

/// Signs a checkpoint every tick while the log grows: per batch or tick, never per
/// event.
async fn checkpoint_job(app: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(app.checkpoint_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = app.engine.checkpoint().await {
                    tracing::warn!(error = %e, "checkpoint failed");
                }
            }
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text order of record stamps against the cutoff: never early, within a second.
    #[test]
    fn the_prune_cutoff_keeps_the_records_of_its_own_second() {
        let at = |s: &str| tollgate_core::Timestamp::parse(s).unwrap();
        let cutoff = prune_cutoff(at("2026-01-01T00:00:02.400Z"), Duration::from_secs(1)).unwrap();
        assert_eq!(cutoff, "2026-01-01T00:00:01");
        // 0.9 s old at `now`: younger than the retention, kept.
        assert!(at("2026-01-01T00:00:01.500Z").to_string().as_str() > cutoff.as_str());
        // Exactly on a whole second, in the cutoff's second: kept.
        assert!(at("2026-01-01T00:00:01Z").to_string().as_str() > cutoff.as_str());
        // An earlier second: pruned.
        assert!(at("2026-01-01T00:00:00.999Z").to_string().as_str() < cutoff.as_str());
        assert!(at("2025-12-31T23:59:59Z").to_string().as_str() < cutoff.as_str());
        assert_eq!(prune_cutoff(at("1970-01-01T00:00:00Z"), Duration::from_secs(86_400)), None);
    }
}
