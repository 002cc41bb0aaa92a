//! The membership table: every node this node knows, its state from this
//! node's view, and the link that reaches it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use super::messages::node_topic;
use super::node::now_ms;
use super::peer::Peer;
use super::{Node, NodeState};
use crate::{Client, Hub};

/// A known node.
pub(crate) struct Member {
    pub(crate) node: Node,
    /// The way to reach it; `None` for this node itself.
    pub(crate) link: Option<Peer>,
    /// The URL its link dials.
    pub(crate) link_url: String,
    /// Its call routes, to match paths against.
    routes: matchit::Router<()>,
    /// Since when it is in its state.
    since: Instant,
}

impl Member {
    /// This node itself.
    fn local(me: Node) -> Self {
        Self {
            routes: route_table(&me.routes.calls),
            link_url: me.url.clone(),
            node: me,
            link: None,
            since: Instant::now(),
        }
    }

    /// Where calls to it go: here for this node (the only one without a link).
    fn target(&self) -> Target {
        match &self.link {
            None => Target::Local,
            Some(peer) => Target::Remote { id: self.node.id.clone(), peer: peer.clone(), legacy: self.node.legacy },
        }
    }

    fn serves(&self, path: &str) -> bool {
        self.routes.at(path).is_ok()
    }
}

/// A node's membership table.
pub(crate) struct Members {
    me: String,
    nodes: Mutex<HashMap<String, Member>>,
    /// `None` once the node stopped.
    changes: Mutex<Option<broadcast::Sender<Node>>>,
    hub: Hub,
}

/// Where a call may go: this node, or a link.
#[derive(Clone)]
pub(crate) enum Target {
    Local,
    Remote { id: String, peer: Peer, legacy: bool },
}

impl Members {
    pub(crate) fn new(me: Node, hub: Hub) -> Self {
        let (changes, _) = broadcast::channel(1024);
        let id = me.id.clone();
        Self {
            me: id.clone(),
            nodes: Mutex::new(HashMap::from([(id, Member::local(me))])),
            changes: Mutex::new(Some(changes)),
            hub,
        }
    }

    /// Replaces this node's own entry, once its URL and routes are known.
    pub(crate) fn replace_self(&self, me: Node) {
        self.lock().insert(self.me.clone(), Member::local(me));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Member>> {
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The changes to come; `None` once the node stopped.
    pub(crate) fn subscribe(&self) -> Option<broadcast::Receiver<Node>> {
        self.changes.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map(broadcast::Sender::subscribe)
    }

    /// Tells watchers: this node's own subscribers of `/_mesh/nodes/*` (not
    /// other nodes' links, which hear each node from itself) and `watch()`.
    fn announce(&self, node: &Node) {
        if node.id == self.me {
            // This node's report goes to the links of the nodes that follow it too.
            let _ = self.hub.publish(&node_topic(&node.id), node);
        } else {
            let _ = self.hub.publish_relayed(&node_topic(&node.id), node);
        }
        if let Some(changes) = &*self.changes.lock().unwrap_or_else(PoisonError::into_inner) {
            let _ = changes.send(node.clone());
        }
    }

    /// Node `node` is reached through `link` (dialled at `link_url`, for a
    /// direct link); returns whether it is new.
    pub(crate) fn up(&self, mut node: Node, link: Peer, link_url: &str) -> bool {
        node.state = NodeState::Up;
        node.last_seen_ms = now_ms();
        let member = Member {
            routes: route_table(&node.routes.calls),
            link_url: link_url.to_owned(),
            node: node.clone(),
            link: Some(link),
            since: Instant::now(),
        };
        let known = self.lock().insert(node.id.clone(), member).is_some();
        self.announce(&node);
        !known
    }

    /// Moves node `id` to `state`, from any state but `left` (and, for
    /// `suspect`, but `down`); returns whether it moved.
    pub(crate) fn set_state(&self, id: &str, state: NodeState) -> bool {
        let node = {
            let mut nodes = self.lock();
            let Some(member) = nodes.get_mut(id) else { return false };
            let from = member.node.state;
            let moves = from != state
                && from != NodeState::Left
                && !(state == NodeState::Suspect && from == NodeState::Down)
                && id != self.me;
            if !moves {
                return false;
            }
            member.node.state = state;
            member.since = Instant::now();
            member.node.clone()
        };
        self.announce(&node);
        true
    }

    /// Node `id`, `left`, introduces itself again on a link that is still
    /// up: it did not leave (its goodbye was forged, or its shutdown was
    /// abandoned). It is `up` again.
    pub(crate) fn revive(&self, id: &str) {
        let node = {
            let mut nodes = self.lock();
            let Some(member) = nodes.get_mut(id) else { return };
            if member.node.state != NodeState::Left
                || member.link.as_ref().and_then(Peer::link).is_none_or(Client::is_closed)
            {
                return;
            }
            member.node.state = NodeState::Up;
            member.since = Instant::now();
            member.node.clone()
        };
        self.announce(&node);
    }

    /// A status report from node `id` about itself.
    pub(crate) fn report(&self, id: &str, report: Node) {
        let node = {
            let mut nodes = self.lock();
            let Some(member) = nodes.get_mut(id) else { return };
            if member.node.state != NodeState::Up {
                return;
            }
            if member.node.routes != report.routes {
                member.routes = route_table(&report.routes.calls);
            }
            let state = member.node.state;
            member.node = Node { state, last_seen_ms: now_ms(), ..report };
            member.node.clone()
        };
        self.announce(&node);
    }

    /// Updates this node's own status, and reports it.
    pub(crate) fn report_self(&self, status: super::NodeStatus) {
        let peers = self.up_urls();
        let node = {
            let mut nodes = self.lock();
            let Some(member) = nodes.get_mut(&self.me) else { return };
            member.node.status = Some(status);
            member.node.peers = peers;
            member.node.last_seen_ms = now_ms();
            member.node.clone()
        };
        self.announce(&node);
    }

    /// Replaces this node's will.
    pub(crate) fn set_own_will(&self, will: Option<super::NodeWill>) {
        if let Some(member) = self.lock().get_mut(&self.me) {
            member.node.will = will;
        }
    }

    /// Every node known, this one included.
    pub(crate) fn snapshot(&self) -> Vec<Node> {
        let mut nodes: Vec<Node> = self.lock().values().map(|m| m.node.clone()).collect();
        nodes.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        nodes
    }

    /// This node, as it introduces and reports itself.
    pub(crate) fn own(&self) -> Node {
        // Its entry never leaves: its state never changes, and only nodes
        // `down` or `left` are forgotten.
        self.get(&self.me).expect("a node's own entry is never removed")
    }

    pub(crate) fn get(&self, id: &str) -> Option<Node> {
        self.lock().get(id).map(|m| m.node.clone())
    }

    /// The URLs of the nodes `up`, this one included.
    pub(crate) fn up_urls(&self) -> Vec<String> {
        let mut urls: Vec<String> = self
            .lock()
            .values()
            .filter(|m| m.node.state == NodeState::Up && !m.node.legacy)
            .map(|m| m.node.url.clone())
            .collect();
        urls.sort();
        urls
    }

    /// The URL whose link reaches node `id`, if it is `up`.
    pub(crate) fn linked_at(&self, id: &str) -> Option<String> {
        self.lock().get(id).filter(|m| m.node.state == NodeState::Up).map(|m| m.link_url.clone())
    }

    /// The nodes `up` that serve `path`, this one first when it does.
    pub(crate) fn serving(&self, path: &str, remote_only: bool) -> Vec<Target> {
        let mut targets: Vec<Target> = self
            .lock()
            .values()
            .filter(|m| m.node.state == NodeState::Up && m.serves(path))
            .map(Member::target)
            .filter(|target| !(remote_only && matches!(target, Target::Local)))
            .collect();
        // A stable order, so that turns go round.
        targets.sort_by(|a, b| target_key(a).cmp(target_key(b)));
        targets
    }

    /// Whether a node `up` other than this one serves `path` (what
    /// [`serving`](Self::serving) would list, without listing it).
    #[cfg(feature = "nats")]
    pub(crate) fn served_elsewhere(&self, path: &str) -> bool {
        self.lock().values().any(|m| m.link.is_some() && m.node.state == NodeState::Up && m.serves(path))
    }

    /// The nodes matching `id_or_name`: by id, else by name.
    pub(crate) fn named(&self, id_or_name: &str) -> Vec<String> {
        let nodes = self.lock();
        if nodes.contains_key(id_or_name) {
            return vec![id_or_name.to_owned()];
        }
        let mut ids: Vec<String> =
            nodes.values().filter(|m| m.node.name == id_or_name).map(|m| m.node.id.clone()).collect();
        ids.sort();
        ids
    }

    /// The target reaching node `id`, if it is `up`.
    pub(crate) fn target(&self, id: &str) -> Option<Target> {
        self.lock().get(id).filter(|m| m.node.state == NodeState::Up).map(Member::target)
    }

    /// Forgets the nodes `down` or `left` for longer than `after`, and
    /// returns the URLs of their links that no node known now uses (a node
    /// that restarted at the same address keeps its link).
    pub(crate) fn reap(&self, after: Duration) -> Vec<String> {
        let mut nodes = self.lock();
        let gone: Vec<String> = nodes
            .iter()
            .filter(|(_, m)| matches!(m.node.state, NodeState::Down | NodeState::Left) && m.since.elapsed() >= after)
            .map(|(id, _)| id.clone())
            .collect();
        let urls: Vec<String> = gone.iter().filter_map(|id| nodes.remove(id)).map(|m| m.link_url).collect();
        urls.into_iter().filter(|url| !nodes.values().any(|m| m.link_url == *url)).collect()
    }

    /// The nodes reached without a link of their own (over NATS) that are
    /// in `state` and were last heard from longer than `after` ago.
    #[cfg(feature = "nats")]
    pub(crate) fn silent_since(&self, after: Duration, state: NodeState) -> Vec<String> {
        let before = now_ms().saturating_sub(after.as_millis() as u64);
        self.lock()
            .values()
            .filter(|m| m.node.state == state && m.link.as_ref().is_some_and(|peer| peer.link().is_none()))
            .filter(|m| m.node.last_seen_ms < before)
            .map(|m| m.node.id.clone())
            .collect()
    }

    /// Counts every node as heard from now: this node could hear none for a while.
    #[cfg(feature = "nats")]
    pub(crate) fn heard_all_now(&self) {
        let now = now_ms();
        for member in self.lock().values_mut() {
            member.node.last_seen_ms = now;
        }
    }

    /// The state of node `id`.
    pub(crate) fn state(&self, id: &str) -> Option<NodeState> {
        self.lock().get(id).map(|m| m.node.state)
    }

    /// Ends the stream of changes: watchers see its end.
    pub(crate) fn close(&self) {
        self.changes.lock().unwrap_or_else(PoisonError::into_inner).take();
    }

    /// The clients of the nodes `up`, with their ids.
    pub(crate) fn links_up(&self) -> Vec<(String, Client)> {
        self.lock()
            .iter()
            .filter(|(_, m)| m.node.state == NodeState::Up && !m.node.legacy)
            .filter_map(|(id, m)| Some((id.clone(), m.link.as_ref()?.link()?.clone())))
            .collect()
    }
}

fn target_key(target: &Target) -> &str {
    match target {
        Target::Local => "",
        Target::Remote { id, .. } => id,
    }
}

/// A router over a node's call paths; paths that do not parse as routes
/// (from a node of another version, say) are left out.
fn route_table(paths: &[String]) -> matchit::Router<()> {
    let mut router = matchit::Router::new();
    for path in paths {
        let _ = router.insert(path.as_str(), ());
    }
    router
}
