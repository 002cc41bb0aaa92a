//! State shared by a client's handles and its connection task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::{broadcast, oneshot, watch, Notify};

use super::push::Push;
use super::subscription::Subscriptions;
use crate::protocol::{Compression, Frame, Incoming, WireFormat};
use crate::{CallError, Payload};

pub(crate) type PushHandler = Arc<dyn Fn(&Push) + Send + Sync>;
type Waiter = oneshot::Sender<Result<Payload, CallError>>;

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
            push_handlers: RwLock::new(HashMap::new()),
            pushes: broadcast::channel(PUSH_BUFFER).0,
            closed: Mutex::new(None),
            subscriptions: Subscriptions::default(),
            close_requested: Notify::new(),
            finished: watch::Sender::new(false),
        }
    }

    /// Registers a call; the reply completes the returned receiver.
    pub(crate) fn register(&self) -> (u64, oneshot::Receiver<Result<Payload, CallError>>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).insert(id, tx);
        (id, rx)
    }

    pub(crate) fn forget(&self, id: u64) {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
    }

    pub(crate) fn register_legacy(&self, path: &str) -> oneshot::Receiver<Result<Payload, CallError>> {
        let (tx, rx) = oneshot::channel();
        *self.legacy_waiter.lock().unwrap_or_else(PoisonError::into_inner) = Some((path.to_owned(), tx));
        rx
    }

    pub(crate) fn forget_legacy(&self) {
        self.legacy_waiter.lock().unwrap_or_else(PoisonError::into_inner).take();
    }

    fn complete(&self, id: u64, result: Result<Payload, CallError>) {
        let waiter = self.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        match waiter {
            Some(waiter) => {
                let _ = waiter.send(result);
            }
            None => tracing::debug!(id, "reply to a call that is no longer waiting"),
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
                    Some((expected, tx)) if expected == path => {
                        let _ = tx.send(Ok(payload));
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
        self.finished.send_replace(true);
    }

    /// `Some(reason)` once the connection is closed.
    pub(crate) fn closed(&self) -> Option<Option<String>> {
        self.closed.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}
