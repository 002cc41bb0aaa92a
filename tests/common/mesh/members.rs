//! Who is in the mesh: joining, leaving, dying (child processes killed for
//! real), pausing; and the calls under way when a node goes.

use std::time::{Duration, Instant};

use serde_json::Value;
use webmesh::{Client, Error, Mesh, Node, NodeState, Router, State};

use super::{all_up, ms, state_of, whoami, Transport};
use crate::common::{until, within};

/// Five nodes from one seed (over NATS, from none) reach full membership,
/// each listing each node once; a late one is known to all; one that
/// leaves is `left` everywhere, for good.
pub async fn nodes_reach_full_membership_a_late_one_is_known_to_all_and_leaving_is_left(transport: Transport) {
    let seed = transport.node(0, "seed", Router::new(), None).await;
    let mut nodes = vec![seed.clone()];
    for i in 1..5 {
        nodes.push(transport.node(i, &format!("n{i}"), Router::new(), Some(&seed)).await);
    }
    until("5 nodes see 5 nodes up", 20, || nodes.iter().all(|n| all_up(n, 5))).await;

    // Over links, a latecomer knows only the last node.
    let late = transport.node(5, "late", Router::new(), Some(&nodes[4])).await;
    nodes.push(late.clone());
    until("6 nodes see 6 nodes up", 20, || nodes.iter().all(|n| all_up(n, 6))).await;
    let mut ids: Vec<String> = nodes.iter().map(Mesh::id).collect();
    ids.sort();
    for node in &nodes {
        let mut seen: Vec<String> = node.nodes().into_iter().map(|n| n.id).collect();
        seen.sort();
        assert_eq!(seen, ids, "each node once, no duplicates");
    }

    late.shutdown().await;
    until("the others see the late node left", 10, || {
        nodes[..5].iter().all(|n| state_of(n, &late.id()) == Some(NodeState::Left))
    })
    .await;
    // `left` is final: nothing brings it back as suspect or down.
    tokio::time::sleep(ms(1200)).await;
    assert!(nodes[..5].iter().all(|n| state_of(n, &late.id()) == Some(NodeState::Left)));
    for node in &nodes[..5] {
        node.shutdown().await;
    }
}

/// The states that the events of node `id` on `subscription` move it
/// through (repeats of one state are status reports, except a second
/// `down`, which would be a duplicate notice), until it is `down` and
/// `quiet` passes without another event of it.
async fn notices(subscription: &mut webmesh::Subscription<Node>, id: &str, quiet: Duration) -> Vec<NodeState> {
    let mut states: Vec<NodeState> = Vec::new();
    let mut last = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    while states.last() != Some(&NodeState::Down) || last.elapsed() < quiet {
        assert!(Instant::now() < deadline, "no end to the notices: {states:?}");
        let Ok(Some(item)) = tokio::time::timeout(ms(50), subscription.recv()).await else { continue };
        let node = item.expect("a node's notice").data;
        if node.id != id {
            continue;
        }
        last = Instant::now();
        // Reports of it `up` before it died are not notices.
        if states.is_empty() && node.state == NodeState::Up {
            continue;
        }
        if states.last() != Some(&node.state) || node.state == NodeState::Down {
            states.push(node.state);
        }
    }
    states
}

/// A node killed with SIGKILL is `suspect`, then `down`, each said once on
/// the reserved topics of every node; subscribers are told they may have
/// lost its events; its routes go to the others; restarted (on the same
/// port), it comes back as a new node.
pub async fn a_killed_node_is_suspect_then_down_its_routes_go_elsewhere_and_it_comes_back_as_a_new_node(
    transport: Transport,
) {
    let a = transport.node(0, "a", whoami("/shared"), None).await;
    let b = transport.node(1, "b", Router::new(), Some(&a)).await;
    let child = transport.child(2, &a, "/shared,/only/child", &[]);
    for n in [&a, &b] {
        until("3 nodes up", 20, || all_up(n, 3)).await;
    }
    assert_eq!(b.node(&child.id).call::<String>("/only/child", &()).await.unwrap(), child.id);
    // A watcher of the reserved topics on each node, and a subscriber that
    // the child's events would reach.
    let mut watchers = Vec::new();
    for n in [&a, &b] {
        let client = Client::connect(&n.url()).await.unwrap();
        let subscription = client.subscribe::<Node>("/_mesh/nodes/*").await.unwrap();
        watchers.push((client, subscription));
    }
    let on_b = Client::connect(&b.url()).await.unwrap();
    let mut news = on_b.subscribe::<Value>("/news/*").await.unwrap();

    child.signal("-KILL");
    for (_, watcher) in &mut watchers {
        let seen = notices(watcher, &child.id, ms(1500)).await;
        assert_eq!(seen, [NodeState::Suspect, NodeState::Down], "suspect, then down, each said once");
    }
    assert!(matches!(news.recv().await, Some(Err(Error::Lagged { missed: None }))), "b's subscriber is told");
    for _ in 0..6 {
        assert_eq!(b.call::<String>("/shared", &()).await.unwrap(), a.id(), "the routes of the dead go elsewhere");
    }
    assert!(matches!(b.call::<Value>("/only/child", &()).await, Err(Error::NoRoute { .. })));

    // It restarts, on the same port, as a new node.
    let port = child.port.to_string();
    drop(child);
    let again = transport.child(2, &a, "/shared,/only/child", &[("MESH_CHILD_PORT", &port)]);
    for n in [&a, &b] {
        until("the new node up", 20, || state_of(n, &again.id) == Some(NodeState::Up)).await;
    }
    assert_eq!(b.call::<String>("/only/child", &()).await.unwrap(), again.id);
    a.shutdown().await;
    b.shutdown().await;
}

/// A node stopped (SIGSTOP) is `down` to the others and its routes are
/// gone; continued, it is `up` again on both sides, the same node.
pub async fn a_stopped_node_is_down_then_up_again_on_both_sides(transport: Transport) {
    let a = transport.node(0, "a", Router::new(), None).await;
    let child = transport.child(1, &a, "/child", &[]);
    until("the child up on a", 20, || all_up(&a, 2)).await;
    child.signal("-STOP");
    until("the stopped child down on a", 15, || state_of(&a, &child.id) == Some(NodeState::Down)).await;
    assert!(matches!(a.call::<Value>("/child", &()).await, Err(Error::NoRoute { .. })));
    child.signal("-CONT");
    until("the child up again on a", 15, || state_of(&a, &child.id) == Some(NodeState::Up)).await;
    assert_eq!(a.call::<String>("/child", &()).await.unwrap(), child.id, "the same node, back");
    // And the child's own view of a, asked over its socket.
    let on_child = Client::connect(&format!("ws://127.0.0.1:{}", child.port)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let seen: Vec<Node> = on_child.call("/_mesh/nodes", &()).await.unwrap();
        if seen.iter().any(|n| n.id == a.id() && n.state == NodeState::Up) {
            break;
        }
        assert!(Instant::now() < deadline, "the child never saw a up again: {seen:?}");
        tokio::time::sleep(ms(50)).await;
    }
    a.shutdown().await;
}

/// A node leaving gracefully answers the calls under way first (from the
/// mesh and forwarded for a client), then is `left`, its routes gone.
pub async fn a_node_leaving_gracefully_answers_the_calls_under_way_first(transport: Transport) {
    let slow = Router::new().on("/slow", |State(mesh): State<Mesh>| async move {
        tokio::time::sleep(ms(500)).await;
        mesh.id()
    });
    let b = transport.node(0, "b", slow, None).await;
    let a = transport.node(1, "a", Router::new(), Some(&b)).await;
    until("a and b up", 20, || all_up(&a, 2) && all_up(&b, 2)).await;
    let via_mesh = tokio::spawn({
        let a = a.clone();
        async move { a.call::<String>("/slow", &()).await }
    });
    let client = Client::connect(&a.url()).await.unwrap();
    let forwarded = tokio::spawn(async move { client.call::<String>("/slow", &()).await });
    tokio::time::sleep(ms(100)).await;
    b.shutdown().await;
    assert_eq!(via_mesh.await.unwrap().unwrap(), b.id(), "answered before b left");
    assert_eq!(forwarded.await.unwrap().unwrap(), b.id());
    until("b left on a", 10, || state_of(&a, &b.id()) == Some(NodeState::Left)).await;
    assert!(matches!(a.call::<String>("/slow", &()).await, Err(Error::NoRoute { .. })));
    a.shutdown().await;
}

/// Slow calls to another node do not hold up a fast one behind them, even
/// where that node takes few calls at a time from one connection; a
/// node's watch ends when it shuts down.
pub async fn slow_calls_to_another_node_do_not_hold_up_the_others_and_watches_end(transport: Transport) {
    let routes = Router::new()
        .on("/slow", || async {
            tokio::time::sleep(ms(1000)).await;
        })
        .on("/fast", || "fast");
    let narrow =
        webmesh::Server::builder().registered_handlers(false).router(routes).addr("127.0.0.1:0").max_calls_in_flight(4);
    // Over links, the allowance of a link needs the mesh's secret: anyone
    // may pass for a node without one.
    let b = transport.builder(0, "b", Router::new(), None).server(narrow).secret("s").start().await.unwrap();
    let a = transport.builder(1, "a", Router::new(), Some(&b)).secret("s").start().await.unwrap();
    until("a and b up", 20, || all_up(&a, 2) && all_up(&b, 2)).await;
    let mut slow = Vec::new();
    for _ in 0..20 {
        let a = a.clone();
        slow.push(tokio::spawn(async move { a.call::<()>("/slow", &()).await }));
    }
    tokio::time::sleep(ms(100)).await;
    assert_eq!(a.call::<String>("/fast", &()).await.unwrap(), "fast");
    assert!(slow.iter().all(|call| !call.is_finished()), "the fast call passed the slow ones");
    for call in slow {
        call.await.unwrap().unwrap();
    }
    let mut watch = a.watch();
    a.shutdown().await;
    // The watch ends (else `within` fails the test).
    within(5, async { while watch.next().await.is_some() {} }).await;
    b.shutdown().await;
}
