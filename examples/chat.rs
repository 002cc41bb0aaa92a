//! Chat rooms: path parameters, joins authorised by a subscribe handler,
//! messages published to the room.
//!
//! ```sh
//! cargo run --example chat
//! # another terminal: watch the lobby
//! cargo run -p webmesh --features cli --bin webmesh -- subscribe ws://127.0.0.1:4269 /rooms/lobby
//! # a third one: say something there
//! cargo run -p webmesh --features cli --bin webmesh -- call ws://127.0.0.1:4269 /rooms/lobby/say '{"from": "ada", "text": "hi"}'
//! ```
//!
//! The room `vip` needs a login first: `call .../login '"ada"'` on the same
//! connection, which is what the demo client (`--demo`) does.

use serde::{Deserialize, Serialize};
use webmesh::extract::Path;
use webmesh::{CallError, Connection, Hub};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Message {
    from: String,
    text: String,
}

/// The name a connection logged in with.
#[derive(Clone)]
struct User(String);

#[webmesh::on("/login")]
async fn login(conn: Connection, name: String) -> Result<(), CallError> {
    if name.trim().is_empty() {
        return Err(CallError::new("bad_name", "a name cannot be empty"));
    }
    conn.insert_extension(User(name));
    Ok(())
}

/// Who may join a room: anyone, except `vip`, which needs a login.
#[webmesh::subscribe("/rooms/{room}")]
async fn join(conn: Connection, Path(room): Path<String>) -> Result<(), CallError> {
    if room == "vip" && conn.extension::<User>().is_none() {
        return Err(CallError::new("forbidden", "the vip room needs a login: call /login first"));
    }
    Ok(())
}

/// Says something in a room; answers how many connections heard it.
#[webmesh::on("/rooms/{room}/say")]
async fn say(hub: Hub, conn: Connection, Path(room): Path<String>, message: Message) -> Result<usize, webmesh::Error> {
    // A logged-in user cannot speak under another name.
    let from = conn.extension::<User>().map_or(message.from, |user| user.0);
    hub.publish(&format!("/rooms/{room}"), &Message { from, text: message.text })
}

#[tokio::main]
async fn main() -> Result<(), webmesh::Error> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let server = webmesh::Server::builder().bind().await?;
    if std::env::args().any(|a| a == "--demo") {
        tokio::spawn(demo(format!("ws://127.0.0.1:{}", server.local_addr().port())));
    }
    server.serve().await
}

/// Two users: one watches the lobby, the other joins the vip room after logging in.
async fn demo(url: String) -> Result<(), webmesh::Error> {
    let ada = webmesh::Client::connect(&url).await?;
    let bob = webmesh::Client::connect(&url).await?;
    let mut lobby = ada.subscribe::<Message>("/rooms/lobby").await?;
    if let Err(e) = bob.subscribe::<Message>("/rooms/vip").await {
        println!("bob, not logged in: {e}");
    }
    bob.call::<()>("/login", "bob").await?;
    let _vip = bob.subscribe::<Message>("/rooms/vip").await?;
    let heard: usize = bob.call("/rooms/lobby/say", &Message { from: "mallory".into(), text: "hello".into() }).await?;
    println!("{heard} connection(s) heard bob");
    if let Some(Ok(event)) = lobby.recv().await {
        println!("ada got on {}: {:?}", event.topic, event.data);
    }
    Ok(())
}
