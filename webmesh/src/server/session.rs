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
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::admission::Admit;
use super::connection::{Ending, Outbound};
use super::dispatch::{self, Mode};
use super::subscriptions;
use super::watch::{Waiting, Watch};
use super::wills;
use super::{Connection, DisconnectReason, Shared};
use crate::memory::{Charge, Direction};
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
    let account = shared.memory.open(id, shared.connection_memory);
    let conn = Connection::new(id, peer, outbound, initial, shared.compression, shared.event_queue, account);
    let span = tracing::debug_span!("connection", id, peer = ?peer);
    serve(conn, sink, stream, queue, shared, codec, admit).instrument(span).await;
}

/// How many times more calls a mesh link may have under way than a client.
const LINK_CALLS_FACTOR: usize = 16;

async fn serve(
    conn: Connection,
    sink: SplitSink<WebSocket, Message>,
    mut stream: SplitStream<WebSocket>,
    queue: mpsc::Receiver<Outbound>,
    shared: Arc<Shared>,
    codec: Option<Arc<dyn Codec>>,
    admit: Option<Admit>,
) {
    tracing::debug!("connected");
    let mut writer = tokio::spawn(write(sink, queue, conn.clone()));
    if let Some(admit) = admit {
        run_hook("authenticate", || admit(&conn));
    }
    if let Some(hook) = &shared.hooks.on_connect {
        run_hook("on_connect", || hook(&conn));
    }
    let handlers = TaskTracker::new();
    let mut aborts = None;
    let watch = Watch::new(&shared, &conn);
    let Ending { reason, close } = read(&mut stream, &conn, &shared, codec, &handlers, &mut aborts, watch).await;
    tracing::debug!(%reason, "disconnected");
    // Closed for what it holds (or would not take): its handlers go too,
    // with their bytes, and its close frame does not wait behind what it
    // did not read. Others' handlers finish, as before.
    let held_too_much = matches!(reason, DisconnectReason::TooSlow(_) | DisconnectReason::OverBudget(_));
    if let Some(aborts) = aborts.as_ref().filter(|_| held_too_much) {
        aborts.cancel();
    }
    if reason == DisconnectReason::Shutdown {
        // Let the calls under way answer before the close frame. Reading
        // goes on, only so that pings are answered: a peer whose heartbeat
        // is shorter than the drain keeps waiting for its replies. What it
        // sends meanwhile is not handled.
        handlers.close();
        let answering_pings = async {
            while let Some(Ok(_)) = stream.next().await {}
            std::future::pending::<()>().await
        };
        let drained = async {
            tokio::select! {
                () = handlers.wait() => {}
                () = answering_pings => {}
            }
        };
        if tokio::time::timeout(shared.shutdown_timeout, drained).await.is_err() {
            tracing::warn!(running = handlers.len(), "handlers still running at shutdown");
        }
    }
    shared.hub.remove_connection(&conn);
    shared.wills.ended(&conn, &reason);
    conn.events().clear();
    let (code, message) = close.clone().unwrap_or((close_code::NORMAL, String::new()));
    if held_too_much || !conn.try_close(code, message) {
        conn.hurry(close);
    }
    if let Some(hook) = &shared.hooks.on_disconnect {
        run_hook("on_disconnect", || hook(&conn, &reason));
    }
    if tokio::time::timeout(CLOSE_TIMEOUT, &mut writer).await.is_err() {
        writer.abort();
    }
    conn.account().retire();
}

/// Runs a user's hook, catching its panic: the session must still let go of
/// what the connection holds (its subscriptions, its bytes).
fn run_hook(name: &str, hook: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(hook)).is_err() {
        tracing::error!(hook = name, "a connection hook panicked");
    }
}

/// How long the writer may take to send what is queued and the close frame.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a hurried close frame may take.
const HURRIED_CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

fn gone() -> Ending {
    Ending { reason: DisconnectReason::Gone, close: None }
}

async fn read(
    stream: &mut SplitStream<WebSocket>,
    conn: &Connection,
    shared: &Arc<Shared>,
    codec: Option<Arc<dyn Codec>>,
    handlers: &TaskTracker,
    aborts: &mut Option<CancellationToken>,
    mut watch: Watch,
) -> Ending {
    // A mesh link carries the calls of all its node's callers: one slow
    // route must not hold up the others behind it. Only with the mesh's
    // secret: anyone may pass for a node of a mesh without one.
    let limit = match conn.is_vouched_relay() {
        true => shared.max_calls_in_flight.saturating_mul(LINK_CALLS_FACTOR),
        false => shared.max_calls_in_flight,
    };
    let in_flight = Arc::new(Semaphore::new(limit.min(Semaphore::MAX_PERMITS)));
    let account = conn.account().clone();
    // Numbers the SUBSCRIBEs, so that an UNSUBSCRIBE cancels the right one.
    let mut subscribes = 0u64;
    // Numbers the WILLs.
    let mut will_messages = 0u64;
    loop {
        // At the limit of messages under way, in number or in bytes, stop
        // reading: the flood waits in the peer's socket, not in this
        // server's memory.
        let permit = match watch.until(in_flight.clone().acquire_owned(), Waiting::ForServer).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return gone(),
            Err(ending) => return ending,
        };
        if let Err(ending) = watch.until(account.room_for_incoming(), Waiting::ForServer).await {
            return ending;
        }
        let next = match watch.until(stream.next(), Waiting::ForPeer).await {
            Ok(next) => next,
            Err(ending) => return ending,
        };
        watch.heard();
        let frame = match next {
            None => return gone(),
            Some(Err(e)) => match close_code_for(&e) {
                Some(code) => return violation(code, e.to_string()),
                None => return Ending { reason: DisconnectReason::Transport(e.to_string()), close: None },
            },
            Some(Ok(Message::Text(text))) => Frame::Text(text.into()),
            Some(Ok(Message::Binary(bytes))) => Frame::Binary(bytes),
            Some(Ok(Message::Close(close))) => {
                let (code, reason) = close.map(|c| (c.code, c.reason.to_string())).unwrap_or((1005, String::new()));
                return Ending { reason: DisconnectReason::Closed { code, reason }, close: None };
            }
            // Pings are answered by the WebSocket layer; both are signs of life.
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
        };
        let format = match &codec {
            Some(codec) => Ok(WireFormat::Custom(codec.clone())),
            None => WireFormat::detect(&frame),
        };
        // The frame's format, kept to answer a message wrong beyond its id
        // in the format it came in.
        let mut spoken = None;
        let decoded = format.and_then(|format| {
            spoken = Some(format.clone());
            let incoming = format.decode(frame, shared.max_message_size)?;
            conn.set_format(&format);
            Ok((format, incoming))
        });
        let (format, mode, path, payload) = match decoded {
            Ok((format, Incoming::Call { id, path, payload })) => (format, Mode::Call(id), path, payload),
            Ok((format, Incoming::Emit { path, payload })) => (format, Mode::Emit, path, payload),
            Ok((format, Incoming::Legacy { path, payload })) => (format, Mode::Legacy, path, payload),
            Ok((format, Incoming::Subscribe { id, pattern, options })) => {
                let charge = match weigh(conn, pattern.len() + options.weight()) {
                    Ok(charge) => charge,
                    Err(error) => {
                        refuse(handlers, aborts, permit, conn, format, Mode::Call(id), String::new(), error);
                        continue;
                    }
                };
                subscribes += 1;
                conn.subscribing(id, subscribes);
                let task =
                    subscriptions::subscribe(shared.clone(), conn.clone(), format, id, subscribes, pattern, options);
                run_in_order(handlers, aborts, holding(permit, Some(charge), task));
                continue;
            }
            Ok((format, Incoming::Publish { id, topic, payload })) => {
                let charge = match weigh(conn, topic.len() + payload.weight()) {
                    Ok(charge) => charge,
                    Err(error) => {
                        refuse(handlers, aborts, permit, conn, format, Mode::Call(id), topic, error);
                        continue;
                    }
                };
                let task = subscriptions::publish(shared.clone(), conn.clone(), format, id, topic, payload);
                run_in_order(handlers, aborts, holding(permit, Some(charge), task));
                continue;
            }
            Ok((format, Incoming::Will { id, session, topic, delay_ms, payload })) => {
                let weight = topic.as_ref().map_or(0, String::len) + payload.weight();
                let charge = match weigh(conn, weight) {
                    Ok(charge) => charge,
                    Err(error) => {
                        let topic = topic.unwrap_or_default();
                        refuse(handlers, aborts, permit, conn, format, Mode::Call(id), topic, error);
                        continue;
                    }
                };
                // Numbered, so that the last one sent is the one in force,
                // whichever authorisation finishes first.
                will_messages += 1;
                let task = wills::will(
                    shared.clone(),
                    conn.clone(),
                    format,
                    id,
                    will_messages,
                    session,
                    topic,
                    delay_ms,
                    payload,
                );
                run_in_order(handlers, aborts, holding(permit, Some(charge), task));
                continue;
            }
            Ok((_, Incoming::Unsubscribe { id })) => {
                conn.unsubscribing(id, || {
                    shared.hub.unsubscribe(conn.id(), id);
                });
                continue;
            }
            Ok((_, _)) => return violation(close_code::PROTOCOL, "a client sent a message only servers send".into()),
            Err(DecodeError::BadCall { id, message }) => {
                let error = CallError::new(CallError::BAD_REQUEST, message);
                let format = spoken.unwrap_or_else(|| conn.format());
                refuse(handlers, aborts, permit, conn, format, Mode::Call(id), String::new(), error);
                continue;
            }
            Err(e) => return violation(e.close_code(), e.to_string()),
        };
        let charge = match weigh(conn, path.len() + payload.weight()) {
            Ok(charge) => charge,
            Err(error) => {
                refuse(handlers, aborts, permit, conn, format, mode, path, error);
                continue;
            }
        };
        let span = tracing::debug_span!("call", path = %path, mode = ?mode);
        let task = dispatch::dispatch(shared.clone(), conn.clone(), format, mode, path, payload).instrument(span);
        run_in_order(handlers, aborts, holding(permit, Some(charge), task));
    }
}

/// Charges a message's weight (its bytes, and what it may take decoded) to
/// its connection while it is handled, or refuses one heavier than the
/// connection may hold at all.
fn weigh(conn: &Connection, weight: usize) -> Result<Charge, CallError> {
    let account = conn.account();
    if weight > account.limit() {
        let message = format!(
            "the message would take about {weight} bytes decoded, more than the {} its connection may hold",
            account.limit()
        );
        return Err(CallError::new(CallError::TOO_LARGE, message));
    }
    Ok(account.charge(Direction::Incoming, weight))
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

/// Answers a message refused before its handler ran, holding its place
/// among the messages under way until the answer is queued.
#[allow(clippy::too_many_arguments)]
fn refuse(
    handlers: &TaskTracker,
    aborts: &mut Option<CancellationToken>,
    permit: OwnedSemaphorePermit,
    conn: &Connection,
    format: WireFormat,
    mode: Mode,
    path: String,
    error: CallError,
) {
    run_in_order(handlers, aborts, holding(permit, None, dispatch::refuse(conn.clone(), format, mode, path, error)));
}

/// Keeps `permit` (a place among the messages under way) and `charge` (their
/// bytes) until `task` ends.
async fn holding(permit: OwnedSemaphorePermit, charge: Option<Charge>, task: impl Future<Output = ()>) {
    task.await;
    drop((permit, charge));
}

/// Polls a message's handler once, right away, and hands it to its own task
/// only if it has to wait. So handlers start in the order their messages
/// arrived (an emit that needs no waiting is done before the next call is
/// read), while a handler that waits never delays the next message.
///
/// A handler that waits stops when `aborts` is cancelled: when its
/// connection is closed for what it holds, its bytes go with it.
fn run_in_order(
    handlers: &TaskTracker,
    aborts: &mut Option<CancellationToken>,
    task: impl Future<Output = ()> + Send + 'static,
) {
    let mut task = Box::pin(task);
    // A future may be polled by any waker: the task's own takes over on spawn.
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    if task.as_mut().poll(&mut cx).is_pending() {
        // Made for the first handler that waits: idle connections pay nothing.
        let abort = aborts.get_or_insert_with(CancellationToken::new).clone();
        handlers.spawn(async move {
            tokio::select! {
                biased;
                () = task => {}
                () = abort.cancelled() => {}
            }
        });
    }
}

fn violation(code: u16, message: String) -> Ending {
    tracing::debug!(code, %message, "closing a connection that broke the protocol");
    let reason = close_code::reason(&message);
    Ending { reason: DisconnectReason::Protocol(message), close: Some((code, reason)) }
}

async fn write(mut sink: SplitSink<WebSocket, Message>, mut queue: mpsc::Receiver<Outbound>, conn: Connection) {
    let hurried = conn.hurried();
    tokio::pin!(hurried);
    let close = tokio::select! {
        biased;
        close = &mut hurried => close,
        () = write_all(&mut sink, &mut queue, &conn) => return,
    };
    // What waits is dropped, and the close frame goes first if it can.
    drop(queue);
    conn.events().clear();
    if let Some((code, reason)) = close {
        let frame = Message::Close(Some(CloseFrame { code, reason: reason.into() }));
        let _ = tokio::time::timeout(HURRIED_CLOSE_TIMEOUT, sink.send(frame)).await;
    }
}

/// Writes what is queued until the close frame is sent or the peer is gone.
async fn write_all(sink: &mut SplitSink<WebSocket, Message>, queue: &mut mpsc::Receiver<Outbound>, conn: &Connection) {
    let mut events = Vec::new();
    loop {
        let mut next = tokio::select! {
            item = queue.recv() => match item {
                Some(item) => Some(item),
                None => return,
            },
            () = conn.events().ready.notified() => None,
        };
        conn.writing();
        // Send everything already queued, replies first, then events, and flush once.
        let mut yielded = false;
        loop {
            while let Some(item) = next.take().or_else(|| queue.try_recv().ok()) {
                let sent = match item {
                    Outbound::Frame(queued) => {
                        let (frame, charge) = *queued;
                        let sent = sink.feed(frame.into()).await;
                        drop(charge);
                        // Each frame taken is progress, and a sign of life.
                        conn.wrote();
                        sent
                    }
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
            let (missed, written) = conn.events().drain_into(&mut events);
            if missed.is_empty() && events.is_empty() {
                // Before the write to the socket, once, let the tasks
                // already woken run: replies that arrive together (a batch
                // of answers from NATS) then go out in one write, not one
                // each.
                if yielded {
                    break;
                }
                yielded = true;
                tokio::task::yield_now().await;
                continue;
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
                conn.wrote();
            }
            drop(written);
        }
        if sink.flush().await.is_err() {
            return;
        }
        conn.written();
    }
}
