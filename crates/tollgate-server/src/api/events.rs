//! Audit queries over the ledger: who changed what, when, and why.
//!
//! Each event comes with its ledger index, so its inclusion proof can be fetched from
//! `/v1/ledger/proof/inclusion`. The ledger is scanned in pages from the store's read
//! connection, newest or oldest first; filters are applied to the decoded events.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tollgate_core::{Event, Timestamp};

use super::json;
use crate::AppState;
use crate::auth::{Permission, Principal};
use crate::extract::ApiQuery;
use crate::problem::ApiError;

const PAGE: u64 = 512;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    license: Option<String>,
    actor: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    /// `desc` (newest first, the default) or `asc`.
    order: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<u64>,
    limit: Option<usize>,
}

#[derive(Serialize)]
struct Item {
    index: u64,
    seq: u64,
    #[serde(rename = "type")]
    kind: &'static str,
    event: serde_json::Value,
}

#[derive(Serialize)]
struct Page {
    items: Vec<Item>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<u64>,
}

impl EventsQuery {
    fn matches(&self, e: &Event) -> bool {
        self.license.as_deref().is_none_or(|l| e.event.license().is_some_and(|id| id.as_str() == l))
            && self.actor.as_deref().is_none_or(|a| e.actor == a)
            && self.kind.as_deref().is_none_or(|k| e.event.type_name() == k)
            && self.since.is_none_or(|s| e.at >= s)
            && self.until.is_none_or(|u| e.at <= u)
    }
}

#[utoipa::path(get, path = "/v1/events", tag = "audit", params(("license" = Option<String>, Query), ("actor" = Option<String>, Query, description = "e.g. token:tok_…"), ("type" = Option<String>, Query, description = "e.g. license_suspended"), ("since" = Option<String>, Query, description = "RFC 3339"), ("until" = Option<String>, Query, description = "RFC 3339"), ("order" = Option<String>, Query, description = "desc (default) or asc"), ("cursor" = Option<u64>, Query), ("limit" = Option<usize>, Query, description = "1..=500, default 50")), responses((status = 200, description = "{items:[{index, seq, type, event}], next_cursor}")), security(("bearer" = [])))]
pub async fn list(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    principal.require(Permission::LedgerRead)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("INVALID_QUERY", "limit must be between 1 and 500"));
    }
    let desc = match q.order.as_deref() {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(_) => return Err(ApiError::bad_request("INVALID_QUERY", "order must be asc or desc")),
    };
    if let Some(k) = &q.kind
        && !tollgate_core::event::EventKind::TYPE_NAMES.contains(&k.as_str())
    {
        return Err(ApiError::bad_request(
            "INVALID_QUERY",
            format!("type must be one of {}", tollgate_core::event::EventKind::TYPE_NAMES.join(", ")),
        ));
    }
    let scan = app.scan_permit()?;
    let size = app.engine.state().seq();
    let app2 = app.clone();
    let page = tokio::task::spawn_blocking(move || -> Result<Page, ApiError> {
        let _scan = scan;
        // A connection of its own: a filter that matches little may read the whole
        // ledger, and the shared reading connection must not be held meanwhile (signing
        // and other requests wait for it).
        let reader = app2.reader.lock().unwrap_or_else(|p| p.into_inner()).reader()?;
        let mut items = Vec::new();
        // The half-open range of indexes still to look at.
        let (mut lo, mut hi) = match (desc, q.cursor) {
            (true, Some(c)) => (0, c.min(size)),
            (true, None) => (0, size),
            (false, Some(c)) => (c.saturating_add(1).min(size), size),
            (false, None) => (0, size),
        };
        while lo < hi && items.len() < limit {
            let (start, end) = if desc { (hi.saturating_sub(PAGE).max(lo), hi) } else { (lo, (lo + PAGE).min(hi)) };
            let mut rows = reader.read(start, end)?;
            if desc {
                rows.reverse();
            }
            for row in rows {
                let Ok(event) = Event::decode(&row.leaf) else {
                    return Err(ApiError::internal(format!(
                        "ledger entry {} does not decode; run `tollgate ledger verify`",
                        row.index
                    )));
                };
                if q.matches(&event) {
                    let value = serde_json::from_slice(&row.leaf).unwrap_or(serde_json::Value::Null);
                    items.push(Item {
                        index: row.index,
                        seq: row.index + 1,
                        kind: event.event.type_name(),
                        event: value,
                    });
                    if items.len() == limit {
                        let more = if desc { row.index > 0 } else { row.index + 1 < size };
                        return Ok(Page { next_cursor: more.then_some(row.index), items });
                    }
                }
            }
            if desc {
                hi = start;
            } else {
                lo = end;
            }
        }
        Ok(Page { items, next_cursor: None })
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    json(&page, size)
}
