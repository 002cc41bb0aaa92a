//! Membership over NATS: status reports on a subject, and records in a
//! JetStream key-value bucket.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::subject::key;
use super::{wills, Nats};
use crate::mesh::node::now_ms;
use crate::mesh::peer::Peer;
use crate::mesh::{MeshInner, Node, NodeState};

/// How long a record outlives its node's last write, at least: long enough
/// for the survivors to notice the node is `down` and claim its will.
const MIN_RECORD_TTL: Duration = Duration::from_secs(30);

/// The longest node id this node believes (the builder allows no longer).
const MAX_NODE_ID: usize = crate::mesh::MAX_NODE_ID;

/// How long to wait between tries at the bucket while it cannot be reached.
pub(super) const RETRY: Duration = Duration::from_millis(500);

impl Nats {
    /// How long a node may be silent before it is `suspect`: two reports
    /// missed, and half an interval more.
    pub(super) fn silent_after(mesh: &MeshInner) -> Duration {
        mesh.config.status_interval * 5 / 2
    }
}

/// Reports and stores this node's record as it changes, and follows the
/// others' reports, until `stop`.
pub(super) async fn run(nats: Arc<Nats>, stop: CancellationToken) {
    let Some(mesh) = nats.mesh.upgrade() else { return };
    let (silent_after, interval, down_after) =
        (Nats::silent_after(&mesh), mesh.config.status_interval, mesh.config.down_after);
    let me = mesh.id.clone();
    drop(mesh);
    let mut reports = match nats.client.subscribe(nats.statuses.any()).await {
        Ok(reports) => reports,
        Err(e) => {
            tracing::error!("this node cannot follow the mesh's reports on NATS: {e}");
            return;
        }
    };
    let bucket = tokio::spawn(open_bucket(nats.clone(), silent_after + down_after, stop.clone()));
    let mut record = nats.record.subscribe();
    let mut online = nats.online.clone();
    let mut sweep = tokio::time::interval((interval / 2).max(Duration::from_millis(5)));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut bucket = Some(bucket);
    // When to try storing the record again, after a failed write.
    let mut store_again: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            report = reports.next() => {
                let Some(report) = report else { return };
                heard(&nats, &me, &report.payload, |id| report.subject.as_str() == nats.statuses.of_name(id));
            }
            changed = record.changed() => {
                if changed.is_err() {
                    return;
                }
                let bytes = record.borrow_and_update().clone();
                if let Some(bytes) = bytes {
                    store_again = report_and_store(&nats, &me, bytes).await;
                }
            }
            Ok(Some(store)) = async { bucket.as_mut().expect("guarded").await }, if bucket.is_some() => {
                bucket = None;
                discover(&nats, &me, &store).await;
                let bytes = record.borrow().clone();
                if let Some(bytes) = bytes {
                    store_again = report_and_store(&nats, &me, bytes).await;
                }
            }
            changed = online.changed() => {
                if changed.is_err() {
                    return;
                }
                if *online.borrow_and_update() {
                    // Silence while this node was cut off says nothing of the others.
                    if let Some(mesh) = nats.mesh.upgrade() {
                        mesh.members.heard_all_now();
                    }
                }
            }
            () = sleep_until(store_again), if store_again.is_some() => {
                let bytes = record.borrow().clone();
                store_again = match bytes {
                    Some(bytes) => store(&nats, &me, bytes).await,
                    None => None,
                };
            }
            _ = sweep.tick() => {
                // Cut off, this node hears nobody: it suspects no one for that.
                if *nats.online.borrow() {
                    if let Some(mesh) = nats.mesh.upgrade() {
                        for id in mesh.members.silent_since(silent_after, NodeState::Up) {
                            mesh.members.set_state(&id, NodeState::Suspect);
                        }
                        for id in mesh.members.silent_since(silent_after + down_after, NodeState::Suspect) {
                            mesh.down(&id);
                        }
                    }
                }
            }
        }
    }
}

/// A node's report: it is `up` (again), reports itself, or left.
fn heard(nats: &Arc<Nats>, me: &str, payload: &[u8], from: impl Fn(&str) -> bool) {
    let Some(mesh) = nats.mesh.upgrade() else { return };
    let node: Node = match rmp_serde::from_slice(payload) {
        Ok(node) => node,
        Err(e) => {
            tracing::debug!("a node's report on NATS did not decode: {e}");
            return;
        }
    };
    if node.id == me || node.legacy {
        return;
    }
    // A node reports itself on its own subject (and is stored under its own
    // key): a report of another's is a forgery.
    if node.id.len() > MAX_NODE_ID || !from(&node.id) {
        tracing::debug!(id = %node.id.chars().take(64).collect::<String>(), "a node's report on another's subject, ignored");
        return;
    }
    let id = node.id.clone();
    // A rise in its gaps: events it sent may not have come; its reports
    // reach every node, where its next event reaches only those that want it.
    let gaps = |node: &Node| node.status.as_ref().map_or(0, |s| s.event_gaps);
    if mesh.members.get(&id).is_some_and(|known| gaps(&node) > gaps(&known)) {
        mesh.hub.report_lost(None, 0, crate::mesh::messages::RESERVED);
    }
    match (mesh.members.state(&id), node.state) {
        (_, NodeState::Left) => {
            mesh.members.set_state(&id, NodeState::Left);
        }
        // Gone for good: a node that left does not come back under its id.
        (Some(NodeState::Left), _) => {}
        (Some(NodeState::Up), _) => mesh.members.report(&id, node),
        _ => {
            mesh.came_back(&id);
            mesh.members.up(node, Peer::Nats(nats.inbox(&id)), "");
        }
    }
}

/// Reports this node's record on its status subject, and stores it;
/// returns when to try storing it again if it could not.
async fn report_and_store(nats: &Nats, me: &str, record: bytes::Bytes) -> Option<tokio::time::Instant> {
    if let Err(e) = nats.client.publish(nats.statuses.of_name(me), record.clone()).await {
        tracing::debug!("this node's report was not sent to NATS: {e}");
    }
    store(nats, me, record).await
}

/// Writes this node's record whatever revision the bucket holds.
async fn put_record(store: &kv::Store, me: &str, record: bytes::Bytes) -> Result<u64, String> {
    store.put(key(me), record).await.map_err(|e| e.to_string())
}

/// The first write of this run's record. An earlier run of this node's id
/// that did not leave (it was killed and restarted before the others took
/// it for dead) is taken over: its record replaced at the revision read,
/// so no survivor claims it, and the wills it held for its clients taken
/// in, due as if a survivor had. A record claimed meanwhile is the
/// survivor's to mourn.
async fn first_write(nats: &Nats, store: &kv::Store, me: &str, record: bytes::Bytes) -> Result<u64, String> {
    let earlier = store.entry(key(me)).await.map_err(|e| e.to_string())?;
    let Some(mut earlier) = earlier.filter(|e| e.operation == kv::Operation::Put) else {
        return put_record(store, me, record).await;
    };
    // Written lately: perhaps by a node alive under this id. Taken over
    // only once it stays unchanged as long as a silent node takes to be
    // suspected.
    let silent_after = nats.mesh.upgrade().map_or(Duration::ZERO, |mesh| Nats::silent_after(&mesh));
    let age = Duration::from_millis(now_ms().saturating_sub(wills::millis_of(&earlier)));
    if age < silent_after {
        tokio::time::sleep(silent_after - age + Duration::from_millis(100)).await;
        match store.entry(key(me)).await.map_err(|e| e.to_string())? {
            Some(again) if again.revision == earlier.revision => earlier = again,
            Some(again) if again.operation == kv::Operation::Put => {
                tracing::error!("another node runs under this node's id: give each node its own");
                return put_record(store, me, record).await;
            }
            // Claimed by a survivor meanwhile: its to mourn.
            _ => return put_record(store, me, record).await,
        }
    }
    match store.update(key(me), record.clone(), earlier.revision).await {
        Ok(revision) => {
            let left = rmp_serde::from_slice::<Node>(&earlier.value).is_ok_and(|n| n.state == NodeState::Left);
            if !left {
                tracing::info!("taking over the earlier run of this node's id, and its clients' wills");
                // This run writes no copy before its record: the one there is the earlier run's.
                wills::inherit(nats, store, me, wills::millis_of(&earlier), u64::MAX).await;
            }
            Ok(revision)
        }
        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => put_record(store, me, record).await,
        Err(e) => Err(e.to_string()),
    }
}

/// Stores this node's record in the bucket, once it is open; returns when
/// to try again if it could not.
async fn store(nats: &Nats, me: &str, record: bytes::Bytes) -> Option<tokio::time::Instant> {
    let Some(store) = nats.bucket.get() else {
        nats.left.notify_one();
        return None;
    };
    let written = match nats.revision.load(std::sync::atomic::Ordering::Acquire) {
        0 => first_write(nats, store, me, record).await,
        revision => match store.update(key(me), record.clone(), revision).await {
            Ok(revision) => Ok(revision),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                match store.entry(key(me)).await {
                    // A write that timed out (NATS was cut off) landed after
                    // all: this node's record is there, at a later revision.
                    Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                        store.update(key(me), record, entry.revision).await.map_err(|e| e.to_string())
                    }
                    // Deleted: the survivors took this node for dead (it
                    // was paused, or cut off) and one claimed its record:
                    // its will and its clients' were published. Those are
                    // spent, lest they come twice; its record is written anew.
                    Ok(_) => {
                        tracing::warn!(
                            "this node was taken for dead and its wills published: its clients' wills are dropped"
                        );
                        if let Some(mesh) = nats.mesh.upgrade() {
                            if let Some(server) = mesh.server.get() {
                                server.wills.spend_all();
                            }
                        }
                        put_record(store, me, record).await
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => Err(e.to_string()),
        },
    };
    match written {
        Ok(revision) => {
            nats.revision.store(revision, std::sync::atomic::Ordering::Release);
            // The last record of a node that leaves says so: it is stored.
            if nats.leaving.load(std::sync::atomic::Ordering::Acquire) {
                nats.left.notify_one();
            }
            None
        }
        // A bucket just made may not take writes on every server yet.
        Err(e) => {
            tracing::debug!("this node's record was not stored yet: {e}");
            Some(tokio::time::Instant::now() + RETRY)
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Opens the bucket of records, creating it if it is not there, trying
/// until it can be reached.
async fn open_bucket(nats: Arc<Nats>, ttl: Duration, stop: CancellationToken) -> Option<kv::Store> {
    let js = jetstream::new(nats.client.clone());
    loop {
        let opened = match js.get_key_value(&nats.bucket_name).await {
            Ok(store) => Ok(store),
            Err(_) => {
                let config = kv::Config {
                    bucket: nats.bucket_name.clone(),
                    description: "webmesh: the records of a mesh's nodes".into(),
                    history: 1,
                    max_age: (ttl * 3).max(MIN_RECORD_TTL),
                    // One replica: several nodes creating a replicated
                    // stream at once on a cluster that has just formed lost
                    // its records in our tests. An operator who wants the
                    // bucket to outlive a server creates it first with 3.
                    num_replicas: 1,
                    ..Default::default()
                };
                js.create_key_value(config).await.map_err(|e| e.to_string())
            }
        };
        match opened {
            Ok(store) => {
                tracing::debug!(bucket = %nats.bucket_name, "the mesh's bucket is open");
                let _ = nats.bucket.set(store.clone());
                return Some(store);
            }
            Err(e) => tracing::debug!(bucket = %nats.bucket_name, "the mesh's bucket on NATS is not there yet: {e}"),
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            () = stop.cancelled() => return None,
        }
    }
}

/// Learns the nodes whose records are in the bucket.
async fn discover(nats: &Arc<Nats>, me: &str, store: &kv::Store) {
    let keys: Vec<String> = match store.keys().await {
        Ok(keys) => keys.filter_map(|key| async move { key.ok() }).collect().await,
        Err(e) => {
            tracing::debug!("the records of the mesh's nodes could not be listed: {e}");
            return;
        }
    };
    tracing::debug!(records = keys.len(), "the mesh's records");
    // The copies of clients' wills, and their returns, are not records.
    let records =
        keys.into_iter().filter(|key| !key.starts_with(wills::KEY_PREFIX) && !key.starts_with(wills::RETURN_PREFIX));
    for stored in records {
        let Ok(Some(entry)) = store.entry(stored).await else { continue };
        if entry.operation == kv::Operation::Put {
            heard(nats, me, &entry.value, |id| entry.key == key(id));
        }
    }
}

/// Reports and stores this node's record as `left` (so no survivor
/// publishes its will), through the task that writes its records, after
/// any write under way.
pub(super) async fn leave(nats: &Nats, node: &mut Node) {
    node.state = NodeState::Left;
    if let Ok(bytes) = rmp_serde::to_vec_named(&*node) {
        nats.record.send_replace(Some(bytes.into()));
        let _ = tokio::time::timeout(Duration::from_secs(1), nats.left.notified()).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), nats.client.flush()).await;
}
