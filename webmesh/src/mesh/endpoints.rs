//! The mesh's side of the server: who is admitted as a node, the mesh's
//! own routes, and the forwarding of calls this node does not serve.

use std::sync::{Arc, Weak};

use serde::Serialize;

use super::members::Target;
use super::messages::{
    Answered, Forward, Goodbye, Hello, FORWARD, GOODBYE, HELLO, NODES, NODE_HEADER, RESERVED, SECRET_HEADER, WILL_CLAIM,
};
use super::wills::Claim;
use super::{Dial, MeshInner, NodeState};
use crate::extract::CallParts;
use crate::handler::BoxedHandler;
use crate::protocol::value_len;
use crate::server::admission::{Admit, Authenticate};
use crate::{AuthError, CallError, Connection, Error, Handshake, IntoCallError, Payload, Reply, Router};

/// Admits a link from a node of the mesh (with the secret, when the mesh
/// has one) as a relay; anyone else goes through `user`, the server's own
/// authentication, if any.
pub(crate) fn admission(secret: Option<String>, user: Option<Authenticate>) -> Authenticate {
    let secret: Option<Arc<str>> = secret.map(Into::into);
    Arc::new(move |handshake: Handshake| {
        let secret = secret.clone();
        let user = user.clone();
        Box::pin(async move {
            if let Some(node) = handshake.header(NODE_HEADER) {
                let node = LinkFrom(node.to_owned());
                let admitted = match (&secret, handshake.header(SECRET_HEADER)) {
                    (None, _) => true,
                    (Some(secret), Some(given)) => same(secret.as_bytes(), given.as_bytes()),
                    (Some(_), None) => false,
                };
                if !admitted {
                    return Err(AuthError::forbidden("not a node of this mesh: wrong or missing mesh secret"));
                }
                let vouched = secret.is_some();
                let admit: Admit = Box::new(move |conn: &Connection| {
                    conn.mark_relay(vouched);
                    conn.insert_extension(node);
                });
                return Ok(admit);
            }
            match user {
                Some(user) => user(handshake).await,
                None => Ok(Box::new(|_: &Connection| {}) as Admit),
            }
        })
    })
}

/// The id a link's node gave in its upgrade request.
#[derive(Clone)]
struct LinkFrom(String);

/// Compares secrets in a time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The mesh's own routes.
pub(crate) fn routes(mesh: Weak<MeshInner>) -> Router {
    let (hello, goodbye, nodes, forward, claims) = (mesh.clone(), mesh.clone(), mesh.clone(), mesh.clone(), mesh);
    Router::new()
        .on(HELLO, move |conn: Connection, hello_: Hello| welcome(&hello, &conn, hello_))
        .on(GOODBYE, move |conn: Connection, bye: Goodbye| farewell(&goodbye, &conn, bye))
        .on(WILL_CLAIM, move |conn: Connection, claim: Claim| will_claimed(&claims, &conn, claim))
        .on(NODES, move || nodes.upgrade().map(|mesh| mesh.members.snapshot()).unwrap_or_default())
        .on(FORWARD, move |conn: Connection, call: Forward| {
            let mesh = forward.clone();
            async move {
                match mesh.upgrade() {
                    Some(mesh) => serve_forwarded(&mesh, &conn, call).await,
                    None => Reply::error(CallError::not_found(&call.path)),
                }
            }
        })
        .publish(&format!("{RESERVED}{{*rest}}"), || {
            Err::<(), _>(CallError::new(
                CallError::FORBIDDEN,
                "topics under /_mesh/ are the mesh's: clients may subscribe, not publish",
            ))
        })
}

fn only_nodes(conn: &Connection) -> Result<(), CallError> {
    match conn.is_relay() {
        true => Ok(()),
        false => Err(CallError::new(CallError::FORBIDDEN, "only nodes of the mesh may send this")),
    }
}

fn welcome(mesh: &Weak<MeshInner>, conn: &Connection, hello: Hello) -> Result<Hello, CallError> {
    only_nodes(conn)?;
    let mesh = mesh.upgrade().ok_or_else(|| CallError::internal("the mesh is shutting down"))?;
    if conn.extension::<LinkFrom>().is_some_and(|LinkFrom(id)| *id == hello.node.id) {
        mesh.members.revive(&hello.node.id);
    }
    // The newcomer's own link is dialled back, and the members it knows.
    mesh.dial(&hello.node.url, Dial::Learned);
    for url in &hello.members {
        mesh.dial(url, Dial::Learned);
    }
    Ok(Hello { node: mesh.members.own(), members: mesh.members.up_urls() })
}

/// A node leaves: it is `left` at once, so that no new call goes to it,
/// and its link ends when it closes, once the calls under way on it are
/// answered (the link sees it `left` then, and stops dialling it).
fn farewell(mesh: &Weak<MeshInner>, conn: &Connection, bye: Goodbye) -> Result<(), CallError> {
    only_nodes(conn)?;
    if conn.extension::<LinkFrom>().is_none_or(|LinkFrom(id)| id != bye.id) {
        return Err(CallError::new(CallError::FORBIDDEN, "a node says goodbye for itself only"));
    }
    if let Some(mesh) = mesh.upgrade() {
        if mesh.members.set_state(&bye.id, NodeState::Left) {
            mesh.heir_gone(&bye.id);
        }
    }
    Ok(())
}

/// A node publishes the will of a node that died: this one does not.
fn will_claimed(mesh: &Weak<MeshInner>, conn: &Connection, claim: Claim) -> Result<(), CallError> {
    only_nodes(conn)?;
    let Some(LinkFrom(by)) = conn.extension::<LinkFrom>() else {
        return Err(CallError::new(CallError::FORBIDDEN, "only nodes of the mesh may send this"));
    };
    match mesh.upgrade() {
        Some(mesh) => mesh.will_claimed(&claim.of, &by),
        None => Ok(()),
    }
}

/// Runs a call another node forwarded over a link, as its caller.
async fn serve_forwarded(mesh: &MeshInner, conn: &Connection, call: Forward) -> Reply {
    if let Err(e) = only_nodes(conn) {
        return Reply::error(e);
    }
    mesh.run_forwarded(call).await
}

impl MeshInner {
    /// Runs a call another node forwarded, as its caller: with the
    /// identity it carries, if this mesh forwards identities.
    pub(crate) async fn run_forwarded(&self, call: Forward) -> Reply {
        match super::to_payload(&call.data) {
            Ok(payload) => self.run_called(call.path, call.identity, payload).await,
            Err(e) => Reply::error(CallError::internal(e.to_string())),
        }
    }

    /// Runs a call another node forwarded: `data` on `path`, with the
    /// caller's `identity` when the mesh forwards them.
    pub(crate) async fn run_called(&self, path: String, identity: Option<rmpv::Value>, data: Payload) -> Reply {
        let mesh = self;
        let caller = mesh.caller();
        if let Some(identity) = identity {
            let Some(codec) = &mesh.identity else {
                return Reply::error(CallError::new(
                    CallError::BAD_REQUEST,
                    "this node does not take forwarded identities",
                ));
            };
            if let Err(e) = (codec.insert)(&caller, identity) {
                return Reply::error(CallError::new(CallError::BAD_REQUEST, format!("the forwarded identity: {e}")));
            }
        }
        match mesh.call_here(caller, &path, data).await {
            Some(reply) => reply,
            None => Reply::error(CallError::not_found(&path)),
        }
    }
}

/// The not-found handler of a node that forwards: a client's call for a
/// path this node does not serve goes to a node that does, once. It takes
/// the client's data as it came: over NATS, MessagePack goes on as it is.
pub(crate) fn forwarder(mesh: Weak<MeshInner>) -> BoxedHandler {
    BoxedHandler::from_fn(move |parts: CallParts, payload: Payload| {
        let mesh = mesh.clone();
        Box::pin(async move {
            // Over NATS, the data goes on as it came if it decodes as it is
            // (else it is decoded, and a bad one answered as a handler
            // taking a value would).
            let over_nats = mesh.upgrade().is_some_and(|mesh| mesh.over_nats());
            let encoded =
                payload.as_msgpack().filter(|_| over_nats).and_then(|bytes| Some(bytes.slice(..value_len(bytes)?)));
            let data = match encoded {
                Some(encoded) => Data::Encoded(encoded),
                None => match payload.deserialize::<rmpv::Value>() {
                    Ok(value) => Data::Value(value),
                    Err(rejection) => return Reply::error(IntoCallError::into_call_error(rejection)),
                },
            };
            match mesh.upgrade() {
                // A node's link never has its calls forwarded again: one hop.
                Some(mesh) if !parts.connection.is_relay() => {
                    forward(&mesh, &parts.connection, &parts.path, data).await
                }
                _ => Reply::error(CallError::not_found(&parts.path)),
            }
        })
    })
}

/// A client's data, to forward.
enum Data {
    /// One MessagePack value, as the client sent it.
    Encoded(bytes::Bytes),
    Value(rmpv::Value),
}

async fn forward(mesh: &MeshInner, conn: &Connection, path: &str, data: Data) -> Reply {
    let identity = mesh.identity.as_ref().and_then(|codec| (codec.read)(conn));
    #[cfg(feature = "nats")]
    if let (Some(nats), Data::Encoded(data)) = (mesh.nats.get(), &data) {
        let answer = match nats.forward_encoded(path, identity.as_ref(), data).await {
            Ok(answer) => answer,
            Err(e) => return sent_error(e, path),
        };
        if let Some(value) = super::nats::answered_value(&answer) {
            return Reply::encoded(value);
        }
        return match super::nats::read_answered::<rmpv::Value>(&answer) {
            Ok(answered) => answered_reply(answered),
            Err(e) => sent_error(e, path),
        };
    }
    let data = match data {
        Data::Value(value) => value,
        Data::Encoded(bytes) => match Payload::msgpack(bytes).deserialize::<rmpv::Value>() {
            Ok(value) => value,
            Err(rejection) => return Reply::error(IntoCallError::into_call_error(rejection)),
        },
    };
    let call = Forward { path: path.to_owned(), data, identity };
    let path = &call.path;
    #[cfg(feature = "nats")]
    let sent = match mesh.nats.get() {
        Some(nats) => nats.forward(&call).await,
        None => over_links(mesh, &call).await,
    };
    #[cfg(not(feature = "nats"))]
    let sent = over_links(mesh, &call).await;
    match sent {
        Ok(answered) => answered_reply(answered),
        Err(e) => sent_error(e, path),
    }
}

/// The reply to a forwarded call's client: what the node that ran it
/// answered, its errors as they came.
fn answered_reply(answered: Answered) -> Reply {
    match answered {
        Ok(value) => Reply::value(value),
        Err(error) => Reply::error(error),
    }
}

/// The answer to a call that could not be forwarded, or whose forwarding failed.
fn sent_error(e: Error, path: &str) -> Reply {
    match e {
        Error::NoRoute { .. } => Reply::error(CallError::not_found(path)),
        // Over NATS's largest message or subject, or the link's message.
        Error::TooLarge { size, limit } => Reply::error(CallError::new(
            CallError::TOO_LARGE,
            format!(
                "the call does not fit what the mesh carries to the node serving `{path}` \
                 ({size} bytes, at most {limit}); it was not sent"
            ),
        )),
        e if e.was_not_sent() => {
            Reply::error(CallError::new("unavailable", format!("no node serving `{path}` could be reached: {e}")))
        }
        e => Reply::error(call_error(e, path)),
    }
}

/// Forwards `call` to one of the other nodes that serve its path, taking turns.
async fn over_links(mesh: &MeshInner, call: &Forward) -> Result<Answered, Error> {
    let targets = mesh.members.serving(&call.path, true);
    mesh.in_turns(targets, &call.path, |target| async move {
        match target {
            Target::Remote { peer, legacy, .. } => peer.forward(call, legacy).await,
            // Not listed: only other nodes serve forwarded calls.
            Target::Local => Err(Error::NoRoute { path: call.path.clone() }),
        }
    })
    .await
}

/// The error a forwarded call's caller sees for what the link answered.
fn call_error(error: Error, path: &str) -> CallError {
    match error {
        Error::Handler(error) => error,
        Error::NotFound { .. } => CallError::not_found(path),
        Error::BadPayload { message, .. } => CallError::new(CallError::BAD_PAYLOAD, message),
        Error::Timeout(after) => {
            CallError::new("timeout", format!("the node serving `{path}` did not answer within {after:?}"))
        }
        other => CallError::new("unavailable", format!("the node serving `{path}`: {other}")),
    }
}

/// How a mesh carries the identity the server's authentication gave a
/// client to the node its call is forwarded to.
pub(crate) struct IdentityCodec {
    pub(crate) read: Box<ReadIdentity>,
    pub(crate) insert: Box<InsertIdentity>,
}

type ReadIdentity = dyn Fn(&Connection) -> Option<rmpv::Value> + Send + Sync;
type InsertIdentity = dyn Fn(&Connection, rmpv::Value) -> Result<(), String> + Send + Sync;

impl IdentityCodec {
    pub(crate) fn of<I>() -> Self
    where
        I: Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
    {
        Self {
            read: Box::new(|conn| {
                let crate::extract::Authenticated(identity) = conn.extension::<crate::extract::Authenticated<I>>()?;
                rmpv::ext::to_value(identity).ok()
            }),
            insert: Box::new(|conn, value| {
                let identity: I = rmpv::ext::from_value(value).map_err(|e| e.to_string())?;
                conn.insert_extension(crate::extract::Authenticated(identity));
                Ok(())
            }),
        }
    }
}
