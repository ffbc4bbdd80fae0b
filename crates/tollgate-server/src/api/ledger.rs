//! The ledger's public face: checkpoints, the verifier key, entries and proofs, in the
//! formats of RFC 6962 and C2SP so that any verifier can check them.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::json;
use crate::AppState;
use crate::auth::{Permission, Principal};
use crate::extract::ApiQuery;
use crate::problem::ApiError;

const MAX_ENTRIES: u64 = 1000;

fn text(body: String) -> Response {
    let mut res = body.into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    res
}

#[utoipa::path(get, path = "/v1/ledger/checkpoint", tag = "ledger", responses((status = 200, description = "the newest signed checkpoint (C2SP tlog-checkpoint as a signed note)", content_type = "text/plain")))]
pub async fn checkpoint(State(app): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let cp = app.engine.checkpoint().await?;
    let mut res = text(cp.note);
    res.headers_mut().insert(super::SEQ_HEADER, HeaderValue::from(cp.size));
    Ok(res)
}

#[utoipa::path(get, path = "/v1/ledger/key", tag = "ledger", responses((status = 200, description = "the checkpoint verifier key, <name>+<key id>+<base64 key>", content_type = "text/plain")))]
pub async fn key(State(app): State<Arc<AppState>>) -> Response {
    text(format!("{}\n", app.engine.verifier_key()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntriesQuery {
    start: Option<u64>,
    end: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = LedgerEntry)]
pub(crate) struct Entry {
    index: u64,
    /// Base64 of the exact leaf bytes (the event's RFC 8785 canonical JSON).
    #[schema(format = Byte)]
    leaf: String,
    /// The leaf, decoded (null if it is not JSON: `tollgate ledger verify` names it).
    #[schema(value_type = Option<Object>)]
    event: serde_json::Value,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = LedgerEntries)]
pub(crate) struct Entries {
    /// The ledger's size when read.
    size: u64,
    entries: Vec<Entry>,
}

#[utoipa::path(get, path = "/v1/ledger/entries", tag = "ledger", params(("start" = Option<u64>, Query, description = "first index, default 0"), ("end" = Option<u64>, Query, description = "index after the last, default start+100; cut short at the ledger's size and at 1000 entries")), responses((status = 200, description = "the entries in the range", body = Entries)), security(("bearer" = [])))]
pub async fn entries(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<EntriesQuery>,
) -> Result<Response, ApiError> {
    principal.require(Permission::LedgerRead)?;
    let size = app.engine.state().seq();
    let start = q.start.unwrap_or(0);
    let end = q.end.unwrap_or(start.saturating_add(100));
    if start > end || start > size {
        return Err(ApiError::bad_request(
            "INVALID_RANGE",
            format!("need start <= end and start <= {size} (the ledger's size)"),
        ));
    }
    // Like RFC 6962 get-entries, a range past the end or longer than a page is cut
    // short; the caller continues from the last index it got.
    let end = end.min(size).min(start + MAX_ENTRIES);
    let rows = app.reader.lock().unwrap_or_else(|p| p.into_inner()).read(start, end)?;
    let entries = rows
        .into_iter()
        .map(|e| Entry {
            index: e.index,
            event: serde_json::from_slice(&e.leaf).unwrap_or(serde_json::Value::Null),
            leaf: B64.encode(&e.leaf),
        })
        .collect();
    json(&Entries { size, entries }, size)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    index: u64,
    size: Option<u64>,
}

/// Hashes are base64 (RFC 6962).
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct InclusionProof {
    index: u64,
    size: u64,
    #[schema(format = Byte)]
    leaf_hash: String,
    #[schema(format = Byte)]
    root: String,
    proof: Vec<String>,
}

fn b64_all(hashes: &[[u8; 32]]) -> Vec<String> {
    hashes.iter().map(|h| B64.encode(h)).collect()
}

#[utoipa::path(get, path = "/v1/ledger/proof/inclusion", tag = "ledger", params(("index" = u64, Query), ("size" = Option<u64>, Query, description = "tree size, default the current size")), responses((status = 200, description = "the audit path of the leaf at `index` in the tree of `size`", body = InclusionProof)), security(("bearer" = [])))]
pub async fn inclusion(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<InclusionQuery>,
) -> Result<Response, ApiError> {
    principal.require(Permission::LedgerRead)?;
    let log = app.engine.log().read().unwrap_or_else(|p| p.into_inner());
    let size = q.size.unwrap_or(log.len());
    if size > log.len() || q.index >= size {
        return Err(ApiError::bad_request(
            "INVALID_RANGE",
            format!("need index < size <= {} (the ledger's size)", log.len()),
        ));
    }
    let bad = |e: tollgate_core::merkle::ProofError| ApiError::bad_request("INVALID_RANGE", e.to_string());
    let proof = log.inclusion_proof(q.index, size).map_err(bad)?;
    let root = log.root_at(size).map_err(bad)?;
    let leaf = log.leaf(q.index).ok_or_else(|| ApiError::bad_request("INVALID_RANGE", "no such leaf"))?;
    let body = InclusionProof {
        index: q.index,
        size,
        leaf_hash: B64.encode(leaf),
        root: B64.encode(root),
        proof: b64_all(&proof),
    };
    json(&body, log.len())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    from: u64,
    to: Option<u64>,
}

/// Hashes are base64 (RFC 6962).
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ConsistencyProof {
    from: u64,
    to: u64,
    #[schema(format = Byte)]
    from_root: String,
    #[schema(format = Byte)]
    to_root: String,
    proof: Vec<String>,
}

#[utoipa::path(get, path = "/v1/ledger/proof/consistency", tag = "ledger", params(("from" = u64, Query), ("to" = Option<u64>, Query, description = "default the current size")), responses((status = 200, description = "the proof that the tree of `to` extends the tree of `from`", body = ConsistencyProof)), security(("bearer" = [])))]
pub async fn consistency(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ConsistencyQuery>,
) -> Result<Response, ApiError> {
    principal.require(Permission::LedgerRead)?;
    let log = app.engine.log().read().unwrap_or_else(|p| p.into_inner());
    let to = q.to.unwrap_or(log.len());
    if q.from > to || to > log.len() {
        return Err(ApiError::bad_request(
            "INVALID_RANGE",
            format!("need from <= to <= {} (the ledger's size)", log.len()),
        ));
    }
    let bad = |e: tollgate_core::merkle::ProofError| ApiError::bad_request("INVALID_RANGE", e.to_string());
    let proof = log.consistency_proof(q.from, to).map_err(bad)?;
    let body = ConsistencyProof {
        from: q.from,
        to,
        from_root: B64.encode(log.root_at(q.from).map_err(bad)?),
        to_root: B64.encode(log.root_at(to).map_err(bad)?),
        proof: b64_all(&proof),
    };
    json(&body, log.len())
}
