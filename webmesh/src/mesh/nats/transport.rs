//! A node's connection to the mesh's NATS, and what goes through it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{watch, OnceCell};

use super::subject::Subjects;
use super::{calls, events, members, wills, wire};
use crate::mesh::messages::{Answered, Forward};
use crate::mesh::{MeshInner, Node};
use crate::Error;

use super::calls::Inbox;

/// The default subject prefix of a mesh on NATS.
pub const DEFAULT_NATS_PREFIX: &str = "webmesh";

/// How long a request to JetStream may take (a new cluster answers its
/// first ones only once it elected a leader).
const JETSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest subject a node sends on: NATS closes the connection of a
/// client whose message's first line (`PUB`, subject, reply subject, size)
/// is longer than its `max_control_line`, 4096 bytes by default. A call to
/// a path whose subject is longer is refused (an escaped byte takes three).
const MAX_SUBJECT_BYTES: usize = 3584;

/// What a node's record leaves free of NATS's largest message, for its
/// status's figures to grow.
const RECORD_ROOM: usize = 1024;

/// What a node needs to join a mesh through NATS.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) urls: Vec<String>,
    pub(crate) prefix: String,
}

/// A node's side of the mesh's NATS: its connection and what it keeps.
pub(crate) struct Nats {
    pub(super) client: async_nats::Client,
    /// The subjects of topics, under the prefix.
    pub(super) topics: Subjects,
    /// The subjects of calls to routes.
    pub(super) calls: Subjects,
    /// The subjects of calls to one node.
    pub(super) inboxes: Subjects,
    /// The subjects of nodes' status reports.
    pub(super) statuses: Subjects,
    /// The bucket of node records, once it is there.
    pub(super) bucket: OnceCell<kv::Store>,
    pub(super) bucket_name: String,
    pub(super) mesh: Weak<MeshInner>,
    /// Whether the connection is up; changes as it drops and returns.
    pub(super) online: watch::Receiver<bool>,
    /// Changes each time NATS dropped messages for a subscription of this
    /// node that fell behind.
    pub(super) dropped: watch::Receiver<u64>,
    /// Where this node may have failed to send its events to the others.
    pub(super) gaps: Arc<events::Gaps>,
    /// This node's latest record, to report and store.
    pub(super) record: watch::Sender<Option<Bytes>>,
    /// Set once the node leaves: it reports and stores nothing more.
    pub(super) leaving: AtomicBool,
    /// The revision of this node's record in the bucket, once written (0
    /// before): a write at another revision finds the record claimed.
    pub(super) revision: std::sync::atomic::AtomicU64,
    /// Told once the record that says this node left is stored.
    pub(super) left: tokio::sync::Notify,
    pub(super) call_timeout: Duration,
    pub(super) max_payload: Arc<MaxPayload>,
}

/// The largest message the NATS server takes: NATS closes the connection
/// of a client that sends a larger one. Read again after a reconnection
/// (the server may be another) and before refusing a message.
pub(super) struct MaxPayload {
    bytes: AtomicUsize,
    stale: AtomicBool,
}

impl MaxPayload {
    fn new() -> Self {
        Self { bytes: AtomicUsize::new(0), stale: AtomicBool::new(true) }
    }

    /// Fails with [`Error::TooLarge`] if a message of `size` bytes is larger
    /// than the server `client` is connected to takes.
    pub(super) fn check(&self, client: &async_nats::Client, size: usize) -> Result<(), Error> {
        // Loaded before swapped: every call and event passes here.
        let stale = self.stale.load(Ordering::Acquire) && self.stale.swap(false, Ordering::AcqRel);
        if stale || size > self.bytes.load(Ordering::Acquire) {
            self.bytes.store(client.server_info().max_payload, Ordering::Release);
        }
        let limit = self.bytes.load(Ordering::Acquire);
        match size <= limit {
            true => Ok(()),
            false => Err(Error::TooLarge { size, limit }),
        }
    }
}

impl Nats {
    /// Connects to the cluster at `settings.urls`; fails if no server
    /// answers within the time of one call.
    pub(crate) async fn connect(
        settings: &Settings,
        id: &str,
        name: &str,
        call_timeout: Duration,
    ) -> Result<Self, Error> {
        let (online_tx, online) = watch::channel(true);
        let online_tx = Arc::new(online_tx);
        let (dropped_tx, dropped) = watch::channel(0u64);
        let dropped_tx = Arc::new(dropped_tx);
        let gaps = Arc::new(events::Gaps::default());
        let gaps_seen = gaps.clone();
        let max_payload = Arc::new(MaxPayload::new());
        let max_payload_seen = max_payload.clone();
        let options = async_nats::ConnectOptions::new()
            // What nats-server's monitoring (`/connz`) shows of it.
            .name(format!("webmesh {name} {id}"))
            // Its own events and calls do not come back to a node: it
            // delivers them here itself.
            .no_echo()
            // JetStream's requests (the bucket's); calls set their own.
            .request_timeout(Some(JETSTREAM_TIMEOUT))
            .connection_timeout(call_timeout.min(Duration::from_secs(5)))
            .max_reconnects(None)
            .event_callback(move |event| {
                let (online, dropped, gaps) = (online_tx.clone(), dropped_tx.clone(), gaps_seen.clone());
                let max_payload = max_payload_seen.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            max_payload.stale.store(true, Ordering::Release);
                            online.send_replace(true);
                        }
                        async_nats::Event::Disconnected => {
                            // Events on their way to NATS may have gone with the connection.
                            gaps.open();
                            online.send_replace(false);
                        }
                        // A subscription of this node fell behind: NATS dropped messages.
                        async_nats::Event::SlowConsumer(_) => dropped.send_modify(|n| *n += 1),
                        other => tracing::debug!(event = %other, "NATS"),
                    }
                }
            });
        let urls: Vec<async_nats::ServerAddr> = settings
            .urls
            .iter()
            .map(|url| url.parse().map_err(|e| Error::Config(format!("the NATS URL `{url}`: {e}"))))
            .collect::<Result<_, _>>()?;
        let client = options
            .connect(urls.as_slice())
            .await
            .map_err(|e| Error::Offline(format!("cannot reach NATS at {}: {e}", settings.urls.join(", "))))?;
        let prefix = settings.prefix.clone();
        let reserved = |what: &str| Subjects::new(format!("{prefix}._mesh.{what}"));
        Ok(Self {
            client,
            topics: Subjects::new(prefix.clone()),
            calls: reserved("call"),
            inboxes: reserved("node"),
            statuses: reserved("nodes"),
            bucket: OnceCell::new(),
            bucket_name: format!("{}_nodes", prefix.replace('.', "_")),
            mesh: Weak::new(),
            online,
            dropped,
            gaps,
            record: watch::Sender::new(None),
            leaving: AtomicBool::new(false),
            revision: std::sync::atomic::AtomicU64::new(0),
            left: tokio::sync::Notify::new(),
            call_timeout,
            max_payload,
        })
    }

    /// How many times this node may have failed to send its events to the
    /// other nodes.
    pub(crate) fn event_gaps(&self) -> u64 {
        self.gaps.count()
    }

    /// Starts carrying `mesh`'s calls, events and membership.
    pub(crate) fn start(mut self, mesh: &Arc<MeshInner>) -> Arc<Self> {
        self.mesh = Arc::downgrade(mesh);
        let nats = Arc::new(self);
        let stop = mesh.stop.clone();
        let uplink = events::uplink(&nats, &mesh.tasks, stop.clone());
        mesh.hub.set_uplink(uplink);
        mesh.tasks.spawn(calls::serve(nats.clone(), stop.clone()));
        mesh.tasks.spawn(events::relay(nats.clone(), mesh.interest.clone(), stop.clone()));
        mesh.tasks.spawn(members::run(nats.clone(), stop.clone()));
        if let Some(server) = mesh.server.get() {
            mesh.tasks.spawn(wills::keep(nats.clone(), server.wills.clone(), stop.clone()));
            mesh.tasks.spawn(wills::announce_returns(nats.clone(), server.wills.clone(), stop.clone()));
            mesh.tasks.spawn(wills::follow_returns(nats.clone(), server.wills.clone(), stop));
        }
        nats
    }

    /// Whether the connection to NATS is up.
    pub(super) fn online(&self) -> Result<(), Error> {
        match *self.online.borrow() {
            true => Ok(()),
            false => Err(Error::Offline("its NATS connection is down".into())),
        }
    }

    /// Fails with [`Error::NoRoute`] unless another node `up` serves `path`
    /// (NATS may still hold the subscription of a node that just left).
    pub(super) fn routed(&self, path: &str) -> Result<(), Error> {
        let served = self.mesh.upgrade().is_some_and(|mesh| mesh.members.served_elsewhere(path));
        match served {
            true => Ok(()),
            false => Err(Error::NoRoute { path: path.to_owned() }),
        }
    }

    /// Calls `path` on one of the other nodes that serve it.
    pub(crate) async fn call<R: DeserializeOwned>(
        &self,
        path: &str,
        data: &(impl Serialize + ?Sized),
    ) -> Result<R, Error> {
        self.routed(path)?;
        let call = wire::call(&wire::CallOut { path, data, identity: None })?;
        let answer = self.request(self.calls.of_topic(path), call, path).await?;
        wire::read_answer(path, &answer)
    }

    /// Emits to `path` on one of the other nodes that serve it.
    pub(crate) async fn emit(&self, path: &str, data: &(impl Serialize + ?Sized)) -> Result<(), Error> {
        self.routed(path)?;
        let call = wire::call(&wire::CallOut { path, data, identity: None })?;
        self.send(self.calls.of_topic(path), call).await
    }

    /// Forwards a client's call to one of the other nodes that serve its path.
    pub(crate) async fn forward(&self, call: &Forward) -> Result<Answered, Error> {
        self.routed(&call.path)?;
        let out = wire::CallOut { path: &call.path, data: &call.data, identity: call.identity.as_ref() };
        let answer = self.request(self.calls.of_topic(&call.path), wire::call(&out)?, &call.path).await?;
        wire::read_answered(&answer)
    }

    /// Forwards a client's call, its data one MessagePack value already
    /// encoded, to one of the other nodes that serve its path; the answer
    /// as it came.
    pub(crate) async fn forward_encoded(
        &self,
        path: &str,
        identity: Option<&rmpv::Value>,
        data: &[u8],
    ) -> Result<Bytes, Error> {
        self.routed(path)?;
        let call = wire::call_encoded(path, identity, data)?;
        self.request(self.calls.of_topic(path), call, path).await
    }

    /// The subject only node `id` serves.
    pub(crate) fn inbox(self: &Arc<Self>, id: &str) -> Inbox {
        Inbox::new(self.clone(), id)
    }

    /// Fails with [`Error::TooLarge`] if a message of `size` bytes is larger
    /// than NATS takes (sent, it would cost this node its connection).
    pub(super) fn fits(&self, size: usize) -> Result<(), Error> {
        self.max_payload.check(&self.client, size)
    }

    /// Fails with [`Error::TooLarge`] if `subject` is longer than a node
    /// sends ([`MAX_SUBJECT_BYTES`]).
    pub(super) fn subject_fits(subject: &str) -> Result<(), Error> {
        match subject.len() <= MAX_SUBJECT_BYTES {
            true => Ok(()),
            false => Err(Error::TooLarge { size: subject.len(), limit: MAX_SUBJECT_BYTES }),
        }
    }

    /// Fails with [`Error::TooLarge`] unless `node`'s record, reported and
    /// stored, fits in NATS's largest message with room for its status to
    /// grow.
    pub(crate) fn record_fits(&self, node: &Node) -> Result<(), Error> {
        let size = rmp_serde::to_vec_named(node).map_err(|e| Error::Protocol(e.to_string()))?.len();
        self.fits(size + RECORD_ROOM)
    }

    pub(super) async fn request(&self, subject: String, payload: Bytes, path: &str) -> Result<Bytes, Error> {
        use async_nats::client::RequestErrorKind;
        self.online()?;
        Self::subject_fits(&subject)?;
        self.fits(payload.len())?;
        let request = async_nats::Request::new().payload(payload).timeout(Some(self.call_timeout));
        let request = self.client.send_request(subject, request);
        let mut online = self.online.clone();
        let dropped = async move {
            while *online.borrow_and_update() {
                if online.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        // The request times out by itself.
        let answered = tokio::select! {
            answered = request => answered,
            () = dropped => {
                return Err(Error::Closed(Some("the NATS connection dropped while the call was under way; it may have run".into())));
            }
        };
        match answered {
            Ok(message) => Ok(message.payload),
            Err(e) => match e.kind() {
                RequestErrorKind::NoResponders => Err(Error::NoRoute { path: path.to_owned() }),
                RequestErrorKind::TimedOut => Err(Error::Timeout(self.call_timeout)),
                RequestErrorKind::Other => Err(Error::Offline(e.to_string())),
            },
        }
    }

    pub(super) async fn send(&self, subject: String, payload: Bytes) -> Result<(), Error> {
        self.online()?;
        Self::subject_fits(&subject)?;
        self.fits(payload.len())?;
        self.client.publish(subject, payload).await.map_err(|e| Error::Offline(e.to_string()))
    }

    /// This node's record changed (its status, its will): it is reported
    /// and stored.
    pub(crate) fn report(&self, node: &Node) {
        match rmp_serde::to_vec_named(node) {
            Ok(bytes) if !self.leaving.load(Ordering::Acquire) => {
                self.record.send_replace(Some(bytes.into()));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("this node's record did not encode: {e}"),
        }
    }

    /// Node `id` is `down`: this node tries to be the one that publishes
    /// its will.
    pub(crate) fn mourn(self: &Arc<Self>, id: &str) {
        let Some(mesh) = self.mesh.upgrade() else { return };
        mesh.tasks.spawn(wills::mourn(self.clone(), id.to_owned(), mesh.stop.clone()));
    }

    /// Leaves: reports and stores this node's record as `left`, so that no
    /// survivor publishes its will.
    pub(crate) async fn leave(&self, mut node: Node) {
        self.leaving.store(true, Ordering::Release);
        let id = node.id.clone();
        members::leave(self, &mut node).await;
        wills::forget(self, &id).await;
    }
}
