use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::http::Extensions;
use serde::Serialize;
use tokio::sync::{mpsc, Notify};

use crate::protocol::{Compression, Envelope, Frame, WireFormat};
use crate::pubsub::{EventQueue, LagPolicy, Pushed};
use crate::Error;

/// One client's connection, as handlers and hooks see it.
///
/// Cheap to clone; a clone kept after the call (e.g. in a map of online
/// users) can push messages to the client at any time with
/// [`emit`](Self::emit), until the client disconnects.
///
/// ```
/// use webmesh::Connection;
///
/// #[webmesh::on("/watch")]
/// async fn watch(conn: Connection, ticks: u32) {
///     tokio::spawn(async move {
///         for n in 0..ticks {
///             if conn.emit("/tick", &n).await.is_err() {
///                 break; // the client is gone
///             }
///         }
///     });
/// }
/// ```
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    id: u64,
    peer: Option<SocketAddr>,
    outbound: mpsc::Sender<Outbound>,
    /// The format the client last spoke; pushes use it.
    format: Mutex<WireFormat>,
    compression: Compression,
    extensions: Mutex<Extensions>,
    /// Events from subscriptions, waiting for the writer.
    events: EventQueue,
    /// Set when the connection must end (a subscriber too slow for its policy).
    ending: Notify,
}

/// What the session's writer sends.
///
/// Kept to one pointer wide: tokio's channel allocates room for 32 of these
/// per connection up front, which idle connections pay for.
pub(crate) enum Outbound {
    Frame(Box<Frame>),
    Ping,
    Close(Box<(u16, String)>),
}

impl Connection {
    pub(crate) fn new(
        id: u64,
        peer: Option<SocketAddr>,
        outbound: mpsc::Sender<Outbound>,
        format: WireFormat,
        compression: Compression,
        event_queue: usize,
    ) -> Self {
        let inner = Inner {
            id,
            peer,
            outbound,
            format: Mutex::new(format),
            compression,
            extensions: Mutex::new(Extensions::new()),
            events: EventQueue::new(event_queue),
            ending: Notify::new(),
        };
        Self { inner: Arc::new(inner) }
    }

    /// A number unique among this server's connections.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The client's address, if known (it is not when webmesh is mounted in
    /// an axum app served without `into_make_service_with_connect_info`).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.inner.peer
    }

    /// Sends `data` to the client on `path`, unasked, in the format the
    /// client speaks. The client receives it as a push.
    ///
    /// Waits while the connection's outbound queue is full. Fails with
    /// [`Error::Closed`] once the client is gone.
    pub async fn emit<T: Serialize + ?Sized>(&self, path: &str, data: &T) -> Result<(), Error> {
        let frame = self.format().encode(&Envelope::Push { path, data }, self.inner.compression);
        let frame = frame.map_err(|e| Error::Protocol(e.to_string()))?;
        self.send(frame).await
    }

    /// Whether the client is gone.
    pub fn is_closed(&self) -> bool {
        self.inner.outbound.is_closed()
    }

    /// Stores a value on the connection, e.g. the identity established by a
    /// login handler, replacing and returning any previous value of its type.
    pub fn insert_extension<T: Clone + Send + Sync + 'static>(&self, value: T) -> Option<T> {
        self.extensions().insert(value)
    }

    /// A clone of the value of type `T` stored on the connection.
    pub fn extension<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.extensions().get::<T>().cloned()
    }

    /// Removes and returns the value of type `T` stored on the connection.
    pub fn remove_extension<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.extensions().remove::<T>()
    }

    fn extensions(&self) -> std::sync::MutexGuard<'_, Extensions> {
        self.inner.extensions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn format(&self) -> WireFormat {
        self.inner.format.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(crate) fn set_format(&self, format: &WireFormat) {
        let mut current = self.inner.format.lock().unwrap_or_else(PoisonError::into_inner);
        if std::mem::discriminant(&*current) != std::mem::discriminant(format)
            || matches!(format, WireFormat::Legacy(_))
        {
            *current = format.clone();
        }
    }

    pub(crate) fn compression(&self) -> Compression {
        self.inner.compression
    }

    /// Queues an event for subscriptions `subs`; asks the session to end the
    /// connection if the queue is full and the policy says so.
    pub(crate) fn push_event(&self, frame: Frame, subs: &[u64], lag: LagPolicy) -> Pushed {
        let pushed = self.inner.events.push(frame, subs, lag);
        if pushed == Pushed::Overflow {
            self.inner.ending.notify_one();
        }
        pushed
    }

    pub(crate) fn events(&self) -> &EventQueue {
        &self.inner.events
    }

    /// Completes when the connection must end.
    pub(crate) async fn ending(&self) {
        self.inner.ending.notified().await
    }

    /// Queues a ping unless the queue is full (then the peer is busy anyway).
    pub(crate) fn try_ping(&self) {
        let _ = self.inner.outbound.try_send(Outbound::Ping);
    }

    pub(crate) async fn send(&self, frame: Frame) -> Result<(), Error> {
        self.inner.outbound.send(Outbound::Frame(Box::new(frame))).await.map_err(|_| Error::Closed(None))
    }

    /// Queues a close frame; `false` if the queue is full (the peer is not
    /// reading) or the writer is gone.
    pub(crate) fn try_close(&self, code: u16, reason: String) -> bool {
        self.inner.outbound.try_send(Outbound::Close(Box::new((code, reason)))).is_ok()
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection").field("id", &self.inner.id).field("peer", &self.inner.peer).finish()
    }
}
