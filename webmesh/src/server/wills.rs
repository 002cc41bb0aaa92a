//! Last wills: what a client asks its server to publish if its connection
//! ends without a clean close (PROTOCOL.md, "Last will").
//!
//! A will is *live* while its connection is open. When the connection ends
//! with a close frame of code 1000 (or of none) it is discarded; when the server shuts
//! down it is discarded too (the client did not fail, and re-sends it where
//! it reconnects). Otherwise it is published at once, or, with a delay, it
//! is *pending*: a WILL from a new connection of the same session (the
//! client came back) cancels it; else it is published when the delay ends.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};
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
const OVERHEAD: usize = 640;

/// How many returns of sessions wait for a mesh to tell the other nodes;
/// past it the oldest are not told (a will may then be published though its
/// client came back to another node).
const RETURNS_QUEUE: usize = 1024;

/// The first number of the wills taken in from other nodes, apart from
/// connections' ids.
#[cfg(feature = "nats")]
const ADOPTED: u64 = 1 << 63;

/// The error code of a WILL from a connection that a newer one of the same
/// session replaced.
pub(crate) const SUPERSEDED: &str = "superseded";

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
    /// Wakes the timer: a pending will was added.
    wake: Arc<Notify>,
    /// Cancelled at shutdown, or when the server is dropped: the timer ends.
    closed: CancellationToken,
    /// Counts the changes of the wills held, for a mesh that keeps a copy.
    changes: watch::Sender<u64>,
    /// The sessions whose client came back (a WILL of theirs arrived), for
    /// a mesh to tell the other nodes.
    returns: tokio::sync::broadcast::Sender<String>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

#[derive(Default)]
struct State {
    /// Each connection that sent a WILL: its will in force, if any.
    slots: HashMap<u64, Slot>,
    /// The connection holding each session's will in force.
    sessions: HashMap<String, u64>,
    /// Wills of connections that ended, waiting out their delay.
    pending: HashMap<Key, Pending>,
    /// When each pending will is due, by its number.
    deadlines: BTreeMap<(Instant, u64), Key>,
    pending_bytes: usize,
    /// Numbers the pending wills, so that a deadline is only its own will's.
    next_pending: u64,
    /// Whether the timer task runs.
    timer: bool,
    /// Set at shutdown: nothing is kept pending any more.
    closed: bool,
}

/// What a connection's WILLs left.
#[derive(Default)]
struct Slot {
    will: Option<Will>,
    /// The number of the connection's latest WILL applied: an earlier one
    /// whose authorisation finished later changes nothing.
    seq: u64,
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
    /// Its bytes, charged to its connection while it is in force.
    bytes: usize,
    charge: Option<Charge>,
}

struct Pending {
    will: Will,
    number: u64,
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    due: Instant,
}

/// A will this server holds, as a mesh keeps a copy of it elsewhere, for
/// another node to publish if this one dies (the mesh over NATS does).
#[cfg(feature = "nats")]
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct HeldWill {
    pub(crate) topic: String,
    pub(crate) data: rmpv::Value,
    pub(crate) session: Option<String>,
    /// Its connection ended: it waits out its delay.
    pub(crate) pending: bool,
    /// Its delay; for a pending will, what was left of it when taken.
    pub(crate) delay_ms: u64,
}

impl Wills {
    pub(crate) fn new(hub: Hub, max_delay: Duration, pending_memory: usize) -> Self {
        let inner = Inner {
            state: Mutex::new(State::default()),
            hub,
            max_delay,
            pending_memory,
            published: AtomicU64::new(0),
            wake: Arc::new(Notify::new()),
            closed: CancellationToken::new(),
            changes: watch::Sender::new(0),
            returns: tokio::sync::broadcast::Sender::new(RETURNS_QUEUE),
        };
        Self { inner: Arc::new(inner) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes each time the wills held change.
    #[cfg(feature = "nats")]
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    fn changed(&self) {
        self.inner.changes.send_modify(|n| *n += 1);
    }

    /// The sessions whose client came back, as they do.
    #[cfg(feature = "nats")]
    pub(crate) fn returns(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.inner.returns.subscribe()
    }

    /// Takes in the will of a client of another node, which died: pending
    /// for `due_in`, then published, unless its session comes back first.
    #[cfg(feature = "nats")]
    pub(crate) fn adopt(&self, held: HeldWill, due_in: Duration) {
        let bytes = held.topic.len()
            + held.session.as_ref().map_or(0, String::len)
            + rmp_serde::to_vec(&held.data).map_or(0, |data| data.len())
            + OVERHEAD;
        let will = Will {
            topic: held.topic,
            data: held.data,
            delay: Duration::from_millis(held.delay_ms),
            session: held.session,
            bytes,
            charge: None,
        };
        let state = self.state();
        if will.session.as_ref().is_some_and(|session| state.sessions.contains_key(session)) {
            // Its client is back here: its will in force replaces this one.
            return;
        }
        let room = state.pending_bytes + will.bytes <= self.inner.pending_memory;
        if due_in.is_zero() || state.closed || !room {
            drop(state);
            self.publish(&will, &DisconnectReason::Gone);
            return;
        }
        let key = will.session.clone().map(Key::Session).unwrap_or(Key::Connection(ADOPTED + state.next_pending + 1));
        self.hold(state, key, will, due_in);
    }

    /// Drops every will held, in force or pending, as if published: the
    /// mesh took this node for dead, and another published them.
    #[cfg(feature = "nats")]
    pub(crate) fn spend_all(&self) {
        let mut state = self.state();
        for slot in state.slots.values_mut() {
            slot.will = None;
        }
        state.sessions.clear();
        state.pending.clear();
        state.deadlines.clear();
        state.pending_bytes = 0;
        drop(state);
        self.changed();
    }

    /// The wills held now: those in force, and those waiting out their delay.
    #[cfg(feature = "nats")]
    pub(crate) fn held(&self) -> Vec<HeldWill> {
        let state = self.state();
        let now = Instant::now();
        let held = |will: &Will, pending: bool, delay: Duration| HeldWill {
            topic: will.topic.clone(),
            data: will.data.clone(),
            session: will.session.clone(),
            pending,
            delay_ms: millis(delay),
        };
        let live = state.slots.values().filter_map(|slot| slot.will.as_ref()).map(|will| held(will, false, will.delay));
        let pending = state.pending.values().map(|p| held(&p.will, true, p.due.saturating_duration_since(now)));
        live.chain(pending).collect()
    }

    /// How many connections have a will in force.
    pub(crate) fn live(&self) -> usize {
        self.state().slots.values().filter(|slot| slot.will.is_some()).count()
    }

    /// How many wills were published.
    pub(crate) fn published(&self) -> u64 {
        self.inner.published.load(Ordering::Relaxed)
    }

    /// How many wills wait out their delay.
    pub(crate) fn pending(&self) -> usize {
        self.state().pending.len()
    }

    /// The bytes of connection `id`'s will in force.
    fn bytes_of(&self, id: u64) -> usize {
        self.state().slots.get(&id).and_then(|slot| slot.will.as_ref()).map_or(0, |will| will.bytes)
    }

    /// A WILL of `session` came: the client is back, and the will its
    /// earlier connection left pending is cancelled, whatever becomes of
    /// this WILL.
    pub(crate) fn client_is_back(&self, session: &str) {
        let mut state = self.state();
        if let Some(pending) = state.pending.remove(&Key::Session(session.to_owned())) {
            state.pending_bytes -= pending.will.bytes;
            tracing::debug!(session, topic = pending.will.topic, "a will was cancelled: its client came back");
            drop(state);
            self.changed();
        }
    }

    /// Applies WILL number `seq` of `conn`: puts `will` in force, or
    /// withdraws the connection's will (`None`).
    fn install(&self, conn: &Connection, seq: u64, will: Option<Will>, session: Option<&str>) -> Result<(), CallError> {
        let mut state = self.state();
        // Checked under this lock, which `ended` takes after the flag is
        // set: a will installed now is seen by `ended`.
        if conn.is_unsubscribed_all() {
            return Err(CallError::new(CallError::BAD_REQUEST, "the connection ended before its will was in force"));
        }
        let id = conn.id();
        if let Some(session) = session {
            // Connection ids grow: a newer connection of the session holds
            // its will, and this one is the client's past.
            if state.sessions.get(session).is_some_and(|holder| *holder > id) {
                let message = "a newer connection of this session holds its will";
                return Err(CallError::new(SUPERSEDED, message));
            }
        }
        let slot = state.slots.entry(id).or_default();
        if seq < slot.seq {
            // A later WILL of this connection was applied already: as if
            // this one had been, then replaced.
            return Ok(());
        }
        slot.seq = seq;
        let old = slot.will.take();
        if let Some(old) = old {
            forget_session(&mut state, old.session.as_deref(), id);
        }
        if let Some(session) = session {
            // The session's will on an older connection, not yet seen to
            // end: the client is back, and that will is replaced (or
            // withdrawn) by this one.
            if let Some(older) = state.sessions.remove(session) {
                if let Some(slot) = state.slots.get_mut(&older) {
                    slot.will = None;
                }
            }
        }
        if let Some(will) = will {
            if let Some(session) = &will.session {
                state.sessions.insert(session.clone(), id);
            }
            state.slots.entry(id).or_default().will = Some(will);
        }
        drop(state);
        self.changed();
        Ok(())
    }

    /// Connection `conn` ended for `reason`: its will is discarded,
    /// published, or kept for its delay.
    pub(crate) fn ended(&self, conn: &Connection, reason: &DisconnectReason) {
        let mut state = self.state();
        let Some(mut will) = state.slots.remove(&conn.id()).and_then(|slot| slot.will) else { return };
        forget_session(&mut state, will.session.as_deref(), conn.id());
        // Whatever becomes of it, it is no longer in force.
        self.changed();
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
        let delay = will.delay;
        self.hold(state, key, will, delay);
    }

    /// Keeps `will` pending under `key` for `due_in`, replacing the one
    /// kept under it, and wakes the timer (starting it if need be).
    fn hold(&self, mut state: std::sync::MutexGuard<'_, State>, key: Key, will: Will, due_in: Duration) {
        state.next_pending += 1;
        let number = state.next_pending;
        let due = Instant::now() + due_in;
        state.deadlines.insert((due, number), key.clone());
        state.pending_bytes += will.bytes;
        if let Some(earlier) = state.pending.insert(key, Pending { will, number, due }) {
            state.pending_bytes -= earlier.will.bytes;
        }
        if !std::mem::replace(&mut state.timer, true) {
            tokio::spawn(timer(Arc::downgrade(&self.inner), self.inner.wake.clone(), self.inner.closed.clone()));
        }
        drop(state);
        self.changed();
        self.inner.wake.notify_one();
    }

    /// Takes the pending wills due by `now`.
    fn due(&self, now: Instant) -> Vec<Will> {
        let mut state = self.state();
        let mut due = Vec::new();
        while let Some(entry) = state.deadlines.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((_, number), key) = entry.remove_entry();
            // Cancelled, or replaced by a later will of the session: not this one's.
            if state.pending.get(&key).is_some_and(|p| p.number == number) {
                let pending = state.pending.remove(&key).expect("just seen");
                state.pending_bytes -= pending.will.bytes;
                due.push(pending.will);
            }
        }
        if !due.is_empty() {
            drop(state);
            self.changed();
        }
        due
    }

    /// When the next pending will is due.
    fn next_deadline(&self) -> Option<Instant> {
        self.state().deadlines.first_key_value().map(|((deadline, _), _)| *deadline)
    }

    /// The server shuts down: the wills waiting out their delay belong to
    /// clients that are gone, and are published now.
    pub(crate) fn flush(&self) {
        let pending: Vec<Will> = {
            let mut state = self.state();
            state.closed = true;
            state.pending_bytes = 0;
            state.deadlines.clear();
            self.inner.closed.cancel();
            state.pending.drain().map(|(_, p)| p.will).collect()
        };
        self.changed();
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

/// Publishes the pending wills as they fall due: one task for all of them,
/// holding the registry only while it works, and ending with it.
async fn timer(wills: Weak<Inner>, wake: Arc<Notify>, closed: CancellationToken) {
    loop {
        let Some(inner) = wills.upgrade() else { return };
        let registry = Wills { inner };
        for will in registry.due(Instant::now()) {
            registry.publish(&will, &DisconnectReason::Gone);
        }
        let next = registry.next_deadline();
        drop(registry);
        let sleep = async {
            match next {
                Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {}
            () = wake.notified() => {}
            () = closed.cancelled() => return,
        }
    }
}

/// Drops the record that `id` holds `session`'s will, if it still does.
fn forget_session(state: &mut State, session: Option<&str>, id: u64) {
    if let Some(session) = session {
        if state.sessions.get(session) == Some(&id) {
            state.sessions.remove(session);
        }
    }
}

/// Answers WILL number `seq` of its connection: sets, replaces or (without
/// a topic) withdraws the connection's will, once authorised like a
/// publication to its topic.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn will(
    shared: Arc<Shared>,
    conn: Connection,
    format: WireFormat,
    id: u64,
    seq: u64,
    session: Option<String>,
    topic: Option<String>,
    delay_ms: u64,
    payload: Payload,
) {
    let result = accept_will(&shared, &conn, seq, session, topic, delay_ms, payload).await;
    if let Err(error) = &result {
        tracing::debug!(%error, "will refused");
    }
    answer(&conn, &format, id, result).await;
}

async fn accept_will(
    shared: &Arc<Shared>,
    conn: &Connection,
    seq: u64,
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
    if let Some(session) = &session {
        wills.client_is_back(session);
        // Nobody listens outside a mesh over NATS.
        let _ = wills.inner.returns.send(session.clone());
    }
    let Some(topic) = topic else {
        return wills.install(conn, seq, None, session.as_deref());
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
    // subscriptions are; it replaces the will in force, whose bytes go.
    let account = conn.account();
    if !account.has_room(Direction::Subscriptions, bytes.saturating_sub(wills.bytes_of(conn.id()))) {
        let message =
            format!("the will would take {bytes} bytes, more than its connection may hold (connection_memory)");
        return Err(CallError::new(CallError::LIMIT, message));
    }
    let charge = Some(account.charge(Direction::Subscriptions, bytes));
    let will = Will { topic, data, delay, session: session.clone(), bytes, charge };
    wills.install(conn, seq, Some(will), session.as_deref())
}

#[cfg(feature = "nats")]
fn millis(delay: Duration) -> u64 {
    u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
}
