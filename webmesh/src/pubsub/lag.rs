use serde::{Deserialize, Serialize};

/// What happens to a subscriber that does not keep up.
///
/// Each connection has a bounded queue of events waiting to be written
/// ([`ServerBuilder::event_queue`](crate::ServerBuilder::event_queue)). When
/// an event finds it full, the policy of the subscription it is for decides;
/// if it is for several subscriptions of one connection, the strictest
/// policy wins (`Disconnect`, then `DropOldest`, then `DropNewest`).
///
/// Either way the subscriber learns in-band how many events it missed, as
/// [`Error::Lagged`](crate::Error::Lagged) from its subscription, and nobody
/// else waits: publishing never blocks on a slow subscriber.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LagPolicy {
    /// Drop the oldest queued event to make room (the default), so the
    /// subscriber sees the most recent events: right for prices, positions.
    #[default]
    DropOldest,
    /// Drop the new event, so the subscriber sees an unbroken prefix.
    DropNewest,
    /// Close the subscriber's connection (code 1008), for consumers that
    /// must see every event or none.
    Disconnect,
}

impl LagPolicy {
    /// The stricter of two policies.
    pub(crate) fn strictest(self, other: LagPolicy) -> LagPolicy {
        let rank = |p: LagPolicy| match p {
            LagPolicy::DropNewest => 0,
            LagPolicy::DropOldest => 1,
            LagPolicy::Disconnect => 2,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

/// How to subscribe, sent with the subscription.
///
/// ```no_run
/// # async fn demo(client: webmesh::Client) -> Result<(), webmesh::Error> {
/// use webmesh::{LagPolicy, SubscribeOptions};
///
/// let options = SubscribeOptions::default().lag(LagPolicy::Disconnect);
/// let mut orders = client.subscribe_with::<serde_json::Value>("/orders/{*all}", options).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SubscribeOptions {
    /// What the server does when this subscriber falls behind.
    #[serde(default)]
    pub lag: LagPolicy,
}

impl SubscribeOptions {
    /// Sets the [`LagPolicy`].
    pub fn lag(mut self, lag: LagPolicy) -> Self {
        self.lag = lag;
        self
    }
}
