//! Wills over NATS: a dead node's will, and those of its clients, published
//! once, by the survivor whose compare-and-set delete of its record
//! succeeds.
//!
//! Each node keeps a copy of its clients' wills in the bucket, under
//! `wills.{key}`: rewritten as they change (at most 1 MiB a second of
//! rewrites), and within a quarter of the bucket's age limit (it forgets
//! what is not rewritten); a node that leaves deletes
//! it. The survivor that claims a dead node's record takes the wills of
//! that copy in as its own pending wills, each due when its delay ends,
//! counted from the node's last record: so they are in its copy from then
//! on, and outlive it too. A client that comes back to any node (a WILL of
//! its session arrives) is told under `back.{key}`: its pending will, on
//! whichever node holds it, is cancelled.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// What the keys of clients' returns start with.
pub(super) const RETURN_PREFIX: &str = "back.";

/// How long a client's return is not told again.
const RETELL_AFTER: Duration = Duration::from_secs(1);

/// The most sessions remembered as told.
const MAX_TOLD: usize = 4096;

/// How long the copy waits for more changes before it is written.
const SETTLE: Duration = Duration::from_millis(50);

/// The most bytes a second the copy is rewritten with as wills change: a
/// client that sends WILLs in a loop costs NATS no more than this.
const COPY_BYTES_PER_SECOND: f64 = 1024.0 * 1024.0;

/// What the copy leaves free of NATS's largest message.
const MARGIN: usize = 1024;

/// The key of the copy of node `id`'s clients' wills.
fn key_of_wills(id: &str) -> String {
    format!("{KEY_PREFIX}{}", key(id))
}

/// Where a client with a session last sent its WILL (the value of its
/// return's key).
#[derive(serde::Serialize, serde::Deserialize)]
struct Return {
    session: String,
    node: String,
}

/// The key that says where session `session`'s client last came.
fn key_of_return(session: &str) -> String {
    format!("{RETURN_PREFIX}{}", key(session))
}

/// The wills this node's server holds.
fn wills_of(nats: &Nats) -> Option<Wills> {
    let mesh = nats.mesh.upgrade()?;
    Some(mesh.server.get()?.wills.clone())
}

/// Keeps the copy of this node's clients' wills in the bucket, until `stop`
/// or until the node leaves (then no survivor claims its record).
pub(super) async fn keep(nats: Arc<Nats>, wills: Wills, stop: CancellationToken) {
    use tokio::time::Instant;
    let Some(mesh) = nats.mesh.upgrade() else { return };
    let interval = mesh.config.status_interval;
    drop(mesh);
    let mut changes = wills.changes();
    // How often the copy is rewritten unchanged, once the bucket says.
    let mut refresh_every = None;
    let mut next_refresh = Instant::now();
    // Before then, no rewrite for a change: a large copy is rewritten less often.
    let mut quiet_until = Instant::now();
    // Whether the bucket holds a copy this run wrote. One an earlier run of
    // this node's id left is not deleted: this run took it in already
    // (`first_write`), or a survivor that claimed that run is taking it in.
    let mut stored = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                // Clients come and go in bursts: one write for the burst.
                tokio::time::sleep(SETTLE).await;
                tokio::time::sleep_until(quiet_until).await;
                changes.borrow_and_update();
            }
            () = tokio::time::sleep_until(next_refresh) => {}
        }
        if nats.leaving.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        next_refresh = Instant::now() + refresh_every.unwrap_or(interval);
        let Some(store) = nats.bucket.get() else { continue };
        // Not before this run's record: an earlier run's copy is read first.
        if nats.revision.load(std::sync::atomic::Ordering::Acquire) == 0 {
            continue;
        }
        if refresh_every.is_none() {
            refresh_every = store.status().await.ok().map(|status| refresh_period(status.max_age(), interval));
        }
        let started = Instant::now();
        if let Some((now, bytes)) = write_copy(&nats, store, &wills, stored).await {
            stored = now;
            quiet_until = started + Duration::from_secs_f64(bytes as f64 / COPY_BYTES_PER_SECOND);
        }
        next_refresh = Instant::now() + refresh_every.unwrap_or(interval);
    }
}

/// How often an unchanged copy is rewritten: within a quarter of the
/// bucket's age limit, so that it is there when a survivor looks for it
/// (the limit is at least three times what a death takes to be noticed).
fn refresh_period(max_age: Duration, status_interval: Duration) -> Duration {
    if max_age.is_zero() {
        // A bucket whose entries never expire.
        return Duration::from_secs(60).max(status_interval);
    }
    (max_age / 4).max(status_interval)
}

/// Writes the copy of this node's clients' wills as they are now (deletes
/// it if there are none and it may be there); returns whether the bucket
/// holds one and the bytes written, or `None` if it could not be written.
async fn write_copy(nats: &Nats, store: &kv::Store, wills: &Wills, stored: bool) -> Option<(bool, usize)> {
    let mesh = nats.mesh.upgrade()?;
    let key = key_of_wills(&mesh.id);
    drop(mesh);
    let mut held = wills.held();
    if held.is_empty() {
        if stored {
            store.delete(&key).await.ok()?;
        }
        return Some((false, 0));
    }
    let all = held.len();
    let max_bytes = nats.client.server_info().max_payload.saturating_sub(MARGIN);
    let bytes = encode_within(&mut held, max_bytes)?;
    if held.len() < all {
        tracing::warn!(
            kept = held.len(),
            left_out = all - held.len(),
            "this node's clients' wills exceed NATS's largest message: the largest die with the node"
        );
    }
    let written = bytes.len();
    match store.put(&key, bytes.into()).await {
        Ok(_) => Some((true, written)),
        Err(e) => {
            tracing::debug!("the copy of this node's clients' wills was not stored: {e}");
            None
        }
    }
}

/// `held` encoded in at most `max_bytes`, leaving out the largest wills
/// that do not fit (so that one large will does not push out many small).
fn encode_within(held: &mut Vec<HeldWill>, max_bytes: usize) -> Option<Vec<u8>> {
    let size = |will: &HeldWill| will.topic.len() + rmp_serde::to_vec(&will.data).map_or(0, |data| data.len());
    held.sort_by_cached_key(|will| std::cmp::Reverse(size(will)));
    loop {
        match rmp_serde::to_vec_named(&*held) {
            Ok(bytes) if bytes.len() <= max_bytes || held.is_empty() => return Some(bytes),
            Ok(bytes) => {
                // Out go the largest first, at least one, about as many as the excess.
                let over = bytes.len() - max_bytes;
                let mut freed = 0;
                let mut out = 0;
                while freed < over && out < held.len() {
                    freed += size(&held[out]);
                    out += 1;
                }
                held.drain(..out.max(1));
            }
            Err(e) => {
                tracing::warn!("this node's clients' wills did not encode: {e}");
                return None;
            }
        }
    }
}

/// Deletes the copy of this node's clients' wills: it leaves, and its
/// clients did not fail.
pub(super) async fn forget(nats: &Nats, id: &str) {
    if let Some(store) = nats.bucket.get() {
        let _ = tokio::time::timeout(Duration::from_secs(1), store.delete(key_of_wills(id))).await;
    }
}

/// Tells the other nodes of each client that came back to this one (a WILL
/// with its session arrived), by a key in the bucket, until `stop`.
pub(super) async fn announce_returns(nats: Arc<Nats>, wills: Wills, stop: CancellationToken) {
    let Some(me) = nats.mesh.upgrade().map(|mesh| mesh.id.clone()) else { return };
    let mut returns = wills.returns();
    // A client that sends many WILLs is told once a second.
    let mut told: HashMap<String, Instant> = HashMap::new();
    loop {
        let session = tokio::select! {
            () = stop.cancelled() => return,
            session = returns.recv() => match session {
                Ok(session) => session,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "returns of clients were not told to the other nodes");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        };
        let now = Instant::now();
        if told.get(&session).is_some_and(|at| now.duration_since(*at) < RETELL_AFTER) {
            continue;
        }
        if told.len() >= MAX_TOLD {
            told.retain(|_, at| now.duration_since(*at) < RETELL_AFTER);
        }
        told.insert(session.clone(), now);
        let Some(store) = nats.bucket.get() else { continue };
        let key = key_of_return(&session);
        let Ok(told) = rmp_serde::to_vec_named(&Return { session, node: me.clone() }) else { continue };
        if let Err(e) = store.put(key, told.into()).await {
            tracing::debug!("a client's return was not told to the other nodes: {e}");
        }
    }
}

/// Cancels the pending wills of the clients that came back to another node,
/// as their returns are told, until `stop`.
pub(super) async fn follow_returns(nats: Arc<Nats>, wills: Wills, stop: CancellationToken) {
    let Some(me) = nats.mesh.upgrade().map(|mesh| mesh.id.clone()) else { return };
    let store = loop {
        if let Some(store) = nats.bucket.get() {
            break store.clone();
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            () = stop.cancelled() => return,
        }
    };
    loop {
        let mut returns = match store.watch(format!("{RETURN_PREFIX}>")).await {
            Ok(returns) => returns,
            Err(e) => {
                tracing::debug!("the returns of clients cannot be followed yet: {e}");
                tokio::select! {
                    () = tokio::time::sleep(RETRY) => continue,
                    () = stop.cancelled() => return,
                }
            }
        };
        loop {
            let entry = tokio::select! {
                () = stop.cancelled() => return,
                entry = returns.next() => entry,
            };
            match entry {
                Some(Ok(entry)) if entry.operation == kv::Operation::Put => {
                    // Its WILL here cancelled what was pending here already.
                    match rmp_serde::from_slice::<Return>(&entry.value) {
                        Ok(back) if back.node != me => wills.client_is_back(&back.session),
                        _ => {}
                    }
                }
                Some(_) => {}
                // The watch ended (NATS went away): watched again.
                None => break,
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
                inherit(&nats, store, &id, claimed.last_seen_ms, claimed.before).await;
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
    /// A revision of the bucket after the claim: a copy written later is
    /// not the dead node's (a new run of its id wrote it).
    before: u64,
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
    match store.delete_expect_revision(key.clone(), Some(entry.revision)).await {
        Ok(()) => {
            // The delete's own revision, or a later one's.
            let before = store.entry(key).await.ok().flatten().map_or(u64::MAX, |entry| entry.revision);
            Ok(Some(Claimed { will: node.will, last_seen_ms: written_ms, before }))
        }
        // Another survivor was first, or the node wrote again.
        Err(e) if e.kind() == kv::DeleteErrorKind::WrongLastRevision => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// When `entry` was written, in ms since the epoch.
pub(super) fn millis_of(entry: &kv::Entry) -> u64 {
    u64::try_from(entry.created.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// Takes in the wills of dead node `id`'s clients as pending wills of this
/// node, each due when its delay ends (at once if that is past): kept in
/// this node's copy from then on, so that they outlive it too, and
/// cancelled if their client comes back. A client that came back before
/// (its return told after the node's last record, or its will in force
/// here) has none. `id` may be this node's own: an earlier run's.
pub(super) async fn inherit(nats: &Nats, store: &kv::Store, id: &str, last_seen_ms: u64, before: u64) {
    let Some(wills) = wills_of(nats) else { return };
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
    if entry.revision > before {
        tracing::debug!(dead = %id, "the copy of a dead node's clients' wills is a new run's: not taken in");
        return;
    }
    let held: Vec<HeldWill> = match rmp_serde::from_slice(&entry.value) {
        Ok(held) => held,
        Err(e) => {
            tracing::warn!(dead = %id, "the copy of a dead node's clients' wills did not decode: {e}");
            return;
        }
    };
    tracing::info!(dead = %id, wills = held.len(), "taking in the wills of a dead node's clients");
    // A pending will's delay was what was left of it when the copy was written.
    let written_ms = millis_of(&entry);
    for will in held {
        let due_ms = (if will.pending { written_ms } else { last_seen_ms }).saturating_add(will.delay_ms);
        if let (Some(session), false) = (&will.session, will.delay_ms == 0) {
            if came_back(store, session, id, last_seen_ms).await {
                tracing::debug!(dead = %id, topic = %will.topic, "a will of a dead node's client was cancelled: its client came back");
                continue;
            }
        }
        wills.adopt(will, Duration::from_millis(due_ms.saturating_sub(now_ms())));
    }
    // In this node's copy before out of the dead one's (an earlier run's
    // copy of this node is replaced).
    let _ = write_copy(nats, store, &wills, true).await;
    if nats.mesh.upgrade().is_some_and(|mesh| mesh.id != id) {
        let _ = store.delete(&key).await;
    }
}

/// Whether `session`'s client came to a node other than `dead` after
/// `since_ms` (when `dead` was last seen).
async fn came_back(store: &kv::Store, session: &str, dead: &str, since_ms: u64) -> bool {
    let Ok(Some(entry)) = store.entry(key_of_return(session)).await else { return false };
    let elsewhere = rmp_serde::from_slice::<Return>(&entry.value).is_ok_and(|back| back.node != dead);
    entry.operation == kv::Operation::Put && elsewhere && millis_of(&entry) > since_ms
}
