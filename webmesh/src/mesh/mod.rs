//! The mesh: each process is a node that serves its handlers and links to
//! every other node it knows, so that calls and events reach any node.
//!
//! This layer sits above the server and the client and uses them: a node
//! is a [`Server`](crate::Server) whose connections from other nodes are
//! marked as links, and a [`Client`](crate::Client) to each other node.

mod builder;
mod endpoints;
mod handle;
mod link;
mod members;
mod messages;
#[cfg(any(test, feature = "__internals", feature = "nats"))]
pub(crate) mod nats;
mod node;
mod peer;
mod wills;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use builder::{
    LegacyPeer, MeshBuilder, DEFAULT_DOWN_AFTER, DEFAULT_FORGET_AFTER, DEFAULT_LINK_PING_INTERVAL,
    DEFAULT_LINK_PING_TIMEOUT, DEFAULT_STATUS_INTERVAL,
};
pub use handle::{mesh, Mesh, NodeRef, Watch};
#[cfg(feature = "nats")]
pub use nats::DEFAULT_NATS_PREFIX;
pub use node::{Node, NodeState, NodeStatus, NodeWill, Routes};

use self::endpoints::IdentityCodec;
use self::members::{Members, Target};
use crate::handler::Reply;
use crate::pubsub::Interest;
use crate::server::Shared;
use crate::{Client, ClientBuilder, Connection, Error, Hub, Payload, Reconnect, WhileDisconnected};

/// The most links a node keeps: a full mesh of direct links is for tens of
/// nodes, and a node that claims to know thousands is not believed.
const MAX_LINKS: usize = 1024;

/// The longest node id (in bytes): ids travel in every report and name a
/// node's NATS subject and bucket key.
pub(crate) const MAX_NODE_ID: usize = 128;

/// The longest URL a node dials.
const MAX_URL_LENGTH: usize = 2048;

/// Why a node dials a URL.
pub(crate) enum Dial {
    /// A seed it was given: dialled until it answers.
    Seed,
    /// A URL another node gave: dropped if it does not answer within
    /// `down_after` (it is learned again while some node sees it `up`).
    Learned,
    /// A webmesh 0.1.2 server it was given.
    Legacy(LegacyPeer),
}

/// The settings a running node keeps.
pub(crate) struct Config {
    pub(crate) secret: Option<String>,
    pub(crate) heartbeat: (Duration, Duration),
    pub(crate) down_after: Duration,
    pub(crate) status_interval: Duration,
    pub(crate) forget_after: Duration,
    pub(crate) redial: Reconnect,
    pub(crate) call_timeout: Duration,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::ClientTls>,
}

/// What a node's handle, links and routes share.
pub(crate) struct MeshInner {
    pub(crate) id: String,
    /// Set once the server is bound (the rest of this node's description
    /// is its own entry among the members).
    url: OnceLock<String>,
    pub(crate) config: Config,
    pub(crate) members: Members,
    pub(crate) hub: Hub,
    pub(crate) interest: Arc<Interest>,
    pub(crate) identity: Option<IdentityCodec>,
    /// The running server's shared state, to run handlers here.
    pub(crate) server: OnceLock<Arc<Shared>>,
    /// The links, by the URL they dial.
    links: Mutex<HashMap<String, CancellationToken>>,
    /// URLs found to reach this node itself.
    self_urls: Mutex<HashSet<String>>,
    /// Cancelled when the node has shut its server down: ends every link.
    stop: CancellationToken,
    /// Cancelled once the node said goodbye: stops its server.
    serving: CancellationToken,
    /// Set when the node starts shutting down: its links no longer
    /// introduce it, lest a node that saw its goodbye take it back.
    leaving: std::sync::atomic::AtomicBool,
    tasks: TaskTracker,
    started: Instant,
    /// Turns among the nodes serving a path.
    turns: AtomicUsize,
    /// Ids of the connections that run this node's local and forwarded
    /// calls, apart from the server's.
    callers: AtomicU64,
    /// What the connections of those callers share.
    pub(crate) caller_parts: crate::server::Callers,
    /// The server's task, once started.
    running: OnceLock<handle::Running>,
    /// When the status was last taken, and the calls handled then.
    last_calls: Mutex<(Instant, u64)>,
    /// What became of the wills of the nodes that died.
    heirs: wills::Heirs,
    /// The node's NATS, when the mesh runs over NATS rather than links.
    #[cfg(feature = "nats")]
    pub(crate) nats: OnceLock<Arc<nats::Nats>>,
}

impl MeshInner {
    /// Takes this node's status, and reports it.
    pub(crate) fn report(&self) {
        self.members.report_self(self.status());
        #[cfg(feature = "nats")]
        if let Some(nats) = self.nats.get() {
            nats.report(&self.members.own());
        }
    }

    /// Whether this node's mesh runs over NATS rather than links.
    pub(crate) fn over_nats(&self) -> bool {
        #[cfg(feature = "nats")]
        return self.nats.get().is_some();
        #[cfg(not(feature = "nats"))]
        false
    }

    /// Whether this node serves `path` itself.
    #[cfg(feature = "nats")]
    pub(crate) fn serves(&self, path: &str) -> bool {
        self.server.get().is_some_and(|shared| shared.routes.at(path).is_some())
    }

    fn status(&self) -> NodeStatus {
        let Some(shared) = self.server.get() else { return NodeStatus::default() };
        let stats = crate::ServerStats::new(shared.clone());
        let calls = stats.calls_handled();
        let calls_per_second = {
            let mut last = self.last_calls.lock().unwrap_or_else(PoisonError::into_inner);
            let elapsed = last.0.elapsed().as_secs_f64();
            let rate = if elapsed > 0.0 { calls.saturating_sub(last.1) as f64 / elapsed } else { 0.0 };
            *last = (Instant::now(), calls);
            (rate * 10.0).round() / 10.0
        };
        NodeStatus {
            calls_per_second,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            connections: stats.connections() as u64,
            calls_handled: calls,
            calls_failed: stats.calls_failed(),
            calls_in_flight: stats.calls_in_flight(),
            events_published: stats.events_published(),
            events_dropped: stats.events_dropped(),
            event_gaps: self.event_gaps(),
        }
    }

    /// Over NATS, how many times this node may have failed to send its
    /// events to the other nodes.
    fn event_gaps(&self) -> u64 {
        #[cfg(feature = "nats")]
        if let Some(nats) = self.nats.get() {
            return nats.event_gaps();
        }
        0
    }

    /// Starts a link to `url`, unless there is one, or it is this node.
    ///
    /// The URLs come from other nodes' introductions and reports: only
    /// `ws://` and `wss://` ones are dialled, and at most [`MAX_LINKS`]
    /// links are kept, whatever a node claims to know.
    pub(crate) fn dial(self: &Arc<Self>, url: &str, how: Dial) {
        let dialable = (url.starts_with("ws://") || url.starts_with("wss://")) && url.len() <= MAX_URL_LENGTH;
        if !dialable || self.stop.is_cancelled() || self.is_self_url(url) {
            return;
        }
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        if links.contains_key(url) {
            return;
        }
        if links.len() >= MAX_LINKS {
            tracing::warn!(%url, "not dialling another node: this node has {MAX_LINKS} links, the most it keeps");
            return;
        }
        let stop = self.stop.child_token();
        links.insert(url.to_owned(), stop.clone());
        self.tasks.spawn(link::run(self.clone(), url.to_owned(), how, stop));
    }

    /// Ends the link to `url`.
    pub(crate) fn hang_up(&self, url: &str) {
        if let Some(stop) = self.links.lock().unwrap_or_else(PoisonError::into_inner).remove(url) {
            stop.cancel();
        }
    }

    /// Whether the node is shutting down.
    pub(crate) fn leaving(&self) -> bool {
        self.leaving.load(Ordering::Acquire)
    }

    /// The URL other nodes dial to reach this one.
    pub(crate) fn url(&self) -> &str {
        self.url.get().map_or("", String::as_str)
    }

    fn is_self_url(&self, url: &str) -> bool {
        url == self.url() || self.self_urls.lock().unwrap_or_else(PoisonError::into_inner).contains(url)
    }

    pub(crate) fn add_self_url(&self, url: &str) {
        self.self_urls.lock().unwrap_or_else(PoisonError::into_inner).insert(url.to_owned());
        self.hang_up(url);
    }

    /// Node `id` is not back in time, or was replaced: it is `down`, and
    /// this node's subscribers may have lost its events.
    pub(crate) fn down(&self, id: &str) {
        if self.members.set_state(id, NodeState::Down) {
            self.hub.report_lost(None, 0, messages::RESERVED);
            self.heir_gone(id);
            self.mourn(id);
        }
    }

    /// The client of a link to `url`.
    pub(crate) fn link_builder(&self, url: &str, legacy: Option<&LegacyPeer>) -> ClientBuilder {
        let (interval, timeout) = self.config.heartbeat;
        let builder = Client::builder(url)
            .heartbeat(interval, timeout)
            .reconnect(self.config.redial)
            .while_disconnected(WhileDisconnected::FailFast)
            .timeout(self.config.call_timeout)
            .connect_timeout(timeout);
        #[cfg(feature = "tls")]
        let builder = match &self.config.tls {
            Some(tls) => builder.tls(tls.clone()),
            None => builder,
        };
        match legacy {
            Some(peer) => builder.legacy(peer.format),
            None => {
                let builder = builder.header(messages::NODE_HEADER, &self.id);
                match &self.config.secret {
                    Some(secret) => builder.header(messages::SECRET_HEADER, secret),
                    None => builder,
                }
            }
        }
    }

    /// Sends with `attempt` to one of `targets`, taking turns: from the
    /// next turn on, until one was sent (whatever its outcome). Fails with
    /// [`Error::NoRoute`] when there is none, and with the last error when
    /// none could be sent.
    pub(crate) async fn in_turns<T, Fut>(
        &self,
        mut targets: Vec<Target>,
        path: &str,
        mut attempt: impl FnMut(Target) -> Fut,
    ) -> Result<T, Error>
    where
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let turn = self.turns.fetch_add(1, Ordering::Relaxed) % targets.len().max(1);
        targets.rotate_left(turn);
        let mut last = Error::NoRoute { path: path.to_owned() };
        for target in targets {
            match attempt(target).await {
                Err(e) if e.was_not_sent() => last = e,
                result => return result,
            }
        }
        Err(last)
    }

    /// A connection of no socket, on whose behalf this node runs a call.
    pub(crate) fn caller(&self) -> Connection {
        let id = self.callers.fetch_add(1, Ordering::Relaxed);
        self.caller_parts.caller(id, 1)
    }

    /// Runs the handler of `path` here; `None` if this node serves no such path.
    pub(crate) async fn call_here(&self, caller: Connection, path: &str, payload: Payload) -> Option<Reply> {
        let shared = self.server.get()?;
        crate::server::call_local(shared, caller, path, payload).await
    }
}

/// Data as MessagePack, the way a client would send it.
pub(crate) fn to_payload<T: Serialize + ?Sized>(data: &T) -> Result<Payload, Error> {
    let bytes = rmp_serde::to_vec_named(data).map_err(|e| Error::Protocol(e.to_string()))?;
    Ok(Payload::msgpack(bytes.into()))
}
