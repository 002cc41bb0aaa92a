//! The mesh's scenarios, run over each transport: direct links
//! (`tests/mesh.rs`) and a NATS cluster (`tests/mesh_nats.rs`). What a
//! user sees is the same over both; where a transport differs by design,
//! the scenario says so.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use webmesh::{Client, Error, Mesh, MeshBuilder, Node, NodeState, Router, Server, State};

use super::nats::Nats;
use super::{python, until};

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

/// Calls go to the nodes serving their path (taking turns over links,
/// spread by NATS's queue groups), a node's own calls included; else
/// `NoRoute`. Then by id, by name, to all; then the workers leave.
pub async fn calls_go_to_the_nodes_serving_the_path_else_no_route(transport: Transport) {
    let a = transport.node(0, "worker", whoami("/work"), None).await;
    let b = transport.node(1, "worker", whoami("/work"), Some(&a)).await;
    let front = whoami("/front")
        .on("/onwards", |State(mesh): State<Mesh>| async move { mesh.call::<Value>("/nowhere", &()).await });
    let c = transport.node(2, "front", front, Some(&a)).await;
    for n in [&a, &b, &c] {
        until("3 nodes up", 20, || all_up(n, 3)).await;
    }

    let mut answered: HashMap<String, usize> = HashMap::new();
    for _ in 0..40 {
        let by: String = c.call("/work", &()).await.unwrap();
        *answered.entry(by).or_default() += 1;
    }
    assert_eq!(answered.len(), 2, "both workers took calls: {answered:?}");
    assert!(answered.values().all(|n| *n >= 5), "spread over both: {answered:?}");

    let mut local = 0;
    for _ in 0..10 {
        if a.call::<String>("/work", &()).await.unwrap() == a.id() {
            local += 1;
        }
    }
    match transport {
        // A node serving the path itself takes its turns without a socket.
        Transport::Links => assert!((1..10).contains(&local), "a took some, b the others: {local}"),
        // Over NATS, a node that serves a path answers its own calls.
        Transport::Nats(_) => assert_eq!(local, 10, "a answers its own calls"),
    }
    assert_eq!(c.call::<String>("/front", &()).await.unwrap(), c.id());
    assert_eq!(a.call::<String>("/front", &()).await.unwrap(), c.id());

    match c.call::<Value>("/nowhere", &()).await {
        Err(Error::NoRoute { path }) => assert_eq!(path, "/nowhere"),
        other => panic!("expected NoRoute, got {other:?}"),
    }
    assert!(matches!(c.emit("/nowhere", &()).await, Err(Error::NoRoute { .. })));
    // A handler that returns the error passes it on as `unavailable`.
    match a.call::<Value>("/onwards", &()).await {
        Err(Error::Handler(e)) => {
            assert_eq!((e.code(), e.message()), ("unavailable", "no node of the mesh serves `/nowhere`"))
        }
        other => panic!("expected unavailable, got {other:?}"),
    }

    // One node by id, or a service by name; all of them.
    for _ in 0..3 {
        assert_eq!(c.node(&b.id()).call::<String>("/work", &()).await.unwrap(), b.id());
    }
    let by_name: String = a.node("front").call("/front", &()).await.unwrap();
    assert_eq!(by_name, c.id());
    assert!(matches!(a.node("nobody").call::<Value>("/work", &()).await, Err(Error::NoRoute { .. })));
    assert_eq!(c.broadcast("/work", &()).await.unwrap(), 2);

    // A worker leaves: its calls go to the other.
    b.shutdown().await;
    until("b left on a and c", 10, || [&a, &c].iter().all(|n| state_of(n, &b.id()) == Some(NodeState::Left))).await;
    for _ in 0..5 {
        assert_eq!(c.call::<String>("/work", &()).await.unwrap(), a.id());
    }
    a.shutdown().await;
    until("a left on c", 10, || state_of(&c, &a.id()) == Some(NodeState::Left)).await;
    assert!(matches!(c.call::<Value>("/work", &()).await, Err(Error::NoRoute { .. })));
    c.shutdown().await;
}

/// A plain client of any node (MessagePack and JSON) reaches the routes of
/// every node, and nothing it sends passes for a node's message.
pub async fn a_plain_client_of_any_node_reaches_every_route_and_cannot_pass_for_a_node(transport: Transport) {
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    let router = whoami("/served/by/c").on("/count", move || {
        counted.fetch_add(1, Ordering::SeqCst);
    });
    let c = transport.node(0, "c", router, None).await;
    let a = transport.node(1, "a", Router::new(), Some(&c)).await;
    until("a and c up", 20, || all_up(&a, 2) && all_up(&c, 2)).await;

    for client in [Client::connect(&a.url()).await.unwrap(), Client::builder(a.url()).json().connect().await.unwrap()] {
        let by: String = client.call("/served/by/c", &()).await.unwrap();
        assert_eq!(by, c.id(), "forwarded from a to c");
        client.emit("/count", &()).await.unwrap();
        assert!(matches!(client.call::<Value>("/nowhere", &()).await, Err(Error::NotFound { .. })));
        // Nothing a client sends passes for a node's message.
        let forged = json!({"path": "/served/by/c", "data": null, "identity": "admin"});
        match client.call::<Value>("/_mesh/forward", &forged).await {
            Err(Error::Handler(e)) => assert_eq!(e.code(), "forbidden"),
            other => panic!("a client forged a forward: {other:?}"),
        }
        let hello = json!({"node": c.nodes()[0], "members": []});
        assert!(
            matches!(client.call::<Value>("/_mesh/hello", &hello).await, Err(Error::Handler(e)) if e.code() == "forbidden")
        );
        // Reserved topics: subscribe yes, publish no.
        let _watch = client.subscribe::<Node>("/_mesh/nodes/*").await.unwrap();
        match client.publish(&format!("/_mesh/nodes/{}", c.id()), &json!({"state": "down"})).await {
            Err(Error::Handler(e)) => assert_eq!(e.code(), "forbidden"),
            other => panic!("a client published on a reserved topic: {other:?}"),
        }
        // The list of nodes is for anyone.
        let listed: Vec<Node> = client.call("/_mesh/nodes", &()).await.unwrap();
        assert_eq!(listed.len(), 2);
    }
    until("both emits ran on c", 5, || count.load(Ordering::SeqCst) == 2).await;
    // Forwarding can be turned off: a client of such a node reaches its routes only.
    let alone = transport.builder(2, "alone", Router::new(), Some(&c)).forwarding(false).start().await.unwrap();
    until("alone and c up", 20, || all_up(&alone, 3)).await;
    let client = Client::connect(&alone.url()).await.unwrap();
    assert!(matches!(client.call::<Value>("/served/by/c", &()).await, Err(Error::NotFound { .. })));
    assert_eq!(
        alone.call::<String>("/served/by/c", &()).await.unwrap(),
        c.id(),
        "its own calls still go through the mesh"
    );
    alone.shutdown().await;
    // The forwarded calls were counted where they ran (2 calls, 2 emits).
    until("c's status counts the calls it ran", 5, || {
        let me = c.nodes().into_iter().find(|n| n.id == c.id()).unwrap();
        me.status.is_some_and(|s| s.calls_handled >= 4)
    })
    .await;
    a.shutdown().await;
    c.shutdown().await;
}

/// The PyPI 0.1.2 client on one node reaches a route only another node
/// serves (through a third node's link over links), in both formats.
pub async fn the_python_client_on_one_node_calls_a_route_only_another_serves(transport: Transport) {
    let echo = Router::new().on("/echo", |data: Value| data).on("/", |data: Value| data);
    let c = transport.node(0, "c", echo, None).await;
    let b = transport.node(1, "b", Router::new(), Some(&c)).await;
    let a = transport.node(2, "a", Router::new(), Some(&b)).await;
    for n in [&a, &b, &c] {
        until("3 nodes up", 20, || all_up(n, 3)).await;
    }
    let port = a.local_addr().unwrap().port();
    for codec in ["msgpack", "json"] {
        let seen =
            tokio::task::spawn_blocking(move || python::run_client_with(port, codec, &["echo-only"])).await.unwrap();
        assert_eq!(seen["echo"], json!({"blop": 56}), "{codec}: {seen}");
        assert_eq!(seen["root"], json!([1, "two", null, 3.5]), "{codec}");
        assert_eq!(seen["unknown"], json!("Path not found"), "{codec}: as from a 0.1.2 server");
        assert_eq!(seen["call_async"], json!(["async"]), "{codec}");
    }
    for n in [a, b, c] {
        n.shutdown().await;
    }
}
