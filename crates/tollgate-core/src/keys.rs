//! Token signing keys as the ledger knows them: public halves, `kid`s and lifetimes.
//!
//! Private keys never enter the ledger (the server keeps them encrypted under its
//! master key). Creation and rotation are events, so which key was current at any
//! instant, and until when a retired key is still published, is auditable.

use std::sync::Arc;

use imbl::OrdMap;
use serde::{Deserialize, Serialize};

use crate::event::EventKind;
use crate::refusal::Refusal;
use crate::timestamp::Timestamp;
use crate::token::Jwks;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKeyInfo {
    /// RFC 7638 thumbprint of the public key.
    pub kid: String,
    /// The Ed25519 public key, base64url (the JWK's `x`).
    pub public_key: String,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<Timestamp>,
    /// A retired key stays in the JWKS until then: the last expiry of a token it signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_until: Option<Timestamp>,
}

impl SigningKeyInfo {
    /// Published in the JWKS at `now`: current, or retired with tokens still alive.
    pub fn published(&self, now: Timestamp) -> bool {
        self.retired_at.is_none() || self.keep_until.is_some_and(|k| now < k)
    }

    pub fn verifying_key(&self) -> Option<ed25519_dalek::VerifyingKey> {
        use base64::Engine as _;
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&self.public_key).ok()?;
        ed25519_dalek::VerifyingKey::from_bytes(&b.try_into().ok()?).ok()
    }
}

/// The keys the ledger has created, in order of `kid`.
#[derive(Clone, Debug, Default)]
pub struct KeyRing {
    keys: OrdMap<String, Arc<SigningKeyInfo>>,
}

/// Key commands. The server draws the key and seals its private half before it asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyCommand {
    /// The first key; refused once one exists (rotate instead).
    Create { kid: String, public_key: String },
    /// Retire the current key, published until `keep_until`, and make this one current.
    Rotate { kid: String, public_key: String, keep_until: Timestamp },
}

impl KeyRing {
    pub fn current(&self) -> Option<&Arc<SigningKeyInfo>> {
        self.keys.values().filter(|k| k.retired_at.is_none()).max_by_key(|k| k.created_at)
    }

    pub fn get(&self, kid: &str) -> Option<&Arc<SigningKeyInfo>> {
        self.keys.get(kid)
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<SigningKeyInfo>> {
        self.keys.values()
    }

    /// The JWKS to serve at `now`.
    pub fn jwks(&self, now: Timestamp) -> Jwks {
        let mut j = Jwks::default();
        for k in self.keys.values().filter(|k| k.published(now)) {
            if let Some(v) = k.verifying_key() {
                j.insert(&k.kid, v);
            }
        }
        j
    }

    pub(crate) fn decide(&self, c: &KeyCommand, now: Timestamp) -> Result<Vec<EventKind>, Refusal> {
        let check_new = |kid: &str, public_key: &str| {
            let info = SigningKeyInfo {
                kid: kid.into(),
                public_key: public_key.into(),
                created_at: now,
                retired_at: None,
                keep_until: None,
            };
            match info.verifying_key() {
                Some(k) if crate::token::thumbprint(&k) == kid => {}
                _ => return Err(Refusal::invalid("the key is not an Ed25519 public key whose thumbprint is its kid")),
            }
            if self.keys.contains_key(kid) {
                return Err(Refusal::conflict("KEY_EXISTS", format!("key '{kid}' already exists")));
            }
            Ok(())
        };
        match c {
            KeyCommand::Create { kid, public_key } => {
                if let Some(cur) = self.current() {
                    return Err(Refusal::conflict(
                        "KEY_EXISTS",
                        format!("key '{}' is current; rotate to replace it", cur.kid),
                    ));
                }
                check_new(kid, public_key)?;
                Ok(vec![EventKind::SigningKeyCreated { kid: kid.clone(), public_key: public_key.clone() }])
            }
            KeyCommand::Rotate { kid, public_key, keep_until } => {
                check_new(kid, public_key)?;
                let mut out = Vec::new();
                if let Some(cur) = self.current() {
                    out.push(EventKind::SigningKeyRetired { kid: cur.kid.clone(), keep_until: (*keep_until).max(now) });
                }
                out.push(EventKind::SigningKeyCreated { kid: kid.clone(), public_key: public_key.clone() });
                Ok(out)
            }
        }
    }

    /// Folds a key event; `Err` names what was missing or duplicated.
    pub(crate) fn apply(&mut self, kind: &EventKind, at: Timestamp) -> Result<(), (&'static str, String)> {
        match kind {
            EventKind::SigningKeyCreated { kid, public_key } => {
                if self.keys.contains_key(kid) {
                    return Err(("duplicate", kid.clone()));
                }
                let info = SigningKeyInfo {
                    kid: kid.clone(),
                    public_key: public_key.clone(),
                    created_at: at,
                    retired_at: None,
                    keep_until: None,
                };
                self.keys.insert(kid.clone(), Arc::new(info));
            }
            EventKind::SigningKeyRetired { kid, keep_until } => {
                let slot = self.keys.get_mut(kid).ok_or_else(|| ("missing", kid.clone()))?;
                let k = Arc::make_mut(slot);
                k.retired_at = Some(at);
                k.keep_until = Some(*keep_until);
            }
            _ => {}
        }
        Ok(())
    }

    pub(crate) fn to_vec(&self) -> Vec<Arc<SigningKeyInfo>> {
        self.keys.values().cloned().collect()
    }

    pub(crate) fn from_vec(keys: Vec<Arc<SigningKeyInfo>>) -> Self {
        Self { keys: keys.into_iter().map(|k| (k.kid.clone(), k)).collect() }
    }
}
