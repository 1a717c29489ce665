//! socket-hub: a WebSocket message hub. Services connect, prove who they are
//! with a token, and send JSON frames that the hub routes to everyone, to a
//! named group, or to one session (`docs/protocol.md`).
//!
//! # Layout
//!
//! - [`settings`]: the settings tree, its layered loading and validation.
//! - [`startup`]: [`startup::Application`] binds the listener, starts the hub
//!   and the HTTP server; used by `main` and by the tests alike.
//! - [`shutdown`]: signals and the drain sequence.
//! - [`auth`]: service tokens (inline, SHA-256, env var, file), checked in
//!   constant time.
//! - [`metrics`]: counters and gauges behind `/status` and `/metrics`.
//! - [`protocol`]: frames on the wire ([`protocol::frame`]) and every close
//!   and error code ([`protocol::codes`]).
//! - [`hub`]: the central `Hub` actor: the session table, groups, pending
//!   replies, routing and slow-consumer eviction. It never parses JSON.
//! - [`session`]: one `WsSession` actor per WebSocket: parses frames,
//!   identify, heartbeats, rate limit, writes what the hub delivers. It never
//!   routes.
//! - [`conn`]: a handle on each TCP connection that lets the hub close a
//!   socket whose session actor is stuck behind a client that stopped reading.
//! - [`logging`]: text or JSON log lines.
//! - [`proxy`]: the client address behind trusted reverse proxies.
//! - [`routes`]: the HTTP endpoints (`/ws`, `/healthz`, `/readyz`, `/status`).
//! - [`client`]: a small WebSocket client of the protocol, shared by the tests
//!   and the benchmark tool.
//! - [`bench`]: the benchmark tool behind `socket-hub-bench` (scenarios, /proc
//!   readings, the JSON report; BENCHMARKS.md).

pub mod auth;
pub mod bench;
pub mod client;
pub mod conn;
pub mod hub;
pub mod logging;
pub mod metrics;
pub mod protocol;
pub mod proxy;
pub mod routes;
pub mod session;
pub mod settings;
pub mod shutdown;
pub mod startup;

use std::fmt;
use std::sync::Arc;

/// A session's id: a UUID v4 the hub gives each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub uuid::Uuid);

impl SessionId {
    /// A fresh random id.
    pub fn new() -> Self {
        SessionId(uuid::Uuid::new_v4())
    }

    /// Reads an id as a client wrote it; `None` when it is not a UUID.
    pub fn parse(text: &str) -> Option<Self> {
        uuid::Uuid::parse_str(text).ok().map(SessionId)
    }
}

impl Default for SessionId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A group name: 1..128 characters of `[A-Za-z0-9_.:-]`. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupName(Arc<str>);

impl GroupName {
    /// Checks the name against the protocol's rule.
    pub fn parse(name: &str) -> Result<Self, String> {
        let len = name.chars().count();
        if len == 0 || len > 128 {
            return Err(format!("group name must be 1 to 128 characters, got {len}"));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
        {
            return Err(format!("group name may only hold A-Z a-z 0-9 _ . : - (found {c:?})"));
        }
        Ok(GroupName(name.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for GroupName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A service name from the settings (`[[services]] name`). Cheap to clone.
pub type ServiceName = Arc<str>;
