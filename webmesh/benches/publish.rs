//! Publishing: its cost against unrelated wildcard subscriptions, under
//! subscribe/unsubscribe churn, and from two threads at once.
//!
//! ```sh
//! cargo bench -p webmesh --features __internals --bench publish
//! ```

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use webmesh::internals::Subscriptions;

/// Connection 0 subscribes to `/news/x`; connection 1 holds `unrelated`
/// wildcard subscriptions `/other/{i}/*`.
fn with_unrelated(unrelated: usize) -> Subscriptions {
    let subscriptions = Subscriptions::new(2);
    subscriptions.subscribe(0, 0, "/news/x");
    for i in 0..unrelated {
        subscriptions.subscribe(1, i as u64, &format!("/other/{i}/*"));
    }
    subscriptions
}

fn unrelated_wildcards(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish/unrelated-wildcards");
    for unrelated in [0, 1_000, 10_000, 100_000] {
        let subscriptions = with_unrelated(unrelated);
        group.bench_function(BenchmarkId::from_parameter(unrelated), |b| {
            b.iter(|| subscriptions.hub().publish("/news/x", &42).unwrap())
        });
    }
    group.finish();
}

/// 100 subscribers of `/room/lobby` (20 of them with `/room/*`), while
/// another thread subscribes and unsubscribes: to unrelated patterns, or to
/// the topic itself (which forgets its kept matches each time).
fn churn(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish/churn");
    for churn in ["none", "unrelated", "same-topic"] {
        let subscriptions = Arc::new(Subscriptions::new(101));
        for i in 0..100 {
            subscriptions.subscribe(i, 0, if i % 5 == 0 { "/room/*" } else { "/room/lobby" });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let churner = (churn != "none").then(|| {
            let (subscriptions, stop) = (subscriptions.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let pattern =
                        if churn == "unrelated" { format!("/other/{}/*", n % 1000) } else { "/room/lobby".into() };
                    subscriptions.subscribe(100, n % 64, &pattern);
                    subscriptions.unsubscribe(100, (n + 32) % 64);
                    n += 1;
                }
            })
        });
        group.bench_function(churn, |b| b.iter(|| subscriptions.hub().publish("/room/lobby", &42).unwrap()));
        stop.store(true, Ordering::Relaxed);
        churner.map(|t| t.join());
    }
    group.finish();
}

/// The same number of publishes from one thread or split over two, each on
/// its own topic: two cores should take about half the time if publishers
/// do not serialise on a lock.
fn threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish/threads");
    let subscriptions = Arc::new(Subscriptions::new(20));
    for i in 0..20 {
        // Each thread's topic has subscribers of its own.
        let prefix = if i < 10 { "/a" } else { "/b" };
        subscriptions.subscribe(i, 0, &format!("{prefix}/topic"));
        subscriptions.subscribe(i, 1, &format!("{prefix}/*"));
    }
    for threads in [1usize, 2] {
        group.bench_function(BenchmarkId::from_parameter(threads), |b| {
            b.iter_custom(|iters| {
                let started = Instant::now();
                std::thread::scope(|scope| {
                    for t in 0..threads {
                        let subscriptions = &subscriptions;
                        scope.spawn(move || {
                            let topic = if t == 0 { "/a/topic" } else { "/b/topic" };
                            for _ in 0..iters / threads as u64 {
                                subscriptions.hub().publish(topic, &42).unwrap();
                            }
                        });
                    }
                });
                started.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = unrelated_wildcards, churn, threads
}
criterion_main!(benches);
