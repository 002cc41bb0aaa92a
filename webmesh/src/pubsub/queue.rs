//! The events waiting to be written to one connection.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use tokio::sync::Notify;

use super::LagPolicy;
use crate::protocol::Frame;

/// A bounded queue of encoded events, with the count of events each
/// subscription lost to lag since it was last told.
pub(crate) struct EventQueue {
    state: Mutex<State>,
    /// Wakes the connection's writer.
    pub(crate) ready: Notify,
}

struct State {
    events: VecDeque<(Frame, Box<[u64]>)>,
    missed: BTreeMap<u64, u64>,
    capacity: usize,
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
    pub(crate) fn new(capacity: usize) -> Self {
        let state = State { events: VecDeque::new(), missed: BTreeMap::new(), capacity: capacity.max(1) };
        Self { state: Mutex::new(state), ready: Notify::new() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `frame`, an event for the subscriptions `subs`.
    pub(crate) fn push(&self, frame: Frame, subs: &[u64], policy: LagPolicy) -> Pushed {
        let mut state = self.state();
        let mut pushed = Pushed::Queued;
        if state.events.len() >= state.capacity {
            match policy {
                LagPolicy::Disconnect => return Pushed::Overflow,
                LagPolicy::DropNewest => {
                    state.count_missed(subs);
                    return Pushed::DroppedNewest;
                }
                LagPolicy::DropOldest => {
                    if let Some((_, oldest)) = state.events.pop_front() {
                        state.count_missed(&oldest);
                    }
                    pushed = Pushed::DroppedOldest;
                }
            }
        }
        state.events.push_back((frame, subs.into()));
        drop(state);
        self.ready.notify_one();
        pushed
    }

    /// Takes the lag counts to report, then the queued events.
    pub(crate) fn drain(&self) -> (BTreeMap<u64, u64>, Vec<Frame>) {
        let mut state = self.state();
        let missed = std::mem::take(&mut state.missed);
        let events = state.events.drain(..).map(|(frame, _)| frame).collect();
        (missed, events)
    }

    /// How many events wait.
    pub(crate) fn len(&self) -> usize {
        self.state().events.len()
    }
}

impl State {
    fn count_missed(&mut self, subs: &[u64]) {
        for sub in subs {
            *self.missed.entry(*sub).or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8) -> Frame {
        Frame::Binary(vec![n].into())
    }

    #[test]
    fn policies() {
        let queue = EventQueue::new(2);
        assert_eq!(queue.push(frame(1), &[7], LagPolicy::DropOldest), Pushed::Queued);
        assert_eq!(queue.push(frame(2), &[7], LagPolicy::DropOldest), Pushed::Queued);
        assert_eq!(queue.push(frame(3), &[7], LagPolicy::DropOldest), Pushed::DroppedOldest);
        assert_eq!(queue.push(frame(4), &[8], LagPolicy::DropNewest), Pushed::DroppedNewest);
        assert_eq!(queue.push(frame(5), &[9], LagPolicy::Disconnect), Pushed::Overflow);
        let (missed, events) = queue.drain();
        assert_eq!(missed.into_iter().collect::<Vec<_>>(), vec![(7, 1), (8, 1)]);
        assert_eq!(events, vec![frame(2), frame(3)]);
        assert_eq!(queue.len(), 0);
    }
}
