//! How this node reaches another: the one seam between the mesh's behaviour
//! (which node to call, whom to tell) and its transports, a direct link or
//! NATS.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::messages::{Answered, Forward, FORWARD};
use crate::{Client, Error};

/// The way to one other node.
#[derive(Clone)]
pub(crate) enum Peer {
    /// This node's client of the other node's server.
    Link(Client),
    /// The other node's own subject on NATS.
    #[cfg(feature = "nats")]
    Nats(super::nats::Inbox),
}

impl Peer {
    /// Calls `path` on the node.
    pub(crate) async fn call<R: DeserializeOwned>(
        &self,
        path: &str,
        data: &(impl Serialize + ?Sized),
    ) -> Result<R, Error> {
        match self {
            Peer::Link(client) => client.call(path, data).await,
            #[cfg(feature = "nats")]
            Peer::Nats(inbox) => inbox.call(path, data).await,
        }
    }

    /// Emits to `path` on the node.
    pub(crate) async fn emit(&self, path: &str, data: &(impl Serialize + ?Sized)) -> Result<(), Error> {
        match self {
            Peer::Link(client) => client.emit(path, data).await,
            #[cfg(feature = "nats")]
            Peer::Nats(inbox) => inbox.emit(path, data).await,
        }
    }

    /// Runs a call a client of this node made on the node, with the
    /// caller's identity; a legacy (0.1.2) node gets the plain call.
    pub(crate) async fn forward(&self, call: &Forward, legacy: bool) -> Result<Answered, Error> {
        match self {
            // 0.1.2 answers errors without a code or data.
            Peer::Link(client) if legacy => client.call(&call.path, &call.data).await.map(Ok),
            Peer::Link(client) => match client.call_answered(FORWARD, call).await? {
                Ok(payload) => Ok(Ok(payload.deserialize()?)),
                Err(error) => Ok(Err(error)),
            },
            #[cfg(feature = "nats")]
            Peer::Nats(inbox) => inbox.forward(call).await,
        }
    }

    /// The link, for what only links carry (introductions, goodbyes, claims).
    pub(crate) fn link(&self) -> Option<&Client> {
        match self {
            Peer::Link(client) => Some(client),
            #[cfg(feature = "nats")]
            Peer::Nats(_) => None,
        }
    }
}
