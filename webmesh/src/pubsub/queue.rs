//! The events waiting to be written to one connection, bounded in count
//! and in bytes.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use super::LagPolicy;
use crate::memory::{Account, Direction};
use crate::protocol::Frame;

/// A bounded queue of encoded events, with the count of events each
/// subscription lost to lag since it was last told.
pub(crate) struct EventQueue {
    state: Mutex<State>,
    /// How many events may wait; fixed, so read without the lock.
    capacity: usize,
    /// The connection's bytes: each queued event is counted on it until it
    /// is written or dropped.
    account: Arc<Account>,
    /// Wakes the connection's writer.
    pub(crate) ready: Notify,
}

/// The subscriptions an event is for: nearly always one.
enum Subs {
    One(u64),
    Many(Box<[u64]>),
}

impl Subs {
    fn as_slice(&self) -> &[u64] {
        match self {
            Subs::One(id) => std::slice::from_ref(id),
            Subs::Many(ids) => ids,
        }
    }
}

struct State {
    events: VecDeque<(Frame, Subs)>,
    /// The bytes of `events`.
    bytes: usize,
    missed: BTreeMap<u64, u64>,
    /// Cleared for good: the connection ended, nothing more is queued.
    closed: bool,
}

/// What became of a pushed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    /// Queued, after dropping the oldest event.
    DroppedOldest,
    /// Not queued.
    DroppedNewest,
    /// Not queued: the connection must be closed.
    Overflow,
}

impl EventQueue {
    pub(crate) fn new(capacity: usize, account: Arc<Account>) -> Self {
        let state = State { events: VecDeque::new(), bytes: 0, missed: BTreeMap::new(), closed: false };
        Self { state: Mutex::new(state), capacity: capacity.max(1), account, ready: Notify::new() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `frame`, an event for the subscriptions `subs`, if the queue
    /// has room for one more event and `account` for its bytes; else the lag
    /// policy decides.
    pub(crate) fn push(&self, frame: Frame, subs: &[u64], policy: LagPolicy) -> Pushed {
        let account = &self.account;
        let mut state = self.state();
        if state.closed {
            return Pushed::DroppedNewest;
        }
        let mut pushed = Pushed::Queued;
        let len = frame.len();
        let full = |state: &State| state.events.len() >= self.capacity || !account.has_room_for_event(len);
        if full(&state) {
            match policy {
                LagPolicy::Disconnect => return Pushed::Overflow,
                LagPolicy::DropNewest => {
                    state.count_missed(subs);
                    return Pushed::DroppedNewest;
                }
                // Larger than the connection may hold by itself: keep the rest.
                LagPolicy::DropOldest if len > account.limit() => {
                    state.count_missed(subs);
                    return Pushed::DroppedNewest;
                }
                LagPolicy::DropOldest => {
                    while full(&state) {
                        let Some((frame, oldest)) = state.events.pop_front() else { break };
                        state.bytes -= frame.len();
                        account.release(Direction::Events, frame.len());
                        state.count_missed(oldest.as_slice());
                    }
                    pushed = Pushed::DroppedOldest;
                }
            }
        }
        let subs = match subs {
            [one] => Subs::One(*one),
            many => Subs::Many(many.into()),
        };
        account.add(Direction::Events, len);
        state.bytes += len;
        state.events.push_back((frame, subs));
        drop(state);
        self.ready.notify_one();
        pushed
    }

    /// Counts events that subscriptions `subs` lost without them being queued.
    pub(crate) fn count_missed(&self, subs: &[u64]) {
        self.state().count_missed(subs);
        self.ready.notify_one();
    }

    /// Counts `lost` events that subscriptions `subs` lost elsewhere (on a
    /// mesh link that fed them).
    pub(crate) fn count_missed_by(&self, subs: &[u64], lost: u64) {
        self.state().count_missed_by(subs, lost.max(1));
        self.ready.notify_one();
    }

    /// Records that subscriptions `subs` may have lost an unknown number of
    /// events (a mesh link that fed them broke): reported as 0 missed.
    pub(crate) fn count_unknown_loss(&self, subs: &[u64]) {
        let mut state = self.state();
        for sub in subs {
            state.missed.insert(*sub, 0);
        }
        drop(state);
        self.ready.notify_one();
    }

    /// Drops every event, and every later one: its connection ended.
    pub(crate) fn clear(&self) {
        let mut state = self.state();
        state.closed = true;
        state.events.clear();
        state.missed.clear();
        self.account.release(Direction::Events, std::mem::take(&mut state.bytes));
    }

    /// Moves the queued events into `events`, and returns the lag counts to
    /// report before them.
    /// Their bytes stay counted until the [`Written`] returned is dropped.
    pub(crate) fn drain_into(&self, events: &mut Vec<Frame>) -> (BTreeMap<u64, u64>, Written) {
        let mut state = self.state();
        events.extend(state.events.drain(..).map(|(frame, _)| frame));
        let written = Written { account: self.account.clone(), bytes: std::mem::take(&mut state.bytes) };
        (std::mem::take(&mut state.missed), written)
    }

    /// How many events may wait.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many events wait.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.state().events.len()
    }
}

/// The bytes of drained events, released in one go when dropped, once they
/// are written (or the writer gave up).
#[must_use]
pub(crate) struct Written {
    account: Arc<Account>,
    bytes: usize,
}

impl Drop for Written {
    fn drop(&mut self) {
        self.account.release(Direction::Events, self.bytes);
    }
}

impl Drop for EventQueue {
    fn drop(&mut self) {
        let bytes = self.state.get_mut().map(|s| s.bytes).unwrap_or_else(|poisoned| poisoned.into_inner().bytes);
        self.account.release(Direction::Events, bytes);
    }
}

impl State {
    /// One more lost event each; a count of 0 stands for an unknown number
    /// and stays so.
    fn count_missed(&mut self, subs: &[u64]) {
        self.count_missed_by(subs, 1);
    }

    fn count_missed_by(&mut self, subs: &[u64], lost: u64) {
        for sub in subs {
            self.missed.entry(*sub).and_modify(|n| *n = n.saturating_add(lost * (*n != 0) as u64)).or_insert(lost);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8) -> Frame {
        Frame::Binary(vec![n].into())
    }

    fn account(limit: usize) -> Arc<Account> {
        crate::memory::MemoryBudget::new(usize::MAX).open(1, limit)
    }

    fn drained(queue: &EventQueue) -> (Vec<(u64, u64)>, Vec<Frame>) {
        let mut events = Vec::new();
        let (missed, written) = queue.drain_into(&mut events);
        drop(written);
        (missed.into_iter().collect(), events)
    }

    #[test]
    fn policies() {
        let account = account(1 << 20);
        let queue = EventQueue::new(2, account.clone());
        assert_eq!(queue.push(frame(1), &[7], LagPolicy::DropOldest), Pushed::Queued);
        assert_eq!(queue.push(frame(2), &[7], LagPolicy::DropOldest), Pushed::Queued);
        assert_eq!(queue.push(frame(3), &[7], LagPolicy::DropOldest), Pushed::DroppedOldest);
        assert_eq!(queue.push(frame(4), &[8], LagPolicy::DropNewest), Pushed::DroppedNewest);
        assert_eq!(queue.push(frame(5), &[9], LagPolicy::Disconnect), Pushed::Overflow);
        assert_eq!(account.held(), 2);
        assert_eq!(drained(&queue), (vec![(7, 1), (8, 1)], vec![frame(2), frame(3)]));
        assert_eq!(queue.len(), 0);
        assert_eq!(account.held(), 0, "drained events are released once written");
    }

    #[test]
    fn the_bytes_the_connection_may_hold_bound_the_queue() {
        let account = account(10);
        let queue = EventQueue::new(1000, account.clone());
        let big = |n: u8| Frame::Binary(vec![n; 4].into());
        for n in 0..3 {
            queue.push(big(n), &[1], LagPolicy::DropOldest);
        }
        assert_eq!(account.held(), 8, "a third event of 4 bytes does not fit in 10");
        assert_eq!(queue.push(big(9), &[2], LagPolicy::DropNewest), Pushed::DroppedNewest);
        assert_eq!(queue.push(Frame::Binary(vec![0; 11].into()), &[1], LagPolicy::DropOldest), Pushed::DroppedNewest);
        assert_eq!(drained(&queue), (vec![(1, 2), (2, 1)], vec![big(1), big(2)]), "too large alone: only it is lost");
    }
}
