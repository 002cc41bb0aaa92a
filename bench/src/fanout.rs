//! One publisher, many subscribers: webmesh topics against socket.io rooms
//! and a NATS subject.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::load::{answer_ping, connect, ServerProcess, Socket};
use crate::system::System;
use crate::{nats_server, proc, wire, Options};

/// What one fan-out run measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FanoutResult {
    pub(crate) deliveries_per_second: f64,
    pub(crate) cpu_us_per_delivery: f64,
}

/// How many events may be published ahead of the slowest subscriber.
const WINDOW: usize = 10;

/// How long one window may take to reach every subscriber.
const WINDOW_DEADLINE: Duration = Duration::from_secs(30);

pub(crate) async fn run(system: System, options: &Options) -> FanoutResult {
    match system {
        System::NatsServer => nats(options).await,
        _ => websocket(system, options).await,
    }
}

async fn websocket(system: System, options: &Options) -> FanoutResult {
    let server = ServerProcess::start(system);
    let delivered = Arc::new(AtomicU64::new(0));
    let (pattern, topic) = system.fanout_topic();
    let mut subscribers = Vec::new();
    for _ in 0..options.subscribers {
        let mut socket = connect(system, server.port).await;
        match system {
            System::Socketioxide => socket.send(Message::text(r#"42["join","room"]"#)).await.expect("join"),
            _ => subscribe(&mut socket, pattern).await,
        }
        subscribers.push(count_events(system, socket, delivered.clone()));
    }
    // socket.io joins are not acknowledged: give them time to land.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut publisher = connect(system, server.port).await;
    let payload = wire::small_payload();
    let event = match system {
        System::Socketioxide => Message::text(format!("42{}", json!(["publish", payload]))),
        _ => Message::binary(rmp_serde::to_vec_named(&json!([8, 1, topic, payload])).expect("encode")),
    };
    let (cpu_before, started) = (proc::cpu_seconds(server.pid), Instant::now());
    let per_event = options.subscribers as u64;
    publish_in_windows(&mut publisher, &event, options.events, &delivered, per_event, system.name()).await;
    let (cpu_after, elapsed) = (proc::cpu_seconds(server.pid), started.elapsed());
    for subscriber in subscribers {
        subscriber.abort();
    }
    result(options, cpu_after - cpu_before, elapsed)
}

fn result(options: &Options, cpu_seconds: f64, elapsed: Duration) -> FanoutResult {
    let deliveries = (options.events * options.subscribers) as f64;
    FanoutResult {
        deliveries_per_second: deliveries / elapsed.as_secs_f64(),
        cpu_us_per_delivery: cpu_seconds * 1e6 / deliveries,
    }
}

/// Sends a webmesh SUBSCRIBE to `pattern` and waits for its REPLY.
pub(crate) async fn subscribe(socket: &mut Socket, pattern: &str) {
    let subscribe = rmp_serde::to_vec(&json!([6, 1, pattern, null])).expect("encode");
    socket.send(Message::binary(subscribe)).await.expect("subscribe");
    // Nothing is published yet: the first frame is the REPLY.
    socket.next().await.expect("reply").expect("reply");
}

/// Counts into `delivered` each event that reaches `socket`, on receipt.
pub(crate) fn count_events(system: System, mut socket: Socket, delivered: Arc<AtomicU64>) -> JoinHandle<()> {
    tokio::spawn(async move {
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
    })
}

/// Sends `event` `count` times over a WebSocket, at most [`WINDOW`] ahead of
/// the subscribers, each event due `per_event` times in `delivered`.
pub(crate) async fn publish_in_windows(
    publisher: &mut Socket,
    event: &Message,
    count: usize,
    delivered: &AtomicU64,
    per_event: u64,
    system: &str,
) {
    let already = delivered.load(Ordering::Relaxed);
    let mut published = 0;
    while published < count {
        for _ in 0..WINDOW.min(count - published) {
            publisher.send(event.clone()).await.expect("publish");
            published += 1;
        }
        let expected = already + published as u64 * per_event;
        // Drain the publisher's own acknowledgements while waiting.
        let deadline = Instant::now() + WINDOW_DEADLINE;
        while delivered.load(Ordering::Relaxed) < expected {
            assert!(Instant::now() < deadline, "{system} lost events");
            let _ = tokio::time::timeout(Duration::from_millis(1), publisher.next()).await;
        }
    }
}

/// The same fan-out through nats-server: one async-nats client, so one
/// connection, per subscriber and one for the publisher, all in this
/// process.
async fn nats(options: &Options) -> FanoutResult {
    const SUBJECT: &str = "fanout";
    let binary = nats_server::binary().expect("nats-server is measured only when it was found");
    let server = nats_server::start(binary);
    let address = format!("127.0.0.1:{}", server.port);
    let delivered = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    let mut subscribers = Vec::new();
    for _ in 0..options.subscribers {
        let (client, mut events) = nats_subscriber(&address, SUBJECT).await;
        let delivered = delivered.clone();
        subscribers.push(tokio::spawn(async move {
            // Counted on receipt, as the WebSocket subscribers count.
            while events.next().await.is_some() {
                delivered.fetch_add(1, Ordering::Relaxed);
            }
        }));
        clients.push(client);
    }

    let publisher = nats_connect(&address).await;
    let payload = bytes::Bytes::from(rmp_serde::to_vec_named(&wire::small_payload()).expect("encode"));
    let (cpu_before, started) = (proc::cpu_seconds(server.pid), Instant::now());
    let per_event = options.subscribers as u64;
    publish_nats_in_windows(&publisher, SUBJECT, &payload, options.events, &delivered, per_event).await;
    let (cpu_after, elapsed) = (proc::cpu_seconds(server.pid), started.elapsed());
    for subscriber in subscribers {
        subscriber.abort();
    }
    drop((clients, publisher));
    // Let the clients' connection tasks see their end before the server's.
    tokio::time::sleep(Duration::from_millis(100)).await;
    result(options, cpu_after - cpu_before, elapsed)
}

/// Publishes `payload` on `subject` `count` times with async-nats, at most
/// [`WINDOW`] ahead of the subscribers, each event due `per_event` times in
/// `delivered`.
pub(crate) async fn publish_nats_in_windows(
    publisher: &async_nats::Client,
    subject: &'static str,
    payload: &bytes::Bytes,
    count: usize,
    delivered: &AtomicU64,
    per_event: u64,
) {
    let already = delivered.load(Ordering::Relaxed);
    let mut published = 0;
    while published < count {
        for _ in 0..WINDOW.min(count - published) {
            publisher.publish(subject, payload.clone()).await.expect("publish");
            published += 1;
        }
        // async-nats buffers publishes: out to the server before waiting.
        publisher.flush().await.expect("flush");
        let expected = already + published as u64 * per_event;
        let deadline = Instant::now() + WINDOW_DEADLINE;
        while delivered.load(Ordering::Relaxed) < expected {
            assert!(Instant::now() < deadline, "nats-server lost events");
            // The same 1 ms steps as the WebSocket publisher's wait.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// A client of its own subscribed to `subject`, once the server has the
/// subscription.
pub(crate) async fn nats_subscriber(
    address: &str,
    subject: &'static str,
) -> (async_nats::Client, async_nats::Subscriber) {
    let client = nats_connect(address).await;
    let events = client.subscribe(subject).await.expect("subscribe");
    // NATS does not acknowledge a SUB; a message to itself, after it on the
    // same connection, comes back only once the server has it.
    let echo = client.new_inbox();
    let mut ready = client.subscribe(echo.clone()).await.expect("subscribe");
    client.publish(echo, bytes::Bytes::new()).await.expect("publish");
    ready.next().await.expect("the subscriber's own message");
    (client, events)
}

async fn nats_connect(address: &str) -> async_nats::Client {
    // A client whose server went away gives up instead of retrying forever.
    let options = async_nats::ConnectOptions::new().max_reconnects(1);
    options.connect(address).await.expect("connect to nats-server")
}
