//! One publisher, many subscribers: webmesh topics against socket.io rooms.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::load::{answer_ping, connect, ServerProcess};
use crate::system::System;
use crate::{proc, wire, Options};

/// What one fan-out run measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FanoutResult {
    pub(crate) deliveries_per_second: f64,
    pub(crate) cpu_us_per_delivery: f64,
}

/// How many events may be published ahead of the slowest subscriber.
const WINDOW: usize = 10;

pub(crate) async fn run(system: System, options: &Options) -> FanoutResult {
    let server = ServerProcess::start(system);
    let delivered = Arc::new(AtomicU64::new(0));
    let (pattern, topic) = system.fanout_topic();
    let mut subscribers = Vec::new();
    for _ in 0..options.subscribers {
        let mut socket = connect(system, server.port).await;
        match system {
            System::Socketioxide => socket.send(Message::text(r#"42["join","room"]"#)).await.expect("join"),
            _ => {
                let subscribe = rmp_serde::to_vec(&json!([6, 1, pattern, null])).expect("encode");
                socket.send(Message::binary(subscribe)).await.expect("subscribe");
                // The REPLY to the subscription.
                socket.next().await.expect("reply").expect("reply");
            }
        }
        let delivered = delivered.clone();
        subscribers.push(tokio::spawn(async move {
            while let Some(Ok(message)) = socket.next().await {
                if answer_ping(system, &mut socket, &message).await {
                    continue;
                }
                let is_event = match &message {
                    Message::Text(text) => text.starts_with(r#"42["event""#),
                    Message::Binary(bytes) => bytes.len() > 1 && bytes[1] == 9,
                    _ => false,
                };
                if is_event {
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // socket.io joins are not acknowledged: give them time to land.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut publisher = connect(system, server.port).await;
    let payload = wire::small_payload();
    let event = match system {
        System::Socketioxide => Message::text(format!("42{}", json!(["publish", payload]))),
        _ => Message::binary(rmp_serde::to_vec_named(&json!([8, 1, topic, payload])).expect("encode")),
    };
    let expected = |events: usize| (events * options.subscribers) as u64;
    let (cpu_before, started) = (proc::cpu_seconds(server.pid), Instant::now());
    let mut published = 0;
    while published < options.events {
        for _ in 0..WINDOW.min(options.events - published) {
            publisher.send(event.clone()).await.expect("publish");
            published += 1;
        }
        // Drain the publisher's own acknowledgements while waiting.
        let deadline = Instant::now() + Duration::from_secs(30);
        while delivered.load(Ordering::Relaxed) < expected(published) {
            assert!(Instant::now() < deadline, "{} lost events", system.name());
            let _ = tokio::time::timeout(Duration::from_millis(1), publisher.next()).await;
        }
    }
    let (cpu_after, elapsed) = (proc::cpu_seconds(server.pid), started.elapsed());
    for subscriber in subscribers {
        subscriber.abort();
    }
    let deliveries = expected(options.events) as f64;
    FanoutResult {
        deliveries_per_second: deliveries / elapsed.as_secs_f64(),
        cpu_us_per_delivery: (cpu_after - cpu_before) * 1e6 / deliveries,
    }
}
