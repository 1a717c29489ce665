//! The vocabulary between sessions, HTTP handlers and the hub. Frames travel
//! already encoded: the hub routes bytes and never parses JSON.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use bytestring::ByteString;

use crate::conn::Closer;
use crate::protocol::{CloseCode, ErrorCode, Intent};
use crate::session::WsSession;
use crate::{GroupName, ServiceName, SessionId};

// ---- session -> hub ----

/// A connection opened (sent from the session's `started`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect {
    /// The session's id.
    pub id: SessionId,
    /// Where the hub delivers frames (`Deliver`: bounded mailbox,
    /// `try_send`) and sends the one close order (`Close`). One address for
    /// both: each address the hub holds costs the session an allocation.
    pub addr: Addr<WsSession>,
    /// Bytes the hub has queued for the session and the session has not yet
    /// written: the hub adds, the session subtracts.
    pub outbound: Arc<AtomicUsize>,
    /// Resets the socket when the session actor is stuck.
    pub closer: Closer,
    /// The client's address, for logs and `/status`.
    pub peer: Option<String>,
}

/// The session identified: add it to the routing table and its groups.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    pub id: SessionId,
    pub service: ServiceName,
    pub groups: Vec<GroupName>,
}

/// Route an `EVENT` by its intent; answers why nothing was routed.
#[derive(Message)]
#[rtype(result = "Result<(), ErrorCode>")]
pub struct Route {
    /// The sender; `None` for the admin API.
    pub from: Option<SessionId>,
    /// The frame's id, for replies and errors.
    pub id: Arc<str>,
    pub intent: Intent,
    /// The frame as every recipient gets it.
    pub frame: ByteString,
    /// When the frame arrived, for the routing latency histogram.
    pub at: Instant,
}

/// Route a `REPLY` back to the sender of the `EVENT` with that id.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reply {
    pub from: SessionId,
    pub id: Box<str>,
    pub frame: ByteString,
}

/// The session stopped (sent from its `stopped`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub id: SessionId,
    /// The close code the session decided, or `None` when the connection
    /// ended without a close frame either way (counted as 1006).
    pub code: Option<CloseCode>,
}

// ---- hub -> session ----

/// Frames to write, in order, already framed for the wire (WebSocket
/// headers included): often a slice of a buffer every recipient shares.
/// `bytes` is what they count against `limits.max_outbound_bytes` (their
/// length plus a fixed overhead each), to be subtracted from the session's
/// outbound counter once handed to the socket.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    pub chunk: Bytes,
    pub bytes: usize,
}

/// Send `DISCONNECT` with this code, close, and stop.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct Close {
    pub code: CloseCode,
}

// ---- HTTP / shutdown -> hub ----

/// Answered once the hub has handled everything queued before it: what
/// sessions told the hub before an HTTP request arrived shows in its answer
/// (`/metrics` gauges the hub keeps, such as identified sessions).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Barrier;

/// A snapshot of the routing table for `/status`.
#[derive(Message)]
#[rtype(result = "Snapshot")]
pub struct GetSnapshot {
    /// Also list up to this many sessions (0: none).
    pub sessions: usize,
}

/// One session as `/status?sessions=N` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionInfo {
    pub session: String,
    /// `null` until identified.
    pub service: Option<String>,
    /// The client's address (from the forwarding headers of a trusted proxy).
    pub address: Option<String>,
    pub groups: Vec<GroupName>,
}

#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub connections: usize,
    pub identified: usize,
    /// Group name -> member count, in no order: the HTTP worker sorts, so
    /// that the hub's thread only copies pointers.
    pub groups: Vec<(GroupName, usize)>,
    /// Service name -> session count, in no order.
    pub services: Vec<(ServiceName, usize)>,
    /// The first sessions of the table, when asked for.
    pub sessions: Vec<SessionInfo>,
}

/// Close one session with 4009 (`kicked`); answers whether it existed.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Kick {
    pub session: SessionId,
}

/// Starts a drain: the hub splits the sessions it holds into slices to be
/// closed with 1001, one slice per [`DrainNext`], and answers how many
/// slices there are (at most one per `step` of `over`). The slices are paced
/// by whoever sends `DrainNext` (`crate::shutdown`), not by a timer of the
/// hub's: a message is handled in order even while the hub's mailbox never
/// empties, its timers only once it does.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Drain {
    pub over: Duration,
    pub step: Duration,
}

/// Closes the next slice of sessions of a drain with 1001.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DrainNext;
