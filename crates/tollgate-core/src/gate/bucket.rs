//! Unleash's normalised murmur3 bucketing, bit for bit, so that a vendor migrating
//! its flags keeps every user in the bucket Unleash put them in.

use std::io::Read;

/// The seed Unleash hashes variant buckets with (percentages use seed 0).
pub const VARIANT_SEED: u32 = 86_028_157;

/// `murmur3_32("{group}:{id}", seed) % modulus + 1`, in `1..=modulus`; `None` only
/// when `modulus` is 0 (no weight to split).
///
/// The input is read as a chain of slices (prefix already holding `group:`, then the
/// id), so the hot path hashes without building the joined string.
pub fn normalized(group_prefix: &[u8], id: &str, modulus: u32, seed: u32) -> Option<u32> {
    if modulus == 0 {
        return None;
    }
    let mut input = group_prefix.chain(id.as_bytes());
    // Reading from slices cannot fail; the io::Result is murmur3's generic signature.
    let hash = murmur3::murmur3_32(&mut input, seed).ok()?;
    Some(hash % modulus + 1)
}

/// The `group:` prefix [`normalized`] expects, built once per strategy or gate.
pub fn prefix(group: &str) -> Box<[u8]> {
    let mut p = Vec::with_capacity(group.len() + 1);
    p.extend_from_slice(group.as_bytes());
    p.push(b':');
    p.into_boxed_slice()
}

/// A percentage bucket in `1..=100` from a caller's random draw.
pub fn random_percent(random: u32) -> u32 {
    random % 100 + 1
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Figures from Unleash's own client tests (`normalizedValue` / `normalizedVariantValue`).
    #[test]
    fn matches_unleash_reference_values() {
        assert_eq!(normalized(&prefix("gr1"), "123", 100, 0), Some(73));
        assert_eq!(normalized(&prefix("groupX"), "999", 100, 0), Some(25));
        assert_eq!(normalized(&prefix("gr1"), "123", 100, VARIANT_SEED), Some(96));
        assert_eq!(normalized(&prefix("groupX"), "999", 100, VARIANT_SEED), Some(60));
    }

    #[test]
    fn zero_modulus_has_no_bucket() {
        assert_eq!(normalized(&prefix("g"), "1", 0, 0), None);
    }

    proptest! {
        #[test]
        fn buckets_are_stable_and_in_range(group in ".{0,40}", id in ".{0,40}", modulus in 1u32..10_000, seed: u32) {
            let p = prefix(&group);
            let a = normalized(&p, &id, modulus, seed).unwrap();
            prop_assert!((1..=modulus).contains(&a));
            prop_assert_eq!(Some(a), normalized(&p, &id, modulus, seed));
            // Same as hashing the joined string in one piece.
            let joined = format!("{group}:{id}");
            let whole = murmur3::murmur3_32(&mut joined.as_bytes(), seed).unwrap() % modulus + 1;
            prop_assert_eq!(a, whole);
        }
    }
}
