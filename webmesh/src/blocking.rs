//! A client for synchronous code, like the original Python client.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{ClientBuilder, Error};

/// A blocking [`Client`](crate::Client): the same operations, for code that
/// is not async.
///
/// It runs the connection on a private Tokio runtime with one worker thread.
///
/// ```no_run
/// # fn demo() -> Result<(), webmesh::Error> {
/// let client = webmesh::blocking::Client::connect("ws://127.0.0.1:4269")?;
/// let n: u64 = client.call("/getinc", &())?;
/// # Ok(()) }
/// ```
///
/// # Panics
///
/// Its methods panic when called from async code (inside a Tokio runtime),
/// as blocking there would stall the runtime: use the async client there.
#[derive(Clone)]
pub struct Client {
    client: crate::Client,
    runtime: Arc<tokio::runtime::Runtime>,
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
            .enable_all()
            .build()?;
        let client = runtime.block_on(builder.connect())?;
        Ok(Client { client, runtime: Arc::new(runtime) })
    }

    /// Calls `path` with `data` and waits for the reply.
    pub fn call<R: DeserializeOwned>(&self, path: &str, data: &(impl Serialize + ?Sized)) -> Result<R, Error> {
        self.runtime.block_on(self.client.call(path, data))
    }

    /// Calls `path` with `data` and waits for the reply, up to `timeout`.
    pub fn call_with_timeout<R: DeserializeOwned>(
        &self,
        path: &str,
        data: &(impl Serialize + ?Sized),
        timeout: Duration,
    ) -> Result<R, Error> {
        self.runtime.block_on(self.client.call_with_timeout(path, data, timeout))
    }

    /// Sends `data` to `path` without waiting for an answer.
    pub fn emit(&self, path: &str, data: &(impl Serialize + ?Sized)) -> Result<(), Error> {
        self.runtime.block_on(self.client.emit(path, data))
    }

    /// Runs `handler` on the connection's thread for every push on `path`.
    pub fn on<T, F>(&self, path: &str, handler: F)
    where
        T: DeserializeOwned,
        F: Fn(T) + Send + Sync + 'static,
    {
        self.client.on(path, handler);
    }

    /// The async client this one drives, for use from async code.
    pub fn as_async(&self) -> &crate::Client {
        &self.client
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("blocking::Client").field("client", &self.client).finish()
    }
}
