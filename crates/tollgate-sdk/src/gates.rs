//! Local gate evaluation: the server's signed ruleset (`GET /v1/gates/ruleset`, an
//! EdDSA JWS verified against the JWKS), kept in memory and refreshed in the background
//! (respecting its `ETag`), evaluated with core's evaluator, the same code the server's
//! OFREP endpoint runs. [`GateClient::is_enabled`] costs no network.
//!
//! The license a gate may require is the application's own: [`GateClient::use_license`]
//! validates it through the [`Client`] (online, cached, or from the last verified token
//! when offline) and keeps its facts for every later evaluation, validating it again
//! at every refresh. A context may name another license (`licenseKey`), whose facts
//! [`GateClient::use_context_license`] keeps the same way.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Deserialize;
pub use tollgate_core::gate::{Context, LicenseFacts, LicenseStanding, Payload, Reason};
use tollgate_core::gate::{Ruleset, RulesetDoc, evaluate};
use tollgate_core::token::{Claims, Jwks, TokenError};

use crate::{Client, Code, Error, Source, Validation};

/// `typ` of the ruleset JWS.
pub const TYP_RULESET: &str = "tollgate-ruleset+jwt";
/// The largest ruleset accepted: well above any real catalog of gates.
const MAX_RULESET: usize = 16 * 1024 * 1024;

/// How the gate client refreshes.
#[derive(Clone, Debug)]
pub struct GateConfig {
    /// How often the ruleset is asked for (a 304 when nothing changed).
    pub refresh_interval: Duration,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self { refresh_interval: Duration::from_secs(15) }
    }
}

/// A verified ruleset, compiled.
struct Loaded {
    rules: Ruleset,
    seq: u64,
    etag: Option<String>,
    /// The client's count of feed restarts when this ruleset was taken.
    restarts: u64,
}

/// License keys whose facts are kept at most (the application's and those contexts
/// named); past it, all but the application's are forgotten and validated again.
const MAX_KNOWN_LICENSES: usize = 1024;

struct Shared {
    client: Client,
    rules: ArcSwap<Loaded>,
    /// The facts of a context that names no license: the application's own.
    license: ArcSwapOption<LicenseFacts>,
    /// The key [`GateClient::use_license`] was given (its facts are `license`):
    /// validated again at every refresh.
    license_key: Mutex<Option<String>>,
    /// Facts by license key, for contexts that name one (`licenseKey`): validated
    /// again at every refresh. Copied on write; read on every evaluation.
    by_key: ArcSwap<std::collections::HashMap<String, Arc<LicenseFacts>>>,
    /// When each kept license stops being usable (the end of its grace, else its
    /// expiry), as the server last said: an outage keeps its facts until then only.
    usable_until: Mutex<std::collections::HashMap<String, tollgate_core::Timestamp>>,
    /// Serializes refreshes, so a slow one cannot overwrite a newer ruleset.
    refreshing: tokio::sync::Mutex<()>,
    last_error: Mutex<Option<String>>,
}

/// Evaluates gates locally from the signed ruleset; refreshes it in the background
/// until dropped.
pub struct GateClient {
    shared: Arc<Shared>,
    refresher: tokio::task::JoinHandle<()>,
}

impl Drop for GateClient {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

/// One gate's answer, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateAnswer {
    pub enabled: bool,
    pub reason: Reason,
    /// Why the license binding refused, when `reason` is `Unlicensed`.
    pub license_code: Option<&'static str>,
    /// The chosen variant, if the gate has one for the subject.
    pub variant: Option<VariantAnswer>,
    /// The gate version that answered.
    pub version: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VariantAnswer {
    pub name: String,
    pub payload: Option<Payload>,
}

#[derive(Deserialize)]
struct Envelope {
    seq: u64,
}

#[derive(Deserialize)]
struct JwsHeader {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
}

/// Verifies the ruleset JWS. By hand rather than core's `token::verify_jws`, which caps
/// a token at 64 KiB (right for license tokens) while a ruleset grows with the number
/// of gates; the checks are the same: EdDSA only, our `typ`, a known `kid`, a strict
/// Ed25519 signature.
fn verify_ruleset(jws: &str, jwks: &Jwks) -> Result<(RulesetDoc, u64), TokenError> {
    let malformed = |s: &str| TokenError::Malformed(s.to_string());
    if jws.len() > MAX_RULESET {
        return Err(malformed("the ruleset is larger than 16 MiB"));
    }
    let (signing_input, sig) = jws.rsplit_once('.').ok_or_else(|| malformed("expected three dot-separated parts"))?;
    let (h, p) = signing_input.split_once('.').ok_or_else(|| malformed("expected three dot-separated parts"))?;
    let header: JwsHeader = B64
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| malformed("the header is not base64url JSON"))?;
    if header.alg != tollgate_core::token::ALG {
        return Err(TokenError::Algorithm(header.alg));
    }
    let typ = header.typ.unwrap_or_default();
    if !typ.eq_ignore_ascii_case(TYP_RULESET) {
        return Err(TokenError::WrongType { expected: TYP_RULESET, found: typ });
    }
    let kid = header.kid.unwrap_or_default();
    let key = jwks.get(&kid).ok_or(TokenError::UnknownKid(kid))?;
    let sig: [u8; 64] = B64
        .decode(sig)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| malformed("the signature is not 64 bytes of base64url"))?;
    key.verify_strict(signing_input.as_bytes(), &ed25519_dalek::Signature::from_bytes(&sig))
        .map_err(|_| TokenError::BadSignature)?;
    let payload = B64.decode(p).map_err(|_| malformed("the payload is not base64url"))?;
    let doc: RulesetDoc =
        serde_json::from_slice(&payload).map_err(|e| TokenError::Malformed(format!("ruleset: {e}")))?;
    let env: Envelope = serde_json::from_slice(&payload).map_err(|e| TokenError::Malformed(format!("ruleset: {e}")))?;
    Ok((doc, env.seq))
}

fn kid_of(jws: &str) -> Option<String> {
    let h = jws.split('.').next()?;
    let header: JwsHeader = serde_json::from_slice(&B64.decode(h).ok()?).ok()?;
    header.kid
}

impl Shared {
    /// Validates license `key` through the client and keeps its facts (by key, and as
    /// the application's when it is [`GateClient::use_license`]'s key). A token the
    /// client refused (revoked, expired) leaves facts of a license that cannot be used;
    /// a server that cannot be reached, with no token to fall back on, leaves the facts
    /// as they were.
    async fn learn(&self, key: &str) -> Result<LicenseFacts, Error> {
        let own = self.license_key.lock().unwrap_or_else(|p| p.into_inner()).as_deref() == Some(key);
        let validated = self.client.validate_on(key, None, own).await;
        // What was known of it before: an outage keeps it, unless the feed revoked it or
        // its term ended meanwhile.
        let known = self.by_key.load().get(key).cloned();
        let (facts, result) = match validated {
            Ok(v) => {
                self.note_usable_until(key, &v);
                let f = facts_from_validation(&v);
                (f.clone(), Ok(f))
            }
            // Refused from the client's fallback (the server is out of reach).
            Err(Error::Token(e)) => match refused_facts(&e, known.is_some()) {
                Some(f) => (f, Err(Error::Token(e))),
                None if self.outlived(key) => {
                    (LicenseFacts::unresolved(LicenseStanding::Expired), Err(Error::Token(e)))
                }
                None => return Err(Error::Token(e)),
            },
            // The server refused the request itself (this build's API token revoked,
            // say): a refusal, not an outage, so the license is not usable here.
            Err(e @ Error::Refused { status: 400..=499, .. })
                if !matches!(e, Error::Refused { status: 408 | 429, .. }) =>
            {
                (LicenseFacts::unresolved(LicenseStanding::NotFound), Err(e))
            }
            // Out of reach, a license the feed revoked (known by id from its facts; a
            // license a context names has no token here to be refused by).
            Err(e) if known.as_ref().is_some_and(|f| self.client.license_revoked(&f.license_id)) => {
                (LicenseFacts::unresolved(LicenseStanding::Revoked), Err(e))
            }
            // Out of reach past the end of the license's term (and grace), as the server
            // last gave it: expired here too.
            Err(e) if known.is_some() && self.outlived(key) => {
                (LicenseFacts::unresolved(LicenseStanding::Expired), Err(e))
            }
            // A license seen for the first time with the server out of reach and no
            // token to fall back on: not usable until a refresh validates it, rather
            // than asked for again at every evaluation.
            Err(e) if known.is_none() => (LicenseFacts::unresolved(LicenseStanding::NotFound), Err(e)),
            Err(e) => return Err(e),
        };
        let facts = Arc::new(facts);
        // Read again, not `own`: a set_license while the validation ran wins.
        if self.license_key.lock().unwrap_or_else(|p| p.into_inner()).as_deref() == Some(key) {
            self.license.store(Some(facts.clone()));
        }
        self.by_key.rcu(|known| {
            let mut next = if known.len() >= MAX_KNOWN_LICENSES && !known.contains_key(key) {
                Default::default()
            } else {
                (**known).clone()
            };
            next.insert(key.to_string(), facts.clone());
            next
        });
        result
    }

    /// Keeps when the license an answer describes stops being usable.
    fn note_usable_until(&self, key: &str, v: &Validation) {
        let until = v
            .license
            .as_ref()
            .and_then(|l| l.grace_ends_at.as_deref().or(l.expires_at.as_deref()))
            .and_then(|t| tollgate_core::Timestamp::parse(t).ok());
        let mut map = self.usable_until.lock().unwrap_or_else(|p| p.into_inner());
        match until {
            Some(t) => {
                if map.len() >= MAX_KNOWN_LICENSES && !map.contains_key(key) {
                    map.clear();
                }
                map.insert(key.to_string(), t);
            }
            None => {
                map.remove(key);
            }
        }
    }

    /// Whether the license of `key` is past the end of its term and grace, as last said.
    fn outlived(&self, key: &str) -> bool {
        self.usable_until.lock().unwrap_or_else(|p| p.into_inner()).get(key).is_some_and(|t| *t <= now())
    }

    /// Validates every kept license again (see [`Self::learn`]); the first error, if any.
    async fn revalidate(&self) -> Result<(), Error> {
        let mut keys: Vec<String> = self.by_key.load().keys().cloned().collect();
        if let Some(k) = self.license_key.lock().unwrap_or_else(|p| p.into_inner()).clone()
            && !keys.contains(&k)
        {
            keys.push(k);
        }
        let mut first = None;
        for key in keys {
            if let Err(e) = self.learn(&key).await {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Asks for the ruleset (with `If-None-Match`), verifies and installs a newer one.
    /// True when it changed.
    async fn refresh(&self) -> Result<bool, Error> {
        let _one = self.refreshing.lock().await;
        let current = self.rules.load();
        let c = &self.client;
        let mut req = c.http.get(format!("{}/v1/gates/ruleset", c.base)).bearer_auth(&c.token);
        if let Some(tag) = &current.etag {
            req = req.header(reqwest::header::IF_NONE_MATCH, tag);
        }
        let res = req.send().await.map_err(Error::Network)?;
        if res.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(false);
        }
        let etag = res.headers().get(reqwest::header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_string);
        let bytes = crate::read_ok(res, MAX_RULESET + 1).await?;
        let jws = String::from_utf8(bytes).map_err(|_| Error::Protocol("the ruleset is not text".into()))?;
        let jwks = c.jwks(kid_of(&jws).as_deref()).await?;
        let (doc, seq) = verify_ruleset(&jws, &jwks)?;
        if seq < current.seq {
            // An older answer: a node behind this one, so keep what we have, unless the
            // ledger went back (a restore, a failover to a replica that was behind),
            // whose history counts now: a kill switch thrown since must act. The feed
            // tells which: it says FEED_DIVERGED for a history that is gone.
            let _ = c.sync_revocations().await;
            if c.feed_restarts() == current.restarts {
                return Ok(false);
            }
        }
        let restarts = c.feed_restarts();
        self.rules.store(Arc::new(Loaded { rules: Ruleset::new(&doc), seq, etag, restarts }));
        Ok(true)
    }
}

fn now() -> tollgate_core::Timestamp {
    crate::offline::timestamp(SystemTime::now())
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // Only a bucketing draw for `random` stickiness: a zero draw is a valid answer.
    let _ = getrandom::fill(&mut b);
    u32::from_le_bytes(b)
}

impl GateClient {
    /// Fetches and verifies the ruleset, then refreshes it every
    /// `config.refresh_interval` in a background task (stopped when this is dropped).
    /// Must be called within a tokio runtime.
    pub async fn connect(client: &Client, config: GateConfig) -> Result<GateClient, Error> {
        let shared = Arc::new(Shared {
            client: client.clone(),
            rules: ArcSwap::from_pointee(Loaded { rules: Ruleset::default(), seq: 0, etag: None, restarts: 0 }),
            license: ArcSwapOption::empty(),
            license_key: Mutex::new(None),
            by_key: ArcSwap::from_pointee(Default::default()),
            usable_until: Mutex::new(Default::default()),
            refreshing: tokio::sync::Mutex::new(()),
            last_error: Mutex::new(None),
        });
        shared.refresh().await?;
        // Best effort: the feed's root, so that a later restore of the server's ledger
        // can be told from a node that is behind (see `refresh`).
        let _ = client.sync_revocations().await;
        let weak = Arc::downgrade(&shared);
        let every = config.refresh_interval.max(Duration::from_millis(10));
        let refresher = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else { return };
                // A failed refresh keeps the last verified ruleset: evaluation goes on
                // offline, and the error is kept for `last_error`.
                let mut outcome = shared.refresh().await.err().map(|e| e.to_string());
                // The licenses' facts too: a license revoked, expired or downgraded
                // since changes what its gates answer.
                if let Err(e) = shared.revalidate().await {
                    outcome.get_or_insert(e.to_string());
                }
                *shared.last_error.lock().unwrap_or_else(|p| p.into_inner()) = outcome;
            }
        });
        Ok(GateClient { shared, refresher })
    }

    /// Refreshes now; true when the ruleset changed.
    pub async fn refresh(&self) -> Result<bool, Error> {
        self.shared.refresh().await
    }

    /// The ledger sequence the current ruleset was read at.
    pub fn seq(&self) -> u64 {
        self.shared.rules.load().seq
    }

    /// The last background refresh's error, if it failed.
    pub fn last_error(&self) -> Option<String> {
        self.shared.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sets (or clears) the license facts gates bound to a license check, for contexts
    /// that name no license. Facts set here are not validated again.
    pub fn set_license(&self, facts: Option<LicenseFacts>) {
        *self.shared.license_key.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.shared.license.store(facts.map(Arc::new));
    }

    /// Validates the application's license through the client and keeps its facts for
    /// every later evaluation of a context that names no license; they are validated
    /// again at every refresh, so a license revoked, expired or downgraded meanwhile
    /// changes the answers.
    pub async fn use_license(&self, key: &str) -> Result<LicenseFacts, Error> {
        *self.shared.license_key.lock().unwrap_or_else(|p| p.into_inner()) = Some(key.to_string());
        self.shared.learn(key).await
    }

    /// Validates a license a context names (`licenseKey`) and keeps its facts for the
    /// evaluations of such contexts (the OpenFeature provider calls it for a key it has
    /// not seen). A context naming a license not validated yet counts as naming none.
    pub async fn use_context_license(&self, key: &str) -> Result<LicenseFacts, Error> {
        self.shared.learn(key).await
    }

    /// Whether the facts of license `key` are kept (see [`Self::use_context_license`]).
    pub fn knows_license(&self, key: &str) -> bool {
        self.shared.by_key.load().contains_key(key)
    }

    /// The facts a context is evaluated with: those of the license it names, or the
    /// application's.
    fn facts(&self, ctx: &Context) -> Option<Arc<LicenseFacts>> {
        match &ctx.license_key {
            Some(k) => self.shared.by_key.load().get(k).cloned(),
            None => self.shared.license.load_full(),
        }
    }

    /// Evaluates a gate locally; `None` when the ruleset has no such gate.
    pub fn evaluate(&self, key: &str, ctx: &Context) -> Option<GateAnswer> {
        let rules = self.shared.rules.load();
        let license = self.facts(ctx);
        let e = evaluate(&rules.rules, key, ctx, license.as_deref(), now(), random_u32())?;
        Some(GateAnswer {
            enabled: e.enabled,
            reason: e.reason,
            license_code: e.license_code.map(|c| c.as_str()),
            variant: e
                .variant
                .enabled
                .then(|| VariantAnswer { name: e.variant.name.to_string(), payload: e.variant.payload.cloned() }),
            version: e.version,
        })
    }

    /// Whether a gate is on for this context; an unknown gate is off.
    pub fn is_enabled(&self, key: &str, ctx: &Context) -> bool {
        let rules = self.shared.rules.load();
        let license = self.facts(ctx);
        evaluate(&rules.rules, key, ctx, license.as_deref(), now(), random_u32()).is_some_and(|e| e.enabled)
    }

    /// The variant a context gets, if the gate is on and has variants.
    pub fn variant(&self, key: &str, ctx: &Context) -> Option<VariantAnswer> {
        self.evaluate(key, ctx)?.variant
    }
}

/// The facts to keep for a license whose token the client's fallback refused, the
/// server being out of reach (`None`: keep the facts there are). A license the feed
/// revoked is revoked; otherwise an outage keeps what the server last said (its online
/// token lasts minutes, and its expiry says nothing of the license), and only a license
/// never seen gets facts of one that cannot be used.
fn refused_facts(e: &TokenError, known: bool) -> Option<LicenseFacts> {
    match e {
        TokenError::Revoked { what: "license", .. } => Some(LicenseFacts::unresolved(LicenseStanding::Revoked)),
        _ if known => None,
        TokenError::Expired { .. } => Some(LicenseFacts::unresolved(LicenseStanding::Expired)),
        _ => Some(LicenseFacts::unresolved(LicenseStanding::NotFound)),
    }
}

/// License facts from a validation answer: online, cached, or offline from a token.
pub fn facts_from_validation(v: &Validation) -> LicenseFacts {
    let standing = match v.code {
        Code::Valid => LicenseStanding::Active,
        Code::GracePeriod => LicenseStanding::Grace,
        Code::Expired => LicenseStanding::Expired,
        Code::Suspended => LicenseStanding::Suspended,
        Code::Revoked => LicenseStanding::Revoked,
        Code::MalformedKey => LicenseStanding::Malformed,
        // Entitled to something else, or not on this user: the license is there and
        // usable; its features say what it may use.
        Code::FeatureNotEntitled | Code::UserNotAssigned | Code::TooManyUsers if v.license.is_some() => {
            LicenseStanding::Active
        }
        // Not on this machine, or a code this SDK does not know: not usable here.
        Code::NotFound
        | Code::FeatureNotEntitled
        | Code::UserNotAssigned
        | Code::TooManyUsers
        | Code::FingerprintNotActivated
        | Code::TooManyMachines
        | Code::Unknown => LicenseStanding::NotFound,
    };
    let valid = matches!(standing, LicenseStanding::Active | LicenseStanding::Grace);
    let mut f = LicenseFacts {
        features: if valid { v.features.iter().cloned().collect() } else { Default::default() },
        license_id: String::new(),
        licensee: String::new(),
        plan: String::new(),
        product: String::new(),
        standing,
    };
    if let Some(l) = &v.license {
        f.license_id = l.id.clone();
        f.licensee = l.licensee.clone();
        f.plan = l.plan.clone();
        f.product = l.product.clone();
    } else if let Source::Offline { license, .. } = &v.source {
        f.license_id = license.clone();
    }
    f
}

/// License facts from a verified license token's claims (offline use).
pub fn facts_from_claims(c: &Claims) -> LicenseFacts {
    use crate::offline::{Term, term};
    let standing = match (c.license.status.as_str(), term(c, tollgate_core::token::seconds(now()))) {
        ("active", Term::Ended) => LicenseStanding::Expired,
        ("active", Term::Grace) => LicenseStanding::Grace,
        ("active", Term::Running) => LicenseStanding::Active,
        ("suspended", _) => LicenseStanding::Suspended,
        ("revoked", _) => LicenseStanding::Revoked,
        _ => LicenseStanding::Expired,
    };
    let valid = matches!(standing, LicenseStanding::Active | LicenseStanding::Grace);
    LicenseFacts {
        features: if valid { c.license.features.iter().cloned().collect() } else { Default::default() },
        license_id: c.sub.clone(),
        licensee: String::new(),
        plan: c.license.plan.clone(),
        product: c.aud.clone(),
        standing,
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use ed25519_dalek::SigningKey;
    use tollgate_core::token::{Jwks, TokenError, TokenSigner};

    use super::{LicenseStanding, TYP_RULESET, refused_facts, verify_ruleset};

    /// During an outage the facts the server last gave stand, whatever the fallback
    /// token says of itself (an online token lasts minutes: gates bound to a license used
    /// to go off five minutes into an outage); a revocation from the feed does not wait.
    #[test]
    fn an_outage_keeps_the_facts_and_a_revocation_does_not() {
        let expired = TokenError::Expired { exp: 1, now: 400, leeway: 60 };
        let revoked = TokenError::Revoked { what: "license", id: "lic_1".into() };
        assert!(refused_facts(&expired, true).is_none(), "known: kept as they are");
        assert_eq!(refused_facts(&revoked, true).map(|f| f.standing), Some(LicenseStanding::Revoked));
        assert_eq!(refused_facts(&expired, false).map(|f| f.standing), Some(LicenseStanding::Expired));
        let other = TokenError::UnknownKid("k".into());
        assert_eq!(refused_facts(&other, false).map(|f| f.standing), Some(LicenseStanding::NotFound));
        assert!(refused_facts(&other, true).is_none());
    }

    fn signer(seed: u8) -> TokenSigner {
        TokenSigner::new(SigningKey::from_bytes(&[seed; 32]))
    }

    #[test]
    fn a_ruleset_verifies_only_with_its_key_type_and_intact_bytes() {
        let s = signer(7);
        let mut jwks = Jwks::default();
        jwks.insert(&s.kid, s.verifying_key());
        let payload = br#"{"iss":"t","iat":1,"seq":42,"gates":[],"segments":[]}"#;
        let jws = s.sign_jws(TYP_RULESET, payload);
        let (doc, seq) = verify_ruleset(&jws, &jwks).unwrap();
        assert_eq!(seq, 42);
        assert!(doc.gates.is_empty());

        let other = signer(8);
        let mut wrong = Jwks::default();
        wrong.insert(&s.kid, other.verifying_key());
        assert_eq!(verify_ruleset(&jws, &wrong).unwrap_err(), TokenError::BadSignature);
        assert!(matches!(verify_ruleset(&jws, &Jwks::default()), Err(TokenError::UnknownKid(_))));

        let license = s.sign_jws("JWT", payload);
        assert!(matches!(verify_ruleset(&license, &jwks), Err(TokenError::WrongType { .. })));

        let (head, rest) = jws.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let forged = format!("{head}.{}.{sig}", super::B64.encode(br#"{"seq":43,"gates":[]}"#));
        assert_eq!(verify_ruleset(&forged, &jwks).unwrap_err(), TokenError::BadSignature);
    }
}
