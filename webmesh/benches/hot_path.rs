//! Micro-benchmarks of the hot path: envelopes per codec, compression with
//! reused state, and route lookup.
//!
//! ```sh
//! cargo bench -p webmesh --features __internals --bench hot_path
//! ```

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};
use webmesh::internals as wm;

fn small() -> Value {
    json!({"id": 12345, "name": "webmesh benchmark", "tags": ["alpha", "beta", "gamma"], "score": 0.75, "active": true})
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Typed {
    id: u64,
    name: String,
    tags: Vec<String>,
    score: f64,
    active: bool,
}

fn envelopes(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope");
    let typed: Typed = serde_json::from_value(small()).unwrap();
    for name in ["msgpack", "json"] {
        let format = wm::format(name);
        group.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| wm::encode_call(&format, 7, "/echo", black_box(&typed)))
        });
        let (text, bytes) = wm::encode_call(&format, 7, "/echo", &typed);
        group.bench_function(format!("decode-typed/{name}"), |b| {
            b.iter(|| wm::decode_call::<Typed>(text, black_box(bytes.clone())))
        });
        group.bench_function(format!("decode-value/{name}"), |b| {
            b.iter(|| wm::decode_call::<Value>(text, black_box(bytes.clone())))
        });
    }
    group.finish();
}

fn compression(c: &mut Criterion) {
    let rows: Vec<Value> = (0..160)
        .map(|i| json!({"row": i, "label": format!("item number {i}"), "price": 10.5, "in_stock": i % 3 == 0}))
        .collect();
    let input = rmp_serde::to_vec_named(&json!({ "rows": rows })).unwrap();
    let packed = wm::compress(&input);
    let mut group = c.benchmark_group("zlib-16k");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("compress", |b| b.iter(|| wm::compress(black_box(&input))));
    group.bench_function("decompress", |b| b.iter(|| wm::decompress(black_box(&packed))));
    group.finish();
}

fn routing(c: &mut Criterion) {
    let mut router = webmesh::Router::new();
    for i in 0..100 {
        router = router.on(&format!("/service{i}/method"), || async {});
    }
    let routes = wm::Routes::new(router.on("/users/{id}", || async {}).on("/files/{*rest}", || async {}));
    let mut group = c.benchmark_group("route-lookup");
    group.bench_function("static", |b| b.iter(|| routes.has(black_box("/service57/method"))));
    group.bench_function("parameter", |b| b.iter(|| routes.has(black_box("/users/12345"))));
    group.bench_function("miss", |b| b.iter(|| routes.has(black_box("/nothing/here"))));
    group.finish();
}

criterion_group!(benches, envelopes, compression, routing);
criterion_main!(benches);
