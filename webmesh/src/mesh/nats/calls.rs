//! Calls over NATS: serving this node's routes, and reaching one node.

use std::sync::Arc;

use futures_util::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{wire, Nats};
use crate::mesh::messages::{Answered, Forward, RESERVED};
use crate::{CallError, Error, Reply};

/// The queue group of every route's subscription: NATS gives each call to
/// one subscription of the group among all that match its subject, so a
/// path that two routes of two nodes match still runs once.
const QUEUE: &str = "webmesh";

/// The most calls from NATS this node runs at once; past it, NATS holds
/// them (and drops them from a subscriber that stays behind, as a slow
/// consumer, which their callers see as a timeout).
const MAX_IN_FLIGHT: usize = 4096;

/// The most bytes of calls from NATS this node holds while they run.
const MAX_BYTES_IN_FLIGHT: usize = 64 << 20;

/// Serves this node's routes (each a queue-group subscription) and its own
/// subject, until `stop`: each with its own room for calls, so that a flood
/// of calls to a route leaves calls to the node alone (and its reports)
/// their way through.
pub(super) async fn serve(nats: Arc<Nats>, stop: CancellationToken) {
    let Some(mesh) = nats.mesh.upgrade() else { return };
    let routes = mesh.members.own().routes.calls;
    let (id, tasks) = (mesh.id.clone(), mesh.tasks.clone());
    drop(mesh);
    let mut subscriptions = Vec::new();
    for route in routes.iter().filter(|route| !route.starts_with(RESERVED)) {
        match nats.client.queue_subscribe(nats.calls.of_route(route), QUEUE.into()).await {
            Ok(subscription) => subscriptions.push(subscription),
            Err(e) => tracing::error!(%route, "this node cannot serve a route over NATS: {e}"),
        }
    }
    match nats.client.subscribe(nats.inboxes.of_name(&id)).await {
        Ok(inbox) => drop(tasks.spawn(run(nats.clone(), vec![inbox], stop.clone()))),
        Err(e) => tracing::error!("this node cannot serve calls to it alone over NATS: {e}"),
    }
    run(nats, subscriptions, stop).await;
}

/// Runs the calls that arrive on `subscriptions`, at most [`MAX_IN_FLIGHT`]
/// and [`MAX_BYTES_IN_FLIGHT`] at once, until `stop`.
async fn run(nats: Arc<Nats>, subscriptions: Vec<async_nats::Subscriber>, stop: CancellationToken) {
    let mut calls = futures_util::stream::select_all(subscriptions);
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let room = Arc::new(Semaphore::new(MAX_BYTES_IN_FLIGHT >> 10));
    // Waited for once, not once per call.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        let message = tokio::select! {
            message = calls.next() => message,
            () = &mut stopped => return,
        };
        let Some(message) = message else { return };
        // NATS holds the payload to at most its largest message.
        let kib =
            u32::try_from(message.payload.len() >> 10).unwrap_or(u32::MAX).clamp(1, (MAX_BYTES_IN_FLIGHT >> 10) as u32);
        let held = match (slots.clone().try_acquire_owned(), room.clone().try_acquire_many_owned(kib)) {
            (Ok(slot), Ok(bytes)) => (Ok(slot), Ok(bytes)),
            // At a limit: what was taken goes back, and the call waits its turn.
            taken => {
                drop(taken);
                tokio::select! {
                    held = async { (slots.clone().acquire_owned().await, room.clone().acquire_many_owned(kib).await) } => held,
                    () = &mut stopped => return,
                }
            }
        };
        let (Ok(slot), Ok(bytes)) = held else { return };
        let Some(mesh) = nats.mesh.upgrade() else { return };
        let tasks = mesh.tasks.clone();
        let nats = nats.clone();
        let call = async move {
            let reply = match wire::read_call(&message.payload) {
                Ok(call) => mesh.run_called(call.path, call.identity, call.data).await,
                Err(e) => Reply::error(CallError::new(CallError::BAD_REQUEST, format!("a call over NATS: {e}"))),
            };
            drop((slot, bytes));
            if let Some(to) = message.reply {
                let mut answer = wire::answer(&reply);
                if let Err(Error::TooLarge { size, limit }) = nats.fits(answer.len()) {
                    let message = format!("the answer is {size} bytes, more than NATS's largest message ({limit})");
                    answer = wire::answer(&Reply::error(CallError::new(CallError::TOO_LARGE, message)));
                }
                if let Err(e) = nats.client.publish(to, answer).await {
                    tracing::debug!("an answer over NATS was not sent: {e}");
                }
            }
        };
        // Handlers' panics are caught where they run; this is for the rest,
        // which must not end this loop.
        let mut call = Box::pin(std::panic::AssertUnwindSafe(call).catch_unwind().map(|ran| {
            if ran.is_err() {
                tracing::error!("a call from NATS panicked");
            }
        }));
        // Most handlers answer without waiting: run here, that saves a task
        // and a wake-up per call; one that waits goes on in a task.
        if futures_util::poll!(&mut call).is_pending() {
            tasks.spawn(call);
        }
    }
}

/// The subject only one node serves: calls to it alone.
#[derive(Clone)]
pub(crate) struct Inbox {
    nats: Arc<Nats>,
    id: String,
    subject: String,
}

impl Inbox {
    pub(super) fn new(nats: Arc<Nats>, id: &str) -> Self {
        let subject = nats.inboxes.of_name(id);
        Self { nats, id: id.to_owned(), subject }
    }

    pub(crate) async fn call<R: DeserializeOwned>(
        &self,
        path: &str,
        data: &(impl Serialize + ?Sized),
    ) -> Result<R, Error> {
        let call = wire::call(&wire::CallOut { path, data, identity: None })?;
        let answer = self.request(call, path).await?;
        wire::read_answer(path, &answer)
    }

    pub(crate) async fn emit(&self, path: &str, data: &(impl Serialize + ?Sized)) -> Result<(), Error> {
        let call = wire::call(&wire::CallOut { path, data, identity: None })?;
        self.nats.send(self.subject.clone(), call).await
    }

    pub(crate) async fn forward(&self, call: &Forward) -> Result<Answered, Error> {
        let out = wire::CallOut { path: &call.path, data: &call.data, identity: call.identity.as_ref() };
        let answer = self.request(wire::call(&out)?, &call.path).await?;
        wire::read_answered(&answer)
    }

    async fn request(&self, call: bytes::Bytes, path: &str) -> Result<bytes::Bytes, Error> {
        match self.nats.request(self.subject.clone(), call, path).await {
            // Nobody serves the node's subject: it is gone, and the call
            // may go to another.
            Err(Error::NoRoute { .. }) => Err(Error::Closed(Some(format!(
                "node {} does not answer on NATS; {}",
                self.id,
                crate::error::NOT_SENT
            )))),
            other => other,
        }
    }
}
