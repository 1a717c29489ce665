//! Every code that goes on the wire: the close codes (§9) and the error slugs
//! (§8). One file so that a client author, and a reviewer, finds them all in
//! one place.

use std::fmt;

/// Why a session is closed. The number is the WebSocket close code, the slug
/// goes into the `DISCONNECT` frame's `data.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// The client sent `DISCONNECT` or closed the socket itself.
    Normal,
    /// The hub is stopping (graceful drain); reconnect with jitter.
    Shutdown,
    /// The client broke the WebSocket protocol (RFC 6455), e.g. a
    /// continuation frame with no message to continue.
    ProtocolError,
    /// A message was larger than `limits.max_frame_bytes`.
    TooBig,
    /// Bad token or forbidden group at `IDENTIFY`; retrying cannot help.
    AuthFailed,
    /// No `IDENTIFY` within `limits.identify_timeout_ms`.
    IdentifyTimeout,
    /// No frame or Pong within `heartbeat.timeout_ms`.
    HeartbeatTimeout,
    /// The outbound queue passed `limits.max_outbound_bytes`.
    SlowConsumer,
    /// Kept sending above the rate limit.
    RateLimited,
    /// An operator disconnected the session through the admin API.
    Kicked,
}

impl CloseCode {
    /// Every close code, for metrics that list them all up front.
    pub const ALL: [CloseCode; 10] = [
        CloseCode::Normal,
        CloseCode::Shutdown,
        CloseCode::ProtocolError,
        CloseCode::TooBig,
        CloseCode::AuthFailed,
        CloseCode::IdentifyTimeout,
        CloseCode::HeartbeatTimeout,
        CloseCode::SlowConsumer,
        CloseCode::RateLimited,
        CloseCode::Kicked,
    ];

    /// The WebSocket close code.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::Shutdown => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::TooBig => 1009,
            CloseCode::AuthFailed => 4004,
            CloseCode::IdentifyTimeout => 4005,
            CloseCode::HeartbeatTimeout => 4006,
            CloseCode::SlowConsumer => 4007,
            CloseCode::RateLimited => 4008,
            CloseCode::Kicked => 4009,
        }
    }

    /// The reason slug sent in `DISCONNECT` and used in logs and metrics.
    pub fn slug(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::Shutdown => "shutdown",
            CloseCode::ProtocolError => "protocol_error",
            CloseCode::TooBig => "too_big",
            CloseCode::AuthFailed => "auth_failed",
            CloseCode::IdentifyTimeout => "identify_timeout",
            CloseCode::HeartbeatTimeout => "heartbeat_timeout",
            CloseCode::SlowConsumer => "slow_consumer",
            CloseCode::RateLimited => "rate_limited",
            CloseCode::Kicked => "kicked",
        }
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.slug())
    }
}

/// The `data.code` of an `ERROR` reply. None of them closes the connection by
/// itself; `AuthFailed` and `ForbiddenGroup` are followed by a 4004 close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Not a JSON object, or a field of the wrong type or length.
    InvalidFrame,
    /// `op` is a number outside 0..5.
    UnknownOp,
    /// A binary WebSocket message; only text is spoken.
    UnsupportedFrame,
    /// A `GROUP`/`DIRECT` intent without identifier, or an unknown target.
    InvalidIntent,
    /// A `GROUP` without members or a `DIRECT` to a session that is not here.
    UnknownTarget,
    /// A `REPLY` whose id is unknown or older than `limits.reply_ttl_ms`.
    UnknownRequest,
    /// An op other than `PING`, `PONG`, `DISCONNECT` before `IDENTIFY`.
    NotIdentified,
    /// A second `IDENTIFY` on one connection.
    AlreadyIdentified,
    /// The token matches no service.
    AuthFailed,
    /// A requested group is not allowed for the service.
    ForbiddenGroup,
    /// The frame was over the session's rate limit and was dropped.
    RateLimited,
}

impl ErrorCode {
    /// The slug that goes into `data.code`.
    pub fn slug(self) -> &'static str {
        match self {
            ErrorCode::InvalidFrame => "invalid_frame",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::UnsupportedFrame => "unsupported_frame",
            ErrorCode::InvalidIntent => "invalid_intent",
            ErrorCode::UnknownTarget => "unknown_target",
            ErrorCode::UnknownRequest => "unknown_request",
            ErrorCode::NotIdentified => "not_identified",
            ErrorCode::AlreadyIdentified => "already_identified",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::ForbiddenGroup => "forbidden_group",
            ErrorCode::RateLimited => "rate_limited",
        }
    }

    /// A default human-readable message, used when the caller has nothing
    /// more specific to say.
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::InvalidFrame => "the frame is not a valid JSON object of the protocol",
            ErrorCode::UnknownOp => "op must be an integer from 0 to 5",
            ErrorCode::UnsupportedFrame => "binary messages are not supported; send JSON text",
            ErrorCode::InvalidIntent => {
                "intent.target must be GLOBAL, GROUP or DIRECT; GROUP and DIRECT need an identifier"
            }
            ErrorCode::UnknownTarget => "no recipient: the group has no members or the session is not connected",
            ErrorCode::UnknownRequest => "no pending request with this id (unknown or expired)",
            ErrorCode::NotIdentified => "send IDENTIFY first",
            ErrorCode::AlreadyIdentified => "this connection is already identified",
            ErrorCode::AuthFailed => "invalid token",
            ErrorCode::ForbiddenGroup => "a requested group is not allowed for this service",
            ErrorCode::RateLimited => "rate limit exceeded; the frame was dropped",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.slug())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_match_the_protocol_table() {
        let table: Vec<(u16, &str)> = CloseCode::ALL.iter().map(|c| (c.code(), c.slug())).collect();
        assert_eq!(
            table,
            vec![
                (1000, "normal"),
                (1001, "shutdown"),
                (1002, "protocol_error"),
                (1009, "too_big"),
                (4004, "auth_failed"),
                (4005, "identify_timeout"),
                (4006, "heartbeat_timeout"),
                (4007, "slow_consumer"),
                (4008, "rate_limited"),
                (4009, "kicked"),
            ]
        );
    }
}
