//! Handlers declared with `#[webmesh::on]`, collected at link time and served
//! by `webmesh::serve()` and `Server::builder()`.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::TestServer;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use webmesh::{CallError, Client, Connection, Error, Router, Server, State};

#[derive(Clone, Default)]
struct Hits(Arc<AtomicU64>);

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Point {
    x: i32,
    y: i32,
}

#[webmesh::on("/m/echo")]
async fn echo(data: Value) -> Value {
    data
}

#[webmesh::on("/m/double")]
fn double(n: i64) -> i64 {
    n * 2
}

#[webmesh::on("/m/unit")]
async fn unit() {}

#[webmesh::on("/m/even")]
fn even(n: u8) -> Option<u8> {
    (n % 2 == 0).then_some(n)
}

#[webmesh::on("/m/checked")]
async fn checked(n: u8) -> Result<u8, CallError> {
    n.checked_mul(2).ok_or_else(|| CallError::new("overflow", format!("{n} * 2 does not fit in a u8")))
}

#[webmesh::on("/m/hits")]
async fn hits(State(hits): State<Hits>, conn: Connection, point: Point) -> (u64, u64, Point) {
    let n = hits.0.fetch_add(1, Ordering::SeqCst) + 1;
    (n, conn.id(), Point { x: point.y, y: point.x })
}

// The function stays callable as written.
#[test]
fn the_macro_leaves_the_function_unchanged() {
    assert_eq!(double(21), 42);
    assert_eq!(even(3), None);
}

#[tokio::test]
async fn declared_handlers_are_served_in_every_shape() {
    let server = TestServer::start(Server::builder().state(Hits::default())).await;
    let client = server.client().await;
    assert_eq!(client.call::<Value>("/m/echo", &json!({"blop": 56})).await.unwrap(), json!({"blop": 56}));
    assert_eq!(client.call::<i64>("/m/double", &4).await.unwrap(), 8);
    client.call::<()>("/m/unit", &()).await.unwrap();
    assert_eq!(client.call::<Option<u8>>("/m/even", &4).await.unwrap(), Some(4));
    assert_eq!(client.call::<Option<u8>>("/m/even", &5).await.unwrap(), None);
    assert_eq!(client.call::<u8>("/m/checked", &100).await.unwrap(), 200);
    match client.call::<u8>("/m/checked", &200).await {
        Err(Error::Handler(e)) => assert_eq!(e.code(), "overflow"),
        other => panic!("{other:?}"),
    }
    let (n, _, p) = client.call::<(u64, u64, Point)>("/m/hits", &Point { x: 1, y: 2 }).await.unwrap();
    assert_eq!((n, p), (1, Point { x: 2, y: 1 }));
}

#[tokio::test]
async fn a_declared_path_served_twice_fails_naming_both() {
    let (router, router_line) = (Router::new().on("/m/echo", |v: Value| async move { v }), line!());
    let echo_line = include_str!("macros.rs").lines().position(|l| l.starts_with("async fn echo(")).unwrap() + 1;
    let err = Server::builder().router(router).addr("127.0.0.1:0").bind().await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("two handlers on `/m/echo`"), "{message}");
    assert!(message.contains(&format!("macros::echo at tests/macros.rs:{echo_line}")), "{message}");
    assert!(message.contains(&format!("tests/macros.rs:{router_line}")), "the router's location: {message}");
}

#[tokio::test]
async fn serve_uses_webmesh_addr() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // Only this test of this binary reads the variable.
    std::env::set_var("WEBMESH_ADDR", format!("127.0.0.1:{port}"));
    tokio::spawn(async { webmesh::serve().await.unwrap() });
    let url = format!("ws://127.0.0.1:{port}");
    let mut client = None;
    for _ in 0..100 {
        if let Ok(c) = Client::connect(&url).await {
            client = Some(c);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let client = client.expect("webmesh::serve() listens on WEBMESH_ADDR");
    assert_eq!(client.call::<i64>("/m/double", &5).await.unwrap(), 10);
}

#[webmesh::on("/m/string-error")]
async fn string_error(n: u32) -> Result<u32, String> {
    if n == 0 {
        Err("zero is not allowed".to_owned())
    } else {
        Ok(n)
    }
}

#[tokio::test]
async fn a_result_with_a_serializable_error_is_still_an_error_reply() {
    let server = TestServer::start(Server::builder().state(Hits::default())).await;
    let client = server.client().await;
    assert_eq!(client.call::<u32>("/m/string-error", &3).await.unwrap(), 3);
    match client.call::<u32>("/m/string-error", &0).await {
        Err(Error::Handler(e)) => assert_eq!((e.code(), e.message()), ("handler_error", "zero is not allowed")),
        other => panic!("{other:?}"),
    }
}

#[webmesh::subscribe("/m/private/{owner}")]
async fn only_owners(
    conn: Connection,
    webmesh::extract::Path(owner): webmesh::extract::Path<String>,
) -> Result<(), CallError> {
    match conn.extension::<String>() {
        Some(name) if name == owner => Ok(()),
        _ => Err(CallError::new("forbidden", format!("only {owner} may watch this"))),
    }
}

#[webmesh::on("/m/login")]
async fn login(conn: Connection, name: String) {
    conn.insert_extension(name);
}

#[webmesh::publish("/m/open/{*rest}")]
fn open_for_publishing() {}

#[tokio::test]
async fn declared_subscribe_and_publish_handlers_are_applied() {
    let server = TestServer::start(Server::builder().state(Hits::default())).await;
    let client = server.client().await;
    match client.subscribe::<Value>("/m/private/ada").await {
        Err(Error::Handler(e)) => assert_eq!(e.message(), "only ada may watch this"),
        other => panic!("{other:?}"),
    }
    client.call::<()>("/m/login", "ada").await.unwrap();
    let mut mine = client.subscribe::<Value>("/m/private/ada").await.unwrap();
    let mut open = client.subscribe::<Value>("/m/open/{*rest}").await.unwrap();
    client.publish("/m/open/a/b", &json!(1)).await.unwrap();
    assert_eq!(open.recv().await.unwrap().unwrap().topic, "/m/open/a/b");
    assert!(
        matches!(client.publish("/m/private/ada", &json!(2)).await, Err(Error::Handler(e)) if e.code() == "forbidden")
    );
    drop(mine.recv());
}
