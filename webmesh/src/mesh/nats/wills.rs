//! Wills over NATS: a dead node's will, and those of its clients, published
//! once, by the survivor whose compare-and-set delete of its record
//! succeeds.
//!
//! Each node keeps a copy of its clients' wills in the bucket, under
//! `wills.{key}`: rewritten as they change, and with each status interval
//! (the bucket forgets what is not rewritten). The survivor that claims a
//! dead node's record takes that copy too, and publishes each will when
//! its delay ends, counted from the node's last record: unless the client,
//! with a delay and a session, came back to another node (whose copy holds
//! a will of its session by then).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::members::RETRY;
use super::subject::key;
use super::Nats;
use crate::mesh::node::now_ms;
use crate::mesh::{Node, NodeState, NodeWill};
use crate::server::{HeldWill, Wills};

/// What the keys of the copies of clients' wills start with (a node's own
/// key has no dot).
pub(super) const KEY_PREFIX: &str = "wills.";

/// How long the copy waits for more changes before it is written.
const SETTLE: Duration = Duration::from_millis(50);

/// What the copy leaves free of NATS's largest message.
const MARGIN: usize = 1024;

/// The key of the copy of node `id`'s clients' wills.
fn key_of_wills(id: &str) -> String {
    format!("{KEY_PREFIX}{}", key(id))
}

/// Keeps the copy of this node's clients' wills in the bucket, until `stop`
/// or until the node leaves (then no survivor claims its record).
pub(super) async fn keep(nats: Arc<Nats>, wills: Wills, stop: CancellationToken) {
    let Some(mesh) = nats.mesh.upgrade() else { return };
    let (key, interval) = (key_of_wills(&mesh.id), mesh.config.status_interval);
    drop(mesh);
    let max_bytes = nats.client.server_info().max_payload.saturating_sub(MARGIN);
    let mut changes = wills.changes();
    let mut refresh = tokio::time::interval(interval);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether the bucket may hold a copy: one from an earlier run of this
    // node's id may be there, which a later death must not publish.
    let mut stored = true;
    let mut truncated = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                // Clients come and go in bursts: one write for the burst.
                tokio::time::sleep(SETTLE).await;
                changes.borrow_and_update();
            }
            _ = refresh.tick() => {}
        }
        if nats.leaving.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let Some(store) = nats.bucket.get() else { continue };
        let mut held = wills.held();
        if held.is_empty() {
            if stored && store.delete(&key).await.is_ok() {
                stored = false;
            }
            continue;
        }
        let all = held.len();
        let Some(bytes) = encode_within(&mut held, max_bytes) else { continue };
        if held.len() < all && !std::mem::replace(&mut truncated, true) {
            tracing::warn!(
                kept = held.len(),
                "this node's clients' wills exceed NATS's largest message: the others die with the node"
            );
        }
        match store.put(&key, bytes.into()).await {
            Ok(_) => stored = true,
            Err(e) => tracing::debug!("the copy of this node's clients' wills was not stored: {e}"),
        }
    }
}

/// `held` encoded in at most `max_bytes`, leaving out the wills that do not fit.
fn encode_within(held: &mut Vec<HeldWill>, max_bytes: usize) -> Option<Vec<u8>> {
    loop {
        match rmp_serde::to_vec_named(&*held) {
            Ok(bytes) if bytes.len() <= max_bytes || held.is_empty() => return Some(bytes),
            Ok(_) => held.truncate(held.len() * 3 / 4),
            Err(e) => {
                tracing::warn!("this node's clients' wills did not encode: {e}");
                return None;
            }
        }
    }
}

/// Node `id` is `down`: this node deletes its record if no other did (a
/// compare-and-set on its revision), and if it did, publishes its will and
/// those of its clients.
pub(super) async fn mourn(nats: Arc<Nats>, id: String, stop: CancellationToken) {
    let Some(mesh) = nats.mesh.upgrade() else { return };
    let silent_after = Nats::silent_after(&mesh);
    drop(mesh);
    // Tried for a while: the bucket may not be open yet (a new cluster
    // elects its JetStream leader), or NATS may be out of reach.
    for _ in 0..40 {
        let Some(store) = nats.bucket.get() else {
            tokio::select! {
                () = tokio::time::sleep(RETRY) => continue,
                () = stop.cancelled() => return,
            }
        };
        match claim(store, &id, silent_after).await {
            Ok(Some(claimed)) => {
                if let Some(will) = claimed.will {
                    tracing::info!(dead = %id, topic = %will.topic, "publishing the will of a node that died");
                    publish(&nats, &will.topic, &will.data);
                }
                inherit(&nats, store, &id, claimed.last_seen_ms, &stop).await;
                return;
            }
            Ok(None) => return,
            Err(e) => tracing::debug!(dead = %id, "the record of a dead node could not be claimed yet: {e}"),
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            () = stop.cancelled() => return,
        }
    }
}

fn publish(nats: &Nats, topic: &str, data: &(impl serde::Serialize + ?Sized)) {
    if let Some(mesh) = nats.mesh.upgrade() {
        if let Err(e) = mesh.hub.publish(topic, data) {
            tracing::warn!(topic, "a will of the dead could not be published: {e}");
        }
    }
}

/// A dead node's record, deleted by this node.
struct Claimed {
    will: Option<NodeWill>,
    /// When the node last wrote its record, in ms since the epoch.
    last_seen_ms: u64,
}

/// Deletes node `id`'s record at the revision read, if it is still there
/// and stale; returns what it held if this node deleted it.
async fn claim(store: &kv::Store, id: &str, silent_after: Duration) -> Result<Option<Claimed>, String> {
    let key = key(id);
    let Some(entry) = store.entry(key.clone()).await.map_err(|e| e.to_string())? else { return Ok(None) };
    if entry.operation != kv::Operation::Put {
        // Deleted: another survivor claimed its will.
        return Ok(None);
    }
    let written_ms = millis_of(&entry);
    if now_ms().saturating_sub(written_ms) < silent_after.as_millis() as u64 {
        // Written lately: the node lives, this node only lost sight of it.
        return Ok(None);
    }
    let node: Node = rmp_serde::from_slice(&entry.value).map_err(|e| e.to_string())?;
    if node.state == NodeState::Left {
        return Ok(None);
    }
    match store.delete_expect_revision(key, Some(entry.revision)).await {
        Ok(()) => Ok(Some(Claimed { will: node.will, last_seen_ms: written_ms })),
        // Another survivor was first, or the node wrote again.
        Err(e) if e.kind() == kv::DeleteErrorKind::WrongLastRevision => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// When `entry` was written, in ms since the epoch.
fn millis_of(entry: &kv::Entry) -> u64 {
    u64::try_from(entry.created.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// Publishes the wills of dead node `id`'s clients, each when its delay
/// ends; at once, if this node stops first (as a server that shuts down
/// publishes the wills of its clients that are gone).
async fn inherit(nats: &Nats, store: &kv::Store, id: &str, last_seen_ms: u64, stop: &CancellationToken) {
    let key = key_of_wills(id);
    let mut entry = None;
    for _ in 0..10 {
        match store.entry(key.clone()).await {
            Ok(found) => {
                entry = found.filter(|e| e.operation == kv::Operation::Put);
                break;
            }
            Err(e) => {
                tracing::debug!(dead = %id, "the copy of a dead node's clients' wills could not be read yet: {e}")
            }
        }
        tokio::time::sleep(RETRY).await;
    }
    let Some(entry) = entry else { return };
    let _ = store.delete(&key).await;
    let held: Vec<HeldWill> = match rmp_serde::from_slice(&entry.value) {
        Ok(held) => held,
        Err(e) => {
            tracing::warn!(dead = %id, "the copy of a dead node's clients' wills did not decode: {e}");
            return;
        }
    };
    // A pending will's delay was what was left of it when the copy was written.
    let written_ms = millis_of(&entry);
    let mut due: Vec<(u64, HeldWill)> = held
        .into_iter()
        .map(|will| ((if will.pending { written_ms } else { last_seen_ms }).saturating_add(will.delay_ms), will))
        .collect();
    due.sort_by_key(|(at, _)| *at);
    tracing::info!(dead = %id, wills = due.len(), "publishing the wills of a dead node's clients as they fall due");
    for (at, will) in due {
        let wait = Duration::from_millis(at.saturating_sub(now_ms()));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => {}
        }
        if let (Some(session), false) = (&will.session, will.delay_ms == 0) {
            if back_elsewhere(store, id, session).await {
                tracing::debug!(dead = %id, topic = %will.topic, "a will of a dead node's client was cancelled: its client came back");
                continue;
            }
        }
        publish(nats, &will.topic, &will.data);
    }
}

/// Whether a node other than `dead` holds a will of `session`: its client
/// came back there.
async fn back_elsewhere(store: &kv::Store, dead: &str, session: &str) -> bool {
    let Ok(keys) = store.keys().await else { return false };
    let dead = key_of_wills(dead);
    let keys: Vec<String> =
        keys.filter_map(|key| async move { key.ok().filter(|key| key.starts_with(KEY_PREFIX)) }).collect().await;
    for key in keys.into_iter().filter(|key| *key != dead) {
        let Ok(Some(entry)) = store.entry(key).await else { continue };
        let held: Vec<HeldWill> = rmp_serde::from_slice(&entry.value).unwrap_or_default();
        if held.iter().any(|will| will.session.as_deref() == Some(session)) {
            return true;
        }
    }
    false
}
