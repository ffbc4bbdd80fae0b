//! Node-locked machines: a license activated on machine fingerprints, up to the
//! effective `max_machines` (the plan's, or the license's override).
//!
//! Activating a fingerprint that is already active changes nothing, so a client may
//! activate on every start. The first activation's name and components are kept.

use serde::{Deserialize, Serialize};

use crate::refusal::Refusal;
use crate::timestamp::Timestamp;

const MAX_ID: usize = 256;
const MAX_NAME: usize = 200;
const MAX_COMPONENTS: usize = 32;

/// A short text identifier from a client (a fingerprint, a user): 1 to 256 bytes of
/// printable text, not blank. Shared and cheap to clone.
macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident, $what:literal, $graphic_only:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(std::sync::Arc<str>);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, crate::refusal::Refusal> {
                let graphic_only: bool = $graphic_only;
                let ok = !s.trim().is_empty()
                    && s.len() <= crate::machine::max_id_len()
                    && if graphic_only { s.bytes().all(|b| b.is_ascii_graphic()) } else { !s.chars().any(char::is_control) };
                if ok {
                    Ok(Self(std::sync::Arc::from(s)))
                } else if graphic_only {
                    Err(crate::refusal::Refusal::invalid(concat!($what, " must be 1 to 256 bytes of visible ASCII")))
                } else {
                    Err(crate::refusal::Refusal::invalid(concat!($what, " must be 1 to 256 bytes of printable text")))
                }
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(|r| serde::de::Error::custom(r.detail))
            }
        }
    };
}
pub(crate) use text_id;

pub(crate) const fn max_id_len() -> usize {
    MAX_ID
}

text_id!(
    /// What a client computes to identify a machine (a hash of hardware ids, usually).
    Fingerprint,
    "fingerprint",
    true
);

/// What a client sends to activate a machine.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineSpec {
    pub fingerprint: Fingerprint,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub components: Vec<String>,
}

impl MachineSpec {
    pub fn check(&self) -> Result<(), Refusal> {
        if self.name.as_ref().is_some_and(|n| n.chars().count() > MAX_NAME || n.chars().any(char::is_control)) {
            return Err(Refusal::invalid(format!("machine name is at most {MAX_NAME} printable characters")));
        }
        if self.components.len() > MAX_COMPONENTS
            || self.components.iter().any(|c| c.is_empty() || c.len() > MAX_ID || c.chars().any(char::is_control))
        {
            return Err(Refusal::invalid(format!(
                "components are at most {MAX_COMPONENTS} strings of 1 to {MAX_ID} printable bytes"
            )));
        }
        Ok(())
    }
}

/// An activated machine. Fields in sorted order (see `EventKind`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    pub activated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<String>,
    pub fingerprint: Fingerprint,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Machine {
    pub fn new(spec: &MachineSpec, now: Timestamp) -> Self {
        Machine {
            fingerprint: spec.fingerprint.clone(),
            name: spec.name.clone(),
            components: spec.components.clone(),
            activated_at: now,
        }
    }
}
