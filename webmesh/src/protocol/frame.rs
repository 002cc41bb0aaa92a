use bytes::Bytes;

/// One WebSocket data frame, independent of the transport crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A text frame; the bytes are valid UTF-8.
    Text(Bytes),
    /// A binary frame.
    Binary(Bytes),
}

impl Frame {
    pub(crate) fn text(s: String) -> Self {
        Frame::Text(Bytes::from(s))
    }

    /// Its size in bytes.
    pub(crate) fn len(&self) -> usize {
        match self {
            Frame::Text(b) | Frame::Binary(b) => b.len(),
        }
    }
}

impl From<Frame> for axum::extract::ws::Message {
    fn from(frame: Frame) -> Self {
        match frame {
            Frame::Binary(b) => Self::Binary(b),
            Frame::Text(b) => match axum::extract::ws::Utf8Bytes::try_from(b) {
                Ok(text) => Self::Text(text),
                // Unreachable: text frames are built from `String`s.
                Err(_) => Self::Binary(Bytes::new()),
            },
        }
    }
}

impl From<Frame> for tokio_tungstenite::tungstenite::Message {
    fn from(frame: Frame) -> Self {
        use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
        match frame {
            Frame::Binary(b) => Message::Binary(b),
            Frame::Text(b) => match Utf8Bytes::try_from(b) {
                Ok(text) => Message::Text(text),
                Err(_) => Message::Binary(Bytes::new()),
            },
        }
    }
}
