//! The connection task: writes queued frames, reads and routes the server's.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::shared::ClientShared;
use crate::protocol::Frame;

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Runs until the server closes the connection or every client handle is dropped.
pub(crate) async fn drive(
    socket: Socket,
    mut queue: mpsc::Receiver<Frame>,
    shared: Arc<ClientShared>,
) {
    let (mut sink, mut stream) = socket.split();
    let reason = loop {
        tokio::select! {
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
            received = stream.next() => match received {
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
    tracing::debug!(
        reason = reason.as_deref().unwrap_or("closed"),
        "client connection ended"
    );
    shared.close(reason);
}
