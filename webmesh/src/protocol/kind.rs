//! Message kinds: the first element of every native envelope.

/// `[1, id, path, data]`: a call that expects a reply with the same id.
pub(crate) const CALL: u64 = 1;
/// `[2, path, data]`: fire-and-forget.
pub(crate) const EMIT: u64 = 2;
/// `[3, id, data]`: the successful reply to a call.
pub(crate) const REPLY: u64 = 3;
/// `[4, id, code, message, data]`: the failed reply to a call.
pub(crate) const ERROR: u64 = 4;
/// `[5, path, data]`: a message the server sends unasked.
pub(crate) const PUSH: u64 = 5;
/// `[6, id, pattern, options]`: subscribe; answered like a call.
pub(crate) const SUBSCRIBE: u64 = 6;
/// `[7, id]`: end the subscription made by SUBSCRIBE `id`; never answered.
pub(crate) const UNSUBSCRIBE: u64 = 7;
/// `[8, id, topic, data]`: publish; answered like a call.
pub(crate) const PUBLISH: u64 = 8;
/// `[9, topic, data]`: an event on a topic the client subscribed to.
pub(crate) const EVENT: u64 = 9;
// 10 and 11 are reserved: ping, pong.
/// `[12, id, missed]`: subscription `id` lost `missed` events to lag.
pub(crate) const LAGGED: u64 = 12;
/// `[13, id, session, topic, delay, data]`: the client's will, published if
/// its connection ends without a clean close; `topic` nil withdraws it.
/// Answered like a call.
pub(crate) const WILL: u64 = 13;
