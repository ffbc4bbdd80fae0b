//! License keys people can read aloud and type: `XXXXX-XXXXX-XXXXX-XXXXX-XXXXX`.
//!
//! The alphabet has 32 symbols and leaves out 0, O, 1 and I, which are easily confused.
//! 24 symbols carry 120 random bits; the 25th is a Luhn mod N check character, so any
//! single mistyped symbol and most swaps of neighbours are caught before a lookup.
//! Luhn mod N is written here by hand: it is a dozen lines, and the crates that offer
//! it fix the alphabet to decimal digits or Base32 variants that include 0 and 1.

use std::borrow::Borrow;
use std::fmt;

use arrayvec::ArrayString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const ALPHABET: &[u8; 32] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";
const SYMBOLS: usize = 25;
const GROUP: usize = 5;
/// Length of the canonical form, hyphens included.
pub const KEY_LEN: usize = SYMBOLS + SYMBOLS / GROUP - 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a license key has 25 letters and digits (ignoring hyphens and spaces); this one has {0}")]
    Length(usize),
    #[error("a license key never contains '{0}' (keys use 2-9 and A-Z without I and O)")]
    Symbol(char),
    #[error("the key's check character does not match: it was probably mistyped")]
    Check,
}

/// Symbol value of each byte (either case), or `NONE`: a table, because keys are
/// normalized on every validation and every decoded license.
const NONE: u8 = u8::MAX;
const VALUE: [u8; 256] = {
    let mut table = [NONE; 256];
    let mut i = 0;
    while i < ALPHABET.len() {
        table[ALPHABET[i] as usize] = i as u8;
        table[ALPHABET[i].to_ascii_lowercase() as usize] = i as u8;
        i += 1;
    }
    table
};

fn value_of(c: u8) -> Option<u32> {
    match VALUE[c as usize] {
        NONE => None,
        v => Some(u32::from(v)),
    }
}

/// The Luhn mod N sum over `values`, rightmost doubled first when `double_first`.
fn luhn_sum(values: &[u32], double_first: bool) -> u32 {
    let n = ALPHABET.len() as u32;
    let mut double = double_first;
    let mut sum = 0;
    for &v in values.iter().rev() {
        let mut addend = if double { v * 2 } else { v };
        addend = addend / n + addend % n;
        sum += addend;
        double = !double;
    }
    sum
}

fn check_value(data: &[u32]) -> u32 {
    let n = ALPHABET.len() as u32;
    (n - luhn_sum(data, true) % n) % n
}

/// Normalises any accepted spelling into the canonical form on the stack, so the
/// validation path allocates nothing.
pub fn normalize(input: &str) -> Result<[u8; KEY_LEN], KeyError> {
    canonical(input.as_bytes()).map_or_else(|| normalize_any(input), Ok)
}

/// `normalize` for any spelling: hyphens and spaces anywhere, either case.
fn normalize_any(input: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let mut values = [0u32; SYMBOLS];
    let mut n = 0;
    for c in input.chars() {
        if c == '-' || c == ' ' {
            continue;
        }
        if n == SYMBOLS {
            let extra = input.chars().filter(|c| *c != '-' && *c != ' ').count();
            return Err(KeyError::Length(extra));
        }
        let v = u8::try_from(c).ok().and_then(value_of).ok_or(KeyError::Symbol(c))?;
        values[n] = v;
        n += 1;
    }
    if n != SYMBOLS {
        return Err(KeyError::Length(n));
    }
    if !luhn_sum(&values, false).is_multiple_of(ALPHABET.len() as u32) {
        return Err(KeyError::Check);
    }
    Ok(render(&values))
}

/// The key when `input` already is in canonical form with a matching check
/// character (every stored key, and most typed ones), read byte by byte; `None`
/// sends anything else, including a bad check character, down the general path,
/// which then names the error.
fn canonical(input: &[u8]) -> Option<[u8; KEY_LEN]> {
    let bytes: [u8; KEY_LEN] = input.try_into().ok()?;
    let mut values = [0u32; SYMBOLS];
    for (i, &c) in bytes.iter().enumerate() {
        if (i + 1) % (GROUP + 1) == 0 {
            if c != b'-' {
                return None;
            }
        } else if c.is_ascii_uppercase() || c.is_ascii_digit() {
            values[i - i / (GROUP + 1)] = value_of(c)?;
        } else {
            return None;
        }
    }
    luhn_sum(&values, false).is_multiple_of(ALPHABET.len() as u32).then_some(bytes)
}

fn render(values: &[u32; SYMBOLS]) -> [u8; KEY_LEN] {
    let mut out = [b'-'; KEY_LEN];
    for (i, v) in values.iter().enumerate() {
        out[i + i / GROUP] = ALPHABET[*v as usize];
    }
    out
}

/// A key in its canonical form, held inline rather than behind a pointer: the state's
/// key index copies and drops keys whenever it changes, and an inline key makes that a
/// plain copy instead of a reference count on a cold cache line per key. Equality,
/// order and hashing are those of the text, so maps of keys are looked up by `&str`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LicenseKey(ArrayString<KEY_LEN>);

impl LicenseKey {
    pub fn parse(input: &str) -> Result<Self, KeyError> {
        let bytes = match canonical(input.as_bytes()) {
            Some(bytes) => bytes,
            None => normalize_any(input)?,
        };
        Ok(Self::from_canonical(&bytes))
    }

    /// The canonical form is ASCII of exactly `KEY_LEN` bytes by construction.
    fn from_canonical(bytes: &[u8; KEY_LEN]) -> Self {
        Self(ArrayString::from_byte_string(bytes).unwrap_or_else(|_| unreachable!("canonical keys are ASCII")))
    }

    /// Makes a key from 15 random bytes (120 bits) drawn by the caller.
    pub fn from_random(bytes: [u8; 15]) -> Self {
        let mut values = [0u32; SYMBOLS];
        let mut acc = 0u128;
        for b in bytes {
            acc = (acc << 8) | u128::from(b);
        }
        for slot in values[..SYMBOLS - 1].iter_mut().rev() {
            *slot = (acc & 31) as u32;
            acc >>= 5;
        }
        values[SYMBOLS - 1] = check_value(&values[..SYMBOLS - 1]);
        Self::from_canonical(&render(&values))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LicenseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LicenseKey {
    // Keys are bearer secrets: debug output shows only the first group.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LicenseKey({}-…)", &self.0[..GROUP])
    }
}

impl Borrow<str> for LicenseKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Serialize for LicenseKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Parses the borrowed text in place: one allocation per decoded key, not two.
impl<'de> Deserialize<'de> for LicenseKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = LicenseKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<LicenseKey, E> {
                LicenseKey::parse(s).map_err(E::custom)
            }
        }
        d.deserialize_str(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_keys_have_the_canonical_shape() {
        let k = LicenseKey::from_random([7; 15]);
        assert_eq!(k.as_str().len(), KEY_LEN);
        assert_eq!(k.as_str().matches('-').count(), 4);
        assert!(!k.as_str().contains(['0', '1', 'O', 'I']));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let k = LicenseKey::from_random([42; 15]);
        assert_eq!(LicenseKey::parse("ABC"), Err(KeyError::Length(3)));
        let with_o = format!("O{}", &k.as_str()[1..]);
        assert_eq!(LicenseKey::parse(&with_o), Err(KeyError::Symbol('O')));
        assert_eq!(LicenseKey::parse(&format!("{k}A")), Err(KeyError::Length(26)));
        assert_eq!(LicenseKey::parse("ÄÄÄ"), Err(KeyError::Symbol('Ä')));
    }

    proptest! {
        #[test]
        fn round_trips_in_any_spelling(bytes in any::<[u8; 15]>()) {
            let k = LicenseKey::from_random(bytes);
            prop_assert_eq!(LicenseKey::parse(k.as_str()).unwrap(), k.clone());
            let sloppy = k.as_str().replace('-', "").to_lowercase();
            prop_assert_eq!(LicenseKey::parse(&sloppy).unwrap(), k.clone());
            let spaced = k.as_str().replace('-', " ");
            prop_assert_eq!(LicenseKey::parse(&spaced).unwrap(), k);
        }

        #[test]
        fn every_single_substitution_is_caught(bytes in any::<[u8; 15]>(), pos in 0usize..SYMBOLS, delta in 1u32..32) {
            let k = LicenseKey::from_random(bytes);
            let mut symbols: Vec<u8> = k.as_str().bytes().filter(|&c| c != b'-').collect();
            let v = value_of(symbols[pos]).unwrap();
            symbols[pos] = ALPHABET[((v + delta) % 32) as usize];
            let typo = String::from_utf8(symbols).unwrap();
            prop_assert_eq!(LicenseKey::parse(&typo), Err(KeyError::Check));
        }

        /// The canonical fast path and the general one agree on every spelling: same
        /// key, or the same refusal.
        #[test]
        fn canonical_fast_path_agrees_with_the_general_one(bytes in any::<[u8; 15]>(), pos in 0usize..KEY_LEN, c in any::<char>()) {
            let k = LicenseKey::from_random(bytes);
            let fast = canonical(k.as_str().as_bytes());
            prop_assert_eq!(fast.as_ref().map(|b| &b[..]), Some(k.as_str().as_bytes()));
            let mut chars: Vec<char> = k.as_str().chars().collect();
            chars[pos] = c;
            let edited: String = chars.into_iter().collect();
            let general = normalize(&format!(" {edited}")).map(|b| b.to_vec());
            prop_assert_eq!(normalize(&edited).map(|b| b.to_vec()), general);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = LicenseKey::parse(&s);
        }
    }
}
