use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, watch};

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
/// A `Pushes` holds up to 1024 pushes that were not read yet; when a 1025th
/// arrives the oldest is dropped, and [`next`](Self::next) skips over the
/// gap (logging how many were missed) rather than slowing the connection.
///
/// ## Closing
///
/// Once the connection is closed, [`next`](Self::next) returns the pushes
/// still buffered, then `None`.
pub struct Pushes {
    receiver: broadcast::Receiver<Push>,
    finished: watch::Receiver<bool>,
}

impl Pushes {
    pub(crate) fn new(receiver: broadcast::Receiver<Push>, finished: watch::Receiver<bool>) -> Self {
        Self { receiver, finished }
    }

    /// The next push, or `None` once the connection is closed.
    pub async fn next(&mut self) -> Option<Push> {
        loop {
            let received = tokio::select! {
                biased;
                received = self.receiver.recv() => received,
                _ = self.finished.wait_for(|done| *done) => match self.receiver.try_recv() {
                    Ok(push) => Ok(push),
                    Err(broadcast::error::TryRecvError::Lagged(missed)) => Err(broadcast::error::RecvError::Lagged(missed)),
                    Err(_) => return None,
                },
            };
            match received {
                Ok(push) => return Some(push),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "pushes were dropped because they were not read in time");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
