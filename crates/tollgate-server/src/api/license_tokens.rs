//! License tokens: `POST /v1/licenses/{id}/tokens`, and the minting that validation
//! (`"token": true`) and offline activation share.
//!
//! Minting reads the committed state and is not a ledger event (like a validation);
//! only the signing key's expiry high-water mark is persisted, see `crate::keys`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tollgate_core::Timestamp;
use tollgate_core::license::Standing;
use tollgate_core::token::{Claims, Confirmation, LicenseClaim, Limits, TYP_JWT, seconds};

use super::{json, json_response, outside_ledger, replayed};
use crate::AppState;
use crate::auth::{Permission, Principal};
use crate::extract::{ApiJson, ApiPath, IdempotencyKey};
use crate::problem::ApiError;

/// Online tokens are short-lived: five minutes unless asked otherwise.
pub const DEFAULT_ONLINE_TTL: i64 = 300;
/// The longest online token: a day. Longer use is what offline tokens are for.
pub const MAX_ONLINE_TTL: i64 = 86_400;
const MAX_FINGERPRINT: usize = 256;

/// What a token is asked for.
#[derive(Clone, Debug, Default)]
pub struct Mint {
    pub fingerprint: Option<String>,
    pub ttl_seconds: Option<i64>,
    pub offline: bool,
    pub nonce: Option<String>,
    pub cnf: Option<Confirmation>,
    /// The state and instant to judge the license at: a validation's own, so that its
    /// answer and its token speak for the same moment. `None`, and always for an
    /// offline token: the latest, now.
    pub at: Option<(Arc<tollgate_core::State>, tollgate_core::Timestamp)>,
}

pub struct Minted {
    pub token: String,
    pub claims: Claims,
    /// The key that signed it.
    pub kid: String,
}

fn conflict(code: &'static str, detail: String) -> ApiError {
    ApiError::new(axum::http::StatusCode::CONFLICT, code, detail)
}

/// Signs a token for a license as it stands now.
pub async fn mint(app: &Arc<AppState>, license_id: &str, m: Mint) -> Result<Minted, ApiError> {
    if let Some(fp) = &m.fingerprint
        && (fp.is_empty() || fp.len() > MAX_FINGERPRINT || fp.chars().any(char::is_control))
    {
        return Err(ApiError::unprocessable("INVALID_INPUT", "fingerprint must be 1 to 256 bytes of printable text"));
    }
    if m.ttl_seconds.is_some_and(|t| t < 1) {
        return Err(ApiError::unprocessable("INVALID_INPUT", "ttl_seconds must be positive"));
    }
    // Held until the expiry is noted: a rotation meanwhile would not see it.
    let (signer, _no_rotation) = app.keys.signer_for_minting(app).await?;
    // An offline token, which lasts days, is judged on the latest state whatever the
    // validation saw: a suspension that landed since must not get one.
    let (s, now) = match m.at {
        Some(at) if !m.offline => at,
        _ => (app.engine.state(), crate::engine::now()),
    };
    let l = s
        .license(license_id)
        .ok_or_else(|| ApiError::not_found("LICENSE_NOT_FOUND", format!("no license with id '{license_id}'")))?;
    // The plan as this license has it: its overrides add and remove features and
    // change limits, exactly as `/v1/validate` answers.
    let effective = tollgate_core::models::effective(&s, l)
        .map_err(|_| ApiError::internal(format!("license '{license_id}' names a plan that does not exist")))?;
    let plan = effective.plan;
    let standing = l.standing(plan, now);
    if !matches!(standing, Standing::Active | Standing::Grace { .. }) {
        return Err(conflict(
            "LICENSE_NOT_VALID",
            format!("license '{license_id}' is {}; no token is issued for it", standing.as_str()),
        ));
    }
    let now_s = seconds(now);
    let mut exp = if m.offline {
        if m.fingerprint.is_none() {
            return Err(ApiError::unprocessable(
                "FINGERPRINT_REQUIRED",
                "an offline token is bound to a machine: send its fingerprint",
            ));
        }
        let Some(days) = plan.offline_days else {
            return Err(conflict(
                "OFFLINE_NOT_ALLOWED",
                format!("plan '{}' allows no offline use; set its offline_days", plan.key),
            ));
        };
        // Bound to an activated machine, which counts against the license's machine
        // limit: a floating lease is too short-lived to stand behind a token that lasts
        // days, and would let every machine that once held one keep working offline.
        if let Some(fp) = &m.fingerprint
            && !s.models(license_id).is_some_and(|models| models.machines.contains_key(fp.as_str()))
        {
            return Err(conflict(
                "MACHINE_NOT_ACTIVATED",
                format!(
                    "an offline token is issued only to an activated machine; activate '{fp}' first (POST /v1/licenses/{license_id}/machines)"
                ),
            ));
        }
        let max = i64::from(days) * 86_400;
        now_s + m.ttl_seconds.map_or(max, |t| t.min(max))
    } else {
        // A token bound to a machine speaks for that machine as validation would: one
        // activated (or holding a lease).
        if let Some(fp) = &m.fingerprint
            && !s.models(license_id).is_some_and(|models| models.knows_fingerprint(fp, now))
        {
            return Err(conflict(
                "FINGERPRINT_NOT_ACTIVATED",
                format!(
                    "'{fp}' is not activated on license '{license_id}' and holds no lease; no token is bound to it"
                ),
            ));
        }
        now_s + m.ttl_seconds.unwrap_or(DEFAULT_ONLINE_TTL).min(MAX_ONLINE_TTL)
    };
    // Online or offline, not to a machine beyond a machine limit lowered since it was
    // activated.
    if let Some(fp) = &m.fingerprint
        && s.models(license_id).is_some_and(|models| !models.machine_within(fp, effective.max_machines()))
    {
        return Err(conflict(
            "TOO_MANY_MACHINES",
            format!(
                "license '{license_id}' has more machines activated than its limit allows, and '{fp}' is among the newest beyond it; deactivate machines first"
            ),
        ));
    }
    // A token never outlives the license it speaks for.
    let grace_end = l.grace_ends_at(plan);
    if let Some(g) = grace_end {
        exp = exp.min(seconds(g));
    }
    let claims = Claims {
        iss: app.keys.issuer.clone(),
        sub: l.id.to_string(),
        aud: l.product.to_string(),
        iat: now_s,
        nbf: now_s,
        exp,
        jti: crate::auth::random_hex(16),
        license: LicenseClaim {
            status: standing.as_str().to_string(),
            plan: plan.key.to_string(),
            features: effective.features().map(|f| f.to_string()).collect(),
            limits: Limits { max_machines: effective.max_machines(), max_users: effective.max_users() },
            fingerprint: m.fingerprint,
            expires_at: l.expires_at.map(seconds),
            grace_ends_at: grace_end.filter(|g| Some(*g) != l.expires_at).map(seconds),
            offline: m.offline,
        },
        nonce: m.nonce,
        cnf: m.cnf,
    };
    app.keys.note_expiry(app, &signer.kid, exp)?;
    let token = signer.sign_claims(TYP_JWT, &claims).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Minted { token, claims, kid: signer.kid.clone() })
}

pub fn instant(secs: i64) -> Timestamp {
    Timestamp::from_millis(secs.saturating_mul(1000)).unwrap_or_else(crate::engine::now)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    /// Binds the token to this activated machine (required with `offline`).
    #[serde(default)]
    fingerprint: Option<String>,
    /// Online tokens: at most a day (default 5 minutes); offline ones last the plan's
    /// `offline_days` at most.
    #[serde(default)]
    #[schema(minimum = 1)]
    ttl_seconds: Option<i64>,
    #[serde(default)]
    offline: bool,
}

#[derive(Serialize)]
pub struct TokenResponse {
    pub token: String,
    pub expires_at: Timestamp,
    pub jti: String,
}

#[utoipa::path(post, path = "/v1/licenses/{id}/tokens", tag = "tokens", request_body(content = Option<TokenBody>, description = "may be left out"), responses((status = 200, description = "{token, expires_at, jti}: a compact JWS (EdDSA) to verify with /.well-known/jwks.json"), (status = 404, body = crate::problem::Problem), (status = 409, description = "LICENSE_NOT_VALID, OFFLINE_NOT_ALLOWED, MACHINE_NOT_ACTIVATED, FINGERPRINT_NOT_ACTIVATED, TOO_MANY_MACHINES, MINTED_TOKEN_UNUSABLE", body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn issue(
    State(app): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    principal: Principal,
    idempotency: IdempotencyKey,
    body: ApiJson<TokenBody>,
) -> Result<Response, ApiError> {
    principal.require(Permission::LicenseWrite)?;
    // A repeat gets the token minted first (the same `jti`, the same bytes), not another
    // one. The claim keeps the token's signed payload, not the token: Ed25519 signatures
    // are deterministic, so signing the payload again gives the token back, and a stored
    // record (or a backup) holds no credential. A repeat once that token can no longer
    // be used (expired, its license no longer in good standing) is refused instead.
    let idem = idempotency.0.map(|k| outside_ledger::claim_key("license-token", &principal.token_id, &k));
    let request = outside_ledger::request(&format!("/v1/licenses/{id}/tokens"), &body.request_hash);
    let replay = |earlier: outside_ledger::Claim| -> Result<Response, ApiError> {
        outside_ledger::check_same(&earlier, &request)?;
        let token = again(&app, &id, &earlier.answer)?;
        let body = serde_json::to_vec(&token).map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(replayed(json_response(StatusCode::OK, body, app.engine.state().seq())))
    };
    if let Some(earlier) = idem.as_deref().map(|mk| outside_ledger::find(&app, mk)).transpose()?.flatten() {
        return replay(earlier);
    }
    let b = body.value;
    let m = mint(
        &app,
        &id,
        Mint { fingerprint: b.fingerprint, ttl_seconds: b.ttl_seconds, offline: b.offline, ..Mint::default() },
    )
    .await?;
    let seq = app.engine.state().seq();
    let signed = serde_json::json!({
        "kid": m.kid,
        "payload": m.token.split('.').nth(1).unwrap_or_default(),
        "exp": m.claims.exp,
        "jti": m.claims.jti,
    });
    let answer = TokenResponse { expires_at: instant(m.claims.exp), jti: m.claims.jti, token: m.token };
    if let Some(mk) = &idem {
        let mine = outside_ledger::Claim { request, answer: signed };
        let claimed = outside_ledger::claim(&mut **app.reader.lock().unwrap_or_else(|p| p.into_inner()), mk, &mine)?;
        if claimed != mine {
            // Another request with this key minted first: answer with its token.
            return replay(claimed);
        }
    }
    json(&answer, seq)
}

/// The token a claim recorded, signed again, unless it can no longer be used.
fn again(app: &AppState, license: &str, signed: &serde_json::Value) -> Result<TokenResponse, ApiError> {
    let unusable = |why: String| {
        conflict(
            "MINTED_TOKEN_UNUSABLE",
            format!("the token this Idempotency-Key minted {why}; mint a new one with a new key"),
        )
    };
    let broken = || ApiError::internal("a stored idempotency record of a minted token is incomplete");
    let (Some(kid), Some(payload), Some(exp), Some(jti)) =
        (signed["kid"].as_str(), signed["payload"].as_str(), signed["exp"].as_i64(), signed["jti"].as_str())
    else {
        return Err(broken());
    };
    let now = crate::engine::now();
    if exp <= seconds(now) {
        return Err(unusable("has expired".into()));
    }
    let state = app.engine.state();
    let Some(l) = state.license(license) else {
        return Err(unusable(format!("speaks for license {license}, which this ledger does not hold")));
    };
    let Some(plan) = state.plan(l.plan.as_str()) else { return Err(broken()) };
    match l.standing(plan, now) {
        Standing::Active | Standing::Grace { .. } => {}
        other => return Err(unusable(format!("speaks for a license that is now {}", other.as_str()))),
    }
    let Some(signer) = app.keys.signer_of(app, kid)? else {
        return Err(unusable(format!("was signed by key {kid}, which this server does not hold")));
    };
    let payload = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).map_err(|_| broken())?
    };
    Ok(TokenResponse { token: signer.sign_jws(TYP_JWT, &payload), expires_at: instant(exp), jti: jti.to_string() })
}

/// The token fields added to a validation answer.
#[derive(Serialize)]
pub struct TokenPart {
    pub token: String,
    pub token_expires_at: Timestamp,
}

impl Minted {
    pub fn part(self) -> TokenPart {
        TokenPart { token_expires_at: instant(self.claims.exp), token: self.token }
    }
}
