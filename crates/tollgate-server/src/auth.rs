//! Bearer tokens and roles.
//!
//! Tokens are random secrets shown once; the store keeps only their SHA-256. They are
//! operational credentials, not entitlements, so they live beside the ledger rather
//! than in it (like a vendor's API keys in Keygen).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tollgate_store::{LedgerStore, TokenRecord};
use utoipa::ToSchema;

use crate::AppState;
use crate::problem::ApiError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Reads the catalog, issues and manages licenses, validates.
    Issuer,
    /// Reads everything, the ledger included; changes nothing.
    Auditor,
    /// Validates licenses only (embedded in a vendor's product), optionally of one product.
    Product,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "issuer" => Some(Role::Issuer),
            "auditor" => Some(Role::Auditor),
            "product" => Some(Role::Product),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Issuer => "issuer",
            Role::Auditor => "auditor",
            Role::Product => "product",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    CatalogRead,
    CatalogWrite,
    LicenseRead,
    LicenseWrite,
    Validate,
    LedgerRead,
    TokensManage,
}

impl Permission {
    fn allowed(self, role: Role) -> bool {
        use Permission::*;
        match role {
            Role::Admin => true,
            Role::Issuer => matches!(self, CatalogRead | LicenseRead | LicenseWrite | Validate),
            Role::Auditor => matches!(self, CatalogRead | LicenseRead | LedgerRead),
            Role::Product => matches!(self, Validate),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Principal {
    pub token_id: String,
    pub role: Role,
    /// A product-scoped token sees only that product's licenses.
    pub product: Option<String>,
}

impl Principal {
    pub fn require(&self, p: Permission) -> Result<(), ApiError> {
        if p.allowed(self.role) {
            Ok(())
        } else {
            let roles: Vec<&str> = [Role::Admin, Role::Issuer, Role::Auditor, Role::Product]
                .into_iter()
                .filter(|r| p.allowed(*r))
                .map(Role::as_str)
                .collect();
            Err(ApiError::forbidden(format!(
                "a token with role '{}' may not do this; it takes a token with role {}",
                self.role.as_str(),
                roles.join(" or ")
            )))
        }
    }
    pub fn actor(&self) -> String {
        format!("token:{}", self.token_id)
    }
}

pub fn hash_token(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // getrandom only fails where the OS has no randomness source at all.
    getrandom::fill(&mut buf).expect("the OS random source is available");
    hex::encode(buf)
}

/// A product scope is honoured by product tokens (which only validate, and whose every
/// lookup is filtered by it). The other roles see and change every product, so a scope
/// on them would promise a restriction that is not there: refused.
pub fn check_scope(role: Role, product: Option<&str>) -> Result<(), String> {
    match (role, product) {
        (Role::Product, _) | (_, None) => Ok(()),
        (role, Some(p)) => Err(format!(
            "a product scope ('{p}') restricts product tokens only; an {role} token sees every product: create a product token for '{p}', or an {role} token without a product",
            role = role.as_str()
        )),
    }
}

/// A new token secret and its record.
pub fn new_token(role: Role, name: &str, product: Option<String>, created_at: String) -> (String, TokenRecord) {
    let secret = format!("tg_{}", random_hex(32));
    let record = TokenRecord {
        id: format!("tok_{}", random_hex(8)),
        hash: hash_token(&secret),
        role: role.as_str().to_string(),
        name: name.to_string(),
        product,
        created_at,
        revoked_at: None,
    };
    (secret, record)
}

/// How long the token table is trusted before it is read again: a token revoked or
/// created by another process (another node) takes effect within it.
const CACHE_TTL: Duration = Duration::from_secs(30);

/// The least time between two reads of the table caused by an unknown token: a token
/// created on another node a moment ago is found at once, and a flood of made-up tokens
/// costs one read a second, not one each.
const MISS_RELOAD: Duration = Duration::from_secs(1);

/// How long a request with a token not in the table waits for a read under way: a
/// store that hangs (a dead connection waits for TCP to give up) gets it 503, not a
/// request held for a minute.
const READ_WAIT: Duration = Duration::from_secs(5);

/// Every token, held in memory and read again from the store (a read connection) when
/// it is older than [`CACHE_TTL`] or, at most once per [`MISS_RELOAD`], when a token is
/// not in it: authentication touches the database neither per request nor per unknown
/// token. Tokens are few (people and applications, not licenses). Reads run on a
/// blocking thread; a request with a known token never waits for one, a request with
/// an unknown token waits for the read under way (asynchronously, at most
/// [`READ_WAIT`]).
pub struct TokenCache {
    reader: Arc<Mutex<Box<dyn LedgerStore>>>,
    /// Held while a read is under way.
    reading: tokio::sync::Mutex<()>,
    table: RwLock<Table>,
}

/// A token's hash → what it authenticates as, or why it is refused (a scope its role
/// does not honour).
type Entries = HashMap<[u8; 32], Result<Principal, String>>;

struct Table {
    entries: Entries,
    /// When it was read; `None` before the first read.
    read_at: Option<Instant>,
    /// When a read was last begun, whether it succeeded or not: reads are at most one
    /// per [`MISS_RELOAD`], also while the store fails.
    tried_at: Option<Instant>,
    /// The last read failed: a token not in the table may be one the store holds.
    failing: bool,
    /// How many times it was forgotten: a read that began before a revocation must not
    /// put what it read back afterwards.
    generation: u64,
}

/// What a read of the table gave.
enum Reload {
    Read(Entries),
    /// Not read: a read is under way (and this request does not wait for it), or one
    /// was begun less than [`MISS_RELOAD`] ago.
    Skipped,
    /// The store could not be read (logged), or a read under way did not end within
    /// [`READ_WAIT`].
    Failed,
}

impl TokenCache {
    pub fn new(reader: Box<dyn LedgerStore>) -> Self {
        Self {
            reader: Arc::new(Mutex::new(reader)),
            reading: tokio::sync::Mutex::new(()),
            table: RwLock::new(Table {
                entries: HashMap::new(),
                read_at: None,
                tried_at: None,
                failing: false,
                generation: 0,
            }),
        }
    }

    /// Reads the table again at the next request (a token was created here).
    pub fn forget(&self) {
        let mut t = self.table.write().unwrap_or_else(|p| p.into_inner());
        t.read_at = None;
        t.tried_at = None;
        t.generation += 1;
    }

    /// A token revoked here: refused from now on, whatever the store's state, and the
    /// table read again at the next request.
    pub fn revoked(&self, token_id: &str) {
        let mut t = self.table.write().unwrap_or_else(|p| p.into_inner());
        t.entries.retain(|_, e| !matches!(e, Ok(p) if p.token_id == token_id));
        drop(t);
        self.forget();
    }

    pub async fn authenticate(&self, secret: &str) -> Result<Principal, ApiError> {
        let hash = hash_token(secret);
        let (found, fresh) = {
            let t = self.table.read().unwrap_or_else(|p| p.into_inner());
            (t.entries.get(&hash).cloned(), t.read_at.is_some_and(|at| at.elapsed() < CACHE_TTL))
        };
        let entry = match found {
            Some(e) if fresh => Some(e),
            // Stale, or not in it: read again if that is due. While the store cannot be
            // read, a token known already goes on as it was, and one that is not is
            // told to retry (it may be one the store holds).
            found => match self.reload(found.is_none()).await {
                Reload::Read(mut entries) => entries.remove(&hash),
                Reload::Skipped | Reload::Failed => {
                    let t = self.table.read().unwrap_or_else(|p| p.into_inner());
                    match t.entries.get(&hash) {
                        Some(e) => Some(e.clone()),
                        None if t.failing || (found.is_none() && t.read_at.is_none()) => {
                            return Err(ApiError::new(
                                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                                "TOKENS_UNAVAILABLE",
                                "the bearer token is not among those known here, and the token store cannot be read just now; retry",
                            ));
                        }
                        None => None,
                    }
                }
            },
        };
        match entry {
            Some(Ok(p)) => Ok(p),
            Some(Err(why)) => Err(ApiError::unauthorized(why)),
            None => Err(ApiError::unauthorized("the bearer token is not known or was revoked")),
        }
    }

    /// Reads every token again, unless one was begun less than [`MISS_RELOAD`] ago, or
    /// another read is under way and `wait` is false (a token known already goes on
    /// with the table there is; one not in it waits for that read, which may bring it).
    async fn reload(&self, wait: bool) -> Reload {
        let _reading = if wait {
            match tokio::time::timeout(READ_WAIT, self.reading.lock()).await {
                Ok(guard) => guard,
                Err(_) => return Reload::Failed,
            }
        } else {
            match self.reading.try_lock() {
                Ok(guard) => guard,
                Err(_) => return Reload::Skipped,
            }
        };
        let generation = {
            let mut t = self.table.write().unwrap_or_else(|p| p.into_inner());
            if t.tried_at.is_some_and(|at| at.elapsed() < MISS_RELOAD) {
                return Reload::Skipped;
            }
            t.tried_at = Some(Instant::now());
            t.generation
        };
        let reader = self.reader.clone();
        // Twice: the first call on a connection the network cut fails, and the next
        // connects again.
        // At most READ_WAIT for this request too: a read that hangs (a dead connection)
        // goes on in the background, and the requests are answered meanwhile.
        let read = tokio::time::timeout(
            READ_WAIT,
            tokio::task::spawn_blocking(move || {
                let r = reader.lock().unwrap_or_else(|p| p.into_inner());
                r.tokens().or_else(|_| r.tokens())
            }),
        )
        .await;
        let records = match read {
            Ok(Ok(Ok(records))) => records,
            failed => {
                let why = match failed {
                    Ok(Ok(Err(e))) => e.to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no answer within {} s", READ_WAIT.as_secs()),
                    Ok(Ok(Ok(_))) => String::new(),
                };
                tracing::warn!(error = %why, "could not read the API tokens; the ones known stay in use");
                self.table.write().unwrap_or_else(|p| p.into_inner()).failing = true;
                return Reload::Failed;
            }
        };
        let mut entries = HashMap::new();
        for t in records.into_iter().filter(|t| t.revoked_at.is_none()) {
            let entry = match Role::parse(&t.role) {
                None => Err(format!("token {} has a role this build does not know ('{}')", t.id, t.role)),
                // Created before scopes on other roles were refused: it would act on
                // every product while its holder was told it was restricted to one.
                Some(role) => check_scope(role, t.product.as_deref())
                    .map(|()| Principal { token_id: t.id.clone(), role, product: t.product.clone() })
                    .map_err(|why| format!("token {} is refused: {why}; revoke it and create another", t.id)),
            };
            entries.insert(t.hash, entry);
        }
        let mut t = self.table.write().unwrap_or_else(|p| p.into_inner());
        t.failing = false;
        if t.generation == generation {
            t.entries = entries.clone();
            t.read_at = Some(Instant::now());
        }
        // `_reading` goes only now: a request that waited for this read finds its
        // result in the table.
        Reload::Read(entries)
    }
}

impl FromRequestParts<Arc<AppState>> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("send 'Authorization: Bearer <token>'; create a token with `tollgate token create`")
        })?;
        let value = header.to_str().map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?;
        let secret = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::unauthorized("the Authorization header must be 'Bearer <token>'"))?;
        state.tokens.authenticate(secret).await
    }
}

#[cfg(test)]
mod tests {
    use tollgate_store::SqliteStore;

    use super::*;

    /// Tokens are read from memory: an unknown one is refused without a read of the
    /// store each time (at most one a second), and one created elsewhere (another node,
    /// `tollgate token create`) is found within that second. While the store cannot be
    /// read, the known tokens go on, an unknown one is told to retry, and one revoked
    /// here is refused.
    #[tokio::test]
    async fn tokens_are_read_once_a_second_at_most_and_the_known_ones_outlive_a_failing_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let mut writer = SqliteStore::open(&path).unwrap();
        let cache = TokenCache::new(Box::new(SqliteStore::open(&path).unwrap()));
        let code = |r: Result<Principal, ApiError>| r.map(|p| p.token_id).unwrap_err().code;
        let read = Instant::now();
        assert_eq!(code(cache.authenticate("tg_made_up").await), "UNAUTHORIZED");
        // Created elsewhere just after that read: not read again at once for a token
        // it does not know (unless this machine took a second to get here)…
        let (secret, record) = new_token(Role::Auditor, "elsewhere", None, "2026-11-29T00:00:00Z".into());
        writer.insert_token(&record).unwrap();
        let first = code(cache.authenticate(&secret).await);
        if read.elapsed() < MISS_RELOAD {
            assert_eq!(first, "UNAUTHORIZED", "the table was read again for an unknown token at once");
        }
        // …but within a second.
        let started = Instant::now();
        let found = loop {
            match cache.authenticate(&secret).await {
                Ok(p) => break p,
                Err(_) => {
                    assert!(started.elapsed() < Duration::from_secs(5), "never found");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        assert_eq!((found.token_id, found.role), (record.id.clone(), Role::Auditor));

        // The store cannot be read.
        let raw = rusqlite::Connection::open(&path).unwrap();
        raw.execute_batch("ALTER TABLE tokens RENAME TO tokens_away").unwrap();
        cache.forget();
        assert_eq!(cache.authenticate(&secret).await.unwrap().token_id, record.id, "a known token");
        cache.forget();
        assert_eq!(code(cache.authenticate("tg_made_up").await), "TOKENS_UNAVAILABLE");
        assert_eq!(code(cache.authenticate("tg_made_up_too").await), "TOKENS_UNAVAILABLE", "while it fails");
        // Revoked here while the store fails: refused at once.
        cache.revoked(&record.id);
        assert_eq!(code(cache.authenticate(&secret).await), "TOKENS_UNAVAILABLE");
        raw.execute_batch("ALTER TABLE tokens_away RENAME TO tokens").unwrap();
        writer.revoke_token(&record.id, "2026-11-29T00:00:01Z").unwrap();
        cache.revoked(&record.id);
        assert_eq!(code(cache.authenticate(&secret).await), "UNAUTHORIZED");
    }
}
