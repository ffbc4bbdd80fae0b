//! The client's memory: a TTL cache of answers, the last verified token per license
//! key (the offline fallback), the JWKS (refetched on an unknown `kid`, at most once per
//! `jwks_refetch_interval`) and the revocations learned from the signed feed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use tollgate_core::token::{Claims, Jwks, RevocationList, Revocations, TokenError};

use crate::offline::{Term, VerifyOptions, verify_token_with};
use crate::{Client, Code, Error, Source, Validation};

/// Pages of the revocation feed one sync reads at most (a thousand entries each).
const MAX_FEED_PAGES: usize = 10_000;

/// How the client caches and falls back. `Default` gives sensible values.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// How long an online answer is reused without asking again.
    pub cache_ttl: Duration,
    /// This machine's fingerprint: sent with validations, required by bound tokens.
    pub fingerprint: Option<String>,
    /// The application's product key: every token this client verifies (online, and
    /// for its offline fallback) must be for it (`aud`), so a token for another of the
    /// vendor's products, signed by the same keys, is refused, and an online answer for
    /// another product's license is `NOT_FOUND` here. `None` skips the check.
    pub product: Option<String>,
    /// The user this application runs for, sent with its validations: on a plan with
    /// seats the server answers `USER_NOT_ASSIGNED` (or `TOO_MANY_USERS`) for a user
    /// who holds no seat. `None` sends none, and seats are not checked.
    pub user: Option<String>,
    /// Ask for offline tokens (bound to `fingerprint`, lasting the plan's
    /// `offline_days`) so that the fallback lasts days, not minutes.
    pub offline_tokens: bool,
    /// Clock-skew leeway on `exp`/`nbf`.
    pub leeway_seconds: i64,
    /// The least time between two JWKS fetches caused by an unknown `kid`.
    pub jwks_refetch_interval: Duration,
    /// How long a fetched JWKS is trusted before it is fetched again, so that a key the
    /// server retired stops verifying here too. While the server cannot be reached the
    /// last set stays in use (the offline fallback needs it).
    pub jwks_max_age: Duration,
    /// PEM certificates of CAs to trust for an `https://` server besides the system's:
    /// a private CA, or the server's own self-signed certificate. Empty: the system's only.
    pub ca_certificates_pem: Vec<u8>,
    /// How long one request to the server may take before the client answers from its
    /// fallback.
    pub request_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            cache_ttl: Duration::from_secs(30),
            fingerprint: None,
            product: None,
            user: None,
            offline_tokens: false,
            leeway_seconds: crate::offline::DEFAULT_LEEWAY_SECONDS,
            jwks_refetch_interval: Duration::from_secs(30),
            jwks_max_age: Duration::from_secs(600),
            ca_certificates_pem: Vec::new(),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// License keys (and answers) the client remembers at most; past that, what has
/// expired goes, and then everything, rather than grow with every key an application
/// is shown.
const MAX_REMEMBERED: usize = 10_000;

/// An answer's cache key: the license key, the feature, and whether it was asked for
/// this machine (with its fingerprint and user) or for a license a context names.
type AnswerKey = (String, Option<String>, bool);

#[derive(Default)]
pub(crate) struct Memory {
    answers: HashMap<AnswerKey, (Validation, Instant)>,
    tokens: HashMap<String, String>,
    jwks: Option<Jwks>,
    jwks_fetched: Option<Instant>,
    pub(crate) revocations: Revocations,
    /// How many times the feed said the ledger's history changed (`FEED_DIVERGED`):
    /// evidence of a restore, for the gate client's older rulesets.
    feed_restarts: u64,
}

impl Client {
    fn mem(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn cached(&self, key: &str, feature: Option<&str>, this_machine: bool) -> Option<Validation> {
        let mem = self.mem();
        let (v, at) = mem.answers.get(&(key.to_string(), feature.map(String::from), this_machine))?;
        (at.elapsed() < self.config.cache_ttl).then(|| Validation { source: Source::Cached, ..v.clone() })
    }

    /// Keeps an online answer: its token (after verifying it) becomes the fallback; an
    /// answer that the license itself is not usable drops the fallback, so a revoked
    /// license cannot be resurrected by a later network failure. The server's answer
    /// stands whatever happens to its token: one that does not verify here (this
    /// machine's clock is off, the JWKS cannot be fetched just now) is only not kept.
    ///
    /// Only an answer for this machine touches the fallback: a license a gate context
    /// names is validated without this machine's fingerprint, and its token (bound to
    /// no machine, lasting minutes) must not replace this machine's offline token.
    pub(crate) async fn remember(&self, key: &str, feature: Option<&str>, this_machine: bool, v: &Validation) {
        if this_machine && v.valid {
            if let Some(t) = &v.token
                && self.verify_online(t).await.is_ok()
            {
                let mut mem = self.mem();
                if mem.tokens.len() >= MAX_REMEMBERED && !mem.tokens.contains_key(key) {
                    mem.tokens.clear();
                }
                mem.tokens.insert(key.to_string(), t.clone());
            }
        } else if this_machine
            && !matches!(v.code, Code::FeatureNotEntitled | Code::UserNotAssigned | Code::TooManyUsers)
        {
            // (Not this feature, or not this user: the license itself still stands.)
            self.mem().tokens.remove(key);
        }
        let ttl = self.config.cache_ttl;
        let mut mem = self.mem();
        if mem.answers.len() >= MAX_REMEMBERED {
            mem.answers.retain(|_, (_, at)| at.elapsed() < ttl);
            if mem.answers.len() >= MAX_REMEMBERED {
                mem.answers.clear();
            }
        }
        mem.answers.insert((key.to_string(), feature.map(String::from), this_machine), (v.clone(), Instant::now()));
    }

    fn options(&self) -> VerifyOptions {
        VerifyOptions {
            audience: self.config.product.clone(),
            fingerprint: self.config.fingerprint.clone(),
            leeway_seconds: self.config.leeway_seconds,
            ..VerifyOptions::default()
        }
    }

    /// The offline answer from the last verified token, when the server is unreachable.
    pub(crate) fn fallback(&self, key: &str, feature: Option<&str>, unreachable: Error) -> Result<Validation, Error> {
        let mem = self.mem();
        let (Some(token), Some(jwks)) = (mem.tokens.get(key), mem.jwks.as_ref()) else {
            return Err(unreachable);
        };
        let claims = verify_token_with(token, jwks, &self.options(), Some(&mem.revocations))?;
        Ok(offline_answer(&claims, feature, unreachable.to_string()))
    }

    /// The cached JWKS, fetched if absent, older than `jwks_max_age`, or lacking `kid`
    /// (rate-limited). A set that is only old is still used when the fetch fails.
    pub async fn jwks(&self, kid: Option<&str>) -> Result<Jwks, Error> {
        let stale = {
            let mem = self.mem();
            match &mem.jwks {
                Some(j) => {
                    let known = kid.is_none_or(|k| j.get(k).is_some());
                    let age = mem.jwks_fetched.map(|t| t.elapsed());
                    let recent = age.is_some_and(|a| a < self.config.jwks_refetch_interval);
                    let fresh = age.is_some_and(|a| a < self.config.jwks_max_age);
                    if (known && fresh) || recent {
                        return Ok(j.clone());
                    }
                    known.then(|| j.clone())
                }
                None => None,
            }
        };
        let fetched = async {
            let res =
                self.http.get(format!("{}/.well-known/jwks.json", self.base)).send().await.map_err(Error::Network)?;
            let bytes = crate::read_ok(res, crate::MAX_ANSWER).await?;
            serde_json::from_slice::<Jwks>(&bytes).map_err(|e| Error::Protocol(format!("JWKS: {e}")))
        }
        .await;
        let jwks = match (fetched, stale) {
            (Ok(j), _) => j,
            (Err(_), Some(old)) => return Ok(old),
            (Err(e), _) => return Err(e),
        };
        let mut mem = self.mem();
        mem.jwks = Some(jwks.clone());
        mem.jwks_fetched = Some(Instant::now());
        Ok(jwks)
    }

    async fn verify_online(&self, token: &str) -> Result<Claims, Error> {
        let kid = tollgate_core::token::parse(token, tollgate_core::token::TYP_JWT)?.header.kid;
        let jwks = self.jwks(kid.as_deref()).await?;
        let revocations = self.mem().revocations.clone();
        Ok(verify_token_with(token, &jwks, &self.options(), Some(&revocations))?)
    }

    /// Fetches the signed revocation feed since the last one and applies it, page by
    /// page. Called on every online validation; call it yourself to refresh without
    /// validating.
    ///
    /// A server whose ledger was restored to an earlier point answers `FEED_DIVERGED`
    /// (it checks the Merkle root this client was given for its `since`): the history
    /// this client followed is gone, so it forgets what it learned and reads the feed
    /// again from the start.
    pub async fn sync_revocations(&self) -> Result<Revocations, Error> {
        // One sync at a time: two from the same `since` applied out of order could undo
        // a reinstatement with the suspension before it.
        let one = self.syncing.lock().await;
        self.sync_holding(one).await
    }

    /// The sync an online validation makes: when another is running, its result, not a
    /// sync of its own after it (concurrent validations would otherwise each wait for
    /// every sync before theirs).
    pub(crate) async fn sync_revocations_once(&self) -> Result<Revocations, Error> {
        match self.syncing.try_lock() {
            Ok(one) => self.sync_holding(one).await,
            Err(_) => {
                drop(self.syncing.lock().await);
                Ok(self.revocations())
            }
        }
    }

    async fn sync_holding(&self, _one: tokio::sync::MutexGuard<'_, ()>) -> Result<Revocations, Error> {
        let mut started_over = false;
        for _ in 0..MAX_FEED_PAGES {
            let (since, root) = {
                let mem = self.mem();
                (mem.revocations.tree_size, mem.revocations.root.clone())
            };
            let list = match self.feed_page(since, root.as_deref()).await {
                Err(Error::Refused { code, .. }) if code == "FEED_DIVERGED" && !started_over && since > 0 => {
                    started_over = true;
                    let mut mem = self.mem();
                    mem.revocations = Revocations::default();
                    mem.feed_restarts += 1;
                    continue;
                }
                other => other?,
            };
            let mut mem = self.mem();
            if list.since != mem.revocations.tree_size {
                return Err(Error::Protocol(format!(
                    "the revocation feed answered from sequence {}, not {}",
                    list.since, mem.revocations.tree_size
                )));
            }
            mem.revocations.apply(&list);
            let revoked = &mem.revocations;
            let drop: Vec<String> = mem
                .tokens
                .iter()
                .filter(|(_, t)| {
                    let Ok(p) = tollgate_core::token::parse(t, tollgate_core::token::TYP_JWT) else { return true };
                    serde_json::from_slice::<Claims>(p.payload()).map(|c| revoked.refuses(&c).is_some()).unwrap_or(true)
                })
                .map(|(k, _)| k.clone())
                .collect();
            // And every answer for a revoked license, whether or not this client keeps
            // its token (a license a gate context names has none here).
            let Memory { answers, revocations, .. } = &mut *mem;
            answers.retain(|(k, _, _), (v, _)| {
                !drop.contains(k) && !v.license.as_ref().is_some_and(|l| revocations.licenses.contains(&l.id))
            });
            if !list.more || list.tree_size <= since {
                return Ok(mem.revocations.clone());
            }
        }
        Err(Error::Protocol(format!("the revocation feed did not end within {MAX_FEED_PAGES} pages")))
    }

    /// One verified page of the feed from `since`, whose root the last page gave.
    async fn feed_page(&self, since: u64, root: Option<&str>) -> Result<RevocationList, Error> {
        let mut query = vec![("since", since.to_string())];
        query.extend(root.map(|r| ("root", r.to_string())));
        let url = reqwest::Url::parse_with_params(&format!("{}/v1/revocations", self.base), &query)
            .map_err(|e| Error::Config(format!("the server's URL: {e}")))?;
        let res = self.http.get(url).bearer_auth(&self.token).send().await.map_err(Error::Network)?;
        // The page's JWS may be up to `MAX_FEED` bytes; its verification refuses more.
        let bytes = crate::read_ok(res, tollgate_core::token::MAX_FEED + 1).await?;
        let text = String::from_utf8(bytes).map_err(|_| Error::Protocol("feed is not text".into()))?;
        let kid = tollgate_core::token::parse(&text, tollgate_core::token::TYP_REVOCATIONS)?.header.kid;
        let jwks = self.jwks(kid.as_deref()).await?;
        Ok(RevocationList::verify(&text, &jwks)?)
    }

    /// The revocations learned so far.
    pub fn revocations(&self) -> Revocations {
        self.mem().revocations.clone()
    }

    /// Whether the feed revoked license `id` (by id; no copy of the revocations).
    pub(crate) fn license_revoked(&self, id: &str) -> bool {
        self.mem().revocations.licenses.contains(id)
    }

    /// How many times the feed said the ledger's history changed.
    pub(crate) fn feed_restarts(&self) -> u64 {
        self.mem().feed_restarts
    }
}

fn offline_answer(c: &Claims, feature: Option<&str>, network: String) -> Validation {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let term = crate::offline::term(c, now);
    let entitled = term != Term::Ended && feature.is_none_or(|f| c.has_feature(f));
    let code = match (term, entitled) {
        (Term::Ended, _) => Code::Expired,
        (_, false) => Code::FeatureNotEntitled,
        (Term::Grace, true) => Code::GracePeriod,
        (Term::Running, true) => Code::Valid,
    };
    let instant = |s: i64| tollgate_core::Timestamp::from_millis(s.saturating_mul(1000)).map(|t| t.to_string());
    Validation {
        valid: entitled,
        code,
        detail: Some(format!("offline: the server could not be reached ({network}); answered from a verified token")),
        // What the token says of the license (its product is the audience), so that
        // gates bound to a product's features evaluate offline as online.
        license: Some(crate::LicenseInfo {
            id: c.sub.clone(),
            status: c.license.status.clone(),
            product: c.aud.clone(),
            plan: c.license.plan.clone(),
            licensee: String::new(),
            expires_at: c.license.expires_at.and_then(instant),
            grace_ends_at: c.license.grace_ends_at.and_then(instant),
        }),
        features: if entitled { c.license.features.clone() } else { Vec::new() },
        token: None,
        source: Source::Offline { token_expires_at: c.exp, license: c.sub.clone() },
    }
}

impl From<TokenError> for Error {
    fn from(e: TokenError) -> Self {
        Error::Token(e)
    }
}

pub(crate) type Shared = Mutex<Memory>;

#[cfg(test)]
mod tests {
    use tollgate_core::gate::LicenseStanding;
    use tollgate_core::token::{LicenseClaim, Limits};

    use super::*;

    /// An offline answer says what the token says of the license, so that gates bound
    /// to a product's features see its product and plan (they saw none, and so read
    /// every such gate as not entitled).
    #[test]
    fn an_offline_answer_carries_the_license_facts_of_its_token() {
        let claims = Claims {
            iss: "tollgate".into(),
            sub: "lic_0123456789abcdefghjkmnpqrs".into(),
            aud: "cad".into(),
            iat: 1_800_000_000,
            nbf: 1_800_000_000,
            exp: 4_000_000_000,
            jti: "j".into(),
            license: LicenseClaim {
                status: "active".into(),
                plan: "pro".into(),
                features: vec!["render".into()],
                limits: Limits::default(),
                fingerprint: Some("m1".into()),
                expires_at: Some(3_900_000_000),
                grace_ends_at: None,
                offline: true,
            },
            nonce: None,
            cnf: None,
        };
        let v = offline_answer(&claims, Some("render"), "down".into());
        assert!(v.valid);
        let facts = crate::gates::facts_from_validation(&v);
        assert_eq!((facts.product.as_str(), facts.plan.as_str()), ("cad", "pro"));
        assert_eq!(facts.license_id, claims.sub);
        assert_eq!(facts.standing, LicenseStanding::Active);
        assert!(facts.features.contains("render"));
        assert_eq!(v.license.unwrap().expires_at.as_deref(), Some("2093-08-01T21:20:00Z"));
    }
}
