//! A client for synchronous code, like the original Python client.

use std::cell::Cell;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::Budget;
use crate::{ClientBuilder, ConnectionState, Error, Event, Push, SubscribeOptions};

/// How long dropping the last handle waits to write what is queued.
const DROP_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// How many pushes may wait for the push handlers' thread before new ones
/// are dropped (their bytes are bounded too, by the receive buffer).
const PUSH_JOBS: usize = 1024;

type Job = Box<dyn FnOnce() + Send>;

thread_local! {
    /// Set on the threads of blocking clients' runtimes, where blocking on
    /// a client would stop the very thread that has to answer.
    static ON_CLIENT_RUNTIME: Cell<bool> = const { Cell::new(false) };
}

/// A blocking [`Client`](crate::Client): the same operations, for code that
/// is not async.
///
/// It runs the connection on a private Tokio runtime with one worker
/// thread, and push handlers on a thread of their own, where they may call
/// the client (e.g. `emit` an answer).
///
/// ```no_run
/// # fn demo() -> Result<(), webmesh::Error> {
/// let client = webmesh::blocking::Client::connect("ws://127.0.0.1:4269")?;
/// let n: u64 = client.call("/getinc", &())?;
/// client.emit("/inc", &())?;
/// client.close(); // writes the emit, then closes
/// # Ok(()) }
/// ```
///
/// ## Closing
///
/// [`close`](Self::close) writes what is queued and closes. Dropping the
/// last clone does the same, waiting at most 5 seconds; on a thread with
/// a Tokio context, where a runtime may not be dropped, the drop hands that
/// work to a thread of its own and returns at once.
///
/// ## In async code
///
/// It works from any thread, `spawn_blocking` tasks included. Called from
/// async code, it blocks that task's worker thread until it is done, as any
/// blocking call would: use the async client there (see
/// [`as_async`](Self::as_async)).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    /// Both are taken only by `Drop`.
    client: Option<crate::Client>,
    runtime: Option<tokio::runtime::Runtime>,
    push_jobs: SyncSender<Job>,
    /// Bounds the bytes of the pushes waiting for the push handlers' thread.
    push_budget: Arc<Budget>,
}

impl Client {
    /// Connects to `url` with the default settings.
    pub fn connect(url: &str) -> Result<Client, Error> {
        Self::connect_with(crate::Client::builder(url))
    }

    /// Connects with the settings of `builder`.
    pub fn connect_with(builder: ClientBuilder) -> Result<Client, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("webmesh-blocking")
            .on_thread_start(|| ON_CLIENT_RUNTIME.with(|on| on.set(true)))
            .enable_all()
            .build()?;
        let client = block_on(&runtime, builder.connect())??;
        let (push_jobs, jobs) = sync_channel::<Job>(PUSH_JOBS);
        std::thread::Builder::new().name("webmesh-push-handlers".into()).spawn(move || {
            for job in jobs {
                if catch_unwind(AssertUnwindSafe(job)).is_err() {
                    tracing::error!("a push handler panicked; the push is skipped");
                }
            }
        })?;
        let push_budget = Arc::new(Budget::new(client.receive_buffer()));
        let inner = Inner { client: Some(client), runtime: Some(runtime), push_jobs, push_budget };
        Ok(Client { inner: Arc::new(inner) })
    }

    fn client(&self) -> &crate::Client {
        self.inner.client.as_ref().expect("taken only on drop")
    }

    fn block_on<F: Future + Send>(&self, future: F) -> Result<F::Output, Error>
    where
        F::Output: Send,
    {
        block_on(self.inner.runtime.as_ref().expect("taken only on drop"), future)
    }

    /// Calls `path` with `data` and waits for the reply.
    pub fn call<R: DeserializeOwned>(&self, path: &str, data: &(impl Serialize + Sync + ?Sized)) -> Result<R, Error> {
        let timeout = self.client().default_timeout();
        self.call_with_timeout(path, data, timeout)
    }

    /// Calls `path` with `data` and waits for the reply, up to `timeout`.
    pub fn call_with_timeout<R: DeserializeOwned>(
        &self,
        path: &str,
        data: &(impl Serialize + Sync + ?Sized),
        timeout: Duration,
    ) -> Result<R, Error> {
        // Decoded here, so that `R` need not be `Send`.
        Ok(self.block_on(self.client().call_for_payload(path, data, timeout))??.deserialize()?)
    }

    /// Sends `data` to `path` without waiting for an answer; returns once
    /// it is queued for sending.
    pub fn emit(&self, path: &str, data: &(impl Serialize + Sync + ?Sized)) -> Result<(), Error> {
        self.block_on(self.client().emit(path, data))?
    }

    /// Subscribes to the topics `pattern` matches; the events come as an
    /// [`Iterator`]. See [`crate::Client::subscribe`].
    ///
    /// ```no_run
    /// # fn demo(client: webmesh::blocking::Client) -> Result<(), webmesh::Error> {
    /// for event in client.subscribe::<String>("/chat/lobby")? {
    ///     println!("{}", event?.data);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn subscribe<T: DeserializeOwned>(&self, pattern: &str) -> Result<Subscription<T>, Error> {
        self.subscribe_with(pattern, SubscribeOptions::default())
    }

    /// Subscribes with options; see [`crate::Client::subscribe_with`].
    pub fn subscribe_with<T: DeserializeOwned>(
        &self,
        pattern: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription<T>, Error> {
        let inner = self.block_on(self.client().subscribe_with(pattern, options))??;
        Ok(Subscription { inner, client: self.clone(), refused: false })
    }

    /// Publishes `data` to `topic`; see [`crate::Client::publish`].
    pub fn publish(&self, topic: &str, data: &(impl Serialize + Sync + ?Sized)) -> Result<(), Error> {
        self.block_on(self.client().publish(topic, data))?
    }

    /// Runs `handler` for every push on `path`, on the client's push
    /// handlers' thread, one push at a time. The handler may use the client.
    /// A handler that panics is logged and skipped.
    ///
    /// A handler that holds a clone of the client keeps it open until
    /// [`close`](Self::close) is called.
    pub fn on<T, F>(&self, path: &str, handler: F)
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(T) + Send + Sync + 'static,
    {
        let handler = Arc::new(handler);
        let (jobs, budget) = (self.inner.push_jobs.clone(), self.inner.push_budget.clone());
        self.client().on_push(path, move |push: &Push| {
            let bytes = push.payload().len();
            if !budget.take(bytes) {
                return tracing::warn!(path = push.path(), "a push was dropped: the push handlers are behind");
            }
            let (handler, held, push) = (handler.clone(), budget.clone(), push.clone());
            // Decoded on the handlers' thread, not the connection's.
            let job = Box::new(move || {
                held.give_back(bytes);
                match push.deserialize::<T>() {
                    Ok(data) => handler(data),
                    Err(e) => tracing::warn!(path = push.path(), "skipping a push: {e}"),
                }
            });
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = jobs.try_send(job) {
                budget.give_back(bytes);
                tracing::warn!("a push was dropped: the push handlers are behind");
            }
        });
    }

    /// Every push the server sends from now on, as an [`Iterator`].
    pub fn pushes(&self) -> Pushes {
        Pushes { inner: self.client().pushes(), client: self.clone() }
    }

    /// Where the connection stands now.
    pub fn state(&self) -> ConnectionState {
        self.client().state()
    }

    /// Whether the client is closed, or closing.
    pub fn is_closed(&self) -> bool {
        self.client().is_closed()
    }

    /// Writes what is queued, closes the connection for every clone, and
    /// waits until it is closed; see [`crate::Client::close`]. On a blocking
    /// client's own runtime thread it only asks for the close, and returns.
    pub fn close(self) {
        let client = self.client().clone();
        if let Err(refused) = self.block_on(client.clone().close()) {
            tracing::debug!("{refused}: closing without waiting");
            drop(client.close());
        }
    }

    /// The async client this one drives, for use from async code.
    pub fn as_async(&self) -> &crate::Client {
        self.client()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let (Some(client), Some(runtime)) = (self.client.take(), self.runtime.take()) else { return };
        let flush = move || {
            runtime.block_on(async {
                let _ = tokio::time::timeout(DROP_FLUSH_TIMEOUT, client.close()).await;
            });
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            // Neither blocking nor dropping a runtime is allowed here.
            let _ = std::thread::Builder::new().name("webmesh-blocking-close".into()).spawn(flush);
        } else {
            flush();
        }
    }
}

/// Runs `future` on `runtime` and waits for it. A thread that has a Tokio
/// context (a `spawn_blocking` task, or async code) may not start another
/// runtime: there the future is driven from a scoped thread of its own. A
/// thread of a blocking client's runtime may not wait at all: it may be the
/// one that has to read the answer (a handler registered through
/// [`Client::as_async`]), so that is refused.
fn block_on<F: Future + Send>(runtime: &tokio::runtime::Runtime, future: F) -> Result<F::Output, Error>
where
    F::Output: Send,
{
    if ON_CLIENT_RUNTIME.with(Cell::get) {
        return Err(Error::Config(
            "a blocking client cannot wait on its own runtime's thread (a handler registered through \
             `as_async`): use the blocking client's `on`, whose handlers run on a thread of their own"
                .into(),
        ));
    }
    if tokio::runtime::Handle::try_current().is_err() {
        return Ok(runtime.block_on(future));
    }
    std::thread::scope(|scope| match scope.spawn(|| runtime.block_on(future)).join() {
        Ok(output) => Ok(output),
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("blocking::Client").field("client", self.client()).finish()
    }
}

/// The events of one subscription, from [`Client::subscribe`], as an
/// [`Iterator`] that blocks for the next event and ends when the
/// subscription or the connection does. Lagging and closing are as for
/// [`crate::Subscription`]. Dropping it unsubscribes.
pub struct Subscription<T> {
    inner: crate::Subscription<T>,
    client: Client,
    /// Set once iterating was refused, so that a loop over it ends.
    refused: bool,
}

impl<T: DeserializeOwned> Subscription<T> {
    /// The next event, waiting up to `timeout`; `Ok(None)` when the
    /// subscription ended, [`Error::Timeout`] when nothing came in time.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Result<Event<T>, Error>>, Error> {
        let client = self.client.clone();
        let item = client.block_on(tokio::time::timeout(timeout, self.inner.recv_item()))?;
        Ok(item.map_err(|_| Error::Timeout(timeout))?.map(|item| self.inner.decode(item)))
    }

    /// The pattern subscribed to.
    pub fn pattern(&self) -> &str {
        self.inner.pattern()
    }
}

impl<T: DeserializeOwned> Iterator for Subscription<T> {
    type Item = Result<Event<T>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let client = self.client.clone();
        if self.refused {
            return None;
        }
        match client.block_on(self.inner.recv_item()) {
            Ok(item) => Some(self.inner.decode(item?)),
            Err(refused) => {
                self.refused = true;
                Some(Err(refused))
            }
        }
    }
}

impl<T> std::fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("blocking::Subscription").field("pattern", &self.inner.pattern()).finish()
    }
}

/// The pushes a client receives, from [`Client::pushes`], as an [`Iterator`]
/// that ends when the connection closes. See [`crate::Pushes`].
pub struct Pushes {
    inner: crate::Pushes,
    client: Client,
}

impl Iterator for Pushes {
    type Item = Push;

    fn next(&mut self) -> Option<Push> {
        let client = self.client.clone();
        client.block_on(self.inner.next()).ok().flatten()
    }
}

impl std::fmt::Debug for Pushes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("blocking::Pushes").finish_non_exhaustive()
    }
}
