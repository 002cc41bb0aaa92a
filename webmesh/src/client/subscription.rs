//! Subscriptions on the client: local routing of events by topic, and the
//! typed stream each subscriber reads.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_util::Stream;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::handle::Client;
use crate::pubsub::TopicPattern;
use crate::{Error, Payload, SubscribeOptions};

/// How many events a subscription holds before the oldest unread ones are
/// counted as lost.
const BUFFER: usize = 1024;

/// What a subscription's stream carries.
pub(crate) enum Item {
    Event {
        topic: String,
        payload: Payload,
    },
    Lagged(u64),
    /// The server refused the subscription when it was restored.
    Ended(crate::CallError),
}

/// The subscriptions of one client, by the id of their SUBSCRIBE.
#[derive(Default)]
pub(crate) struct Subscriptions {
    local: Mutex<HashMap<u64, Local>>,
}

struct Local {
    pattern: TopicPattern,
    /// As sent, to subscribe again after a reconnect.
    raw: String,
    options: SubscribeOptions,
    items: mpsc::Sender<Item>,
    /// Events lost because the subscriber did not read its stream.
    missed: Arc<AtomicU64>,
}

impl Subscriptions {
    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Local>> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(
        &self,
        id: u64,
        pattern: TopicPattern,
        raw: &str,
        options: SubscribeOptions,
    ) -> (mpsc::Receiver<Item>, Arc<AtomicU64>) {
        let (items, receiver) = mpsc::channel(BUFFER);
        let missed = Arc::new(AtomicU64::new(0));
        let local = Local { pattern, raw: raw.to_owned(), options, items, missed: missed.clone() };
        self.local().insert(id, local);
        (receiver, missed)
    }

    /// Every subscription, to make again on a new connection.
    pub(crate) fn snapshot(&self) -> Vec<(u64, String, SubscribeOptions)> {
        self.local().iter().map(|(id, l)| (*id, l.raw.clone(), l.options)).collect()
    }

    /// Ends subscription `id` with `error`; `false` if there is none.
    pub(crate) fn end(&self, id: u64, error: crate::CallError) -> bool {
        match self.local().remove(&id) {
            Some(local) => {
                let _ = local.items.try_send(Item::Ended(error));
                true
            }
            None => false,
        }
    }

    fn remove(&self, id: u64) {
        self.local().remove(&id);
    }

    /// Hands an event to every local subscription whose pattern matches.
    pub(crate) fn deliver(&self, topic: &str, payload: &Payload) {
        for local in self.local().values().filter(|l| l.pattern.matches(topic)) {
            let item = Item::Event { topic: topic.to_owned(), payload: payload.clone() };
            if local.items.try_send(item).is_err() {
                local.missed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Passes on the server's notice that subscription `id` lost events.
    pub(crate) fn lagged(&self, id: u64, missed: u64) {
        if let Some(local) = self.local().get(&id) {
            if local.items.try_send(Item::Lagged(missed)).is_err() {
                local.missed.fetch_add(missed, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn clear(&self) {
        self.local().clear();
    }
}

/// An event received on a subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<T> {
    /// The topic it was published to.
    pub topic: String,
    /// Its data.
    pub data: T,
}

/// The events of one subscription, from [`Client::subscribe`].
///
/// Read it with [`recv`](Self::recv) or as a [`Stream`]. Each item is an
/// [`Event`] or an error: [`Error::Lagged`] when events were lost (see
/// below), [`Error::BadPayload`] when an event's data does not fit `T`.
///
/// ## Lagging
///
/// Events are lost in two places, each reported in-band as
/// `Err(Error::Lagged { missed })` before the events that follow the gap:
/// on the server, when the connection's event queue is full (what is dropped
/// depends on the subscription's [`LagPolicy`](crate::LagPolicy)); and here,
/// when 1024 events wait unread, in which case the newest are dropped.
///
/// ## Closing
///
/// Dropping the subscription, or calling [`unsubscribe`](Self::unsubscribe),
/// ends it on the server. When the connection closes, the stream returns
/// the events it holds, then ends. A subscription keeps its client's
/// connection open.
pub struct Subscription<T> {
    id: u64,
    pattern: String,
    items: mpsc::Receiver<Item>,
    missed: Arc<AtomicU64>,
    client: Client,
    /// Set once the server has been told, so that drop does not tell it again.
    ended: bool,
    _type: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Subscription<T> {
    /// The next event, or `None` once the subscription or connection ended.
    pub async fn recv(&mut self) -> Option<Result<Event<T>, Error>> {
        std::future::poll_fn(|cx| self.poll_item(cx)).await
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Event<T>, Error>>> {
        let missed = self.missed.swap(0, Ordering::Relaxed);
        if missed > 0 {
            return Poll::Ready(Some(Err(Error::Lagged { missed })));
        }
        self.items.poll_recv(cx).map(|item| {
            item.map(|item| match item {
                Item::Event { topic, payload } => {
                    payload.deserialize().map(|data| Event { topic, data }).map_err(Error::from)
                }
                Item::Lagged(missed) => Err(Error::Lagged { missed }),
                Item::Ended(error) => Err(Error::from_reply(&self.pattern, error)),
            })
        })
    }
}

impl<T> Subscription<T> {
    pub(crate) async fn start(client: &Client, pattern: &str, options: crate::SubscribeOptions) -> Result<Self, Error> {
        let parsed = TopicPattern::parse(pattern).map_err(Error::Config)?;
        let shared = client.shared();
        let (id, reply) = shared.register();
        // Registered before asking, so that no early event is missed.
        let (items, missed) = shared.subscriptions.add(id, parsed, pattern, options);
        let subscription = Subscription {
            id,
            pattern: pattern.to_owned(),
            items,
            missed,
            client: client.clone(),
            ended: false,
            _type: PhantomData,
        };
        let envelope = crate::protocol::Envelope::Subscribe { id, pattern, data: &options };
        // On failure, dropping `subscription` undoes the registration.
        client.request(id, reply, pattern, &envelope, shared.timeout).await?;
        Ok(subscription)
    }

    /// The pattern subscribed to.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Ends the subscription, waiting until the server has been told.
    pub async fn unsubscribe(mut self) {
        self.client.shared().subscriptions.remove(self.id);
        let _ = self.client.send_envelope(&crate::protocol::Envelope::unsubscribe(self.id)).await;
        self.ended = true;
    }
}

impl<T: DeserializeOwned> Stream for Subscription<T> {
    type Item = Result<Event<T>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_item(cx)
    }
}

impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        if !self.ended {
            self.client.shared().subscriptions.remove(self.id);
            self.client.try_send_envelope(&crate::protocol::Envelope::unsubscribe(self.id));
        }
    }
}

impl<T> std::fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").field("id", &self.id).field("pattern", &self.pattern).finish()
    }
}
