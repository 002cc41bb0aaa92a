use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use axum::http::Extensions;
use serde::Serialize;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::DisconnectReason;
use crate::memory::{Account, Charge, Direction};
use crate::protocol::{close_code, Compression, Envelope, Frame, WireFormat};
use crate::pubsub::{EventQueue, Grants, LagPolicy, Pushed};
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
    /// Bumped when the extensions change: wildcard deliveries authorised
    /// before are checked again.
    extensions_changed: AtomicU64,
    /// Events from subscriptions, waiting for the writer.
    events: EventQueue,
    /// Each guarded topic's authorisation, for wildcard subscriptions; made
    /// on first use, as most connections never need it.
    grants: OnceLock<Box<Grants>>,
    /// The bytes held for this connection.
    account: Arc<Account>,
    /// Why the connection must end, once something decided it must; the
    /// account's `ending` wakes the session.
    end: OnceLock<Box<Ending>>,
    /// Tells the writer to drop what waits and close at once, with this frame.
    hurry: Notify,
    hurry_close: OnceLock<Box<Option<(u16, String)>>>,
    /// SUBSCRIBEs whose handler runs, by subscription id, with the number of
    /// the message that asked: an UNSUBSCRIBE meanwhile cancels them.
    // Boxed: one pointer for the connections that never subscribe, not the
    // 48 bytes of an empty map.
    #[allow(clippy::box_collection)]
    subscribing: Mutex<Option<Box<HashMap<u64, u64>>>>,
    /// Set, under the hub's lock, once the connection's subscriptions are
    /// removed: a subscription made later would never be.
    unsubscribed_all: AtomicBool,
    /// Set for a link from another node of a mesh, authenticated as one:
    /// its subscriptions carry that node's interest (they skip subscribe
    /// handlers and per-connection limits), and events relayed from other
    /// nodes are not sent to it again.
    /// 0: not a link; 1: a link; 2: a link admitted with the mesh's secret,
    /// which may have more calls under way.
    relay: AtomicU8,
    /// Counts the frames the writer wrote: a peer that takes what is written
    /// is alive, and a write that takes frames makes progress.
    written: AtomicU64,
    /// When the writer started the write it is in (milliseconds since
    /// `EPOCH`, plus one), or 0.
    writing_since: AtomicU64,
}

/// The start of the writers' clock.
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Why the server ends a connection, and the close frame to send.
#[derive(Debug, Clone)]
pub(crate) struct Ending {
    pub(crate) reason: DisconnectReason,
    pub(crate) close: Option<(u16, String)>,
}

/// What the session's writer sends.
///
/// Kept to one pointer wide: tokio's channel allocates room for 32 of these
/// per connection up front, which idle connections pay for.
pub(crate) enum Outbound {
    /// A reply or push, with the bytes it holds on the connection's account.
    Frame(Box<(Frame, Charge)>),
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
        account: Arc<Account>,
    ) -> Self {
        let inner = Inner {
            id,
            peer,
            outbound,
            format: Mutex::new(format),
            compression,
            extensions: Mutex::new(Extensions::new()),
            extensions_changed: AtomicU64::new(0),
            events: EventQueue::new(event_queue, account.clone()),
            grants: OnceLock::new(),
            account,
            end: OnceLock::new(),
            hurry: Notify::new(),
            hurry_close: OnceLock::new(),
            subscribing: Mutex::default(),
            unsubscribed_all: AtomicBool::new(false),
            relay: AtomicU8::new(0),
            written: AtomicU64::new(0),
            writing_since: AtomicU64::new(0),
        };
        Self { inner: Arc::new(inner) }
    }

    /// A connection to no one, whose events wait in its queue: for the hub's
    /// own tests and benchmarks, and the caller of a mesh's local calls.
    #[cfg(any(test, feature = "__internals"))]
    pub(crate) fn detached(id: u64, event_queue: usize) -> Self {
        Callers::new().caller(id, event_queue)
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
    /// [`Error::Closed`] once the client is gone. A client that does not
    /// read what it is sent is closed once more than
    /// [`ServerBuilder::connection_memory`](crate::ServerBuilder::connection_memory)
    /// bytes wait for it (a slow consumer), and this fails then too.
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
    ///
    /// Changing the extensions makes the server ask the subscribe handlers
    /// again which topics this connection's wildcard subscriptions may
    /// receive: a login can open topics, a logout close them.
    pub fn insert_extension<T: Clone + Send + Sync + 'static>(&self, value: T) -> Option<T> {
        let previous = self.extensions().insert(value);
        self.inner.extensions_changed.fetch_add(1, Ordering::AcqRel);
        previous
    }

    /// A clone of the value of type `T` stored on the connection.
    pub fn extension<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.extensions().get::<T>().cloned()
    }

    /// Removes and returns the value of type `T` stored on the connection.
    pub fn remove_extension<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        let removed = self.extensions().remove::<T>();
        if removed.is_some() {
            self.inner.extensions_changed.fetch_add(1, Ordering::AcqRel);
        }
        removed
    }

    /// How many times the extensions changed.
    pub(crate) fn extensions_version(&self) -> u64 {
        self.inner.extensions_changed.load(Ordering::Acquire)
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
        // Closing to free memory: it takes no more.
        if self.inner.account.is_shed() {
            self.inner.events.count_missed(subs);
            return Pushed::DroppedNewest;
        }
        let pushed = self.inner.events.push(frame, subs, lag);
        if pushed == Pushed::Overflow {
            self.end_too_slow("a subscriber too slow for its lag policy".into());
        }
        pushed
    }

    pub(crate) fn events(&self) -> &EventQueue {
        &self.inner.events
    }

    pub(crate) fn grants(&self) -> &Grants {
        self.inner.grants.get_or_init(Box::default)
    }

    pub(crate) fn account(&self) -> &Arc<Account> {
        &self.inner.account
    }

    /// Asks the session to end the connection, with this reason and close
    /// frame; the first request wins.
    pub(crate) fn end(&self, reason: DisconnectReason, close: Option<(u16, String)>) {
        let close = close.map(|(code, message)| (code, close_code::reason(&message)));
        if self.inner.end.set(Box::new(Ending { reason, close })).is_ok() {
            self.inner.account.ending.notify_one();
        }
    }

    /// Ends a connection that does not take what it is sent (code 1008).
    pub(crate) fn end_too_slow(&self, message: String) {
        self.end(DisconnectReason::TooSlow(message.clone()), Some((close_code::POLICY, message)));
    }

    /// Why the connection must end, if something decided it must.
    pub(crate) fn ended(&self) -> Option<Ending> {
        self.inner.end.get().map(|ending| (**ending).clone())
    }

    /// Tells the writer to drop what waits and send `close`, if any, at once:
    /// for a peer that does not read, or that holds too much.
    pub(crate) fn hurry(&self, close: Option<(u16, String)>) {
        let _ = self.inner.hurry_close.set(Box::new(close));
        self.inner.hurry.notify_one();
    }

    /// Completes when the writer must hurry, with the close frame to send.
    pub(crate) async fn hurried(&self) -> Option<(u16, String)> {
        self.inner.hurry.notified().await;
        self.inner.hurry_close.get().and_then(|close| (**close).clone())
    }

    /// Remembers that subscription `id` is being made by message number `seq`.
    pub(crate) fn subscribing(&self, id: u64, seq: u64) {
        self.lock_subscribing().get_or_insert_with(Box::default).insert(id, seq);
    }

    /// If message `seq` may still make subscription `id` (no UNSUBSCRIBE
    /// came meanwhile), runs `register` under the lock an UNSUBSCRIBE takes.
    pub(crate) fn finish_subscribing<R>(&self, id: u64, seq: u64, register: impl FnOnce() -> R) -> Option<R> {
        let mut subscribing = self.lock_subscribing();
        let waiting = subscribing.as_mut().filter(|w| w.get(&id) == Some(&seq))?;
        waiting.remove(&id);
        Some(register())
    }

    /// Cancels a subscription being made, and runs `remove` (the hub's
    /// unsubscribe) under the same lock.
    pub(crate) fn unsubscribing(&self, id: u64, remove: impl FnOnce()) {
        let mut subscribing = self.lock_subscribing();
        if let Some(waiting) = subscribing.as_mut() {
            waiting.remove(&id);
        }
        remove();
    }

    #[allow(clippy::box_collection)]
    fn lock_subscribing(&self) -> std::sync::MutexGuard<'_, Option<Box<HashMap<u64, u64>>>> {
        self.inner.subscribing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the connection's subscriptions as removed; called by the hub
    /// under its lock.
    pub(crate) fn mark_unsubscribed_all(&self) {
        self.inner.unsubscribed_all.store(true, Ordering::Release);
    }

    /// Whether the hub removed the connection; read under its lock.
    pub(crate) fn is_unsubscribed_all(&self) -> bool {
        self.inner.unsubscribed_all.load(Ordering::Acquire)
    }

    /// Marks the connection as a link from another node of a mesh,
    /// `vouched` for by the mesh's secret; done by the mesh's admission,
    /// before the connection reads anything.
    pub(crate) fn mark_relay(&self, vouched: bool) {
        self.inner.relay.store(1 + u8::from(vouched), Ordering::Release);
    }

    /// Whether the connection is a link from another node of a mesh.
    pub(crate) fn is_relay(&self) -> bool {
        self.inner.relay.load(Ordering::Acquire) != 0
    }

    /// Whether the connection is a link admitted with the mesh's secret.
    pub(crate) fn is_vouched_relay(&self) -> bool {
        self.inner.relay.load(Ordering::Acquire) == 2
    }

    /// The writer wrote a reply, push or event.
    pub(crate) fn wrote(&self) {
        self.inner.written.fetch_add(1, Ordering::Relaxed);
    }

    /// How many replies, pushes and events the writer wrote.
    pub(crate) fn writes(&self) -> u64 {
        self.inner.written.load(Ordering::Relaxed)
    }

    /// The writer starts a write.
    pub(crate) fn writing(&self) {
        let since = EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1;
        self.inner.writing_since.store(since, Ordering::Relaxed);
    }

    /// The writer finished it.
    pub(crate) fn written(&self) {
        self.inner.writing_since.store(0, Ordering::Relaxed);
    }

    /// How long the write under way has taken.
    pub(crate) fn writing_for(&self) -> std::time::Duration {
        match self.inner.writing_since.load(Ordering::Relaxed) {
            0 => std::time::Duration::ZERO,
            since => {
                let elapsed = EPOCH.get_or_init(Instant::now).elapsed();
                elapsed.saturating_sub(std::time::Duration::from_millis(since - 1))
            }
        }
    }

    /// Queues a ping unless the queue is full (then the peer is busy anyway).
    pub(crate) fn try_ping(&self) {
        let _ = self.inner.outbound.try_send(Outbound::Ping);
    }

    /// Queues a reply or push, waiting while the queue is full.
    ///
    /// The frame's bytes are charged to the connection at once. If other
    /// replies or pushes already wait and together they pass the connection's
    /// limit, the client is not reading what it asked for: it is closed as a
    /// slow consumer, as nats-server does past `max_pending`. Events do not
    /// count here: their lag policy bounds them.
    pub(crate) async fn send(&self, frame: Frame) -> Result<(), Error> {
        let account = &self.inner.account;
        if account.is_shed() {
            return Err(Error::Closed(None));
        }
        let waiting = account.held_in(Direction::Outgoing);
        if waiting > 0 && !account.has_room(Direction::Outgoing, frame.len()) {
            let message = format!(
                "a slow consumer: {} bytes wait to be written to it, more than the limit of {}",
                waiting + frame.len(),
                account.limit()
            );
            self.end_too_slow(message);
            return Err(Error::Closed(None));
        }
        let charge = account.charge(Direction::Outgoing, frame.len());
        let item = Outbound::Frame(Box::new((frame, charge)));
        self.inner.outbound.send(item).await.map_err(|_| Error::Closed(None))
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

/// What the detached connections of one owner share (a mesh's callers, one
/// per call it runs for another node): a queue no one reads, closed, and an
/// account of unlimited memory. Each is made once, not per connection.
pub(crate) struct Callers {
    outbound: mpsc::Sender<Outbound>,
    account: Arc<crate::memory::Account>,
}

impl Callers {
    pub(crate) fn new() -> Self {
        let (outbound, _) = mpsc::channel(1);
        let account = crate::memory::MemoryBudget::new(usize::MAX).open(0, usize::MAX);
        Self { outbound, account }
    }

    /// A connection to no one, whose events wait in its queue.
    pub(crate) fn caller(&self, id: u64, event_queue: usize) -> Connection {
        Connection::new(
            id,
            None,
            self.outbound.clone(),
            WireFormat::MsgPack,
            Compression::default(),
            event_queue,
            self.account.clone(),
        )
    }
}
