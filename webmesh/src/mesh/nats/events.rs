//! Events over NATS: this node's own go to their topics' subjects; the
//! patterns its subscribers hold are its NATS subscriptions.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::{StreamExt, StreamMap};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::subject::Subjects;
use super::transport::MaxPayload;
use super::{wire, Nats};
use crate::mesh::messages::RESERVED;
use crate::pubsub::{Interest, TopicPattern, Uplink};

/// The most bytes of events waiting for the NATS connection; past it, this
/// node drops its events for other nodes, and the next one it sends tells
/// them so.
const MAX_PENDING_BYTES: usize = 64 << 20;

/// How long a stopping node waits for its last events to reach NATS.
const FLUSH_AT_STOP: std::time::Duration = std::time::Duration::from_secs(1);

/// Where this node may have failed to send its events to the other nodes:
/// events dropped (NATS too slow, an event too large for it, a publish
/// that failed) or a connection that dropped with events on their way.
///
/// The next event it sends says so (its GAP flag), for the nodes that
/// want that event; and the count goes in this node's status reports,
/// which every node hears, for the others.
#[derive(Default)]
pub(super) struct Gaps {
    /// Set by a gap, taken by the next event sent.
    open: AtomicBool,
    /// Losses since the node started.
    count: AtomicU64,
}

impl Gaps {
    /// Events may have been lost: each loss counts (the other nodes may
    /// have heard of the last already); returns whether this one opened
    /// the gap.
    pub(super) fn open(&self) -> bool {
        self.count.fetch_add(1, Ordering::Relaxed);
        !self.open.swap(true, Ordering::Relaxed)
    }

    /// Whether a gap is open, closing it: the event sent now says so.
    fn take(&self) -> bool {
        self.open.swap(false, Ordering::Relaxed)
    }

    /// Losses since the node started.
    pub(super) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// The hub's uplink, which sends this node's events to their subjects
/// (of `subjects`), in order, from a task of its own until `stop`.
pub(super) fn uplink(nats: &Nats, tasks: &TaskTracker, stop: CancellationToken) -> Arc<dyn Uplink> {
    let (client, gaps) = (nats.client.clone(), nats.gaps.clone());
    let (queue, mut queued) = mpsc::unbounded_channel::<(String, Bytes)>();
    let uplink = Arc::new(Sender {
        client: client.clone(),
        max_payload: nats.max_payload.clone(),
        subjects: nats.topics.clone(),
        // This run of this node, among the publishers of events.
        origin: fastrand::u64(..),
        seq: AtomicU64::new(0),
        pending: Arc::new(AtomicUsize::new(0)),
        gaps: gaps.clone(),
        queue,
    });
    let pending = uplink.pending.clone();
    tasks.spawn(async move {
        loop {
            let next = tokio::select! {
                next = queued.recv() => next,
                () = stop.cancelled() => break,
            };
            let Some((subject, event)) = next else { break };
            pending.fetch_sub(event.len(), Ordering::Relaxed);
            if let Err(e) = client.publish(subject, event).await {
                tracing::debug!("an event was not sent to NATS: {e}");
                gaps.open();
            }
        }
        // The node stops: what it published last (the wills its server
        // publishes as it shuts down, say) still goes out.
        while let Ok((subject, event)) = queued.try_recv() {
            let _ = client.publish(subject, event).await;
        }
        let _ = tokio::time::timeout(FLUSH_AT_STOP, client.flush()).await;
    });
    uplink
}

struct Sender {
    client: async_nats::Client,
    max_payload: Arc<MaxPayload>,
    subjects: Subjects,
    origin: u64,
    seq: AtomicU64,
    /// Bytes queued and not yet handed to the NATS client.
    pending: Arc<AtomicUsize>,
    gaps: Arc<Gaps>,
    queue: mpsc::UnboundedSender<(String, Bytes)>,
}

impl Uplink for Sender {
    fn event(&self, topic: &str, data: Bytes) {
        // The mesh's own topics are its members' business, on NATS as on links.
        if topic.starts_with(RESERVED) {
            return;
        }
        if self.max_payload.check(&self.client, data.len() + wire::EVENT_HEADER).is_err() {
            tracing::warn!(%topic, "an event over NATS's largest message is not sent to other nodes");
            self.gaps.open();
            return;
        }
        if self.pending.load(Ordering::Relaxed) + data.len() > MAX_PENDING_BYTES {
            if self.gaps.open() {
                tracing::warn!("events for other nodes are dropped: NATS does not take them fast enough");
            }
            return;
        }
        let subject = self.subjects.of_topic(topic);
        if Nats::subject_fits(&subject).is_err() {
            tracing::warn!(%topic, "an event whose subject is too long for NATS is not sent to other nodes");
            self.gaps.open();
            return;
        }
        let flags = if self.gaps.take() { wire::GAP } else { 0 };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let event = wire::event(flags, self.origin, seq, &data);
        self.pending.fetch_add(event.len(), Ordering::Relaxed);
        let _ = self.queue.send((subject, event));
    }
}

/// Holds a NATS subscription for each subject filter this node's
/// subscribers want, and hands what arrives to its hub, each event once.
/// Tells the subscribers they may have lost events when the connection
/// returns after a drop.
pub(super) async fn relay(nats: Arc<Nats>, interest: Arc<Interest>, stop: CancellationToken) {
    let mut changes = interest.changes();
    let mut online = nats.online.clone();
    let mut dropped = nats.dropped.clone();
    let mut subscriptions: StreamMap<String, async_nats::Subscriber> = StreamMap::new();
    // The patterns behind each filter: `/chat/*` and `/chat/{room}` are one.
    let mut wanted_by: HashMap<String, HashSet<String>> = HashMap::new();
    let mut seen = wire::Seen::default();
    changes.mark_changed();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                follow(&nats, &interest, &mut subscriptions, &mut wanted_by).await;
            }
            changed = online.changed() => {
                if changed.is_err() {
                    return;
                }
                if *online.borrow_and_update() {
                    // Events from other nodes may have passed while it was down.
                    lost(&nats);
                }
            }
            changed = dropped.changed() => {
                if changed.is_err() {
                    return;
                }
                dropped.borrow_and_update();
                // Perhaps events: their subscribers are told.
                lost(&nats);
            }
            Some((_, message)) = subscriptions.next(), if !subscriptions.is_empty() => {
                deliver(&nats, &mut seen, &message);
            }
        }
    }
}

/// Subscribes to the filters newly wanted, and drops those no longer wanted.
async fn follow(
    nats: &Nats,
    interest: &Interest,
    subscriptions: &mut StreamMap<String, async_nats::Subscriber>,
    wanted_by: &mut HashMap<String, HashSet<String>>,
) {
    wanted_by.clear();
    for pattern in interest.patterns() {
        let Ok(parsed) = TopicPattern::parse(&pattern) else { continue };
        wanted_by.entry(nats.topics.of_pattern(&parsed)).or_default().insert(pattern);
    }
    // A filter within another brings nothing the other does not: dropped,
    // so that an event comes once on fewer subscriptions (the hub gives it
    // to every local subscriber it matches).
    let filters: Vec<String> = wanted_by.keys().cloned().collect();
    wanted_by.retain(|filter, _| !filters.iter().any(|other| other != filter && covers(other, filter)));
    let unwanted: Vec<String> = subscriptions.keys().filter(|f| !wanted_by.contains_key(*f)).cloned().collect();
    for filter in unwanted {
        // Dropping the subscriber unsubscribes on NATS.
        subscriptions.remove(&filter);
    }
    for filter in wanted_by.keys() {
        if subscriptions.contains_key(filter) {
            continue;
        }
        match nats.client.subscribe(filter.clone()).await {
            Ok(subscriber) => {
                subscriptions.insert(filter.clone(), subscriber);
            }
            Err(e) => tracing::warn!(%filter, "a subscription on NATS failed: {e}"),
        }
    }
}

/// Whether NATS filter `wide` matches every subject `narrow` matches.
fn covers(wide: &str, narrow: &str) -> bool {
    let mut narrow_tokens = narrow.split('.');
    for token in wide.split('.') {
        match (token, narrow_tokens.next()) {
            (">", Some(_)) => return true,
            (_, None) => return false,
            ("*", Some(other)) if other != ">" => {}
            (literal, Some(other)) if literal == other => {}
            _ => return false,
        }
    }
    narrow_tokens.next().is_none()
}

fn deliver(nats: &Nats, seen: &mut wire::Seen, message: &async_nats::Message) {
    let Some(mesh) = nats.mesh.upgrade() else { return };
    let Some(event) = wire::read_event(&message.payload) else {
        tracing::debug!(subject = %message.subject, "a message on a topic's subject that is no webmesh event");
        return;
    };
    let Some(topic) = nats.topics.to_topic(&message.subject) else { return };
    match seen.sight(event.origin, event.seq) {
        wire::Sighting::First => {}
        wire::Sighting::Again => return,
        wire::Sighting::Unknown => {
            // Perhaps never delivered: its subscribers are told.
            if let Ok(pattern) = TopicPattern::parse(&topic) {
                mesh.hub.report_lost(Some(&pattern), 0, RESERVED);
            }
            return;
        }
    }
    if event.flags & wire::GAP != 0 {
        mesh.hub.report_lost(None, 0, RESERVED);
    }
    match rmp_serde::from_slice::<rmpv::Value>(event.data) {
        Ok(data) => {
            if let Err(e) = mesh.hub.publish_relayed(&topic, &data) {
                tracing::debug!(%topic, "an event from another node was not delivered: {e}");
            }
        }
        Err(e) => tracing::debug!(%topic, "an event from another node did not decode: {e}"),
    }
}

/// Tells this node's subscribers they may have lost events from other nodes.
fn lost(nats: &Nats) {
    if let Some(mesh) = nats.mesh.upgrade() {
        mesh.hub.report_lost(None, 0, RESERVED);
    }
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn a_filter_covers_those_within_it() {
        assert!(covers("w.news.*", "w.news.sport"));
        assert!(covers("w.news.>", "w.news.sport.x"));
        assert!(covers("w.news.>", "w.news.*"));
        assert!(covers("w.>", "w.news.>"));
        assert!(!covers("w.news.*", "w.news.>"), "`*` is one token, `>` one or more");
        assert!(!covers("w.news.*", "w.news"));
        assert!(!covers("w.news.sport", "w.news.*"));
        assert!(!covers("w.a.*.c", "w.a.b.*"), "overlapping, neither within the other");
        assert!(!covers("w.news.*", "w.news.a.b"));
    }
}
