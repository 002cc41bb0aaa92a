//! The HTTP side: the WebSocket upgrade route.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::header::{ORIGIN, RETRY_AFTER};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::admission::Handshake;
use super::http::Peer;
use super::{session, Shared};
use crate::protocol::codec_subprotocol;

pub(crate) fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new().route("/", get(upgrade)).with_state(shared)
}

async fn upgrade(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    // Served by this crate, the listener tells the peer; mounted in an axum
    // application, axum's connect info may.
    let accepted = request.extensions().get::<Peer>().cloned();
    let peer = match &accepted {
        Some(accepted) => Some(accepted.addr),
        None => request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0),
    };
    let (mut parts, _body) = request.into_parts();
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    // Against cross-site WebSocket hijacking: browsers always send `Origin`.
    if !shared.origins.allows(parts.headers.get(ORIGIN)) {
        tracing::debug!(peer = ?peer, "refused a connection from a foreign origin");
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    // A session opened now would only be closed again.
    if *shared.shutdown.borrow() {
        return ([(RETRY_AFTER, "1")], (StatusCode::SERVICE_UNAVAILABLE, "server shutting down")).into_response();
    }
    // Held until the session ends.
    let Ok(slot) = shared.connections.clone().try_acquire_owned() else {
        tracing::warn!("refused a connection: the connection limit is reached");
        return ([(RETRY_AFTER, "1")], (StatusCode::SERVICE_UNAVAILABLE, "too many connections")).into_response();
    };
    let admit = match &shared.authenticate {
        None => None,
        Some(authenticate) => {
            let handshake = Handshake {
                headers: parts.headers.clone(),
                uri: parts.uri.clone(),
                peer,
                #[cfg(feature = "tls")]
                certificates: accepted.and_then(|accepted| accepted.certificates),
            };
            match authenticate(handshake).await {
                Ok(admit) => Some(admit),
                Err(error) => {
                    // The request's headers are never logged: they may hold tokens.
                    tracing::debug!(peer = ?peer, status = error.status().as_u16(), "refused a connection");
                    return (error.status(), error.message().to_owned()).into_response();
                }
            }
        }
    };
    // A user codec is chosen by subprotocol; built-in formats need none.
    let codec = ws.requested_protocols().find_map(|asked| {
        let asked = asked.to_str().ok()?;
        shared.codecs.iter().find(|c| codec_subprotocol(c.as_ref()) == asked).cloned()
    });
    let mut ws = ws
        .read_buffer_size(shared.read_buffer_size)
        .max_message_size(shared.max_message_size)
        .max_frame_size(shared.max_message_size);
    if let Some(codec) = &codec {
        ws = ws.protocols([codec_subprotocol(codec.as_ref())]);
    }
    // The token keeps a shutdown waiting until the session has ended.
    let token = shared.sessions.token();
    ws.on_upgrade(move |socket| async move {
        session::run(socket, shared, peer, codec, admit).await;
        drop((token, slot));
    })
}
