//! Metered usage: a plan's meters, each with a quota per period and an overage rule.
//!
//! Periods are UTC calendar periods of the instant asked about (`day`, `month`) or
//! the license's whole life (`total`). The fold keeps, per meter, the start of the
//! period it last counted and the amount used in it; usage recorded in a later period
//! starts from zero, so periods roll over on time with no sweeper and no event.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use time::{Date, Month, OffsetDateTime, Time};

use crate::ids::MeterKey;
use crate::refusal::Refusal;
use crate::timestamp::{MILLIS_PER_DAY, Timestamp};

const MAX_METERS: usize = 100;
/// Quotas and quantities stay far from `u64::MAX`, so sums never overflow.
pub const MAX_AMOUNT: u64 = 1_000_000_000_000_000;
const MAX_PERCENT: u32 = 10_000;
/// The most one period of a meter may hold, overage included. The ledger's canonical
/// JSON (RFC 8785) writes numbers as doubles, exact only up to 2^53: a larger total
/// would come back from a snapshot rounded, and the state folded from it would differ
/// from the one folded from the ledger.
pub const MAX_USED: u64 = 1 << 53;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Month,
    Total,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OverageMode {
    Block,
    Allow,
}

/// `"block"` (the default), `"allow"`, or `{"allow_percent": N}`: up to N% over quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Overage {
    Mode(OverageMode),
    Percent { allow_percent: u32 },
}

impl Default for Overage {
    fn default() -> Self {
        Overage::Mode(OverageMode::Block)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterSpec {
    pub key: MeterKey,
    #[serde(default)]
    pub overage: Overage,
    pub period: Period,
    pub quota: u64,
}

impl MeterSpec {
    /// The most that may be used in one period, `None` when overage is unlimited.
    pub fn ceiling(&self, quota: u64) -> Option<u64> {
        match self.overage {
            Overage::Mode(OverageMode::Block) => Some(quota),
            Overage::Mode(OverageMode::Allow) => None,
            Overage::Percent { allow_percent } => Some(
                quota.saturating_add(
                    (quota / 100)
                        .saturating_mul(u64::from(allow_percent))
                        .saturating_add(quota % 100 * u64::from(allow_percent) / 100),
                ),
            ),
        }
    }
}

pub fn check_meters(meters: &[MeterSpec]) -> Result<(), Refusal> {
    if meters.len() > MAX_METERS {
        return Err(Refusal::invalid(format!("a plan has at most {MAX_METERS} meters")));
    }
    let mut seen = BTreeSet::new();
    for m in meters {
        if !seen.insert(&m.key) {
            return Err(Refusal::invalid(format!("meter '{}' is listed twice", m.key)));
        }
        if m.quota > MAX_AMOUNT {
            return Err(Refusal::invalid(format!("meter '{}': quota is at most {MAX_AMOUNT}", m.key)));
        }
        if let Overage::Percent { allow_percent } = m.overage
            && allow_percent > MAX_PERCENT
        {
            return Err(Refusal::invalid(format!("meter '{}': allow_percent is at most {MAX_PERCENT}", m.key)));
        }
    }
    Ok(())
}

fn first_of_month(d: Date) -> Date {
    Date::from_calendar_date(d.year(), d.month(), 1).unwrap_or(d)
}

fn from_date(d: Date) -> Timestamp {
    Timestamp::from_datetime(d.with_time(Time::MIDNIGHT).assume_utc())
        .unwrap_or_else(|| Timestamp::from_millis(0).expect("epoch is in range"))
}

impl Period {
    /// The start of the period that contains `at`.
    pub fn start(self, at: Timestamp) -> Timestamp {
        match self {
            Period::Day => Timestamp::from_millis(at.millis() - at.millis().rem_euclid(MILLIS_PER_DAY)).unwrap_or(at),
            Period::Month => from_date(first_of_month(at.to_datetime().date())),
            Period::Total => Timestamp::from_millis(0).expect("epoch is in range"),
        }
    }

    /// When the period that contains `at` ends; `None` for `total`.
    pub fn end(self, at: Timestamp) -> Option<Timestamp> {
        match self {
            Period::Day => Some(self.start(at).plus_days(1)),
            Period::Month => {
                let d: OffsetDateTime = at.to_datetime();
                let (y, m) = if d.month() == Month::December {
                    (d.year() + 1, Month::January)
                } else {
                    (d.year(), d.month().next())
                };
                Date::from_calendar_date(y, m, 1).ok().map(from_date)
            }
            Period::Total => None,
        }
    }
}

/// What the fold keeps per meter of a license.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterUsage {
    pub period_start: Timestamp,
    pub used: u64,
}

impl MeterUsage {
    /// The amount used in the period that contains `now`: what was recorded since that
    /// period began. (Usage kept under a shorter period that began inside this one,
    /// after the meter's period was made longer, counts; usage from before it began
    /// does not.)
    pub fn used_at(&self, period: Period, now: Timestamp) -> u64 {
        if self.period_start >= period.start(now) { self.used } else { 0 }
    }

    /// Folds `quantity` recorded at `at` in. A record that lands in a period before the
    /// one kept (nodes' clocks differ, or a clock stepped back) adds to the kept one
    /// rather than replacing it, so no usage is ever forgotten by going back in time.
    pub fn record(current: Option<MeterUsage>, period: Period, at: Timestamp, quantity: u64) -> MeterUsage {
        let start = period.start(at);
        match current.filter(|u| u.period_start >= start) {
            Some(u) => MeterUsage { period_start: u.period_start, used: u.used.saturating_add(quantity) },
            None => MeterUsage { period_start: start, used: quantity },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    #[test]
    fn periods_are_utc_calendar_periods() {
        let at = t("2026-12-31T23:59:59.999Z");
        assert_eq!(Period::Day.start(at), t("2026-12-31T00:00:00Z"));
        assert_eq!(Period::Day.end(at), Some(t("2027-01-01T00:00:00Z")));
        assert_eq!(Period::Month.start(at), t("2026-12-01T00:00:00Z"));
        assert_eq!(Period::Month.end(at), Some(t("2027-01-01T00:00:00Z")));
        assert_eq!(Period::Month.end(t("2027-02-10T00:00:00Z")), Some(t("2027-03-01T00:00:00Z")));
        assert_eq!(Period::Total.end(at), None);
    }

    #[test]
    fn ceilings() {
        let m = |overage| MeterSpec { key: MeterKey::parse("m").unwrap(), overage, period: Period::Day, quota: 1000 };
        assert_eq!(m(Overage::default()).ceiling(1000), Some(1000));
        assert_eq!(m(Overage::Mode(OverageMode::Allow)).ceiling(1000), None);
        assert_eq!(m(Overage::Percent { allow_percent: 10 }).ceiling(1000), Some(1100));
        assert_eq!(m(Overage::Percent { allow_percent: 50 }).ceiling(3), Some(4));
    }

    /// Usage is never forgotten by a clock going back (a record from another node a
    /// second behind, across a month boundary), nor by a meter's period made longer;
    /// it does start again when a new period begins.
    #[test]
    fn usage_survives_a_clock_going_back_and_a_longer_period() {
        let feb = MeterUsage::record(None, Period::Month, t("2027-02-01T00:00:00.500Z"), 900);
        let late = MeterUsage::record(Some(feb), Period::Month, t("2027-01-31T23:59:59.900Z"), 10);
        assert_eq!(late.used_at(Period::Month, t("2027-02-01T00:00:02Z")), 910);
        let next = MeterUsage::record(Some(late), Period::Month, t("2027-02-01T00:00:02Z"), 5);
        assert_eq!(next.used_at(Period::Month, t("2027-02-02T00:00:00Z")), 915);
        assert_eq!(next.used_at(Period::Month, t("2027-03-01T00:00:00Z")), 0, "March starts again");
        let march = MeterUsage::record(Some(next), Period::Month, t("2027-03-01T00:00:00Z"), 1);
        assert_eq!(march, MeterUsage { period_start: t("2027-03-01T00:00:00Z"), used: 1 });

        // Today's usage under a daily meter counts in the month once the meter is
        // monthly, and in the whole once it counts in total; the other way round it
        // starts again (the total was not all used this month).
        let today = MeterUsage::record(None, Period::Day, t("2027-02-10T09:00:00Z"), 40);
        assert_eq!(today.used_at(Period::Month, t("2027-02-10T10:00:00Z")), 40);
        assert_eq!(today.used_at(Period::Total, t("2027-02-10T10:00:00Z")), 40);
        let monthly = MeterUsage::record(Some(today), Period::Month, t("2027-02-10T10:00:00Z"), 2);
        assert_eq!(monthly.used_at(Period::Month, t("2027-02-20T00:00:00Z")), 42);
        let total = MeterUsage::record(None, Period::Total, t("2027-01-05T00:00:00Z"), 800);
        assert_eq!(total.used_at(Period::Month, t("2027-02-10T10:00:00Z")), 0);
    }
}
