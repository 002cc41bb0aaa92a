//! Calls across the mesh: spread over the nodes serving a path, forwarded
//! for plain and Python clients.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use webmesh::{CallError, Client, Error, Mesh, Node, NodeState, Router, Server, State};

use super::{all_up, state_of, whoami, Transport};
use crate::common::{python, raw, until, within, Raw};

/// Calls go to the nodes serving their path (taking turns over links,
/// spread by NATS's queue groups), a node's own calls included; else
/// `NoRoute`. Then by id, by name, to all; then the workers leave.
pub async fn calls_go_to_the_nodes_serving_the_path_else_no_route(transport: Transport) {
    let a = transport.node(0, "worker", whoami("/work"), None).await;
    let b = transport.node(1, "worker", whoami("/work"), Some(&a)).await;
    let front = whoami("/front")
        .on("/onwards", |State(mesh): State<Mesh>| async move { mesh.call::<Value>("/nowhere", &()).await });
    let c = transport.node(2, "front", front, Some(&a)).await;
    for n in [&a, &b, &c] {
        until("3 nodes up", 20, || all_up(n, 3)).await;
    }

    let mut answered: HashMap<String, usize> = HashMap::new();
    for _ in 0..40 {
        let by: String = c.call("/work", &()).await.unwrap();
        *answered.entry(by).or_default() += 1;
    }
    assert_eq!(answered.len(), 2, "both workers took calls: {answered:?}");
    assert!(answered.values().all(|n| *n >= 5), "spread over both: {answered:?}");

    let mut local = 0;
    for _ in 0..10 {
        if a.call::<String>("/work", &()).await.unwrap() == a.id() {
            local += 1;
        }
    }
    match transport {
        // A node serving the path itself takes its turns without a socket.
        Transport::Links => assert!((1..10).contains(&local), "a took some, b the others: {local}"),
        // Over NATS, a node that serves a path answers its own calls.
        Transport::Nats(_) => assert_eq!(local, 10, "a answers its own calls"),
    }
    assert_eq!(c.call::<String>("/front", &()).await.unwrap(), c.id());
    assert_eq!(a.call::<String>("/front", &()).await.unwrap(), c.id());

    match c.call::<Value>("/nowhere", &()).await {
        Err(Error::NoRoute { path }) => assert_eq!(path, "/nowhere"),
        other => panic!("expected NoRoute, got {other:?}"),
    }
    assert!(matches!(c.emit("/nowhere", &()).await, Err(Error::NoRoute { .. })));
    // A handler that returns the error passes it on as `unavailable`.
    match a.call::<Value>("/onwards", &()).await {
        Err(Error::Handler(e)) => {
            assert_eq!((e.code(), e.message()), ("unavailable", "no node of the mesh serves `/nowhere`"))
        }
        other => panic!("expected unavailable, got {other:?}"),
    }

    // One node by id, or a service by name; all of them.
    for _ in 0..3 {
        assert_eq!(c.node(&b.id()).call::<String>("/work", &()).await.unwrap(), b.id());
    }
    let by_name: String = a.node("front").call("/front", &()).await.unwrap();
    assert_eq!(by_name, c.id());
    assert!(matches!(a.node("nobody").call::<Value>("/work", &()).await, Err(Error::NoRoute { .. })));
    assert_eq!(c.broadcast("/work", &()).await.unwrap(), 2);

    // A worker leaves: its calls go to the other.
    b.shutdown().await;
    until("b left on a and c", 10, || [&a, &c].iter().all(|n| state_of(n, &b.id()) == Some(NodeState::Left))).await;
    for _ in 0..5 {
        assert_eq!(c.call::<String>("/work", &()).await.unwrap(), a.id());
    }
    a.shutdown().await;
    until("a left on c", 10, || state_of(&c, &a.id()) == Some(NodeState::Left)).await;
    assert!(matches!(c.call::<Value>("/work", &()).await, Err(Error::NoRoute { .. })));
    c.shutdown().await;
}

/// A plain client of any node (MessagePack and JSON) reaches the routes of
/// every node, and nothing it sends passes for a node's message.
pub async fn a_plain_client_of_any_node_reaches_every_route_and_cannot_pass_for_a_node(transport: Transport) {
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    let router = whoami("/served/by/c").on("/count", move || {
        counted.fetch_add(1, Ordering::SeqCst);
    });
    let c = transport.node(0, "c", router, None).await;
    let a = transport.node(1, "a", Router::new(), Some(&c)).await;
    until("a and c up", 20, || all_up(&a, 2) && all_up(&c, 2)).await;

    for client in [Client::connect(&a.url()).await.unwrap(), Client::builder(a.url()).json().connect().await.unwrap()] {
        let by: String = client.call("/served/by/c", &()).await.unwrap();
        assert_eq!(by, c.id(), "forwarded from a to c");
        client.emit("/count", &()).await.unwrap();
        assert!(matches!(client.call::<Value>("/nowhere", &()).await, Err(Error::NotFound { .. })));
        // Nothing a client sends passes for a node's message.
        let forged = json!({"path": "/served/by/c", "data": null, "identity": "admin"});
        match client.call::<Value>("/_mesh/forward", &forged).await {
            Err(Error::Handler(e)) => assert_eq!(e.code(), "forbidden"),
            other => panic!("a client forged a forward: {other:?}"),
        }
        let hello = json!({"node": c.nodes()[0], "members": []});
        assert!(
            matches!(client.call::<Value>("/_mesh/hello", &hello).await, Err(Error::Handler(e)) if e.code() == "forbidden")
        );
        // Reserved topics: subscribe yes, publish no.
        let _watch = client.subscribe::<Node>("/_mesh/nodes/*").await.unwrap();
        match client.publish(&format!("/_mesh/nodes/{}", c.id()), &json!({"state": "down"})).await {
            Err(Error::Handler(e)) => assert_eq!(e.code(), "forbidden"),
            other => panic!("a client published on a reserved topic: {other:?}"),
        }
        // The list of nodes is for anyone.
        let listed: Vec<Node> = client.call("/_mesh/nodes", &()).await.unwrap();
        assert_eq!(listed.len(), 2);
    }
    until("both emits ran on c", 5, || count.load(Ordering::SeqCst) == 2).await;
    // Forwarding can be turned off: a client of such a node reaches its routes only.
    let alone = transport.builder(2, "alone", Router::new(), Some(&c)).forwarding(false).start().await.unwrap();
    until("alone and c up", 20, || all_up(&alone, 3)).await;
    let client = Client::connect(&alone.url()).await.unwrap();
    assert!(matches!(client.call::<Value>("/served/by/c", &()).await, Err(Error::NotFound { .. })));
    assert_eq!(
        alone.call::<String>("/served/by/c", &()).await.unwrap(),
        c.id(),
        "its own calls still go through the mesh"
    );
    alone.shutdown().await;
    // The forwarded calls were counted where they ran (2 calls, 2 emits).
    until("c's status counts the calls it ran", 5, || {
        let me = c.nodes().into_iter().find(|n| n.id == c.id()).unwrap();
        me.status.is_some_and(|s| s.calls_handled >= 4)
    })
    .await;
    a.shutdown().await;
    c.shutdown().await;
}

/// The PyPI 0.1.2 client on one node reaches a route only another node
/// serves (through a third node's link over links), in both formats.
pub async fn the_python_client_on_one_node_calls_a_route_only_another_serves(transport: Transport) {
    let echo = Router::new().on("/echo", |data: Value| data).on("/", |data: Value| data);
    let c = transport.node(0, "c", echo, None).await;
    let b = transport.node(1, "b", Router::new(), Some(&c)).await;
    let a = transport.node(2, "a", Router::new(), Some(&b)).await;
    for n in [&a, &b, &c] {
        until("3 nodes up", 20, || all_up(n, 3)).await;
    }
    let port = a.local_addr().unwrap().port();
    for codec in ["msgpack", "json"] {
        let seen =
            tokio::task::spawn_blocking(move || python::run_client_with(port, codec, &["echo-only"])).await.unwrap();
        assert_eq!(seen["echo"], json!({"blop": 56}), "{codec}: {seen}");
        assert_eq!(seen["root"], json!([1, "two", null, 3.5]), "{codec}");
        assert_eq!(seen["unknown"], json!("Path not found"), "{codec}: as from a 0.1.2 server");
        assert_eq!(seen["call_async"], json!(["async"]), "{codec}");
    }
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

/// A forwarded call's error reaches its client as the serving node gave
/// it, code, message and data, the codes webmesh uses itself included:
/// the answers through another node are the direct ones, frame for frame.
pub async fn a_forwarded_calls_error_reaches_its_client_as_the_serving_node_gave_it(transport: Transport) {
    let failing = Router::new()
        .on("/typed", |n: u32| n)
        .on("/fail/app", || async {
            Err::<Value, _>(CallError::new("app_code", "it failed").with_data(json!({"why": 1})))
        })
        .on("/fail/bad_payload", || async {
            Err::<Value, _>(
                CallError::new(CallError::BAD_PAYLOAD, "custom").with_data(json!({"field": "a.b", "x": [1]})),
            )
        })
        .on("/fail/not_found", || async {
            Err::<Value, _>(CallError::new(CallError::NOT_FOUND, "my own not found").with_data(json!({"k": 1})))
        });
    let c = transport.node(0, "c", failing, None).await;
    let a = transport.node(1, "a", Router::new(), Some(&c)).await;
    until("a and c up", 20, || all_up(&a, 2) && all_up(&c, 2)).await;
    let (mut direct, mut forwarded) =
        (raw(c.local_addr().unwrap().port()).await, raw(a.local_addr().unwrap().port()).await);
    let frames = [
        r#"[1,1,"/typed","not a number"]"#,
        r#"[1,2,"/fail/app",null]"#,
        r#"[1,3,"/fail/bad_payload",null]"#,
        r#"[1,4,"/fail/not_found",null]"#,
    ];
    for frame in frames {
        let expected = answer(&mut direct, frame).await;
        assert!(expected.starts_with("[4,") && expected.ends_with("}]"), "an error with data: {expected}");
        assert_eq!(answer(&mut forwarded, frame).await, expected, "{frame}");
    }
    a.shutdown().await;
    c.shutdown().await;
}

/// The text frame the server answers `frame` with.
async fn answer(raw: &mut Raw, frame: &str) -> String {
    raw.send(Message::text(frame)).await.unwrap();
    loop {
        match within(20, raw.next()).await.unwrap().unwrap() {
            Message::Text(text) => return text.to_string(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("{other:?}"),
        }
    }
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct User(String);

/// With a mesh secret and `forward_identity`, a call a client makes on one
/// node runs on another as that client's; nothing a client sends passes
/// for a node or for another client.
pub async fn forwarded_calls_carry_the_callers_identity_and_only_nodes_can_pass_it_on(transport: Transport) {
    let secured = |router: Router| {
        Server::builder().registered_handlers(false).router(router).addr("127.0.0.1:0").authenticate(
            |handshake: webmesh::Handshake| async move {
                match handshake.bearer_token() {
                    Some(name) => Ok(User(name.to_owned())),
                    None => Err(webmesh::AuthError::unauthorized("a token, please")),
                }
            },
        )
    };
    let whoami = Router::new()
        .on("/whoami", |webmesh::extract::Authenticated(User(name)): webmesh::extract::Authenticated<User>| name);
    // A server that authenticates needs a mesh secret.
    let refused = transport.builder(0, "x", Router::new(), None).server(secured(Router::new())).start().await;
    assert!(matches!(refused, Err(Error::Config(_))), "{refused:?}");

    let b = transport.builder(0, "b", Router::new(), None).server(secured(whoami));
    let b = b.secret("s3cret").forward_identity::<User>().start().await.unwrap();
    let a = transport.builder(1, "a", Router::new(), Some(&b)).server(secured(Router::new()));
    let a = a.secret("s3cret").forward_identity::<User>().start().await.unwrap();
    until("a and b up", 20, || all_up(&a, 2) && all_up(&b, 2)).await;

    let ada = Client::builder(a.url()).bearer_token("ada").connect().await.unwrap();
    assert_eq!(ada.call::<String>("/whoami", &()).await.unwrap(), "ada", "b saw the caller a authenticated");
    // No token: a refuses the client, whatever b would say.
    assert!(matches!(Client::connect(&a.url()).await, Err(Error::Refused { status: 401, .. })));
    // A client posing as a node without the secret is refused...
    let posing = Client::builder(b.url()).header("webmesh-node", "x").connect().await;
    assert!(matches!(posing, Err(Error::Refused { status: 403, .. })), "{posing:?}");
    let wrong =
        Client::builder(b.url()).header("webmesh-node", "x").header("webmesh-mesh-secret", "guess").connect().await;
    assert!(matches!(wrong, Err(Error::Refused { status: 403, .. })));
    // ...and an authenticated client cannot forge a forwarded identity.
    let eve = Client::builder(b.url()).bearer_token("eve").connect().await.unwrap();
    let forged = json!({"path": "/whoami", "data": null, "identity": "ada"});
    assert!(
        matches!(eve.call::<Value>("/_mesh/forward", &forged).await, Err(Error::Handler(e)) if e.code() == "forbidden")
    );
    assert_eq!(eve.call::<String>("/whoami", &()).await.unwrap(), "eve");
    a.shutdown().await;
    b.shutdown().await;
}
