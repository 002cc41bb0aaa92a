//! The mesh: nodes in this process and in child processes killed for real,
//! on 127.0.0.1, with short timings set through the builder.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::mesh::{
    self as scenarios, all_up, child_will, drain, ms, state_of, whoami, will_watchers, wills_received, ChildNode,
    Transport,
};
use common::{python, until, Raw};
use serde_json::{json, Value};
use webmesh::{Client, Error, Mesh, MeshBuilder, Node, NodeState, Router, Server, State};

/// Timings short enough for tests: a dead link is `suspect` within 0.5 s,
/// `down` 0.5 s later.
fn fast(builder: MeshBuilder) -> MeshBuilder {
    builder.link_heartbeat(ms(200), ms(300)).down_after(ms(500)).status_interval(ms(200))
}

fn builder(name: &str, router: Router, addr: &str) -> MeshBuilder {
    let server = Server::builder().registered_handlers(false).router(router).addr(addr);
    fast(Mesh::builder().server(server).name(name))
}

async fn node(name: &str, router: Router, seeds: &[&Mesh]) -> Mesh {
    let mut builder = builder(name, router, "127.0.0.1:0");
    for seed in seeds {
        builder = builder.peer(seed.url());
    }
    builder.start().await.expect("start a node")
}

// The mesh's scenarios (tests/common/mesh/), over direct links.
every_scenario_over!(Transport::Links);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_server_is_a_member_as_a_legacy_peer() {
    let (_python, port) = python::start_server("msgpack");
    let peer = webmesh::LegacyPeer::new(format!("ws://127.0.0.1:{port}"), webmesh::LegacyFormat::MsgPack, "legacy")
        .routes(["/echo", "/inc", "/getinc"]);
    let a = fast(Mesh::builder().server(Server::builder().registered_handlers(false).addr("127.0.0.1:0")))
        .name("a")
        .legacy_peer(peer)
        .start()
        .await
        .unwrap();
    let b = node("b", Router::new(), &[&a]).await;
    until("a sees the python server up", 10, || {
        a.nodes().iter().any(|n| n.legacy && n.name == "legacy" && n.state == NodeState::Up)
    })
    .await;
    let echoed: Value = a.call("/echo", &json!({"x": [1, 2]})).await.unwrap();
    assert_eq!(echoed, json!({"x": [1, 2]}));
    // Through a's forwarding, for a client of a.
    let client = Client::connect(&a.url()).await.unwrap();
    assert_eq!(client.call::<Value>("/echo", &"via a").await.unwrap(), json!("via a"));
    // b does not dial the Python server: a legacy peer is a's own.
    until("b up on a", 10, || state_of(&a, &b.id()) == Some(NodeState::Up)).await;
    assert!(b.nodes().iter().all(|n| !n.legacy));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_dialling_each_other_at_once_deliver_each_call_and_event_once() {
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (pa, pb) = (free(), free());
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    let counter = Router::new().on("/count", move || counted.fetch_add(1, Ordering::SeqCst) + 1);
    let a = builder("a", counter, &format!("127.0.0.1:{pa}")).peer(format!("ws://127.0.0.1:{pb}"));
    let b = builder("b", Router::new(), &format!("127.0.0.1:{pb}")).peer(format!("ws://127.0.0.1:{pa}"));
    let (a, b) = tokio::join!(a.start(), b.start());
    let (a, b) = (a.unwrap(), b.unwrap());
    until("a and b up", 10, || all_up(&a, 2) && all_up(&b, 2)).await;

    for n in 1..=20 {
        assert_eq!(b.call::<usize>("/count", &()).await.unwrap(), n);
    }
    assert_eq!(count.load(Ordering::SeqCst), 20, "each call ran once");
    let on_a = Client::connect(&a.url()).await.unwrap();
    let mut events = on_a.subscribe::<Value>("/t/*").await.unwrap();
    until("b's events reach a's link", 10, || b.publish("/t/probe", &0).unwrap() == 1).await;
    for seq in 0..50 {
        b.publish("/t/x", &seq).unwrap();
    }
    let (got, lost) = drain(&mut events, ms(500)).await;
    assert_eq!(got, (0..50).map(Value::from).collect::<Vec<_>>(), "once each, in order");
    assert_eq!(lost, 0);
    a.shutdown().await;
    b.shutdown().await;
}

// Nodes in child processes, to kill for real.

/// Not a test: the body of a node that the tests run as a child process
/// (this test binary, run again), and kill.
#[tokio::test]
#[ignore = "a child process of the tests that kill nodes"]
async fn child_node() {
    scenarios::child_node().await;
}

// The wire, as PROTOCOL.md shows it.

async fn raw_with(url: &str, headers: &[(&'static str, &str)]) -> Result<Raw, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    tokio_tungstenite::connect_async(request).await.map(|(socket, _)| socket)
}

async fn next_text(socket: &mut Raw) -> String {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await.expect("an answer") {
            Some(Ok(Message::Text(text))) => return text.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_messages_of_protocol_md_byte_for_byte() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let protocol = include_str!("../PROTOCOL.md");
    let router = Router::new().on("/add", |(a, b): (i64, i64)| a + b);
    let node = builder("n", router, "127.0.0.1:0").secret("s").start().await.unwrap();
    let url = node.url();
    // A link, as another node opens it, and a plain client.
    let mut link = raw_with(&url, &[("webmesh-node", "n1"), ("webmesh-mesh-secret", "s")]).await.unwrap();
    let mut plain = raw_with(&url, &[]).await.unwrap();
    let exchanges = [
        (true, r#"[1, 2, "/_mesh/forward", {"path": "/add", "data": [40, 2]}]"#, "[3,2,42]"),
        (
            false,
            r#"[1, 2, "/_mesh/forward", {"path": "/add", "data": [40, 2], "identity": "admin"}]"#,
            r#"[4,2,"forbidden","only nodes of the mesh may send this",null]"#,
        ),
        (
            false,
            r#"[8, 5, "/_mesh/nodes/x", null]"#,
            r#"[4,5,"forbidden","topics under /_mesh/ are the mesh's: clients may subscribe, not publish",null]"#,
        ),
        (
            true,
            r#"[1, 4, "/_mesh/will", {"of": "x"}]"#,
            r#"[4,4,"forbidden","a claim from a node this node does not see alive",null]"#,
        ),
        (
            false,
            r#"[1, 4, "/_mesh/will", {"of": "x"}]"#,
            r#"[4,4,"forbidden","only nodes of the mesh may send this",null]"#,
        ),
        (true, r#"[1, 3, "/_mesh/goodbye", {"id": "n1"}]"#, "[3,3,null]"),
    ];
    for (on_link, request, answer) in exchanges {
        let socket = if on_link { &mut link } else { &mut plain };
        assert!(protocol.contains(request), "PROTOCOL.md shows {request}");
        assert!(protocol.contains(answer), "PROTOCOL.md shows {answer}");
        socket.send(Message::text(request)).await.unwrap();
        assert_eq!(next_text(socket).await, answer);
    }

    // HELLO: answered with the node's map, whose keys are the documented ones.
    let me = json!({"id": "n1", "name": "raw", "url": "ws://127.0.0.1:1", "version": "0", "state": "up",
        "last_seen_ms": 0, "status": null, "routes": {"calls": [], "subscribe": [], "publish": []},
        "metadata": {}, "peers": [], "legacy": false});
    let hello = json!([1, 1, "/_mesh/hello", {"node": me, "members": []}]);
    link.send(Message::text(hello.to_string())).await.unwrap();
    let answer: Value = serde_json::from_str(&next_text(&mut link).await).unwrap();
    assert_eq!(answer[0], 3);
    assert_eq!(answer[2]["node"]["id"], json!(node.id()));
    assert_eq!(answer[2]["node"]["routes"]["calls"], json!(["/add"]), "the mesh's own paths are not listed");
    let keys: Vec<&String> = answer[2]["node"].as_object().unwrap().keys().collect();
    for key in &keys {
        assert!(protocol.contains(&format!("| `{key}` |")), "PROTOCOL.md documents the key {key}");
    }
    assert_eq!(keys.len(), 11, "{keys:?}");
    for key in answer[2]["node"]["status"].as_object().unwrap().keys() {
        assert!(protocol.contains(&format!("`{key}`")), "PROTOCOL.md documents the status key {key}");
    }
    assert!(answer[2]["members"].as_array().unwrap().contains(&json!(url)));

    // The wrong secret is refused before any WebSocket exists.
    let refused = raw_with(&url, &[("webmesh-node", "n1"), ("webmesh-mesh-secret", "guess")]).await;
    assert!(
        matches!(refused, Err(tokio_tungstenite::tungstenite::Error::Http(ref r)) if r.status() == 403),
        "{refused:?}"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_example_as_in_the_readme_three_services_from_one_seed() {
    let (_inventory, seed) = common::start_example_env("mesh", &[], &[("WEBMESH_NAME", "inventory")]);
    let peers = format!("ws://127.0.0.1:{seed}");
    let (_orders, _) = common::start_example_env("mesh", &[], &[("WEBMESH_NAME", "orders"), ("WEBMESH_PEERS", &peers)]);
    let (_billing, _) =
        common::start_example_env("mesh", &[], &[("WEBMESH_NAME", "billing"), ("WEBMESH_PEERS", &peers)]);
    let client = Client::connect(&peers).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let nodes = loop {
        let nodes: Vec<Node> = client.call("/_mesh/nodes", &()).await.unwrap();
        if nodes.len() == 3 && nodes.iter().all(|n| n.state == NodeState::Up) {
            break nodes;
        }
        assert!(Instant::now() < deadline, "the three services did not form a mesh: {nodes:?}");
        tokio::time::sleep(ms(50)).await;
    };
    let id_of = |name: &str| nodes.iter().find(|n| n.name == name).unwrap().id.clone();
    // The seed does not serve /orders/place: it forwards the call to orders,
    // which calls inventory and billing through the mesh.
    let placed: Value = client.call("/orders/place", &json!({"sku": "tea", "quantity": 2})).await.unwrap();
    assert_eq!(placed["orders"], json!(id_of("orders")), "{placed}");
    assert_eq!(placed["inventory"], json!(id_of("inventory")));
    assert_eq!(placed["billing"], json!(id_of("billing")));
    assert_eq!(placed["total_cents"], 500);
    let refused = client.call::<Value>("/orders/place", &json!({"sku": "tea", "quantity": 0})).await;
    assert!(
        matches!(refused, Err(Error::Handler(e)) if e.message().contains("out_of_stock")),
        "the error crosses back"
    );
}

// What an attack on the mesh found, kept fixed.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_at_the_same_address_keeps_its_link_when_the_old_one_is_forgotten() {
    let a = fast(Mesh::builder().server(Server::builder().registered_handlers(false).addr("127.0.0.1:0")))
        .name("a")
        .forget_after(ms(300))
        .start()
        .await
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let first = builder("b", whoami("/b"), &addr).peer(a.url()).start().await.unwrap();
    until("b up on a", 10, || state_of(&a, &first.id()) == Some(NodeState::Up)).await;
    first.shutdown().await;
    let second = builder("b", whoami("/b"), &addr).peer(a.url()).start().await.unwrap();
    until("the new b up on a", 10, || state_of(&a, &second.id()) == Some(NodeState::Up)).await;
    until("the old b forgotten", 10, || state_of(&a, &first.id()).is_none()).await;
    // Reports and reaps went by: the new node's link is still there.
    tokio::time::sleep(ms(600)).await;
    assert_eq!(a.call::<String>("/b", &()).await.unwrap(), second.id());
    assert_eq!(state_of(&a, &second.id()), Some(NodeState::Up));
    second.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unreachable_members_does_not_hold_the_links_of_a_node() {
    let a = node("a", Router::new(), &[]).await;
    // A client passing for a node (this mesh has no secret) claims 1100
    // members, on a port where nothing listens.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let members: Vec<String> = (0..1100).map(|i| format!("ws://127.0.0.1:{dead}/{i}")).collect();
    let posing = Client::builder(a.url()).header("webmesh-node", "evil").connect().await.unwrap();
    let mut me = serde_json::to_value(&a.nodes()[0]).unwrap();
    me["url"] = json!(format!("ws://127.0.0.1:{dead}/evil"));
    let hello = json!({"node": me, "members": members});
    posing.call::<Value>("/_mesh/hello", &hello).await.unwrap();
    // Forged goodbyes for another node are refused.
    let forged = posing.call::<Value>("/_mesh/goodbye", &json!({"id": a.id()})).await;
    assert!(matches!(forged, Err(Error::Handler(ref e)) if e.code() == "forbidden"), "{forged:?}");
    // The unreachable URLs are given up after down_after; a real node then joins.
    tokio::time::sleep(ms(1500)).await;
    let c = node("c", whoami("/c"), &[&a]).await;
    until("c up on a, both ways", 10, || all_up(&a, 2) && all_up(&c, 2)).await;
    assert_eq!(a.call::<String>("/c", &()).await.unwrap(), c.id());
    a.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_are_told_when_another_node_refuses_their_interest() {
    // b takes 3 subscriptions in all: a's link holds one for b's reports.
    let small = Server::builder().registered_handlers(false).addr("127.0.0.1:0").max_subscriptions(3);
    let b = fast(Mesh::builder().server(small)).name("b").start().await.unwrap();
    let a = node("a", Router::new(), &[&b]).await;
    until("a and b up", 10, || all_up(&a, 2) && all_up(&b, 2)).await;
    let client = Client::connect(&a.url()).await.unwrap();
    let mut subscriptions = Vec::new();
    for i in 0..5 {
        subscriptions.push(client.subscribe::<Value>(&format!("/t/{i}")).await.unwrap());
    }
    until("b holds what it takes", 10, || b.hub().unwrap().subscription_count() == 3).await;
    for i in 0..5 {
        b.publish(&format!("/t/{i}"), &i).unwrap();
    }
    let (mut delivered, mut told) = (0, 0);
    for subscription in &mut subscriptions {
        match tokio::time::timeout(ms(1000), subscription.recv()).await {
            Ok(Some(Ok(_))) => delivered += 1,
            Ok(Some(Err(Error::Lagged { missed: None }))) => told += 1,
            other => panic!("a subscriber neither got its event nor was told: {other:?}"),
        }
    }
    assert_eq!((delivered, told), (2, 3));
    a.shutdown().await;
    b.shutdown().await;
}

// What a second attack found, kept fixed.

/// Forwards 127.0.0.1:`port` to `target`, from `after` on.
fn late_proxy(port: u16, target: std::net::SocketAddr, after: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        loop {
            let (mut inbound, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_the_others_reach_only_late_is_linked_once_they_can() {
    let a = node("a", Router::new(), &[]).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // b's advertised address answers 2 s after it joined: a gives it up first.
    let b = builder("b", whoami("/b"), "127.0.0.1:0")
        .advertise(format!("ws://127.0.0.1:{port}"))
        .peer(a.url())
        .start()
        .await
        .unwrap();
    let proxy = late_proxy(port, b.local_addr().unwrap(), ms(2000));
    until("a up on b", 10, || state_of(&b, &a.id()) == Some(NodeState::Up)).await;
    // b sees in a's reports that a does not see it, and introduces itself again.
    until("b up on a", 15, || state_of(&a, &b.id()) == Some(NodeState::Up)).await;
    assert_eq!(a.call::<String>("/b", &()).await.unwrap(), b.id());
    proxy.abort();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_restarted_gracefully_is_linked_again() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let seed = builder("seed", whoami("/seed"), &addr).start().await.unwrap();
    let b = node("b", Router::new(), &[&seed]).await;
    until("seed up on b", 10, || all_up(&b, 2)).await;
    seed.shutdown().await;
    until("the seed left on b", 10, || state_of(&b, &seed.id()) == Some(NodeState::Left)).await;
    // A new seed, knowing no one, at the same address: b's seed link finds it.
    let again = builder("seed", whoami("/seed"), &addr).start().await.unwrap();
    until("the new seed up on b", 15, || state_of(&b, &again.id()) == Some(NodeState::Up)).await;
    until("b up on the new seed", 15, || state_of(&again, &b.id()) == Some(NodeState::Up)).await;
    assert_eq!(b.call::<String>("/seed", &()).await.unwrap(), again.id());
    b.shutdown().await;
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_longer_than_the_links_heartbeat_still_answers_the_calls_under_way() {
    let slow = Router::new().on("/slow", |State(mesh): State<Mesh>| async move {
        tokio::time::sleep(ms(2500)).await;
        mesh.id()
    });
    // Reports are rare: only pongs show the leaving node alive.
    let quiet = |b: MeshBuilder| b.link_heartbeat(ms(300), ms(300)).status_interval(Duration::from_secs(30));
    let b = quiet(builder("b", slow, "127.0.0.1:0")).start().await.unwrap();
    let a = quiet(builder("a", Router::new(), "127.0.0.1:0")).peer(b.url()).start().await.unwrap();
    until("a and b up", 10, || all_up(&a, 2) && all_up(&b, 2)).await;
    let call = tokio::spawn({
        let a = a.clone();
        async move { a.call::<String>("/slow", &()).await }
    });
    tokio::time::sleep(ms(200)).await;
    b.shutdown().await;
    assert_eq!(call.await.unwrap().unwrap(), b.id(), "answered during the drain");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_marked_left_by_a_forged_goodbye_comes_back() {
    let a = node("a", Router::new(), &[]).await;
    let b = node("b", whoami("/b"), &[&a]).await;
    until("a and b up", 10, || all_up(&a, 2) && all_up(&b, 2)).await;
    // Without a secret, anyone may pass for b.
    let posing = Client::builder(a.url()).header("webmesh-node", b.id()).connect().await.unwrap();
    posing.call::<Value>("/_mesh/goodbye", &json!({"id": b.id()})).await.unwrap();
    // b reads in a's next report that a lost it, and introduces itself again.
    until("b up again on a", 10, || state_of(&a, &b.id()) == Some(NodeState::Up)).await;
    assert_eq!(a.call::<String>("/b", &()).await.unwrap(), b.id());
    a.shutdown().await;
    b.shutdown().await;
}

// Wills of nodes.

/// A child node of id `id` seeded on `seed`, with a will on `/services/{will}/gone`
/// when `will` is given, and more of its settings in `env`.
fn child(seed: &Mesh, id: &str, will: Option<&str>, env: &[(&str, &str)]) -> ChildNode {
    let topic = will.map(|will| format!("/services/{will}/gone"));
    let mut env = env.to_vec();
    env.push(("MESH_CHILD_ID", id));
    if let Some(topic) = &topic {
        env.push(("MESH_CHILD_WILL", topic));
    }
    Transport::Links.child(1, seed, "", &env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_survivors_wait_for_the_heir_and_publish_the_will_once_when_it_dies_before_claiming() {
    // The heir, "0-heir", takes 30 s to see a death: b and c see z-dead
    // `down` long before, and wait for it. When the heir dies too, the will
    // passes to b (the lowest id left), which publishes it once.
    let b = builder("b", Router::new(), "127.0.0.1:0").id("b").start().await.unwrap();
    let c = builder("c", Router::new(), "127.0.0.1:0").id("c").peer(b.url()).start().await.unwrap();
    let heir = child(&b, "0-heir", None, &[("MESH_CHILD_DOWN_AFTER", "30000")]);
    let dead = child(&b, "z-dead", Some("dead"), &[]);
    for n in [&b, &c] {
        until("4 nodes up", 15, || all_up(n, 4)).await;
    }
    let mut watchers = will_watchers(&[&b, &c]).await;

    dead.signal("-KILL");
    for n in [&b, &c] {
        until("z-dead down", 15, || state_of(n, &dead.id) == Some(NodeState::Down)).await;
    }
    tokio::time::sleep(ms(500)).await;
    for got in wills_received(&[&b, &c], &["/services/dead/gone"], &mut watchers).await {
        assert_eq!(got, Vec::<Value>::new(), "the heir's to publish");
    }

    heir.signal("-KILL");
    for n in [&b, &c] {
        until("the heir down", 15, || state_of(n, &heir.id) == Some(NodeState::Down)).await;
    }
    tokio::time::sleep(ms(500)).await;
    for got in wills_received(&[&b, &c], &["/services/dead/gone"], &mut watchers).await {
        assert_eq!(got, [child_will()], "published once, by the next heir");
    }
    b.shutdown().await;
    c.shutdown().await;
}
