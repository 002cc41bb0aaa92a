//! Answers SUBSCRIBE and PUBLISH: authorise with the subscribe and publish
//! routes, then update or use the hub.

use std::sync::Arc;

use super::dispatch::answer;
use super::{Connection, Shared};
use crate::extract::CallParts;
use crate::handler::ReplyKind;
use crate::protocol::WireFormat;
use crate::pubsub::{validate_topic, PatternError, SubscribeOptions, TopicPattern};
use crate::routing::RouteTable;
use crate::{CallError, Payload};

/// Answers SUBSCRIBE number `seq` of its connection.
pub(crate) async fn subscribe(
    shared: Arc<Shared>,
    conn: Connection,
    format: WireFormat,
    id: u64,
    seq: u64,
    pattern: String,
    options: Payload,
) {
    let result = accept_subscription(&shared, &conn, id, seq, &pattern, options).await;
    if let Err(error) = &result {
        conn.finish_subscribing(id, seq, || ());
        tracing::debug!(pattern, %error, "subscription refused");
    }
    answer(&conn, &format, id, result).await;
}

/// A subscription to one topic is authorised now, by that topic's subscribe
/// handler; a wildcard one topic by topic as events come (`pubsub/grants.rs`).
async fn accept_subscription(
    shared: &Arc<Shared>,
    conn: &Connection,
    id: u64,
    seq: u64,
    pattern: &str,
    options: Payload,
) -> Result<(), CallError> {
    let parsed = TopicPattern::parse_within(pattern, shared.hub.limits().topics).map_err(refusal)?;
    let options: SubscribeOptions = options.deserialize::<Option<SubscribeOptions>>()?.unwrap_or_default();
    // A mesh link's subscriptions carry the interest of subscribers its
    // node authorised already.
    if parsed.is_exact() && !conn.is_relay() {
        authorise(shared, conn, &shared.subscribe_routes, pattern, Payload::nil()).await?;
    }
    // Registered under the lock an UNSUBSCRIBE takes, so one that came while
    // the handler ran is not undone.
    match conn.finish_subscribing(id, seq, || shared.hub.subscribe(conn, id, parsed, pattern, options.lag)) {
        Some(Ok(())) => Ok(()),
        Some(Err(limit)) => Err(CallError::new(CallError::LIMIT, limit)),
        None => {
            let message = "unsubscribed before the subscription was in place";
            Err(CallError::new(CallError::UNSUBSCRIBED, message))
        }
    }
}

pub(crate) async fn publish(
    shared: Arc<Shared>,
    conn: Connection,
    format: WireFormat,
    id: u64,
    topic: String,
    payload: Payload,
) {
    let result = accept_publication(&shared, &conn, &topic, payload).await;
    answer(&conn, &format, id, result).await;
}

async fn accept_publication(
    shared: &Arc<Shared>,
    conn: &Connection,
    topic: &str,
    payload: Payload,
) -> Result<(), CallError> {
    authorise_publication(shared, conn, topic, payload.clone()).await?;
    // Decoded once, re-encoded once per format the subscribers speak.
    let data: rmpv::Value = payload.deserialize()?;
    shared.hub.publish(topic, &data).map_err(|e| CallError::internal(e.to_string()))?;
    Ok(())
}

/// Whether `conn` may publish `payload` to `topic`: a valid topic, which a
/// publish handler allows. Wills are authorised the same way.
pub(crate) async fn authorise_publication(
    shared: &Arc<Shared>,
    conn: &Connection,
    topic: &str,
    payload: Payload,
) -> Result<(), CallError> {
    validate_topic(topic, shared.hub.limits().topics).map_err(refusal)?;
    if shared.publish_routes.at(topic).is_none() {
        let message = format!("clients may not publish to `{topic}`");
        return Err(CallError::new(CallError::FORBIDDEN, message));
    }
    authorise(shared, conn, &shared.publish_routes, topic, payload).await
}

/// A pattern or topic over the limits gets `limit`, a malformed one `bad_request`.
fn refusal(error: PatternError) -> CallError {
    match error {
        PatternError::Limit(message) => CallError::new(CallError::LIMIT, message),
        PatternError::Invalid(message) => CallError::new(CallError::BAD_REQUEST, message),
    }
}

/// Runs the handler of `routes` matching `path`, if any: its error refuses.
async fn authorise(
    shared: &Arc<Shared>,
    conn: &Connection,
    routes: &RouteTable,
    path: &str,
    payload: Payload,
) -> Result<(), CallError> {
    let Some((handler, params)) = routes.at(path) else { return Ok(()) };
    let parts = CallParts { connection: conn.clone(), path: path.into(), params, shared: shared.clone() };
    match handler.call(parts, payload).await.0 {
        ReplyKind::Error(error) => Err(error),
        ReplyKind::Value(_) | ReplyKind::Encoded(_) => Ok(()),
    }
}
