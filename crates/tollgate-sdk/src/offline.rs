//! Offline verification: license tokens against a JWKS, with no network. The checks
//! are core's (`tollgate_core::token`), the same code the server signs with, so the
//! two cannot disagree.

use std::time::{SystemTime, UNIX_EPOCH};

pub use tollgate_core::token::{Claims, DEFAULT_LEEWAY_SECONDS, Jwks, Revocations, TokenError};
use tollgate_core::{Timestamp, token};

/// What `verify_token_with` checks besides the signature.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// The product key the token must be for.
    pub audience: Option<String>,
    /// This machine's fingerprint; a token bound to one is refused without it.
    pub fingerprint: Option<String>,
    /// Allowed clock skew on `exp` and `nbf` (default 60 s).
    pub leeway_seconds: i64,
    /// The instant to judge at; `None` reads the system clock.
    pub now: Option<SystemTime>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self { audience: None, fingerprint: None, leeway_seconds: DEFAULT_LEEWAY_SECONDS, now: None }
    }
}

/// Where a token's license stands in its term at `now` (seconds), by its claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Term {
    Running,
    /// Past `expires_at`, before the grace ends.
    Grace,
    /// Past the grace's end (no grace: past `expires_at`), whatever the token's own
    /// `exp` and leeway allow.
    Ended,
}

pub(crate) fn term(c: &Claims, now: i64) -> Term {
    if c.license.grace_ends_at.or(c.license.expires_at).is_some_and(|g| now >= g) {
        Term::Ended
    } else if c.license.expires_at.is_some_and(|e| now >= e) {
        Term::Grace
    } else {
        Term::Running
    }
}

pub(crate) fn timestamp(t: SystemTime) -> Timestamp {
    let ms = t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    Timestamp::from_millis(ms).unwrap_or_else(|| Timestamp::from_millis(0).expect("epoch is in range"))
}

/// Verifies a license token offline with default options (signature, `kid`, EdDSA
/// only, `exp`/`nbf` with 60 s leeway against the system clock).
pub fn verify_token(token: &str, jwks: &Jwks) -> Result<Claims, TokenError> {
    verify_token_with(token, jwks, &VerifyOptions::default(), None)
}

/// Verifies a license token offline, refusing it also when the last revocation feed
/// listed its license or its `jti`.
pub fn verify_token_with(
    token: &str,
    jwks: &Jwks,
    o: &VerifyOptions,
    revocations: Option<&Revocations>,
) -> Result<Claims, TokenError> {
    let v = token::Verify {
        now: timestamp(o.now.unwrap_or_else(SystemTime::now)),
        leeway: o.leeway_seconds,
        audience: o.audience.as_deref(),
        fingerprint: o.fingerprint.as_deref(),
        revocations,
    };
    token::verify(token, jwks, &v)
}
