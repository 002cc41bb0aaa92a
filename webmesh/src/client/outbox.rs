//! The frames waiting to be written, bounded in bytes.
//!
//! Callers wait for room (backpressure), the connection task takes frames
//! in order, and a call its caller gave up on leaves the queue at once, so
//! that it is never sent and never holds room.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::protocol::Frame;

/// What one queued frame costs beyond its bytes: the entry and its frame.
const ENTRY_OVERHEAD: usize = 64;

/// A frame waiting to be written, and the call it belongs to, if any.
pub(crate) struct Queued {
    pub(crate) id: Option<u64>,
    pub(crate) frame: Frame,
    /// The room it takes in the outbox, given back when it is written or
    /// dropped; none for a control message.
    _room: Option<OwnedSemaphorePermit>,
}

pub(crate) struct Outbox {
    entries: Mutex<VecDeque<Queued>>,
    room: Arc<Semaphore>,
    capacity: usize,
    ready: Notify,
}

/// The outbox is closed: the client is closed.
#[derive(Debug)]
pub(crate) struct OutboxClosed;

impl Outbox {
    /// An outbox that holds up to `capacity` bytes (a larger frame is let in alone).
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, u32::MAX as usize);
        Self { entries: Mutex::default(), room: Arc::new(Semaphore::new(capacity)), capacity, ready: Notify::new() }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, VecDeque<Queued>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `frame`, waiting for room.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a cancelled push queues nothing.
    pub(crate) async fn push(&self, id: Option<u64>, frame: Frame) -> Result<(), OutboxClosed> {
        let cost = (frame.len() + ENTRY_OVERHEAD).min(self.capacity) as u32;
        let room = self.room.clone().acquire_many_owned(cost).await.map_err(|_| OutboxClosed)?;
        self.entries().push_back(Queued { id, frame, _room: Some(room) });
        self.ready.notify_one();
        Ok(())
    }

    /// Whether some room is free now.
    pub(crate) fn has_room(&self) -> bool {
        self.room.available_permits() > 0
    }

    /// Waits until some room is free, or the outbox closes.
    pub(crate) async fn room_freed(&self) {
        let _ = self.room.acquire().await;
    }

    /// Queues a small control message (an unsubscribe) without waiting for
    /// room: it must not be lost to a full outbox, and there is at most one
    /// per subscription ever made. Dropped once the outbox is closed.
    pub(crate) fn push_control(&self, frame: Frame) {
        if self.room.is_closed() {
            return;
        }
        self.entries().push_back(Queued { id: None, frame, _room: None });
        self.ready.notify_one();
    }

    /// The next frame, waiting for one.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a frame is taken only when this returns it.
    pub(crate) async fn pop(&self) -> Queued {
        loop {
            if let Some(queued) = self.try_pop() {
                return queued;
            }
            // `notify_one` keeps a permit when nobody waits, so a push between
            // `try_pop` and here is not missed.
            self.ready.notified().await;
        }
    }

    pub(crate) fn try_pop(&self) -> Option<Queued> {
        self.entries().pop_front()
    }

    /// Takes call `id` out, if it is still queued.
    pub(crate) fn remove(&self, id: u64) -> bool {
        let mut entries = self.entries();
        match entries.iter().position(|q| q.id == Some(id)) {
            Some(at) => entries.remove(at).is_some(),
            None => false,
        }
    }

    /// Takes out every queued call, keeping emits and other messages.
    pub(crate) fn remove_calls(&self) {
        self.entries().retain(|q| q.id.is_none());
    }

    /// Refuses new frames and drops the queued ones.
    pub(crate) fn close(&self) {
        self.room.close();
        self.entries().clear();
    }

    /// How many frames are queued.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(bytes: usize) -> Frame {
        Frame::Binary(vec![0; bytes].into())
    }

    #[tokio::test]
    async fn a_full_outbox_makes_pushers_wait_until_frames_are_taken() {
        let outbox = Arc::new(Outbox::new(1000));
        outbox.push(None, frame(500)).await.unwrap();
        assert!(outbox.room.available_permits() < 500, "over the byte bound");
        let waiting = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.push(Some(7), frame(500)).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(outbox.pop().await);
        waiting.await.unwrap().unwrap();
        assert_eq!(outbox.try_pop().unwrap().id, Some(7));
    }

    #[tokio::test]
    async fn a_frame_larger_than_the_whole_outbox_goes_in_alone() {
        let outbox = Outbox::new(100);
        outbox.push(None, frame(10_000)).await.unwrap();
        assert_eq!(outbox.room.available_permits(), 0);
        drop(outbox.try_pop());
        assert_eq!(outbox.room.available_permits(), 100);
    }

    #[tokio::test]
    async fn removed_calls_give_their_room_back() {
        let outbox = Outbox::new(1000);
        outbox.push(Some(1), frame(800)).await.unwrap();
        assert!(outbox.room.available_permits() < 800);
        assert!(outbox.remove(1));
        assert!(!outbox.remove(1));
        assert_eq!(outbox.room.available_permits(), 1000);
        // Control messages go in even when the outbox is full, never after it closed.
        outbox.push(Some(2), frame(1000)).await.unwrap();
        outbox.push_control(frame(10));
        assert_eq!(outbox.len(), 2);
        outbox.close();
        outbox.push_control(frame(10));
        assert!(outbox.push(None, frame(1)).await.is_err());
        assert_eq!(outbox.len(), 0);
    }
}
