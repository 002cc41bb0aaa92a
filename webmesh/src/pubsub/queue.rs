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
        state.events.push_back((frame, subs));
        drop(state);
        self.ready.notify_one();
        pushed
    }

    /// Moves the queued events into `events`, and returns the lag counts to
    /// report before them.
    pub(crate) fn drain_into(&self, events: &mut Vec<Frame>) -> BTreeMap<u64, u64> {
        let mut state = self.state();
        events.extend(state.events.drain(..).map(|(frame, _)| frame));
        std::mem::take(&mut state.missed)
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
        let mut events = Vec::new();
        let missed = queue.drain_into(&mut events);
        assert_eq!(missed.into_iter().collect::<Vec<_>>(), vec![(7, 1), (8, 1)]);
        assert_eq!(events, vec![frame(2), frame(3)]);
        assert_eq!(queue.len(), 0);
    }
}
