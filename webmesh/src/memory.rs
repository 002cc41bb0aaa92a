//! What the server holds for each connection, in bytes, and the server-wide
//! budget over all of them.
//!
//! Every byte a client can make the server hold is a [`Charge`] on its
//! connection's [`Account`]: the payloads of its messages under way, and the
//! replies, pushes and events waiting to be written. A charge is released when
//! what it stands for is dropped, so the counts cannot drift from what is
//! really held.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::Notify;

/// The budget of all connections together.
pub(crate) struct MemoryBudget {
    limit: usize,
    total: AtomicUsize,
    accounts: Mutex<HashMap<u64, Weak<Account>>>,
    /// The bytes the connections told to close held then: counted as freed,
    /// so that the accounts are scanned only when the others pass the limit,
    /// not on every charge while those close.
    leaving: AtomicUsize,
    /// Set while one caller scans: the others go on.
    scanning: AtomicBool,
    /// Readers waiting for the total to fall below the limit.
    waiting: AtomicUsize,
    room: Notify,
}

/// Which way the bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// The payloads of messages under way.
    Incoming,
    /// Replies and pushes waiting to be written.
    Outgoing,
    /// Events waiting to be written (or for their topic's authorisation):
    /// outgoing too, but dropped by the lag policy rather than closing a
    /// slow consumer.
    Events,
    /// The connection's subscriptions in the server's registry.
    Subscriptions,
}

/// One connection's bytes.
pub(crate) struct Account {
    id: u64,
    limit: usize,
    incoming: AtomicUsize,
    outgoing: AtomicUsize,
    events: AtomicUsize,
    subscriptions: AtomicUsize,
    budget: Arc<MemoryBudget>,
    /// Wakes a reader waiting for the messages under way to shrink.
    room: Notify,
    /// Set once the budget chose this connection to close.
    shed: AtomicBool,
    /// What it held then, counted as leaving until it is dropped.
    shed_bytes: AtomicUsize,
    /// Wakes the session of a connection that must end: for its memory, or
    /// for what its connection decided.
    pub(crate) ending: Notify,
}

/// Bytes held for a connection until this is dropped.
#[must_use]
pub(crate) struct Charge {
    account: Arc<Account>,
    direction: Direction,
    bytes: usize,
}

impl MemoryBudget {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            total: AtomicUsize::new(0),
            accounts: Mutex::default(),
            leaving: AtomicUsize::new(0),
            scanning: AtomicBool::new(false),
            waiting: AtomicUsize::new(0),
            room: Notify::new(),
        })
    }

    /// Opens the account of connection `id`, which may hold `limit` bytes in
    /// each direction.
    pub(crate) fn open(self: &Arc<Self>, id: u64, limit: usize) -> Arc<Account> {
        let account = Arc::new(Account {
            id,
            limit,
            incoming: AtomicUsize::new(0),
            outgoing: AtomicUsize::new(0),
            events: AtomicUsize::new(0),
            subscriptions: AtomicUsize::new(0),
            budget: self.clone(),
            room: Notify::new(),
            shed: AtomicBool::new(false),
            shed_bytes: AtomicUsize::new(0),
            ending: Notify::new(),
        });
        self.accounts().insert(id, Arc::downgrade(&account));
        account
    }

    fn accounts(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<Account>>> {
        self.accounts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes held for all connections.
    pub(crate) fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Over budget: chooses the connection holding the most bytes, among
    /// those not already on their way out, and tells it to end. Connections
    /// already told count as freed, so one burst sheds as many connections
    /// as it takes to come under the limit, not every connection in turn.
    fn shed(&self) {
        if self.total().saturating_sub(self.leaving.load(Ordering::Acquire)) <= self.limit
            || self.scanning.swap(true, Ordering::AcqRel)
        {
            return;
        }
        // Chosen and marked under the lock that `retire` takes, so that an
        // account is never counted as leaving after its session ended.
        let registered = self.accounts();
        let accounts: Vec<Arc<Account>> = registered.values().filter_map(Weak::upgrade).collect();
        let largest = accounts.iter().filter(|a| !a.is_shed()).max_by_key(|a| a.held());
        if let Some(account) = largest {
            if !account.shed.swap(true, Ordering::AcqRel) {
                let held = account.held();
                account.shed_bytes.store(held, Ordering::Release);
                self.leaving.fetch_add(held, Ordering::AcqRel);
                tracing::warn!(
                    connection = account.id,
                    held,
                    total = self.total(),
                    budget = self.limit,
                    "memory budget reached: closing the connection holding the most"
                );
                account.ending.notify_one();
            }
        }
        drop(registered);
        self.scanning.store(false, Ordering::Release);
        // Last: dropping the last handle of an account sheds again, if need be.
        drop(accounts);
    }
}

impl Account {
    fn counter(&self, direction: Direction) -> &AtomicUsize {
        match direction {
            Direction::Incoming => &self.incoming,
            Direction::Outgoing => &self.outgoing,
            Direction::Events => &self.events,
            Direction::Subscriptions => &self.subscriptions,
        }
    }

    /// Charges `bytes` in `direction`, whatever the limits: the caller
    /// decides what being over means (waiting, dropping, closing).
    pub(crate) fn charge(self: &Arc<Self>, direction: Direction, bytes: usize) -> Charge {
        self.add(direction, bytes);
        Charge { account: self.clone(), direction, bytes }
    }

    /// Counts `bytes` in `direction`, for a holder that releases them itself
    /// (the event queue, which releases each batch it writes at once).
    pub(crate) fn add(&self, direction: Direction, bytes: usize) {
        self.counter(direction).fetch_add(bytes, Ordering::AcqRel);
        let total = self.budget.total.fetch_add(bytes, Ordering::AcqRel) + bytes;
        if total > self.budget.limit {
            self.budget.shed();
        }
    }

    /// Releases `bytes` counted by [`add`](Self::add).
    pub(crate) fn release(&self, direction: Direction, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let before = self.counter(direction).fetch_sub(bytes, Ordering::AcqRel);
        let total = self.budget.total.fetch_sub(bytes, Ordering::AcqRel) - bytes;
        // The reader waits only at the limit: below it, nobody to wake.
        if direction == Direction::Incoming && before >= self.limit {
            self.room.notify_waiters();
        }
        let budget = &self.budget;
        if total < budget.limit && budget.waiting.load(Ordering::Acquire) > 0 {
            budget.room.notify_waiters();
        }
    }

    /// Bytes held in `direction`.
    pub(crate) fn held_in(&self, direction: Direction) -> usize {
        self.counter(direction).load(Ordering::Acquire)
    }

    /// Bytes held, all told.
    pub(crate) fn held(&self) -> usize {
        self.held_in(Direction::Incoming) + self.waiting_to_be_written() + self.held_in(Direction::Subscriptions)
    }

    /// Replies, pushes and events waiting to be written.
    pub(crate) fn waiting_to_be_written(&self) -> usize {
        self.held_in(Direction::Outgoing) + self.held_in(Direction::Events)
    }

    /// Whether an event of `bytes` fits beside what waits to be written.
    pub(crate) fn has_room_for_event(&self, bytes: usize) -> bool {
        self.waiting_to_be_written().saturating_add(bytes) <= self.limit
    }

    /// The most this connection may hold in each direction.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Whether `bytes` more fit in `direction`.
    pub(crate) fn has_room(&self, direction: Direction, bytes: usize) -> bool {
        self.held_in(direction).saturating_add(bytes) <= self.limit
    }

    /// Whether the budget chose this connection to close.
    pub(crate) fn is_shed(&self) -> bool {
        self.shed.load(Ordering::Acquire)
    }

    /// Completes once the messages under way hold less than the
    /// connection's limit, and the server less than its budget: reading
    /// waits rather than the server growing.
    pub(crate) async fn room_for_incoming(&self) {
        loop {
            let freed = self.room.notified();
            if self.held_in(Direction::Incoming) < self.limit {
                break;
            }
            freed.await;
        }
        let budget = &self.budget;
        while budget.total() >= budget.limit {
            let freed = budget.room.notified();
            budget.waiting.fetch_add(1, Ordering::AcqRel);
            // Whoever holds the most may be the one who never frees it.
            budget.shed();
            if budget.total() >= budget.limit {
                freed.await;
            }
            budget.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Account {
    /// Its connection's session ended: what it held when shed no longer
    /// counts as leaving, even if a `Connection` kept by user code keeps
    /// the account alive (the budget would otherwise stay blind to the
    /// others, and readers wait for room for ever).
    pub(crate) fn retire(&self) {
        let shed_bytes = {
            let mut accounts = self.budget.accounts();
            // Never chosen again: it has nothing left to give back by ending.
            accounts.remove(&self.id);
            self.shed.store(true, Ordering::Release);
            self.shed_bytes.swap(0, Ordering::AcqRel)
        };
        if shed_bytes > 0 {
            self.budget.leaving.fetch_sub(shed_bytes, Ordering::AcqRel);
            self.budget.shed();
            self.budget.room.notify_waiters();
        }
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        let shed_bytes = *self.shed_bytes.get_mut();
        self.budget.leaving.fetch_sub(shed_bytes, Ordering::AcqRel);
        {
            let mut accounts = self.budget.accounts();
            // A new account never reuses an id, but check it is ours anyway.
            if accounts.get(&self.id).is_some_and(|weak| weak.strong_count() == 0) {
                accounts.remove(&self.id);
            }
        }
        // A shed connection is gone, and its bytes no longer count as
        // leaving: if the others are still over budget, shed the next one.
        if shed_bytes > 0 {
            self.budget.shed();
            self.budget.room.notify_waiters();
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.account.release(self.direction, self.bytes);
    }
}

impl std::fmt::Debug for Charge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Charge({:?}, {} bytes)", self.direction, self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_released_when_dropped() {
        let budget = MemoryBudget::new(1000);
        let account = budget.open(1, 100);
        let a = account.charge(Direction::Incoming, 60);
        let b = account.charge(Direction::Outgoing, 30);
        assert_eq!((account.held(), budget.total()), (90, 90));
        assert!(account.has_room(Direction::Incoming, 40));
        assert!(!account.has_room(Direction::Incoming, 41));
        drop(a);
        drop(b);
        assert_eq!((account.held(), budget.total()), (0, 0));
    }

    #[test]
    fn over_budget_the_largest_connection_is_shed_once() {
        let budget = MemoryBudget::new(100);
        let small = budget.open(1, 1000);
        let large = budget.open(2, 1000);
        let _s = small.charge(Direction::Outgoing, 10);
        let _l = large.charge(Direction::Outgoing, 80);
        assert!(!large.is_shed());
        let _more = small.charge(Direction::Incoming, 15);
        assert!(large.is_shed(), "105 > 100: the one holding 80 goes, whoever pushed it over");
        assert!(!small.is_shed());
        // Until the shed connection's bytes are freed, they count as leaving.
        let _again = small.charge(Direction::Incoming, 5);
        assert!(!small.is_shed());
    }

    #[test]
    fn closed_accounts_leave_the_registry() {
        let budget = MemoryBudget::new(100);
        let account = budget.open(7, 10);
        assert_eq!(budget.accounts().len(), 1);
        drop(account);
        assert!(budget.accounts().is_empty());
    }
}
