//! A node's will: published once when it dies, never when it leaves.

use serde_json::{json, Value};
use webmesh::{Error, Mesh, NodeState, Router};

use super::{all_up, child_will, ms, state_of, will_watchers, wills_received, Transport};
use crate::common::until;

fn will_of(seen_by: &Mesh, id: &str) -> Option<webmesh::NodeWill> {
    seen_by.nodes().into_iter().find(|node| node.id == id).and_then(|node| node.will)
}

/// Two nodes killed at once, one of them the first in line to publish the
/// other's will (over links, the lowest id `up`): each will reaches a
/// subscriber on each survivor exactly once.
pub async fn a_killed_nodes_will_reaches_a_subscriber_on_each_survivor_exactly_once_even_when_its_heir_dies_with_it(
    transport: Transport,
) {
    let a = transport.builder(0, "a", Router::new(), None).id("a").start().await.unwrap();
    let b = transport.builder(1, "b", Router::new(), Some(&a)).id("b").start().await.unwrap();
    let heir = transport.child(2, &a, "", &[("MESH_CHILD_ID", "0-heir"), ("MESH_CHILD_WILL", "/services/heir/gone")]);
    let dead = transport.child(3, &a, "", &[("MESH_CHILD_ID", "z-dead"), ("MESH_CHILD_WILL", "/services/dead/gone")]);
    for n in [&a, &b] {
        until("4 nodes up", 20, || all_up(n, 4)).await;
        assert_eq!(will_of(n, &dead.id).map(|w| w.topic), Some("/services/dead/gone".into()), "known to all");
    }
    transport.settled(4).await;
    let mut watchers = will_watchers(&[&a, &b]).await;

    dead.signal("-KILL");
    heir.signal("-KILL");
    for n in [&a, &b] {
        until("both children down", 15, || {
            state_of(n, &dead.id) == Some(NodeState::Down) && state_of(n, &heir.id) == Some(NodeState::Down)
        })
        .await;
    }
    // Any duplicate would come within this time, before the markers.
    tokio::time::sleep(ms(1500)).await;
    for got in wills_received(&[&a, &b], &["/services/dead/gone", "/services/heir/gone"], &mut watchers).await {
        assert_eq!(got, [child_will(), child_will()], "each will once, on each survivor");
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// A node's will is known to the others from its start and replaced by
/// `set_will`; when the node leaves gracefully, in the process or on
/// SIGTERM, no will is published.
pub async fn a_node_that_leaves_gracefully_has_no_will_published_and_set_will_replaces_it(transport: Transport) {
    let a = transport.node(0, "a", Router::new(), None).await;
    let b = transport.node(1, "b", Router::new(), Some(&a)).await;
    let c =
        transport.builder(2, "c", Router::new(), Some(&a)).will("/services/c/gone", &"first").start().await.unwrap();
    let child = transport.child(3, &a, "", &[("MESH_CHILD_WILL", "/services/child/gone")]);
    for n in [&a, &b, &c] {
        until("4 nodes up", 20, || all_up(n, 4)).await;
    }
    assert_eq!(will_of(&a, &c.id()).map(|w| w.data), Some(json!("first")), "known from its start");
    c.set_will("/services/c/gone", &"second").unwrap();
    until("the new will is known", 10, || will_of(&a, &c.id()).is_some_and(|w| w.data == json!("second"))).await;
    assert!(matches!(c.set_will("/_mesh/nodes/x", &1), Err(Error::Config(_))), "not on the mesh's topics");
    transport.settled(4).await;
    let mut watchers = will_watchers(&[&a, &b]).await;

    c.shutdown().await;
    child.signal("-TERM");
    for n in [&a, &b] {
        until("c and the child left", 10, || {
            state_of(n, &c.id()) == Some(NodeState::Left) && state_of(n, &child.id) == Some(NodeState::Left)
        })
        .await;
    }
    // Past the time a death would take to be noticed.
    tokio::time::sleep(ms(1500)).await;
    for got in wills_received(&[&a, &b], &["/services/c/gone", "/services/child/gone"], &mut watchers).await {
        assert_eq!(got, Vec::<Value>::new(), "no will");
    }
    a.shutdown().await;
    b.shutdown().await;
}
