//! RFC 8785 (JCS) canonical JSON.
//!
//! `serde_jcs` is the reference, but it costs ~7 µs for a typical event, most of the
//! writer's time per event. Our events carry no floating-point numbers, and for
//! integers, strings and sorted keys JCS is plain JSON: sort object keys by UTF-16
//! code units, write integers in decimal, escape strings as serde_json already does
//! (`"`, `\`, `\b \f \n \r \t`, other controls as lowercase `\u00xx`). So this writer
//! handles exactly that and hands anything with a float to `serde_jcs`. A property
//! test checks it against `serde_jcs` byte for byte.

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
#[error("canonical encoding failed: {0}")]
pub struct CanonicalError(String);

pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    let v = serde_json::to_value(value).map_err(|e| CanonicalError(e.to_string()))?;
    let mut out = Vec::with_capacity(512);
    if write(&v, &mut out).is_none() {
        return serde_jcs::to_vec(&v).map_err(|e| CanonicalError(e.to_string()));
    }
    Ok(out)
}

/// Writes `v` canonically; `None` when it holds a float (left to `serde_jcs`).
fn write(v: &Value, out: &mut Vec<u8>) -> Option<()> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            // JCS numbers are IEEE doubles: integers beyond 2^53 take the double's
            // formatting, which serde_jcs does.
            const EXACT: u64 = 1 << 53;
            match (n.as_i64(), n.as_u64()) {
                (Some(i), _) if i.unsigned_abs() <= EXACT => out.extend_from_slice(i.to_string().as_bytes()),
                (None, Some(u)) if u <= EXACT => out.extend_from_slice(u.to_string().as_bytes()),
                _ => return None,
            }
        }
        Value::String(s) => serde_json::to_writer(&mut *out, s).ok()?,
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push(b'{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k).ok()?;
                out.push(b':');
                write(item, out)?;
            }
            out.push(b'}');
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::String),
            "[\\x00-\\x1f\"\\\\\u{7f}\u{e000}\u{10000}\u{ffff}a]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-z\u{e000}\u{10000}\u{ffff}\u{7f}]{0,4}|\\PC{0,5}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn matches_serde_jcs_byte_for_byte(v in json()) {
            prop_assert_eq!(to_vec(&v).unwrap(), serde_jcs::to_vec(&v).unwrap());
        }
    }

    #[test]
    fn keys_sort_by_utf16_code_units_not_bytes() {
        // U+10000 is the surrogate pair D800 DC00 in UTF-16, so it sorts before U+E000,
        // the opposite of UTF-8 byte order.
        let v: Value = serde_json::json!({"\u{10000}": 1, "\u{e000}": 2, "a": 3});
        let out = String::from_utf8(to_vec(&v).unwrap()).unwrap();
        assert_eq!(out, "{\"a\":3,\"\u{10000}\":1,\"\u{e000}\":2}");
        assert_eq!(out.as_bytes(), serde_jcs::to_vec(&v).unwrap());
    }
}
