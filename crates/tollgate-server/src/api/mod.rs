//! The `/v1` HTTP API. Handlers turn HTTP into commands and views; the engine and core
//! do the rest.

pub mod catalog;
pub mod entitlements;
pub mod events;
pub mod gates;
pub mod import;
pub mod keys;
pub mod leases;
pub mod ledger;
pub mod license_tokens;
pub mod licenses;
pub mod machines;
pub mod offline;
pub mod ofrep;
pub mod revocations;
pub mod system;
pub mod usage;
pub mod validate;

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tollgate_core::{Command, Meta};

use crate::AppState;
use crate::auth::Principal;
use crate::engine::{Idempotency, Render};
use crate::extract::{IdempotencyKey, RequestId};
use crate::problem::ApiError;

pub const SEQ_HEADER: &str = "tollgate-seq";

/// A JSON response carrying the sequence it reflects.
pub fn json_response(status: StatusCode, body: Vec<u8>, seq: u64) -> Response {
    let mut res = (status, body).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(SEQ_HEADER, HeaderValue::from(seq));
    res
}

pub fn json<T: serde::Serialize>(value: &T, seq: u64) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(value).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(json_response(StatusCode::OK, body, seq))
}

/// Everything a write needs besides the command itself.
pub struct WriteCtx {
    pub principal: Principal,
    pub request_id: RequestId,
    pub idempotency: IdempotencyKey,
    pub request_hash: [u8; 32],
}

/// Sends a command through the engine and answers with what it rendered.
pub async fn execute(
    app: &Arc<AppState>,
    ctx: WriteCtx,
    reason: Option<String>,
    command: Command,
    status: StatusCode,
    render: Render,
) -> Result<Response, ApiError> {
    if reason.as_ref().is_some_and(|r| r.len() > 1000) {
        return Err(ApiError::unprocessable("INVALID_INPUT", "reason is at most 1000 bytes"));
    }
    let meta = Meta { actor: ctx.principal.actor(), reason, request_id: ctx.request_id.0 };
    let idem = ctx.idempotency.0.map(|key| Idempotency {
        scope: ctx.principal.token_id.clone(),
        key,
        request_hash: ctx.request_hash,
    });
    let out = app.engine.submit(command, meta, status.as_u16(), idem, render).await?;
    let status = StatusCode::from_u16(out.status).unwrap_or(status);
    let res = json_response(status, out.body, out.seq);
    Ok(if out.replayed { replayed(res) } else { res })
}

/// Marks an answer given again for a repeated `Idempotency-Key`.
pub(crate) fn replayed(mut res: Response) -> Response {
    res.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    res
}

/// `N` bytes from the OS random source (ids, keys, rollout dice).
pub(crate) fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // getrandom only fails where the OS has no randomness source at all.
    getrandom::fill(&mut b).expect("the OS random source is available");
    b
}

/// Idempotency for the writes that are not ledger events (API tokens, minted license
/// tokens): the first request with a key claims it as an idempotency record of its own
/// scope (`LedgerStore::claim_idempotency`), where the first writer wins across nodes,
/// recording a hash of the request and what a repeat is answered with. Claims are
/// pruned with the other records, so a key is new again after the retention.
pub(crate) mod outside_ledger {
    use serde_json::Value;
    use tollgate_store::{IdempotencyRecord, LedgerStore, OUTSIDE_LEDGER_SCOPE};

    use crate::AppState;
    use crate::engine::EngineError;
    use crate::problem::ApiError;

    #[derive(PartialEq, Debug)]
    pub(crate) struct Claim {
        /// SHA-256 of the request: what it acts on and its body.
        pub request: [u8; 32],
        pub answer: Value,
    }

    /// The record key of an idempotency key, per kind of write and caller.
    pub(crate) fn claim_key(kind: &str, scope: &str, key: &str) -> String {
        format!("{kind}/{scope}/{key}")
    }

    /// The hash a claim records: the target and the body's hash.
    pub(crate) fn request(target: &str, body_hash: &[u8; 32]) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(target.as_bytes());
        h.update([0]);
        h.update(body_hash);
        h.finalize().into()
    }

    fn from_record(r: IdempotencyRecord) -> Result<Claim, ApiError> {
        let answer = serde_json::from_slice(&r.body)
            .map_err(|e| ApiError::internal(format!("a stored idempotency record does not decode: {e}")))?;
        Ok(Claim { request: r.request_hash, answer })
    }

    /// The claim stored under `claim_key`, if any. The store's lock is taken and given
    /// back here, so a caller holds none while it answers from the claim.
    pub(crate) fn find(app: &AppState, claim_key: &str) -> Result<Option<Claim>, ApiError> {
        let reader = app.reader.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = reader.idempotency(OUTSIDE_LEDGER_SCOPE, claim_key)? {
            return from_record(r).map(Some);
        }
        // Where a node of an earlier build keeps its claims, during a rolling upgrade
        // (moved at the next pruning tick).
        let legacy = format!("{}{claim_key}", tollgate_store::LEGACY_CLAIM_PREFIX);
        let Some(bytes) = reader.meta(&legacy)? else { return Ok(None) };
        drop(reader);
        // Read as the move to a record would read it (the stamp is not used here).
        match tollgate_store::legacy_claim(&legacy, &bytes, "") {
            Some(r) => from_record(r).map(Some),
            None => Err(ApiError::internal("a stored idempotency claim of an earlier build is incomplete")),
        }
    }

    /// Claims `claim_key` for `mine`; returns the claim that stands: `mine`, or an
    /// earlier request's when another got there first.
    pub(crate) fn claim(store: &mut dyn LedgerStore, claim_key: &str, mine: &Claim) -> Result<Claim, ApiError> {
        let record = IdempotencyRecord {
            scope: OUTSIDE_LEDGER_SCOPE.to_owned(),
            key: claim_key.to_owned(),
            request_hash: mine.request,
            // Unused: each write knows how it answers a repeat.
            status: 0,
            body: serde_json::to_vec(&mine.answer).map_err(|e| ApiError::internal(e.to_string()))?,
            created_at: crate::engine::now().to_string(),
        };
        from_record(store.claim_idempotency(&record)?)
    }

    /// A repeat of a request whose key was used before with another request.
    pub(crate) fn check_same(earlier: &Claim, request: &[u8; 32]) -> Result<(), ApiError> {
        if earlier.request != *request {
            return Err(EngineError::IdempotencyMismatch.into());
        }
        Ok(())
    }
}
