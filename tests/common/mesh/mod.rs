//! The mesh's scenarios, run over each transport: direct links
//! (`tests/mesh.rs`) and a NATS cluster (`tests/mesh_nats.rs`). What a
//! user sees is the same over both; where a transport differs by design,
//! the scenario says so.

pub mod calls;
pub mod events;
pub mod members;
pub mod wills;

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use webmesh::{Client, Error, Mesh, MeshBuilder, NodeState, Router, Server, State};

use super::nats::Nats;
use super::python;

/// One test for each of the scenarios named (`module::scenario`), named
/// after it and run over `transport`: what differs between the mesh's
/// test files is only the transport.
#[macro_export]
macro_rules! scenarios_over {
    ($transport:expr; $($module:ident::$scenario:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                $crate::common::mesh::$module::$scenario($transport).await;
            }
        )+
    };
}

/// Every scenario of the mesh, one test each, over `transport`: both
/// transports run the same list.
#[macro_export]
macro_rules! every_scenario_over {
    ($transport:expr) => {
        scenarios_over! { $transport;
            calls::calls_go_to_the_nodes_serving_the_path_else_no_route,
            calls::a_plain_client_of_any_node_reaches_every_route_and_cannot_pass_for_a_node,
            calls::the_python_client_on_one_node_calls_a_route_only_another_serves,
            calls::forwarded_calls_carry_the_callers_identity_and_only_nodes_can_pass_it_on,
            calls::a_forwarded_calls_error_reaches_its_client_as_the_serving_node_gave_it,
            events::events_cross_the_mesh_in_order_once_and_only_where_subscribers_want_them,
            members::nodes_reach_full_membership_a_late_one_is_known_to_all_and_leaving_is_left,
            members::a_killed_node_is_suspect_then_down_its_routes_go_elsewhere_and_it_comes_back_as_a_new_node,
            members::a_stopped_node_is_down_then_up_again_on_both_sides,
            members::a_node_leaving_gracefully_answers_the_calls_under_way_first,
            members::slow_calls_to_another_node_do_not_hold_up_the_others_and_watches_end,
            wills::a_killed_nodes_will_reaches_a_subscriber_on_each_survivor_exactly_once_even_when_its_heir_dies_with_it,
            wills::a_node_that_leaves_gracefully_has_no_will_published_and_set_will_replaces_it,
        }
    };
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// How the nodes of a scenario reach each other.
pub enum Transport {
    /// Direct links, each node seeded with the first.
    Links,
    /// A 3-server NATS cluster, the nodes attached to its servers in turn.
    Nats(Vec<Nats>),
}

impl Transport {
    pub fn nats() -> Self {
        Self::Nats(Nats::cluster(3))
    }

    /// The `i`-th node of a scenario, named `name`, serving `router`, with
    /// timings short enough for tests (a silent node is `suspect` within
    /// 0.5 s, `down` 0.5 s later). Over links, `first` is its seed.
    pub fn builder(&self, i: usize, name: &str, router: Router, first: Option<&Mesh>) -> MeshBuilder {
        let server = Server::builder().registered_handlers(false).router(router).addr("127.0.0.1:0");
        let builder = Mesh::builder().server(server).name(name).down_after(ms(500)).status_interval(ms(200));
        match self {
            Self::Links => {
                let builder = builder.link_heartbeat(ms(200), ms(300));
                match first {
                    Some(first) => builder.peer(first.url()),
                    None => builder,
                }
            }
            Self::Nats(cluster) => builder.nats(cluster[i % cluster.len()].url()),
        }
    }

    pub async fn node(&self, i: usize, name: &str, router: Router, first: Option<&Mesh>) -> Mesh {
        self.builder(i, name, router, first).start().await.expect("start a node")
    }

    /// The `i`-th node of a scenario in a child process (this test binary
    /// run again, its `child_node`), serving `routes` (comma-separated,
    /// each answering with its id), with the timings of [`Self::builder`]
    /// and more of its settings in `env` (see [`child_node`]). Over links,
    /// `first` is its seed.
    pub fn child(&self, i: usize, first: &Mesh, routes: &str, env: &[(&str, &str)]) -> ChildNode {
        match self {
            Self::Links => ChildNode::start(("MESH_CHILD_PEER", &first.url()), routes, env),
            Self::Nats(cluster) => ChildNode::on_nats(&cluster[i % cluster.len()], routes, env),
        }
    }

    /// Waits until what a survivor needs to act on the death of one of
    /// `n` nodes is in place. Over NATS, the records of all `n` in the
    /// bucket (a new cluster elects its JetStream leader first, which takes
    /// a few seconds); over links, being `up` is enough.
    pub async fn settled(&self, n: usize) {
        if let Self::Nats(cluster) = self {
            records_stored(&cluster[0], n).await;
        }
    }

    /// How many of `others` the events that `from` publishes on `topic`
    /// reach, as the transport routes them: over links, the links `from`
    /// queues such an event for (its `local` subscribers there aside);
    /// over NATS, the nodes whose NATS connection holds a subscription
    /// matching the topic's subject.
    pub fn others_reached(&self, from: &Mesh, local: usize, others: &[&Mesh], topic: &str) -> usize {
        match self {
            Self::Links => from.publish(topic, &"probe").unwrap() - local,
            Self::Nats(cluster) => {
                let subject = format!("webmesh{}", topic.replace('/', "."));
                let subscribed = |node: &&&Mesh| {
                    let connection = format!("webmesh {} {}", node.name(), node.id());
                    cluster
                        .iter()
                        .flat_map(|server| server.subscriptions_of(&connection))
                        .any(|pattern| subject_matches(&pattern, &subject))
                };
                others.iter().filter(subscribed).count()
            }
        }
    }
}

/// Whether NATS subject `pattern` (with `*` and `>`) matches `subject`.
fn subject_matches(pattern: &str, subject: &str) -> bool {
    let (mut pattern, mut subject) = (pattern.split('.'), subject.split('.'));
    loop {
        match (pattern.next(), subject.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(p), Some(s)) if p == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A node in a child process, killed when dropped.
pub struct ChildNode {
    pub process: python::Killed,
    pub id: String,
    /// The port its server listens on.
    pub port: u16,
}

impl ChildNode {
    /// A child node attached to `nats`, serving `routes` (see
    /// [`Transport::child`]).
    pub fn on_nats(nats: &Nats, routes: &str, env: &[(&str, &str)]) -> Self {
        Self::start(("MESH_CHILD_NATS", &nats.url()), routes, env)
    }

    fn start(contact: (&str, &str), routes: &str, env: &[(&str, &str)]) -> Self {
        let mut env = env.to_vec();
        env.extend([("MESH_CHILD_ROUTES", routes), contact]);
        let (process, ready) = super::child_test("child_node", &env);
        let mut fields = ready.split_whitespace();
        let id = fields.next().expect("the child's id").to_owned();
        let port = fields.next().and_then(|p| p.parse().ok()).expect("the child's port");
        Self { process, id, port }
    }

    /// Sends it `signal` (`-KILL`, `-STOP`, `-CONT`, `-TERM`: on which it
    /// leaves the mesh gracefully).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.process.0.id().to_string()]).status().unwrap();
        assert!(status.success());
    }
}

/// The body of the `child_node` test of each mesh test binary: a node of
/// the scenario that [`Transport::child`] starts, set up from its
/// environment. It prints `ready {id} {port}` once started, and leaves
/// the mesh gracefully on SIGTERM. `MESH_CHILD_PEER` (a seed) or
/// `MESH_CHILD_NATS` (a NATS URL) choose the transport; `MESH_CHILD_ROUTES`
/// its routes; optional: `MESH_CHILD_PORT`, `MESH_CHILD_ID`,
/// `MESH_CHILD_WILL` (a topic), `MESH_CHILD_DOWN_AFTER` (ms).
pub async fn child_node() {
    let Ok(routes) = std::env::var("MESH_CHILD_ROUTES") else { return };
    let var = |name: &str| std::env::var(name).ok();
    let router = routes
        .split(',')
        .filter(|r| !r.is_empty())
        .fold(Router::new(), |router, path| router.on(path, |State(mesh): State<Mesh>| mesh.id()))
        // Its clients may leave wills there.
        .publish("/services/{name}/gone", || async {});
    let port = var("MESH_CHILD_PORT").unwrap_or_else(|| "0".into());
    let server = Server::builder().registered_handlers(false).router(router).addr(format!("127.0.0.1:{port}"));
    let mut builder = Mesh::builder().server(server).name("child").down_after(ms(500)).status_interval(ms(200));
    match (var("MESH_CHILD_PEER"), var("MESH_CHILD_NATS")) {
        (Some(peer), None) => builder = builder.link_heartbeat(ms(200), ms(300)).peer(peer),
        (None, Some(nats)) => builder = builder.nats(nats),
        other => panic!("MESH_CHILD_PEER or MESH_CHILD_NATS: {other:?}"),
    }
    if let Some(id) = var("MESH_CHILD_ID") {
        builder = builder.id(id);
    }
    if let Some(after) = var("MESH_CHILD_DOWN_AFTER") {
        builder = builder.down_after(ms(after.parse().unwrap()));
    }
    if let Some(topic) = var("MESH_CHILD_WILL") {
        builder = builder.will(topic, &child_will());
    }
    let mesh = builder.start().await.unwrap();
    println!("ready {} {}", mesh.id(), mesh.local_addr().unwrap().port());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    term.recv().await;
    mesh.shutdown().await;
    println!("left");
}

/// The will a child node leaves, given `MESH_CHILD_WILL`.
pub fn child_will() -> Value {
    json!({"will of": "child"})
}

/// Waits until the bucket of the NATS mesh holds `n` records.
pub async fn records_stored(nats: &Nats, n: usize) {
    use futures_util::StreamExt;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    super::within(60, async {
        loop {
            if let Ok(store) = js.get_key_value("webmesh_nodes").await {
                if let Ok(keys) = store.keys().await {
                    // Not the copies of clients' wills, nor their returns.
                    let record = |k: &String| !k.starts_with("wills.") && !k.starts_with("back.");
                    let records = keys.filter(|key| std::future::ready(key.as_ref().is_ok_and(record)));
                    if records.count().await == n {
                        return;
                    }
                }
            }
            tokio::time::sleep(ms(200)).await;
        }
    })
    .await;
}

/// A route answering with the id of the node that ran it.
pub fn whoami(path: &str) -> Router {
    Router::new().on(path, |State(mesh): State<Mesh>| mesh.id())
}

pub fn state_of(mesh: &Mesh, id: &str) -> Option<NodeState> {
    mesh.nodes().into_iter().find(|n| n.id == id).map(|n| n.state)
}

pub fn all_up(mesh: &Mesh, count: usize) -> bool {
    let nodes = mesh.nodes();
    nodes.len() == count && nodes.iter().all(|n| n.state == NodeState::Up)
}

/// Subscribers, each with its client.
pub type Watchers = Vec<(Client, webmesh::Subscription<Value>)>;

/// Publishes probes on `topic` from `from` until `subscription` receives
/// one, then reads past the probes still on their way.
pub async fn probe(from: &Mesh, topic: &str, subscription: &mut webmesh::Subscription<Value>) {
    super::within(15, async {
        loop {
            from.publish(topic, &"probe").unwrap();
            if let Ok(Some(Ok(event))) = tokio::time::timeout(ms(100), subscription.recv()).await {
                if event.topic == topic {
                    return;
                }
            }
        }
    })
    .await;
    drain(subscription, ms(200)).await;
}

/// A subscriber of `/services/*/gone` on each of `nodes`, once the events
/// of every one of them reach it.
pub async fn will_watchers(nodes: &[&Mesh]) -> Watchers {
    let mut watchers = Vec::new();
    for n in nodes {
        let client = Client::connect(&n.url()).await.unwrap();
        let subscription = client.subscribe::<Value>("/services/*/gone").await.unwrap();
        watchers.push((client, subscription));
    }
    for from in nodes {
        for (_, subscription) in &mut watchers {
            probe(from, "/services/probe/gone", subscription).await;
        }
    }
    watchers
}

/// What each of `watchers` received (but the losses it was told of) before
/// the markers each of `survivors` publishes now on each of `topics`: a will
/// published once per survivor, or twice by either, comes before that
/// one's marker on its topic.
pub async fn wills_received(survivors: &[&Mesh], topics: &[&str], watchers: &mut Watchers) -> Vec<Vec<Value>> {
    let mut markers = Vec::new();
    for topic in topics {
        for node in survivors {
            let marker = json!(format!("marker of {}", node.id()));
            node.publish(topic, &marker).unwrap();
            markers.push(marker);
        }
    }
    let mut received = Vec::new();
    for (_, subscription) in watchers {
        received.push(until_markers(subscription, &markers).await);
    }
    received
}

/// Reads `subscription` until `quiet` passes without an event, returning
/// the data of the events (not the probes) and the losses reported.
pub async fn drain(subscription: &mut webmesh::Subscription<Value>, quiet: Duration) -> (Vec<Value>, usize) {
    let (mut events, mut lost) = (Vec::new(), 0);
    while let Ok(Some(item)) = tokio::time::timeout(quiet, subscription.recv()).await {
        match item {
            Ok(event) if event.topic.ends_with("/probe") => {}
            Ok(event) => events.push(event.data),
            Err(Error::Lagged { .. }) => lost += 1,
            Err(e) => panic!("{e}"),
        }
    }
    (events, lost)
}

/// What `subscription` receives (but losses it is told of, and probes on
/// topics with `/probe/`) until it has seen each of `markers`.
pub async fn until_markers(subscription: &mut webmesh::Subscription<Value>, markers: &[Value]) -> Vec<Value> {
    let mut got = Vec::new();
    let mut seen = 0;
    while seen < markers.len() {
        let event = tokio::time::timeout(Duration::from_secs(10), subscription.recv()).await.expect("the markers");
        let event = match event.expect("open") {
            Ok(event) => event,
            // A node `down`: its events may have been lost; it is said so.
            Err(Error::Lagged { missed: None }) => continue,
            Err(e) => panic!("{e}"),
        };
        if markers.contains(&event.data) {
            seen += 1;
        } else if !event.topic.contains("/probe/") {
            got.push(event.data);
        }
    }
    got
}
