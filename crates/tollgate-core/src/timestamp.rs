//! Instants as whole milliseconds since the Unix epoch.
//!
//! Core never reads a clock: every instant is handed in by the caller, and events
//! carry their own. Milliseconds keep comparisons on the validation path to one
//! integer compare, and the RFC 3339 text form (always UTC, `Z`) keeps the canonical
//! encoding of an event stable.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub const MILLIS_PER_DAY: i64 = 86_400_000;

/// The latest instant we accept (year 9999), so that day arithmetic can never overflow.
const MAX_MILLIS: i64 = 253_402_300_799_999;
const MIN_MILLIS: i64 = 0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimestampError {
    #[error("'{0}' is not an RFC 3339 date-time (expected e.g. 2027-01-31T12:00:00Z)")]
    Syntax(String),
    #[error("'{0}' is outside the supported range 1970-01-01 to 9999-12-31")]
    Range(String),
}

impl Timestamp {
    pub fn from_millis(ms: i64) -> Option<Self> {
        (MIN_MILLIS..=MAX_MILLIS).contains(&ms).then_some(Self(ms))
    }

    /// Converts a clock reading taken by the caller, truncated to milliseconds.
    pub fn from_datetime(dt: OffsetDateTime) -> Option<Self> {
        let ms = i64::try_from(dt.unix_timestamp_nanos() / 1_000_000).ok()?;
        Self::from_millis(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn parse(s: &str) -> Result<Self, TimestampError> {
        if let Some(t) = parse_canonical(s.as_bytes()) {
            return Ok(t);
        }
        let dt = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| TimestampError::Syntax(s.into()))?;
        Self::from_datetime(dt).ok_or_else(|| TimestampError::Range(s.into()))
    }

    /// Adds whole days, saturating at the end of the supported range.
    pub fn plus_days(self, days: u32) -> Self {
        Self((self.0 + i64::from(days) * MILLIS_PER_DAY).min(MAX_MILLIS))
    }

    pub fn to_datetime(self) -> OffsetDateTime {
        // In range by construction, so this cannot fail; fall back to the epoch regardless.
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

/// Reads the UTC form this type displays as (`YYYY-MM-DDTHH:MM:SS`, an optional
/// fraction of 1 to 9 digits, `Z`), or returns `None` for anything else, which
/// `parse` then hands to `time`'s full RFC 3339 parser. Written by hand because
/// every decoded event carries two to four instants in exactly this form, and the
/// general parser (offsets, leap seconds, nanoseconds in an `i128`) was a tenth of
/// the replay profile. It accepts only what `time` accepts, with the same value:
/// leap seconds, out-of-range instants and other spellings go the slow way.
fn parse_canonical(b: &[u8]) -> Option<Timestamp> {
    /// The two decimal digits at `b[i..i + 2]`.
    fn two(b: &[u8], i: usize) -> Option<i64> {
        let (hi, lo) = (b[i].wrapping_sub(b'0'), b[i + 1].wrapping_sub(b'0'));
        (hi < 10 && lo < 10).then(|| i64::from(hi * 10 + lo))
    }
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = two(b, 0)? * 100 + two(b, 2)?;
    let (month, day) = (two(b, 5)?, two(b, 8)?);
    let (hour, minute, second) = (two(b, 11)?, two(b, 14)?, two(b, 17)?);
    let millis = match &b[19..] {
        [b'Z'] => 0,
        [b'.', fraction @ .., b'Z'] if (1..=9).contains(&fraction.len()) => {
            let mut ms = 0;
            for (i, &c) in fraction.iter().enumerate() {
                let d = c.wrapping_sub(b'0');
                if d >= 10 {
                    return None;
                }
                if i < 3 {
                    ms = ms * 10 + i64::from(d);
                }
            }
            ms * [100, 10, 1][fraction.len().min(3) - 1]
        }
        _ => return None,
    };
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let ms = days_from_civil(year, month, day) * MILLIS_PER_DAY + ((hour * 60 + minute) * 60 + second) * 1000 + millis;
    Timestamp::from_millis(ms)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`), the inverse of `days_from_civil`.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; TEXT_MAX];
        f.write_str(self.write_text(&mut buf))
    }
}

/// The longest text form: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
const TEXT_MAX: usize = 24;

impl Timestamp {
    /// Writes the RFC 3339 form into `buf` and returns it: `time`'s own output for the
    /// same instant (UTC, `Z`, a fraction only when the milliseconds are not zero, its
    /// trailing zeros dropped). Written by hand because every event encodes two to four
    /// instants, and going through `time`'s formatter and an owned string was a tenth
    /// of the writer's time per event.
    fn write_text(self, buf: &mut [u8; TEXT_MAX]) -> &str {
        /// Writes `n` (below 10^width) as `width` decimal digits.
        fn digits(out: &mut [u8], mut n: i64) {
            for b in out.iter_mut().rev() {
                *b = b'0' + (n % 10) as u8;
                n /= 10;
            }
        }
        let days = self.0.div_euclid(MILLIS_PER_DAY);
        let in_day = self.0.rem_euclid(MILLIS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let (secs, millis) = (in_day / 1000, in_day % 1000);
        digits(&mut buf[0..4], year);
        buf[4] = b'-';
        digits(&mut buf[5..7], month);
        buf[7] = b'-';
        digits(&mut buf[8..10], day);
        buf[10] = b'T';
        digits(&mut buf[11..13], secs / 3600);
        buf[13] = b':';
        digits(&mut buf[14..16], secs / 60 % 60);
        buf[16] = b':';
        digits(&mut buf[17..19], secs % 60);
        let mut end = 19;
        if millis != 0 {
            buf[19] = b'.';
            digits(&mut buf[20..23], millis);
            end = 23;
            while buf[end - 1] == b'0' {
                end -= 1;
            }
        }
        buf[end] = b'Z';
        // Only ASCII digits and separators were written.
        std::str::from_utf8(&buf[..=end]).unwrap_or_default()
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; TEXT_MAX];
        s.serialize_str(self.write_text(&mut buf))
    }
}

/// Parses the borrowed text in place: going through an owned string would allocate
/// once per instant of every decoded event.
impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Timestamp, E> {
                Timestamp::parse(s).map_err(E::custom)
            }
        }
        d.deserialize_str(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_is_stable() {
        for s in ["2026-11-23T09:31:14Z", "2026-11-23T09:31:14.123Z", "1970-01-01T00:00:00Z"] {
            let t = Timestamp::parse(s).unwrap();
            assert_eq!(t.to_string(), s);
            assert_eq!(Timestamp::parse(&t.to_string()).unwrap(), t);
        }
    }

    #[test]
    fn offsets_are_normalised_to_utc_and_sub_millis_truncated() {
        let t = Timestamp::parse("2026-11-23T10:31:14.1239+01:00").unwrap();
        assert_eq!(t.to_string(), "2026-11-23T09:31:14.123Z");
    }

    /// The fast path must agree with `time` on every input it takes, and leave the rest
    /// (leap seconds, offsets, lowercase, impossible dates) to it.
    #[test]
    fn canonical_fast_path_agrees_with_the_full_parser() {
        let full =
            |s: &str| OffsetDateTime::parse(s, &Rfc3339).ok().and_then(Timestamp::from_datetime).map(Timestamp::millis);
        for s in [
            "1970-01-01T00:00:00Z",
            "2000-02-29T23:59:59.999Z",
            "2024-02-29T12:00:00.1Z",
            "2026-11-23T09:31:14.12Z",
            "2026-11-23T09:31:14.123456789Z",
            "9999-12-31T23:59:59.999Z",
            "2100-03-01T00:00:00Z",
        ] {
            assert_eq!(parse_canonical(s.as_bytes()).map(Timestamp::millis), full(s), "{s}");
            assert!(parse_canonical(s.as_bytes()).is_some(), "{s}");
        }
        for s in [
            "1900-02-29T00:00:00Z",
            "2100-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-00-01T00:00:00Z",
            "2026-01-00T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:60:00Z",
            "2026-12-31T23:59:60Z",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00.1234567890Z",
            "2026-01-01t00:00:00Z",
            "2026-01-01T00:00:00z",
            "2026-01-01T00:00:00+00:00",
            "1969-12-31T23:59:59Z",
            "2026-01-01T00:00:0aZ",
            "+026-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_canonical(s.as_bytes()), None, "{s}");
        }
        // What the fast path declines still parses (or is refused) as before.
        assert_eq!(Timestamp::parse("2026-01-01T00:00:00+00:00").unwrap().to_string(), "2026-01-01T00:00:00Z");
        assert!(matches!(Timestamp::parse("2026-04-31T00:00:00Z"), Err(TimestampError::Syntax(_))));
    }

    proptest::proptest! {
        #[test]
        fn canonical_fast_path_matches_time_everywhere(ms in 0i64..=MAX_MILLIS, cut in 0usize..4) {
            let t = Timestamp::from_millis(ms).unwrap();
            // Displayed forms, and the same instant with a fraction of 1 to 9 digits.
            let shown = t.to_string();
            let base = &shown[..19];
            let fraction = format!("{:03}", ms % 1000);
            let variants = [shown.clone(), format!("{base}.{}Z", &fraction[..cut.max(1)]), format!("{base}.{fraction}456789Z")];
            for s in variants {
                let full = OffsetDateTime::parse(&s, &Rfc3339).ok().and_then(Timestamp::from_datetime);
                proptest::prop_assert_eq!(parse_canonical(s.as_bytes()), full, "{}", s);
            }
        }
    }

    proptest::proptest! {
        /// The hand-written text form is `time`'s, byte for byte: stored events were
        /// encoded with it, and the canonical encoding must not change.
        #[test]
        fn text_form_is_times_everywhere(ms in 0i64..=MAX_MILLIS) {
            let t = Timestamp::from_millis(ms).unwrap();
            let expected = t.to_datetime().format(&Rfc3339).unwrap();
            proptest::prop_assert_eq!(t.to_string(), expected.clone());
            proptest::prop_assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{expected}\""));
        }
    }

    #[test]
    fn text_form_at_the_edges() {
        let day = MILLIS_PER_DAY;
        for ms in [
            0,
            1,
            10,
            100,
            120,
            999,
            1000,
            day - 1,
            day,
            951_782_400_000 - 1,
            951_782_400_000,
            4_107_542_399_999,
            MAX_MILLIS,
        ] {
            let t = Timestamp::from_millis(ms).unwrap();
            assert_eq!(t.to_string(), t.to_datetime().format(&Rfc3339).unwrap(), "{ms}");
        }
        assert_eq!(Timestamp::from_millis(MAX_MILLIS).unwrap().to_string(), "9999-12-31T23:59:59.999Z");
        assert_eq!(Timestamp::from_millis(120).unwrap().to_string(), "1970-01-01T00:00:00.12Z");
    }

    #[test]
    fn rejects_garbage_and_out_of_range() {
        assert!(matches!(Timestamp::parse("tomorrow"), Err(TimestampError::Syntax(_))));
        assert!(matches!(Timestamp::parse("1960-01-01T00:00:00Z"), Err(TimestampError::Range(_))));
        assert_eq!(Timestamp::from_millis(MAX_MILLIS).unwrap().plus_days(10).millis(), MAX_MILLIS);
    }
}
