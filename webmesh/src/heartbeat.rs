//! Liveness: ping a quiet peer, give up on one that stays silent.

use std::time::Duration;

use tokio::time::Instant;

/// The default interval of silence after which a peer is pinged: 25 s.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(25);

/// The default time a pinged peer has to answer: 20 s.
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// When to ping and when to give up, as socket.io does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Heartbeat {
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self { interval: DEFAULT_PING_INTERVAL, timeout: DEFAULT_PING_TIMEOUT }
    }
}

/// What the timer says to do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Beat {
    /// Nothing: sleep until [`Liveness::deadline`] again.
    Wait,
    /// Send a ping.
    Ping,
    /// The peer is gone.
    Dead,
}

/// One connection's liveness. Receiving only stamps a time, so that the
/// timer is not touched per message.
pub(crate) struct Liveness {
    heartbeat: Option<Heartbeat>,
    heard: Instant,
    pinged: Option<Instant>,
}

impl Liveness {
    pub(crate) fn new(heartbeat: Option<Heartbeat>) -> Self {
        Self { heartbeat, heard: Instant::now(), pinged: None }
    }

    /// The peer sent something: it is alive.
    pub(crate) fn heard(&mut self) {
        self.heard = Instant::now();
        self.pinged = None;
    }

    /// When to look again; far away when heartbeats are off.
    pub(crate) fn deadline(&self) -> Instant {
        match (self.heartbeat, self.pinged) {
            (None, _) => crate::deadline::far_future(),
            (Some(h), None) => crate::deadline::saturating_add(self.heard, h.interval),
            (Some(h), Some(pinged)) => crate::deadline::saturating_add(pinged, h.timeout),
        }
    }

    /// Called when [`deadline`](Self::deadline) passed.
    pub(crate) fn beat(&mut self) -> Beat {
        let now = Instant::now();
        if now < self.deadline() {
            return Beat::Wait;
        }
        match (self.heartbeat, self.pinged) {
            (None, _) => Beat::Wait,
            (Some(_), None) => {
                self.pinged = Some(now);
                Beat::Ping
            }
            (Some(_), Some(_)) => Beat::Dead,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ping_then_give_up_unless_heard() {
        let heartbeat = Heartbeat { interval: Duration::from_secs(25), timeout: Duration::from_secs(20) };
        let mut liveness = Liveness::new(Some(heartbeat));
        assert_eq!(liveness.beat(), Beat::Wait);
        tokio::time::advance(Duration::from_secs(25)).await;
        assert_eq!(liveness.beat(), Beat::Ping);
        tokio::time::advance(Duration::from_secs(10)).await;
        liveness.heard();
        assert_eq!(liveness.beat(), Beat::Wait);
        tokio::time::advance(Duration::from_secs(25)).await;
        assert_eq!(liveness.beat(), Beat::Ping);
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(liveness.beat(), Beat::Dead);
    }

    #[tokio::test]
    async fn a_heartbeat_of_duration_max_never_fires_and_never_overflows() {
        let mut liveness = Liveness::new(Some(Heartbeat { interval: Duration::MAX, timeout: Duration::MAX }));
        assert!(liveness.deadline() > Instant::now());
        assert_eq!(liveness.beat(), Beat::Wait);
    }
}
