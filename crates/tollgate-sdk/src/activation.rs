//! Air-gapped activation, the machine's side.
//!
//! 1. [`activation_request`] makes the request (license key, fingerprint, a random
//!    nonce and a fresh machine key); the application writes it to a file and keeps the
//!    [`MachineSecret`] (e.g. in a 0600 file).
//! 2. An operator elsewhere runs `tollgate offline activate --request FILE --out FILE`.
//! 3. [`verify_license_file`] checks the answer with no network: the server's signature
//!    (from a JWKS shipped with the application), the application's product, this
//!    machine's fingerprint, the nonce and the machine key.
//! 4. To give the license back offline, [`deactivation_proof`] signs a proof with the
//!    machine key; the server accepts it later and lists the token as revoked.

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::SigningKey;
use tollgate_core::token::{
    self, ACTIVATION_REQUEST, ActivationRequest, Claims, DeactivationClaims, Jwks, LicenseFile, TYP_DEACTIVATION,
    TokenError,
};

use crate::offline::{VerifyOptions, timestamp, verify_token_with};

/// The machine's private key for deactivation proofs. `Debug` does not show it.
pub struct MachineSecret([u8; 32]);

impl std::fmt::Debug for MachineSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MachineSecret(<redacted>)")
    }
}

impl MachineSecret {
    /// base64url, for the application to store.
    pub fn to_text(&self) -> String {
        B64.encode(self.0)
    }
    pub fn from_text(s: &str) -> Option<Self> {
        B64.decode(s.trim()).ok()?.try_into().ok().map(MachineSecret)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("no randomness: {0}")]
    Random(String),
    #[error("the license file is refused: {0}")]
    Token(#[from] TokenError),
    #[error("the license file does not answer this request: {0}")]
    Mismatch(&'static str),
}

/// A new activation request for this machine, and the secret to keep beside it.
pub fn activation_request(key: &str, fingerprint: &str) -> Result<(ActivationRequest, MachineSecret), ActivationError> {
    let mut seed = [0u8; 32];
    let mut nonce = [0u8; 18];
    getrandom::fill(&mut seed).map_err(|e| ActivationError::Random(e.to_string()))?;
    getrandom::fill(&mut nonce).map_err(|e| ActivationError::Random(e.to_string()))?;
    let public = SigningKey::from_bytes(&seed).verifying_key();
    let req = ActivationRequest {
        kind: ACTIVATION_REQUEST.into(),
        key: key.into(),
        fingerprint: fingerprint.into(),
        nonce: B64.encode(nonce),
        machine_key: B64.encode(public.as_bytes()),
    };
    Ok((req, MachineSecret(seed)))
}

/// Verifies a license file offline against the request it answers, for `product` (the
/// application's product key, the token's `aud`). The product is not optional: the
/// request carries whatever key the user typed, so without it a license of another,
/// cheaper product of the same vendor would activate this one.
pub fn verify_license_file(
    file: &LicenseFile,
    request: &ActivationRequest,
    jwks: &Jwks,
    product: &str,
    now: Option<SystemTime>,
) -> Result<Claims, ActivationError> {
    let o = VerifyOptions {
        fingerprint: Some(request.fingerprint.clone()),
        audience: Some(product.to_string()),
        now,
        ..VerifyOptions::default()
    };
    let claims = verify_token_with(&file.token, jwks, &o, None)?;
    if claims.nonce.as_deref() != Some(request.nonce.as_str()) {
        return Err(ActivationError::Mismatch("its nonce is not this request's"));
    }
    if claims.cnf.as_ref().and_then(|c| c.key()) != request.machine_key() {
        return Err(ActivationError::Mismatch("it names another machine key"));
    }
    if !claims.license.offline || claims.sub != file.license {
        return Err(ActivationError::Mismatch("it is not an offline license token for this license"));
    }
    Ok(claims)
}

/// A proof, signed with the machine key, that this machine gave its license back.
/// Delete the license file and the secret after making it.
pub fn deactivation_proof(
    file: &LicenseFile,
    secret: &MachineSecret,
    now: Option<SystemTime>,
) -> Result<String, ActivationError> {
    let parsed = token::parse(&file.token, token::TYP_JWT)?;
    let claims: Claims =
        serde_json::from_slice(parsed.payload()).map_err(|e| TokenError::Malformed(format!("claims: {e}")))?;
    let d = DeactivationClaims {
        sub: claims.sub,
        jti: claims.jti,
        fingerprint: claims.license.fingerprint.unwrap_or_default(),
        iat: token::seconds(timestamp(now.unwrap_or_else(SystemTime::now))),
    };
    let payload = serde_json::to_vec(&d).map_err(|e| TokenError::Malformed(e.to_string()))?;
    Ok(token::sign_jws_unkeyed(&SigningKey::from_bytes(&secret.0), TYP_DEACTIVATION, &payload))
}
