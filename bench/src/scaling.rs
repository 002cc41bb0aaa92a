//! What a publish costs the webmesh server while other connections hold
//! many wildcard subscriptions that never match it: with a subscription
//! index it should cost about the same as with none.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::fanout::{count_events, publish_in_windows, subscribe};
use crate::load::{connect, ServerProcess};
use crate::system::System;
use crate::{proc, wire, Options};

/// How many connections share the unrelated subscriptions.
const HOLDERS: usize = 10;

/// Publishes before the measured ones, so that the first publish's one-off
/// work on the topic is not counted.
const WARM_UP: usize = 10;

/// Server CPU per publish, in microseconds, with `unrelated` wildcard
/// subscriptions held elsewhere, over `options.publishes` publishes to a
/// topic with one subscriber.
pub(crate) async fn cpu_us_per_publish(unrelated: usize, options: &Options) -> f64 {
    let system = System::WebmeshScaling;
    let server = ServerProcess::start(system);
    let holders = hold_unrelated(&server, unrelated).await;
    let delivered = Arc::new(AtomicU64::new(0));
    let mut subscriber = connect(system, server.port).await;
    subscribe(&mut subscriber, "/news/x").await;
    let subscriber = count_events(system, subscriber, delivered.clone());

    let mut publisher = connect(system, server.port).await;
    let publish = rmp_serde::to_vec_named(&json!([8, 1, "/news/x", wire::small_payload()])).expect("encode");
    let publish = Message::binary(publish);
    publish_in_windows(&mut publisher, &publish, WARM_UP, &delivered, 1, system.name()).await;
    let before = proc::thread_cpu_nanos(server.pid);
    publish_in_windows(&mut publisher, &publish, options.publishes, &delivered, 1, system.name()).await;
    let after = proc::thread_cpu_nanos(server.pid);
    subscriber.abort();
    for holder in holders {
        holder.abort();
    }
    proc::cpu_seconds_between(&before, &after) * 1e6 / options.publishes.max(1) as f64
}

/// Opens connections holding `count` subscriptions to `/other/{i}/*` in
/// all, and returns once the server has answered every one; the tasks keep
/// the connections open (and read) until aborted.
async fn hold_unrelated(server: &ServerProcess, count: usize) -> Vec<JoinHandle<()>> {
    let per_holder = count.div_ceil(HOLDERS);
    let holding = (0..count).step_by(per_holder.max(1)).map(|first| {
        let patterns = first..(first + per_holder).min(count);
        async move {
            let (mut sink, mut stream) = connect(System::WebmeshScaling, server.port).await.split();
            let total = patterns.len();
            // Pipelined, sent while the REPLYs are read, so neither side's
            // buffers fill.
            let send = async {
                for (id, i) in patterns.enumerate() {
                    let frame = rmp_serde::to_vec(&json!([6, id + 1, format!("/other/{i}/*"), null])).expect("encode");
                    sink.feed(Message::binary(frame)).await.expect("subscribe");
                }
                sink.flush().await.expect("subscribe");
            };
            let replies = async {
                let mut replied = 0;
                while replied < total {
                    let frame = stream.next().await.expect("a REPLY").expect("a REPLY");
                    // Pings are answered by the socket itself.
                    let Message::Binary(frame) = frame else { continue };
                    let reply: Value = rmp_serde::from_slice(&frame).expect("decode");
                    assert_eq!(reply[0], 3, "a SUBSCRIBE was refused: {reply}");
                    replied += 1;
                }
            };
            tokio::join!(send, replies);
            sink.reunite(stream).expect("the halves of one socket")
        }
    });
    let sockets = futures_util::future::join_all(holding).await;
    sockets
        .into_iter()
        .map(|mut socket| tokio::spawn(async move { while let Some(Ok(_)) = socket.next().await {} }))
        .collect()
}
