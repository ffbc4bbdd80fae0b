//! The one error type of the API, rendered in one place as RFC 9457
//! `application/problem+json` with a stable machine-readable `code`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tollgate_core::{Refusal, RefusalKind};
use utoipa::ToSchema;

use crate::engine::EngineError;

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem; `urn:tollgate:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable, for programs: match on this, not on `title` or `detail`.
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self { status, code, detail: detail.into(), retry_after: None }
    }
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }
    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }
    pub fn not_found(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, detail)
    }
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", detail)
    }
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", detail)
    }
    /// 503 with `Retry-After: 1`: nothing was done, and the same request may be sent again.
    pub fn retry(code: &'static str, detail: impl Into<String>) -> Self {
        Self { retry_after: Some(1), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, detail) }
    }
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", detail)
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        let status = match r.kind {
            RefusalKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
            RefusalKind::NotFound => StatusCode::NOT_FOUND,
            RefusalKind::Conflict => StatusCode::CONFLICT,
        };
        ApiError::new(status, r.code, r.detail)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Refused(r) => r.into(),
            EngineError::IdempotencyMismatch => ApiError::unprocessable(
                "IDEMPOTENCY_KEY_REUSED",
                "this Idempotency-Key was already used with a different request; use a new key for a new request",
            ),
            EngineError::Stopped => {
                let mut e =
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "the server is shutting down");
                e.retry_after = Some(1);
                e
            }
            EngineError::Contended(n) => {
                tracing::warn!(attempts = n, "write refused: the ledger is contended");
                ApiError::retry(
                    "LEDGER_CONTENDED",
                    "other nodes kept appending to the ledger first; nothing was written, retry the request",
                )
            }
            EngineError::NotWritten(why) => {
                tracing::error!(error = %why, "write refused: the ledger could not be written");
                ApiError::retry(
                    "LEDGER_UNAVAILABLE",
                    "the ledger could not be written (the server's log says why); nothing of this request was recorded, retry it",
                )
            }
            EngineError::Unconfirmed(why) => {
                tracing::error!(error = %why, "write unconfirmed: the store reported an error and could not be read back");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "WRITE_UNCONFIRMED",
                    "the ledger reported an error for this write and could not be read back to check it: it may have been \
                     recorded. Retry with the same Idempotency-Key to get its original answer; without one, look the \
                     result up before writing again",
                )
            }
            other => {
                tracing::error!(error = %other, "write failed");
                ApiError::internal("the write could not be completed; it was not acknowledged and may be retried")
            }
        }
    }
}

impl From<tollgate_store::StoreError> for ApiError {
    fn from(e: tollgate_store::StoreError) -> Self {
        tracing::error!(error = %e, "store read failed");
        ApiError::internal("the store could not be read")
    }
}

fn title(status: StatusCode) -> String {
    status.canonical_reason().unwrap_or("Error").to_string()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem {
            kind: format!("urn:tollgate:problem:{}", self.code.to_ascii_lowercase().replace('_', "-")),
            title: title(self.status),
            status: self.status.as_u16(),
            detail: self.detail,
            code: self.code.to_string(),
            instance: None,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut res = (self.status, body).into_response();
        res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(s) = self.retry_after {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write the store refused is retryable as it is; one it could not confirm is not
    /// told "retry", since it may be recorded: the client needs its idempotency key.
    #[test]
    fn store_failures_on_writes_say_whether_anything_was_written() {
        let refused = ApiError::from(EngineError::NotWritten("disk full".into()));
        assert_eq!(
            (refused.status, refused.code, refused.retry_after),
            (StatusCode::SERVICE_UNAVAILABLE, "LEDGER_UNAVAILABLE", Some(1))
        );
        assert!(refused.detail.contains("nothing of this request was recorded"), "{}", refused.detail);
        assert!(!refused.detail.contains("disk full"), "the store's error goes to the log, not to clients");

        let unconfirmed = ApiError::from(EngineError::Unconfirmed("connection reset".into()));
        assert_eq!(
            (unconfirmed.status, unconfirmed.code, unconfirmed.retry_after),
            (StatusCode::SERVICE_UNAVAILABLE, "WRITE_UNCONFIRMED", None)
        );
        assert!(unconfirmed.detail.contains("same Idempotency-Key"), "{}", unconfirmed.detail);
    }
}
