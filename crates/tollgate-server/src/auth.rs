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

/// Every token, held in memory and read again from the store (a read connection) when
/// it is older than [`CACHE_TTL`] or, at most once per [`MISS_RELOAD`], when a token is
/// not in it: authentication touches the database neither per request nor per unknown
/// token. Tokens are few (people and applications, not licenses).
pub struct TokenCache {
    reader: Mutex<Box<dyn LedgerStore>>,
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
    /// How many times it was forgotten: a read that began before a revocation must not
    /// put what it read back afterwards.
    generation: u64,
}

/// What a read of the table gave.
enum Reload {
    Read(Entries),
    /// Not read: another read is under way, or one was begun less than
    /// [`MISS_RELOAD`] ago.
    Skipped,
    /// The store could not be read (logged).
    Failed,
}

impl TokenCache {
    pub fn new(reader: Box<dyn LedgerStore>) -> Self {
        Self {
            reader: Mutex::new(reader),
            table: RwLock::new(Table { entries: HashMap::new(), read_at: None, tried_at: None, generation: 0 }),
        }
    }

    /// Reads the table again at the next request (a token was created or revoked here).
    pub fn forget(&self) {
        let mut t = self.table.write().unwrap_or_else(|p| p.into_inner());
        t.read_at = None;
        t.tried_at = None;
        t.generation += 1;
    }

    pub fn authenticate(&self, secret: &str) -> Result<Principal, ApiError> {
        let hash = hash_token(secret);
        let (found, fresh) = {
            let t = self.table.read().unwrap_or_else(|p| p.into_inner());
            (t.entries.get(&hash).cloned(), t.read_at.is_some_and(|at| at.elapsed() < CACHE_TTL))
        };
        let entry = match found {
            Some(e) if fresh => Some(e),
            // Stale, or not in it: read again if that is due; while the store cannot be
            // read, a token known already goes on as it was.
            found => match self.reload(found.is_none()) {
                Reload::Read(mut entries) => entries.remove(&hash),
                // As the read under way, or the last one, left it.
                Reload::Skipped => self.table.read().unwrap_or_else(|p| p.into_inner()).entries.get(&hash).cloned(),
                Reload::Failed if found.is_some() => found,
                Reload::Failed => {
                    return Err(ApiError::new(
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "TOKENS_UNAVAILABLE",
                        "the bearer token is not among those known here, and the token store cannot be read just now; retry",
                    ));
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
    /// with the table there is rather than wait on the store; one not in it waits for
    /// that read, which may bring it).
    fn reload(&self, wait: bool) -> Reload {
        let reader = match self.reader.try_lock() {
            Ok(r) => r,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) if wait => self.reader.lock().unwrap_or_else(|p| p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => return Reload::Skipped,
        };
        let generation = {
            let mut t = self.table.write().unwrap_or_else(|p| p.into_inner());
            if t.tried_at.is_some_and(|at| at.elapsed() < MISS_RELOAD) {
                return Reload::Skipped;
            }
            t.tried_at = Some(Instant::now());
            t.generation
        };
        // Twice: the first call on a connection the network dropped fails, and the next
        // connects again.
        let records = match reader.tokens().or_else(|_| reader.tokens()) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the API tokens; the ones known stay in use");
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
        if t.generation == generation {
            t.entries = entries.clone();
            t.read_at = Some(Instant::now());
        }
        // Only now: a request that waited for this read finds its result in the table.
        drop((t, reader));
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
        state.tokens.authenticate(secret)
    }
}

#[cfg(test)]
mod tests {
    use tollgate_store::SqliteStore;

    use super::*;

    /// Tokens are read from memory: an unknown one is refused without a read of the
    /// store each time (at most one a second), and one created elsewhere (another node,
    /// `tollgate token create`) is found within that second.
    #[test]
    fn unknown_tokens_cost_one_read_a_second_and_new_ones_are_found_within_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let mut writer = SqliteStore::open(&path).unwrap();
        let cache = TokenCache::new(Box::new(SqliteStore::open(&path).unwrap()));
        let refused = |secret: &str| cache.authenticate(secret).map(|p| p.token_id).unwrap_err().code;
        let read = Instant::now();
        assert_eq!(refused("tg_made_up"), "UNAUTHORIZED");
        // Created elsewhere just after that read: not read again at once for a token
        // it does not know (unless this machine took a second to get here)…
        let (secret, record) = new_token(Role::Auditor, "elsewhere", None, "2026-11-29T00:00:00Z".into());
        writer.insert_token(&record).unwrap();
        let code = refused(&secret);
        if read.elapsed() < MISS_RELOAD {
            assert_eq!(code, "UNAUTHORIZED", "the table was read again for an unknown token at once");
        }
        // …but within a second.
        let started = Instant::now();
        let found = loop {
            match cache.authenticate(&secret) {
                Ok(p) => break p,
                Err(_) => {
                    assert!(started.elapsed() < Duration::from_secs(5), "never found");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        assert_eq!((found.token_id, found.role), (record.id.clone(), Role::Auditor));
        // The store cannot be read: the tokens known go on (validation needs nothing
        // else), an unknown one is told to retry, and the store is tried once a second.
        let raw = rusqlite::Connection::open(&path).unwrap();
        raw.execute_batch("ALTER TABLE tokens RENAME TO tokens_away").unwrap();
        cache.forget();
        assert_eq!(cache.authenticate(&secret).unwrap().token_id, record.id, "a known token while the store fails");
        cache.forget();
        let tried = Instant::now();
        assert_eq!(refused("tg_made_up"), "TOKENS_UNAVAILABLE");
        let again = refused("tg_made_up_too");
        if tried.elapsed() < MISS_RELOAD {
            assert_eq!(again, "UNAUTHORIZED", "not tried again within the second");
        }
        raw.execute_batch("ALTER TABLE tokens_away RENAME TO tokens").unwrap();
        // Revoked here: forgotten at once.
        writer.revoke_token(&record.id, "2026-11-29T00:00:01Z").unwrap();
        cache.forget();
        assert_eq!(refused(&secret), "UNAUTHORIZED");
    }
}
