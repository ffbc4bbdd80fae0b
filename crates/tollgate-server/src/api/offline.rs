//! Air-gapped activation: an activation request (license key, machine fingerprint,
//! nonce, machine public key) becomes a signed license file bound to that machine; a
//! machine that gives its license back offline brings a deactivation proof signed with
//! its own key, accepted here later and recorded as `LicenseTokenRevoked`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use tollgate_core::token::{
    ACTIVATION_REQUEST, ActivationRequest, Confirmation, Jwks, LICENSE_FILE, LicenseFile, verify_deactivation,
};
use tollgate_core::validate::{Scope, validate};
use tollgate_core::{Command, Timestamp};

use super::license_tokens::{Mint, mint};
use super::{WriteCtx, execute, json};
use crate::AppState;
use crate::auth::{Permission, Principal};
use crate::extract::{ApiJson, IdempotencyKey, RequestId};
use crate::problem::ApiError;

#[utoipa::path(post, path = "/v1/offline/activate", tag = "offline", request_body(content = Object, description = "an activation request file: {type: tollgate.activation-request.v1, key, fingerprint, nonce, machine_key}"), responses((status = 200, description = "a license file {type, license, token}: an offline token bound to the fingerprint"), (status = 409, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn activate(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    request_id: RequestId,
    body: ApiJson<ActivationRequest>,
) -> Result<Response, ApiError> {
    principal.require(Permission::LicenseWrite)?;
    let req = body.value;
    if req.kind != ACTIVATION_REQUEST {
        return Err(ApiError::unprocessable("INVALID_INPUT", format!("type must be '{ACTIVATION_REQUEST}'")));
    }
    if req.nonce.len() < 16 || req.nonce.len() > 128 {
        return Err(ApiError::unprocessable("INVALID_INPUT", "nonce must be 16 to 128 characters"));
    }
    let jwk = req
        .machine_jwk()
        .ok_or_else(|| ApiError::unprocessable("INVALID_INPUT", "machine_key is not a base64url Ed25519 public key"))?;
    let id = {
        let s = app.engine.state();
        let v = validate(
            &s,
            &req.key,
            Scope { product: principal.product.as_deref(), ..Scope::default() },
            crate::engine::now(),
        );
        match v.license {
            Some(l) => l.id.to_string(),
            None => return Err(ApiError::not_found("LICENSE_NOT_FOUND", "no license with that key")),
        }
    };
    // Activation activates the machine, within the license's machine limit, as the
    // online endpoint does (a machine activated already stays as it is).
    let fingerprint = tollgate_core::machine::Fingerprint::parse(&req.fingerprint)
        .map_err(|r| ApiError::unprocessable(r.code, r.detail))?;
    let machine = tollgate_core::machine::MachineSpec { fingerprint, name: None, components: Vec::new() };
    let license = tollgate_core::ids::LicenseId::parse(&id).map_err(|e| ApiError::internal(e.to_string()))?;
    let meta = tollgate_core::Meta {
        actor: principal.actor(),
        reason: Some("offline activation".into()),
        request_id: request_id.0,
    };
    let command = Command::Models(tollgate_core::models::ModelCommand::ActivateMachine { license, machine });
    app.engine.submit(command, meta, 201, None, Box::new(|_, _| serde_json::Value::Null)).await?;
    let m = Mint {
        fingerprint: Some(req.fingerprint),
        offline: true,
        nonce: Some(req.nonce),
        cnf: Some(Confirmation { jwk }),
        ..Mint::default()
    };
    let minted = mint(&app, &id, m).await?;
    let file = LicenseFile { kind: LICENSE_FILE.into(), license: id, token: minted.token };
    json(&file, app.engine.state().seq())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeactivateBody {
    /// The license file's token (or the whole license file's `token` field).
    token: String,
    proof: String,
}

#[utoipa::path(post, path = "/v1/offline/deactivate", tag = "offline", request_body(content = Object, description = "{token, proof}: the license file's token and the machine's signed deactivation proof"), responses((status = 200, description = "{license, jti}: the token is revoked and listed in the revocation feed"), (status = 422, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn deactivate(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    request_id: RequestId,
    idempotency: IdempotencyKey,
    body: ApiJson<DeactivateBody>,
) -> Result<Response, ApiError> {
    principal.require(Permission::LicenseWrite)?;
    // Every key the ledger ever created: a proof may come long after its key retired.
    let mut jwks = Jwks::default();
    for k in app.engine.state().keys().all() {
        if let Some(v) = k.verifying_key() {
            jwks.insert(&k.kid, v);
        }
    }
    let (claims, proof) = verify_deactivation(&body.value.proof, &body.value.token, &jwks)
        .map_err(|e| ApiError::unprocessable(e.code(), format!("the deactivation proof is refused: {e}")))?;
    let license = tollgate_core::ids::LicenseId::parse(&claims.sub)
        .map_err(|e| ApiError::unprocessable("INVALID_INPUT", e.to_string()))?;
    // `iat` is in whole seconds, cut down: the machine activated in the same second as
    // its token (offline activation does both at once) was activated before it.
    let issued_at = Timestamp::from_millis(claims.iat.saturating_add(1).saturating_mul(1000).saturating_sub(1));
    let command =
        Command::RevokeToken { fingerprint: Some(proof.fingerprint), jti: claims.jti.clone(), license, issued_at };
    let ctx = WriteCtx { principal, request_id, idempotency, request_hash: body.request_hash };
    let (sub, jti) = (claims.sub, claims.jti);
    let render =
        Box::new(move |_: &tollgate_core::State, _: Timestamp| serde_json::json!({ "license": sub, "jti": jti }));
    execute(&app, ctx, Some("offline deactivation".into()), command, StatusCode::OK, render).await
}
