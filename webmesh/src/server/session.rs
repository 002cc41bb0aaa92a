//! One WebSocket connection: read frames, run their handlers, write replies.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Context;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::admission::Admit;
use super::connection::Outbound;
use super::dispatch::{dispatch, Mode};
use super::subscriptions;
use super::{Connection, DisconnectReason, Shared};
use crate::heartbeat::{Beat, Liveness};
use crate::protocol::{close_code, Codec, DecodeError, Envelope, Frame, Incoming, WireFormat};
use crate::CallError;

static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) async fn run(
    socket: WebSocket,
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
    codec: Option<Arc<dyn Codec>>,
    admit: Option<Admit>,
) {
    let (sink, stream) = socket.split();
    let (outbound, queue) = mpsc::channel(shared.outbound_queue);
    let initial = codec.clone().map(WireFormat::Custom).unwrap_or(WireFormat::MsgPack);
    let id = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed);
    let conn = Connection::new(id, peer, outbound, initial, shared.compression, shared.event_queue);
    let span = tracing::debug_span!("connection", id, peer = ?peer);
    serve(conn, sink, stream, queue, shared, codec, admit).instrument(span).await;
}

async fn serve(
    conn: Connection,
    sink: SplitSink<WebSocket, Message>,
    stream: SplitStream<WebSocket>,
    queue: mpsc::Receiver<Outbound>,
    shared: Arc<Shared>,
    codec: Option<Arc<dyn Codec>>,
    admit: Option<Admit>,
) {
    tracing::debug!("connected");
    let mut writer = tokio::spawn(write(sink, queue, conn.clone()));
    if let Some(admit) = admit {
        admit(&conn);
    }
    if let Some(hook) = &shared.hooks.on_connect {
        hook(&conn);
    }
    let handlers = TaskTracker::new();
    let (reason, close) = read(stream, &conn, &shared, codec, &handlers).await;
    tracing::debug!(%reason, "disconnected");
    if reason == DisconnectReason::Shutdown {
        // Let the calls under way answer before the close frame.
        handlers.close();
        if tokio::time::timeout(shared.shutdown_timeout, handlers.wait()).await.is_err() {
            tracing::warn!(running = handlers.len(), "handlers still running at shutdown");
        }
    }
    shared.hub.remove_connection(conn.id());
    // Stop the writer even if handlers still hold the connection; a peer
    // that does not read gets no close frame.
    let (code, message) = close.unwrap_or((1000, String::new()));
    if matches!(reason, DisconnectReason::TooSlow(_)) || !conn.try_close(code, message) {
        writer.abort();
    }
    if let Some(hook) = &shared.hooks.on_disconnect {
        hook(&conn, &reason);
    }
    if tokio::time::timeout(CLOSE_TIMEOUT, &mut writer).await.is_err() {
        writer.abort();
    }
}

/// How long the writer may take to send what is queued and the close frame.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why reading ended, and the close frame to send, if not a normal one.
type Ending = (DisconnectReason, Option<(u16, String)>);

fn shutting_down() -> Ending {
    (DisconnectReason::Shutdown, Some((close_code::GOING_AWAY, "server shutting down".into())))
}

async fn read(
    mut stream: SplitStream<WebSocket>,
    conn: &Connection,
    shared: &Arc<Shared>,
    codec: Option<Arc<dyn Codec>>,
    handlers: &TaskTracker,
) -> Ending {
    let mut shutdown = shared.shutdown.subscribe();
    let in_flight = Arc::new(Semaphore::new(shared.max_calls_in_flight));
    let mut liveness = Liveness::new(shared.heartbeat);
    // One timer, re-armed only when it fires: messages just stamp `liveness`.
    let timer = tokio::time::sleep_until(liveness.deadline());
    tokio::pin!(timer);
    loop {
        // At the limit of calls under way, stop reading: the flood waits in
        // the peer's socket, not in this server's memory.
        let permit = tokio::select! {
            biased;
            _ = shutdown.wait_for(|down| *down) => return shutting_down(),
            permit = in_flight.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return (DisconnectReason::Gone, None),
            },
        };
        let next = tokio::select! {
            biased;
            _ = shutdown.wait_for(|down| *down) => return shutting_down(),
            () = &mut timer => {
                match liveness.beat() {
                    Beat::Wait => {}
                    Beat::Ping => conn.try_ping(),
                    Beat::Dead => return (DisconnectReason::TimedOut, None),
                }
                timer.as_mut().reset(liveness.deadline());
                continue;
            }
            () = conn.ending() => {
                let reason = "a subscriber too slow for its lag policy".to_owned();
                return (DisconnectReason::TooSlow(reason.clone()), Some((close_code::POLICY, reason)));
            }
            next = stream.next() => next,
        };
        liveness.heard();
        let frame = match next {
            None => return (DisconnectReason::Gone, None),
            Some(Err(e)) => match close_code_for(&e) {
                Some(code) => return violation(code, e.to_string()),
                None => return (DisconnectReason::Transport(e.to_string()), None),
            },
            Some(Ok(Message::Text(text))) => Frame::Text(text.into()),
            Some(Ok(Message::Binary(bytes))) => Frame::Binary(bytes),
            Some(Ok(Message::Close(close))) => {
                let (code, reason) = close.map(|c| (c.code, c.reason.to_string())).unwrap_or((1005, String::new()));
                return (DisconnectReason::Closed { code, reason }, None);
            }
            // Pings are answered by the WebSocket layer; both are signs of life.
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
        };
        let format = match &codec {
            Some(codec) => Ok(WireFormat::Custom(codec.clone())),
            None => WireFormat::detect(&frame),
        };
        let decoded = format.and_then(|format| {
            let incoming = format.decode(frame, shared.max_message_size)?;
            conn.set_format(&format);
            Ok((format, incoming))
        });
        let (format, mode, path, payload) = match decoded {
            Ok((format, Incoming::Call { id, path, payload })) => (format, Mode::Call(id), path, payload),
            Ok((format, Incoming::Emit { path, payload })) => (format, Mode::Emit, path, payload),
            Ok((format, Incoming::Legacy { path, payload })) => (format, Mode::Legacy, path, payload),
            Ok((format, Incoming::Subscribe { id, pattern, options })) => {
                run_in_order(
                    handlers,
                    subscriptions::subscribe(shared.clone(), conn.clone(), format, id, pattern, options),
                );
                continue;
            }
            Ok((format, Incoming::Publish { id, topic, payload })) => {
                run_in_order(
                    handlers,
                    subscriptions::publish(shared.clone(), conn.clone(), format, id, topic, payload),
                );
                continue;
            }
            Ok((_, Incoming::Unsubscribe { id })) => {
                shared.hub.unsubscribe(conn.id(), id);
                continue;
            }
            Ok((_, _)) => return violation(close_code::PROTOCOL, "a client sent a message only servers send".into()),
            Err(DecodeError::BadCall { id, message }) => {
                let error = CallError::new(CallError::BAD_REQUEST, message);
                super::dispatch::answer(conn, &conn.format(), id, Err(error)).await;
                continue;
            }
            Err(e) => return violation(e.close_code(), e.to_string()),
        };
        let span = tracing::debug_span!("call", path = %path, mode = ?mode);
        let task = dispatch(shared.clone(), conn.clone(), format, mode, path, payload).instrument(span);
        run_in_order(handlers, holding(permit, task));
    }
}

/// The close code for a frame the WebSocket layer refused, if the peer is
/// to blame (rather than the network).
fn close_code_for(error: &axum::Error) -> Option<u16> {
    use tokio_tungstenite::tungstenite::Error;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        match e.downcast_ref::<Error>() {
            Some(Error::Capacity(_)) => return Some(close_code::TOO_BIG),
            Some(Error::Utf8(_)) => return Some(close_code::INVALID_DATA),
            Some(Error::Protocol(_)) => return Some(close_code::PROTOCOL),
            Some(_) => return None,
            None => source = e.source(),
        }
    }
    None
}

/// Keeps `permit` (a place among the calls under way) until `task` ends.
async fn holding(permit: OwnedSemaphorePermit, task: impl Future<Output = ()>) {
    task.await;
    drop(permit);
}

/// Polls a message's handler once, right away, and hands it to its own task
/// only if it has to wait. So handlers start in the order their messages
/// arrived (an emit that needs no waiting is done before the next call is
/// read), while a handler that waits never delays the next message.
fn run_in_order(handlers: &TaskTracker, task: impl Future<Output = ()> + Send + 'static) {
    let mut task = Box::pin(task);
    // A future may be polled by any waker: the task's own takes over on spawn.
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    if task.as_mut().poll(&mut cx).is_pending() {
        handlers.spawn(task);
    }
}

fn violation(code: u16, message: String) -> Ending {
    tracing::debug!(code, %message, "closing a connection that broke the protocol");
    let reason = close_code::reason(&message);
    (DisconnectReason::Protocol(message), Some((code, reason)))
}

async fn write(mut sink: SplitSink<WebSocket, Message>, mut queue: mpsc::Receiver<Outbound>, conn: Connection) {
    let mut events = Vec::new();
    loop {
        let mut next = tokio::select! {
            item = queue.recv() => match item {
                Some(item) => Some(item),
                None => return,
            },
            () = conn.events().ready.notified() => None,
        };
        // Send everything already queued, replies first, then events, and flush once.
        loop {
            while let Some(item) = next.take().or_else(|| queue.try_recv().ok()) {
                let sent = match item {
                    Outbound::Frame(frame) => sink.feed((*frame).into()).await,
                    Outbound::Ping => sink.feed(Message::Ping(Default::default())).await,
                    Outbound::Close(close) => {
                        let (code, reason) = *close;
                        let _ = sink.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
                        return;
                    }
                };
                if sent.is_err() {
                    return;
                }
            }
            let missed = conn.events().drain_into(&mut events);
            if missed.is_empty() && events.is_empty() {
                break;
            }
            // Tell each subscription what it lost before what follows the gap.
            if !missed.is_empty() {
                let format = conn.format();
                for (id, missed) in missed {
                    if let Ok(frame) = format.encode(&Envelope::lagged(id, missed), conn.compression()) {
                        if sink.feed(frame.into()).await.is_err() {
                            return;
                        }
                    }
                }
            }
            for frame in events.drain(..) {
                if sink.feed(frame.into()).await.is_err() {
                    return;
                }
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}
