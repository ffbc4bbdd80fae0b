//! OpenFeature Remote Evaluation Protocol (open-feature/protocol, `service/openapi.yaml`):
//! `POST /ofrep/v1/evaluate/flags/{key}` and the bulk `POST /ofrep/v1/evaluate/flags`
//! (with `ETag` / `If-None-Match`), so any OpenFeature SDK with an OFREP provider
//! evaluates Tollgate gates.
//!
//! Errors here are OFREP's own bodies (`{key?, errorCode, errorDetails}`), not RFC 9457
//! problems, because OFREP providers parse exactly those; authentication failures stay
//! problems (OFREP leaves 401/403 bodies open).
//!
//! Context mapping, as Unleash's: `targetingKey` → `userId`; `sessionId`,
//! `remoteAddress`, `currentTime`, `environment`, `appName` as they are; `licenseKey`
//! selects the license whose facts the gate's binding checks; every other key is a
//! property (numbers and booleans as text). Values that are objects or arrays are
//! `INVALID_CONTEXT`; an empty `targetingKey` is `TARGETING_KEY_MISSING`.
//!
//! The value of a flag is its on/off answer (boolean), except when the chosen variant
//! carries a payload: then the payload (a string, a number for `number`, the parsed
//! JSON for `json`), so string and object flags resolve too. `variant` is the variant's
//! name, or `on`/`off` when the gate has no variant for the subject.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tollgate_core::gate::{Context, Evaluation, LicenseFacts, LicenseStanding, Reason, evaluate};

use crate::AppState;
use crate::auth::{Permission, Principal};
use crate::extract::ApiPath;
use crate::problem::ApiError;

/// An OFREP error: the status and the body OFREP providers parse.
pub struct OfrepError {
    status: StatusCode,
    key: Option<String>,
    code: &'static str,
    details: String,
}

impl OfrepError {
    fn bad(code: &'static str, details: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, key: None, code, details: details.into() }
    }
    fn for_key(mut self, key: &str) -> Self {
        self.key = Some(key.to_string());
        self
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(rename = "errorCode")]
    error_code: &'a str,
    #[serde(rename = "errorDetails")]
    error_details: &'a str,
}

impl IntoResponse for OfrepError {
    fn into_response(self) -> Response {
        let body = ErrorBody { key: self.key.as_deref(), error_code: self.code, error_details: &self.details };
        json_bytes(self.status, serde_json::to_vec(&body).unwrap_or_default())
    }
}

impl From<ApiError> for OfrepError {
    fn from(e: ApiError) -> Self {
        Self { status: e.status, key: None, code: "GENERAL", details: e.detail }
    }
}

fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    let mut res = (status, body).into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// The request's `context`, as a map; an empty body is an empty context.
fn context_map(body: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, OfrepError> {
    let bytes = body.map_err(|e| OfrepError::bad("PARSE_ERROR", format!("the request body could not be read: {e}")))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| OfrepError::bad("PARSE_ERROR", format!("the request body is not JSON: {e}")))?;
    let Value::Object(mut top) = v else {
        return Err(OfrepError::bad("PARSE_ERROR", "the request body must be a JSON object {\"context\": {…}}"));
    };
    match top.remove("context") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(OfrepError::bad("INVALID_CONTEXT", "context must be a JSON object")),
    }
}

fn text(name: &str, v: Value) -> Result<Option<String>, OfrepError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Bool(b) => Ok(Some(b.to_string())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Array(_) | Value::Object(_) => Err(OfrepError::bad(
            "INVALID_CONTEXT",
            format!("context field '{name}' is an object or array; gates compare text, numbers and booleans"),
        )),
    }
}

/// Maps an OFREP evaluation context onto Unleash's context.
pub fn unleash_context(map: Map<String, Value>) -> Result<Context, OfrepError> {
    let mut ctx = Context::default();
    for (name, value) in map {
        let slot = match name.as_str() {
            "targetingKey" => {
                match &value {
                    Value::String(s) if s.is_empty() => {
                        return Err(OfrepError::bad("TARGETING_KEY_MISSING", "targetingKey is empty"));
                    }
                    Value::String(_) | Value::Null => {}
                    _ => return Err(OfrepError::bad("INVALID_CONTEXT", "targetingKey must be a string")),
                }
                &mut ctx.user_id
            }
            "sessionId" => &mut ctx.session_id,
            "remoteAddress" => &mut ctx.remote_address,
            "currentTime" => &mut ctx.current_time,
            "environment" => &mut ctx.environment,
            "appName" => &mut ctx.app_name,
            "licenseKey" => &mut ctx.license_key,
            _ => {
                if let Some(t) = text(&name, value)? {
                    ctx.properties.insert(name, t);
                }
                continue;
            }
        };
        *slot = text(&name, value)?;
    }
    Ok(ctx)
}

/// What a product-scoped token may see: gates bound to its product, or to none.
fn visible(s: &tollgate_core::State, key: &str, product: Option<&str>) -> bool {
    match (s.gate(key), product) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(g), Some(p)) => g.current().definition.feature.as_ref().is_none_or(|f| f.product.as_str() == p),
    }
}

/// The license facts for the context, hidden when the token may not see that license.
fn facts(
    s: &tollgate_core::State,
    ctx: &Context,
    product: Option<&str>,
    now: tollgate_core::Timestamp,
) -> Option<LicenseFacts> {
    let f = LicenseFacts::for_context(s, ctx, now)?;
    if product.is_some_and(|p| !f.product.is_empty() && f.product != p) {
        return Some(LicenseFacts {
            features: BTreeSet::new(),
            license_id: String::new(),
            licensee: String::new(),
            plan: String::new(),
            product: String::new(),
            standing: LicenseStanding::NotFound,
        });
    }
    Some(f)
}

/// A payload as a typed OFREP value: Unleash payloads are text with a type.
fn payload_value(kind: &str, value: &str) -> Value {
    match kind {
        "number" => {
            serde_json::from_str::<serde_json::Number>(value).map(Value::Number).unwrap_or_else(|_| Value::from(value))
        }
        "json" => serde_json::from_str(value).unwrap_or_else(|_| Value::from(value)),
        _ => Value::from(value),
    }
}

#[derive(Serialize)]
struct Success<'a> {
    key: &'a str,
    value: Value,
    reason: &'static str,
    variant: &'a str,
    metadata: Metadata,
}

#[derive(Serialize)]
struct Metadata {
    /// The gate version that answered.
    version: u64,
    /// The on/off answer, even when `value` is a payload.
    enabled: bool,
    #[serde(rename = "licenseCode", skip_serializing_if = "Option::is_none")]
    license_code: Option<&'static str>,
}

fn success<'a>(key: &'a str, e: &Evaluation<'a>) -> Success<'a> {
    let (value, variant) = match e.variant.payload {
        Some(p) if e.variant.enabled => (payload_value(&p.kind, &p.value), e.variant.name),
        _ if e.variant.enabled => (Value::Bool(e.enabled), e.variant.name),
        _ => (Value::Bool(e.enabled), if e.enabled { "on" } else { "off" }),
    };
    // OpenFeature has no "unlicensed" reason: the flag fell back to off, and the
    // metadata says which license check refused it.
    let reason = match e.reason {
        Reason::Unlicensed => "DEFAULT",
        r => r.as_str(),
    };
    let metadata =
        Metadata { version: e.version, enabled: e.enabled, license_code: e.license_code.map(|c| c.as_str()) };
    Success { key, value, reason, variant, metadata }
}

fn random_u32() -> u32 {
    super::gates::random_u32()
}

#[utoipa::path(post, path = "/ofrep/v1/evaluate/flags/{key}", tag = "openfeature", request_body(content = Object, description = "{context: {targetingKey?, licenseKey?, sessionId?, remoteAddress?, currentTime?, environment?, appName?, …properties}}"), responses((status = 200, description = "{key, value, reason (STATIC, TARGETING_MATCH, SPLIT, DISABLED, DEFAULT), variant, metadata: {version, enabled, licenseCode?}}"), (status = 400, description = "{key, errorCode: PARSE_ERROR | INVALID_CONTEXT | TARGETING_KEY_MISSING, errorDetails}"), (status = 404, description = "{key, errorCode: FLAG_NOT_FOUND, errorDetails}")), security(("bearer" = [])))]
pub async fn evaluate_one(
    State(app): State<Arc<AppState>>,
    ApiPath(key): ApiPath<String>,
    principal: Principal,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match one(&app, &key, &principal, body) {
        Ok(r) => r,
        Err(e) => e.for_key(&key).into_response(),
    }
}

/// What one and every flag are evaluated from: the caller's permission checked, the
/// context parsed, and the subject's license facts in one state at one instant.
struct Subject<'p> {
    ctx: Context,
    state: Arc<tollgate_core::State>,
    product: Option<&'p str>,
    now: tollgate_core::Timestamp,
    license: Option<LicenseFacts>,
}

fn subject<'p>(
    app: &AppState,
    principal: &'p Principal,
    body: Result<Bytes, BytesRejection>,
) -> Result<Subject<'p>, OfrepError> {
    principal.require(Permission::Validate)?;
    let ctx = unleash_context(context_map(body)?)?;
    let state = app.engine.state();
    let product = principal.product.as_deref();
    let now = crate::engine::now();
    let license = facts(&state, &ctx, product, now);
    Ok(Subject { ctx, state, product, now, license })
}

fn one(
    app: &AppState,
    key: &str,
    principal: &Principal,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OfrepError> {
    let Subject { ctx, state: s, product, now, license } = subject(app, principal, body)?;
    let not_found = || OfrepError {
        status: StatusCode::NOT_FOUND,
        key: None,
        code: "FLAG_NOT_FOUND",
        details: format!("no gate with key '{key}'"),
    };
    if !visible(&s, key, product) {
        return Err(not_found());
    }
    let e = evaluate(&*s, key, &ctx, license.as_ref(), now, random_u32()).ok_or_else(not_found)?;
    let body =
        serde_json::to_vec(&success(key, &e)).map_err(|e| OfrepError::from(ApiError::internal(e.to_string())))?;
    Ok(json_bytes(StatusCode::OK, body))
}

#[utoipa::path(post, path = "/ofrep/v1/evaluate/flags", tag = "openfeature", request_body(content = Object, description = "{context: {…}} as for one flag"), params(("If-None-Match" = Option<String>, Header, description = "the ETag of a previous answer")), responses((status = 200, description = "{flags: [{key, value, reason, variant, metadata}]} for every gate the token may see; ETag"), (status = 304, description = "unchanged since that ETag"), (status = 400, description = "{errorCode: PARSE_ERROR | INVALID_CONTEXT | TARGETING_KEY_MISSING, errorDetails}")), security(("bearer" = [])))]
pub async fn evaluate_all(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match bulk(&app, &principal, &headers, body) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

#[derive(Serialize)]
struct Bulk<'a> {
    flags: Vec<Success<'a>>,
}

fn bulk(
    app: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OfrepError> {
    let Subject { ctx, state: s, product, now, license } = subject(app, principal, body)?;
    let mut flags = Vec::new();
    for g in s.gates() {
        let key = g.current().definition.key.as_str();
        if !visible(&s, key, product) {
            continue;
        }
        // A draw of its own for each flag: random gates are independent chances.
        if let Some(e) = evaluate(&*s, key, &ctx, license.as_ref(), now, random_u32()) {
            flags.push(success(key, &e));
        }
    }
    let body = serde_json::to_vec(&Bulk { flags }).map_err(|e| OfrepError::from(ApiError::internal(e.to_string())))?;
    // The answer's own hash: it changes whenever a gate, a segment, the license or the
    // instant changes what the subject gets, and only then.
    let etag = format!("\"{}\"", hex::encode(&Sha256::digest(&body)[..16]));
    let tag = HeaderValue::from_str(&etag).map_err(|e| OfrepError::from(ApiError::internal(e.to_string())))?;
    let mut res = if super::gates::not_modified(headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        json_bytes(StatusCode::OK, body)
    };
    res.headers_mut().insert(header::ETAG, tag);
    Ok(res)
}
