//! The connection task: writes queued frames, reads and routes the server's,
//! keeps the connection alive, and reconnects when it drops.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::reconnect::{ConnectionState, Dialer, Reconnect};
use super::shared::ClientShared;
use crate::heartbeat::{Beat, Heartbeat, Liveness};
use crate::protocol::{Envelope, Frame};

/// How long [`Client::close`](super::Client::close) waits for the server to answer the close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A frame waiting to be written, and the call it belongs to, if any.
pub(crate) struct Queued {
    pub(crate) id: Option<u64>,
    pub(crate) frame: Frame,
}

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
}

/// Runs until the client is closed, reconnecting as `link` allows.
pub(crate) async fn drive(
    mut socket: Socket,
    mut queue: mpsc::Receiver<Queued>,
    shared: Arc<ClientShared>,
    link: Link,
) {
    let reason = loop {
        let reason = match connection(socket, &mut queue, &shared, link.heartbeat).await {
            Ended::ByClient(reason) => break Some(reason),
            Ended::Dropped(reason) => reason,
        };
        tracing::debug!(reason, "client connection dropped");
        let Some(policy) = link.reconnect else { break Some(reason) };
        shared.connection_lost(&reason);
        match reconnect(&mut queue, &shared, &link.dialer, policy).await {
            Some(next) => socket = next,
            None => break Some(reason),
        }
    };
    // Refuse new calls before failing the waiting ones, so none is left hanging.
    drop(queue);
    shared.close(reason);
}

/// Dials until connected, or until the client is closed meanwhile (`None`).
async fn reconnect(
    queue: &mut mpsc::Receiver<Queued>,
    shared: &ClientShared,
    dialer: &Dialer,
    policy: Reconnect,
) -> Option<Socket> {
    for attempt in 1u32.. {
        shared.state.send_replace(ConnectionState::Reconnecting { attempt });
        tokio::select! {
            () = tokio::time::sleep(policy.delay(attempt)) => {}
            () = shared.close_requested.notified() => return None,
        }
        if queue.is_closed() {
            // Every handle is gone: nobody is left to reconnect for.
            return None;
        }
        match dialer.dial().await {
            Ok(mut socket) => {
                // Subscriptions first, so that no event after them is missed.
                for (id, pattern, options) in shared.subscriptions.snapshot() {
                    let envelope = Envelope::Subscribe { id, pattern: &pattern, data: &options };
                    if let Ok(frame) = shared.format.encode(&envelope, shared.compression) {
                        let _ = socket.feed(Message::from(frame)).await;
                    }
                }
                if socket.flush().await.is_ok() {
                    shared.state.send_replace(ConnectionState::Connected);
                    tracing::debug!(attempt, "client reconnected");
                    return Some(socket);
                }
            }
            Err(e) => tracing::debug!(attempt, "reconnecting failed: {e}"),
        }
    }
    None
}

/// Serves one connection until it ends.
async fn connection(
    socket: Socket,
    queue: &mut mpsc::Receiver<Queued>,
    shared: &ClientShared,
    heartbeat: Option<Heartbeat>,
) -> Ended {
    let (mut sink, mut stream) = socket.split();
    let mut liveness = Liveness::new(heartbeat);
    let timer = tokio::time::sleep_until(liveness.deadline());
    tokio::pin!(timer);
    loop {
        tokio::select! {
            () = &mut timer => {
                match liveness.beat() {
                    Beat::Wait => {}
                    Beat::Ping => {
                        if let Err(e) = sink.send(Message::Ping(Default::default())).await {
                            return Ended::Dropped(e.to_string());
                        }
                    }
                    Beat::Dead => return Ended::Dropped("the server stopped answering pings".to_owned()),
                }
                timer.as_mut().reset(liveness.deadline());
            }
            queued = queue.recv() => match queued {
                Some(first) => {
                    if let Err(e) = write_ready(&mut sink, queue, shared, first).await {
                        return Ended::Dropped(e);
                    }
                }
                None => {
                    let _ = sink.send(Message::Close(None)).await;
                    return Ended::ByClient("the client was dropped".to_owned());
                }
            },
            () = shared.close_requested.notified() => {
                close(sink, stream, queue).await;
                return Ended::ByClient("closed by the client".to_owned());
            }
            received = stream.next() => match received.inspect(|_| liveness.heard()) {
                Some(Ok(Message::Text(text))) => shared.receive(Frame::Text(text.into())),
                Some(Ok(Message::Binary(bytes))) => shared.receive(Frame::Binary(bytes)),
                Some(Ok(Message::Close(close))) => {
                    let reason = close.map(|c| {
                        let separator = if c.reason.is_empty() { "" } else { ": " };
                        format!("closed by the server ({}{separator}{})", u16::from(c.code), c.reason)
                    });
                    return Ended::Dropped(reason.unwrap_or_else(|| "closed by the server".to_owned()));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Ended::Dropped(e.to_string()),
                None => return Ended::Dropped("the connection ended".to_owned()),
            },
        }
    }
}

/// Writes `first` and everything else already queued, then flushes once.
async fn write_ready(
    sink: &mut SplitSink<Socket, Message>,
    queue: &mut mpsc::Receiver<Queued>,
    shared: &ClientShared,
    first: Queued,
) -> Result<(), String> {
    let mut next = Some(first);
    while let Some(Queued { id, frame }) = next.take().or_else(|| queue.try_recv().ok()) {
        if let Some(id) = id {
            shared.mark_sent(id);
        }
        sink.feed(Message::from(frame)).await.map_err(|e| e.to_string())?;
    }
    sink.flush().await.map_err(|e| e.to_string())
}

/// Writes what is queued, then closes and waits for the server's answer.
async fn close(
    mut sink: SplitSink<Socket, Message>,
    mut stream: SplitStream<Socket>,
    queue: &mut mpsc::Receiver<Queued>,
) {
    while let Ok(Queued { frame, .. }) = queue.try_recv() {
        if sink.feed(Message::from(frame)).await.is_err() {
            break;
        }
    }
    let _ = sink.send(Message::Close(None)).await;
    let drain = async { while let Some(Ok(_)) = stream.next().await {} };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, drain).await;
}
