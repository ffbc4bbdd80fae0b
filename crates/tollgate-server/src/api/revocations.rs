//! `GET /v1/revocations?since=SEQ`: a signed (EdDSA JWS) list of what was revoked since
//! a ledger sequence, so an SDK that holds offline tokens stops honouring a revoked or
//! suspended license at its next contact rather than at token expiry.
//!
//! The list is read from the ledger (the outbox), not kept beside it: licenses whose
//! status changed since `since`, classified by how they stand now, and token ids given
//! up since then. `tree_size` is the `since` of the next call.

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Since {
    #[serde(default)]
    since: u64,
}

#[utoipa::path(get, path = "/v1/revocations", tag = "tokens", params(("since" = Option<u64>, Query, description = "ledger sequence of the previous call's tree_size (0: everything)")), responses((status = 200, description = "application/jwt: a JWS (typ tollgate-revocations+jwt) whose payload is {iss, iat, since, tree_size, licenses, reinstated, jtis, machines: [{license, fingerprint, at}]}", content_type = "application/jwt")), security(("bearer" = [])))]
pub async fn feed(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<Since>,
) -> Result<Response, ApiError> {
    principal.require(Permission::Validate)?;
    let signer = app.keys.current(&app).await?;
    // The state first, and the ledger read only as far as it goes: events another node
    // appended that this one has not folded yet are left for the next page, instead of
    // being classified by a state that does not know them and then passed over for good.
    let s = app.engine.state();
    let end = s.seq();
    // The scan reads the ledger from `since`: on its own connection and on the blocking
    // pool, so a long one (since=0 on a large ledger) holds no lock other requests need
    // and no async worker.
    let reader = app.reader.lock().unwrap_or_else(|p| p.into_inner()).reader()?;
    let since = q.since;
    let scanned = tokio::task::spawn_blocking(move || scan(&*reader, since, end))
        .await
        .map_err(|e| ApiError::internal(format!("the revocation scan stopped: {e}")))??;
    let Scanned { touched, reinstated, jtis, mut machines, tree_size } = scanned;
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
        licenses,
        reinstated: back,
        jtis,
        machines,
    };
    let jws = signer.sign_claims(TYP_REVOCATIONS, &list).map_err(|e| ApiError::internal(e.to_string()))?;
    let mut res = jws.into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/jwt"));
    res.headers_mut().insert(super::SEQ_HEADER, HeaderValue::from(tree_size));
    Ok(res)
}

/// What a scan of the ledger from `since` found that revocation lists need.
struct Scanned {
    touched: BTreeSet<LicenseId>,
    reinstated: BTreeSet<LicenseId>,
    jtis: Vec<(LicenseId, String)>,
    machines: Vec<MachineRevocation>,
    tree_size: u64,
}

/// Scans events `since..end` (the folded state's end).
fn scan(store: &dyn tollgate_store::LedgerStore, since: u64, end: u64) -> Result<Scanned, ApiError> {
    let mut out = Scanned {
        touched: BTreeSet::new(),
        reinstated: BTreeSet::new(),
        jtis: Vec::new(),
        machines: Vec::new(),
        tree_size: since,
    };
    let mut past = false;
    let r = store.scan(since, &mut |e| {
        if e.index >= end {
            past = true;
            return Err(StoreError::Invalid("past the folded state".into()));
        }
        out.tree_size = out.tree_size.max(e.index + 1);
        let event = Event::decode(&e.leaf).map_err(|err| StoreError::Invalid(err.to_string()))?;
        match event.event {
            EventKind::LicenseSuspended { license } | EventKind::LicenseRevoked { license } => {
                out.touched.insert(license);
            }
            EventKind::LicenseReinstated { license } => {
                out.reinstated.insert(license.clone());
                out.touched.insert(license);
            }
            EventKind::LicenseTokenRevoked { jti, license, .. } => out.jtis.push((license, jti)),
            EventKind::MachineDeactivated { license, fingerprint } => out.machines.push(MachineRevocation {
                license: license.to_string(),
                fingerprint: fingerprint.to_string(),
                at: seconds(event.at),
            }),
            _ => {}
        }
        Ok(())
    });
    if !past {
        r?;
    }
    Ok(out)
}
