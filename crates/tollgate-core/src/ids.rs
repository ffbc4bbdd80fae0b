//! Identifiers of the catalog and of licenses: parsed once at the edge, valid forever after.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use arrayvec::ArrayString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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

/// An identifier drawn by the server: a four-character prefix and 26 lowercase base-32
/// characters (no i, l, o, u) holding 128 bits. Core only checks the shape.
///
/// Held inline, not behind a pointer: the state's maps copy and drop ids whenever they
/// change, and an inline id makes that a plain copy instead of a reference count on a
/// cold cache line per id. Equality, order and hashing are those of the text, so maps
/// of ids are looked up by `&str`.
macro_rules! random_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(ArrayString<RANDOM_ID_LEN>);

        impl $name {
            pub const PREFIX: &'static str = $prefix;
            const _PREFIX_FITS: () = assert!($prefix.len() + ID_BODY_LEN == RANDOM_ID_LEN);

            pub fn parse(s: &str) -> Result<Self, IdError> {
                if is_random_id(Self::PREFIX, s)
                    && let Ok(inline) = ArrayString::from(s)
                {
                    Ok(Self(inline))
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
                // Checked at compile time: the prefix and body fill the inline text exactly.
                let () = Self::_PREFIX_FITS;
                Self(encode_random_id(Self::PREFIX, bytes))
            }

            /// Builds an id that sorts by creation time, as a ULID does: the first 48 of
            /// the 128 bits are milliseconds since the Unix epoch, the other 80 random
            /// bytes drawn by the caller. New ids then land at the end of the state's
            /// ordered map and of any index on them, instead of at a random place.
            pub fn from_time_and_random(unix_millis: u64, random: [u8; 10]) -> Self {
                let mut bytes = [0u8; 16];
                bytes[..6].copy_from_slice(&unix_millis.to_be_bytes()[2..]);
                bytes[6..].copy_from_slice(&random);
                Self::from_random(bytes)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        str_newtype_impls!($name);

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    };
}

/// Length of a random id, prefix included.
const RANDOM_ID_LEN: usize = 30;

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
fn encode_random_id(prefix: &str, bytes: [u8; 16]) -> ArrayString<RANDOM_ID_LEN> {
    let mut n = u128::from_be_bytes(bytes);
    let mut body = [0u8; ID_BODY_LEN];
    for slot in body.iter_mut().rev() {
        *slot = ID_ALPHABET[(n & 31) as usize];
        n >>= 5;
    }
    let mut s = ArrayString::new();
    s.push_str(prefix);
    for c in body {
        s.push(char::from(c));
    }
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

    /// Ids made later sort later, whatever their random part; equal instants are
    /// told apart by it. The text is the same as `from_random` of the same bits, so
    /// parsing, equality and `&str` lookups see nothing new.
    #[test]
    fn time_ordered_ids_sort_by_creation() {
        let early = LicenseId::from_time_and_random(1_700_000_000_000, [0xff; 10]);
        let late = LicenseId::from_time_and_random(1_700_000_000_001, [0; 10]);
        assert!(early < late);
        assert!(early.as_str() < late.as_str());
        assert_ne!(LicenseId::from_time_and_random(5, [1; 10]), LicenseId::from_time_and_random(5, [2; 10]));
        assert_eq!(LicenseId::parse(late.as_str()).unwrap(), late);
        let mut bits = [0u8; 16];
        bits[..6].copy_from_slice(&1_700_000_000_001u64.to_be_bytes()[2..]);
        assert_eq!(LicenseId::from_random(bits), late);
        let map: std::collections::HashMap<LicenseId, u8> = [(late.clone(), 1)].into();
        assert_eq!(map.get(late.as_str()), Some(&1), "hashes as its text");
    }
}
