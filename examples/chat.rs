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
//! The room `vip` needs a login first, to read it or to write into it:
//! `call .../login '"ada"'` on the same connection, which is what the demo
//! client (`--demo`) does. Without a login one speaks as `anonymous`, and a
//! wildcard subscription (`/rooms/*`) hears every room but `vip`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use webmesh::extract::Path;
use webmesh::{CallError, Connection, Hub, State};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Message {
    from: String,
    text: String,
}

/// The name a connection logged in with.
#[derive(Clone)]
struct User(String);

/// The names in use, so that nobody logs in as someone already online.
#[derive(Clone, Default)]
struct Online(Arc<Mutex<HashSet<String>>>);

/// Logs a connection in. A real service would check a password or a token
/// here; the demo only keeps names unique.
#[webmesh::on("/login")]
async fn login(conn: Connection, State(online): State<Online>, name: String) -> Result<(), CallError> {
    let name = name.trim().to_owned();
    if name.is_empty() || name == ANONYMOUS {
        return Err(CallError::new("bad_name", "choose a name, other than `anonymous`"));
    }
    if conn.extension::<User>().is_some() {
        return Err(CallError::new("logged_in", "this connection is logged in already"));
    }
    if !online.0.lock().unwrap().insert(name.clone()) {
        return Err(CallError::new("name_taken", format!("`{name}` is online already")));
    }
    conn.insert_extension(User(name));
    Ok(())
}

/// What those who did not log in are called.
const ANONYMOUS: &str = "anonymous";

/// Who may read a room: anyone, except `vip`, which needs a login. The same
/// rule guards reading (this subscribe handler) and writing (`say`).
fn may_enter(conn: &Connection, room: &str) -> Result<(), CallError> {
    if room == "vip" && conn.extension::<User>().is_none() {
        return Err(CallError::new("forbidden", "the vip room needs a login: call /login first"));
    }
    Ok(())
}

/// Who may join a room. It runs for `/rooms/vip` itself and, for a wildcard
/// subscription such as `/rooms/*`, for each room before its messages are
/// delivered: an anonymous `/rooms/*` hears the lobby, never the vip room.
#[webmesh::subscribe("/rooms/{room}")]
async fn join(conn: Connection, Path(room): Path<String>) -> Result<(), CallError> {
    may_enter(&conn, &room)
}

/// Says something in a room; answers how many connections heard it at once.
///
/// Writing is guarded as reading is: a room one may not read is one one may
/// not write into, or learn how many are inside (the answer). And nobody
/// speaks under another's name: the sender is the login, or `anonymous`.
#[webmesh::on("/rooms/{room}/say")]
async fn say(hub: Hub, conn: Connection, Path(room): Path<String>, message: Message) -> Result<usize, CallError> {
    may_enter(&conn, &room)?;
    let from = conn.extension::<User>().map_or_else(|| ANONYMOUS.to_owned(), |user| user.0);
    hub.publish(&format!("/rooms/{room}"), &Message { from, text: message.text })
        .map_err(|e| CallError::new(CallError::BAD_REQUEST, e.to_string()))
}

#[tokio::main]
async fn main() -> Result<(), webmesh::Error> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let online = Online::default();
    let names = online.clone();
    let server = webmesh::Server::builder()
        .state(online)
        // A name is free again once its connection is gone.
        .on_disconnect(move |conn, _| {
            if let Some(User(name)) = conn.extension::<User>() {
                names.0.lock().unwrap().remove(&name);
            }
        })
        .bind()
        .await?;
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
