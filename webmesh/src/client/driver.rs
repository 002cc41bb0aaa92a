//! The connection task: writes queued frames, reads and routes the server's.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::shared::ClientShared;
use crate::heartbeat::{Beat, Heartbeat, Liveness};
use crate::protocol::Frame;

/// How long [`Client::close`](super::Client::close) waits for the server to answer the close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Runs until the server closes the connection or every client handle is dropped.
pub(crate) async fn drive(
    socket: Socket,
    mut queue: mpsc::Receiver<Frame>,
    shared: Arc<ClientShared>,
    heartbeat: Option<Heartbeat>,
) {
    let (mut sink, mut stream) = socket.split();
    let mut liveness = Liveness::new(heartbeat);
    let timer = tokio::time::sleep_until(liveness.deadline());
    tokio::pin!(timer);
    let reason = loop {
        tokio::select! {
            () = &mut timer => {
                match liveness.beat() {
                    Beat::Wait => {}
                    Beat::Ping => {
                        if let Err(e) = sink.send(Message::Ping(Default::default())).await {
                            break Some(e.to_string());
                        }
                    }
                    Beat::Dead => break Some("the server stopped answering pings".to_owned()),
                }
                timer.as_mut().reset(liveness.deadline());
            }
            queued = queue.recv() => match queued {
                Some(frame) => {
                    // Send everything already queued, then flush once.
                    let mut result = sink.feed(Message::from(frame)).await;
                    while let (Ok(()), Ok(more)) = (&result, queue.try_recv()) {
                        result = sink.feed(Message::from(more)).await;
                    }
                    if let Err(e) = result.and(sink.flush().await) {
                        break Some(e.to_string());
                    }
                }
                None => {
                    let _ = sink.send(Message::Close(None)).await;
                    break Some("the client was dropped".to_owned());
                }
            },
            () = shared.close_requested.notified() => {
                // Write what is queued, then close and wait for the server's answer.
                while let Ok(frame) = queue.try_recv() {
                    if sink.feed(Message::from(frame)).await.is_err() {
                        break;
                    }
                }
                let _ = sink.send(Message::Close(None)).await;
                let drain = async { while let Some(Ok(_)) = stream.next().await {} };
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, drain).await;
                break Some("closed by the client".to_owned());
            }
            received = stream.next() => match received.inspect(|_| liveness.heard()) {
                Some(Ok(Message::Text(text))) => shared.receive(Frame::Text(text.into())),
                Some(Ok(Message::Binary(bytes))) => shared.receive(Frame::Binary(bytes)),
                Some(Ok(Message::Close(close))) => {
                    break close.map(|c| format!("closed by the server ({}{}{})", u16::from(c.code), if c.reason.is_empty() { "" } else { ": " }, c.reason));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break Some(e.to_string()),
                None => break None,
            },
        }
    };
    // Refuse new calls before failing the waiting ones, so none is left hanging.
    drop(queue);
    tracing::debug!(reason = reason.as_deref().unwrap_or("closed"), "client connection ended");
    shared.close(reason);
}
