use std::sync::Arc;

use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::budget::Budget;
use crate::{Payload, PayloadError};

/// A message the server sent unasked, with [`Connection::emit`](crate::Connection::emit).
#[derive(Debug, Clone)]
pub struct Push {
    path: String,
    payload: Payload,
}

impl Push {
    pub(crate) fn new(path: String, payload: Payload) -> Self {
        Self { path, payload }
    }

    /// The path it was sent on.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Decodes its data.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, PayloadError> {
        self.payload.deserialize()
    }

    /// Its data, still encoded.
    pub fn payload(&self) -> &Payload {
        &self.payload
    }
}

/// The pushes a client receives, from [`Client::pushes`](crate::Client::pushes).
///
/// Each `Pushes` sees every push that arrives after it was created.
///
/// ## Lagging
///
/// A `Pushes` holds up to 1024 pushes, and up to the client's
/// [`receive_buffer`](crate::ClientBuilder::receive_buffer) in bytes, that
/// were not read yet; pushes that arrive beyond that are dropped (and
/// logged) rather than slowing the connection or growing memory.
///
/// ## Closing
///
/// Once the connection is closed, [`next`](Self::next) returns the pushes
/// still buffered, then `None`.
pub struct Pushes {
    receiver: mpsc::Receiver<Push>,
    budget: Arc<Budget>,
}

/// The sending side of one [`Pushes`].
pub(crate) struct PushStream {
    sender: mpsc::Sender<Push>,
    budget: Arc<Budget>,
}

/// How many pushes a [`Pushes`] stream holds unread.
const PUSH_BUFFER: usize = 1024;

impl Pushes {
    pub(crate) fn new(receive_buffer: usize) -> (PushStream, Pushes) {
        let (sender, receiver) = mpsc::channel(PUSH_BUFFER);
        let budget = Arc::new(Budget::new(receive_buffer));
        (PushStream { sender, budget: budget.clone() }, Pushes { receiver, budget })
    }

    /// The next push, or `None` once the connection is closed.
    pub async fn next(&mut self) -> Option<Push> {
        let push = self.receiver.recv().await?;
        self.budget.give_back(push.payload.len());
        Some(push)
    }
}

impl PushStream {
    /// Hands `push` to the stream; `false` once nobody reads it any more.
    pub(crate) fn offer(&self, push: &Push) -> bool {
        if self.sender.is_closed() {
            return false;
        }
        let bytes = push.payload.len();
        if !self.budget.take(bytes) {
            tracing::warn!(path = push.path(), "a push was dropped: its stream is not read in time");
        } else if self.sender.try_send(push.clone()).is_err() {
            self.budget.give_back(bytes);
            tracing::warn!(path = push.path(), "a push was dropped: its stream is not read in time");
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unread_pushes_are_bounded_in_bytes() {
        let (stream, mut pushes) = Pushes::new(64 << 10);
        let push = Push::new("/p".into(), Payload::msgpack(vec![0xc0; 16 << 10].into()));
        for _ in 0..50 {
            assert!(stream.offer(&push));
        }
        drop(stream);
        let mut received = 0;
        while pushes.next().await.is_some() {
            received += 1;
        }
        assert_eq!(received, 4, "64 KiB hold four pushes of 16 KiB");
    }
}
