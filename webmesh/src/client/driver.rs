//! The connection task: writes queued frames, reads and routes the server's,
//! keeps the connection alive, and reconnects when it drops.
//!
//! Reading never waits on writing: the reader and the writer are two
//! futures polled side by side, so a server that stops reading until its
//! replies are read (as webmesh's does at its in-flight limit) always gets
//! them read. The task only moves bytes: user code (push handlers) runs
//! where its panic is caught, and however the task ends, a guard fails every
//! waiting call and ends every stream.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::dial::Dialer;
use super::reconnect::{ConnectionState, Reconnect};
use super::shared::ClientShared;
use crate::heartbeat::{Beat, Heartbeat, Liveness};
use crate::protocol::{close_code, Envelope, Frame};

/// How long [`Client::close`](super::Client::close) waits for the server to answer the close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How the connection is kept: heartbeats, and how to open it again.
pub(crate) struct Link {
    pub(crate) heartbeat: Option<Heartbeat>,
    pub(crate) reconnect: Option<Reconnect>,
    pub(crate) dialer: Dialer,
}

/// How one connection ended.
enum Ended {
    /// Every client handle was dropped, or `close` was called: done.
    ByClient(String),
    /// The connection dropped (the server closed it, the network failed,
    /// the server stopped answering pings).
    Dropped(String),
    /// The server broke the protocol: close with this code, then as `Dropped`.
    Broken(u16, String),
}

/// Whether the server is alive, as the reader and the writer of one
/// connection see it: it is while it sends, and while it takes what is sent
/// (a server busy reading is not dead). The writer pings when asked.
struct Pulse {
    liveness: Mutex<Liveness>,
    ping: Notify,
}

impl Pulse {
    fn liveness(&self) -> std::sync::MutexGuard<'_, Liveness> {
        self.liveness.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn deadline(&self) -> tokio::time::Instant {
        self.liveness().deadline()
    }
}

/// Closes the client however the task ends, a panic or a runtime shutting
/// down included, so that no caller or stream waits for a dead task.
struct CloseOnExit<'a> {
    shared: &'a ClientShared,
    reason: Option<String>,
}

impl Drop for CloseOnExit<'_> {
    fn drop(&mut self) {
        let reason = self.reason.take().unwrap_or_else(|| "the client's connection task ended".to_owned());
        self.shared.close(Some(reason));
    }
}

/// Runs until the client is closed, reconnecting as `link` allows.
pub(crate) async fn drive(mut socket: Socket, shared: Arc<ClientShared>, link: Link) {
    let mut exit = CloseOnExit { shared: &shared, reason: None };
    let reason = loop {
        let reason = match connection(socket, &shared, link.heartbeat).await {
            Ended::ByClient(reason) => break reason,
            Ended::Dropped(reason) | Ended::Broken(_, reason) => reason,
        };
        tracing::debug!(reason, "client connection dropped");
        let Some(policy) = link.reconnect else { break reason };
        shared.connection_lost(&reason);
        match reconnect(&shared, &link.dialer, policy, reason).await {
            Some(next) => socket = next,
            None => break shared.stop_reason(),
        }
    };
    exit.reason = Some(reason);
}

/// Dials until connected, or until the client is closed meanwhile (`None`).
async fn reconnect(shared: &ClientShared, dialer: &Dialer, policy: Reconnect, dropped: String) -> Option<Socket> {
    let mut last_error = Some(dropped);
    for attempt in 1u32.. {
        shared.state.send_replace(ConnectionState::Reconnecting { attempt, last_error: last_error.take() });
        let dialled = async {
            tokio::time::sleep(policy.delay(attempt)).await;
            let mut socket = dialer.dial().await?;
            resubscribe(shared, &mut socket).await?;
            Ok::<_, crate::Error>(socket)
        };
        let dialled = tokio::select! {
            dialled = dialled => dialled,
            () = shared.stop.cancelled() => return None,
        };
        match dialled {
            Ok(socket) => {
                // Events published while disconnected are lost: say so
                // before the first event of the new connection.
                shared.subscriptions.interrupted();
                if let Some(relay) = shared.relay.get() {
                    relay.lost(None, None);
                }
                shared.generation.send_modify(|g| *g += 1);
                shared.state.send_replace(ConnectionState::Connected);
                tracing::debug!(attempt, "client reconnected");
                return Some(socket);
            }
            Err(e) => {
                tracing::debug!(attempt, "reconnecting failed: {e}");
                last_error = Some(e.to_string());
            }
        }
    }
    None
}

/// Makes every subscription again on a new connection, before anything else
/// is sent, so that no event after them is missed.
async fn resubscribe(shared: &ClientShared, socket: &mut Socket) -> Result<(), crate::Error> {
    // The will first: it is in force again, and cancels the one the dropped
    // connection left waiting out its delay.
    if let Some(frame) = shared.will_to_restore() {
        socket.feed(Message::from(frame)).await?;
    }
    for (id, pattern, options) in shared.subscriptions.snapshot() {
        let envelope = Envelope::Subscribe { id, pattern: &pattern, data: &options };
        let frame = shared.format.encode(&envelope, shared.compression).map_err(|e| crate::Error::Protocol(e.0))?;
        socket.feed(Message::from(frame)).await?;
    }
    socket.flush().await?;
    Ok(())
}

/// Serves one connection until it ends.
async fn connection(socket: Socket, shared: &ClientShared, heartbeat: Option<Heartbeat>) -> Ended {
    let generation = *shared.generation.borrow();
    let (mut sink, stream) = socket.split();
    let pulse = Pulse { liveness: Mutex::new(Liveness::new(heartbeat)), ping: Notify::new() };
    let reader = read(stream, shared, &pulse);
    tokio::pin!(reader);
    let closing = tokio::select! {
        ended = &mut reader => match ended {
            Ended::Broken(code, reason) => Err((code, reason)),
            ended => return ended,
        },
        written = write(&mut sink, shared, &pulse) => match written {
            Ok(()) => Ok(shared.stop_reason()),
            Err(reason) => return Ended::Dropped(reason),
        },
        () = shared.recycled(generation) => {
            return Ended::Dropped("a legacy call timed out, and its late answer could reach a later call".into())
        }
        // A server that never reads cannot hold `close` up for ever.
        () = async { shared.stop.cancelled().await; tokio::time::sleep(CLOSE_TIMEOUT).await } => {
            return Ended::ByClient(shared.stop_reason())
        }
    };
    let (code, reason) = match closing {
        // Everything queued is written: close, and read until the server answers.
        Ok(closing) => (shared.stop_code.load(std::sync::atomic::Ordering::Relaxed), closing),
        Err(broken) => broken,
    };
    let close = CloseFrame { code: CloseCode::from(code), reason: close_code::reason(&reason).into() };
    // A peer that never reads cannot hold the close up for ever.
    let sent = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(Some(close)))).await;
    if code != close_code::NORMAL && !shared.stop.is_cancelled() {
        return Ended::Broken(code, reason);
    }
    if let Ok(Ok(())) = sent {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, reader).await;
    }
    Ended::ByClient(reason)
}

/// Reads the server's frames and routes them; watches the heartbeat.
async fn read(mut stream: SplitStream<Socket>, shared: &ClientShared, pulse: &Pulse) -> Ended {
    let timer = tokio::time::sleep_until(pulse.deadline());
    tokio::pin!(timer);
    loop {
        tokio::select! {
            () = &mut timer => {
                match pulse.liveness().beat() {
                    Beat::Wait => {}
                    Beat::Ping => pulse.ping.notify_one(),
                    Beat::Dead => return Ended::Dropped("the server stopped answering pings".to_owned()),
                }
                timer.as_mut().reset(pulse.deadline());
            }
            received = stream.next() => {
                let frame = match received.inspect(|_| pulse.liveness().heard()) {
                    Some(Ok(Message::Text(text))) => Frame::Text(text.into()),
                    Some(Ok(Message::Binary(bytes))) => Frame::Binary(bytes),
                    Some(Ok(Message::Close(close))) => {
                        let reason = close.map(|c| {
                            let separator = if c.reason.is_empty() { "" } else { ": " };
                            format!("closed by the server ({}{separator}{})", u16::from(c.code), c.reason)
                        });
                        return Ended::Dropped(reason.unwrap_or_else(|| "closed by the server".to_owned()));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Ended::Dropped(e.to_string()),
                    None => return Ended::Dropped("the connection ended".to_owned()),
                };
                // A frame that does not decode ends the connection as a protocol violation.
                if let Err(e) = shared.receive(frame) {
                    return Ended::Broken(e.close_code(), format!("the server sent an invalid message: {e}"));
                }
            }
        }
    }
}

/// Writes queued frames, batching what is ready into one flush, and pings
/// when the reader asks. Returns `Ok` once asked to stop and everything
/// queued is written.
async fn write(sink: &mut SplitSink<Socket, Message>, shared: &ClientShared, pulse: &Pulse) -> Result<(), String> {
    loop {
        let first = tokio::select! {
            biased;
            queued = shared.outbox.pop() => queued,
            () = pulse.ping.notified() => {
                sink.send(Message::Ping(Default::default())).await.map_err(|e| e.to_string())?;
                continue;
            }
            () = shared.stop.cancelled() => match shared.outbox.try_pop() {
                Some(queued) => queued,
                None => return Ok(()),
            },
        };
        let mut next = Some(first);
        while let Some(queued) = next.take().or_else(|| shared.outbox.try_pop()) {
            // A call whose caller gave up (timeout, cancellation) is never sent.
            if queued.id.is_some_and(|id| !shared.claim(id)) {
                continue;
            }
            sink.feed(Message::from(queued.frame)).await.map_err(|e| e.to_string())?;
            // Past the sink's buffer, a frame goes in only as the server
            // takes bytes: it is alive, even if too busy to answer a ping.
            pulse.liveness().heard();
        }
        sink.flush().await.map_err(|e| e.to_string())?;
        pulse.liveness().heard();
    }
}
