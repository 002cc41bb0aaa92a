//! State shared by a client's handles and its connection task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::{broadcast, oneshot, watch, Notify};

use super::push::Push;
use super::reconnect::{ConnectionState, WhileDisconnected};
use super::subscription::Subscriptions;
use crate::protocol::{Compression, Frame, Incoming, WireFormat};
use crate::{CallError, Payload};

pub(crate) type PushHandler = Arc<dyn Fn(&Push) + Send + Sync>;

/// Why a call got no reply.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The server answered with an error.
    Reply(CallError),
    /// The connection dropped after the call was sent: it may have run.
    Lost(String),
}

pub(crate) type Answer = Result<Payload, Failure>;

/// A call waiting for its answer, and whether it was written to a socket.
struct Waiter {
    answer: oneshot::Sender<Answer>,
    sent: bool,
}

/// The id under which legacy calls (which have none) are queued.
pub(crate) const LEGACY_ID: u64 = 0;

pub(crate) struct ClientShared {
    pub(crate) format: WireFormat,
    pub(crate) compression: Compression,
    pub(crate) timeout: Duration,
    max_message_size: usize,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, Waiter>>,
    /// Legacy mode: the one call under way, by path.
    pub(crate) legacy_turn: tokio::sync::Mutex<()>,
    legacy_waiter: Mutex<Option<(String, Waiter)>>,
    /// Where the connection stands.
    pub(crate) state: watch::Sender<ConnectionState>,
    pub(crate) while_disconnected: WhileDisconnected,
    pub(crate) push_handlers: RwLock<HashMap<String, Vec<PushHandler>>>,
    pub(crate) pushes: broadcast::Sender<Push>,
    closed: Mutex<Option<Option<String>>>,
    pub(crate) subscriptions: Subscriptions,
    /// Asks the connection task to close the connection.
    pub(crate) close_requested: Notify,
    /// Becomes `true` when the connection task has ended.
    pub(crate) finished: watch::Sender<bool>,
}

/// How many pushes a [`Pushes`](super::Pushes) stream buffers before it lags.
const PUSH_BUFFER: usize = 1024;

impl ClientShared {
    pub(crate) fn new(
        format: WireFormat,
        compression: Compression,
        timeout: Duration,
        max_message_size: usize,
        while_disconnected: WhileDisconnected,
    ) -> Self {
        Self {
            format,
            compression,
            timeout,
            max_message_size,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            legacy_turn: tokio::sync::Mutex::new(()),
            legacy_waiter: Mutex::new(None),
            state: watch::Sender::new(ConnectionState::Connected),
            while_disconnected,
            push_handlers: RwLock::new(HashMap::new()),
            pushes: broadcast::channel(PUSH_BUFFER).0,
            closed: Mutex::new(None),
            subscriptions: Subscriptions::default(),
            close_requested: Notify::new(),
            finished: watch::Sender::new(false),
        }
    }

    /// Registers a call; the reply completes the returned receiver.
    pub(crate) fn register(&self) -> (u64, oneshot::Receiver<Answer>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, rx) = oneshot::channel();
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).insert(id, Waiter { answer, sent: false });
        (id, rx)
    }

    /// Notes that call `id` was written to the socket.
    pub(crate) fn mark_sent(&self, id: u64) {
        if id == LEGACY_ID {
            if let Some((_, waiter)) = self.legacy_waiter.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
                waiter.sent = true;
            }
        } else if let Some(waiter) = self.pending.lock().unwrap_or_else(PoisonError::into_inner).get_mut(&id) {
            waiter.sent = true;
        }
    }

    /// The connection dropped: the calls that were sent fail, since they may
    /// or may not have run; those not sent yet wait for the next connection.
    pub(crate) fn connection_lost(&self, reason: &str) {
        let message = format!("the connection dropped while the call was under way ({reason}); it may have run");
        let lost: Vec<Waiter> = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            let sent: Vec<u64> = pending.iter().filter(|(_, w)| w.sent).map(|(id, _)| *id).collect();
            sent.into_iter().filter_map(|id| pending.remove(&id)).collect()
        };
        for waiter in lost {
            let _ = waiter.answer.send(Err(Failure::Lost(message.clone())));
        }
        let mut legacy = self.legacy_waiter.lock().unwrap_or_else(PoisonError::into_inner);
        if legacy.as_ref().is_some_and(|(_, w)| w.sent) {
            if let Some((_, waiter)) = legacy.take() {
                let _ = waiter.answer.send(Err(Failure::Lost(message)));
            }
        }
    }

    pub(crate) fn forget(&self, id: u64) {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
    }

    pub(crate) fn register_legacy(&self, path: &str) -> oneshot::Receiver<Answer> {
        let (answer, rx) = oneshot::channel();
        let waiter = Waiter { answer, sent: false };
        *self.legacy_waiter.lock().unwrap_or_else(PoisonError::into_inner) = Some((path.to_owned(), waiter));
        rx
    }

    pub(crate) fn forget_legacy(&self) {
        self.legacy_waiter.lock().unwrap_or_else(PoisonError::into_inner).take();
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
            (None, _) => tracing::debug!(id, "reply to a call that is no longer waiting"),
        }
    }

    /// Handles one frame from the server.
    pub(crate) fn receive(&self, frame: Frame) {
        let format = match &self.format {
            WireFormat::MsgPack | WireFormat::Json => WireFormat::detect(&frame),
            other => Ok(other.clone()),
        };
        let incoming = match format.and_then(|f| f.decode(frame, self.max_message_size)) {
            Ok(incoming) => incoming,
            Err(e) => {
                tracing::warn!("ignoring a message from the server: {e}");
                return;
            }
        };
        match incoming {
            Incoming::Reply { id, payload } => self.complete(id, Ok(payload)),
            Incoming::Error { id, error } => self.complete(id, Err(error)),
            Incoming::Push { path, payload } => self.push(Push::new(path, payload)),
            Incoming::Legacy { path, payload } => {
                let mut waiter = self.legacy_waiter.lock().unwrap_or_else(PoisonError::into_inner);
                match waiter.take() {
                    Some((expected, waiter)) if expected == path => {
                        let _ = waiter.answer.send(Ok(payload));
                    }
                    other => {
                        *waiter = other;
                        drop(waiter);
                        self.push(Push::new(path, payload));
                    }
                }
            }
            Incoming::Event { topic, payload } => self.subscriptions.deliver(&topic, &payload),
            Incoming::Lagged { id, missed } => self.subscriptions.lagged(id, missed),
            Incoming::Call { .. }
            | Incoming::Emit { .. }
            | Incoming::Subscribe { .. }
            | Incoming::Unsubscribe { .. }
            | Incoming::Publish { .. } => {
                tracing::warn!("ignoring a message only clients send");
            }
        }
    }

    fn push(&self, push: Push) {
        let handlers = self.push_handlers.read().unwrap_or_else(PoisonError::into_inner).get(push.path()).cloned();
        for handler in handlers.into_iter().flatten() {
            handler(&push);
        }
        // No receiver is fine: nobody asked for a stream.
        let _ = self.pushes.send(push);
    }

    /// Marks the connection closed and fails every call still waiting.
    pub(crate) fn close(&self, reason: Option<String>) {
        self.closed.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(reason.clone());
        let waiting: Vec<Waiter> =
            self.pending.lock().unwrap_or_else(PoisonError::into_inner).drain().map(|(_, w)| w).collect();
        let legacy = self.legacy_waiter.lock().unwrap_or_else(PoisonError::into_inner).take();
        // Dropping a waiter tells its caller the connection closed.
        drop(waiting);
        drop(legacy);
        // Ends every subscription's stream.
        self.subscriptions.clear();
        self.state.send_replace(ConnectionState::Closed);
        self.finished.send_replace(true);
    }

    /// `Some(reason)` once the connection is closed.
    pub(crate) fn closed(&self) -> Option<Option<String>> {
        self.closed.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}
