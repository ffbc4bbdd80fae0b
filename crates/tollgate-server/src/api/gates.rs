//! Rollout gates: versioned definitions (`PUT`, history, rollback, kill), the dry-run
//! preview, the Unleash import, and the signed ruleset SDKs evaluate locally.
//!
//! Every change is a ledger event decided by core (`GateCommand`); the state keeps every
//! version, so history and rollback read memory, never the ledger.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tollgate_core::Command;
use tollgate_core::gate::{
    Context, FeatureRef, FeaturesDocument, GateCommand, GateEntry, GateImport, GateKey, GateSpec, GateVersion,
    PreviewQuery, RulesetDoc,
};
use tollgate_core::ids::{FeatureKey, ProductKey};
use tollgate_core::token::seconds;

use super::{WriteCtx, execute, json};
use crate::AppState;
use crate::auth::{Permission, Principal};
use crate::extract::{ApiJson, ApiPath, ApiQuery, IdempotencyKey, RequestId};
use crate::problem::ApiError;

/// `typ` of the signed ruleset JWS.
pub const TYP_RULESET: &str = "tollgate-ruleset+jwt";

fn gate_key(key: &str) -> Result<GateKey, ApiError> {
    GateKey::parse(key).map_err(|e| ApiError::unprocessable("INVALID_GATE", format!("gate key '{key}': {e}")))
}

fn not_found(key: &str) -> ApiError {
    ApiError::not_found("GATE_NOT_FOUND", format!("no gate with key '{key}'"))
}

/// Deserializes a definition, naming the field at fault.
fn spec_from(value: serde_json::Value) -> Result<GateSpec, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let at = e.path().to_string();
        ApiError::unprocessable("INVALID_GATE", format!("invalid gate definition at '{at}': {}", e.into_inner()))
    })
}

/// A definition from a body whose `key` is the path's (filled in when left out).
fn spec_for_path(key: &str, mut body: serde_json::Value) -> Result<GateSpec, ApiError> {
    let Some(obj) = body.as_object_mut() else {
        return Err(ApiError::unprocessable("INVALID_GATE", "the gate definition must be a JSON object"));
    };
    match obj.get("key") {
        Some(serde_json::Value::String(k)) if k != key => {
            return Err(ApiError::unprocessable(
                "KEY_MISMATCH",
                format!("the body's key '{k}' differs from the path's '{key}'"),
            ));
        }
        _ => {
            obj.insert("key".into(), serde_json::Value::from(key));
        }
    }
    spec_from(body)
}

#[derive(Serialize)]
struct VersionView<'a> {
    version: u64,
    at: tollgate_core::Timestamp,
    actor: &'a str,
    change: &'a tollgate_core::gate::Change,
    definition: &'a GateSpec,
}

fn version_view(v: &GateVersion) -> VersionView<'_> {
    VersionView { version: v.version, at: v.at, actor: &v.actor, change: &v.change, definition: &v.definition }
}

#[derive(Serialize)]
struct GateView<'a> {
    key: &'a str,
    version: u64,
    updated_at: tollgate_core::Timestamp,
    definition: &'a GateSpec,
}

fn gate_view(g: &GateEntry) -> GateView<'_> {
    let c = g.current();
    GateView { key: c.definition.key.as_str(), version: c.version, updated_at: c.at, definition: &c.definition }
}

fn render_gate(key: GateKey) -> crate::engine::Render {
    Box::new(move |s, _| {
        s.gate(key.as_str()).map(|g| serde_json::to_value(gate_view(g)).unwrap_or_default()).unwrap_or_default()
    })
}

#[utoipa::path(get, path = "/v1/gates", tag = "gates", responses((status = 200, description = "{items: [{key, version, updated_at, definition}]} in key order")), security(("bearer" = [])))]
pub async fn list(State(app): State<Arc<AppState>>, principal: Principal) -> Result<Response, ApiError> {
    principal.require(Permission::CatalogRead)?;
    let s = app.engine.state();
    let items: Vec<GateView<'_>> = s.gates().map(gate_view).collect();
    json(&serde_json::json!({ "items": items }), s.seq())
}

#[utoipa::path(get, path = "/v1/gates/{key}", tag = "gates", responses((status = 200, description = "{key, version, updated_at, definition}"), (status = 404, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn get(
    State(app): State<Arc<AppState>>,
    ApiPath(key): ApiPath<String>,
    principal: Principal,
) -> Result<Response, ApiError> {
    principal.require(Permission::CatalogRead)?;
    let s = app.engine.state();
    let g = s.gate(&key).ok_or_else(|| not_found(&key))?;
    json(&gate_view(g), s.seq())
}

#[utoipa::path(put, path = "/v1/gates/{key}", tag = "gates", request_body(content = Object, description = "the definition: {enabled?, description?, feature?: {product, feature}, license_required?, strategies: [Unleash strategies], variants?, dependencies?, schedule?: [{at, rollout}]}; key is the path's"), responses((status = 201, description = "created: version 1"), (status = 200, description = "a new version (or unchanged if identical)"), (status = 422, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn put(
    State(app): State<Arc<AppState>>,
    ApiPath(key): ApiPath<String>,
    principal: Principal,
    request_id: RequestId,
    idempotency: IdempotencyKey,
    body: ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    principal.require(Permission::CatalogWrite)?;
    let gate = gate_key(&key)?;
    let spec = spec_for_path(gate.as_str(), body.value)?;
    let status = if app.engine.state().gate(gate.as_str()).is_some() { StatusCode::OK } else { StatusCode::CREATED };
    let ctx = WriteCtx { principal, request_id, idempotency, request_hash: body.request_hash };
    execute(&app, ctx, None, Command::Gates(GateCommand::Put(spec)), status, render_gate(gate)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Only versions older than this one (the `next_before` of the previous page).
    before: Option<u64>,
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/gates/{key}/history", tag = "gates", params(("before" = Option<u64>, Query, description = "versions older than this (next_before of the previous page)"), ("limit" = Option<usize>, Query, description = "1..=500, default 100")), responses((status = 200, description = "{items: [{version, at, actor, change, definition}] newest first, next_before?}"), (status = 404, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn history(
    State(app): State<Arc<AppState>>,
    ApiPath(key): ApiPath<String>,
    principal: Principal,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Response, ApiError> {
    principal.require(Permission::CatalogRead)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("INVALID_QUERY", "limit must be between 1 and 500"));
    }
    let s = app.engine.state();
    let g = s.gate(&key).ok_or_else(|| not_found(&key))?;
    let mut items: Vec<VersionView<'_>> = g
        .history()
        .rev()
        .filter(|v| q.before.is_none_or(|b| v.version < b))
        .take(limit + 1)
        .map(version_view)
        .collect();
    let next_before = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|v| v.version)
    } else {
        None
    };
    json(&serde_json::json!({ "items": items, "next_before": next_before }), s.seq())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    version: u64,
    #[serde(default)]
    reason: Option<String>,
}

#[utoipa::path(post, path = "/v1/gates/{key}/rollback", tag = "gates", request_body(content = Object, description = "{version, reason?}"), responses((status = 200, description = "the gate at its new version, whose definition is that version's"), (status = 404, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn rollback(
    State(app): State<Arc<AppState>>,
    ApiPath(key): ApiPath<String>,
    principal: Principal,
    request_id: RequestId,
    idempotency: IdempotencyKey,
    body: ApiJson<RollbackBody>,
) -> Result<Response, ApiError> {
    principal.require(Permission::CatalogWrite)?;
    let gate = gate_key(&key)?;
    let b = body.value;
    let ctx = WriteCtx { principal, request_id, idempotency, request_hash: body.request_hash };
    let command = Command::Gates(GateCommand::Rollback { key: gate.clone(), version: b.version });
    execute(&app, ctx, b.reason, command, StatusCode::OK, render_gate(gate)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillBody {
    #[serde(default)]
    reason: Option<String>,
}

#[utoipa::path(post, path = "/v1/gates/{key}/kill", tag = "gates", request_body(content = Object, description = "{reason?}"), responses((status = 200, description = "the gate, disabled at a new version: every evaluation answers off (DISABLED) at once"), (status = 404, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn kill(
    State(app): State<Arc<AppState>>,
    ApiPath(key): ApiPath<String>,
    principal: Principal,
    request_id: RequestId,
    idempotency: IdempotencyKey,
    body: ApiJson<KillBody>,
) -> Result<Response, ApiError> {
    principal.require(Permission::CatalogWrite)?;
    let gate = gate_key(&key)?;
    let ctx = WriteCtx { principal, request_id, idempotency, request_hash: body.request_hash };
    let command = Command::Gates(GateCommand::Kill { key: gate.clone() });
    execute(&app, ctx, body.value.reason, command, StatusCode::OK, render_gate(gate)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewParams {
    /// The license id the previous page ended at (its `next_after`).
    after: Option<String>,
    limit: Option<usize>,
}

#[utoipa::path(post, path = "/v1/gates/{key}/preview", tag = "gates", request_body(content = Object, description = "a proposed definition, as for PUT, plus an optional context template {context: {userId?, properties?, …}}; nothing is saved"), params(("after" = Option<String>, Query, description = "license id: the page after it"), ("limit" = Option<usize>, Query, description = "1..=500, default 100")), responses((status = 200, description = "{evaluated, changed, changes: [{license, licensee, before, after, before_variant, after_variant}], next_after?}: the licenses whose answer would change")), security(("bearer" = [])))]
pub async fn preview(
    State(app): State<Arc<AppState>>,
    ApiPath(key): ApiPath<String>,
    principal: Principal,
    ApiQuery(q): ApiQuery<PreviewParams>,
    body: ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    principal.require(Permission::CatalogRead)?;
    principal.require(Permission::LicenseRead)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("INVALID_QUERY", "limit must be between 1 and 500"));
    }
    let gate = gate_key(&key)?;
    let mut body = body.value;
    let context = match body.as_object_mut().and_then(|o| o.remove("context")) {
        Some(c) => serde_path_to_error::deserialize::<_, Context>(c).map_err(|e| {
            let at = e.path().to_string();
            ApiError::unprocessable("INVALID_INPUT", format!("invalid context at '{at}': {}", e.into_inner()))
        })?,
        None => Context::default(),
    };
    let proposed = spec_for_path(gate.as_str(), body)?;
    let scan = app.scan_permit()?;
    let s = app.engine.state();
    let (now, random) = (crate::engine::now(), random_u32());
    // Every license is evaluated: on a blocking thread, not one of the few that serve
    // requests.
    let state = s.clone();
    let p = tokio::task::spawn_blocking(move || {
        let _scan = scan;
        let pq = PreviewQuery { context: &context, now, random, after: q.after.as_deref(), limit };
        tollgate_core::gate::preview(&state, &proposed, pq)
    })
    .await
    .map_err(|e| ApiError::internal(format!("the preview stopped: {e}")))??;
    json(&p, s.seq())
}

pub(crate) fn random_u32() -> u32 {
    u32::from_le_bytes(super::random())
}

/// The import body: the Unleash document itself, or it under `unleash` with a `map`
/// binding some of its features to catalog features.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum ImportBody {
    Mapped(Mapped),
    Bare(serde_json::Value),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapped {
    unleash: serde_json::Value,
    /// Unleash feature name → `PRODUCT/FEATURE`.
    #[serde(default)]
    map: BTreeMap<String, String>,
}

fn feature_ref(gate: &str, text: &str) -> Result<FeatureRef, ApiError> {
    let bad = |why: String| ApiError::unprocessable("INVALID_INPUT", format!("map '{gate}' → '{text}': {why}"));
    let (product, feature) = text.split_once('/').ok_or_else(|| bad("expected PRODUCT/FEATURE".into()))?;
    Ok(FeatureRef {
        product: ProductKey::parse(product).map_err(|e| bad(e.to_string()))?,
        feature: FeatureKey::parse(feature).map_err(|e| bad(e.to_string()))?,
    })
}

#[utoipa::path(post, path = "/v1/gates/import", tag = "gates", request_body(content = Object, description = "an Unleash client features document {version, features, segments}, or {unleash: <that document>, map: {\"<feature name>\": \"PRODUCT/FEATURE\"}}; unmapped gates need no license and evaluate exactly as Unleash"), responses((status = 200, description = "{gates: [key], segments: [id]}: all imported, or nothing (problem)"), (status = 422, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn import(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    request_id: RequestId,
    idempotency: IdempotencyKey,
    body: ApiJson<ImportBody>,
) -> Result<Response, ApiError> {
    principal.require(Permission::CatalogWrite)?;
    let (doc, map) = match body.value {
        ImportBody::Mapped(Mapped { unleash, map }) => (unleash, map),
        ImportBody::Bare(doc) => (doc, BTreeMap::new()),
    };
    let bytes = serde_json::to_vec(&doc).map_err(|e| ApiError::internal(e.to_string()))?;
    let document: FeaturesDocument = tollgate_core::gate::parse_features_document(&bytes)?;
    let mut mappings = BTreeMap::new();
    for (gate, feature) in &map {
        if !document.features.iter().any(|f| &f.name == gate) {
            return Err(ApiError::unprocessable(
                "INVALID_INPUT",
                format!("map names '{gate}', which the document does not define"),
            ));
        }
        mappings.insert(gate.clone(), feature_ref(gate, feature)?);
    }
    let gates: Vec<String> = document.features.iter().map(|f| f.name.clone()).collect();
    let segments: Vec<u32> = document.segments.iter().map(|s| s.id).collect();
    let ctx = WriteCtx { principal, request_id, idempotency, request_hash: body.request_hash };
    let command = Command::Gates(GateCommand::Import(GateImport { document, mappings }));
    let render: crate::engine::Render = Box::new(move |s, _| {
        let versions: BTreeMap<&str, u64> =
            gates.iter().filter_map(|g| s.gate(g).map(|e| (g.as_str(), e.current().version))).collect();
        serde_json::json!({ "gates": gates, "segments": segments, "versions": versions })
    });
    execute(&app, ctx, None, command, StatusCode::OK, render).await
}

/// The ruleset's signed payload: every gate and segment, and the ledger sequence it was
/// read at (an SDK never goes back to an older one).
#[derive(Serialize)]
struct RulesetClaims<'a> {
    iss: &'a str,
    iat: i64,
    seq: u64,
    #[serde(flatten)]
    rules: &'a RulesetDoc,
}

/// An ETag from the definitions alone, so it changes exactly when a gate or segment does.
fn etag_of(rules: &RulesetDoc) -> Result<String, ApiError> {
    let bytes = serde_json::to_vec(rules).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(format!("\"{}\"", hex::encode(&Sha256::digest(&bytes)[..16])))
}

/// True when `If-None-Match` lists `etag` (or is `*`).
pub(crate) fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').map(str::trim).any(|t| t == "*" || t == etag || t.strip_prefix("W/") == Some(etag)))
}

#[utoipa::path(get, path = "/v1/gates/ruleset", tag = "gates", params(("If-None-Match" = Option<String>, Header, description = "the ETag of a previous answer")), responses((status = 200, description = "application/jwt: a compact JWS (EdDSA, typ tollgate-ruleset+jwt, verify with /.well-known/jwks.json) whose payload is {iss, iat, seq, gates, segments, versions}; ETag. A product-scoped token gets its product's gates and the unbound ones, the segments they use, and a disabled stub {key, enabled: false, strategies: []} (no version) of each other product's gate they depend on", content_type = "application/jwt"), (status = 304, description = "If-None-Match matched: unchanged")), security(("bearer" = [])))]
pub async fn ruleset(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    principal.require(Permission::Validate)?;
    let s = app.engine.state();
    let mut rules = tollgate_core::gate::ruleset_of(&s);
    // A product-scoped token gets its product's gates and those bound to no product.
    if let Some(p) = principal.product.as_deref() {
        rules.gates.retain(|g| g.feature.as_ref().is_none_or(|f| f.product.as_str() == p));
        let kept: std::collections::BTreeSet<&str> = rules.gates.iter().map(|g| g.key.as_str()).collect();
        rules.versions.retain(|k, _| kept.contains(k.as_str()));
        // And only the segments those gates use: another product's segments may list
        // its users or licensees.
        let used: std::collections::BTreeSet<u32> =
            rules.gates.iter().flat_map(|g| g.strategies.iter().flat_map(|st| st.segments.iter().copied())).collect();
        rules.segments.retain(|seg| used.contains(&seg.id));
        // A parent of another product, which a kept gate depends on, is off for every
        // subject this token may ask about (its license is of this product, or there
        // is none): served as a disabled stub with no definition, so that the SDK
        // evaluates the dependency as the server's OFREP endpoint does (a missing
        // parent would be "not met", which an `enabled: false` dependency reads
        // otherwise), and shows nothing of the other product's gate but its key.
        let kept: std::collections::BTreeSet<String> = rules.gates.iter().map(|g| g.key.to_string()).collect();
        let hidden: std::collections::BTreeSet<String> = rules
            .gates
            .iter()
            .flat_map(|g| g.dependencies.iter().map(|d| d.feature.clone()))
            .filter(|k| !kept.contains(k) && s.gate(k).is_some())
            .collect();
        // (No version: it would tell the other product's edits, and change this
        // ruleset's ETag at each.)
        for key in hidden {
            let stub = serde_json::from_value(serde_json::json!({"key": key, "enabled": false, "strategies": []}))
                .map_err(|e| ApiError::internal(format!("a stub of gate '{key}': {e}")))?;
            rules.gates.push(stub);
        }
    }
    let etag = etag_of(&rules)?;
    let tag = HeaderValue::from_str(&etag).map_err(|e| ApiError::internal(e.to_string()))?;
    if not_modified(&headers, &etag) {
        let mut res = StatusCode::NOT_MODIFIED.into_response();
        res.headers_mut().insert(header::ETAG, tag);
        return Ok(res);
    }
    let signer = app.keys.current(&app).await?;
    let claims =
        RulesetClaims { iss: &app.keys.issuer, iat: seconds(crate::engine::now()), seq: s.seq(), rules: &rules };
    let jws = signer.sign_claims(TYP_RULESET, &claims).map_err(|e| ApiError::internal(e.to_string()))?;
    let mut res = jws.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/jwt"));
    h.insert(header::ETAG, tag);
    h.insert(super::SEQ_HEADER, HeaderValue::from(s.seq()));
    Ok(res)
}
