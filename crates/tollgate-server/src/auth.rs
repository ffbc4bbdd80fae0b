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

const CACHE_TTL: Duration = Duration::from_secs(30);

/// Looks tokens up in the store (a read connection), caching hits briefly so that the
/// validation path does not touch the database. A revocation made by another process
/// takes effect within the cache TTL.
pub struct TokenCache {
    reader: Mutex<Box<dyn LedgerStore>>,
    /// The cached principals, and how many times the cache was forgotten: a lookup
    /// that began before a revocation must not put what it read back afterwards.
    cache: RwLock<(Cached, u64)>,
}

/// Principals by token hash, with when they were read.
type Cached = HashMap<[u8; 32], (Principal, Instant)>;

impl TokenCache {
    pub fn new(reader: Box<dyn LedgerStore>) -> Self {
        Self { reader: Mutex::new(reader), cache: RwLock::new((HashMap::new(), 0)) }
    }

    pub fn forget(&self) {
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        cache.0.clear();
        cache.1 += 1;
    }

    pub fn authenticate(&self, secret: &str) -> Result<Principal, ApiError> {
        let hash = hash_token(secret);
        let generation = {
            let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
            if let Some((p, at)) = cache.0.get(&hash)
                && at.elapsed() < CACHE_TTL
            {
                return Ok(p.clone());
            }
            cache.1
        };
        let record = self.reader.lock().unwrap_or_else(|p| p.into_inner()).token_by_hash(&hash)?;
        let Some(t) = record.filter(|t| t.revoked_at.is_none()) else {
            return Err(ApiError::unauthorized("the bearer token is not known or was revoked"));
        };
        let role = Role::parse(&t.role).ok_or_else(|| ApiError::internal("a stored token has an unknown role"))?;
        // Created before scopes on other roles were refused: it would act on every
        // product while its holder was told it was restricted to one.
        check_scope(role, t.product.as_deref()).map_err(|why| {
            ApiError::unauthorized(format!("token {} is refused: {why}; revoke it and create another", t.id))
        })?;
        let p = Principal { token_id: t.id, role, product: t.product };
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        if cache.1 == generation {
            if cache.0.len() > 10_000 {
                cache.0.clear();
            }
            cache.0.insert(hash, (p.clone(), Instant::now()));
        }
        Ok(p)
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
