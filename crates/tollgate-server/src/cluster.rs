//! The cluster view: every node heartbeats its sequence and state digest into the
//! shared store, and nodes that folded the same events into different states are
//! reported as drifted.
//!
//! Two nodes at the same sequence must hold the same state: the fold is deterministic.
//! A difference means a bug or a tampered node, and it is logged at error level on
//! every heartbeat until it goes away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use serde::Serialize;
use tollgate_store::{LedgerStore, NodeRecord};
use utoipa::ToSchema;

use crate::AppState;
use crate::api::json;
use crate::auth::{Permission, Principal};
use crate::problem::ApiError;

/// How often a node heartbeats.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A node silent for longer is not listed.
pub const LIVE: Duration = Duration::from_secs(10);

pub struct Cluster {
    pub node_id: String,
    /// Where this node listens, known once `serve` has bound.
    pub address: OnceLock<String>,
    /// Its own connection (`None` on SQLite, where there is one node).
    store: Option<Mutex<Box<dyn LedgerStore>>>,
    /// The digest of the last state heartbeated, by sequence: the state is encoded
    /// only when it changed.
    digest: Mutex<Option<(u64, [u8; 32])>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NodeView {
    pub id: String,
    pub address: String,
    /// The sequence the node had folded at its last heartbeat.
    pub seq: u64,
    /// SHA-256 of its state at that sequence, hex.
    pub digest: String,
    pub heartbeat_age_ms: u64,
    /// Its digest differs from others' at the same sequence.
    pub drifted: bool,
    /// This is the node that answered.
    pub this_node: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterStatus {
    pub shared: bool,
    pub nodes: Vec<NodeView>,
    /// True when any node is drifted.
    pub drift: bool,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The ids of drifted nodes: at each sequence, every node whose digest is not the one
/// most nodes there hold (all of them when no digest has a majority).
pub fn drifted(nodes: &[NodeRecord]) -> Vec<String> {
    let mut by_seq: HashMap<u64, Vec<&NodeRecord>> = HashMap::new();
    for n in nodes {
        by_seq.entry(n.seq).or_default().push(n);
    }
    let mut out = Vec::new();
    for group in by_seq.values() {
        let mut counts: HashMap<[u8; 32], usize> = HashMap::new();
        for n in group {
            *counts.entry(n.digest).or_default() += 1;
        }
        if counts.len() < 2 {
            continue;
        }
        let majority = counts.iter().find(|(_, c)| **c * 2 > group.len()).map(|(d, _)| *d);
        out.extend(group.iter().filter(|n| Some(n.digest) != majority).map(|n| n.id.clone()));
    }
    out.sort();
    out
}

impl Cluster {
    pub fn new(node_id: String, store: Option<Box<dyn LedgerStore>>) -> Self {
        Self { node_id, address: OnceLock::new(), store: store.map(Mutex::new), digest: Mutex::new(None) }
    }

    /// This node's own record, digesting the state if it changed since last time.
    fn own(&self, app: &AppState) -> Result<NodeRecord, ApiError> {
        let state = app.engine.state();
        let cached = *self.digest.lock().unwrap_or_else(|p| p.into_inner());
        let digest = match cached {
            Some((seq, d)) if seq == state.seq() => d,
            _ => {
                let d = state.digest().map_err(|e| ApiError::internal(e.to_string()))?;
                *self.digest.lock().unwrap_or_else(|p| p.into_inner()) = Some((state.seq(), d));
                d
            }
        };
        Ok(NodeRecord {
            id: self.node_id.clone(),
            address: self.address.get().cloned().unwrap_or_default(),
            seq: state.seq(),
            digest,
            age_ms: 0,
        })
    }

    /// Writes this node's heartbeat and returns every live node (just this one when
    /// the store is not shared). Blocking.
    fn beat(&self, app: &AppState) -> Result<Vec<NodeRecord>, ApiError> {
        let own = self.own(app)?;
        let Some(store) = &self.store else { return Ok(vec![own]) };
        let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
        store.heartbeat(&own)?;
        Ok(store.nodes(LIVE)?)
    }

    fn view(&self, nodes: Vec<NodeRecord>) -> ClusterStatus {
        let bad = drifted(&nodes);
        let nodes: Vec<NodeView> = nodes
            .into_iter()
            .map(|n| NodeView {
                drifted: bad.contains(&n.id),
                this_node: n.id == self.node_id,
                digest: hex(&n.digest),
                heartbeat_age_ms: n.age_ms,
                id: n.id,
                address: n.address,
                seq: n.seq,
            })
            .collect();
        ClusterStatus { shared: self.store.is_some(), drift: !bad.is_empty(), nodes }
    }
}

async fn beat(app: &Arc<AppState>) -> Result<ClusterStatus, ApiError> {
    let a = app.clone();
    let nodes = tokio::task::spawn_blocking(move || a.cluster.beat(&a))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    let status = app.cluster.view(nodes);
    for n in status.nodes.iter().filter(|n| n.drifted) {
        tracing::error!(
            node = %n.id, address = %n.address, seq = n.seq, digest = %n.digest,
            "STATE DRIFT: this node's state differs from the others' at the same sequence; stop it and rebuild it from the ledger"
        );
    }
    Ok(status)
}

/// Heartbeats until `stop` changes.
pub async fn heartbeat_job(app: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    if app.cluster.store.is_none() {
        return;
    }
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = beat(&app).await {
                    tracing::warn!(error = %e.detail, "heartbeat failed");
                }
            }
            _ = stop.changed() => return,
        }
    }
}

#[utoipa::path(get, path = "/v1/cluster/status", tag = "system", responses((status = 200, body = ClusterStatus, description = "every node that heartbeated in the last 10 s: id, address, sequence and state digest; `drifted` marks nodes whose digest differs from the others' at the same sequence. On SQLite, just this node.")), security(("bearer" = [])))]
pub async fn status(State(app): State<Arc<AppState>>, principal: Principal) -> Result<Response, ApiError> {
    principal.require(Permission::LedgerRead)?;
    let status = beat(&app).await?;
    json(&status, app.engine.state().seq())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, seq: u64, d: u8) -> NodeRecord {
        NodeRecord { id: id.into(), address: String::new(), seq, digest: [d; 32], age_ms: 0 }
    }

    #[test]
    fn the_odd_digest_out_at_a_sequence_is_drifted() {
        assert!(drifted(&[node("a", 5, 1), node("b", 5, 1), node("c", 4, 9)]).is_empty(), "other seqs differ freely");
        assert_eq!(drifted(&[node("a", 5, 1), node("b", 5, 1), node("c", 5, 2)]), vec!["c".to_string()]);
        assert_eq!(drifted(&[node("a", 5, 1), node("b", 5, 2)]), vec!["a".to_string(), "b".to_string()]);
    }
}
