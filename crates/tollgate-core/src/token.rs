//! License tokens: compact JWS (RFC 7515) signed with EdDSA over Ed25519 (RFC 8037),
//! served keys as an RFC 7517 JWKS, and the one verification the server, the SDK and
//! the CLI share.
//!
//! Why by hand over `ed25519-dalek` and base64url rather than a JWT crate such as
//! `jsonwebtoken`: core must stay pure, and verification takes `now` as an argument
//! (that crate reads the system clock for `exp`/`nbf`), and we accept exactly one
//! algorithm, EdDSA, so a crate that brings RSA and ECDSA stacks only widens the
//! surface an algorithm-confusion attack needs. A compact JWS is three base64url parts
//! and one signature; interoperability is proven by verifying our tokens with PyJWT
//! in the server's test suite.
//!
//! Every refusal is its own [`TokenError`] variant, so callers can tell a forged token
//! from an expired one.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::timestamp::Timestamp;

/// The only `alg` Tollgate signs with and accepts.
pub const ALG: &str = "EdDSA";
/// `typ` of license tokens.
pub const TYP_JWT: &str = "JWT";
/// `typ` of the signed revocation feed.
pub const TYP_REVOCATIONS: &str = "tollgate-revocations+jwt";
/// `typ` of a machine's offline deactivation proof.
pub const TYP_DEACTIVATION: &str = "tollgate-deactivation+jwt";
/// Default clock-skew allowance for `exp` and `nbf`, in seconds.
pub const DEFAULT_LEEWAY_SECONDS: i64 = 60;
/// Longest token we parse; a license token is well under 2 KiB.
const MAX_TOKEN: usize = 64 * 1024;
/// Longest revocation feed page we parse: a full page (a thousand entries with the
/// longest fingerprints) is about half a MiB.
pub const MAX_FEED: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a compact JWS: {0}")]
    Malformed(String),
    #[error("algorithm '{0}' is not accepted: only EdDSA is")]
    Algorithm(String),
    #[error("the token is of type '{found}', expected '{expected}'")]
    WrongType { expected: &'static str, found: String },
    #[error("no key with kid '{0}' in the key set")]
    UnknownKid(String),
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the token is for audience '{found}', expected '{expected}'")]
    WrongAudience { expected: String, found: String },
    #[error("the token expired at {exp} (now {now}, leeway {leeway} s)")]
    Expired { exp: i64, now: i64, leeway: i64 },
    #[error("the token is not valid before {nbf} (now {now}, leeway {leeway} s)")]
    NotYetValid { nbf: i64, now: i64, leeway: i64 },
    #[error("the token is bound to another machine fingerprint")]
    FingerprintMismatch,
    #[error("the {what} '{id}' was revoked (revocation feed)")]
    Revoked { what: &'static str, id: String },
}

impl TokenError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Malformed(_) => "TOKEN_MALFORMED",
            TokenError::Algorithm(_) => "TOKEN_ALGORITHM",
            TokenError::WrongType { .. } => "TOKEN_TYPE",
            TokenError::UnknownKid(_) => "TOKEN_UNKNOWN_KID",
            TokenError::BadSignature => "TOKEN_BAD_SIGNATURE",
            TokenError::WrongAudience { .. } => "TOKEN_WRONG_AUDIENCE",
            TokenError::Expired { .. } => "TOKEN_EXPIRED",
            TokenError::NotYetValid { .. } => "TOKEN_NOT_YET_VALID",
            TokenError::FingerprintMismatch => "TOKEN_FINGERPRINT_MISMATCH",
            TokenError::Revoked { .. } => "TOKEN_REVOKED",
        }
    }
}

fn malformed(s: impl Into<String>) -> TokenError {
    TokenError::Malformed(s.into())
}

/// One public key as RFC 7517 / RFC 8037 describe it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    /// Defaulted (with `x`) so that keys of other types in a JWKS decode and are ignored.
    #[serde(default)]
    pub crv: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    #[serde(default)]
    pub kid: String,
    #[serde(default)]
    pub x: String,
}

impl Jwk {
    pub fn ed25519(kid: &str, key: &VerifyingKey) -> Self {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            alg: Some(ALG.into()),
            use_: Some("sig".into()),
            kid: kid.into(),
            x: B64.encode(key.as_bytes()),
        }
    }

    /// The Ed25519 key, if this JWK is one we may verify with.
    fn verifying_key(&self) -> Option<VerifyingKey> {
        if self.kty != "OKP" || self.crv != "Ed25519" || self.alg.as_deref().is_some_and(|a| a != ALG) {
            return None;
        }
        if self.use_.as_deref().is_some_and(|u| u != "sig") {
            return None;
        }
        let bytes: [u8; 32] = B64.decode(&self.x).ok()?.try_into().ok()?;
        VerifyingKey::from_bytes(&bytes).ok()
    }
}

/// The RFC 7638 thumbprint of an Ed25519 public key: Tollgate's `kid`.
pub fn thumbprint(key: &VerifyingKey) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, B64.encode(key.as_bytes()));
    B64.encode(Sha256::digest(canonical.as_bytes()))
}

#[derive(Serialize, Deserialize)]
struct JwksDoc {
    keys: Vec<Jwk>,
}

/// A JWKS with its keys decoded once, so verification does no point decompression.
/// Keys that are not Ed25519 signing keys are dropped on decode, as RFC 7517 lets a
/// reader ignore what it does not understand.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(from = "JwksDoc", into = "JwksDoc")]
pub struct Jwks {
    keys: BTreeMap<String, (Jwk, VerifyingKey)>,
}

impl From<JwksDoc> for Jwks {
    fn from(doc: JwksDoc) -> Self {
        let keys = doc.keys.into_iter().filter_map(|j| j.verifying_key().map(|k| (j.kid.clone(), (j, k)))).collect();
        Jwks { keys }
    }
}

impl From<Jwks> for JwksDoc {
    fn from(j: Jwks) -> Self {
        JwksDoc { keys: j.keys.into_values().map(|(j, _)| j).collect() }
    }
}

impl Jwks {
    pub fn insert(&mut self, kid: &str, key: VerifyingKey) {
        self.keys.insert(kid.to_string(), (Jwk::ed25519(kid, &key), key));
    }
    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.get(kid).map(|(_, k)| k)
    }
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }
    pub fn len(&self) -> usize {
        self.keys.len()
    }
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// A private key and its `kid`.
pub struct TokenSigner {
    pub kid: String,
    key: SigningKey,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// The `kid` is the key's RFC 7638 thumbprint.
    pub fn new(key: SigningKey) -> Self {
        Self { kid: thumbprint(&key.verifying_key()), key }
    }
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Signs any payload as a compact JWS of the given `typ`.
    pub fn sign_jws(&self, typ: &str, payload: &[u8]) -> String {
        let header = Header { alg: ALG.into(), typ: Some(typ.into()), kid: Some(self.kid.clone()) };
        sign_with(&self.key, &header, payload)
    }

    pub fn sign_claims<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, TokenError> {
        let payload = serde_json::to_vec(claims).map_err(|e| malformed(e.to_string()))?;
        Ok(self.sign_jws(typ, &payload))
    }
}

fn sign_with(key: &SigningKey, header: &Header, payload: &[u8]) -> String {
    // A header of three strings always serializes.
    let h = serde_json::to_vec(header).unwrap_or_default();
    let mut out = String::with_capacity(payload.len() * 4 / 3 + 200);
    B64.encode_string(&h, &mut out);
    out.push('.');
    B64.encode_string(payload, &mut out);
    let sig = key.sign(out.as_bytes());
    out.push('.');
    B64.encode_string(sig.to_bytes(), &mut out);
    out
}

/// Signs with a key that has no `kid` (a machine's own key, for deactivation proofs).
pub fn sign_jws_unkeyed(key: &SigningKey, typ: &str, payload: &[u8]) -> String {
    sign_with(key, &Header { alg: ALG.into(), typ: Some(typ.into()), kid: None }, payload)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
}

/// A compact JWS split and decoded, its signature not yet checked.
pub struct Parsed<'t> {
    pub header: Header,
    signing_input: &'t str,
    payload: Vec<u8>,
    signature: Signature,
}

impl Parsed<'_> {
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
    pub fn verify_with(&self, key: &VerifyingKey) -> Result<(), TokenError> {
        key.verify_strict(self.signing_input.as_bytes(), &self.signature).map_err(|_| TokenError::BadSignature)
    }
}

/// Splits and decodes a compact JWS and refuses any `alg` but EdDSA and a `typ` other
/// than `typ`, before any key is looked at.
pub fn parse<'t>(token: &'t str, typ: &'static str) -> Result<Parsed<'t>, TokenError> {
    let max = if typ == TYP_REVOCATIONS { MAX_FEED } else { MAX_TOKEN };
    if token.len() > max {
        return Err(malformed(format!("longer than {} KiB", max / 1024)));
    }
    let (signing_input, sig) = token.rsplit_once('.').ok_or_else(|| malformed("expected three dot-separated parts"))?;
    let (h, p) = signing_input.split_once('.').ok_or_else(|| malformed("expected three dot-separated parts"))?;
    if p.contains('.') {
        return Err(malformed("expected three dot-separated parts"));
    }
    let header_bytes = B64.decode(h).map_err(|_| malformed("the header is not base64url"))?;
    #[derive(Deserialize)]
    struct RawHeader {
        alg: Option<String>,
        typ: Option<String>,
        kid: Option<String>,
        crit: Option<serde_json::Value>,
    }
    let raw: RawHeader =
        serde_json::from_slice(&header_bytes).map_err(|e| malformed(format!("the header is not JSON: {e}")))?;
    let alg = raw.alg.ok_or_else(|| malformed("the header has no alg"))?;
    if alg != ALG {
        return Err(TokenError::Algorithm(alg));
    }
    if raw.crit.is_some() {
        return Err(malformed("critical header extensions are not supported"));
    }
    let found = raw.typ.clone().unwrap_or_default();
    if !found.eq_ignore_ascii_case(typ) {
        return Err(TokenError::WrongType { expected: typ, found });
    }
    let payload = B64.decode(p).map_err(|_| malformed("the payload is not base64url"))?;
    let sig_bytes: [u8; 64] = B64
        .decode(sig)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| malformed("the signature is not 64 bytes of base64url"))?;
    Ok(Parsed {
        header: Header { alg, typ: raw.typ, kid: raw.kid },
        signing_input,
        payload,
        signature: Signature::from_bytes(&sig_bytes),
    })
}

/// Checks a JWS's signature against the key its `kid` names in `jwks`; returns the
/// header and payload.
pub fn verify_jws(token: &str, typ: &'static str, jwks: &Jwks) -> Result<(Header, Vec<u8>), TokenError> {
    let parsed = parse(token, typ)?;
    let kid = parsed.header.kid.as_deref().ok_or_else(|| TokenError::UnknownKid(String::new()))?;
    let key = jwks.get(kid).ok_or_else(|| TokenError::UnknownKid(kid.to_string()))?;
    parsed.verify_with(key)?;
    Ok((parsed.header, parsed.payload))
}

/// What a license token says about the license at the time it was signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseClaim {
    /// `active` (grace included), `suspended`, `revoked` or `expired`.
    pub status: String,
    pub plan: String,
    pub features: Vec<String>,
    pub limits: Limits,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The license's own expiry (seconds since the epoch), if it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// The end of its grace window, if it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_ends_at: Option<i64>,
    /// True for a token meant to be used without contact (bound to `fingerprint`).
    #[serde(default)]
    pub offline: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_machines: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_users: Option<u32>,
}

/// The claims of a license token (RFC 7519 registered claims plus `license`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The license id.
    pub sub: String,
    /// The product key.
    pub aud: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    pub license: LicenseClaim,
    /// The activation request's nonce, in a license file made for an air-gapped machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The machine's public key (RFC 7800 `cnf` with a `jwk`), in a license file, so
    /// the machine can later sign a deactivation proof the server can check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    pub jwk: Jwk,
}

impl Confirmation {
    pub fn key(&self) -> Option<VerifyingKey> {
        self.jwk.verifying_key()
    }
}

impl Claims {
    pub fn is_within(&self, now: Timestamp, leeway: i64) -> bool {
        let now = seconds(now);
        now <= self.exp.saturating_add(leeway) && now.saturating_add(leeway) >= self.nbf
    }
    pub fn has_feature(&self, f: &str) -> bool {
        self.license.features.iter().any(|x| x == f)
    }
}

pub fn seconds(t: Timestamp) -> i64 {
    t.millis().div_euclid(1000)
}

/// The revocation state a client has learned from the signed feed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocations {
    /// The ledger size the feed was current at: the next `since`.
    pub tree_size: u64,
    /// The ledger's Merkle root at `tree_size` (base64), as the feed signed it: sent
    /// with the next `since`, so that a server whose ledger no longer has that history
    /// (restored to an earlier point) says so instead of answering from another one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    pub licenses: BTreeSet<String>,
    pub jtis: BTreeSet<String>,
    /// License id → machine fingerprint → when it was deactivated (seconds): tokens
    /// bound to that machine and issued until then are void.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub machines: BTreeMap<String, BTreeMap<String, i64>>,
}

impl Revocations {
    /// Folds a (verified) feed page in: revoked and suspended licenses are added,
    /// reinstated ones removed, revoked token ids and deactivated machines added.
    pub fn apply(&mut self, list: &RevocationList) {
        for l in &list.reinstated {
            self.licenses.remove(l);
        }
        self.licenses.extend(list.licenses.iter().cloned());
        self.jtis.extend(list.jtis.iter().cloned());
        for m in &list.machines {
            let at = self.machines.entry(m.license.clone()).or_default().entry(m.fingerprint.clone()).or_insert(m.at);
            *at = (*at).max(m.at);
        }
        if list.tree_size >= self.tree_size && list.root.is_some() {
            self.root = list.root.clone();
        }
        self.tree_size = self.tree_size.max(list.tree_size);
    }

    /// Why these claims are revoked, if they are: their license, their own id, or the
    /// machine they are bound to (deactivated after they were issued).
    pub fn refuses(&self, c: &Claims) -> Option<TokenError> {
        if self.licenses.contains(&c.sub) {
            return Some(TokenError::Revoked { what: "license", id: c.sub.clone() });
        }
        if self.jtis.contains(&c.jti) {
            return Some(TokenError::Revoked { what: "token", id: c.jti.clone() });
        }
        let fp = c.license.fingerprint.as_deref()?;
        let at = self.machines.get(&c.sub)?.get(fp)?;
        (c.iat <= *at).then(|| TokenError::Revoked { what: "machine", id: fp.to_string() })
    }
}

/// A machine deactivated on a license: tokens bound to it and issued at or before `at`
/// (seconds) are void; it may be activated again, and then gets new tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineRevocation {
    pub license: String,
    pub fingerprint: String,
    pub at: i64,
}

/// The payload of `GET /v1/revocations?since=SEQ`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationList {
    pub iss: String,
    pub iat: i64,
    pub since: u64,
    pub tree_size: u64,
    /// The ledger's Merkle root at `tree_size` (base64, RFC 6962), when the server
    /// holds that size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// Licenses revoked or suspended (as they stand now) that changed since `since`.
    pub licenses: Vec<String>,
    /// Licenses reinstated since `since` (suspension lifted).
    #[serde(default)]
    pub reinstated: Vec<String>,
    /// Token ids revoked since `since` (offline deactivations).
    pub jtis: Vec<String>,
    /// Machines deactivated since `since`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub machines: Vec<MachineRevocation>,
    /// The page is full: the feed goes on from `tree_size`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
}

impl RevocationList {
    pub fn verify(token: &str, jwks: &Jwks) -> Result<Self, TokenError> {
        let (_, payload) = verify_jws(token, TYP_REVOCATIONS, jwks)?;
        serde_json::from_slice(&payload).map_err(|e| malformed(format!("revocation list: {e}")))
    }
}

/// What a verifier checks besides the signature.
#[derive(Clone, Copy, Debug)]
pub struct Verify<'a> {
    pub now: Timestamp,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway: i64,
    /// The product key the token must be for; `None` skips the check.
    pub audience: Option<&'a str>,
    /// This machine's fingerprint. A token bound to a fingerprint is refused without it.
    pub fingerprint: Option<&'a str>,
    pub revocations: Option<&'a Revocations>,
}

impl<'a> Verify<'a> {
    pub fn at(now: Timestamp) -> Self {
        Self { now, leeway: DEFAULT_LEEWAY_SECONDS, audience: None, fingerprint: None, revocations: None }
    }
}

/// Verifies a license token: EdDSA only, a known `kid`, the signature, then the
/// claims in a fixed order (audience, time, fingerprint, revocation).
pub fn verify(token: &str, jwks: &Jwks, v: &Verify<'_>) -> Result<Claims, TokenError> {
    let (_, payload) = verify_jws(token, TYP_JWT, jwks)?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|e| malformed(format!("claims: {e}")))?;
    check_claims(&claims, v)?;
    Ok(claims)
}

pub fn check_claims(c: &Claims, v: &Verify<'_>) -> Result<(), TokenError> {
    if let Some(aud) = v.audience
        && c.aud != aud
    {
        return Err(TokenError::WrongAudience { expected: aud.into(), found: c.aud.clone() });
    }
    // Before the times: a revoked license is revoked, whether or not this token has
    // expired too (an SDK keeps a license's facts through an outage unless it is).
    if let Some(refused) = v.revocations.and_then(|r| r.refuses(c)) {
        return Err(refused);
    }
    let now = seconds(v.now);
    if now > c.exp.saturating_add(v.leeway) {
        return Err(TokenError::Expired { exp: c.exp, now, leeway: v.leeway });
    }
    if now.saturating_add(v.leeway) < c.nbf {
        return Err(TokenError::NotYetValid { nbf: c.nbf, now, leeway: v.leeway });
    }
    if let Some(bound) = &c.license.fingerprint
        && v.fingerprint != Some(bound.as_str())
    {
        return Err(TokenError::FingerprintMismatch);
    }
    Ok(())
}

/// A machine's request for a license file, written where there is no network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivationRequest {
    /// Always `tollgate.activation-request.v1`.
    #[serde(rename = "type")]
    pub kind: String,
    pub key: String,
    pub fingerprint: String,
    pub nonce: String,
    /// The machine's Ed25519 public key, base64url; it signs a later deactivation proof.
    pub machine_key: String,
}

pub const ACTIVATION_REQUEST: &str = "tollgate.activation-request.v1";
pub const LICENSE_FILE: &str = "tollgate.license-file.v1";

impl ActivationRequest {
    pub fn machine_key(&self) -> Option<VerifyingKey> {
        let bytes: [u8; 32] = B64.decode(&self.machine_key).ok()?.try_into().ok()?;
        VerifyingKey::from_bytes(&bytes).ok()
    }
    pub fn machine_jwk(&self) -> Option<Jwk> {
        let k = self.machine_key()?;
        let mut j = Jwk::ed25519(&thumbprint(&k), &k);
        j.use_ = Some("sig".into());
        Some(j)
    }
}

/// The signed answer to an activation request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseFile {
    #[serde(rename = "type")]
    pub kind: String,
    pub license: String,
    /// A license token (`offline: true`) bound to the request's fingerprint, with its
    /// nonce and machine key.
    pub token: String,
}

/// What a machine deactivated offline signs with its own key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeactivationClaims {
    /// The license id.
    pub sub: String,
    /// The `jti` of the license file's token being given up.
    pub jti: String,
    pub fingerprint: String,
    pub iat: i64,
}

/// Checks a deactivation proof: the machine's signature over its claims, against the
/// machine key that the (server-signed) license token names. Expiry of the license
/// token is deliberately not checked: a machine may give back an expired license.
pub fn verify_deactivation(
    proof: &str,
    license_token: &str,
    jwks: &Jwks,
) -> Result<(Claims, DeactivationClaims), TokenError> {
    let (_, payload) = verify_jws(license_token, TYP_JWT, jwks)?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|e| malformed(format!("claims: {e}")))?;
    let key = claims
        .cnf
        .as_ref()
        .and_then(Confirmation::key)
        .ok_or_else(|| malformed("the license token names no machine key"))?;
    let parsed = parse(proof, TYP_DEACTIVATION)?;
    parsed.verify_with(&key)?;
    let d: DeactivationClaims =
        serde_json::from_slice(parsed.payload()).map_err(|e| malformed(format!("deactivation: {e}")))?;
    if d.jti != claims.jti || d.sub != claims.sub {
        return Err(malformed("the proof is for another license token"));
    }
    if claims.license.fingerprint.as_deref() != Some(d.fingerprint.as_str()) {
        return Err(TokenError::FingerprintMismatch);
    }
    Ok((claims, d))
}

#[cfg(test)]
mod tests;
