//! Reconnection: when, how often, and what callers see meanwhile.

use std::time::Duration;

/// How a client reconnects after its connection drops.
///
/// The delay before attempt `n` is `initial * 2^(n-1)`, capped at `max`,
/// of which a random part (up to half) is taken off, so that many clients
/// of a restarted server do not all come back at the same instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconnect {
    /// The delay before the first attempt (default 100 ms).
    pub initial_delay: Duration,
    /// The longest delay between attempts (default 10 s).
    pub max_delay: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Self { initial_delay: Duration::from_millis(100), max_delay: Duration::from_secs(10) }
    }
}

impl Reconnect {
    /// The delay before attempt `attempt` (from 1), with jitter.
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(20);
        let delay = self.initial_delay.saturating_mul(1 << exponent).min(self.max_delay);
        let jitter = delay.mul_f64(fastrand::f64() / 2.0);
        delay - jitter
    }
}

/// What calls do while the client is reconnecting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WhileDisconnected {
    /// Wait for the connection to come back, up to the call's timeout (the
    /// default). Emits and calls made meanwhile are sent once reconnected.
    #[default]
    Wait,
    /// Fail at once with [`Error::Closed`](crate::Error::Closed): calls
    /// made while reconnecting, and calls still queued (not sent) when the
    /// connection drops. Emits already queued are sent once reconnected.
    FailFast,
}

/// Where a client's connection stands; see [`Client::state`](super::Client::state).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Connected.
    Connected,
    /// The connection dropped; this is attempt `attempt` to reconnect.
    Reconnecting {
        /// The attempt under way, from 1.
        attempt: u32,
        /// Why the previous attempt failed, e.g. `connection refused with
        /// 403: ...` after a credential expired; on the first attempt, why
        /// the connection dropped.
        last_error: Option<String>,
    },
    /// Closed for good: by [`Client::close`](super::Client::close), by
    /// dropping every handle, or after a drop without reconnection.
    Closed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_at_most_half_jitter() {
        let policy = Reconnect { initial_delay: Duration::from_millis(100), max_delay: Duration::from_secs(1) };
        for (attempt, full) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1000), (40, 1000)] {
            for _ in 0..50 {
                let delay = policy.delay(attempt).as_millis() as u64;
                assert!((full / 2..=full).contains(&delay), "attempt {attempt}: {delay} ms");
            }
        }
    }
}
