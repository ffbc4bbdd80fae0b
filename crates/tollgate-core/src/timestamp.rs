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

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_datetime().format(&Rfc3339) {
            Ok(s) => f.write_str(&s),
            Err(_) => Err(fmt::Error),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
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

    #[test]
    fn rejects_garbage_and_out_of_range() {
        assert!(matches!(Timestamp::parse("tomorrow"), Err(TimestampError::Syntax(_))));
        assert!(matches!(Timestamp::parse("1960-01-01T00:00:00Z"), Err(TimestampError::Range(_))));
        assert_eq!(Timestamp::from_millis(MAX_MILLIS).unwrap().plus_days(10).millis(), MAX_MILLIS);
    }
}
