//! What every wait of a session watches: the server's shutdown, a request
//! to end the connection, the memory budget, the heartbeat and the writer.

use std::future::Future;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::connection::Ending;
use super::{Connection, DisconnectReason, Shared};
use crate::heartbeat::{Beat, Liveness};
use crate::protocol::close_code;

/// Whether the wait is the server's doing (reading paused for the messages
/// under way) or the peer's (waiting for its next message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waiting {
    ForPeer,
    ForServer,
}

pub(crate) struct Watch {
    conn: Connection,
    shutdown: watch::Receiver<bool>,
    liveness: Liveness,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// The writer's frames when last looked at, and when that count last
    /// changed.
    writes: u64,
    progressed: Instant,
    write_timeout: Duration,
}

impl Watch {
    pub(crate) fn new(shared: &Shared, conn: &Connection) -> Self {
        let liveness = Liveness::new(shared.heartbeat);
        let mut watch = Self {
            conn: conn.clone(),
            shutdown: shared.shutdown.subscribe(),
            timer: Box::pin(tokio::time::sleep_until(liveness.deadline())),
            liveness,
            writes: conn.writes(),
            progressed: Instant::now(),
            write_timeout: shared.write_timeout,
        };
        watch.rearm();
        watch
    }

    /// A message came: the peer is alive.
    pub(crate) fn heard(&mut self) {
        self.liveness.heard();
    }

    /// One timer, re-armed only when it fires: messages just stamp the time.
    fn rearm(&mut self) {
        let write_check = crate::deadline::saturating_add(Instant::now(), self.write_timeout);
        self.timer.as_mut().reset(self.liveness.deadline().min(write_check));
    }

    /// Waits for `fut`, unless the connection must end first.
    pub(crate) async fn until<F: Future>(&mut self, fut: F, waiting: Waiting) -> Result<F::Output, Ending> {
        let mut fut = std::pin::pin!(fut);
        let account = self.conn.account().clone();
        // Most waits are over at once: look at the flags, poll once, and
        // register with nobody.
        if *self.shutdown.borrow() {
            return Err(shutting_down());
        }
        if let Some(ending) = self.ending(&account) {
            return Err(ending);
        }
        let polled = fut.as_mut().poll(&mut Context::from_waker(futures_util::task::noop_waker_ref()));
        if let Poll::Ready(out) = polled {
            return Ok(out);
        }
        loop {
            let timer = &mut self.timer;
            let event = tokio::select! {
                biased;
                _ = self.shutdown.wait_for(|down| *down) => return Err(shutting_down()),
                () = account.ending.notified() => Event::Ending,
                () = timer => Event::Timer,
                out = &mut fut => Event::Done(out),
            };
            match event {
                Event::Done(out) => return Ok(out),
                Event::Timer => self.beat(waiting)?,
                Event::Ending => {
                    if let Some(ending) = self.ending(&account) {
                        return Err(ending);
                    }
                }
            }
        }
    }

    /// Why the connection must end, if it must.
    fn ending(&self, account: &crate::memory::Account) -> Option<Ending> {
        match self.conn.ended() {
            Some(ending) => Some(ending),
            None if account.is_shed() => Some(over_budget(account.held())),
            None => None,
        }
    }

    fn beat(&mut self, waiting: Waiting) -> Result<(), Ending> {
        // Stuck: in one write for the timeout, with no frame taken meanwhile.
        let writes = self.conn.writes();
        if writes != self.writes {
            self.progressed = Instant::now();
        }
        let stuck = self.conn.writing_for().min(self.progressed.elapsed());
        if stuck >= self.write_timeout {
            let message = format!("took nothing written to it for {} s", stuck.as_secs());
            return Err(Ending { reason: DisconnectReason::TooSlow(message), close: None });
        }
        // A peer that takes what is written to it is alive; so is one whose
        // messages wait unread only because this server's handlers are slow.
        let nothing_for_peer = self.conn.account().waiting_to_be_written() == 0;
        if writes != self.writes || (waiting == Waiting::ForServer && nothing_for_peer) {
            self.writes = writes;
            self.liveness.heard();
        }
        match self.liveness.beat() {
            Beat::Wait => {}
            Beat::Ping => self.conn.try_ping(),
            Beat::Dead => return Err(Ending { reason: DisconnectReason::TimedOut, close: None }),
        }
        self.rearm();
        Ok(())
    }
}

enum Event<T> {
    Done(T),
    Timer,
    Ending,
}

pub(crate) fn shutting_down() -> Ending {
    Ending { reason: DisconnectReason::Shutdown, close: Some((close_code::GOING_AWAY, "server shutting down".into())) }
}

fn over_budget(held: usize) -> Ending {
    let message = format!("the server's memory budget is reached, and this connection held the most ({held} bytes)");
    Ending {
        reason: DisconnectReason::OverBudget(message.clone()),
        close: Some((close_code::TRY_AGAIN_LATER, close_code::reason(&message))),
    }
}
