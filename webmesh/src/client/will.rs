//! The client's last will, as the server last accepted it: sent first on
//! every new connection, so that it is in force again and cancels the will
//! the dropped connection left waiting out its delay.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::protocol::{Compression, Envelope, Frame, WireFormat};
use crate::Error;

/// What a client's connections tell their server about its will.
pub(crate) struct Testament {
    state: Mutex<State>,
    /// One WILL under way at a time, so that the will the client keeps is
    /// the one the server applied last.
    pub(crate) turn: tokio::sync::Mutex<()>,
}

struct State {
    /// Names this client across its connections, so that a new one cancels
    /// the will the last one left pending. A secret: whoever knows it can.
    session: String,
    will: Option<Will>,
    delay: Duration,
    /// Whether a will was ever set: from then on every new connection says
    /// what the client's will is (maybe none), to cancel a pending one.
    used: bool,
}

/// A will: published on `topic` with `data`.
#[derive(Debug, Clone)]
pub(crate) struct Will {
    pub(crate) topic: String,
    pub(crate) data: rmpv::Value,
}

impl Will {
    /// A will of `data`, which must serialise.
    pub(crate) fn new(topic: &str, data: &(impl serde::Serialize + ?Sized)) -> Result<Self, Error> {
        let data = rmpv::ext::to_value(data).map_err(|e| Error::Protocol(format!("the will's data: {e}")))?;
        Ok(Self { topic: topic.to_owned(), data })
    }
}

impl Testament {
    pub(crate) fn new() -> Self {
        let state = State { session: new_session(), will: None, delay: Duration::ZERO, used: false };
        Self { state: Mutex::new(state), turn: tokio::sync::Mutex::new(()) }
    }

    /// How long the server is to wait before it publishes the will.
    pub(crate) fn set_delay(&self, delay: Duration) {
        self.state().delay = delay;
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The session and the delay (in milliseconds) a WILL carries.
    pub(crate) fn session_and_delay(&self) -> (String, u64) {
        let state = self.state();
        (state.session.clone(), millis(state.delay))
    }

    /// The server accepted `will` (or its withdrawal).
    pub(crate) fn accepted(&self, will: Option<Will>) {
        let mut state = self.state();
        state.will = will;
        state.used = true;
    }

    /// The WILL to send first on a new connection, as call `id`; `None` if
    /// the client never had a will.
    pub(crate) fn restore(&self, id: u64, format: &WireFormat, compression: Compression) -> Option<Frame> {
        let state = self.state();
        if !state.used {
            return None;
        }
        let envelope = envelope(id, &state.session, state.will.as_ref(), millis(state.delay));
        format.encode(&envelope, compression).ok()
    }
}

/// The WILL that sets `will` (withdraws the will, if `None`), as call `id`.
pub(crate) fn envelope<'a>(
    id: u64,
    session: &'a str,
    will: Option<&'a Will>,
    delay_ms: u64,
) -> Envelope<'a, rmpv::Value> {
    let (topic, data) = match will {
        Some(will) => (Some(will.topic.as_str()), &will.data),
        None => (None, &rmpv::Value::Nil),
    };
    Envelope::Will { id, session: Some(session), topic, delay_ms, data }
}

fn millis(delay: Duration) -> u64 {
    u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
}

/// 128 random bits, from the operating system.
fn new_session() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: the session still names the client; it is only
        // easier to guess.
        bytes = fastrand::u128(..).to_le_bytes();
    }
    hex::encode(bytes)
}
