//! Identifiers of the catalog and of licenses: parsed once at the edge, valid forever after.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {what} '{value}': {rule}")]
pub struct IdError {
    pub what: &'static str,
    pub value: String,
    pub rule: &'static str,
}

const SLUG_RULE: &str =
    "use 1 to 64 characters: lowercase letters, digits, '-', '_' or '.', starting with a letter or digit";

fn is_slug(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_' | b'.'))
}

/// What every string identifier has: text display, a quoted debug form, lookup by
/// `&str` in maps, and deserialization through its own `parse`.
macro_rules! str_newtype_impls {
    ($name:ident) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        /// Parses the borrowed text in place, so that a decoded id costs one
        /// allocation (its `Arc<str>`), not a `String` first.
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Text;
                impl serde::de::Visitor<'_> for Text {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a string")
                    }
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$name, E> {
                        $name::parse(s).map_err(E::custom)
                    }
                }
                d.deserialize_str(Text)
            }
        }
    };
}

/// A catalog key: cheap to clone (shared), ordered, and valid by construction.
macro_rules! slug {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, IdError> {
                if is_slug(s) {
                    Ok(Self(Arc::from(s)))
                } else {
                    Err(IdError { what: $what, value: s.into(), rule: SLUG_RULE })
                }
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        str_newtype_impls!($name);
    };
}

slug!(
    /// A product's key, e.g. `acme-cad`.
    ProductKey,
    "product key"
);
slug!(
    /// A feature's key within a product, e.g. `export.pdf`.
    FeatureKey,
    "feature key"
);
slug!(
    /// A plan's (tier's, SKU's) key, e.g. `cad-pro-annual`.
    PlanKey,
    "plan key"
);
slug!(
    /// A usage meter's key within a plan, e.g. `api-calls`.
    MeterKey,
    "meter key"
);

/// An identifier drawn at random by the server: a prefix and 26 lowercase base-32
/// characters (no i, l, o, u) holding 128 bits. Core only checks the shape.
macro_rules! random_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub fn parse(s: &str) -> Result<Self, IdError> {
                if is_random_id(Self::PREFIX, s) {
                    Ok(Self(Arc::from(s)))
                } else {
                    Err(IdError {
                        what: $what,
                        value: s.chars().take(80).collect(),
                        rule: concat!("expected '", $prefix, "' followed by 26 characters of 0-9 and a-z (no i, l, o, u)"),
                    })
                }
            }

            /// Builds an id from 16 random bytes drawn by the caller.
            pub fn from_random(bytes: [u8; 16]) -> Self {
                Self(Arc::from(encode_random_id(Self::PREFIX, bytes)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        str_newtype_impls!($name);
    };
}

const ID_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const ID_BODY_LEN: usize = 26;

/// Which bytes are id characters. A table, because ids are checked on every decoded
/// event and a search of the alphabet per byte showed up in replay profiles.
const ID_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < ID_ALPHABET.len() {
        table[ID_ALPHABET[i] as usize] = true;
        i += 1;
    }
    table
};

fn is_random_id(prefix: &str, s: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(|body| body.len() == ID_BODY_LEN && body.bytes().all(|c| ID_BYTE[c as usize]))
}

/// 128 bits in 26 base-32 characters (the top two bits of the 130 are zero).
fn encode_random_id(prefix: &str, bytes: [u8; 16]) -> String {
    let mut n = u128::from_be_bytes(bytes);
    let mut body = [0u8; ID_BODY_LEN];
    for slot in body.iter_mut().rev() {
        *slot = ID_ALPHABET[(n & 31) as usize];
        n >>= 5;
    }
    let mut s = String::with_capacity(prefix.len() + ID_BODY_LEN);
    s.push_str(prefix);
    s.extend(body.iter().map(|&c| c as char));
    s
}

random_id!(
    /// A license's stable identifier, `lic_…`.
    LicenseId,
    "lic_",
    "license id"
);
random_id!(
    /// A floating lease's identifier, `lse_…`.
    LeaseId,
    "lse_",
    "lease id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        for ok in ["a", "acme-cad", "export.pdf", "x_1", &"a".repeat(64)] {
            assert!(FeatureKey::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "A", "a b", "é", &"a".repeat(65), "a/b"] {
            let e = ProductKey::parse(bad).unwrap_err();
            assert_eq!(e.what, "product key");
        }
    }

    #[test]
    fn license_ids_round_trip() {
        let id = LicenseId::from_random([0xff; 16]);
        assert_eq!(id.as_str().len(), 30);
        assert_eq!(LicenseId::parse(id.as_str()).unwrap(), id);
        assert_ne!(LicenseId::from_random([0; 16]), LicenseId::from_random([1; 16]));
        for bad in
            ["lic_", "lic_ABCDEFGHJKMNPQRSTVWXYZ0123", "key_0123456789abcdefghjkmnpq", "lic_0123456789abcdefghjkmnpi"]
        {
            assert!(LicenseId::parse(bad).is_err(), "{bad}");
        }
    }
}
