//! Runs one message's handler and encodes its answer.

use std::sync::Arc;

use serde::Serialize;

use super::{Connection, Shared};
use crate::extract::CallParts;
use crate::handler::{BoxedHandler, Reply, ReplyKind};
use crate::protocol::{Envelope, Frame, WireFormat};
use crate::routing::PathParams;
use crate::{CallError, Payload};

/// How the sender expects an answer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mode {
    /// A native call: always answered, with a reply or an error.
    Call(u64),
    /// A native emit: never answered.
    Emit,
    /// A 0.1.2 message: answered with `{path, data}` when there is data.
    Legacy,
}

/// What 0.1.2 answered for a path without a handler.
const LEGACY_NOT_FOUND: &str = "Path not found";

pub(crate) async fn dispatch(
    shared: Arc<Shared>,
    conn: Connection,
    format: WireFormat,
    mode: Mode,
    path: String,
    payload: Payload,
) {
    // Timed only when someone listens: quiet by default, and free then.
    let started = tracing::enabled!(tracing::Level::DEBUG).then(std::time::Instant::now);
    let path: Arc<str> = path.into();
    let routed = shared.routes.at(&path);
    let served = routed.is_some();
    let handler = match routed {
        Some((handler, params)) => Some((handler.clone(), params)),
        None => shared.not_found.clone().map(|h| (h, PathParams::from([]))),
    };
    let reply = match handler {
        Some((handler, params)) => {
            let parts = CallParts { connection: conn.clone(), path: path.clone(), params, shared: shared.clone() };
            run_counted(&shared, handler, parts, payload).await
        }
        None if matches!(mode, Mode::Legacy) => Reply::value(LEGACY_NOT_FOUND),
        None => Reply::error(CallError::not_found(&path)),
    };
    // A not-found handler that found nothing either (a mesh's forwarding)
    // answers a 0.1.2 client as 0.1.2 did.
    let reply = match reply.0 {
        ReplyKind::Error(e) if !served && matches!(mode, Mode::Legacy) && e.code() == CallError::NOT_FOUND => {
            Reply::value(LEGACY_NOT_FOUND)
        }
        other => Reply(other),
    };
    if let Some(started) = started {
        let outcome = match &reply.0 {
            ReplyKind::Value(_) | ReplyKind::Encoded(_) => "ok",
            ReplyKind::Error(error) => error.code(),
        };
        tracing::debug!(outcome, elapsed_us = started.elapsed().as_micros() as u64, "handled");
    }
    respond(&conn, &format, mode, &path, reply).await;
}

/// Runs the handler of `path` for `conn` and returns its reply, or `None`
/// when no route serves `path` (the not-found handler is not asked): a
/// mesh's calls to its own node, and the calls other nodes forward to it.
pub(crate) async fn call_local(shared: &Arc<Shared>, conn: Connection, path: &str, payload: Payload) -> Option<Reply> {
    let (handler, params) = shared.routes.at(path)?;
    let handler = handler.clone();
    let parts = CallParts { connection: conn, path: path.into(), params, shared: shared.clone() };
    Some(run_counted(shared, handler, parts, payload).await)
}

/// Runs `handler`, counted in the server's figures (its calls in flight,
/// handled and failed), whoever asked: a connection, or a mesh's node.
async fn run_counted(shared: &Shared, handler: BoxedHandler, parts: CallParts, payload: Payload) -> Reply {
    let running = shared.counters.start();
    let reply = handler.call(parts, payload).await;
    running.done(matches!(reply.0, ReplyKind::Error(_)));
    reply
}

/// Answers a message refused before its handler ran.
pub(crate) async fn refuse(conn: Connection, format: WireFormat, mode: Mode, path: String, error: CallError) {
    tracing::debug!(path, %error, "refused a message");
    respond(&conn, &format, mode, &path, Reply::error(error)).await;
}

/// Encodes the answer `reply` calls for, drops the decoded value, and only
/// then waits for room in the connection's queue.
async fn respond(conn: &Connection, format: &WireFormat, mode: Mode, path: &str, reply: Reply) {
    let Some(frame) = answer_frame(conn, format, mode, path, reply) else { return };
    // The client may be gone by now; nothing is left to tell it.
    let _ = conn.send(frame).await;
}

fn answer_frame(conn: &Connection, format: &WireFormat, mode: Mode, path: &str, reply: Reply) -> Option<Frame> {
    let frame = match (mode, &reply.0) {
        // Native MessagePack takes an encoded value as it is.
        (Mode::Call(id), ReplyKind::Encoded(data)) if matches!(format, WireFormat::MsgPack) => {
            Ok(crate::protocol::encoded_reply(id, &data.0, conn.compression()))
        }
        (Mode::Call(id), ReplyKind::Encoded(data)) => encode(conn, format, &Envelope::Reply { id, data }),
        (Mode::Call(id), ReplyKind::Value(data)) => encode(conn, format, &Envelope::Reply { id, data }),
        (Mode::Call(id), ReplyKind::Error(error)) => encode(conn, format, &Envelope::error(id, error)),
        (Mode::Emit, ReplyKind::Error(error)) => {
            tracing::debug!(path = %path, %error, "emit failed");
            return None;
        }
        (Mode::Emit, ReplyKind::Value(_) | ReplyKind::Encoded(_)) => return None,
        (Mode::Legacy, ReplyKind::Encoded(data)) if data.0[..] == [0xc0] => return None,
        (Mode::Legacy, ReplyKind::Encoded(data)) => encode(conn, format, &Envelope::Push { path, data }),
        (Mode::Legacy, ReplyKind::Value(data)) if is_nil(data) => return None,
        (Mode::Legacy, ReplyKind::Value(data)) => encode(conn, format, &Envelope::Push { path, data }),
        (Mode::Legacy, ReplyKind::Error(error)) => {
            let data = LegacyError { error: error.code(), message: error.message() };
            encode(conn, format, &Envelope::Push { path, data: &data })
        }
    };
    match (frame, mode) {
        (Ok(frame), _) => Some(frame),
        (Err(e), Mode::Call(id)) => {
            tracing::error!(path = %path, "{e}");
            encode(conn, format, &Envelope::error(id, &CallError::internal(e))).ok()
        }
        (Err(e), _) => {
            tracing::error!(path = %path, "{e}");
            None
        }
    }
}

/// Answers call `id` with an empty reply, or with `error`; used where there
/// is nothing to send but the outcome (subscriptions, publications, calls
/// whose envelope was unusable beyond its id).
pub(crate) async fn answer(conn: &Connection, format: &WireFormat, id: u64, outcome: Result<(), CallError>) {
    let frame = match &outcome {
        Ok(()) => encode(conn, format, &Envelope::Reply { id, data: &() }),
        Err(error) => encode(conn, format, &Envelope::error(id, error)),
    };
    if let Ok(frame) = frame {
        // The client may be gone by now; nothing is left to tell it.
        let _ = conn.send(frame).await;
    }
}

fn encode<T: Serialize + ?Sized>(
    conn: &Connection,
    format: &WireFormat,
    envelope: &Envelope<'_, T>,
) -> Result<Frame, String> {
    format.encode(envelope, conn.compression()).map_err(|e| e.to_string())
}

/// The error of a 0.1.2 exchange, which has no error envelope.
#[derive(Serialize)]
struct LegacyError<'a> {
    error: &'a str,
    message: &'a str,
}

/// Whether a reply is `()` or `None`, which 0.1.2 clients get no answer for.
fn is_nil(data: &(dyn erased_serde::Serialize + Send)) -> bool {
    rmp_serde::to_vec(data).is_ok_and(|bytes| bytes == [0xc0])
}
