//! The servers, each run in its own process by `webmesh-bench server NAME`.

use std::net::SocketAddr;

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::serve::ListenerExt;
use serde_json::Value;

use crate::system::System;

pub(crate) fn serve(name: &str) {
    let system = System::from_name(name).unwrap_or_else(|| panic!("no system {name}"));
    // Raise the file limit for the idle-connection measurement.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        match system {
            System::AxumEcho => axum_echo(listener, addr).await,
            System::Jsonrpsee => jsonrpsee(listener).await,
            System::Socketioxide => socketioxide(listener, addr).await,
            System::NatsServer => unreachable!("nats-server runs its own binary"),
            _ => webmesh(system, listener, addr).await,
        }
    });
}

fn ready(addr: SocketAddr) {
    println!("READY {}", addr.port());
}

/// Echoes every data frame: the least any WebSocket RPC server can do.
async fn axum_echo(listener: tokio::net::TcpListener, addr: SocketAddr) {
    async fn upgrade(ws: WebSocketUpgrade) -> axum::response::Response {
        ws.on_upgrade(|mut socket| async move {
            while let Some(Ok(message)) = socket.recv().await {
                if matches!(message, Message::Binary(_) | Message::Text(_)) && socket.send(message).await.is_err() {
                    break;
                }
            }
        })
    }
    let app = axum::Router::new().route("/", axum::routing::get(upgrade));
    ready(addr);
    // Nagle off, as every other system here has it.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await.expect("serve");
}

async fn jsonrpsee(listener: tokio::net::TcpListener) {
    let std_listener = listener.into_std().expect("listener");
    // Its default cap of 100 connections would refuse the idle measurement.
    let config = jsonrpsee::server::ServerConfig::builder().max_connections(100_000).build();
    let server =
        jsonrpsee::server::Server::builder().set_config(config).build_from_tcp(std_listener).expect("jsonrpsee");
    let mut module = jsonrpsee::RpcModule::new(());
    module.register_method("echo", |params, _, _| params.one::<Value>()).expect("register");
    ready(server.local_addr().expect("addr"));
    let handle = server.start(module);
    handle.stopped().await;
}

async fn socketioxide(listener: tokio::net::TcpListener, addr: SocketAddr) {
    use socketioxide::extract::{AckSender, Data, SocketRef};
    let (layer, io) = socketioxide::SocketIo::new_layer();
    io.ns("/", async |socket: SocketRef| {
        socket.on("echo", async |Data::<Value>(data), ack: AckSender| {
            let _ = ack.send(&data);
        });
        socket.on("join", async |socket: SocketRef, Data::<String>(room)| {
            socket.join(room);
        });
        socket.on("publish", async |io: socketioxide::SocketIo, Data::<Value>(data)| {
            let _ = io.to("room").emit("event", &data).await;
        });
    });
    let app = axum::Router::new().layer(layer);
    ready(addr);
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await.expect("serve");
}

async fn webmesh(system: System, listener: tokio::net::TcpListener, addr: SocketAddr) {
    drop(listener);
    let router = webmesh::Router::new()
        .on("/echo", |data: Value| async move { data })
        .publish("/fanout", || async {})
        .publish("/guarded/{room}", || async {})
        // The topic of the publish-cost measurement.
        .publish("/news/{x}", || async {})
        // Checked for each wildcard subscriber, once per topic.
        .subscribe("/guarded/{room}", |conn: webmesh::Connection| async move {
            if conn.id() == 0 {
                Err(webmesh::CallError::new("forbidden", "never"))
            } else {
                Ok(())
            }
        });
    let mut builder = webmesh::Server::builder().registered_handlers(false).router(router).addr(addr.to_string());
    if system == System::WebmeshLargeRaw {
        builder = builder.compression_threshold(usize::MAX);
    }
    if system == System::WebmeshScaling {
        // Room for the 100,000 unrelated wildcards, from a few connections.
        builder = builder.max_subscriptions_per_connection(1_000_000).max_subscriptions(1_000_000);
    }
    let server = builder.bind().await.expect("bind");
    ready(server.local_addr());
    server.serve().await.expect("serve");
}
