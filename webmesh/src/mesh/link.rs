//! A link: the client with which this node reaches one other node, and
//! what it carries: this node's introduction, calls, and interest (the
//! patterns of this node's subscribers), and, back, the events the other
//! node publishes that match them.
//!
//! Each node dials every node it knows and sends its own calls and
//! subscriptions only over the links it dialled. Between two nodes there
//! are so two links, one each way, and each message crosses exactly one:
//! nothing is delivered twice (PROTOCOL.md, "Mesh").

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use serde::de::IgnoredAny;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::messages::{node_topic, Hello, HELLO, RESERVED};
use super::peer::Peer;
use super::{Dial, LegacyPeer, MeshInner, Node, NodeState};
use crate::client::Relay;
use crate::pubsub::TopicPattern;
use crate::{Client, ConnectionState, Error, Payload, Subscription};

/// How long before a failed introduction is tried again.
const INTRODUCE_RETRY: Duration = Duration::from_secs(1);

/// Keeps a link to `url` until `stop`: dials until a connection opens,
/// then follows it (its client reconnects by itself).
pub(crate) async fn run(mesh: Arc<MeshInner>, url: String, how: Dial, stop: CancellationToken) {
    let (learned, legacy) = match how {
        Dial::Seed => (false, None),
        Dial::Learned => (true, None),
        Dial::Legacy(peer) => (false, Some(peer)),
    };
    let seed = !learned;
    let started = Instant::now();
    let mut attempt = 0;
    let client = loop {
        let dialled = tokio::select! {
            dialled = mesh.link_builder(&url, legacy.as_ref()).connect() => dialled,
            () = stop.cancelled() => return,
        };
        match dialled {
            Ok(client) => break client,
            Err(Error::Refused { status, message }) => {
                tracing::warn!(%url, status, message, "a node of the mesh refused this node's link");
            }
            Err(e) => tracing::debug!(%url, error = %e, "could not reach a node of the mesh yet"),
        }
        // A URL another node gave, that does not answer, is not held on to:
        // it is learned again while some node sees it up.
        if learned && started.elapsed() >= mesh.config.down_after {
            tracing::debug!(%url, "giving up a URL of the mesh that does not answer");
            mesh.hang_up(&url);
            return;
        }
        attempt += 1;
        tokio::select! {
            () = tokio::time::sleep(mesh.config.redial.delay(attempt)) => {}
            () = stop.cancelled() => return,
        }
    };
    let mut link = Link {
        mesh,
        url,
        legacy,
        client,
        peer: None,
        subscriptions: HashMap::new(),
        refused: HashSet::new(),
        relay: None,
        seed,
    };
    link.follow(&stop).await;
    link.client.close().await;
}

struct Link {
    mesh: Arc<MeshInner>,
    url: String,
    legacy: Option<LegacyPeer>,
    client: Client,
    /// The id of the node at the other end, once it introduced itself.
    peer: Option<String>,
    /// This node's interest, held on the other node.
    subscriptions: HashMap<String, Subscription<IgnoredAny>>,
    /// The patterns of this node's interest that the other node refused,
    /// whose subscribers were told they lose its events.
    refused: HashSet<String>,
    relay: Option<Arc<LinkRelay>>,
    /// Given to this node (a seed, a legacy peer): dialled whatever becomes
    /// of the node there, which may come back as a new one.
    seed: bool,
}

impl Link {
    async fn follow(&mut self, stop: &CancellationToken) {
        if self.legacy.is_none() {
            let relay =
                Arc::new(LinkRelay { mesh: Arc::downgrade(&self.mesh), peer: Mutex::new(None), unseen: Notify::new() });
            let _ = self.client.shared().relay.set(relay.clone());
            self.relay = Some(relay);
        }
        let mut states = self.client.state_changes();
        let mut interest = self.mesh.interest.changes();
        let mut introduce_at = Some(Instant::now());
        let mut down_at: Option<Instant> = None;
        let relay = self.relay.clone();
        loop {
            let due = introduce_at.is_some_and(|at| at <= Instant::now());
            if due && self.client.state() == ConnectionState::Connected && !self.mesh.leaving() {
                introduce_at = None;
                match self.introduce().await {
                    Ok(Introduced::Up) => down_at = None,
                    Ok(Introduced::NotAPeer) => return,
                    Ok(Introduced::NoNode) => {
                        self.mesh.hang_up(&self.url);
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(url = %self.url, error = %e, "introduction failed; trying again");
                        introduce_at = Some(Instant::now() + INTRODUCE_RETRY);
                    }
                }
            }
            // Refused interest is asked for again at each report's pace.
            let retry_at = (!self.refused.is_empty()).then(|| Instant::now() + self.mesh.config.status_interval);
            let wake = [introduce_at, down_at, retry_at].into_iter().flatten().min();
            tokio::select! {
                () = stop.cancelled() => return,
                changed = states.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let state = states.borrow_and_update().clone();
                    match state {
                        ConnectionState::Connected => introduce_at = Some(Instant::now()),
                        ConnectionState::Reconnecting { .. } | ConnectionState::Closed if self.has_left() && !self.seed => {
                            // It said goodbye, and has now closed: it is not dialled again.
                            self.mesh.hang_up(&self.url);
                            return;
                        }
                        ConnectionState::Reconnecting { .. } => {
                            introduce_at = None;
                            let suspected = self.peer.as_ref().is_some_and(|id| self.mesh.members.set_state(id, NodeState::Suspect));
                            if suspected {
                                down_at = Some(Instant::now() + self.mesh.config.down_after);
                            }
                        }
                        ConnectionState::Closed => return,
                    }
                }
                // The other node reports that it does not see this one up
                // (it could not dial it back yet, or was told it left).
                () = unseen(&relay) => {
                    if !self.mesh.leaving() && introduce_at.is_none() {
                        introduce_at = Some(Instant::now());
                    }
                }
                _ = interest.changed(), if self.peer.is_some() && self.legacy.is_none() => {
                    self.sync_interest().await;
                }
                () = sleep_until(wake), if wake.is_some() => {
                    if retry_at.is_some_and(|at| at <= Instant::now()) && self.peer.is_some() {
                        self.sync_interest().await;
                    }
                    if down_at.is_some_and(|at| at <= Instant::now()) {
                        down_at = None;
                        if let Some(id) = &self.peer {
                            self.mesh.down(id);
                        }
                    }
                }
            }
        }
    }

    /// Introduces this node to the other, and learns who it is.
    async fn introduce(&mut self) -> Result<Introduced, Error> {
        let node = match &self.legacy {
            Some(peer) => peer.node(&self.url),
            None => {
                let hello = Hello { node: self.mesh.members.own(), members: self.mesh.members.up_urls() };
                let answer: Hello = match self.client.call(HELLO, &hello).await {
                    Err(Error::NotFound { .. }) => {
                        tracing::warn!(url = %self.url, "a peer of the mesh is a webmesh server that is no node of a mesh; not linking to it");
                        return Ok(Introduced::NoNode);
                    }
                    answer => answer?,
                };
                for url in &answer.members {
                    self.mesh.dial(url, Dial::Learned);
                }
                answer.node
            }
        };
        if node.id == self.mesh.id {
            // A seed that is this node under another name.
            self.mesh.add_self_url(&self.url);
            return Ok(Introduced::NotAPeer);
        }
        if self.mesh.members.linked_at(&node.id).is_some_and(|url| url != self.url) {
            tracing::debug!(url = %self.url, id = %node.id, "a second URL of a node already linked; dropping it");
            return Ok(Introduced::NotAPeer);
        }
        if let Some(old) = self.peer.take().filter(|old| *old != node.id) {
            // The process at this URL restarted: the one before is gone.
            self.mesh.down(&old);
            self.subscriptions.clear();
        }
        self.peer = Some(node.id.clone());
        if let Some(relay) = &self.relay {
            *relay.peer.lock().unwrap_or_else(PoisonError::into_inner) = Some(node.id.clone());
        }
        self.mesh.came_back(&node.id);
        if self.mesh.members.up(node, Peer::Link(self.client.clone()), &self.url) {
            // The nodes that follow this one learn of the newcomer now, not
            // at the next report: two nodes that joined through one seed at
            // once would not know each other until then.
            self.mesh.report();
        }
        self.sync_interest().await;
        Ok(Introduced::Up)
    }

    /// Whether the node at the other end said goodbye.
    fn has_left(&self) -> bool {
        self.peer.as_ref().is_some_and(|id| self.mesh.members.state(id) == Some(NodeState::Left))
    }

    /// Subscribes on the other node to what this node's subscribers want
    /// and to the other node's reports, and drops what they no longer want.
    async fn sync_interest(&mut self) {
        let (Some(peer), None) = (&self.peer, &self.legacy) else { return };
        // A set: a node's interest may be thousands of patterns.
        let mut wanted: HashSet<String> = self.mesh.interest.patterns().into_iter().collect();
        wanted.insert(node_topic(peer));
        self.subscriptions.retain(|pattern, _| wanted.contains(pattern));
        self.refused.retain(|pattern| wanted.contains(pattern));
        for pattern in wanted {
            if self.subscriptions.contains_key(&pattern) {
                continue;
            }
            match self.client.subscribe::<IgnoredAny>(&pattern).await {
                Ok(subscription) => {
                    self.refused.remove(&pattern);
                    self.subscriptions.insert(pattern, subscription);
                }
                // Tried again on the next change or reconnection.
                Err(e) if e.was_not_sent() => {
                    tracing::debug!(url = %self.url, %pattern, "not subscribed on a node while its link is down");
                }
                // Refused (past a limit of the other node): its events for
                // this pattern do not come until a later try succeeds, and
                // the subscribers that want them are told.
                Err(e) => {
                    if self.refused.insert(pattern.clone()) {
                        tracing::warn!(url = %self.url, %pattern, error = %e, "a node of the mesh refused this node's interest");
                        if let Ok(parsed) = TopicPattern::parse(&pattern) {
                            self.mesh.hub.report_lost(Some(&parsed), 0, RESERVED);
                        }
                    }
                }
            }
        }
    }
}

enum Introduced {
    Up,
    /// Itself, or a second link to a node.
    NotAPeer,
    /// A webmesh server that is no node of a mesh.
    NoNode,
}

async fn unseen(relay: &Option<Arc<LinkRelay>>) {
    match relay {
        Some(relay) => relay.unseen.notified().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Takes the events a link receives: the other node's reports, and the
/// events its publishers sent for this node's subscribers.
struct LinkRelay {
    mesh: Weak<MeshInner>,
    peer: Mutex<Option<String>>,
    /// The other node reported that it does not see this one `up`.
    unseen: Notify,
}

impl Relay for LinkRelay {
    fn event(&self, topic: String, payload: Payload) {
        let Some(mesh) = self.mesh.upgrade() else { return };
        if topic.starts_with(RESERVED) {
            let peer = self.peer.lock().unwrap_or_else(PoisonError::into_inner).clone();
            if let Some(peer) = peer.filter(|peer| topic == node_topic(peer)) {
                match payload.deserialize::<Node>() {
                    Ok(report) if report.id == peer => {
                        for url in &report.peers {
                            mesh.dial(url, Dial::Learned);
                        }
                        if !report.peers.iter().any(|url| url == mesh.url()) {
                            self.unseen.notify_one();
                        }
                        mesh.members.report(&peer, report);
                        if mesh.members.state(&peer) == Some(crate::NodeState::Up) {
                            mesh.came_back(&peer);
                        }
                    }
                    Ok(_) => tracing::debug!(%topic, "a node reported under another's id"),
                    Err(e) => tracing::debug!(%topic, error = %e, "a node's report did not decode"),
                }
            }
            return;
        }
        match payload.deserialize::<rmpv::Value>() {
            Ok(data) => {
                if let Err(e) = mesh.hub.publish_relayed(&topic, &data) {
                    tracing::debug!(%topic, error = %e, "could not pass on an event from another node");
                }
            }
            Err(e) => tracing::debug!(%topic, error = %e, "an event from another node did not decode"),
        }
    }

    fn lost(&self, pattern: Option<&str>, missed: Option<u64>) {
        let Some(mesh) = self.mesh.upgrade() else { return };
        let pattern = match pattern {
            Some(pattern) if pattern.starts_with(RESERVED) => return,
            Some(pattern) => match TopicPattern::parse(pattern) {
                Ok(parsed) => Some(parsed),
                Err(_) => return,
            },
            None => None,
        };
        mesh.hub.report_lost(pattern.as_ref(), missed.unwrap_or(0), RESERVED);
    }
}
