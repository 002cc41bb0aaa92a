//! Last wills: what a client asks its server to publish if its connection
//! ends without a clean close (PROTOCOL.md, "Last will").
//!
//! A will is *live* while its connection is open. When the connection ends
//! with a close frame of code 1000 (or of none) it is discarded; when the server shuts
//! down it is discarded too (the client did not fail, and re-sends it where
//! it reconnects). Otherwise it is published at once, or, with a delay, it
//! is *pending*: a WILL from a new connection of the same session (the
//! client came back) cancels it; else it is published when the delay ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::dispatch::answer;
use super::{Connection, DisconnectReason, Shared};
use crate::memory::{Charge, Direction};
use crate::protocol::{close_code, WireFormat};
use crate::{CallError, Hub, Payload};

/// The code a server reports for a close frame that carried none.
const NO_CODE: u16 = 1005;

/// What a will costs beyond its bytes: its entry, and for a pending one
/// the task that waits out its delay.
const OVERHEAD: usize = 512;

/// The longest session name a client may give.
pub(crate) const MAX_SESSION_LENGTH: usize = 128;

/// The wills of a server's connections.
#[derive(Clone)]
pub(crate) struct Wills {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    hub: Hub,
    max_delay: Duration,
    /// The bytes pending wills may hold together; past it, a will is
    /// published at once rather than kept.
    pending_memory: usize,
    published: AtomicU64,
    /// Cancelled at shutdown: the timers of pending wills end.
    closed: CancellationToken,
}

#[derive(Default)]
struct State {
    /// The will of each connection that left one, by connection id.
    live: HashMap<u64, Will>,
    /// The connection holding each session's live will.
    sessions: HashMap<String, u64>,
    /// Wills of connections that ended, waiting out their delay.
    pending: HashMap<Key, Pending>,
    pending_bytes: usize,
    /// Numbers the pending wills, so that a timer publishes only its own.
    next_pending: u64,
    /// Set at shutdown: nothing is kept pending any more.
    closed: bool,
}

/// What a pending will is kept under: its session, or its connection when
/// it has none (then nothing can cancel it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Session(String),
    Connection(u64),
}

struct Will {
    topic: String,
    data: rmpv::Value,
    delay: Duration,
    session: Option<String>,
    /// Its bytes, charged to its connection while it is live.
    bytes: usize,
    charge: Option<Charge>,
}

struct Pending {
    will: Will,
    number: u64,
}

impl Wills {
    pub(crate) fn new(hub: Hub, max_delay: Duration, pending_memory: usize) -> Self {
        let state = Mutex::new(State::default());
        Self {
            inner: Arc::new(Inner {
                state,
                hub,
                max_delay,
                pending_memory,
                published: AtomicU64::new(0),
                closed: CancellationToken::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many connections have a will in force.
    pub(crate) fn live(&self) -> usize {
        self.state().live.len()
    }

    /// How many wills were published.
    pub(crate) fn published(&self) -> u64 {
        self.inner.published.load(Ordering::Relaxed)
    }

    /// How many wills wait out their delay.
    pub(crate) fn pending(&self) -> usize {
        self.state().pending.len()
    }

    /// A message of `session` came: the client is back, and the will its
    /// earlier connection left pending is cancelled.
    fn cancel_pending(state: &mut State, session: &str) {
        if let Some(pending) = state.pending.remove(&Key::Session(session.to_owned())) {
            state.pending_bytes -= pending.will.bytes;
            tracing::debug!(session, topic = pending.will.topic, "a will was cancelled: its client came back");
        }
    }

    /// Puts `will` in force for `conn`, replacing its earlier one; `false`
    /// if the connection ended meanwhile (it is not).
    fn install(&self, conn: &Connection, will: Option<Will>, session: Option<&str>) -> bool {
        let mut state = self.state();
        // Checked under this lock, which `ended` takes after the flag is
        // set: a will installed now is seen by `ended`.
        if conn.is_unsubscribed_all() {
            return false;
        }
        if let Some(session) = session {
            Self::cancel_pending(&mut state, session);
        }
        if let Some(old) = state.live.remove(&conn.id()) {
            forget_session(&mut state, old.session.as_deref(), conn.id());
        }
        if let Some(will) = will {
            if let Some(session) = &will.session {
                // A will of the same session on another connection is that
                // client's earlier connection, not yet seen to end: the
                // client is back, so that will is superseded.
                if let Some(earlier) = state.sessions.insert(session.clone(), conn.id()) {
                    if earlier != conn.id() {
                        state.live.remove(&earlier);
                    }
                }
            }
            state.live.insert(conn.id(), will);
        }
        true
    }

    /// Connection `conn` ended for `reason`: its will is discarded,
    /// published, or kept for its delay.
    pub(crate) fn ended(&self, conn: &Connection, reason: &DisconnectReason) {
        let mut state = self.state();
        let Some(mut will) = state.live.remove(&conn.id()) else { return };
        forget_session(&mut state, will.session.as_deref(), conn.id());
        will.charge = None;
        // A close frame of 1000, or without a code (what a browser's
        // `close()` sends), is the client closing on purpose.
        let clean =
            matches!(reason, DisconnectReason::Closed { code, .. } if [close_code::NORMAL, NO_CODE].contains(code));
        if clean || *reason == DisconnectReason::Shutdown {
            tracing::debug!(topic = will.topic, %reason, "a will was discarded");
            return;
        }
        let room = state.pending_bytes + will.bytes <= self.inner.pending_memory;
        if will.delay.is_zero() || state.closed || !room {
            drop(state);
            self.publish(&will, reason);
            return;
        }
        let key = will.session.clone().map(Key::Session).unwrap_or(Key::Connection(conn.id()));
        state.next_pending += 1;
        let number = state.next_pending;
        let delay = will.delay;
        state.pending_bytes += will.bytes;
        if let Some(earlier) = state.pending.insert(key.clone(), Pending { will, number }) {
            state.pending_bytes -= earlier.will.bytes;
        }
        drop(state);
        let wills = self.clone();
        let reason = reason.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                // Published by `flush`.
                () = wills.inner.closed.cancelled() => return,
            }
            let due = {
                let mut state = wills.state();
                match state.pending.get(&key) {
                    Some(pending) if pending.number == number => {
                        let pending = state.pending.remove(&key).expect("just seen");
                        state.pending_bytes -= pending.will.bytes;
                        Some(pending.will)
                    }
                    _ => None,
                }
            };
            if let Some(will) = due {
                wills.publish(&will, &reason);
            }
        });
    }

    /// The server shuts down: the wills waiting out their delay belong to
    /// clients that are gone, and are published now.
    pub(crate) fn flush(&self) {
        let pending: Vec<Will> = {
            let mut state = self.state();
            state.closed = true;
            state.pending_bytes = 0;
            self.inner.closed.cancel();
            state.pending.drain().map(|(_, p)| p.will).collect()
        };
        for will in pending {
            self.publish(&will, &DisconnectReason::Shutdown);
        }
    }

    fn publish(&self, will: &Will, reason: &DisconnectReason) {
        tracing::debug!(topic = will.topic, %reason, "publishing a will");
        self.inner.published.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.inner.hub.publish(&will.topic, &will.data) {
            tracing::warn!(topic = will.topic, "a will could not be published: {e}");
        }
    }
}

/// Drops the record that `id` holds `session`'s live will, if it still does.
fn forget_session(state: &mut State, session: Option<&str>, id: u64) {
    if let Some(session) = session {
        if state.sessions.get(session) == Some(&id) {
            state.sessions.remove(session);
        }
    }
}

/// Answers a WILL: sets, replaces or (without a topic) withdraws the
/// connection's will, once authorised like a publication to its topic.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn will(
    shared: Arc<Shared>,
    conn: Connection,
    format: WireFormat,
    id: u64,
    session: Option<String>,
    topic: Option<String>,
    delay_ms: u64,
    payload: Payload,
) {
    let result = accept_will(&shared, &conn, session, topic, delay_ms, payload).await;
    if let Err(error) = &result {
        tracing::debug!(%error, "will refused");
    }
    answer(&conn, &format, id, result).await;
}

async fn accept_will(
    shared: &Arc<Shared>,
    conn: &Connection,
    session: Option<String>,
    topic: Option<String>,
    delay_ms: u64,
    payload: Payload,
) -> Result<(), CallError> {
    let wills = &shared.wills;
    if session.as_ref().is_some_and(|s| s.is_empty() || s.len() > MAX_SESSION_LENGTH) {
        let message = format!("a will's session must be 1 to {MAX_SESSION_LENGTH} bytes long");
        return Err(CallError::new(CallError::BAD_REQUEST, message));
    }
    let Some(topic) = topic else {
        wills.install(conn, None, session.as_deref());
        return Ok(());
    };
    let delay = Duration::from_millis(delay_ms);
    if delay > wills.inner.max_delay {
        let message = format!(
            "a will's delay may be at most {} ms (max_will_delay); this one is {delay_ms} ms",
            wills.inner.max_delay.as_millis()
        );
        return Err(CallError::new(CallError::LIMIT, message));
    }
    let bytes = topic.len() + session.as_ref().map_or(0, String::len) + payload.weight() + OVERHEAD;
    super::subscriptions::authorise_publication(shared, conn, &topic, payload.clone()).await?;
    // Kept decoded, to be encoded once per format its subscribers speak.
    let data: rmpv::Value = payload.deserialize()?;
    // Held in the server's registry while the connection lives, as its
    // subscriptions are.
    let account = conn.account();
    if !account.has_room(Direction::Subscriptions, bytes) {
        let message =
            format!("the will would take {bytes} bytes, more than its connection may hold (connection_memory)");
        return Err(CallError::new(CallError::LIMIT, message));
    }
    let charge = Some(account.charge(Direction::Subscriptions, bytes));
    let will = Will { topic, data, delay, session: session.clone(), bytes, charge };
    if !wills.install(conn, Some(will), session.as_deref()) {
        return Err(CallError::new(CallError::BAD_REQUEST, "the connection ended before its will was in force"));
    }
    Ok(())
}
