//! Online validation: a license key (and optionally a feature) against the state at
//! an instant. Reads memory only and allocates nothing, so it costs well under a
//! microsecond; the HTTP layer renders the answer.

use serde::Serialize;

use crate::catalog::Plan;
use crate::key;
use crate::license::{License, Standing};
use crate::overrides::Effective;
use crate::state::State;
use crate::timestamp::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Code {
    Valid,
    GracePeriod,
    MalformedKey,
    NotFound,
    Suspended,
    Revoked,
    Expired,
    FeatureNotEntitled,
    /// A fingerprint was given that is neither activated nor holding a live lease.
    FingerprintNotActivated,
    /// A user was given that holds no seat.
    UserNotAssigned,
    /// The machine is activated, but the license's machine limit was lowered below
    /// the machines activated and this one is among the newest beyond it.
    TooManyMachines,
    /// The user holds a seat, but the license's seat limit was lowered below the seats
    /// assigned and this one is among the newest beyond it.
    TooManyUsers,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Valid => "VALID",
            Code::GracePeriod => "GRACE_PERIOD",
            Code::MalformedKey => "MALFORMED_KEY",
            Code::NotFound => "NOT_FOUND",
            Code::Suspended => "SUSPENDED",
            Code::Revoked => "REVOKED",
            Code::Expired => "EXPIRED",
            Code::FeatureNotEntitled => "FEATURE_NOT_ENTITLED",
            Code::FingerprintNotActivated => "FINGERPRINT_NOT_ACTIVATED",
            Code::UserNotAssigned => "USER_NOT_ASSIGNED",
            Code::TooManyMachines => "TOO_MANY_MACHINES",
            Code::TooManyUsers => "TOO_MANY_USERS",
        }
    }

    pub fn is_valid(self) -> bool {
        matches!(self, Code::Valid | Code::GracePeriod)
    }
}

/// What validation found. `license` and `plan` are set whenever the key resolved,
/// whatever the answer, so a caller can say why.
#[derive(Debug)]
pub struct Validation<'s> {
    pub code: Code,
    pub license: Option<&'s License>,
    pub plan: Option<&'s Plan>,
    pub standing: Option<Standing>,
    /// Why a key was malformed, for people.
    pub detail: Option<key::KeyError>,
}

impl Validation<'_> {
    pub fn valid(&self) -> bool {
        self.code.is_valid()
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Scope<'a> {
    pub feature: Option<&'a str>,
    /// Restricts the answer to one product's licenses (a product-scoped token).
    pub product: Option<&'a str>,
    /// The machine asking: must be activated on the license, or hold a live lease.
    pub fingerprint: Option<&'a str>,
    /// The user asking: must hold a seat.
    pub user: Option<&'a str>,
}

pub fn validate<'s>(state: &'s State, key_text: &str, scope: Scope<'_>, now: Timestamp) -> Validation<'s> {
    let mut v = Validation { code: Code::NotFound, license: None, plan: None, standing: None, detail: None };
    let canonical = match key::normalize(key_text) {
        Ok(k) => k,
        Err(e) => {
            v.code = Code::MalformedKey;
            v.detail = Some(e);
            return v;
        }
    };
    // The canonical form is ASCII by construction.
    let Ok(canonical) = std::str::from_utf8(&canonical) else { return v };
    let Some(license) = state.license_by_key(canonical) else { return v };
    if scope.product.is_some_and(|p| p != license.product.as_str()) {
        return v;
    }
    let Some(plan) = state.plan(license.plan.as_str()) else { return v };
    let standing = license.standing(plan, now);
    v.license = Some(license);
    v.plan = Some(plan);
    v.standing = Some(standing);
    v.code = match standing {
        Standing::Revoked => Code::Revoked,
        Standing::Suspended => Code::Suspended,
        Standing::Expired => Code::Expired,
        Standing::Active | Standing::Grace { .. } => {
            // Machines, seats and overrides live beside the license; look them up only
            // when the question needs them (one hash lookup, no allocation).
            let scoped = scope.feature.is_some() || scope.fingerprint.is_some() || scope.user.is_some();
            let models = if scoped { state.models(license.id.as_str()) } else { None };
            let effective = Effective { plan, overrides: models.and_then(|m| m.overrides.as_ref()) };
            if scope.feature.is_some_and(|f| !effective.has_feature(f)) {
                Code::FeatureNotEntitled
            } else if scope.fingerprint.is_some_and(|f| !models.is_some_and(|m| m.knows_fingerprint(f, now))) {
                Code::FingerprintNotActivated
            } else if scope.user.is_some_and(|u| !models.is_some_and(|m| m.seats.contains_key(u))) {
                Code::UserNotAssigned
            } else if scope.fingerprint.zip(models).is_some_and(|(f, m)| !m.machine_within(f, effective.max_machines()))
            {
                Code::TooManyMachines
            } else if scope.user.zip(models).is_some_and(|(u, m)| !m.seat_within(u, effective.max_users())) {
                Code::TooManyUsers
            } else if matches!(standing, Standing::Grace { .. }) {
                Code::GracePeriod
            } else {
                Code::Valid
            }
        }
    };
    v
}
