//! One `WsSession` actor per WebSocket connection. It parses each frame once,
//! answers what concerns only itself (identify, ping, errors), encodes what
//! must be routed and hands it to the hub; it writes what the hub delivers.
//! It never routes.
//!
//! Flow control on the way in: most frames go to the hub with `do_send`,
//! but every [`WINDOW_FRAMES`] frames (or [`WINDOW_BYTES`]) the session waits
//! until the hub has handled them. While it waits it reads nothing more from
//! its socket, so a fast sender is slowed by TCP instead of queuing unbounded
//! work in the hub (`../shared/notes/actix-backpressure.md`). Between the
//! socket and the frame decoder, [`inbound::Gated`] makes the decoder read
//! only once it has decoded what it holds, so bytes the session has not
//! handled yet wait in the client's socket, not in the hub.

pub mod inbound;
pub mod outbox;
pub mod rate_limit;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web_actors::ws;
use bytes::BytesMut;
use serde_json::value::RawValue;

use crate::auth::{Auth, AuthError};
use crate::conn::Closer;
use crate::hub::messages::{Close, Connect, Deliver, Join, Leave, Reply, Route};
use crate::hub::Hub;
use crate::metrics::{Drop, Metrics, OP_INVALID};
use crate::protocol::frame::{self, op, Inbound};
use crate::protocol::{CloseCode, ErrorCode};
use crate::settings::Settings;
use crate::{ServiceName, SessionId};
use inbound::Handled;
use outbox::Outbox;
use rate_limit::{DropWindow, TokenBucket};

/// Frames a session may hand the hub before it waits for the hub to catch up.
pub const WINDOW_FRAMES: u32 = 256;
/// Bytes a session may hand the hub before it waits for the hub to catch up.
pub const WINDOW_BYTES: usize = 256 * 1024;
/// What one queued frame costs besides its bytes (its slot in a batch, the
/// share of the batch's envelope). Counted into the session's outbound bytes
/// so that many tiny frames cannot hold much more memory than the limit.
pub const FRAME_OVERHEAD: usize = 64;

/// What every session shares: the hub, the services, the metrics and the
/// settings it needs.
pub struct SessionConfig {
    pub hub: Addr<Hub>,
    pub auth: Arc<Auth>,
    pub metrics: Arc<Metrics>,
    /// This node's id, reported in the `IDENTIFY` reply.
    pub node: Arc<str>,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub identify_timeout: Duration,
    /// Most groups an `IDENTIFY` may ask for.
    pub max_groups: usize,
    pub max_frame_bytes: usize,
    /// Messages the hub may queue in a session's mailbox: more than the byte
    /// limit can ever hold, so that only the byte limit evicts.
    pub mailbox_capacity: usize,
    pub rate_per_sec: u32,
    pub rate_burst: u32,
    /// `server.compact_write_buffers`: the session's outbox hands on 8 KiB
    /// pieces.
    pub compact_writes: bool,
}

impl SessionConfig {
    pub fn new(settings: &Settings, hub: Addr<Hub>, auth: Arc<Auth>, metrics: Arc<Metrics>, node: Arc<str>) -> Self {
        SessionConfig {
            hub,
            auth,
            metrics,
            node,
            heartbeat_interval: settings.heartbeat.interval(),
            heartbeat_timeout: settings.heartbeat.timeout(),
            identify_timeout: settings.limits.identify_timeout(),
            max_frame_bytes: settings.limits.max_frame_bytes,
            max_groups: settings.limits.max_groups_per_session,
            mailbox_capacity: settings.limits.max_outbound_bytes / FRAME_OVERHEAD + 16,
            rate_per_sec: settings.limits.rate_per_sec,
            rate_burst: settings.limits.rate_burst,
            compact_writes: settings.server.compact_write_buffers,
        }
    }
}

/// Holds one place under `limits.max_connections` for as long as it lives.
pub struct ConnectionSlot(Arc<Metrics>);

impl ConnectionSlot {
    /// Takes a place, or `None` when all `max` are taken.
    pub fn acquire(metrics: &Arc<Metrics>, max: usize) -> Option<Self> {
        metrics
            .try_open_connection(max)
            .then(|| ConnectionSlot(metrics.clone()))
    }
}

impl std::ops::Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.close_connection();
    }
}

/// Who the session is, once identified.
struct Identity {
    service: ServiceName,
    /// `{"session": ..., "service": ...}`, stamped on every frame it sends.
    source: Box<RawValue>,
}

pub struct WsSession {
    id: SessionId,
    config: Arc<SessionConfig>,
    identity: Option<Identity>,
    peer: Option<String>,
    /// Last frame or Pong from the client.
    last_seen: Instant,
    ping_seq: u64,
    bucket: TokenBucket,
    drops: DropWindow,
    /// Frames and bytes handed to the hub since the last wait.
    unacked_frames: u32,
    unacked_bytes: usize,
    /// Bytes the hub has queued for us and we have not yet written.
    outbound: Arc<AtomicUsize>,
    closer: Closer,
    /// A fragmented message being put together: (is text, bytes so far).
    fragments: Option<(bool, BytesMut)>,
    /// Why we are closing; `None` while open or when the client vanished.
    close_code: Option<CloseCode>,
    /// When the session must have identified (`limits.identify_timeout_ms`).
    identify_by: Instant,
    /// Messages handled, for the payload's gate (`inbound`).
    handled: Handled,
    /// What goes out to the socket, in order (`outbox`).
    out: Outbox,
    _slot: ConnectionSlot,
}

impl WsSession {
    pub fn new(config: Arc<SessionConfig>, slot: ConnectionSlot, closer: Closer, peer: Option<String>) -> Self {
        let now = Instant::now();
        let bucket = TokenBucket::new(config.rate_per_sec, config.rate_burst, now);
        let identify_by = now + config.identify_timeout;
        let outbound = Arc::new(AtomicUsize::new(0));
        let out = Outbox::new(outbound.clone(), config.compact_writes);
        WsSession {
            id: SessionId::new(),
            config,
            identity: None,
            peer,
            last_seen: now,
            ping_seq: 0,
            bucket,
            drops: DropWindow::default(),
            unacked_frames: 0,
            unacked_bytes: 0,
            out,
            outbound,
            closer,
            fragments: None,
            close_code: None,
            identify_by,
            handled: Handled::default(),
            _slot: slot,
        }
    }

    /// Where the session's frames wait for the socket: give it to
    /// [`outbox::Body`] around the session's context.
    pub fn outbox(&self) -> Outbox {
        self.out.clone()
    }

    /// The counter that gates the session's payload stream: give it to
    /// [`inbound::Gated`] around the payload the session reads.
    pub fn handled(&self) -> Handled {
        self.handled.clone()
    }

    fn peer(&self) -> &str {
        self.peer.as_deref().unwrap_or("-")
    }

    /// Sends `DISCONNECT` (except for 1000), the close frame, and stops.
    fn close(&mut self, ctx: &mut ws::WebsocketContext<Self>, code: CloseCode) {
        if self.close_code.is_some() {
            return;
        }
        self.close_code = Some(code);
        if code != CloseCode::Normal {
            self.out.text(&frame::disconnect(code));
        }
        self.out.close(Some(ws::CloseReason {
            code: ws::CloseCode::from(code.code()),
            description: Some(code.slug().into()),
        }));
        ctx.stop();
    }

    fn error(&mut self, id: Option<&str>, code: ErrorCode, message: &str) {
        self.config.metrics.dropped(
            if code == ErrorCode::RateLimited {
                Drop::RateLimited
            } else {
                Drop::Invalid
            },
            1,
        );
        self.out.text(&frame::error(id, code, message));
    }

    /// Takes a token from the rate limit; a frame without one is dropped
    /// with `rate_limited`, and too many drops in a second close with 4008.
    fn admit(&mut self, ctx: &mut ws::WebsocketContext<Self>, text: Option<&str>) -> bool {
        let now = Instant::now();
        if self.bucket.try_take(now) {
            return true;
        }
        if self.drops.record(now) > self.config.rate_burst {
            self.config.metrics.dropped(Drop::RateLimited, 1);
            self.close(ctx, CloseCode::RateLimited);
        } else {
            let id = text.and_then(frame::parse_id);
            self.error(id.as_deref(), ErrorCode::RateLimited, ErrorCode::RateLimited.message());
        }
        false
    }

    /// Hands a message to the hub, waiting for it every window.
    fn forward<M>(&mut self, msg: M, bytes: usize, ctx: &mut ws::WebsocketContext<Self>)
    where
        M: Message + Send + 'static,
        M::Result: Send,
        Hub: Handler<M>,
    {
        self.unacked_frames += 1;
        self.unacked_bytes += bytes;
        if self.unacked_frames >= WINDOW_FRAMES || self.unacked_bytes >= WINDOW_BYTES {
            self.unacked_frames = 0;
            self.unacked_bytes = 0;
            let sent = self.config.hub.send(msg).into_actor(self).map(|res, _, ctx| {
                if res.is_err() {
                    ctx.stop();
                }
            });
            ctx.wait(sent);
        } else {
            self.config.hub.do_send(msg);
        }
    }

    fn on_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        if !self.admit(ctx, Some(text)) {
            return;
        }
        let inbound = match frame::parse(text) {
            Ok(inbound) => inbound,
            Err(e) => {
                self.config.metrics.received(OP_INVALID);
                // A session that may not send this op at all is told that
                // first, whatever else is wrong with the frame (§6).
                let code = match (e.op, &self.identity) {
                    (Some(op::EVENT | op::REPLY), None) => ErrorCode::NotIdentified,
                    (Some(op::IDENTIFY), Some(_)) => ErrorCode::AlreadyIdentified,
                    _ => return self.error(e.id.as_deref(), e.code, &e.message),
                };
                return self.error(e.id.as_deref(), code, code.message());
            }
        };
        match inbound {
            Inbound::Ping { id, data } => {
                self.config.metrics.received(op::PING);
                self.out.text(&frame::ping_pong(op::PONG, id.as_deref(), data));
            }
            Inbound::Pong => self.config.metrics.received(op::PONG),
            Inbound::Disconnect => {
                self.config.metrics.received(op::DISCONNECT);
                self.close(ctx, CloseCode::Normal);
            }
            Inbound::Identify { id, token, groups } => {
                self.config.metrics.received(op::IDENTIFY);
                self.identify(id.as_deref(), &token, groups.as_deref(), ctx);
            }
            Inbound::Event(ev) => {
                self.config.metrics.received(op::EVENT);
                let Some(identity) = &self.identity else {
                    return self.error(
                        ev.id.as_deref(),
                        ErrorCode::NotIdentified,
                        ErrorCode::NotIdentified.message(),
                    );
                };
                let id: Arc<str> = match ev.id {
                    Some(id) => id.into(),
                    None => uuid::Uuid::new_v4().hyphenated().to_string().into(),
                };
                let frame = frame::routed_event(&id, &ev.event, ev.data, ev.intent_raw, &identity.source);
                let bytes = frame.len();
                let route = Route {
                    from: Some(self.id),
                    id,
                    intent: ev.intent,
                    frame,
                    at: Instant::now(),
                };
                self.forward(route, bytes, ctx);
            }
            Inbound::Reply(reply) => {
                self.config.metrics.received(op::REPLY);
                let Some(identity) = &self.identity else {
                    return self.error(
                        Some(&reply.id),
                        ErrorCode::NotIdentified,
                        ErrorCode::NotIdentified.message(),
                    );
                };
                let frame = frame::routed_reply(&reply.id, reply.event.as_deref(), reply.data, &identity.source);
                let bytes = frame.len();
                self.forward(
                    Reply {
                        from: self.id,
                        id: reply.id.into(),
                        frame,
                    },
                    bytes,
                    ctx,
                );
            }
        }
    }

    fn identify(
        &mut self,
        id: Option<&str>,
        token: &str,
        groups: Option<&[String]>,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        if self.identity.is_some() {
            return self.error(id, ErrorCode::AlreadyIdentified, ErrorCode::AlreadyIdentified.message());
        }
        let joined = self.config.auth.check(token).and_then(|service| {
            let groups = service.resolve_groups(groups, self.config.max_groups)?;
            Ok((service, groups))
        });
        let (service, groups) = match joined {
            Ok(ok) => ok,
            Err(e) => {
                let code = match e {
                    AuthError::BadToken => ErrorCode::AuthFailed,
                    AuthError::ForbiddenGroup(_) => ErrorCode::ForbiddenGroup,
                    // A list too long, like any field too long: the client
                    // may try again.
                    AuthError::TooManyGroups(_) => {
                        return self.error(id, ErrorCode::InvalidFrame, &e.to_string());
                    }
                };
                log::info!("identify refused: session {} peer {}: {}", self.id, self.peer(), e);
                self.error(id, code, &e.to_string());
                return self.close(ctx, CloseCode::AuthFailed);
            }
        };
        let session = self.id.to_string();
        let reply = frame::identified(
            id,
            &session,
            &service.name,
            &groups,
            self.config.heartbeat_interval.as_millis() as u64,
            &self.config.node,
        );
        self.identity = Some(Identity {
            service: service.name.clone(),
            source: frame::source(Some(&session), &service.name),
        });
        log::info!(
            "identify: session {} service {} peer {} groups [{}]",
            self.id,
            service.name,
            self.peer(),
            groups.iter().map(|g| g.as_str()).collect::<Vec<_>>().join(",")
        );
        // The hub handles its mailbox in order, and this `Join` is in it
        // before the reply leaves: whatever another session sends once it
        // has learnt our id from this reply reaches the hub after the `Join`,
        // so a DIRECT sent right after the reply finds this session. No
        // round trip to the hub thread per identify.
        self.config.hub.do_send(Join {
            id: self.id,
            service: service.name.clone(),
            groups,
        });
        self.out.text(&reply);
    }

    /// Puts a fragmented message together, within `limits.max_frame_bytes`.
    fn on_fragment(&mut self, item: actix_http::ws::Item, ctx: &mut ws::WebsocketContext<Self>) {
        let (first, chunk, last) = match item {
            actix_http::ws::Item::FirstText(b) => (Some(true), b, false),
            actix_http::ws::Item::FirstBinary(b) => (Some(false), b, false),
            actix_http::ws::Item::Continue(b) => (None, b, false),
            actix_http::ws::Item::Last(b) => (None, b, true),
        };
        if let Some(is_text) = first {
            self.fragments = Some((is_text, BytesMut::with_capacity(chunk.len())));
        }
        let Some((is_text, buf)) = self.fragments.as_mut() else {
            // A continuation without a first fragment: a protocol error.
            return self.close(ctx, CloseCode::ProtocolError);
        };
        if buf.len() + chunk.len() > self.config.max_frame_bytes {
            return self.close(ctx, CloseCode::TooBig);
        }
        buf.extend_from_slice(&chunk);
        if last {
            let is_text = *is_text;
            let Some((_, whole)) = self.fragments.take() else {
                return;
            };
            if !is_text {
                return self.on_binary(ctx);
            }
            match std::str::from_utf8(&whole) {
                Ok(text) => self.on_text(text, ctx),
                Err(_) => self.on_invalid_utf8(ctx),
            }
        }
    }

    /// The session's one watchdog timer: closes with 4005 when it is not
    /// identified by its deadline, and with 4006 once the client has been
    /// silent for `heartbeat.timeout_ms`; otherwise re-armed for whichever
    /// comes first. One timer instead of one per deadline keeps an idle
    /// session's context within actix's inline slots (no heap spill).
    fn watch_after(&mut self, after: Duration, ctx: &mut ws::WebsocketContext<Self>) {
        ctx.run_later(after, |act, ctx| {
            let now = Instant::now();
            if act.identity.is_none() && now >= act.identify_by {
                return act.close(ctx, CloseCode::IdentifyTimeout);
            }
            let timeout = act.config.heartbeat_timeout;
            let silent = now.saturating_duration_since(act.last_seen);
            if silent >= timeout {
                return act.close(ctx, CloseCode::HeartbeatTimeout);
            }
            let next = act.next_watch(now);
            act.watch_after(next, ctx);
        });
    }

    /// How long until the next deadline: the heartbeat timeout, or the
    /// identify deadline while not identified.
    fn next_watch(&self, now: Instant) -> Duration {
        let alive_until = self.last_seen + self.config.heartbeat_timeout;
        let mut next = alive_until.saturating_duration_since(now);
        if self.identity.is_none() {
            next = next.min(self.identify_by.saturating_duration_since(now));
        }
        next
    }

    fn on_binary(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        self.config.metrics.received(OP_INVALID);
        if self.admit(ctx, None) {
            self.error(None, ErrorCode::UnsupportedFrame, ErrorCode::UnsupportedFrame.message());
        }
    }

    /// A text message that is not UTF-8: a frame like any other for the
    /// rate limit, answered with `invalid_frame`.
    fn on_invalid_utf8(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        self.config.metrics.received(OP_INVALID);
        if self.admit(ctx, None) {
            self.error(None, ErrorCode::InvalidFrame, "text message is not valid UTF-8");
        }
    }
}

impl Actor for WsSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.config.mailbox_capacity);
        self.config.hub.do_send(Connect {
            id: self.id,
            addr: ctx.address(),
            outbound: self.outbound.clone(),
            closer: self.closer.clone(),
            peer: self.peer.clone(),
        });
        log::info!("connect: session {} peer {}", self.id, self.peer());

        let interval = self.config.heartbeat_interval;
        ctx.run_interval(interval, |act, _| {
            act.ping_seq += 1;
            act.out
                .text(&frame::ping_pong(op::PING, Some(&act.ping_seq.to_string()), None));
        });
        let first = self.next_watch(Instant::now());
        self.watch_after(first, ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        // The hub counts the close as it removes the session (unless it
        // closed the session itself and counted it then), so that whoever
        // sees the session gone in `/status` finds it counted in `/metrics`.
        self.config.hub.do_send(Leave {
            id: self.id,
            code: self.close_code,
        });
        log::info!(
            "disconnect: session {} service {} peer {} code {}",
            self.id,
            self.identity.as_ref().map(|i| &*i.service).unwrap_or("-"),
            self.peer(),
            self.close_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "1006 connection_lost".into()),
        );
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for WsSession {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.handled.tick();
        if self.close_code.is_some() {
            return;
        }
        self.last_seen = Instant::now();
        match msg {
            Ok(ws::Message::Text(text)) => self.on_text(&text, ctx),
            Ok(ws::Message::Binary(_)) => self.on_binary(ctx),
            Ok(ws::Message::Continuation(item)) => self.on_fragment(item, ctx),
            // A WebSocket Ping counts against the rate limit like a frame:
            // each one costs a Pong.
            Ok(ws::Message::Ping(payload)) => {
                if self.admit(ctx, None) {
                    self.out.pong(&payload);
                }
            }
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Close(_)) => self.close(ctx, CloseCode::Normal),
            Err(ws::ProtocolError::Overflow) => self.close(ctx, CloseCode::TooBig),
            Err(ws::ProtocolError::Io(e)) if e.to_string().contains("utf-8") => self.on_invalid_utf8(ctx),
            // The frame decoder's own complaint that comes as an I/O error
            // (reserved bits set): a broken frame, like the other protocol
            // errors below, not a broken connection.
            Err(ws::ProtocolError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                log::debug!("session {}: protocol error: {e}", self.id);
                self.close(ctx, CloseCode::ProtocolError);
            }
            // Any other I/O error: the connection is unusable, logged and
            // counted as 1006. (A connection that ends, broken or closed by
            // the client, ends the stream instead: `inbound::EndOnError`.)
            Err(ws::ProtocolError::Io(e)) => {
                log::debug!("session {}: connection error: {e}", self.id);
                ctx.stop();
            }
            Err(e) => {
                log::debug!("session {}: protocol error: {e}", self.id);
                self.close(ctx, CloseCode::ProtocolError);
            }
        }
    }
}

impl Handler<Deliver> for WsSession {
    type Result = ();
    fn handle(&mut self, msg: Deliver, _: &mut Self::Context) {
        self.out.push(msg.chunk, msg.bytes);
    }
}

impl Handler<Close> for WsSession {
    type Result = ();
    fn handle(&mut self, msg: Close, ctx: &mut Self::Context) {
        // The hub's order: what is still queued is dropped (at most once),
        // so that the `DISCONNECT` goes out next, also to a client that
        // reads too slowly to ever catch up (a slow consumer).
        self.out.drop_backlog();
        self.close(ctx, msg.code);
    }
}
