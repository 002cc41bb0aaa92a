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
// 6 to 11 are reserved: subscribe, unsubscribe, publish, event, ping, pong.
