//! Random interleavings of everything a client does, against a real server
//! that is restarted under it; the invariants hold for every seed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{Client, ConnectionState, Error, Hub, Reconnect, Router, Server};

/// What the server ran: call or emit id -> how many times.
type Ran = Arc<Mutex<HashMap<u64, u32>>>;

struct Running {
    hub: Hub,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<Result<(), Error>>,
}

async fn start(addr: SocketAddr, ran: Ran) -> (Running, SocketAddr) {
    let record = move |id: u64| {
        *ran.lock().unwrap().entry(id).or_default() += 1;
        id
    };
    let slow_record = record.clone();
    let router = Router::new().on("/run", move |id: u64| std::future::ready(record(id))).on(
        "/slow",
        move |(id, ms): (u64, u64)| {
            let record = slow_record.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                record(id)
            }
        },
    );
    // The port may linger for a moment after a stop.
    let (server, hub) = loop {
        let builder = Server::builder().registered_handlers(false).router(router.clone());
        let mut builder = builder.shutdown_timeout(Duration::ZERO);
        let hub = builder.hub();
        match builder.addr(addr.to_string()).bind().await {
            Ok(server) => break (server, hub),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve_with_shutdown(async move {
        let _ = stopped.await;
    }));
    (Running { hub, stop, serving }, addr)
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.serving).await.expect("the server stops");
    }
}

/// The server's lifetimes: odd while it is down.
#[derive(Default)]
struct Epoch(AtomicU64);

impl Epoch {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// How one call ended, and in which epochs it started and ended.
struct Outcome {
    id: u64,
    result: Result<u64, Error>,
    started: u64,
    ended: u64,
}

/// Runs one interleaving; returns how many calls were given up while the server was down.
async fn run_seed(seed: u64) -> usize {
    let mut rng = fastrand::Rng::with_seed(seed);
    let ran: Ran = Arc::default();
    let (server, addr) = start("127.0.0.1:0".parse().unwrap(), ran.clone()).await;
    let server = Arc::new(tokio::sync::Mutex::new(Some(server)));
    let epoch = Arc::new(Epoch::default());
    let client = Client::builder(format!("ws://{addr}"))
        .reconnect(Reconnect { initial_delay: Duration::from_millis(5), max_delay: Duration::from_millis(50) })
        .heartbeat(Duration::from_millis(200), Duration::from_millis(200))
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_millis(800))
        .outbound_buffer(16 << 10)
        .connect()
        .await
        .unwrap();
    let shared = Arc::downgrade(client.shared());
    let mut tasks = Vec::new();
    let next_id = Arc::new(AtomicU64::new(1));
    for _ in 0..300 {
        let (client, epoch, next_id) = (client.clone(), epoch.clone(), next_id.clone());
        let id = next_id.fetch_add(1, Ordering::SeqCst);
        let pause = Duration::from_millis(rng.u64(0..4));
        match rng.u8(0..100) {
            // Calls: plain, slow with a short timeout, or dropped by the caller.
            0..=39 => tasks.push(tokio::spawn(async move {
                let started = epoch.now();
                let result = client.call::<u64>("/run", &id).await;
                Some(Outcome { id, result, started, ended: epoch.now() })
            })),
            40..=54 => {
                let (ms, timeout) = (rng.u64(0..100), Duration::from_millis(rng.u64(1..120)));
                tasks.push(tokio::spawn(async move {
                    let started = epoch.now();
                    let result = client.call_with_timeout::<u64>("/slow", &(id, ms), timeout).await;
                    Some(Outcome { id, result, started, ended: epoch.now() })
                }));
            }
            55..=64 => {
                let after = Duration::from_millis(rng.u64(0..20));
                tasks.push(tokio::spawn(async move {
                    let started = epoch.now();
                    let result = tokio::time::timeout(after, client.call::<u64>("/run", &id))
                        .await
                        .unwrap_or(Err(Error::Timeout(after)));
                    Some(Outcome { id, result, started, ended: epoch.now() })
                }));
            }
            65..=74 => tasks.push(tokio::spawn(async move {
                let _ = client.emit("/run", &id).await;
                None
            })),
            // Subscriptions that come and go, some while events flow.
            75..=89 => {
                let (server, read) = (server.clone(), rng.usize(0..3));
                tasks.push(tokio::spawn(async move {
                    let Ok(mut events) = client.subscribe::<u64>("/t/{*rest}").await else { return None };
                    if let Some(running) = server.lock().await.as_ref() {
                        let _ = running.hub.publish("/t/x", &id);
                    }
                    for _ in 0..read {
                        let _ = tokio::time::timeout(Duration::from_millis(20), events.recv()).await;
                    }
                    if id % 2 == 0 {
                        events.unsubscribe().await;
                    }
                    None
                }));
            }
            // The server goes down, and comes back on the same port.
            90..=95 => {
                let down_for = Duration::from_millis(rng.u64(0..150));
                let (server, ran) = (server.clone(), ran.clone());
                let mut slot = server.lock().await;
                if let Some(running) = slot.take() {
                    running.stop().await;
                    epoch.0.fetch_add(1, Ordering::SeqCst);
                    drop(slot);
                    tokio::spawn(async move {
                        tokio::time::sleep(down_for).await;
                        let mut slot = server.lock().await;
                        epoch.0.fetch_add(1, Ordering::SeqCst);
                        *slot = Some(start(addr, ran).await.0);
                    });
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(rng.u64(0..30))).await,
        }
        tokio::time::sleep(pause).await;
    }
    // Every call completes exactly once, with its own answer.
    let mut outcomes = Vec::new();
    for task in tasks {
        let outcome = tokio::time::timeout(Duration::from_secs(30), task).await.expect("a call never completed");
        outcomes.extend(outcome.unwrap());
    }
    // Let the server come back and anything stale arrive, if it would.
    while epoch.now() % 2 == 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut states = client.state_changes();
    tokio::time::timeout(Duration::from_secs(10), states.wait_for(|s| *s == ConnectionState::Connected))
        .await
        .expect("reconnected")
        .unwrap();
    assert_eq!(client.call::<u64>("/run", &0).await.unwrap(), 0);
    let ran = ran.lock().unwrap().clone();
    // The interleaving did what it is for: restarts, and calls given up while down.
    let given_up_while_down =
        outcomes.iter().filter(|o| o.result.is_err() && o.started == o.ended && o.started % 2 == 1).count();
    let answered = outcomes.iter().filter(|o| o.result.is_ok()).count();
    eprintln!(
        "seed {seed}: {} restarts, {answered} answered, {given_up_while_down} given up while down",
        epoch.now() / 2
    );
    assert!(epoch.now() >= 2 && answered > 0, "seed {seed}: nothing was exercised");
    for outcome in &outcomes {
        if let Ok(answer) = &outcome.result {
            assert_eq!(*answer, outcome.id, "seed {seed}: a call got another call's answer");
        }
        let times = ran.get(&outcome.id).copied().unwrap_or(0);
        assert!(times <= 1, "seed {seed}: call {} ran {times} times", outcome.id);
        // Made and given up while the server was down: never sent later.
        if outcome.result.is_err() && outcome.started == outcome.ended && outcome.started % 2 == 1 {
            assert_eq!(times, 0, "seed {seed}: call {} given up while down, then run", outcome.id);
        }
    }
    // Nothing is left behind: no waiting call, no queued frame, no subscription.
    assert_eq!(client.shared().backlog(), (0, 0), "seed {seed}");
    assert_eq!(client.shared().subscriptions.len(), 0, "seed {seed}");
    // Closing ends every stream and the task, and frees the client.
    let mut held = client.subscribe::<u64>("/t/{*rest}").await.unwrap();
    let mut pushes = client.pushes();
    client.close().await;
    let ends = async {
        while held.recv().await.is_some() {}
        assert!(pushes.next().await.is_none());
    };
    tokio::time::timeout(Duration::from_secs(10), ends).await.expect("a stream left waiting after close");
    drop(held);
    let freed = async {
        while shared.upgrade().is_some() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), freed).await.expect("the client's state was never freed");
    let last = server.lock().await.take();
    if let Some(running) = last {
        running.stop().await;
    }
    given_up_while_down
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_interleavings_keep_every_invariant() {
    let mut given_up_while_down = 0;
    for seed in 1..=6 {
        given_up_while_down += run_seed(seed).await;
    }
    assert!(given_up_while_down > 0, "no seed gave up a call while the server was down");
}
