//! WebSocket close codes (RFC 6455 section 7.4.1), as both ends use them.

pub(crate) const NORMAL: u16 = 1000;
pub(crate) const GOING_AWAY: u16 = 1001;
pub(crate) const PROTOCOL: u16 = 1002;
pub(crate) const INVALID_DATA: u16 = 1007;
pub(crate) const POLICY: u16 = 1008;
pub(crate) const TOO_BIG: u16 = 1009;
pub(crate) const INTERNAL: u16 = 1011;
pub(crate) const TRY_AGAIN_LATER: u16 = 1013;

/// `message` cut to the 123 bytes a close reason may hold.
pub(crate) fn reason(message: &str) -> String {
    let mut reason = message.to_owned();
    while reason.len() > 123 {
        reason.pop();
    }
    reason
}
