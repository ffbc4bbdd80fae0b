//! Why a command was refused: a value with a stable code, never a panic.

use std::fmt;

/// The kind of refusal decides the HTTP status; the code is what clients match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    /// The input is well-formed but not acceptable (422).
    Invalid,
    /// Something named does not exist (404).
    NotFound,
    /// The request conflicts with the current state (409).
    Conflict,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    /// Stable, SCREAMING_SNAKE_CASE.
    pub code: &'static str,
    pub detail: String,
}

impl Refusal {
    pub fn new(kind: RefusalKind, code: &'static str, detail: impl Into<String>) -> Self {
        Self { kind, code, detail: detail.into() }
    }
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(RefusalKind::Invalid, "INVALID_INPUT", detail)
    }
    pub fn not_found(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(RefusalKind::NotFound, code, detail)
    }
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(RefusalKind::Conflict, code, detail)
    }
    pub fn unknown_feature(product: impl fmt::Display, feature: impl fmt::Display) -> Self {
        Self::new(
            RefusalKind::Invalid,
            "UNKNOWN_FEATURE",
            format!("product '{product}' has no feature '{feature}'; add it to the product first"),
        )
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

impl std::error::Error for Refusal {}
