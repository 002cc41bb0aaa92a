//! The handle of a running node: calls, events and membership.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::members::Target;
use super::messages::{Goodbye, GOODBYE};
use super::{to_payload, Dial, LegacyPeer, MeshBuilder, MeshInner, Node, NodeWill};
use crate::handler::{Reply, ReplyKind};
use crate::{Error, Hub, Server};

/// One process's node of a mesh: it serves every declared handler, as
/// [`serve`](crate::serve) does, keeps a link to every other node it
/// knows, and calls and publishes across all of them.
///
/// ```no_run
/// #[webmesh::on("/stock/{sku}")]
/// async fn stock(webmesh::extract::Path(sku): webmesh::extract::Path<String>) -> u32 {
///     42
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), webmesh::Error> {
///     let mesh = webmesh::Mesh::builder().name("inventory").peer("ws://10.0.0.5:4269").start().await?;
///     // Any node serving /price answers, here or elsewhere.
///     let price: f64 = mesh.call("/price", &"sku-1").await?;
///     mesh.publish("/stock/sku-1", &price)?; // subscribers on every node receive it
///     tokio::signal::ctrl_c().await?;
///     mesh.shutdown().await; // says goodbye: the others see this node `left`
///     Ok(())
/// }
/// ```
///
/// A handler gets the node with the [`State`](crate::State) extractor:
/// `State(mesh): State<Mesh>`. Clones are cheap and share the node. The
/// node runs until [`shutdown`](Self::shutdown), whether or not handles
/// remain, as a spawned server does.
///
/// # Guarantees
///
/// - A call goes to one node; it is re-sent elsewhere only if it was not
///   sent at all. An event reaches each subscriber of each node at most
///   once, in the order its publisher published to its topic.
/// - Events lost on the way (a subscriber's link dropped them, or broke)
///   are reported to the subscribers that may have wanted them, as
///   [`Error::Lagged`]; they are not re-sent.
/// - Membership is each node's own view of its links: no consensus, no
///   gossip of suspicions. Two nodes may see a third differently for a
///   moment; both converge once their links settle.
/// - Over NATS (`MeshBuilder::nats`, feature `nats`), the same, with NATS in place of
///   links: a node is `suspect` when its reports stop, and a dead node's
///   will is published by the one survivor whose compare-and-set on its
///   record succeeds.
#[derive(Clone)]
pub struct Mesh {
    inner: Handle,
}

#[derive(Clone)]
enum Handle {
    Strong(Arc<MeshInner>),
    /// The copy in the server's state, which the node itself holds.
    Weak(Weak<MeshInner>),
}

impl Mesh {
    /// Starts configuring a node.
    pub fn builder() -> MeshBuilder {
        MeshBuilder::default()
    }

    pub(crate) fn from_weak(inner: Weak<MeshInner>) -> Self {
        Self { inner: Handle::Weak(inner) }
    }

    fn get(&self) -> Result<Arc<MeshInner>, Error> {
        match &self.inner {
            Handle::Strong(inner) => Ok(inner.clone()),
            Handle::Weak(inner) => inner.upgrade().ok_or_else(|| Error::Closed(Some("the mesh node stopped".into()))),
        }
    }

    /// Serves, dials the seeds and reports status until shut down.
    pub(crate) fn run(inner: Arc<MeshInner>, server: Server, peers: Vec<String>, legacy: Vec<LegacyPeer>) -> Self {
        tracing::info!(id = %inner.id, name = %inner.members.own().name, url = %inner.url(), "mesh node started");
        let addr = server.local_addr();
        let stop = inner.serving.clone();
        let serving = tokio::spawn(server.serve_with_shutdown(async move { stop.cancelled().await }));
        for url in peers {
            inner.dial(&url, Dial::Seed);
        }
        for peer in legacy {
            inner.dial(&peer.url.clone(), Dial::Legacy(peer));
        }
        inner.report();
        inner.tasks.spawn(report(inner.clone()));
        let running = Running { addr, serving: Mutex::new(Some(serving)) };
        let _ = inner.running.set(running);
        Self { inner: Handle::Strong(inner) }
    }

    /// This node's id.
    pub fn id(&self) -> String {
        self.get().map(|m| m.id.clone()).unwrap_or_default()
    }

    /// This node's service name.
    pub fn name(&self) -> String {
        self.get().map(|m| m.members.own().name).unwrap_or_default()
    }

    /// The URL other nodes dial to reach this one.
    pub fn url(&self) -> String {
        self.get().map(|m| m.url().to_owned()).unwrap_or_default()
    }

    /// The address the node's server listens on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.get().ok().and_then(|m| m.running.get().map(|r| r.addr))
    }

    /// Every node this node knows, itself included, as it sees them now.
    pub fn nodes(&self) -> Vec<Node> {
        self.get().map(|m| m.members.snapshot()).unwrap_or_default()
    }

    /// A stream of changes: each time a node joins, changes state, or
    /// reports its status, its new [`Node`].
    pub fn watch(&self) -> Watch {
        Watch { changes: self.get().ok().and_then(|mesh| mesh.members.subscribe()) }
    }

    /// The hub of this node's subscribers. Its events reach the matching
    /// subscribers of every node; see [`publish`](Self::publish).
    pub fn hub(&self) -> Option<Hub> {
        self.get().ok().map(|m| m.hub.clone())
    }

    /// Replaces this node's last will (see [`MeshBuilder::will`]): from now
    /// on, if this node dies, one surviving node publishes `data` on
    /// `topic`. The other nodes learn it at once, from a status report.
    ///
    /// Over NATS, the node's record carries the will in one NATS message:
    /// a will that would not fit (NATS's `max_payload`, 1 MiB by default,
    /// less 1 KiB) is refused with [`Error::TooLarge`], and the one in
    /// force stays.
    pub fn set_will(&self, topic: &str, data: &(impl Serialize + ?Sized)) -> Result<(), Error> {
        let will = NodeWill::new(topic.to_owned(), data)?;
        let mesh = self.get()?;
        // Over NATS, the record carrying it must fit in one NATS message.
        #[cfg(feature = "nats")]
        if let Some(nats) = mesh.nats.get() {
            nats.record_fits(&Node { will: Some(will.clone()), ..mesh.members.own() })?;
        }
        mesh.members.set_own_will(Some(will));
        mesh.report();
        Ok(())
    }

    /// Withdraws this node's last will: nothing is published when it dies.
    pub fn clear_will(&self) -> Result<(), Error> {
        let mesh = self.get()?;
        mesh.members.set_own_will(None);
        mesh.report();
        Ok(())
    }

    /// Publishes `data` to `topic` for the matching subscribers of every
    /// node, and returns how many connections it was queued for here
    /// (each other node whose subscribers match counts as one; over NATS,
    /// other nodes are not counted: NATS knows which ones want it).
    pub fn publish<T: Serialize + ?Sized>(&self, topic: &str, data: &T) -> Result<usize, Error> {
        self.get()?.hub.publish(topic, data)
    }

    /// Calls `path` on a node that serves it: this one, without a socket,
    /// or another that is `up`, taking turns among them.
    ///
    /// Fails with [`Error::NoRoute`] when no node `up` serves `path`. A call
    /// that could not be sent to one node is tried on the next; a call that
    /// was sent and then lost is not (it may have run).
    ///
    /// Over NATS (`MeshBuilder::nats`, feature `nats`), a node that serves `path` runs
    /// the call itself; otherwise NATS gives it to one of the nodes that
    /// serve it. While this node is cut off from NATS, the call fails at
    /// once with [`Error::Offline`].
    pub async fn call<R: DeserializeOwned>(&self, path: &str, data: &(impl Serialize + ?Sized)) -> Result<R, Error> {
        let mesh = self.get()?;
        #[cfg(feature = "nats")]
        if let Some(nats) = mesh.nats.get() {
            return match mesh.serves(path) {
                true => call_here(&mesh, path, data).await,
                false => nats.call(path, data).await,
            };
        }
        let targets = mesh.members.serving(path, false);
        call_one(&mesh, targets, path, data).await
    }

    /// Sends `data` to `path` on a node that serves it, as
    /// [`call`](Self::call) chooses, without waiting for an answer.
    pub async fn emit(&self, path: &str, data: &(impl Serialize + ?Sized)) -> Result<(), Error> {
        let mesh = self.get()?;
        #[cfg(feature = "nats")]
        if let Some(nats) = mesh.nats.get() {
            if mesh.serves(path) {
                return emit_to(&mesh, &Target::Local, path, data).await;
            }
            return nats.emit(path, data).await;
        }
        let targets = mesh.members.serving(path, false);
        emit_one(&mesh, targets, path, data).await
    }

    /// Emits `data` to `path` on every node `up` that serves it, and
    /// returns how many it was sent to.
    pub async fn broadcast(&self, path: &str, data: &(impl Serialize + ?Sized)) -> Result<usize, Error> {
        let mesh = self.get()?;
        let mut sent = 0;
        for target in mesh.members.serving(path, false) {
            if emit_to(&mesh, &target, path, data).await.is_ok() {
                sent += 1;
            }
        }
        Ok(sent)
    }

    /// The node whose id is `id_or_name`, or the nodes of that service
    /// name (taking turns among those `up`), to call them alone.
    ///
    /// ```no_run
    /// # async fn demo(mesh: webmesh::Mesh) -> Result<(), webmesh::Error> {
    /// let report: serde_json::Value = mesh.node("billing").call("/report", &()).await?;
    /// # Ok(()) }
    /// ```
    pub fn node(&self, id_or_name: &str) -> NodeRef {
        NodeRef { mesh: self.clone(), selector: id_or_name.to_owned() }
    }

    /// Leaves the mesh gracefully: says goodbye to every node (they see
    /// this one `left`, send it no new calls, and stop dialling it once it
    /// closes), shuts the server down as [`Server::serve_with_shutdown`]
    /// does (the calls under way finish and are answered, up to the
    /// server's shutdown timeout; their own calls through the mesh still
    /// work meanwhile), then ends the links. [`Watch`]es end.
    ///
    /// Awaited inside a handler of this node, it waits for that handler,
    /// until the shutdown timeout: spawn it there instead.
    pub async fn shutdown(&self) {
        let Ok(mesh) = self.get() else { return };
        mesh.leaving.store(true, std::sync::atomic::Ordering::Release);
        #[cfg(feature = "nats")]
        if let Some(nats) = mesh.nats.get() {
            nats.leave(mesh.members.own()).await;
        }
        let bye = Goodbye { id: mesh.id.clone() };
        let farewells = mesh.members.links_up().into_iter().map(|(_, client)| {
            let bye = bye.clone();
            async move {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), client.call::<()>(GOODBYE, &bye)).await;
            }
        });
        futures_util::future::join_all(farewells).await;
        mesh.serving.cancel();
        let serving = mesh.running.get().and_then(|r| r.serving.lock().unwrap_or_else(PoisonError::into_inner).take());
        if let Some(serving) = serving {
            let _ = serving.await;
        }
        mesh.stop.cancel();
        mesh.tasks.close();
        mesh.tasks.wait().await;
        mesh.members.close();
    }
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh").field("id", &self.id()).field("name", &self.name()).finish_non_exhaustive()
    }
}

/// What runs for a started node.
pub(crate) struct Running {
    addr: SocketAddr,
    serving: Mutex<Option<JoinHandle<Result<(), Error>>>>,
}

/// Reports this node's status, and forgets nodes long gone.
async fn report(mesh: Arc<MeshInner>) {
    let mut tick = tokio::time::interval(mesh.config.status_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = mesh.stop.cancelled() => return,
        }
        mesh.report();
        for url in mesh.members.reap(mesh.config.forget_after) {
            mesh.hang_up(&url);
        }
        mesh.forget_fates();
    }
}

async fn call_one<R: DeserializeOwned>(
    mesh: &MeshInner,
    targets: Vec<Target>,
    path: &str,
    data: &(impl Serialize + ?Sized),
) -> Result<R, Error> {
    mesh.in_turns(targets, path, |target| async move {
        match target {
            Target::Local => call_here(mesh, path, data).await,
            Target::Remote { peer, .. } => peer.call(path, data).await,
        }
    })
    .await
}

async fn emit_one(
    mesh: &Arc<MeshInner>,
    targets: Vec<Target>,
    path: &str,
    data: &(impl Serialize + ?Sized),
) -> Result<(), Error> {
    mesh.in_turns(targets, path, |target| async move { emit_to(mesh, &target, path, data).await }).await
}

async fn emit_to(
    mesh: &Arc<MeshInner>,
    target: &Target,
    path: &str,
    data: &(impl Serialize + ?Sized),
) -> Result<(), Error> {
    match target {
        Target::Local => {
            let payload = to_payload(data)?;
            let (mesh, path) = (mesh.clone(), path.to_owned());
            mesh.tasks.clone().spawn(async move {
                if let Some(Reply(ReplyKind::Error(error))) = mesh.call_here(mesh.caller(), &path, payload).await {
                    tracing::debug!(%path, %error, "emit failed");
                }
            });
            Ok(())
        }
        Target::Remote { peer, .. } => peer.emit(path, data).await,
    }
}

/// Runs `path`'s handler on this node, as a call from no connection.
async fn call_here<R: DeserializeOwned>(
    mesh: &MeshInner,
    path: &str,
    data: &(impl Serialize + ?Sized),
) -> Result<R, Error> {
    let payload = to_payload(data)?;
    let reply =
        mesh.call_here(mesh.caller(), path, payload).await.ok_or_else(|| Error::NotFound { path: path.to_owned() })?;
    match reply.0 {
        ReplyKind::Value(value) => {
            let bytes = rmp_serde::to_vec_named(&value).map_err(|e| Error::Protocol(e.to_string()))?;
            crate::Payload::msgpack(bytes.into()).deserialize().map_err(Error::from)
        }
        ReplyKind::Encoded(value) => crate::Payload::msgpack(value.0).deserialize().map_err(Error::from),
        ReplyKind::Error(error) => Err(Error::from_reply(path, error)),
    }
}

/// One node, or the nodes of one service, of a mesh: see [`Mesh::node`].
#[derive(Clone, Debug)]
pub struct NodeRef {
    mesh: Mesh,
    selector: String,
}

impl NodeRef {
    fn targets(&self, mesh: &MeshInner) -> Vec<Target> {
        mesh.members.named(&self.selector).iter().filter_map(|id| mesh.members.target(id)).collect()
    }

    /// Calls `path` on this node (on one of them, for a service name).
    /// Fails with [`Error::NoRoute`] when none is `up`.
    pub async fn call<R: DeserializeOwned>(&self, path: &str, data: &(impl Serialize + ?Sized)) -> Result<R, Error> {
        let mesh = self.mesh.get()?;
        call_one(&mesh, self.targets(&mesh), path, data).await
    }

    /// Emits to `path` on this node (on one of them, for a service name).
    pub async fn emit(&self, path: &str, data: &(impl Serialize + ?Sized)) -> Result<(), Error> {
        let mesh = self.mesh.get()?;
        let targets = self.targets(&mesh);
        emit_one(&mesh, targets, path, data).await
    }

    /// The node as this node sees it; for a service name, the first `up`.
    pub fn info(&self) -> Option<Node> {
        let mesh = self.mesh.get().ok()?;
        let ids = mesh.members.named(&self.selector);
        let nodes: Vec<Node> = ids.iter().filter_map(|id| mesh.members.get(id)).collect();
        nodes.iter().find(|n| n.state == super::NodeState::Up).or(nodes.first()).cloned()
    }
}

/// The changes of a mesh's nodes, from [`Mesh::watch`].
#[derive(Debug)]
pub struct Watch {
    changes: Option<broadcast::Receiver<Node>>,
}

impl Watch {
    /// The next change: the changed node as it is now. `None` once the
    /// node stopped. A watcher that falls more than 1024 changes behind
    /// skips the oldest (each change carries the whole node, so the latest
    /// of each node is never wrong for long).
    pub async fn next(&mut self) -> Option<Node> {
        let changes = self.changes.as_mut()?;
        loop {
            match changes.recv().await {
                Ok(node) => return Some(node),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// Runs this process as a node of a mesh, configured by the environment
/// (`WEBMESH_ADDR`, `WEBMESH_NAME`, `WEBMESH_PEERS`; see [`MeshBuilder`]),
/// until Ctrl-C or SIGTERM, then leaves gracefully. What
/// [`serve`](crate::serve) is to a server.
///
/// ```no_run
/// #[webmesh::on("/ping")]
/// fn ping() -> &'static str {
///     "pong"
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), webmesh::Error> {
///     webmesh::mesh().await
/// }
/// ```
pub async fn mesh() -> Result<(), Error> {
    let mesh = Mesh::builder().start().await?;
    stopped().await;
    mesh.shutdown().await;
    Ok(())
}

/// Ctrl-C, or SIGTERM on Unix.
async fn stopped() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => return ctrl_c.await,
        };
        tokio::select! {
            () = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}
