//! Subscriptions on the client: local routing of events by topic, and the
//! typed stream each subscriber reads.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_util::Stream;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::budget::Budget;
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
    /// Events were lost: how many, when known.
    Lagged(Option<u64>),
    /// The server refused the subscription when it was restored.
    Ended(crate::CallError),
}

/// The subscriptions of one client, by the id of their SUBSCRIBE.
pub(crate) struct Subscriptions {
    local: Mutex<HashMap<u64, Local>>,
    /// The bytes of events each subscription may hold unread.
    receive_buffer: usize,
}

struct Local {
    pattern: TopicPattern,
    /// As sent, to subscribe again after a reconnect.
    raw: String,
    options: SubscribeOptions,
    items: mpsc::Sender<Item>,
    /// Bounds the bytes of events held unread.
    budget: Arc<Budget>,
    /// Events lost and not reported yet, because the stream was full: how
    /// many, when known. Reported before the next item that fits.
    gap: Option<Option<u64>>,
}

impl Local {
    /// Queues `item` after the report of any gap before it; when the stream
    /// is full (in items or bytes), `item` joins the gap instead.
    fn offer(&mut self, item: Item) {
        let bytes = item.bytes();
        if !self.budget.take(bytes) {
            return self.widen_gap(&item);
        }
        if let Some(missed) = self.gap {
            if self.items.try_send(Item::Lagged(missed)).is_err() {
                self.budget.give_back(bytes);
                return self.widen_gap(&item);
            }
            self.gap = None;
        }
        if let Err(TrySendError::Full(item) | TrySendError::Closed(item)) = self.items.try_send(item) {
            self.budget.give_back(bytes);
            self.widen_gap(&item);
        }
    }

    fn widen_gap(&mut self, lost: &Item) {
        let lost = match lost {
            Item::Event { .. } => Some(1),
            Item::Lagged(missed) => *missed,
            Item::Ended(_) => Some(0),
        };
        let gap = self.gap.unwrap_or(Some(0));
        self.gap = Some(gap.zip(lost).map(|(a, b)| a.saturating_add(b)));
    }
}

impl Item {
    /// The bytes it holds against its subscription's budget.
    fn bytes(&self) -> usize {
        match self {
            Item::Event { payload, .. } => payload.len(),
            Item::Lagged(_) | Item::Ended(_) => 0,
        }
    }
}

impl Subscriptions {
    pub(crate) fn new(receive_buffer: usize) -> Self {
        Self { local: Mutex::default(), receive_buffer }
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Local>> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(
        &self,
        id: u64,
        pattern: TopicPattern,
        raw: &str,
        options: SubscribeOptions,
    ) -> (mpsc::Receiver<Item>, Arc<Budget>) {
        let (items, receiver) = mpsc::channel(BUFFER);
        let budget = Arc::new(Budget::new(self.receive_buffer));
        let local = Local { pattern, raw: raw.to_owned(), options, items, budget: budget.clone(), gap: None };
        self.local().insert(id, local);
        (receiver, budget)
    }

    /// Every subscription, to make again on a new connection.
    pub(crate) fn snapshot(&self) -> Vec<(u64, String, SubscribeOptions)> {
        self.local().iter().map(|(id, l)| (*id, l.raw.clone(), l.options)).collect()
    }

    /// The pattern of subscription `id`.
    pub(crate) fn pattern(&self, id: u64) -> Option<String> {
        self.local().get(&id).map(|l| l.raw.clone())
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
        for local in self.local().values_mut().filter(|l| l.pattern.matches(topic)) {
            local.offer(Item::Event { topic: topic.to_owned(), payload: payload.clone() });
        }
    }

    /// Passes on the server's notice that subscription `id` lost events.
    pub(crate) fn lagged(&self, id: u64, missed: u64) {
        if let Some(local) = self.local().get_mut(&id) {
            // 0: the server does not know how many (a mesh link broke).
            local.offer(Item::Lagged(Some(missed).filter(|n| *n != 0)));
        }
    }

    /// The connection was re-established: every subscription may have lost
    /// events published meanwhile.
    pub(crate) fn interrupted(&self) {
        for local in self.local().values_mut() {
            local.offer(Item::Lagged(None));
        }
    }

    /// How many subscriptions there are.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.local().len()
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
/// below), [`Error::Decode`] when an event's data does not fit `T`.
///
/// ## Lagging
///
/// Events are lost in three places, each reported in-band as
/// `Err(Error::Lagged { missed })`, in order, before the events that follow
/// the gap: on the server, when the connection's event queue is full (what
/// is dropped depends on the subscription's [`LagPolicy`](crate::LagPolicy));
/// here, when 1024 events or the client's
/// [`receive_buffer`](crate::ClientBuilder::receive_buffer) in bytes wait
/// unread, in which case the newest are dropped;
/// and while the client reconnects, when events published meanwhile are
/// lost (`missed` is then `None`: how many is unknown).
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
    budget: Arc<Budget>,
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
        self.items.poll_recv(cx).map(|item| item.map(|item| self.decode(item)))
    }

    /// Turns an item of the stream into what the subscriber reads.
    pub(crate) fn decode(&self, item: Item) -> Result<Event<T>, Error> {
        self.budget.give_back(item.bytes());
        match item {
            Item::Event { topic, payload } => {
                payload.deserialize().map(|data| Event { topic, data }).map_err(Error::from)
            }
            Item::Lagged(missed) => Err(Error::Lagged { missed }),
            Item::Ended(error) => Err(Error::from_reply(&self.pattern, error)),
        }
    }
}

impl<T> Subscription<T> {
    pub(crate) async fn start(client: &Client, pattern: &str, options: crate::SubscribeOptions) -> Result<Self, Error> {
        let parsed = TopicPattern::parse(pattern).map_err(|e| Error::Config(e.to_string()))?;
        let shared = client.shared();
        let (id, reply) = shared.register();
        // Registered before asking, so that no early event is missed.
        let (items, budget) = shared.subscriptions.add(id, parsed, pattern, options);
        let subscription = Subscription {
            id,
            pattern: pattern.to_owned(),
            items,
            budget,
            client: client.clone(),
            ended: false,
            _type: PhantomData,
        };
        let envelope = crate::protocol::Envelope::Subscribe { id, pattern, data: &options };
        // On failure, dropping `subscription` undoes the registration.
        client.request(id, reply, pattern, &envelope, shared.timeout).await?;
        Ok(subscription)
    }

    /// The next item, still encoded.
    pub(crate) async fn recv_item(&mut self) -> Option<Item> {
        self.items.recv().await
    }

    /// The pattern subscribed to.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Ends the subscription. The server is told before anything sent
    /// after this, however full the outbound buffer is.
    pub async fn unsubscribe(mut self) {
        self.client.shared().subscriptions.remove(self.id);
        self.client.send_control(&crate::protocol::Envelope::unsubscribe(self.id));
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
            self.client.send_control(&crate::protocol::Envelope::unsubscribe(self.id));
        }
    }
}

impl<T> std::fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").field("id", &self.id).field("pattern", &self.pattern).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(bytes: usize) -> Payload {
        Payload::msgpack(vec![0xc0; bytes].into())
    }

    #[test]
    fn unread_events_are_bounded_in_bytes_and_the_loss_is_reported_in_order() {
        let subscriptions = Subscriptions::new(64 << 10);
        let pattern = TopicPattern::parse("/t").unwrap();
        let (mut items, budget) = subscriptions.add(1, pattern, "/t", SubscribeOptions::default());
        // 50 events of 16 KiB for a reader that does not read: 4 fit.
        for _ in 0..50 {
            subscriptions.deliver("/t", &event(16 << 10));
        }
        let mut held = 0;
        while let Ok(item) = items.try_recv() {
            assert!(matches!(item, Item::Event { .. }));
            held += 1;
        }
        assert_eq!(held, 4, "64 KiB hold four events of 16 KiB");
        // The reader took them (without giving the bytes back here): the
        // budget is still full, so the next events join the gap.
        subscriptions.deliver("/t", &event(16 << 10));
        assert!(items.try_recv().is_err());
        budget.give_back(64 << 10);
        subscriptions.deliver("/t", &event(1));
        assert!(matches!(items.try_recv(), Ok(Item::Lagged(Some(47)))), "46 + 1 lost, before the next event");
        assert!(matches!(items.try_recv(), Ok(Item::Event { .. })));
    }
}
