//! Configuring a node.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::endpoints::{self, IdentityCodec};
use super::members::Members;
use super::messages::RESERVED;
use super::{Config, Mesh, MeshInner, Node, NodeState, NodeWill, Routes};
use crate::{Error, LegacyFormat, Reconnect, Server, ServerBuilder};

/// The default of [`MeshBuilder::status_interval`]: 5 seconds.
pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(5);

/// The default ping interval of links between nodes: 2 seconds (see
/// [`MeshBuilder::link_heartbeat`]).
pub const DEFAULT_LINK_PING_INTERVAL: Duration = Duration::from_secs(2);

/// The default ping timeout of links between nodes: 3 seconds. A node that
/// stops answering is `suspect` within 5 s (interval plus timeout).
pub const DEFAULT_LINK_PING_TIMEOUT: Duration = Duration::from_secs(3);

/// The default of [`MeshBuilder::down_after`]: 5 seconds, one heartbeat
/// (interval plus timeout) after a node turned `suspect`.
pub const DEFAULT_DOWN_AFTER: Duration = Duration::from_secs(5);

/// The default of [`MeshBuilder::forget_after`]: one hour.
pub const DEFAULT_FORGET_AFTER: Duration = Duration::from_secs(3600);

/// A webmesh 0.1.2 (Python) server, made a member of a mesh: it cannot
/// introduce itself, so its routes are declared here.
///
/// ```
/// use webmesh::{LegacyFormat, LegacyPeer, Mesh};
///
/// let builder = Mesh::builder()
///     .legacy_peer(LegacyPeer::new("ws://10.0.0.7:4269", LegacyFormat::MsgPack, "pricing").routes(["/price", "/quote"]));
/// ```
#[derive(Debug, Clone)]
pub struct LegacyPeer {
    pub(crate) url: String,
    pub(crate) format: LegacyFormat,
    pub(crate) name: String,
    pub(crate) routes: Vec<String>,
}

impl LegacyPeer {
    /// The server at `url`, speaking `format`, running service `name`.
    pub fn new(url: impl Into<String>, format: LegacyFormat, name: impl Into<String>) -> Self {
        Self { url: url.into(), format, name: name.into(), routes: Vec::new() }
    }

    /// The paths it serves.
    pub fn routes<I, S>(mut self, paths: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.routes.extend(paths.into_iter().map(Into::into));
        self
    }

    /// It, as a node of the mesh: its id is made of its URL.
    pub(crate) fn node(&self, url: &str) -> Node {
        Node {
            id: format!("legacy:{url}"),
            name: self.name.clone(),
            url: url.to_owned(),
            version: "0.1.2".into(),
            state: NodeState::Up,
            last_seen_ms: super::node::now_ms(),
            status: None,
            routes: Routes { calls: self.routes.clone(), subscribe: Vec::new(), publish: Vec::new() },
            metadata: BTreeMap::new(),
            peers: Vec::new(),
            legacy: true,
            will: None,
        }
    }
}

/// Configures a [`Mesh`] node: its server, its place in the mesh, and the
/// timings of its links.
///
/// Every setting has a default that works on one machine; the environment
/// gives `WEBMESH_NAME` (the service name), `WEBMESH_PEERS` (seed URLs,
/// comma-separated), `WEBMESH_ADVERTISE` (the URL other nodes dial),
/// `WEBMESH_MESH_SECRET` and, through the server, `WEBMESH_ADDR`.
///
/// ```no_run
/// # async fn demo() -> Result<(), webmesh::Error> {
/// use std::time::Duration;
///
/// let mesh = webmesh::Mesh::builder()
///     .server(webmesh::Server::builder().addr("0.0.0.0:4270"))
///     .name("orders")
///     .peer("ws://10.0.0.5:4269")
///     .advertise("ws://10.0.0.6:4270")
///     .metadata("zone", "eu-west-1a")
///     .secret(std::env::var("MESH_SECRET").unwrap_or_default())
///     .down_after(Duration::from_secs(10))
///     .start()
///     .await?;
/// println!("{} nodes", mesh.nodes().len());
/// # Ok(()) }
/// ```
#[must_use]
pub struct MeshBuilder {
    server: ServerBuilder,
    id: Option<String>,
    name: Option<String>,
    peers: Option<Vec<String>>,
    advertise: Option<String>,
    metadata: BTreeMap<String, String>,
    secret: Option<String>,
    forwarding: bool,
    heartbeat: (Duration, Duration),
    down_after: Duration,
    status_interval: Duration,
    forget_after: Duration,
    call_timeout: Duration,
    legacy_peers: Vec<LegacyPeer>,
    identity: Option<IdentityCodec>,
    will: Option<Result<NodeWill, Error>>,
    #[cfg(feature = "nats")]
    nats: Option<Vec<String>>,
    #[cfg(feature = "nats")]
    nats_prefix: Option<String>,
    #[cfg(feature = "tls")]
    tls: Option<crate::ClientTls>,
}

impl Default for MeshBuilder {
    fn default() -> Self {
        Self {
            server: Server::builder(),
            id: None,
            name: None,
            peers: None,
            advertise: None,
            metadata: BTreeMap::new(),
            secret: None,
            forwarding: true,
            heartbeat: (DEFAULT_LINK_PING_INTERVAL, DEFAULT_LINK_PING_TIMEOUT),
            down_after: DEFAULT_DOWN_AFTER,
            status_interval: DEFAULT_STATUS_INTERVAL,
            forget_after: DEFAULT_FORGET_AFTER,
            call_timeout: crate::DEFAULT_TIMEOUT,
            legacy_peers: Vec::new(),
            identity: None,
            will: None,
            #[cfg(feature = "nats")]
            nats: None,
            #[cfg(feature = "nats")]
            nats_prefix: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl MeshBuilder {
    /// The node's server, configured as for [`Server::builder`]: address,
    /// state, authentication, limits, TLS. Its routes are the declared
    /// handlers and the mesh's own (under `/_mesh/`).
    pub fn server(mut self, server: ServerBuilder) -> Self {
        self.server = server;
        self
    }

    /// The address to listen on; short for `.server(Server::builder().addr(addr))`
    /// on the server given so far.
    pub fn addr(mut self, addr: impl Into<String>) -> Self {
        self.server = self.server.addr(addr);
        self
    }

    /// The node's id (default: random, new at each start), of 1 to 128
    /// bytes. Ids must be unique in the mesh: a restarted node is a new node.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The service this node runs (default `WEBMESH_NAME`, else the
    /// executable's name). Several nodes may share a name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// A seed: a URL of a node to join the mesh through. Adds to the seeds
    /// (default `WEBMESH_PEERS`, comma-separated). One is enough: the node
    /// learns the others from it.
    pub fn peer(mut self, url: impl Into<String>) -> Self {
        self.peers.get_or_insert_with(Vec::new).push(url.into());
        self
    }

    /// The URL other nodes dial to reach this one (default
    /// `WEBMESH_ADVERTISE`, else `ws://` and the bound address, with
    /// `127.0.0.1` for an unspecified one: right on one machine, wrong
    /// behind NAT or in containers, where this must be set).
    pub fn advertise(mut self, url: impl Into<String>) -> Self {
        self.advertise = Some(url.into());
        self
    }

    /// Leaves a last will: `data`, which one surviving node publishes on
    /// `topic`, once in the whole mesh, when this node dies (is `down` for
    /// the others), and none when it leaves gracefully. The other nodes
    /// learn it from this node's introduction and status reports; replace
    /// it with [`Mesh::set_will`](crate::Mesh::set_will).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), webmesh::Error> {
    /// let mesh = webmesh::Mesh::builder()
    ///     .name("billing")
    ///     .will("/services/billing/gone", &"billing died; invoices wait")
    ///     .start()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn will(mut self, topic: impl Into<String>, data: &(impl Serialize + ?Sized)) -> Self {
        self.will = Some(NodeWill::new(topic.into(), data));
        self
    }

    /// Attaches `value` under `key` to the node, for everyone to see in
    /// [`Node::metadata`].
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// A secret every node of the mesh shares (default
    /// `WEBMESH_MESH_SECRET`): a link that does not present it is refused
    /// with 403. Without one, anything that reaches the port can join as a
    /// node; a server that authenticates its clients requires one.
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(secret.into()).filter(|s| !s.is_empty());
        self
    }

    /// Whether a client's call for a path this node does not serve goes to
    /// a node that does (default `true`). A not-found handler set on the
    /// server replaces forwarding.
    pub fn forwarding(mut self, forward: bool) -> Self {
        self.forwarding = forward;
        self
    }

    /// Carries the identity the server's authentication gives a client
    /// (its [`Authenticated<I>`](crate::extract::Authenticated)) with the
    /// calls forwarded for it, so that the serving node's handlers see the
    /// caller. The serving node trusts it only over a link admitted with the
    /// mesh's secret: this requires [`secret`](Self::secret).
    pub fn forward_identity<I>(mut self) -> Self
    where
        I: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    {
        self.identity = Some(IdentityCodec::of::<I>());
        self
    }

    /// The heartbeat of links to other nodes (defaults
    /// [`DEFAULT_LINK_PING_INTERVAL`] and [`DEFAULT_LINK_PING_TIMEOUT`]): a
    /// node silent for `interval + timeout` turns `suspect`.
    pub fn link_heartbeat(mut self, interval: Duration, timeout: Duration) -> Self {
        self.heartbeat = (interval, timeout);
        self
    }

    /// How long a `suspect` node has to come back before it is `down`
    /// (default [`DEFAULT_DOWN_AFTER`]).
    pub fn down_after(mut self, after: Duration) -> Self {
        self.down_after = after;
        self
    }

    /// How often the node reports its status (default [`DEFAULT_STATUS_INTERVAL`]).
    pub fn status_interval(mut self, interval: Duration) -> Self {
        self.status_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// How long a node `down` or `left` stays listed, and a `down` one
    /// dialled, before it is forgotten (default [`DEFAULT_FORGET_AFTER`]).
    pub fn forget_after(mut self, after: Duration) -> Self {
        self.forget_after = after;
        self
    }

    /// The time limit of calls through the mesh (default [`DEFAULT_TIMEOUT`](crate::DEFAULT_TIMEOUT)).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Adds a webmesh 0.1.2 server as a member; see [`LegacyPeer`].
    pub fn legacy_peer(mut self, peer: LegacyPeer) -> Self {
        self.legacy_peers.push(peer);
        self
    }

    /// Joins the mesh through the NATS cluster at `urls` (comma-separated;
    /// default `WEBMESH_NATS`) instead of direct links (feature `nats`): no
    /// seeds, and hundreds of nodes. One server's URL is enough: the client
    /// learns the cluster's other servers from it, and moves to one of them
    /// if its server goes. The NATS servers need JetStream (`-js`), for the
    /// bucket of node records.
    ///
    /// Calls, events, wills and membership go through NATS; the API, the
    /// handlers and the clients stay the same. See the README, "Scaling out".
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), webmesh::Error> {
    /// let mesh = webmesh::Mesh::builder().name("orders").nats("nats://10.0.0.2:4222").start().await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "nats")]
    pub fn nats(mut self, urls: impl AsRef<str>) -> Self {
        let urls = urls.as_ref().split(',').map(|url| url.trim().to_owned()).filter(|url| !url.is_empty());
        self.nats.get_or_insert_with(Vec::new).extend(urls);
        self
    }

    /// The first tokens of every NATS subject of the mesh (default
    /// [`DEFAULT_NATS_PREFIX`](crate::DEFAULT_NATS_PREFIX), `webmesh`, or
    /// `WEBMESH_NATS_PREFIX`): meshes with different prefixes share a NATS
    /// cluster without seeing each other. Its bucket of node records is the
    /// prefix with `_nodes` (dots as `_`).
    #[cfg(feature = "nats")]
    pub fn nats_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.nats_prefix = Some(prefix.into());
        self
    }

    /// The TLS settings of links to `wss://` nodes (feature `tls`), such as
    /// a private CA or a client certificate.
    #[cfg(feature = "tls")]
    pub fn link_tls(mut self, tls: crate::ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Binds the server, starts serving and dialling the seeds, and returns
    /// the running node.
    ///
    /// Fails if the server cannot bind or has two handlers on one path, or
    /// if the server authenticates its clients (or identities are
    /// forwarded) without a mesh secret.
    pub async fn start(mut self) -> Result<Mesh, Error> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let secret = self.secret.take().or_else(|| env("WEBMESH_MESH_SECRET"));
        let mut server = std::mem::take(&mut self.server);
        let user_auth = server.take_authenticate();
        if secret.is_none() && user_auth.is_some() {
            return Err(Error::Config(
                "this server authenticates its clients: its mesh needs a secret (MeshBuilder::secret), or any client could pass as a node".into(),
            ));
        }
        if secret.is_none() && self.identity.is_some() {
            return Err(Error::Config("forward_identity needs a mesh secret (MeshBuilder::secret)".into()));
        }
        let will = self.will.take().transpose()?;
        let id = self.id.take().unwrap_or_else(random_id);
        if id.is_empty() || id.len() > super::MAX_NODE_ID {
            return Err(Error::Config(format!("a node's id is 1 to {} bytes", super::MAX_NODE_ID)));
        }
        let name = self.name.take().or_else(|| env("WEBMESH_NAME")).unwrap_or_else(default_name);
        let peers = self.peers.take().unwrap_or_else(|| {
            env("WEBMESH_PEERS")
                .map(|p| p.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
                .unwrap_or_default()
        });
        let advertise = self.advertise.take().or_else(|| env("WEBMESH_ADVERTISE"));
        #[cfg(feature = "nats")]
        let nats = match self.nats_settings(&peers)? {
            Some(settings) => Some(super::nats::Nats::connect(&settings, &id, &name, self.call_timeout).await?),
            None => None,
        };
        let forwarding = self.forwarding && !server.has_not_found();
        let hub = server.hub();
        let interest = hub.interest(RESERVED);
        // The routes and handlers hold the mesh weakly: the mesh holds the server.
        let mesh = Arc::new_cyclic(|weak| {
            server = std::mem::take(&mut server).add_routes(endpoints::routes(weak.clone()));
            if forwarding {
                server = std::mem::take(&mut server).not_found_boxed(endpoints::forwarder(weak.clone()));
            }
            server = std::mem::take(&mut server)
                .set_authenticate(endpoints::admission(secret.clone(), user_auth))
                .state(Mesh::from_weak(weak.clone()));
            let placeholder = Node {
                id: id.clone(),
                name: name.clone(),
                url: String::new(),
                version: env!("CARGO_PKG_VERSION").into(),
                state: NodeState::Up,
                last_seen_ms: super::node::now_ms(),
                status: None,
                routes: Routes::default(),
                metadata: self.metadata.clone(),
                peers: Vec::new(),
                legacy: false,
                will: will.clone(),
            };
            MeshInner {
                id: id.clone(),
                url: OnceLock::new(),
                config: Config {
                    secret: secret.clone(),
                    heartbeat: self.heartbeat,
                    down_after: self.down_after,
                    status_interval: self.status_interval,
                    forget_after: self.forget_after,
                    redial: Reconnect {
                        initial_delay: Duration::from_millis(100),
                        max_delay: self.heartbeat.0.max(Duration::from_millis(200)),
                    },
                    call_timeout: self.call_timeout,
                    #[cfg(feature = "tls")]
                    tls: self.tls.clone(),
                },
                members: Members::new(placeholder, hub.clone()),
                hub: hub.clone(),
                interest,
                identity: self.identity.take(),
                server: OnceLock::new(),
                links: Mutex::default(),
                self_urls: Mutex::default(),
                stop: CancellationToken::new(),
                serving: CancellationToken::new(),
                leaving: std::sync::atomic::AtomicBool::new(false),
                tasks: TaskTracker::new(),
                started: Instant::now(),
                turns: AtomicUsize::new(0),
                callers: AtomicU64::new(1 << 62),
                caller_parts: crate::server::Callers::new(),
                running: OnceLock::new(),
                last_calls: Mutex::new((Instant::now(), 0)),
                heirs: Default::default(),
                #[cfg(feature = "nats")]
                nats: OnceLock::new(),
            }
        });
        let bound = server.bind().await?;
        let url = advertise.unwrap_or_else(|| default_url(&bound));
        let shared = bound.shared().clone();
        let routes = Routes {
            calls: own(shared.routes.patterns()),
            subscribe: own(shared.subscribe_routes.patterns()),
            publish: own(shared.publish_routes.patterns()),
        };
        // Now that the URL and routes are known, the node is complete.
        let _ = mesh.url.set(url.clone());
        mesh.members.replace_self(Node { url, routes, ..mesh.members.own() });
        let _ = mesh.server.set(shared);
        #[cfg(feature = "nats")]
        if let Some(nats) = nats {
            // Its will and metadata must fit in one NATS message.
            nats.record_fits(&mesh.members.own())?;
            let _ = mesh.nats.set(nats.start(&mesh));
        }
        Ok(Mesh::run(mesh, bound, peers, self.legacy_peers))
    }
}

impl MeshBuilder {
    /// The NATS to join through, if any; a node joins through NATS or
    /// through seeds, not both.
    #[cfg(feature = "nats")]
    fn nats_settings(&mut self, peers: &[String]) -> Result<Option<super::nats::Settings>, Error> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let urls = match self.nats.take() {
            Some(urls) => urls,
            None => match env("WEBMESH_NATS") {
                Some(urls) => urls.split(',').map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()).collect(),
                None => return Ok(None),
            },
        };
        if urls.is_empty() {
            return Err(Error::Config("no NATS URL to join the mesh through".into()));
        }
        if !peers.is_empty() || !self.legacy_peers.is_empty() {
            return Err(Error::Config(
                "a node joins its mesh through NATS or through seeds and legacy peers, not both".into(),
            ));
        }
        let prefix = self
            .nats_prefix
            .take()
            .or_else(|| env("WEBMESH_NATS_PREFIX"))
            .unwrap_or_else(|| super::nats::DEFAULT_NATS_PREFIX.into());
        let valid = !prefix.is_empty()
            && prefix.split('.').all(|token| {
                !token.is_empty() && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return Err(Error::Config(format!(
                "the NATS prefix `{prefix}`: tokens of letters, digits, `-` and `_`, separated by dots"
            )));
        }
        Ok(Some(super::nats::Settings { urls, prefix }))
    }
}

/// The paths a node serves, without the mesh's own.
fn own(patterns: &[String]) -> Vec<String> {
    let mut own: Vec<String> = patterns.iter().filter(|p| !p.starts_with(RESERVED)).cloned().collect();
    own.sort();
    own
}

fn random_id() -> String {
    format!("{:016x}", fastrand::u64(..))
}

fn default_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "webmesh".into())
}

fn default_url(server: &Server) -> String {
    let mut addr = server.local_addr();
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let scheme = if server.serves_tls() { "wss" } else { "ws" };
    format!("{scheme}://{addr}")
}
