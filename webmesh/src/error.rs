//! The error of every fallible webmesh operation.

use std::time::Duration;

use crate::CallError;

/// What went wrong with a call, an emit, a connection or a server.
///
/// Match on the variant to tell the cases apart:
///
/// ```no_run
/// # async fn demo(client: webmesh::Client) {
/// match client.call::<String>("/greet", &"ada").await {
///     Ok(greeting) => println!("{greeting}"),
///     Err(webmesh::Error::NotFound { path }) => eprintln!("nobody serves {path}"),
///     Err(webmesh::Error::Handler(e)) if e.code() == "rate_limited" => eprintln!("later"),
///     Err(e) => eprintln!("{e}"),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server has no handler for the path.
    #[error("no handler for `{path}`")]
    NotFound {
        /// The path that was called.
        path: String,
    },
    /// The server refused the request's payload: it did not decode into the
    /// type the handler takes. The handler did not run.
    #[error("invalid payload at `{field}`: {message}")]
    BadPayload {
        /// The path to the offending field (`.` for the payload itself).
        field: String,
        /// What was wrong with it.
        message: String,
    },
    /// What the server sent (a reply, an event or a push) did not decode
    /// into the type asked for here. For a call, the handler ran.
    #[error("cannot decode what the server sent, at `{field}`: {message}")]
    Decode {
        /// The path to the offending field (`.` for the data itself).
        field: String,
        /// What was wrong with it.
        message: String,
    },
    /// No node of the mesh serves the path (or none that is up); see
    /// [`Mesh::call`](crate::Mesh::call). Nothing was sent.
    #[error("no node of the mesh serves `{path}`")]
    NoRoute {
        /// The path that was called.
        path: String,
    },
    /// The handler answered with an error.
    #[error("handler error {0}")]
    Handler(CallError),
    /// A subscription lost events: its subscriber did not keep up
    /// (`missed` counts them), or the connection was re-established and
    /// events published meanwhile may be lost (`missed` is `None`: unknown).
    /// The events after it follow the gap.
    #[error("{}", match .missed {
        Some(n) => format!("{n} events were lost because the subscriber fell behind"),
        None => "events may have been lost while the connection was re-established".to_owned(),
    })]
    Lagged {
        /// How many events were lost, when known.
        missed: Option<u64>,
    },
    /// The message is larger than the server accepts
    /// ([`ClientBuilder::max_message_size`](crate::ClientBuilder::max_message_size)),
    /// or, in a mesh over NATS, than NATS's largest message (`max_payload`,
    /// 1 MiB by default): it was not sent, and the connection is unharmed.
    #[error("the message is {size} bytes, over the limit of {limit}; it was not sent")]
    TooLarge {
        /// Its size, before compression.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// No reply came in time. The call may have run: it is never sent after
    /// this is returned, but it may have been sent before.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The connection is closed, or closed before the reply came. The
    /// message says whether a call may have run.
    #[error("connection closed{}", .0.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Closed(Option<String>),
    /// The peer broke the protocol, or a message could not be encoded.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A configuration mistake found at start-up, such as two handlers on one path.
    #[error("configuration error: {0}")]
    Config(String),
    /// The server refused the connection before it opened, with an HTTP
    /// status: 401 or 403 from its authentication hook or origin check, 503
    /// at its connection limit.
    #[error("connection refused with {status}: {message}")]
    Refused {
        /// The HTTP status code.
        status: u16,
        /// The server's explanation.
        message: String,
    },
    /// This node of a mesh is cut off from the other nodes: its connection
    /// to the mesh's NATS cluster is down while it is re-established. The
    /// call was not sent; what this node serves itself still works.
    #[error("this node is cut off from the rest of the mesh ({0}); {NOT_SENT}")]
    Offline(String),
    /// The network failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Turns an error reply received for a call into the matching variant.
    pub(crate) fn from_reply(path: &str, error: CallError) -> Self {
        match error.code() {
            CallError::NOT_FOUND => Error::NotFound { path: path.to_owned() },
            CallError::BAD_PAYLOAD => Error::BadPayload {
                field: error.data().and_then(|d| d.get("field")).and_then(|f| f.as_str()).unwrap_or(".").to_owned(),
                message: error.message().to_owned(),
            },
            _ => Error::Handler(error),
        }
    }
}

/// How the reason of an [`Error::Closed`] ends when the message was not sent.
pub(crate) const NOT_SENT: &str = "it was not sent";

impl Error {
    /// Whether the message certainly was not sent: it may go elsewhere.
    pub(crate) fn was_not_sent(&self) -> bool {
        match self {
            Error::Closed(Some(reason)) => reason.ends_with(NOT_SENT),
            Error::TooLarge { .. } | Error::Offline(_) => true,
            _ => false,
        }
    }
}

/// Data received that did not decode: [`Error::Decode`].
impl From<crate::PayloadError> for Error {
    fn from(err: crate::PayloadError) -> Self {
        Error::Decode { field: err.field().to_owned(), message: err.message().to_owned() }
    }
}

impl From<tokio_tungstenite::tungstenite::Error> for Error {
    fn from(err: tokio_tungstenite::tungstenite::Error) -> Self {
        use tokio_tungstenite::tungstenite::Error as Ws;
        match err {
            Ws::Io(io) => Error::Io(io),
            Ws::ConnectionClosed | Ws::AlreadyClosed => Error::Closed(None),
            Ws::Http(response) => Error::Refused {
                status: response.status().as_u16(),
                message: response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned(),
            },
            other => Error::Protocol(other.to_string()),
        }
    }
}

/// Lets handlers return `Result<T, webmesh::Error>`, e.g. when they call
/// other services: a handler error travels on as it is, anything else
/// becomes an `internal` error (its details are logged, not sent: see
/// [`CallError::with_detail`]).
impl crate::IntoCallError for Error {
    fn into_call_error(self) -> CallError {
        match self {
            Error::Handler(error) => error,
            Error::NotFound { path } => CallError::internal(format!("a service this handler needs has no `{path}`")),
            Error::NoRoute { path } => CallError::new("unavailable", format!("no node of the mesh serves `{path}`")),
            other => CallError::internal("the handler failed").with_detail(other),
        }
    }
}
