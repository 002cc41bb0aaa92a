//! Bytes received and held for a reader that has not read them yet: each
//! subscription, `Pushes` stream and blocking push handler has a budget, so
//! that a reader that falls behind costs its budget, not the process.

use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) struct Budget {
    held: AtomicUsize,
    limit: usize,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Self {
        Self { held: AtomicUsize::new(0), limit: limit.max(1) }
    }

    /// What `bytes` cost: a message larger than the whole budget fits alone.
    fn cost(&self, bytes: usize) -> usize {
        bytes.min(self.limit)
    }

    /// Takes `bytes` if they fit; `false` if the reader is too far behind.
    pub(crate) fn take(&self, bytes: usize) -> bool {
        let cost = self.cost(bytes);
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held + cost <= self.limit).then_some(held + cost)
            })
            .is_ok()
    }

    /// Gives back what `take(bytes)` took, once the reader has it.
    pub(crate) fn give_back(&self, bytes: usize) {
        self.held.fetch_sub(self.cost(bytes), Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_bounds_bytes_and_lets_one_large_message_in_alone() {
        let budget = Budget::new(100);
        assert!(budget.take(60));
        assert!(!budget.take(60));
        assert!(budget.take(40));
        budget.give_back(60);
        budget.give_back(40);
        assert!(budget.take(10_000), "larger than the budget, alone");
        assert!(!budget.take(1));
        budget.give_back(10_000);
        assert!(budget.take(1));
    }
}
