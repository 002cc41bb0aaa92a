//! The mesh over NATS: nodes attached to different servers of a real
//! 3-server nats-server cluster with JetStream, so that what crosses
//! between nodes crosses the cluster's routes, as in production.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::mesh::{
    self as scenarios, all_up, drain, ms, probe, records_stored, state_of, whoami, will_watchers, wills_received,
    ChildNode, Transport,
};
use common::nats::Nats;
use common::until;
use futures_util::StreamExt;
use serde_json::{json, Value};
use webmesh::{Client, Error, Mesh, MeshBuilder, NodeState, Router, Server};

/// A node with timings short enough for tests: reports every 200 ms, a
/// silent node is `suspect` after 0.5 s, `down` 0.5 s later.
fn builder(name: &str, router: Router, nats: &Nats) -> MeshBuilder {
    let server = Server::builder().registered_handlers(false).router(router).addr("127.0.0.1:0");
    Mesh::builder().server(server).name(name).status_interval(ms(200)).down_after(ms(500)).nats(nats.url())
}

async fn node(name: &str, router: Router, nats: &Nats) -> Mesh {
    builder(name, router, nats).start().await.expect("start a node")
}

// The mesh's scenarios (tests/common/mesh/), over NATS.
every_scenario_over!(Transport::nats());

/// What the shared scenario `events_cross_the_mesh_...` shows through any
/// transport, seen on the NATS servers: a node holds one NATS subscription
/// per pattern its subscribers want (a thousand subscribers of one pattern
/// are one; a pattern within another adds none), none without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interest_is_one_nats_subscription_per_pattern_and_node_and_goes_with_the_subscribers() {
    let cluster = Nats::cluster(3);
    let a = node("a", Router::new(), &cluster[0]).await;
    let b = node("b", Router::new(), &cluster[1]).await;
    let c = node("c", Router::new(), &cluster[2]).await;
    for n in [&a, &b, &c] {
        until("3 nodes up", 20, || all_up(n, 3)).await;
    }
    let topic_subjects = |server: &Nats| -> Vec<String> {
        let mut subjects: Vec<String> = server
            .subscriptions()
            .into_iter()
            .filter(|s| !s.starts_with("webmesh._mesh.") && !s.starts_with('_') && !s.starts_with('$'))
            .collect();
        subjects.sort();
        subjects
    };
    for server in &cluster {
        assert_eq!(topic_subjects(server), Vec::<String>::new(), "no subscriber, no subscription on NATS");
    }

    let on_c = Client::connect(&c.url()).await.unwrap();
    let mut many = Vec::new();
    for _ in 0..1000 {
        many.push(on_c.subscribe::<Value>("/news/*").await.unwrap());
    }
    let on_b = Client::connect(&b.url()).await.unwrap();
    let mut news_b = on_b.subscribe::<Value>("/news/*").await.unwrap();
    let mut sport_b = on_b.subscribe::<Value>("/news/sport").await.unwrap();
    let on_a = Client::connect(&a.url()).await.unwrap();
    let _news_a = on_a.subscribe::<Value>("/news/{*rest}").await.unwrap();
    probe(&a, "/news/probe", &mut many[0]).await;
    probe(&a, "/news/probe", &mut news_b).await;
    drain(&mut sport_b, ms(100)).await;
    until("c's subscribers are one NATS subscription", 10, || topic_subjects(&cluster[2]) == ["webmesh.news.*"]).await;
    assert_eq!(topic_subjects(&cluster[1]), ["webmesh.news.*"], "b's /news/sport is within its /news/*");
    assert_eq!(topic_subjects(&cluster[0]), ["webmesh.news.>"]);

    for seq in 0..200 {
        a.publish("/news/sport", &seq).unwrap();
    }
    let expected: Vec<Value> = (0..200).map(Value::from).collect();
    for subscription in many.iter_mut().step_by(333).chain([&mut sport_b]) {
        assert_eq!(drain(subscription, ms(300)).await.0, expected, "through the one subscription, to each");
    }

    drop(many);
    on_c.close().await;
    until("c holds no NATS subscription", 10, || topic_subjects(&cluster[2]).is_empty()).await;
    drop((news_b, sport_b));
    on_b.close().await;
    until("b holds no NATS subscription", 10, || topic_subjects(&cluster[1]).is_empty()).await;
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

/// The README's "Scaling out" demo: the mesh example three times, joined
/// through NATS with no seeds; a call through billing places an order on
/// orders, and a subscriber on inventory hears of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_example_as_in_the_readme_three_services_through_nats() {
    let nats = Nats::start();
    let url = nats.url();
    let service = |name: &'static str| {
        common::start_example_env("mesh", &[], &[("WEBMESH_NATS", url.as_str()), ("WEBMESH_NAME", name)])
    };
    let (_inventory, inventory) = service("inventory");
    let (_orders, _) = service("orders");
    let (_billing, billing) = service("billing");
    let through_billing = Client::connect(&format!("ws://127.0.0.1:{billing}")).await.unwrap();
    let nodes: Vec<webmesh::Node> = common::within(30, async {
        loop {
            let nodes: Vec<webmesh::Node> = through_billing.call("/_mesh/nodes", &()).await.unwrap();
            if nodes.len() == 3 && nodes.iter().all(|n| n.state == NodeState::Up) {
                return nodes;
            }
            tokio::time::sleep(ms(100)).await;
        }
    })
    .await;
    let id_of = |name: &str| nodes.iter().find(|n| n.name == name).unwrap().id.clone();
    let on_inventory = Client::connect(&format!("ws://127.0.0.1:{inventory}")).await.unwrap();
    let mut placed_orders = on_inventory.subscribe::<Value>("/orders/*").await.unwrap();
    // Billing serves none of it: orders does, and calls inventory and
    // billing in turn, all over NATS.
    let order = json!({"sku": "tea", "quantity": 2});
    let placed: Value = through_billing.call("/orders/place", &order).await.unwrap();
    assert_eq!(placed["orders"], json!(id_of("orders")), "{placed}");
    assert_eq!(placed["inventory"], json!(id_of("inventory")));
    assert_eq!(placed["billing"], json!(id_of("billing")));
    assert_eq!(placed["total_cents"], 500);
    // The subscription may reach orders' node after that first order's event: until one comes.
    let heard = common::within(20, async {
        loop {
            if let Ok(Some(Ok(event))) = tokio::time::timeout(ms(500), placed_orders.recv()).await {
                return event;
            }
            let _: Value = through_billing.call("/orders/place", &order).await.unwrap();
        }
    })
    .await;
    assert_eq!(heard.topic, "/orders/placed");
    assert_eq!(heard.data["sku"], "tea");
    let refused = through_billing.call::<Value>("/orders/place", &json!({"sku": "tea", "quantity": 0})).await;
    assert!(
        matches!(refused, Err(Error::Handler(e)) if e.message().contains("out_of_stock")),
        "the error crosses back"
    );
}

// Nodes in child processes, to kill for real.

/// Not a test: the body of a node that the tests run as a child process
/// (this test binary, run again), and kill.
#[tokio::test]
#[ignore = "a child process of the tests that kill nodes"]
async fn child_node() {
    scenarios::child_node().await;
}

/// A node in a child process attached to `nats`, serving `/work`; killed
/// when dropped.
fn child(nats: &Nats) -> ChildNode {
    ChildNode::on_nats(nats, "/work", &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wills_of_a_killed_nodes_clients_are_published_once_each_when_due_unless_they_came_back() {
    let cluster = Nats::cluster(3);
    let publishers = || whoami("/work").publish("/services/{name}/gone", || async {});
    let a = node("a", publishers(), &cluster[0]).await;
    let b = node("b", publishers(), &cluster[1]).await;
    let (dead, leaving) = (child(&cluster[2]), child(&cluster[2]));
    let (dead_id, leaving_id) = (dead.id.clone(), leaving.id.clone());
    for n in [&a, &b] {
        until("4 nodes up", 20, || all_up(n, 4)).await;
    }
    let url_of = |id: &str| b.nodes().into_iter().find(|n| n.id == id).unwrap().url;
    let mut watchers = will_watchers(&[&a, &b]).await;
    records_stored(&cluster[0], 4).await;

    // On the node to kill: a will published at once, one after 2 s, and one
    // after 4 s whose client comes back to node a within them.
    let on_dead = |topic: &str, client: u32| {
        Client::builder(url_of(&dead_id)).will(topic, &json!({ "client": client })).no_reconnect()
    };
    let _at_once = on_dead("/services/w1/gone", 1).connect().await.unwrap();
    let _delayed = on_dead("/services/w2/gone", 2).will_delay(ms(2000)).connect().await.unwrap();
    let dead_port = url_of(&dead_id).rsplit(':').next().unwrap().trim_end_matches('/').parse().unwrap();
    let mut returning = common::raw(dead_port).await;
    set_will(&mut returning, "session-3", "/services/w3/gone", 4000).await;
    // On the node that leaves: a will, never published (its server shuts
    // down: its clients did not fail).
    let _on_leaving =
        Client::builder(url_of(&leaving_id)).will("/services/w4/gone", &json!({"client": 4})).connect().await.unwrap();
    wills_copied(&cluster[0], &dead_id, 3).await;
    let watcher = Client::connect(&a.url()).await.unwrap();
    let mut delayed = watcher.subscribe::<Value>("/services/w2/gone").await.unwrap();

    let killed = std::time::Instant::now();
    drop(dead);
    // Client 3 is back, on node a, within its delay.
    let mut back = common::raw(a.local_addr().unwrap().port()).await;
    set_will(&mut back, "session-3", "/services/w3/gone", 4000).await;
    for n in [&a, &b] {
        until("the killed node down", 15, || state_of(n, &dead_id) == Some(NodeState::Down)).await;
    }
    // Client 2's will waits out its 2 s, counted from the node's last
    // record (written at most 200 ms before it was killed). Its
    // subscriber was told first that it may have lost the dead node's events.
    common::within(10, async { while let Err(Error::Lagged { .. }) = delayed.recv().await.unwrap() {} }).await;
    assert!(killed.elapsed() >= ms(1800), "published after {:?}, before its delay", killed.elapsed());
    // Past the longest delay, and the time a duplicate would take.
    tokio::time::sleep((killed + ms(6000)).saturating_duration_since(std::time::Instant::now())).await;
    let topics = ["/services/w1/gone", "/services/w2/gone", "/services/w3/gone"];
    for got in wills_received(&[&a, &b], &topics, &mut watchers).await {
        assert_eq!(
            got,
            [json!({"client": 1}), json!({"client": 2})],
            "each will once, in the order due; not client 3's"
        );
    }

    leaving.signal("-TERM");
    for n in [&a, &b] {
        until("the leaving node left", 15, || state_of(n, &leaving_id) == Some(NodeState::Left)).await;
    }
    tokio::time::sleep(ms(1500)).await;
    for got in wills_received(&[&a, &b], &["/services/w4/gone"], &mut watchers).await {
        assert_eq!(got, Vec::<Value>::new(), "no will of a leaving node's client");
    }
    // Client 3's will on node a is still in force: withdrawn, it is not published.
    set_will_frame(&mut back, json!([13, 2, "session-3", null])).await;
    a.shutdown().await;
    b.shutdown().await;
}

// What an attack on the wills of nodes' clients found, kept fixed. Each
// counts the publications of a will as NATS carries them.

/// Counts the events on `webmesh.services.>`, by subject.
async fn count_publications(nats: &Nats) -> Arc<Mutex<HashMap<String, usize>>> {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = client.subscribe("webmesh.services.>").await.unwrap();
    client.flush().await.unwrap();
    let counts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let counting = counts.clone();
    tokio::spawn(async move {
        let _client = client;
        while let Some(event) = events.next().await {
            *counting.lock().unwrap().entry(event.subject.to_string()).or_default() += 1;
        }
    });
    counts
}

fn count_of(counts: &Mutex<HashMap<String, usize>>, subject: &str) -> usize {
    counts.lock().unwrap().get(subject).copied().unwrap_or(0)
}

/// Node `a` here, a node in a child process (to kill), both `up` and
/// stored, and the count of the publications on NATS.
async fn a_node_and_one_to_kill(nats: &Nats) -> (Arc<Mutex<HashMap<String, usize>>>, Mesh, ChildNode) {
    let counts = count_publications(nats).await;
    let a = node("a", publishers(), nats).await;
    let victim = child(nats);
    until("2 up", 30, || all_up(&a, 2)).await;
    records_stored(nats, 2).await;
    (counts, a, victim)
}

fn publishers() -> Router {
    whoami("/work").publish("/services/{name}/gone", || async {})
}

async fn will_on(socket: &mut common::Raw, session: Option<&str>, topic: &str, delay_ms: u64) {
    set_will_frame(socket, json!([13, 1, session, topic, delay_ms, {"client": 3}])).await;
}

async fn copy_of(nats: &Nats, id: &str) -> Option<Vec<Value>> {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let store = async_nats::jetstream::new(client).get_key_value("webmesh_nodes").await.unwrap();
    let copy = store.get(format!("wills.{id}")).await.unwrap()?;
    Some(rmp_serde::from_slice(&copy).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_leaves_deletes_its_copy_so_a_client_that_moved_on_still_has_its_will() {
    let nats = Nats::start();
    let counts = count_publications(&nats).await;
    let a = node("a", publishers(), &nats).await;
    let l = node("l", publishers(), &nats).await;
    let x = child(&nats);
    let (x_id, x_port) = (x.id.clone(), x.port);
    until("3 up", 30, || all_up(&a, 3)).await;
    records_stored(&nats, 3).await;
    let mut on_l = common::raw(l.local_addr().unwrap().port()).await;
    will_on(&mut on_l, Some("S"), "/services/moved/gone", 1000).await;
    wills_copied(&nats, &l.id(), 1).await;
    l.shutdown().await;
    assert_eq!(copy_of(&nats, &l.id()).await, None, "deleted as the node left");
    drop(on_l);
    // The client moves to x, which is killed: its will, once.
    let mut on_x = common::raw(x_port).await;
    will_on(&mut on_x, Some("S"), "/services/moved/gone", 1000).await;
    wills_copied(&nats, &x_id, 1).await;
    drop(x);
    until("x down", 15, || state_of(&a, &x_id) == Some(NodeState::Down)).await;
    tokio::time::sleep(ms(3000)).await;
    assert_eq!(count_of(&counts, "webmesh.services.moved.gone"), 1);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_back_within_its_delay_has_no_will_from_its_dead_node_even_after_withdrawing_it() {
    let nats = Nats::start();
    let (counts, a, x) = a_node_and_one_to_kill(&nats).await;
    let (x_id, x_port) = (x.id.clone(), x.port);
    let mut on_x = common::raw(x_port).await;
    will_on(&mut on_x, Some("B"), "/services/back/gone", 3000).await;
    wills_copied(&nats, &x_id, 1).await;
    drop(x);
    let mut on_a = common::raw(a.local_addr().unwrap().port()).await;
    will_on(&mut on_a, Some("B"), "/services/back/gone", 3000).await;
    tokio::time::sleep(ms(300)).await;
    set_will_frame(&mut on_a, json!([13, 2, "B", null])).await;
    until("x down", 15, || state_of(&a, &x_id) == Some(NodeState::Down)).await;
    tokio::time::sleep(ms(5000)).await;
    assert_eq!(count_of(&counts, "webmesh.services.back.gone"), 0);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_heir_that_leaves_or_dies_before_an_inherited_will_is_due_does_not_lose_it() {
    let nats = Nats::start();
    let counts = count_publications(&nats).await;
    let x = child(&nats);
    let (x_id, x_port) = (x.id.clone(), x.port);
    let y = child(&nats);
    let y_id = y.id.clone();
    let a = node("a", publishers(), &nats).await;
    until("3 up", 30, || all_up(&a, 3)).await;
    records_stored(&nats, 3).await;
    let mut on_x = common::raw(x_port).await;
    will_on(&mut on_x, Some("killed"), "/services/heir-killed/gone", 8000).await;
    let mut on_x_too = common::raw(x_port).await;
    will_on(&mut on_x_too, Some("left"), "/services/heir-left/gone", 8000).await;
    wills_copied(&nats, &x_id, 2).await;
    let killed = std::time::Instant::now();
    drop(x);
    // Its heir (a or y) takes the wills in: the dead node's copy goes.
    common::within(15, async {
        while copy_of(&nats, &x_id).await.is_some() {
            tokio::time::sleep(ms(50)).await;
        }
    })
    .await;
    // Then y dies and a leaves: whichever held the wills, they come once.
    let survivor = node("b", publishers(), &nats).await;
    until("y up at b", 15, || state_of(&survivor, &y_id) == Some(NodeState::Up)).await;
    drop(y);
    until("y down", 15, || state_of(&survivor, &y_id) == Some(NodeState::Down)).await;
    tokio::time::sleep(ms(1000)).await;
    a.shutdown().await;
    tokio::time::sleep((killed + ms(11_000)).saturating_duration_since(std::time::Instant::now())).await;
    assert_eq!(count_of(&counts, "webmesh.services.heir-killed.gone"), 1);
    assert_eq!(count_of(&counts, "webmesh.services.heir-left.gone"), 1);
    survivor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_taken_for_dead_while_paused_does_not_publish_its_clients_wills_again() {
    let nats = Nats::start();
    let (counts, a, x) = a_node_and_one_to_kill(&nats).await;
    let (x_id, x_port) = (x.id.clone(), x.port);
    let mut on_x = common::raw(x_port).await;
    will_on(&mut on_x, None, "/services/paused/gone", 0).await;
    wills_copied(&nats, &x_id, 1).await;
    x.signal("-STOP");
    until("x down", 15, || state_of(&a, &x_id) == Some(NodeState::Down)).await;
    tokio::time::sleep(ms(1500)).await;
    assert_eq!(count_of(&counts, "webmesh.services.paused.gone"), 1, "published once, the node taken for dead");
    x.signal("-CONT");
    until("x up again", 15, || state_of(&a, &x_id) == Some(NodeState::Up)).await;
    // Its record written again, it knows it was taken for dead.
    tokio::time::sleep(ms(1000)).await;
    // The client's connection fails now: nothing more.
    drop(on_x);
    tokio::time::sleep(ms(1500)).await;
    assert_eq!(count_of(&counts, "webmesh.services.paused.gone"), 1, "not twice");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_under_its_id_before_it_is_taken_for_dead_keeps_its_clients_wills() {
    let nats = Nats::start();
    let counts = count_publications(&nats).await;
    // a would take x for dead only after 20 s: x's restart takes over.
    let a = builder("a", publishers(), &nats).down_after(ms(20_000)).start().await.unwrap();
    let fixed = [("MESH_CHILD_ID", "x-fixed")];
    let x = ChildNode::on_nats(&nats, "/work", &fixed);
    until("2 up", 30, || all_up(&a, 2)).await;
    records_stored(&nats, 2).await;
    let mut gone = common::raw(x.port).await;
    will_on(&mut gone, Some("gone"), "/services/restart-gone/gone", 1500).await;
    let mut back = common::raw(x.port).await;
    will_on(&mut back, Some("back"), "/services/restart-back/gone", 4000).await;
    wills_copied(&nats, &x.id, 2).await;

    let killed = std::time::Instant::now();
    drop(x);
    let again = ChildNode::on_nats(&nats, "/work", &fixed);
    // One client comes back to it within its delay; the other does not.
    let mut back = common::raw(again.port).await;
    will_on(&mut back, Some("back"), "/services/restart-back/gone", 4000).await;
    tokio::time::sleep((killed + ms(6000)).saturating_duration_since(std::time::Instant::now())).await;
    assert_eq!(count_of(&counts, "webmesh.services.restart-gone.gone"), 1, "published once, when due");
    assert_eq!(count_of(&counts, "webmesh.services.restart-back.gone"), 0, "its client came back");
    assert_eq!(state_of(&a, &again.id), Some(NodeState::Up), "the same node, never taken for dead");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_wills_in_a_loop_costs_nats_at_most_a_mebibyte_a_second_of_copies() {
    let nats = Nats::start();
    let a = node("a", publishers(), &nats).await;
    records_stored(&nats, 1).await;
    let port = a.local_addr().unwrap().port();
    // A copy of 400 KB: one large will, held all along.
    let mut large = common::raw(port).await;
    set_will_frame(&mut large, json!([13, 1, null, "/services/large/gone", 0, "l".repeat(400_000)])).await;
    wills_copied(&nats, &a.id(), 1).await;
    // Every write of the copy, as the bucket's stream takes it.
    let watcher = async_nats::connect(nats.url()).await.unwrap();
    let mut writes = watcher.subscribe(format!("$KV.webmesh_nodes.wills.{}", a.id())).await.unwrap();
    watcher.flush().await.unwrap();
    let written = Arc::new(Mutex::new(0usize));
    let counting = written.clone();
    tokio::spawn(async move {
        while let Some(write) = writes.next().await {
            *counting.lock().unwrap() += write.payload.len();
        }
    });

    // Another client sets and clears its will for 3 s.
    let started = std::time::Instant::now();
    let mut looping = common::raw(port).await;
    for i in 0u64.. {
        set_will_frame(&mut looping, json!([13, 2 * i + 1, null, "/services/loop/gone", 0, i])).await;
        set_will_frame(&mut looping, json!([13, 2 * i + 2, null, null])).await;
        if started.elapsed() > ms(3000) {
            break;
        }
    }
    set_will_frame(&mut looping, json!([13, 1000, null, "/services/loop/gone", 0, "last"])).await;
    let looped = started.elapsed();
    // The last state is written, in time.
    wills_copied(&nats, &a.id(), 2).await;
    let seconds = started.elapsed().as_secs_f64();
    let bytes = *written.lock().unwrap();
    // A mebibyte a second, and the one write that may start the loop.
    let allowed = (seconds * 1024.0 * 1024.0) as usize + 400_000 + 100_000;
    assert!(bytes <= allowed, "{bytes} bytes of copies in {seconds:.1} s (the loop took {looped:?})");
    a.shutdown().await;
}

/// A record write that timed out while NATS was away, and landed, does
/// not make the node think it was taken for dead (and drop its clients'
/// wills): found by an attack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_nats_keeps_its_clients_wills() {
    let mut nats = Nats::start();
    let a = node("a", publishers(), &nats).await;
    records_stored(&nats, 1).await;
    let port = a.local_addr().unwrap().port();
    let mut one = common::raw(port).await;
    will_on(&mut one, Some("one"), "/services/cut-one/gone", 2000).await;
    wills_copied(&nats, &a.id(), 1).await;
    nats.kill();
    let mut two = common::raw(port).await;
    will_on(&mut two, Some("two"), "/services/cut-two/gone", 2000).await;
    // Past the time a write to the bucket waits for NATS.
    tokio::time::sleep(ms(6000)).await;
    nats.restart();
    wills_copied(&nats, &a.id(), 2).await;
    let counts = count_publications(&nats).await;
    drop((one, two));
    tokio::time::sleep(ms(4000)).await;
    assert_eq!(count_of(&counts, "webmesh.services.cut-one.gone"), 1);
    assert_eq!(count_of(&counts, "webmesh.services.cut-two.gone"), 1);
    a.shutdown().await;
}

/// A second node started under the id of a live one does not take over
/// its record, nor publish the wills of its live clients: found by an attack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_under_a_live_nodes_id_does_not_publish_its_clients_wills() {
    let nats = Nats::start();
    let counts = count_publications(&nats).await;
    let a = builder("a", publishers(), &nats).id("dup").start().await.unwrap();
    records_stored(&nats, 1).await;
    let mut live = common::raw(a.local_addr().unwrap().port()).await;
    will_on(&mut live, Some("live"), "/services/live/gone", 0).await;
    wills_copied(&nats, "dup", 1).await;
    let _twin = ChildNode::on_nats(&nats, "/work", &[("MESH_CHILD_ID", "dup")]);
    tokio::time::sleep(ms(2000)).await;
    assert_eq!(count_of(&counts, "webmesh.services.live.gone"), 0, "its client is alive");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_giant_will_does_not_push_the_others_out_of_the_copy() {
    let nats = Nats::start();
    let a = node("a", publishers(), &nats).await;
    records_stored(&nats, 1).await;
    let port = a.local_addr().unwrap().port();
    let mut sockets = Vec::new();
    for i in 0..100 {
        let mut socket = common::raw(port).await;
        will_on(&mut socket, Some(&format!("s{i}")), &format!("/services/c{i}/gone"), 1000).await;
        sockets.push(socket);
    }
    wills_copied(&nats, &a.id(), 100).await;
    let mut giant = common::raw(port).await;
    set_will_frame(&mut giant, json!([13, 1, null, "/services/giant/gone", 0, "g".repeat(1_100_000)])).await;
    tokio::time::sleep(ms(1000)).await;
    let copy = copy_of(&nats, &a.id()).await.unwrap();
    assert_eq!(copy.len(), 100, "the giant is left out, not the others");
    a.shutdown().await;
}

/// Sends a WILL on `topic` with `session` and `delay_ms` from a bare
/// WebSocket (a client of another language, whose session is its own).
async fn set_will(socket: &mut common::Raw, session: &str, topic: &str, delay_ms: u64) {
    set_will_frame(socket, json!([13, 1, session, topic, delay_ms, {"client": 3}])).await;
}

async fn set_will_frame(socket: &mut common::Raw, frame: Value) {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let bytes = rmp_serde::to_vec(&frame).unwrap();
    socket.send(Message::binary(bytes)).await.unwrap();
    let reply = common::within(10, socket.next()).await.unwrap().unwrap().into_data();
    let reply: Value = rmp_serde::from_slice(&reply).unwrap();
    assert_eq!(reply, json!([3, frame[1], null]), "the WILL is accepted");
}

/// Waits until the bucket holds a copy of `n` wills of node `id`'s clients.
async fn wills_copied(nats: &Nats, id: &str, n: usize) {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let store = async_nats::jetstream::new(client).get_key_value("webmesh_nodes").await.unwrap();
    common::within(20, async {
        loop {
            if let Ok(Some(copy)) = store.get(format!("wills.{id}")).await {
                if rmp_serde::from_slice::<Vec<Value>>(&copy).is_ok_and(|wills| wills.len() == n) {
                    return;
                }
            }
            tokio::time::sleep(ms(100)).await;
        }
    })
    .await;
}

/// Reads `subscription` until it is told it may have lost events.
async fn lagged(subscription: &mut webmesh::Subscription<Value>) {
    common::within(30, async {
        loop {
            match subscription.recv().await.expect("open") {
                Err(Error::Lagged { missed: None }) => return,
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_ride_out_the_loss_of_their_nats_server_and_of_all_of_nats() {
    let mut cluster = Nats::cluster(3);
    let a = node("a", whoami("/on/a"), &cluster[0]).await;
    let b = node("b", whoami("/on/b"), &cluster[1]).await;
    for n in [&a, &b] {
        until("2 nodes up", 20, || all_up(n, 2)).await;
    }
    let on_b = Client::connect(&b.url()).await.unwrap();
    let mut news = on_b.subscribe::<Value>("/news/*").await.unwrap();
    probe(&a, "/news/probe", &mut news).await;

    // b's server dies: b moves to another server of the cluster, its
    // subscriber is told it may have lost events, and all carries on.
    cluster[1].kill();
    lagged(&mut news).await;
    common::within(30, async {
        while b.call::<String>("/on/a", &()).await.is_err() {
            tokio::time::sleep(ms(100)).await;
        }
    })
    .await;
    assert_eq!(a.call::<String>("/on/b", &()).await.unwrap(), b.id());
    probe(&a, "/news/probe", &mut news).await;
    for seq in 0..20 {
        a.publish("/news/x", &seq).unwrap();
    }
    assert_eq!(drain(&mut news, ms(500)).await, ((0..20).map(Value::from).collect(), 0));

    // All of NATS dies: each node still serves its own clients, and calls
    // across fail at once, as not sent.
    cluster[0].kill();
    cluster[2].kill();
    common::within(10, async {
        while !matches!(b.call::<String>("/on/a", &()).await, Err(Error::Offline(_))) {
            tokio::time::sleep(ms(50)).await;
        }
    })
    .await;
    assert_eq!(b.call::<String>("/on/b", &()).await.unwrap(), b.id(), "b's own route");
    assert_eq!(on_b.call::<String>("/on/b", &()).await.unwrap(), b.id(), "b's own client");
    match on_b.call::<Value>("/on/a", &()).await {
        Err(Error::Handler(e)) => assert_eq!(e.code(), "unavailable", "{e:?}"),
        other => panic!("a forwarded call fails at once: {other:?}"),
    }
    let mut local = on_b.subscribe::<Value>("/local/*").await.unwrap();
    b.publish("/local/x", &"here").unwrap();
    assert_eq!(drain(&mut local, ms(300)).await.0, vec![json!("here")], "b's pub/sub works alone");
    // Past the time a silent node takes to be `down`.
    tokio::time::sleep(ms(1500)).await;
    assert!(all_up(&b, 2), "a node cut off suspects no one for the silence: {:?}", b.nodes());

    // NATS comes back: everything resumes, and the gap is told.
    for server in &mut cluster {
        server.restart();
    }
    lagged(&mut news).await;
    common::within(60, async {
        while b.call::<String>("/on/a", &()).await.is_err() {
            tokio::time::sleep(ms(100)).await;
        }
    })
    .await;
    probe(&a, "/news/probe", &mut news).await;
    a.publish("/news/after", &"back").unwrap();
    assert_eq!(drain(&mut news, ms(500)).await.0, vec![json!("back")]);
    for n in [&a, &b] {
        until("both up again", 20, || all_up(n, 2)).await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// A node cut off from NATS may have lost events on their way: the
/// subscribers of the nodes that stayed connected are told, whatever that
/// node publishes next (its status reports carry its gaps to every node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_are_told_of_a_gap_on_another_node_whatever_it_publishes_next() {
    let mut cluster = Nats::cluster(3);
    // Slow to call a silent node `down` (which would tell the subscribers too).
    let slow_to_bury = |name, router, nats: &Nats| builder(name, router, nats).down_after(ms(20_000));
    let a = slow_to_bury("a", whoami("/on/a"), &cluster[0]).start().await.unwrap();
    let b = slow_to_bury("b", whoami("/on/b"), &cluster[1]).start().await.unwrap();
    for n in [&a, &b] {
        until("2 nodes up", 20, || all_up(n, 2)).await;
    }
    let on_b = Client::connect(&b.url()).await.unwrap();
    let mut news = on_b.subscribe::<Value>("/news/*").await.unwrap();
    probe(&a, "/news/probe", &mut news).await;
    let gaps_of_a = || b.nodes().into_iter().find(|n| n.id == a.id()).and_then(|n| n.status).map(|s| s.event_gaps);
    assert_eq!(gaps_of_a(), Some(0));

    // a's server dies; a publishes only where b has no subscriber.
    cluster[0].kill();
    a.publish("/weather/x", &1).unwrap();
    lagged(&mut news).await;
    until("b has a's report of its gap", 10, || gaps_of_a() == Some(1)).await;
    assert_eq!(state_of(&b, &a.id()), Some(NodeState::Up), "told by a's report, not by a death");
    // Each loss counts, also those after one was told: two events too
    // large for NATS, then one only where b has no subscriber.
    probe(&a, "/news/probe", &mut news).await;
    a.publish("/news/big1", &"x".repeat(2 << 20)).unwrap();
    a.publish("/news/big2", &"x".repeat(2 << 20)).unwrap();
    a.publish("/weather/x", &2).unwrap();
    lagged(&mut news).await;
    until("b has a's report of its new gaps", 10, || gaps_of_a() == Some(3)).await;
    // Then all is as before: no more notices.
    probe(&a, "/news/probe", &mut news).await;
    a.publish("/news/after", &"back").unwrap();
    assert_eq!(drain(&mut news, ms(1000)).await, (vec![json!("back")], 0));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_join_through_nats_and_each_lists_all_twenty() {
    let cluster = Nats::cluster(3);
    // Each reports itself once as it starts, then not for a minute: a node
    // learns those that started before it from their records in the bucket.
    let mut nodes = Vec::new();
    for i in 0..20 {
        let builder = builder(&format!("n{i}"), whoami(&format!("/n/{i}")), &cluster[i % 3]);
        nodes.push(builder.status_interval(Duration::from_secs(60)).start().await.unwrap());
    }
    for n in &nodes {
        until("each node lists 20 nodes up", 60, || all_up(n, 20)).await;
    }
    let mut ids: Vec<String> = nodes.iter().map(Mesh::id).collect();
    ids.sort();
    for n in &nodes {
        let mut seen: Vec<String> = n.nodes().into_iter().map(|n| n.id).collect();
        seen.sort();
        assert_eq!(seen, ids, "each node once");
    }
    // Any node reaches any route.
    for (i, n) in nodes.iter().enumerate() {
        let target = (i + 7) % 20;
        assert_eq!(n.call::<String>(&format!("/n/{target}"), &()).await.unwrap(), nodes[target].id());
    }
    // A newcomer learns them all from the bucket, none of them reporting.
    let late =
        builder("late", Router::new(), &cluster[0]).status_interval(Duration::from_secs(60)).start().await.unwrap();
    until("the newcomer lists 21 nodes", 30, || all_up(&late, 21)).await;
    for n in nodes.iter().chain([&late]) {
        n.shutdown().await;
    }
}

/// A client's data crosses NATS as it sent it, and the answer comes back
/// as the serving node gave it: the same as a call to that node itself,
/// for every kind of MessagePack value (those a node passes on as they
/// are, and those it decodes first: extension types).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_data_and_answers_cross_nats_as_they_were_sent() {
    use rmpv::Value as Mp;
    let nats = Nats::start();
    let echo = Router::new().on("/echo", |data: Mp| data);
    let c = node("c", echo, &nats).await;
    let a = node("a", Router::new(), &nats).await;
    until("a and c up", 20, || all_up(&a, 2) && all_up(&c, 2)).await;
    let values = [
        Mp::Nil,
        Mp::from(-1),
        Mp::from(u64::MAX),
        Mp::F32(1.5),
        Mp::Binary(vec![0, 255, 7]),
        Mp::Ext(5, vec![1, 2, 3]),
        Mp::Map(vec![(Mp::from(1), Mp::Array(vec![Mp::from("x"); 40])), (Mp::from("k"), Mp::from(true))]),
        Mp::from("s".repeat(100_000)),
    ];
    let direct = Client::connect(&c.url()).await.unwrap();
    let forwarded = Client::connect(&a.url()).await.unwrap();
    for value in values {
        let here = direct.call::<Mp>("/echo", &value).await;
        let through = forwarded.call::<Mp>("/echo", &value).await;
        match (here, through) {
            (Ok(here), Ok(through)) => assert_eq!(through, here, "{value:?}"),
            (Err(Error::Handler(here)), Err(Error::Handler(through))) => {
                assert_eq!(through.code(), here.code(), "{value:?}")
            }
            other => panic!("{value:?}: {other:?}"),
        }
    }
    a.shutdown().await;
    c.shutdown().await;
}

// What an attack found, kept fixed.

/// A call or an answer larger than NATS's largest message (1 MiB here), a
/// path whose subject is longer than NATS's first line takes, a will too
/// large for the node's record: each is refused as `too_large`, before it
/// is sent or instead of the answer. The caller learns at once, and the
/// node keeps its NATS connection (sent, NATS would close it, dropping
/// everyone's calls and events with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_answers_over_natss_largest_message_are_refused_and_cost_no_connection() {
    let nats = Nats::start();
    let served = Router::new()
        .on("/echo", |data: Value| data)
        .on("/big", |n: usize| "x".repeat(n))
        .on("/files/{*rest}", || "a file");
    let c = node("c", served, &nats).await;
    let a = node("a", Router::new(), &nats).await;
    until("a and c up", 20, || all_up(&a, 2) && all_up(&c, 2)).await;
    let limit = nats.monitoring("varz")["max_payload"].as_u64().unwrap() as usize;
    let client = Client::connect(&a.url()).await.unwrap();
    let too_large = |result: Result<Value, Error>| match result {
        Err(Error::Handler(e)) if e.code() == "too_large" => {}
        other => panic!("expected too_large, got {other:?}"),
    };
    // A client's call through a; a's own call, emit and call to c alone.
    too_large(client.call("/echo", &"x".repeat(limit)).await);
    match a.call::<Value>("/echo", &"x".repeat(limit)).await {
        Err(Error::TooLarge { limit: refused_over, .. }) => assert_eq!(refused_over, limit),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(matches!(a.emit("/echo", &"x".repeat(limit)).await, Err(Error::TooLarge { .. })));
    assert!(matches!(a.node(&c.id()).call::<Value>("/echo", &"x".repeat(limit)).await, Err(Error::TooLarge { .. })));
    // An answer too large for NATS comes back as an error, not a timeout.
    too_large(client.call("/big", &limit).await);
    assert!(matches!(a.call::<String>("/big", &limit).await, Err(Error::Handler(e)) if e.code() == "too_large"));
    // Just under the limit crosses.
    let fits = "x".repeat(limit - 64);
    assert_eq!(client.call::<String>("/echo", &fits).await.unwrap(), fits);
    // A path of 1,400 dots is a subject of 4,200 bytes (each escaped).
    let long = format!("/files/{}", ".".repeat(1400));
    too_large(client.call(&long, &()).await);
    assert!(matches!(a.emit(&long, &()).await, Err(Error::TooLarge { .. })));
    assert_eq!(client.call::<String>(&format!("/files/{}", "a".repeat(3000)), &()).await.unwrap(), "a file");
    // A will is in the node's record, which must fit in a NATS message.
    assert!(matches!(a.set_will("/gone/a", &"w".repeat(limit)), Err(Error::TooLarge { .. })));
    a.set_will("/gone/a", &"w".repeat(limit / 2)).unwrap();
    let closed = nats.monitoring("connz?state=closed");
    let closed: Vec<&Value> = closed["connections"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["name"].as_str().is_some_and(|name| name.starts_with("webmesh")))
        .collect();
    assert!(closed.is_empty(), "NATS closed no node's connection: {closed:?}");
    for n in [&a, &c] {
        let me = n.nodes().into_iter().find(|m| m.id == n.id()).unwrap();
        assert_eq!(me.status.unwrap().event_gaps, 0, "no gap on {}", n.id());
    }
    a.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_reports_and_events_on_nats_do_not_cut_a_node_off() {
    let cluster = Nats::cluster(3);
    let a = node("a", whoami("/on/a"), &cluster[0]).await;
    let b = node("b", Router::new(), &cluster[1]).await;
    for n in [&a, &b] {
        until("2 nodes up", 20, || all_up(n, 2)).await;
    }
    let on_b = Client::connect(&b.url()).await.unwrap();
    let mut news = on_b.subscribe::<Value>("/news/*").await.unwrap();
    probe(&a, "/news/probe", &mut news).await;
    let hostile = async_nats::connect(cluster[2].url()).await.unwrap();

    // a's report, saying it left, on a subject that is not a's.
    let mut report = a.nodes().into_iter().find(|n| n.id == a.id()).unwrap();
    report.state = NodeState::Left;
    let forged = rmp_serde::to_vec_named(&report).unwrap();
    hostile.publish("webmesh._mesh.nodes.mallory", forged.into()).await.unwrap();
    // A report whose id is too long for a subject or a key.
    report.id = "\u{e9}".repeat(1500);
    report.state = NodeState::Up;
    let long = rmp_serde::to_vec_named(&report).unwrap();
    hostile.publish("webmesh._mesh.nodes.mallory", long.into()).await.unwrap();
    // Events whose sequence numbers are the highest there are.
    let mut event = vec![0u8];
    event.extend(7u64.to_be_bytes());
    event.extend(u64::MAX.to_be_bytes());
    event.extend(rmp_serde::to_vec(&"forged").unwrap());
    for _ in 0..2 {
        hostile.publish("webmesh.news.x", event.clone().into()).await.unwrap();
    }
    hostile.flush().await.unwrap();

    tokio::time::sleep(ms(500)).await;
    assert_eq!(state_of(&b, &a.id()), Some(NodeState::Up), "a forged `left` changes nothing");
    assert_eq!(b.nodes().len(), 2, "nor does a forged newcomer");
    assert_eq!(b.call::<String>("/on/a", &()).await.unwrap(), a.id());
    // The forged event arrives once; a's events still do, all of them.
    assert_eq!(drain(&mut news, ms(300)).await.0, vec![json!("forged")]);
    for seq in 0..50 {
        a.publish("/news/x", &seq).unwrap();
    }
    assert_eq!(drain(&mut news, ms(500)).await, ((0..50).map(Value::from).collect(), 0));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_on_overlapping_subscriptions_arrives_whole_and_in_order() {
    let cluster = Nats::cluster(3);
    // Timings that a busy machine does not turn into a node seen `down`
    // (its subscribers would be told they may have lost events).
    let lenient = |name, nats| builder(name, Router::new(), nats).status_interval(ms(1000)).down_after(ms(5000));
    let a = lenient("a", &cluster[0]).start().await.unwrap();
    // Room for the whole flood in b's queue for its client: a busy machine
    // may not let b's writer keep up, and a subscriber left behind is told
    // it lagged, which is not what this test is about.
    let roomy = Server::builder().registered_handlers(false).event_queue(32_768).addr("127.0.0.1:0");
    let b = lenient("b", &cluster[1]).server(roomy).start().await.unwrap();
    for n in [&a, &b] {
        until("2 nodes up", 20, || all_up(n, 2)).await;
    }
    let on_b = Client::connect(&b.url()).await.unwrap();
    // `/news/sport` is within `/news/*`: b holds one NATS subscription.
    let mut news = on_b.subscribe::<Value>("/news/*").await.unwrap();
    let mut sport = on_b.subscribe::<Value>("/news/sport").await.unwrap();
    probe(&a, "/news/probe", &mut news).await;
    drain(&mut sport, ms(100)).await;
    // Read as it comes, and published in windows of 1,000 that the reader
    // takes in whole: a client's subscription holds 1,024 events, and a
    // reader a busy machine leaves behind is told it lagged, which is not
    // what this test is about. The windows are long enough for a
    // subscription to run ahead of another.
    let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reader = tokio::spawn({
        let taken = taken.clone();
        async move {
            let (mut events, mut lost) = (Vec::new(), Vec::new());
            while let Ok(Some(item)) = tokio::time::timeout(ms(3000), news.recv()).await {
                match item {
                    Ok(event) if event.topic.ends_with("/probe") => {}
                    Ok(event) => events.push(event.data),
                    Err(Error::Lagged { missed }) => lost.push((events.len(), missed)),
                    Err(e) => panic!("{e}"),
                }
                taken.store(events.len(), std::sync::atomic::Ordering::Relaxed);
            }
            (events, lost)
        }
    });
    let mut sent = Vec::new();
    for seq in 0..20_000u32 {
        let topic = if seq % 2 == 0 { "/news/sport" } else { "/news/other" };
        a.publish(topic, &seq).unwrap();
        sent.push(Value::from(seq));
        if seq % 1000 == 999 {
            common::within(30, async {
                while taken.load(std::sync::atomic::Ordering::Relaxed) < sent.len() {
                    tokio::time::sleep(ms(1)).await;
                }
            })
            .await;
        }
    }
    let (received, lost) = reader.await.unwrap();
    assert_eq!(
        lost,
        [],
        "lost notices (after how many events, how many); {} of {} received",
        received.len(),
        sent.len()
    );
    assert_eq!(received.len(), sent.len(), "every event, once");
    assert_eq!(received, sent, "in order");
    a.shutdown().await;
    b.shutdown().await;
}
