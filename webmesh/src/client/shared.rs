//! State shared by a client's handles and its connection task.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::outbox::Outbox;
use super::push::{Push, PushStream, Pushes};
use super::reconnect::{ConnectionState, WhileDisconnected};
use super::subscription::Subscriptions;
use super::will::Testament;
use crate::protocol::{Compression, DecodeError, Frame, Incoming, WireFormat};
use crate::{CallError, Payload};

pub(crate) type PushHandler = Arc<dyn Fn(&Push) + Send + Sync>;

/// Why a call got no reply.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The server answered with an error.
    Reply(CallError),
    /// The connection dropped after the call was sent: it may have run;
    /// or before, under [`WhileDisconnected::FailFast`]: it did not.
    Lost(String),
}

pub(crate) type Answer = Result<Payload, Failure>;

/// A call waiting for its answer, and whether it was written to a socket.
struct Waiter {
    answer: oneshot::Sender<Answer>,
    sent: bool,
}

/// The id under which the legacy call under way (0.1.2 has no ids) waits
/// and is queued; native ids start at 1.
pub(crate) const LEGACY_ID: u64 = 0;

pub(crate) struct ClientShared {
    pub(crate) format: WireFormat,
    pub(crate) compression: Compression,
    pub(crate) timeout: Duration,
    pub(crate) max_message_size: usize,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, Waiter>>,
    /// Frames waiting to be written.
    pub(crate) outbox: Outbox,
    /// The line of callers waiting for room in the outbox.
    pub(crate) send_turn: tokio::sync::Mutex<()>,
    /// Legacy mode: one call at a time; it waits as [`LEGACY_ID`], and the
    /// next message on its path is its answer.
    pub(crate) legacy_turn: tokio::sync::Mutex<()>,
    legacy_path: Mutex<Option<String>>,
    /// Where the connection stands.
    pub(crate) state: watch::Sender<ConnectionState>,
    pub(crate) while_disconnected: WhileDisconnected,
    pub(crate) push_handlers: RwLock<HashMap<String, Vec<PushHandler>>>,
    /// The open [`Pushes`] streams.
    push_streams: Mutex<Vec<PushStream>>,
    /// The bytes each stream of received data may hold unread.
    pub(crate) receive_buffer: usize,
    closed: Mutex<Option<Option<String>>>,
    pub(crate) subscriptions: Subscriptions,
    /// Asks the connection task to end: [`Client::close`](super::Client::close),
    /// or the last handle dropped. The reason is in `stop_reason`.
    pub(crate) stop: CancellationToken,
    stop_reason: Mutex<Option<String>>,
    /// Counts connections: the first is 1, each reconnection adds one.
    pub(crate) generation: watch::Sender<u64>,
    /// Legacy mode: the generation of a connection to drop, because a late
    /// answer on it could be taken for another call's.
    recycle: watch::Sender<u64>,
    /// Becomes `true` when the connection task has ended.
    pub(crate) finished: watch::Sender<bool>,
    /// A mesh link's: takes every event once, instead of the subscriptions.
    pub(crate) relay: std::sync::OnceLock<Arc<dyn Relay>>,
    /// The client's last will, re-sent on each new connection.
    pub(crate) testament: Testament,
    /// The id of the WILL sent first on the latest connection.
    pub(crate) restored_will: AtomicU64,
    /// The close code of a close the client asked for: 1000, or 1011 when
    /// the last handle went in a panic (the will is then published).
    pub(crate) stop_code: std::sync::atomic::AtomicU16,
}

/// Where a mesh link's client hands what its subscriptions receive: each
/// event once (the server sends one per topic, whichever subscriptions
/// match), and each loss.
pub(crate) trait Relay: Send + Sync {
    /// An event arrived.
    fn event(&self, topic: String, payload: Payload);
    /// Events of `pattern` (of every subscription if `None`) were lost:
    /// `missed` of them, when known.
    fn lost(&self, pattern: Option<&str>, missed: Option<u64>);
}

impl ClientShared {
    pub(crate) fn new(
        format: WireFormat,
        compression: Compression,
        timeout: Duration,
        max_message_size: usize,
        outbound_buffer: usize,
        receive_buffer: usize,
        while_disconnected: WhileDisconnected,
    ) -> Self {
        Self {
            format,
            compression,
            timeout,
            max_message_size,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            outbox: Outbox::new(outbound_buffer),
            send_turn: tokio::sync::Mutex::new(()),
            legacy_turn: tokio::sync::Mutex::new(()),
            legacy_path: Mutex::new(None),
            state: watch::Sender::new(ConnectionState::Connected),
            while_disconnected,
            push_handlers: RwLock::new(HashMap::new()),
            push_streams: Mutex::new(Vec::new()),
            receive_buffer,
            closed: Mutex::new(None),
            subscriptions: Subscriptions::new(receive_buffer),
            stop: CancellationToken::new(),
            stop_reason: Mutex::new(None),
            generation: watch::Sender::new(1),
            recycle: watch::Sender::new(0),
            finished: watch::Sender::new(false),
            relay: std::sync::OnceLock::new(),
            testament: Testament::new(),
            restored_will: AtomicU64::new(0),
            stop_code: std::sync::atomic::AtomicU16::new(crate::protocol::close_code::NORMAL),
        }
    }

    /// The WILL to send first on a new connection, if the client ever had a will.
    pub(crate) fn will_to_restore(&self) -> Option<Frame> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = self.testament.restore(id, &self.format, self.compression)?;
        self.restored_will.store(id, Ordering::Relaxed);
        Some(frame)
    }

    /// Asks the connection task to end, for `reason` (the first one given wins).
    pub(crate) fn request_stop(&self, reason: &str) {
        self.stop_reason.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert_with(|| reason.to_owned());
        self.stop.cancel();
    }

    /// Why the connection task was asked to end.
    pub(crate) fn stop_reason(&self) -> String {
        let reason = self.stop_reason.lock().unwrap_or_else(PoisonError::into_inner).clone();
        reason.unwrap_or_else(|| "closed by the client".to_owned())
    }

    /// Legacy mode: drops the current connection, so that no late answer on
    /// it reaches a later call.
    pub(crate) fn recycle_connection(&self) -> u64 {
        let generation = *self.generation.borrow();
        self.recycle.send_replace(generation);
        generation
    }

    /// Resolves once connection `generation` was asked to be dropped.
    pub(crate) async fn recycled(&self, generation: u64) {
        // The sender lives in `self`, so this ends only when asked.
        let _ = self.recycle.subscribe().wait_for(|asked| *asked >= generation).await;
    }

    /// Registers a call; the reply completes the returned receiver.
    pub(crate) fn register(&self) -> (u64, oneshot::Receiver<Answer>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, rx) = oneshot::channel();
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).insert(id, Waiter { answer, sent: false });
        (id, rx)
    }

    /// Claims call `id` for writing: `false` if its caller gave up on it,
    /// in which case it must not be sent.
    pub(crate) fn claim(&self, id: u64) -> bool {
        match self.pending.lock().unwrap_or_else(PoisonError::into_inner).get_mut(&id) {
            Some(waiter) => {
                waiter.sent = true;
                true
            }
            None => false,
        }
    }

    /// The connection dropped: the calls that were sent fail, since they may
    /// or may not have run. Those not sent yet wait for the next connection,
    /// or fail at once under [`WhileDisconnected::FailFast`].
    pub(crate) fn connection_lost(&self, reason: &str) {
        // First, so that a call that gets into the outbox from now on sees it.
        self.state.send_replace(ConnectionState::Reconnecting { attempt: 1, last_error: Some(reason.to_owned()) });
        let fail_fast = self.while_disconnected == WhileDisconnected::FailFast;
        let lost = format!("the connection dropped while the call was under way ({reason}); it may have run");
        let unsent = format!("the connection dropped ({reason}) before the call was sent; {}", crate::error::NOT_SENT);
        let failed: Vec<Waiter> = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            let ids: Vec<u64> = pending.iter().filter(|(_, w)| w.sent || fail_fast).map(|(id, _)| *id).collect();
            ids.into_iter().filter_map(|id| pending.remove(&id)).collect()
        };
        if fail_fast {
            self.outbox.remove_calls();
        }
        for waiter in failed {
            let message = if waiter.sent { &lost } else { &unsent };
            let _ = waiter.answer.send(Err(Failure::Lost(message.clone())));
        }
    }

    /// The caller of call `id` is done with it: take it out of the outbox if
    /// it was not sent, so that it never is.
    pub(crate) fn forget(&self, id: u64) {
        let waiter = self.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        if waiter.is_some_and(|w| !w.sent) {
            self.outbox.remove(id);
        }
    }

    /// Registers the legacy call to `path`: the next message on it answers.
    pub(crate) fn register_legacy(&self, path: &str) -> oneshot::Receiver<Answer> {
        let (answer, rx) = oneshot::channel();
        *self.legacy_path.lock().unwrap_or_else(PoisonError::into_inner) = Some(path.to_owned());
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).insert(LEGACY_ID, Waiter { answer, sent: false });
        rx
    }

    pub(crate) fn forget_legacy(&self) {
        self.legacy_path.lock().unwrap_or_else(PoisonError::into_inner).take();
        self.forget(LEGACY_ID);
    }

    fn complete(&self, id: u64, result: Result<Payload, CallError>) {
        let waiter = self.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        match (waiter, result) {
            (Some(waiter), result) => {
                let _ = waiter.answer.send(result.map_err(Failure::Reply));
            }
            // A subscription restored after a reconnect, refused this time.
            (None, Err(error)) if self.subscriptions.end(id, error.clone()) => {
                tracing::warn!(id, %error, "a subscription was refused when restored");
            }
            (None, Err(error)) if id == self.restored_will.load(Ordering::Relaxed) => {
                tracing::warn!(%error, "the will was refused when restored; the connection has none");
            }
            (None, _) => tracing::debug!(id, "reply to a call that is no longer waiting"),
        }
    }

    /// Handles one frame from the server. A frame that cannot be decoded
    /// breaks the connection: it may have been an answer, and a call must
    /// not wait its whole timeout for an answer that was thrown away.
    pub(crate) fn receive(&self, frame: Frame) -> Result<(), DecodeError> {
        let format = match &self.format {
            WireFormat::MsgPack | WireFormat::Json => WireFormat::detect(&frame),
            other => Ok(other.clone()),
        };
        let incoming = format.and_then(|f| f.decode(frame, self.max_message_size))?;
        match incoming {
            Incoming::Reply { id, payload } => self.complete(id, Ok(payload)),
            Incoming::Error { id, error } => self.complete(id, Err(error)),
            Incoming::Push { path, payload } => self.push(Push::new(path, payload)),
            Incoming::Legacy { path, payload } => {
                let mut expected = self.legacy_path.lock().unwrap_or_else(PoisonError::into_inner);
                if expected.as_deref() == Some(path.as_str()) {
                    expected.take();
                    drop(expected);
                    self.complete(LEGACY_ID, Ok(payload));
                } else {
                    drop(expected);
                    self.push(Push::new(path, payload));
                }
            }
            Incoming::Event { topic, payload } => match self.relay.get() {
                Some(relay) => relay.event(topic, payload),
                None => self.subscriptions.deliver(&topic, &payload),
            },
            Incoming::Lagged { id, missed } => {
                if let Some(relay) = self.relay.get() {
                    if let Some(pattern) = self.subscriptions.pattern(id) {
                        relay.lost(Some(&pattern), Some(missed).filter(|n| *n != 0));
                    }
                }
                self.subscriptions.lagged(id, missed)
            }
            Incoming::Call { .. }
            | Incoming::Emit { .. }
            | Incoming::Subscribe { .. }
            | Incoming::Unsubscribe { .. }
            | Incoming::Publish { .. }
            | Incoming::Will { .. } => {
                return Err(DecodeError::Envelope("the server sent a message only clients send".into()));
            }
        }
        Ok(())
    }

    fn push(&self, push: Push) {
        let handlers = self.push_handlers.read().unwrap_or_else(PoisonError::into_inner).get(push.path()).cloned();
        for handler in handlers.into_iter().flatten() {
            // A handler is user code: its panic must not end the connection.
            if catch_unwind(AssertUnwindSafe(|| handler(&push))).is_err() {
                tracing::error!(path = push.path(), "a push handler panicked; the push is skipped");
            }
        }
        self.push_streams.lock().unwrap_or_else(PoisonError::into_inner).retain(|stream| stream.offer(&push));
    }

    /// A new stream of the pushes that arrive from now on.
    pub(crate) fn pushes(&self) -> Pushes {
        let (stream, pushes) = Pushes::new(self.receive_buffer);
        let mut streams = self.push_streams.lock().unwrap_or_else(PoisonError::into_inner);
        // A stream made after the close ends at once.
        if self.closed.lock().unwrap_or_else(PoisonError::into_inner).is_none() {
            streams.push(stream);
        }
        pushes
    }

    /// Marks the connection closed and fails every call still waiting.
    pub(crate) fn close(&self, reason: Option<String>) {
        self.closed.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(reason.clone());
        self.stop.cancel();
        self.outbox.close();
        let waiting: Vec<Waiter> =
            self.pending.lock().unwrap_or_else(PoisonError::into_inner).drain().map(|(_, w)| w).collect();
        // Dropping a waiter tells its caller the connection closed.
        drop(waiting);
        // Ends every subscription's stream, and every `Pushes`.
        self.subscriptions.clear();
        self.push_streams.lock().unwrap_or_else(PoisonError::into_inner).clear();
        // Handlers may hold clients (the blocking client's do): let them go.
        self.push_handlers.write().unwrap_or_else(PoisonError::into_inner).clear();
        self.state.send_replace(ConnectionState::Closed);
        self.finished.send_replace(true);
    }

    /// `Some(reason)` once the connection is closed, or asked to close.
    pub(crate) fn closed(&self) -> Option<Option<String>> {
        let closed = self.closed.lock().unwrap_or_else(PoisonError::into_inner).clone();
        closed.or_else(|| self.stop.is_cancelled().then(|| Some(self.stop_reason())))
    }

    /// How many calls wait for an answer, and how many frames to be written.
    #[cfg(test)]
    pub(crate) fn backlog(&self) -> (usize, usize) {
        (self.pending.lock().unwrap_or_else(PoisonError::into_inner).len(), self.outbox.len())
    }
}
