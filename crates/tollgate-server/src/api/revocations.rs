//! `GET /v1/revocations?since=SEQ`: a signed (EdDSA JWS) list of what was revoked since
//! a ledger sequence, so an SDK that holds offline tokens stops honouring a revoked or
//! suspended license at its next contact rather than at token expiry.
//!
//! The list is read from the ledger (the outbox), not kept beside it: licenses whose
//! status changed since `since`, classified by how they stand now, and token ids given
//! up since then. `tree_size` is the `since` of the next call. The server keeps the
//! ledger's revocation events in memory (`RevocationIndex`), read once and extended by
//! each feed with what was appended since, so a feed costs what changed, not the ledger.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tollgate_core::ids::LicenseId;
use tollgate_core::license::Status;
use tollgate_core::token::{MachineRevocation, RevocationList, TYP_REVOCATIONS, seconds};
use tollgate_core::{Event, EventKind};
use tollgate_store::StoreError;

use crate::AppState;
use crate::auth::{Permission, Principal};
use crate::extract::ApiQuery;
use crate::problem::ApiError;

/// Revocation entries per feed page: a page of machine deactivations with the longest
/// fingerprints stays well under the size a client accepts (`MAX_FEED`).
const FEED_PAGE: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Since {
    #[serde(default)]
    since: u64,
    /// The root the previous page gave for `since` (its `root`), checked against this
    /// ledger's.
    #[serde(default)]
    root: Option<String>,
}

#[utoipa::path(get, path = "/v1/revocations", tag = "tokens", params(("since" = Option<u64>, Query, description = "ledger sequence of the previous call's tree_size (0: everything)"), ("root" = Option<String>, Query, description = "the previous call's root (the ledger's root at since), checked against this ledger's")), responses((status = 200, description = "application/jwt: a JWS (typ tollgate-revocations+jwt) whose payload is {iss, iat, since, tree_size, root, licenses, reinstated, jtis, machines: [{license, fingerprint, at}], more}; with more: true the page is full and the next one starts at its tree_size", content_type = "application/jwt"), (status = 409, description = "FEED_DIVERGED: since is beyond the ledger's end, or root is not the ledger's root at since (restored to an earlier point); read again from since=0", body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn feed(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<Since>,
) -> Result<Response, ApiError> {
    principal.require(Permission::Validate)?;
    let signer = app.keys.current(&app).await?;
    // The index first, then the state: every feed extends the index only as far as the
    // state it read under the index's lock, and states only grow, so the index never
    // holds entries past this state's end (classified by a state that does not know
    // them, they would be passed over for good). Events another node appended that this
    // one has not folded yet are left for a later feed the same way.
    let mut index = app.revocations.lock().await;
    let s = app.engine.state();
    let end = s.seq();
    // A client that followed a history this ledger no longer has (restored to an
    // earlier point since its last feed) must start over: answered from its `since`, it
    // would pass over whatever the new history holds there.
    let diverged = |why: String| {
        ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "FEED_DIVERGED",
            format!(
                "{why}: the ledger was restored to an earlier point since the client's last feed; \
                 read the feed again from since=0"
            ),
        )
    };
    if q.since > end {
        // Ahead of this node: another node's feed (nothing to add here yet: come back
        // later), or a ledger cut back to before `since`.
        // On the shared reading connection (no new one per feed), off the async workers.
        let shared = app.clone();
        let len = tokio::task::spawn_blocking(move || shared.reader.lock().unwrap_or_else(|p| p.into_inner()).len())
            .await
            .map_err(|e| ApiError::internal(format!("reading the ledger's length stopped: {e}")))??;
        if q.since > len {
            return Err(diverged(format!("since={} is beyond the ledger's end ({len})", q.since)));
        }
    } else if let Some(root) = &q.root
        // A `+` sent unencoded arrives as a space.
        && root.replace(' ', "+") != root_at(&app, q.since)?
    {
        return Err(diverged(format!("the ledger's root at size {} is not the given one", q.since)));
    }
    // The index holds every revocation event up to the last feed's end; only what was
    // appended since is read from the ledger (the first feed after start reads it all),
    // on the index's own connection (opened once, kept between feeds) and on the blocking
    // pool, so it holds no lock other requests need and no async worker. Any `since` is
    // then answered from memory.
    if index.upto < end {
        let reader = match index.reader.take() {
            Some(r) => r,
            None => app.reader.lock().unwrap_or_else(|p| p.into_inner()).reader()?,
        };
        let from = index.upto;
        let (scanned, reader) = tokio::task::spawn_blocking(move || (scan(&*reader, from, end), reader))
            .await
            .map_err(|e| ApiError::internal(format!("the revocation scan stopped: {e}")))?;
        // Kept for the next feed only after a good scan, and only on the embedded
        // store: a PostgreSQL connection idle between feeds may be cut by the network
        // without a word, and the next scan would hang on it while holding the index.
        if scanned.is_ok() && !reader.shared() {
            index.reader = Some(reader);
        }
        let (entries, upto) = scanned?;
        index.entries.extend(entries);
        index.upto = index.upto.max(upto);
    }
    let mut touched = BTreeSet::new();
    let mut reinstated = BTreeSet::new();
    let mut jtis = Vec::new();
    let mut machines = Vec::new();
    let first = index.entries.partition_point(|(at, _)| *at < q.since);
    let page = &index.entries[first..(first + FEED_PAGE).min(index.entries.len())];
    // A full page ends where the next entry begins (each event gives at most one entry),
    // and the client asks again from there.
    let more = first + page.len() < index.entries.len();
    let tree_size = match index.entries.get(first + page.len()) {
        Some((at, _)) if more => *at,
        _ => q.since.max(index.upto),
    };
    for (_, entry) in page {
        match entry {
            Entry::Touched(license) => {
                touched.insert(license.clone());
            }
            Entry::Reinstated(license) => {
                reinstated.insert(license.clone());
                touched.insert(license.clone());
            }
            Entry::Jti(license, jti) => jtis.push((license.clone(), jti.clone())),
            Entry::Machine(m) => machines.push(m.clone()),
        }
    }
    drop(index);
    let visible =
        |id: &str| s.license(id).filter(|l| principal.product.as_deref().is_none_or(|p| p == l.product.as_str()));
    let mut licenses = Vec::new();
    let mut back = Vec::new();
    for id in &touched {
        let Some(l) = visible(id.as_str()) else { continue };
        match l.status {
            Status::Revoked | Status::Suspended => licenses.push(id.to_string()),
            Status::Active if reinstated.contains(id) => back.push(id.to_string()),
            Status::Active => {}
        }
    }
    let jtis = jtis.into_iter().filter(|(l, _)| visible(l.as_str()).is_some()).map(|(_, j)| j).collect();
    machines.retain(|m| visible(&m.license).is_some());
    let list = RevocationList {
        iss: app.keys.issuer.clone(),
        iat: seconds(crate::engine::now()),
        since: q.since,
        tree_size,
        // This node holds the ledger up to its state's end; a `since` beyond it (another
        // node's) gets none, and the client keeps the root it has.
        root: if tree_size <= end { Some(root_at(&app, tree_size)?) } else { None },
        licenses,
        reinstated: back,
        jtis,
        machines,
        more,
    };
    let jws = signer.sign_claims(TYP_REVOCATIONS, &list).map_err(|e| ApiError::internal(e.to_string()))?;
    let mut res = jws.into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/jwt"));
    res.headers_mut().insert(super::SEQ_HEADER, HeaderValue::from(tree_size));
    Ok(res)
}

/// The ledger's Merkle root at `size` (base64), from the log this node verified.
fn root_at(app: &AppState, size: u64) -> Result<String, ApiError> {
    use base64::Engine as _;
    let log = app.engine.log().read().unwrap_or_else(|p| p.into_inner());
    let root = log.root_at(size).map_err(|e| ApiError::internal(format!("the root at size {size}: {e}")))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(root))
}

/// The revocation events of the ledger's first `upto` events, each with its index, in
/// ledger order: what every feed is cut from.
#[derive(Default)]
pub struct RevocationIndex {
    upto: u64,
    entries: Vec<(u64, Entry)>,
    /// The connection the ledger is read on, after the first feed.
    reader: Option<Box<dyn tollgate_store::LedgerStore>>,
}

enum Entry {
    /// Suspended or revoked (classified by how the license stands now).
    Touched(LicenseId),
    Reinstated(LicenseId),
    Jti(LicenseId, String),
    Machine(MachineRevocation),
}

/// The revocation events among events `from..end` (the folded state's end), and the
/// index after the last event read.
fn scan(store: &dyn tollgate_store::LedgerStore, from: u64, end: u64) -> Result<(Vec<(u64, Entry)>, u64), ApiError> {
    let mut entries = Vec::new();
    let mut upto = from;
    let mut past = false;
    let r = store.scan(from, &mut |e| {
        if e.index >= end {
            past = true;
            return Err(StoreError::Invalid("past the folded state".into()));
        }
        upto = upto.max(e.index + 1);
        let event = Event::decode(&e.leaf).map_err(|err| StoreError::Invalid(err.to_string()))?;
        let entry = match event.event {
            EventKind::LicenseSuspended { license } | EventKind::LicenseRevoked { license } => Entry::Touched(license),
            EventKind::LicenseReinstated { license } => Entry::Reinstated(license),
            EventKind::LicenseTokenRevoked { jti, license, .. } => Entry::Jti(license, jti),
            EventKind::MachineDeactivated { license, fingerprint } => Entry::Machine(MachineRevocation {
                license: license.to_string(),
                fingerprint: fingerprint.to_string(),
                at: seconds(event.at),
            }),
            _ => return Ok(()),
        };
        entries.push((e.index, entry));
        Ok(())
    });
    if !past {
        r?;
    }
    Ok((entries, upto))
}
