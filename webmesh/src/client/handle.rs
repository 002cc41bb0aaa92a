use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;

use super::builder::ClientBuilder;
use super::driver::{drive, Link, Socket};
use super::push::{Push, Pushes};
use super::reconnect::{ConnectionState, WhileDisconnected};
use super::shared::{Answer, ClientShared, Failure, LEGACY_ID};
use super::subscription::Subscription;
use super::will::{self, Will};
use crate::deadline;
use crate::protocol::{Envelope, WireFormat};
use crate::{CallError, Error, Payload, SubscribeOptions};

/// What 0.1.2 servers answer for a path without a handler.
const LEGACY_NOT_FOUND: &str = "Path not found";

/// A connection to a webmesh server.
///
/// Cheap to clone: clones share one WebSocket connection, on which calls from
/// any number of tasks are multiplexed and answered in any order. The
/// connection closes when the last clone is dropped.
///
/// ```no_run
/// # async fn demo() -> Result<(), webmesh::Error> {
/// let client = webmesh::Client::connect("ws://127.0.0.1:4269").await?;
/// let reply: serde_json::Value = client.call("/echo", &serde_json::json!({"blop": 56})).await?;
/// client.emit("/inc", &()).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    shared: Arc<ClientShared>,
    /// Shared by every clone: when the last one goes, the connection closes.
    _handle: Arc<Handle>,
}

/// Tells the connection task when the last handle is dropped.
struct Handle(Arc<ClientShared>);

impl Drop for Handle {
    fn drop(&mut self) {
        // Dropped by a panic's unwinding: the client failed, and its will
        // is for that. Otherwise the client is done with the connection.
        if std::thread::panicking() {
            self.0.stop_code.store(crate::protocol::close_code::INTERNAL, std::sync::atomic::Ordering::Relaxed);
            self.0.request_stop("the client was dropped in a panic");
        } else {
            self.0.request_stop("the client was dropped");
        }
    }
}

impl Client {
    /// Connects to `url` (`ws://host:port`) with the default settings:
    /// MessagePack, a 30 s call timeout.
    pub async fn connect(url: &str) -> Result<Client, Error> {
        Self::builder(url).connect().await
    }

    /// Starts configuring a client for `url`.
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(url)
    }

    pub(crate) fn start(socket: Socket, shared: Arc<ClientShared>, link: Link) -> Self {
        tokio::spawn(drive(socket, shared.clone(), link));
        Self { _handle: Arc::new(Handle(shared.clone())), shared }
    }

    /// Where the connection stands now.
    pub fn state(&self) -> ConnectionState {
        self.shared.state.borrow().clone()
    }

    /// The connection's state changes, as a [`tokio::sync::watch`] receiver:
    /// `changed().await` wakes on each.
    ///
    /// ```no_run
    /// # async fn demo(client: webmesh::Client) {
    /// let mut states = client.state_changes();
    /// while states.changed().await.is_ok() {
    ///     println!("now {:?}", *states.borrow());
    /// }
    /// # }
    /// ```
    pub fn state_changes(&self) -> tokio::sync::watch::Receiver<ConnectionState> {
        self.shared.state.subscribe()
    }

    /// Calls `path` with `data` and waits for the reply, up to the client's timeout.
    pub async fn call<R: DeserializeOwned>(&self, path: &str, data: &(impl Serialize + ?Sized)) -> Result<R, Error> {
        self.call_with_timeout(path, data, self.shared.timeout).await
    }

    /// Calls `path` with `data` and waits for the reply, up to `timeout`
    /// (`Duration::MAX`: no limit).
    ///
    /// On timeout the call is abandoned: if it was not sent yet it never
    /// will be; if it was, a late reply is dropped and the handler may have
    /// run. A message larger than
    /// [`max_message_size`](ClientBuilder::max_message_size) is refused
    /// here with [`Error::TooLarge`], and the connection is unharmed.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the call as a timeout does.
    pub async fn call_with_timeout<R: DeserializeOwned>(
        &self,
        path: &str,
        data: &(impl Serialize + ?Sized),
        timeout: Duration,
    ) -> Result<R, Error> {
        Ok(self.call_for_payload(path, data, timeout).await?.deserialize()?)
    }

    /// A call whose reply is left encoded.
    pub(crate) async fn call_for_payload(
        &self,
        path: &str,
        data: &(impl Serialize + ?Sized),
        timeout: Duration,
    ) -> Result<Payload, Error> {
        match &self.shared.format {
            WireFormat::Legacy(_) => self.legacy_call(path, data, timeout).await,
            _ => self.native_call(path, data, timeout).await,
        }
    }

    /// The client's default call timeout.
    pub(crate) fn default_timeout(&self) -> Duration {
        self.shared.timeout
    }

    async fn native_call(
        &self,
        path: &str,
        data: &(impl Serialize + ?Sized),
        timeout: Duration,
    ) -> Result<Payload, Error> {
        let (id, reply) = self.shared.register();
        self.request(id, reply, path, &Envelope::Call { id, path, data }, timeout).await
    }

    /// A native call whose answer comes as the server gave it: its data
    /// left encoded, or its error with code, message and data (a mesh
    /// passes both on to the client whose call it forwarded).
    pub(crate) async fn call_answered(
        &self,
        path: &str,
        data: &(impl Serialize + ?Sized),
    ) -> Result<Result<Payload, CallError>, Error> {
        let (id, reply) = self.shared.register();
        let envelope = Envelope::Call { id, path, data };
        self.request_answered(id, reply, &envelope, self.shared.timeout).await
    }

    /// Sends a message registered as `id` and waits for its answer.
    pub(crate) async fn request<T: Serialize + ?Sized>(
        &self,
        id: u64,
        reply: oneshot::Receiver<Answer>,
        path: &str,
        envelope: &Envelope<'_, T>,
        timeout: Duration,
    ) -> Result<Payload, Error> {
        self.request_answered(id, reply, envelope, timeout).await?.map_err(|error| Error::from_reply(path, error))
    }

    async fn request_answered<T: Serialize + ?Sized>(
        &self,
        id: u64,
        reply: oneshot::Receiver<Answer>,
        envelope: &Envelope<'_, T>,
        timeout: Duration,
    ) -> Result<Result<Payload, CallError>, Error> {
        // Forget the call however this future ends: reply, timeout or drop.
        let _forget = Forget { shared: &self.shared, id };
        let deadline = deadline::after(timeout);
        deadline::until(deadline, self.send_with_id(Some(id), envelope))
            .await
            .map_err(|_| Error::Timeout(timeout))??;
        answered(timeout, deadline::until(deadline, reply).await).map_err(|e| self.or_closed(e))
    }

    /// Subscribes to the topics `pattern` matches; see [`Subscription`].
    ///
    /// A pattern is a path whose segments may be `*` or `{name}` (any one
    /// segment) and, last, `{*name}` (the rest of the topic); PROTOCOL.md has
    /// a table of examples. The server may refuse, giving a reason:
    ///
    /// ```no_run
    /// # async fn demo(client: webmesh::Client) -> Result<(), webmesh::Error> {
    /// let mut lobby = client.subscribe::<String>("/chat/lobby").await?;
    /// while let Some(event) = lobby.recv().await {
    ///     match event {
    ///         Ok(event) => println!("{}: {}", event.topic, event.data),
    ///         Err(e) => eprintln!("{e}"), // e.g. events lost to lag
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe<T>(&self, pattern: &str) -> Result<Subscription<T>, Error> {
        self.subscribe_with(pattern, SubscribeOptions::default()).await
    }

    /// Subscribes with options, such as the [`LagPolicy`](crate::LagPolicy).
    pub async fn subscribe_with<T>(&self, pattern: &str, options: SubscribeOptions) -> Result<Subscription<T>, Error> {
        if let WireFormat::Legacy(_) = self.shared.format {
            return Err(Error::Config("webmesh 0.1.2 has no subscriptions".into()));
        }
        Subscription::start(self, pattern, options).await
    }

    /// Publishes `data` to `topic`, waiting until the server accepted it.
    ///
    /// Servers let clients publish only where a `#[webmesh::publish]`
    /// handler allows it; elsewhere this fails with the code `forbidden`.
    pub async fn publish(&self, topic: &str, data: &(impl Serialize + ?Sized)) -> Result<(), Error> {
        if let WireFormat::Legacy(_) = self.shared.format {
            return Err(Error::Config("webmesh 0.1.2 has no subscriptions".into()));
        }
        let (id, reply) = self.shared.register();
        self.request(id, reply, topic, &Envelope::Publish { id, path: topic, data }, self.shared.timeout).await?;
        Ok(())
    }

    /// Replaces the client's last will (see [`ClientBuilder::will`]): from
    /// now on the server publishes `data` on `topic` if the connection ends
    /// without a clean close. The client's [`will_delay`](ClientBuilder::will_delay)
    /// applies. Waits until the server accepted it; a refusal (the topic is
    /// not one this client may publish on) leaves the earlier will in force.
    ///
    /// ```no_run
    /// # async fn demo(client: webmesh::Client) -> Result<(), webmesh::Error> {
    /// // A testament: what to say if this worker dies, as its job changes.
    /// client.set_will("/workers/7/gone", &serde_json::json!({"job": 42})).await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_will(&self, topic: &str, data: &(impl Serialize + ?Sized)) -> Result<(), Error> {
        self.put_will(Some(Will::new(topic, data)?)).await
    }

    /// Withdraws the client's last will: nothing is published when the
    /// connection ends, however it ends.
    pub async fn clear_will(&self) -> Result<(), Error> {
        self.put_will(None).await
    }

    /// Sends a WILL setting (or withdrawing) the will, and keeps it to send
    /// again on reconnection once the server accepted it.
    pub(crate) async fn put_will(&self, will: Option<Will>) -> Result<(), Error> {
        if let WireFormat::Legacy(_) = self.shared.format {
            return Err(Error::Config("webmesh 0.1.2 servers have no last wills".into()));
        }
        let _turn = self.shared.testament.turn.lock().await;
        let (session, delay_ms) = self.shared.testament.session_and_delay();
        let (id, reply) = self.shared.register();
        let envelope = will::envelope(id, &session, will.as_ref(), delay_ms);
        let topic = will.as_ref().map_or("", |will| will.topic.as_str());
        self.request(id, reply, topic, &envelope, self.shared.timeout).await?;
        self.shared.testament.accepted(will);
        Ok(())
    }

    pub(crate) fn shared(&self) -> &Arc<ClientShared> {
        &self.shared
    }

    /// Queues a control message (an unsubscribe) at once, whatever the room.
    pub(crate) fn send_control<T: Serialize + ?Sized>(&self, envelope: &Envelope<'_, T>) {
        if let Ok(frame) = self.shared.format.encode(envelope, self.shared.compression) {
            self.shared.outbox.push_control(frame);
        }
    }

    async fn legacy_call(
        &self,
        path: &str,
        data: &(impl Serialize + ?Sized),
        timeout: Duration,
    ) -> Result<Payload, Error> {
        let deadline = deadline::after(timeout);
        // 0.1.2 has no call ids: one call at a time.
        let _turn =
            deadline::until(deadline, self.shared.legacy_turn.lock()).await.map_err(|_| Error::Timeout(timeout))?;
        let reply = self.shared.register_legacy(path);
        let call = Envelope::Call { id: LEGACY_ID, path, data };
        let result = match deadline::until(deadline, self.send_with_id(Some(LEGACY_ID), &call)).await {
            Ok(Ok(())) => deadline::until(deadline, reply).await,
            Ok(Err(e)) => {
                self.shared.forget_legacy();
                return Err(e);
            }
            Err(deadline::Elapsed) => Err(deadline::Elapsed),
        };
        self.shared.forget_legacy();
        if result.is_err() {
            // Its answer may still come, and would look like the next call's:
            // drop this connection before the next call may start.
            self.recycle_after_legacy_timeout().await;
        }
        let payload = answer(path, timeout, result).map_err(|e| self.or_closed(e))?;
        match payload.deserialize::<String>() {
            Ok(text) if text == LEGACY_NOT_FOUND => Err(Error::NotFound { path: path.to_owned() }),
            _ => Ok(payload),
        }
    }

    /// Drops the connection and waits until a new one replaced it, or the
    /// client closed, holding the legacy turn meanwhile.
    async fn recycle_after_legacy_timeout(&self) {
        let mut generations = self.shared.generation.subscribe();
        let mut finished = self.shared.finished.subscribe();
        let generation = self.shared.recycle_connection();
        tokio::select! {
            _ = generations.wait_for(|g| *g > generation) => {}
            _ = finished.wait_for(|done| *done) => {}
        }
    }

    /// Sends `data` to `path` without waiting for, or getting, an answer.
    ///
    /// Returns once the message is queued for sending.
    pub async fn emit(&self, path: &str, data: &(impl Serialize + ?Sized)) -> Result<(), Error> {
        self.send(&Envelope::Emit { path, data }).await
    }

    async fn send<T: Serialize + ?Sized>(&self, envelope: &Envelope<'_, T>) -> Result<(), Error> {
        self.send_with_id(None, envelope).await
    }

    /// Queues a message, waiting for room; `id` is the call it belongs to, if any.
    async fn send_with_id<T: Serialize + ?Sized>(
        &self,
        id: Option<u64>,
        envelope: &Envelope<'_, T>,
    ) -> Result<(), Error> {
        if self.shared.closed().is_some() {
            return Err(self.closed_error());
        }
        if self.fails_fast_now() {
            return Err(not_sent_while_reconnecting());
        }
        // Callers that would wait for room wait in line before encoding: of
        // them, only the first holds its message encoded, whatever its size.
        let _turn = match self.shared.outbox.has_room() {
            true => None,
            false => {
                let turn = self.shared.send_turn.lock().await;
                self.shared.outbox.room_freed().await;
                Some(turn)
            }
        };
        let (frame, size) = self
            .shared
            .format
            .encode_sized(envelope, self.shared.compression)
            .map_err(|e| Error::Protocol(e.to_string()))?;
        let limit = self.shared.max_message_size;
        if size > limit {
            return Err(Error::TooLarge { size, limit });
        }
        self.shared.outbox.push(id, frame).await.map_err(|_| self.closed_error())?;
        // Under FailFast, a call that waited for room while the connection
        // dropped must not wait for the next one.
        match id {
            Some(id) if self.fails_fast_now() && self.shared.outbox.remove(id) => Err(not_sent_while_reconnecting()),
            _ => Ok(()),
        }
    }

    /// Whether a call must fail now rather than wait for the connection.
    fn fails_fast_now(&self) -> bool {
        self.shared.while_disconnected == WhileDisconnected::FailFast
            && matches!(*self.shared.state.borrow(), ConnectionState::Reconnecting { .. })
    }

    /// A closed channel means a closed client: say why.
    fn or_closed(&self, error: Error) -> Error {
        match error {
            Error::Closed(None) => self.closed_error(),
            other => other,
        }
    }

    /// Runs `handler` for every push the server sends on `path`.
    ///
    /// The handler runs on the connection's task: keep it short, or spawn.
    /// Pushes whose data does not decode as `T` are logged and skipped. A
    /// handler that panics is logged and skipped too: the connection and the
    /// other handlers carry on.
    ///
    /// ```no_run
    /// # async fn demo(client: webmesh::Client) {
    /// client.on("/tick", |n: u32| println!("tick {n}"));
    /// # }
    /// ```
    pub fn on<T, F>(&self, path: &str, handler: F)
    where
        T: DeserializeOwned,
        F: Fn(T) + Send + Sync + 'static,
    {
        self.on_push(path, move |push: &Push| match push.deserialize::<T>() {
            Ok(data) => handler(data),
            Err(e) => tracing::warn!(path = push.path(), "skipping a push: {e}"),
        });
    }

    /// Runs `handler` for every push on `path`, still encoded.
    pub(crate) fn on_push(&self, path: &str, handler: impl Fn(&Push) + Send + Sync + 'static) {
        let mut handlers = self.shared.push_handlers.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        handlers.entry(path.to_owned()).or_default().push(Arc::new(handler));
    }

    /// How many bytes of received data each stream may hold unread.
    pub(crate) fn receive_buffer(&self) -> usize {
        self.shared.receive_buffer
    }

    /// A stream of every push the server sends from now on, on any path.
    pub fn pushes(&self) -> Pushes {
        self.shared.pushes()
    }

    /// Sends what is queued, closes the connection for every clone of this
    /// client (close code 1000), and waits until it is closed, at most a few
    /// seconds after the queue is written. Calls still waiting fail with
    /// [`Error::Closed`]. A reconnection under way is abandoned.
    pub async fn close(self) {
        let mut finished = self.shared.finished.subscribe();
        self.shared.request_stop("closed by the client");
        let _ = finished.wait_for(|done| *done).await;
    }

    /// Whether the client is closed, or closing.
    pub fn is_closed(&self) -> bool {
        self.shared.closed().is_some()
    }

    fn closed_error(&self) -> Error {
        Error::Closed(self.shared.closed().flatten())
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("format", &self.shared.format).finish_non_exhaustive()
    }
}

fn not_sent_while_reconnecting() -> Error {
    Error::Closed(Some(format!("not connected (reconnecting); {}", crate::error::NOT_SENT)))
}

/// Turns what a waiting call got into its result.
fn answer(
    path: &str,
    timeout: Duration,
    got: Result<Result<Answer, oneshot::error::RecvError>, deadline::Elapsed>,
) -> Result<Payload, Error> {
    answered(timeout, got)?.map_err(|error| Error::from_reply(path, error))
}

/// What a waiting call got: the server's answer (its data or its error), or
/// why none came.
fn answered(
    timeout: Duration,
    got: Result<Result<Answer, oneshot::error::RecvError>, deadline::Elapsed>,
) -> Result<Result<Payload, CallError>, Error> {
    match got {
        Err(_) => Err(Error::Timeout(timeout)),
        Ok(Err(_)) => Err(Error::Closed(None)),
        Ok(Ok(Ok(payload))) => Ok(Ok(payload)),
        Ok(Ok(Err(Failure::Reply(error)))) => Ok(Err(error)),
        Ok(Ok(Err(Failure::Lost(reason)))) => Err(Error::Closed(Some(reason))),
    }
}

struct Forget<'a> {
    shared: &'a ClientShared,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.shared.forget(self.id);
    }
}
