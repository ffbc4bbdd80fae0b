//! Token signing keys on the server: private halves sealed under the master key in the
//! store's meta table, public halves and lifetimes in the ledger (`SigningKeyCreated`,
//! `SigningKeyRetired`).
//!
//! A retired key must stay in the JWKS until the last token it signed has expired. Tokens
//! are not ledger events, so the vault keeps a per-key high-water mark of the `exp` it
//! signed, persisted (rounded up to the hour, so it is written about once an hour per
//! key, never per token) *before* the token is handed out; rotation publishes the old
//! key until that mark.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use ed25519_dalek::SigningKey;
use tollgate_core::keys::KeyCommand;
use tollgate_core::token::{Jwks, TokenSigner};
use tollgate_core::{Command, Meta, Timestamp};
use tollgate_store::LedgerStore;

use crate::AppState;
use crate::kek::{KekOrigin, MasterKey};
use crate::problem::ApiError;

const SEALED_PREFIX: &str = "token_key/";
const HWM_PREFIX: &str = "token_key_hwm/";
const HOUR: i64 = 3600;

pub struct KeyVault {
    kek: Arc<MasterKey>,
    pub origin: KekOrigin,
    /// The `iss` of every token.
    pub issuer: String,
    signers: RwLock<HashMap<String, Arc<TokenSigner>>>,
    /// Persisted high-water marks of signed `exp` (seconds), by kid.
    hwm: Mutex<HashMap<String, i64>>,
    /// Serializes key creation and rotation.
    change: tokio::sync::Mutex<()>,
    /// Held for reading from choosing a key to mint with until the token's expiry is
    /// noted, and for writing by a rotation from reading the retiring key's last expiry
    /// until the rotation is committed: a token signed by the old key after that read
    /// would outlive the key's place in the JWKS.
    signing: tokio::sync::RwLock<()>,
}

/// What a rotation holds until it is committed (see [`KeyVault::prepare_rotation`]).
pub struct Rotating<'a> {
    _change: tokio::sync::MutexGuard<'a, ()>,
    _signing: tokio::sync::RwLockWriteGuard<'a, ()>,
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(e.to_string())
}

impl KeyVault {
    pub fn new(kek: Arc<MasterKey>, origin: KekOrigin, issuer: String) -> Self {
        Self {
            kek,
            origin,
            issuer,
            signers: RwLock::new(HashMap::new()),
            hwm: Mutex::new(HashMap::new()),
            change: tokio::sync::Mutex::new(()),
            signing: tokio::sync::RwLock::new(()),
        }
    }

    /// The signer of `kid` if it is loaded already.
    fn loaded(&self, kid: &str) -> Option<Arc<TokenSigner>> {
        self.signers.read().unwrap_or_else(|p| p.into_inner()).get(kid).cloned()
    }

    /// The signer of `kid`; `None` when its private half is not in this store.
    fn load_signer(&self, store: &dyn LedgerStore, kid: &str) -> Result<Option<Arc<TokenSigner>>, ApiError> {
        if let Some(s) = self.loaded(kid) {
            return Ok(Some(s));
        }
        let name = format!("{SEALED_PREFIX}{kid}");
        let Some(sealed) = store.meta(&name)? else { return Ok(None) };
        let seed: [u8; 32] = self
            .kek
            .open(&name, &sealed)
            .map_err(internal)?
            .try_into()
            .map_err(|_| internal("a sealed signing key is not 32 bytes"))?;
        let signer = Arc::new(TokenSigner::new(SigningKey::from_bytes(&seed)));
        if signer.kid != kid {
            return Err(internal(format!("the sealed key stored as '{kid}' is another key")));
        }
        self.signers.write().unwrap_or_else(|p| p.into_inner()).insert(kid.to_string(), signer.clone());
        Ok(Some(signer))
    }

    /// Draws a key and seals its private half into the store, before the ledger hears of it.
    fn draw(&self, store: &mut dyn LedgerStore) -> Result<Arc<TokenSigner>, ApiError> {
        let seed: [u8; 32] = crate::kek::random().map_err(internal)?;
        let signer = Arc::new(TokenSigner::new(SigningKey::from_bytes(&seed)));
        let name = format!("{SEALED_PREFIX}{}", signer.kid);
        store.set_meta(&name, &self.kek.seal(&name, &seed).map_err(internal)?)?;
        self.signers.write().unwrap_or_else(|p| p.into_inner()).insert(signer.kid.clone(), signer.clone());
        Ok(signer)
    }

    /// The signer of `kid`, current or retired, if its private half is in this store.
    pub fn signer_of(&self, app: &AppState, kid: &str) -> Result<Option<Arc<TokenSigner>>, ApiError> {
        // Known already: no need to wait for the shared reading connection.
        if let Some(s) = self.loaded(kid) {
            return Ok(Some(s));
        }
        let store = app.reader.lock().unwrap_or_else(|p| p.into_inner());
        self.load_signer(&**store, kid)
    }

    /// The current key's signer, if there is a current key and its private half is here.
    fn usable_current(&self, app: &AppState) -> Result<Option<Arc<TokenSigner>>, ApiError> {
        let Some(kid) = app.engine.state().keys().current().map(|k| k.kid.clone()) else { return Ok(None) };
        self.signer_of(app, &kid)
    }

    /// The current signer, creating the first key (a ledger event) if there is none.
    ///
    /// A ledger imported from an export names a current key whose private half stayed
    /// with the server that exported it (the export is the events only): this store
    /// cannot sign with it, so it is rotated out for a new key, as `keys rotate` does.
    /// No token of the old key's is known here, so it leaves the JWKS at once.
    pub async fn current(&self, app: &Arc<AppState>) -> Result<Arc<TokenSigner>, ApiError> {
        if let Some(signer) = self.usable_current(app)? {
            return Ok(signer);
        }
        if let Some(old) = app.engine.state().keys().current().map(|k| k.kid.clone()) {
            return self.replace_unusable(app, &old).await;
        }
        let guard = self.change.lock().await;
        if let Some(signer) = self.usable_current(app)? {
            return Ok(signer);
        }
        if let Some(old) = app.engine.state().keys().current().map(|k| k.kid.clone()) {
            drop(guard);
            return self.replace_unusable(app, &old).await;
        }
        let signer = {
            let mut store = app.reader.lock().unwrap_or_else(|p| p.into_inner());
            self.draw(&mut **store)?
        };
        let meta = Meta {
            actor: "system".into(),
            reason: Some("first token signing key".into()),
            request_id: format!("req_{}", crate::auth::random_hex(8)),
        };
        let command = Command::Keys(KeyCommand::Create {
            kid: signer.kid.clone(),
            public_key: b64url(signer.verifying_key().as_bytes()),
        });
        match app.engine.submit(command, meta, 201, None, Box::new(|_, _| serde_json::Value::Null)).await {
            Ok(_) => {}
            // Another node starting at the same time created one first: use it.
            Err(crate::engine::EngineError::Refused(why)) => {
                drop(guard);
                let Some(theirs) = self.usable_current(app)? else { return Err(why.into()) };
                tracing::info!(kid = %theirs.kid, "another node created the first token signing key");
                return Ok(theirs);
            }
            Err(e) => return Err(e.into()),
        }
        drop(guard);
        tracing::info!(kid = %signer.kid, "created the first token signing key");
        Ok(signer)
    }

    /// Rotates out the current key `old`, whose private half is not in this store.
    async fn replace_unusable(&self, app: &Arc<AppState>, old: &str) -> Result<Arc<TokenSigner>, ApiError> {
        let (guard, command, kid) = self.prepare_rotation(app, crate::engine::now()).await?;
        // Another request may have replaced it meanwhile (the key drawn here then stays
        // unused in the store).
        if let Some(signer) = self.usable_current(app)? {
            drop(guard);
            return Ok(signer);
        }
        let meta = Meta {
            actor: "system".into(),
            reason: Some(format!(
                "the private half of token signing key '{old}' is not in this store (an imported ledger): replaced"
            )),
            request_id: format!("req_{}", crate::auth::random_hex(8)),
        };
        tracing::warn!(old = %old, new = %kid, "the current token signing key's private half is not in this store; rotating to a new key");
        app.engine.submit(command, meta, 200, None, Box::new(|_, _| serde_json::Value::Null)).await?;
        drop(guard);
        self.usable_current(app)?
            .ok_or_else(|| internal(format!("the new signing key '{kid}' is not the current one after rotating")))
    }

    /// Draws a new key and builds the rotate command: the current key is published
    /// until the last expiry it signed.
    pub async fn prepare_rotation(
        &self,
        app: &Arc<AppState>,
        now: Timestamp,
    ) -> Result<(Rotating<'_>, Command, String), ApiError> {
        let change = self.change.lock().await;
        // No token is being minted from here until the rotation is committed.
        let guard = Rotating { _change: change, _signing: self.signing.write().await };
        let old = app.engine.state().keys().current().map(|k| k.kid.clone());
        let mut store = app.reader.lock().unwrap_or_else(|p| p.into_inner());
        let keep_until = match &old {
            Some(kid) => {
                // Fresh from the store too: other nodes may have raised it.
                let stored = store
                    .meta(&format!("{HWM_PREFIX}{kid}"))?
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(i64::from_be_bytes)
                    .unwrap_or(0);
                let secs = self.hwm_of(&**store, kid)?.max(stored);
                Timestamp::from_millis(secs.saturating_mul(1000)).unwrap_or(now).max(now)
            }
            None => now,
        };
        let signer = self.draw(&mut **store)?;
        let command = Command::Keys(KeyCommand::Rotate {
            kid: signer.kid.clone(),
            public_key: b64url(signer.verifying_key().as_bytes()),
            keep_until,
        });
        Ok((guard, command, signer.kid.clone()))
    }

    fn hwm_of(&self, store: &dyn LedgerStore, kid: &str) -> Result<i64, ApiError> {
        if let Some(v) = self.hwm.lock().unwrap_or_else(|p| p.into_inner()).get(kid) {
            return Ok(*v);
        }
        let v = store
            .meta(&format!("{HWM_PREFIX}{kid}"))?
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(i64::from_be_bytes)
            .unwrap_or(0);
        self.hwm.lock().unwrap_or_else(|p| p.into_inner()).insert(kid.to_string(), v);
        Ok(v)
    }

    /// The current signer, for minting a token, and a guard that holds off rotations
    /// until the token's expiry is noted with [`Self::note_expiry`] (keep it until then).
    pub async fn signer_for_minting(
        &self,
        app: &Arc<AppState>,
    ) -> Result<(Arc<TokenSigner>, tokio::sync::RwLockReadGuard<'_, ()>), ApiError> {
        for _ in 0..3 {
            let guard = self.signing.read().await;
            if let Some(signer) = self.usable_current(app)? {
                return Ok((signer, guard));
            }
            // No usable key yet: creating or replacing one rotates, which waits for
            // every reader, this one included.
            drop(guard);
            self.current(app).await?;
        }
        Err(internal("the token signing key kept changing while a token was minted; try again"))
    }

    /// Records that `kid` is about to sign a token expiring at `exp` (seconds). Call it
    /// before handing the token out.
    pub fn note_expiry(&self, app: &AppState, kid: &str, exp: i64) -> Result<(), ApiError> {
        let known = self.hwm.lock().unwrap_or_else(|p| p.into_inner()).get(kid).copied();
        if known.is_some_and(|h| exp <= h) {
            return Ok(());
        }
        let mut store = app.reader.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.hwm_of(&**store, kid)?;
        if exp <= current {
            return Ok(());
        }
        let mark = exp.saturating_add(HOUR - 1).div_euclid(HOUR).saturating_mul(HOUR).max(0);
        // Other nodes on a shared store raise the same mark: in one step, never lowering
        // theirs.
        let stored = store.meta_raise(&format!("{HWM_PREFIX}{kid}"), mark)?;
        self.hwm.lock().unwrap_or_else(|p| p.into_inner()).insert(kid.to_string(), stored);
        Ok(())
    }

    /// The JWKS at `now`: the current key and retired keys whose tokens may still live.
    pub fn jwks(app: &AppState, now: Timestamp) -> Jwks {
        app.engine.state().keys().jwks(now)
    }
}
