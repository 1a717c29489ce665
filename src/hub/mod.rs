//! The central `Hub` actor: the session table, the groups, the pending
//! replies. It routes frames that sessions have already encoded, so every
//! recipient of a frame shares the same bytes, and it never parses JSON.
//!
//! Delivery is batched and bounded. Each routed frame is framed for the wire
//! once (WebSocket header included: a server's frames are unmasked, so every
//! recipient gets the same bytes) into a buffer the hub fills while it
//! handles its mailbox, and each recipient's batch records where in that
//! buffer its frames are (consecutive frames merge into one range). Once the
//! hub has handled what is in its mailbox, one `Deliver` per session carries
//! its frames (`try_send` into the session's bounded mailbox): a slice of the
//! shared buffer when the session's frames are one range and a good part of
//! its memory, else a copy of just its own frames, so that no session keeps
//! much more of the buffer alive than what it is counted for.
//!
//! Each session's queued bytes are counted; a session past
//! `limits.max_outbound_bytes`, or whose mailbox is full, is evicted as a
//! slow consumer: removed from routing at once, told to close, and its socket
//! reset after a grace period if its actor is stuck behind a client that
//! stopped reading. So one slow client never grows the hub's memory past its
//! limit nor delays anyone else.

pub mod messages;
pub mod pending;
pub mod registry;

use std::collections::{HashSet, VecDeque};
use std::mem;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::ws::{OpCode, Parser};
use bytes::{Bytes, BytesMut};

use crate::conn::Closer;
use crate::metrics::{Drop, Metrics};
use crate::protocol::frame::{self, op, Intent};
use crate::protocol::{CloseCode, ErrorCode};
use crate::session::{outbox, WsSession, FRAME_OVERHEAD};
use crate::settings::Settings;
use crate::SessionId;
use messages::*;
use pending::{Check, Pending, Reach, Target};
use registry::{Key, Registry};

/// What the hub keeps to reach one session.
pub struct Link {
    addr: Addr<WsSession>,
    outbound: Arc<AtomicUsize>,
    closer: Closer,
    peer: Option<String>,
    /// Where in the hub's frame buffer the frames routed to the session
    /// since the last flush are.
    batch: Vec<Range<usize>>,
    /// What they count against `limits.max_outbound_bytes`.
    batch_bytes: usize,
    batch_frames: u32,
    /// The hub's count of identifies once this session identified (0
    /// before): a request routed before that cannot have reached it.
    joined: u64,
}

/// The hub's settings, read once.
#[derive(Debug, Clone)]
pub struct HubConfig {
    pub max_outbound_bytes: usize,
    pub reply_ttl: Duration,
    pub max_pending_replies: usize,
    /// How long a session told to close may take before its socket is reset.
    pub close_grace: Duration,
    /// How long a session told to close may take while its client is still
    /// reading (the heartbeat timeout).
    pub close_grace_max: Duration,
    /// When the hub itself closes a session that has not identified: the
    /// identify timeout plus the close grace, after the session's own timer
    /// (which does not run while its client reads too slowly to take in
    /// what the session has queued).
    pub identify_deadline: Duration,
}

impl HubConfig {
    pub fn from_settings(s: &Settings) -> Self {
        HubConfig {
            max_outbound_bytes: s.limits.max_outbound_bytes,
            reply_ttl: s.limits.reply_ttl(),
            max_pending_replies: s.limits.max_pending_replies,
            close_grace: s.limits.close_grace(),
            close_grace_max: s.heartbeat.timeout(),
            identify_deadline: s.limits.identify_timeout() + s.limits.close_grace(),
        }
    }
}

pub struct Hub {
    config: HubConfig,
    /// Sessions, groups, services.
    registry: Registry<Link>,
    /// Who awaits replies to which `EVENT` id.
    pending: Pending,
    metrics: Arc<Metrics>,
    /// The frames routed since the last flush, framed for the wire.
    frames: BytesMut,
    /// Sessions with a non-empty batch, in the order they got their first frame.
    dirty: Vec<Key>,
    /// A `Flush` is queued behind the mailbox.
    flush_scheduled: bool,
    /// Reused buffer for recipient lists.
    scratch: Vec<Key>,
    /// The slices of a drain not yet closed (`Drain`, `DrainNext`).
    draining: VecDeque<Vec<SessionId>>,
    /// A drain has started: a session that connects after it (its upgrade
    /// passed the readiness check just before) is closed at once.
    drain_started: bool,
    /// Sessions found stopped while delivering, taken out of routing before
    /// their `Leave` (already queued) counts them; one entry per such session
    /// until then.
    stopped: HashSet<SessionId>,
    /// Each session's identify deadline, in the order they connected; one
    /// entry per connection made within the last identify deadline.
    deadlines: VecDeque<(Instant, SessionId)>,
    /// Identifies so far.
    joins: u64,
}

/// Most often a closing socket's progress is looked at, however short the
/// close grace.
const MIN_GRACE_CHECK: Duration = Duration::from_millis(100);

/// Past this many bytes of routed frames the hub flushes at once, before it
/// has handled all of its mailbox: bounds the shared buffer.
const FLUSH_AT_BYTES: usize = 1 << 20;
/// Most bytes the next frame buffer reserves (it reserves what the last one held).
const MAX_FRAMES_RESERVE: usize = 256 * 1024;
/// A session gets a slice of the shared buffer only if its frames make up
/// at least 1/`SHARE` of the buffer's allocation (all of which a slice keeps
/// alive); else a copy of its own frames.
const SHARE: usize = 4;
/// A batch that grew past this many ranges gives its room back after a flush.
const KEEP_RANGES: usize = 16;

impl Hub {
    pub fn new(config: HubConfig, metrics: Arc<Metrics>) -> Self {
        let pending = Pending::new(config.reply_ttl, config.max_pending_replies);
        Hub {
            config,
            registry: Registry::default(),
            pending,
            metrics,
            frames: BytesMut::new(),
            dirty: Vec::new(),
            flush_scheduled: false,
            scratch: Vec::new(),
            draining: VecDeque::new(),
            drain_started: false,
            stopped: HashSet::new(),
            deadlines: VecDeque::new(),
            joins: 0,
        }
    }

    /// Closes with 4005 the sessions still not identified at their deadline.
    fn enforce_identify_deadlines(&mut self, now: Instant) {
        while let Some(&(deadline, id)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            let Some(key) = self.registry.key(&id) else { continue };
            if self.registry.get(key).is_some_and(|e| e.service.is_none()) {
                self.close_session(key, CloseCode::IdentifyTimeout);
            }
        }
        if self.deadlines.is_empty() && self.deadlines.capacity() > 1024 {
            self.deadlines = VecDeque::new();
        }
    }

    /// Frames `frame` for the wire into the shared buffer, once for all its
    /// recipients; returns where it is, for [`Hub::push`].
    fn append(&mut self, frame: &str) -> Range<usize> {
        if self.frames.len() >= FLUSH_AT_BYTES {
            self.send_batches();
        }
        let start = self.frames.len();
        Parser::write_message(&mut self.frames, frame, OpCode::Text, true, false);
        start..self.frames.len()
    }

    /// Queues the frame at `at` in the shared buffer (from [`Hub::append`],
    /// since the last flush) for one session; `len` is the frame's length.
    fn push(&mut self, key: Key, at: Range<usize>, len: usize, ctx: &mut Context<Self>) {
        let Some(entry) = self.registry.get_mut(key) else {
            return;
        };
        let link = &mut entry.link;
        match link.batch.last_mut() {
            Some(last) if last.end == at.start => last.end = at.end,
            Some(_) => link.batch.push(at),
            None => {
                self.dirty.push(key);
                link.batch.push(at);
            }
        }
        link.batch_bytes += len + FRAME_OVERHEAD;
        link.batch_frames += 1;
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            // Handled after everything already in the mailbox, so that a
            // burst of routed frames goes out as one message per session.
            ctx.notify(Flush);
        }
    }

    /// Frames `frame` and queues it for one session.
    fn push_one(&mut self, key: Key, frame: &str, ctx: &mut Context<Self>) {
        let at = self.append(frame);
        self.push(key, at, frame.len(), ctx);
    }

    /// Sends every session its batch.
    fn send_batches(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let reserve = self.frames.len().min(MAX_FRAMES_RESERVE);
        // A slice keeps the whole allocation alive, reserve and growth
        // included: what a session's share is measured against.
        let mut allocated = self.frames.capacity();
        let mut frames = mem::replace(&mut self.frames, BytesMut::with_capacity(reserve)).freeze();
        if allocated > SHARE * frames.len() {
            // A round much smaller than the room reserved for it (the one
            // before was larger): one tight copy that every recipient can
            // share, rather than a copy per recipient.
            frames = Bytes::copy_from_slice(&frames);
            allocated = frames.len();
        }
        let mut dirty = mem::take(&mut self.dirty);
        for key in dirty.drain(..) {
            let Some(entry) = self.registry.get_mut(key) else {
                continue;
            };
            let link = &mut entry.link;
            if link.batch.is_empty() {
                continue;
            }
            let chunk = chunk_of(&frames, allocated, &link.batch);
            link.batch.clear();
            if link.batch.capacity() > KEEP_RANGES {
                link.batch = Vec::new();
            }
            let bytes = mem::replace(&mut link.batch_bytes, 0);
            let n = u64::from(mem::replace(&mut link.batch_frames, 0));
            let queued = link.outbound.fetch_add(bytes, Ordering::AcqRel) + bytes;
            if queued > self.config.max_outbound_bytes {
                self.metrics.dropped(Drop::SlowConsumer, n);
                self.close_session(key, CloseCode::SlowConsumer);
                continue;
            }
            match link.addr.try_send(Deliver { chunk, bytes }) {
                Ok(()) => {}
                Err(SendError::Full(_)) => {
                    self.metrics.dropped(Drop::SlowConsumer, n);
                    self.close_session(key, CloseCode::SlowConsumer);
                }
                // The session has stopped: out of routing now (nothing more
                // is queued or counted against it); its `Leave`, already in
                // the mailbox, counts the close.
                Err(SendError::Closed(_)) => {
                    if let Some(entry) = self.registry.get(key) {
                        self.stopped.insert(entry.id);
                    }
                    self.remove_session(key);
                }
            }
        }
        // Keep the list's room for the next flush, unless something was
        // queued meanwhile.
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Removes a session from routing and updates the gauges.
    fn remove_session(&mut self, key: Key) -> Option<Link> {
        let entry = self.registry.remove(key)?;
        if let Some(service) = &entry.service {
            self.metrics.identified.dec();
            self.metrics.service_left(service);
            self.metrics.groups.set(self.registry.group_count() as i64);
        }
        Some(entry.link)
    }

    /// Removes a session and orders it closed with `code`; if its actor is
    /// stuck (the client stopped reading) the socket is reset after the grace.
    fn close_session(&mut self, key: Key, code: CloseCode) {
        let id = self.registry.get(key).map(|e| e.id);
        let service = self.registry.get(key).and_then(|e| e.service.clone());
        let Some(link) = self.remove_session(key) else { return };
        log::info!(
            "closing session {} (service {}, peer {}): {code}",
            id.map(|i| i.to_string()).unwrap_or_default(),
            service.as_deref().unwrap_or("-"),
            link.peer.as_deref().unwrap_or("-"),
        );
        self.metrics.disconnected(code);
        // The session's body runs its actor at once, backlog or not.
        link.outbound.fetch_or(outbox::CLOSING, Ordering::AcqRel);
        // One message past the mailbox limit, once per session: bounded.
        link.addr.do_send(Close { code });
        // The grace runs on the system's thread, not as the hub's timer, so
        // that it ends on time even while the hub's mailbox never empties.
        // A client that is still reading, only slowly, gets more time to
        // reach its DISCONNECT, grace after grace, up to the heartbeat
        // timeout; one that took in nothing during a grace is reset.
        let closer = link.closer;
        let (grace, max) = (self.config.close_grace, self.config.close_grace_max);
        actix::System::current().arbiter().spawn(async move {
            let ordered = Instant::now();
            let mut acked = closer.bytes_acked();
            loop {
                let wait = if acked.is_some() {
                    grace.max(MIN_GRACE_CHECK)
                } else {
                    grace
                };
                actix::clock::sleep(wait).await;
                if !closer.is_open() {
                    return;
                }
                let now = closer.bytes_acked();
                let reading = matches!((acked, now), (Some(before), Some(now)) if now > before);
                if reading && ordered.elapsed() < max {
                    acked = now;
                    continue;
                }
                log::debug!("socket still open {:?} after close order; resetting it", code);
                closer.reset();
                return;
            }
        });
    }
}

/// Sends the batches collected while the mailbox was being handled.
#[derive(Message)]
#[rtype(result = "()")]
struct Flush;

impl Actor for Hub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Senders are flow-controlled by waiting on `send` every few frames;
        // capacity here only decides when such a `send` parks, so keep it
        // well above any burst.
        ctx.set_mailbox_capacity(1 << 20);
        ctx.run_interval(Duration::from_secs(1), |hub, _| {
            let now = Instant::now();
            hub.pending.expire(now);
            hub.enforce_identify_deadlines(now);
        });
    }
}

impl Handler<Flush> for Hub {
    type Result = ();
    fn handle(&mut self, _: Flush, _: &mut Context<Self>) {
        self.flush_scheduled = false;
        self.send_batches();
    }
}

impl Handler<Connect> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Connect, _: &mut Context<Self>) {
        let link = Link {
            addr: msg.addr,
            outbound: msg.outbound,
            closer: msg.closer,
            peer: msg.peer,
            batch: Vec::new(),
            batch_bytes: 0,
            batch_frames: 0,
            joined: 0,
        };
        let key = self.registry.insert(msg.id, link);
        self.deadlines
            .push_back((Instant::now() + self.config.identify_deadline, msg.id));
        // Entries of sessions that identified or left wait for their time;
        // past twice the sessions there are, only the unidentified stay.
        if self.deadlines.len() > 2 * self.registry.len() + 1024 {
            let registry = &self.registry;
            self.deadlines.retain(|(_, id)| {
                let entry = registry.key(id).and_then(|key| registry.get(key));
                entry.is_some_and(|e| e.service.is_none())
            });
        }
        if self.drain_started {
            self.close_session(key, CloseCode::Shutdown);
        }
    }
}

impl Handler<Join> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Join, _: &mut Context<Self>) {
        let Some(key) = self.registry.key(&msg.id) else { return };
        self.metrics.identified.inc();
        self.metrics.service_joined(&msg.service);
        self.joins += 1;
        if let Some(entry) = self.registry.get_mut(key) {
            entry.link.joined = self.joins;
        }
        self.registry.identify(key, msg.service, msg.groups);
        self.metrics.groups.set(self.registry.group_count() as i64);
    }
}

impl Handler<Route> for Hub {
    type Result = Result<(), ErrorCode>;
    fn handle(&mut self, msg: Route, ctx: &mut Context<Self>) -> Self::Result {
        let sender = match msg.from {
            Some(id) => match self.registry.key(&id) {
                Some(key) => Some(key),
                None => return Ok(()), // the sender is gone or evicted
            },
            None => None,
        };
        let mut out = mem::take(&mut self.scratch);
        out.clear();
        let result = self.registry.recipients(&msg.intent, sender, &mut out);
        match result {
            Err(code) => {
                self.metrics.dropped(Drop::NoRecipient, 1);
                if let Some(key) = sender {
                    self.push_one(key, &frame::error(Some(&msg.id), code, code.message()), ctx);
                }
            }
            Ok(()) => {
                if let (Some(from), false) = (msg.from, out.is_empty()) {
                    // Who may reply: whoever the frame reached. Kept so that
                    // replies to an id that several sessions use reach the
                    // right one (`pending`).
                    let registry = &self.registry;
                    let reach = match &msg.intent {
                        Intent::Global => Reach::Everyone,
                        Intent::Group(name) => Reach::Group(name.clone()),
                        Intent::Direct(_) => match registry.get(out[0]) {
                            Some(entry) => Reach::Session(entry.id),
                            None => Reach::Everyone,
                        },
                    };
                    self.pending
                        .insert(msg.id.clone(), from, reach, self.joins, Instant::now());
                }
                if !out.is_empty() {
                    let at = self.append(&msg.frame);
                    for &key in &out {
                        self.push(key, at.clone(), msg.frame.len(), ctx);
                    }
                }
                self.metrics.delivered(op::EVENT, out.len() as u64);
                self.metrics.routing_latency.observe(msg.at.elapsed().as_secs_f64());
            }
        }
        self.scratch = out;
        result
    }
}

impl Handler<Reply> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Reply, ctx: &mut Context<Self>) {
        let Some(replier) = self.registry.key(&msg.from) else {
            return;
        };
        let registry = &self.registry;
        let replier_groups = registry.get(replier).map(|e| &e.groups[..]).unwrap_or_default();
        let joined = registry.get(replier).map_or(u64::MAX, |e| e.link.joined);
        let target = self
            .pending
            .lookup(&msg.id, msg.from, joined, Instant::now(), |sender, reach| Check {
                live: registry.key(sender).is_some(),
                // A GLOBAL or GROUP frame never reaches its own sender.
                reaches: match reach {
                    Reach::Everyone => *sender != msg.from,
                    Reach::Group(name) => *sender != msg.from && replier_groups.contains(name),
                    Reach::Session(id) => *id == msg.from,
                },
            });
        let code = match target {
            Target::Sender(sender) => match self.registry.key(&sender) {
                Some(key) => {
                    self.push_one(key, &msg.frame, ctx);
                    self.metrics.delivered(op::REPLY, 1);
                    return;
                }
                None => ErrorCode::UnknownTarget,
            },
            // The sender of the request it answers has left since.
            Target::Gone => ErrorCode::UnknownTarget,
            Target::Unknown => ErrorCode::UnknownRequest,
        };
        self.metrics.dropped(Drop::NoRecipient, 1);
        self.push_one(replier, &frame::error(Some(&msg.id), code, code.message()), ctx);
    }
}

impl Handler<Leave> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Leave, _: &mut Context<Self>) {
        if let Some(key) = self.registry.key(&msg.id) {
            // Every close is counted once, here or in `close_session`: a
            // session the hub has closed (and counted) is already gone from
            // the registry, even when it closed itself at the same moment or
            // its socket ended before the close frame.
            match msg.code {
                Some(code) => self.metrics.disconnected(code),
                None => self.metrics.connection_lost(),
            }
            self.remove_session(key);
        } else if self.stopped.remove(&msg.id) {
            match msg.code {
                Some(code) => self.metrics.disconnected(code),
                None => self.metrics.connection_lost(),
            }
        }
    }
}

impl Handler<Barrier> for Hub {
    type Result = ();
    fn handle(&mut self, _: Barrier, _: &mut Context<Self>) {}
}

impl Handler<GetSnapshot> for Hub {
    type Result = MessageResult<GetSnapshot>;
    fn handle(&mut self, msg: GetSnapshot, _: &mut Context<Self>) -> Self::Result {
        let groups = self.registry.groups().map(|(g, n)| (g.clone(), n)).collect();
        let services = self.registry.services().map(|(s, n)| (s.clone(), n)).collect();
        MessageResult(Snapshot {
            connections: self.registry.len(),
            identified: self.registry.identified_len(),
            groups,
            services,
            sessions: self
                .registry
                .entries()
                .take(msg.sessions)
                .map(|e| SessionInfo {
                    session: e.id.to_string(),
                    service: e.service.as_deref().map(str::to_owned),
                    address: e.link.peer.clone(),
                    groups: e.groups.to_vec(),
                })
                .collect(),
        })
    }
}

impl Handler<Kick> for Hub {
    type Result = bool;
    fn handle(&mut self, msg: Kick, _: &mut Context<Self>) -> bool {
        match self.registry.key(&msg.session) {
            Some(key) => {
                self.close_session(key, CloseCode::Kicked);
                true
            }
            None => false,
        }
    }
}

impl Handler<Drain> for Hub {
    type Result = MessageResult<Drain>;
    fn handle(&mut self, msg: Drain, _: &mut Context<Self>) -> Self::Result {
        // Close orders go out in slices spread evenly over the drain time
        // (at most one slice per step), so that clients do not all reconnect
        // at the same moment.
        let ids: Vec<_> = self
            .registry
            .keys()
            .into_iter()
            .filter_map(|k| self.registry.get(k).map(|e| e.id))
            .collect();
        let step = msg.step.as_millis().max(1);
        let max_slices = (msg.over.as_millis() / step).max(1) as usize;
        let slices = ids.len().min(max_slices);
        log::info!("draining {} sessions over {:?}", ids.len(), msg.over);
        self.drain_started = true;
        self.draining = match slices {
            0 => VecDeque::new(),
            n => ids.chunks(ids.len().div_ceil(n)).map(<[SessionId]>::to_vec).collect(),
        };
        MessageResult(self.draining.len())
    }
}

impl Handler<DrainNext> for Hub {
    type Result = ();
    fn handle(&mut self, _: DrainNext, _: &mut Context<Self>) {
        for id in self.draining.pop_front().unwrap_or_default() {
            if let Some(key) = self.registry.key(&id) {
                self.close_session(key, CloseCode::Shutdown);
            }
        }
    }
}

/// A session's frames out of the shared buffer (`allocated` bytes of
/// memory): a slice of it when they are one range and at least 1/[`SHARE`]
/// of that memory (a slow session then keeps at most `SHARE` times what it
/// is counted for alive), else a copy of them.
fn chunk_of(frames: &Bytes, allocated: usize, batch: &[Range<usize>]) -> Bytes {
    if let [range] = batch {
        if range.len() * SHARE >= allocated.max(frames.len()) {
            return frames.slice(range.clone());
        }
    }
    let len = batch.iter().map(|r| r.len()).sum();
    let mut own = BytesMut::with_capacity(len);
    for range in batch {
        own.extend_from_slice(&frames[range.clone()]);
    }
    own.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // slices of ranges, as batches hold them
    fn a_session_with_a_good_part_of_the_buffer_shares_it_and_others_get_a_copy() {
        let frames = Bytes::from_static(b"0123456789abcdefghij");
        let shared = chunk_of(&frames, 20, &[5..20]);
        assert_eq!(&shared[..], b"56789abcdefghij");
        assert_eq!(shared.as_ptr(), frames[5..].as_ptr(), "a slice, not a copy");

        let small = chunk_of(&frames, 20, &[0..4]);
        assert_eq!(&small[..], b"0123");
        assert_ne!(small.as_ptr(), frames.as_ptr(), "a quarter or less is copied");

        let scattered = chunk_of(&frames, 20, &[0..2, 10..20]);
        assert_eq!(&scattered[..], b"01abcdefghij");
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn the_share_is_measured_against_the_memory_a_slice_keeps_alive() {
        // One small frame in a buffer reserved after a burst: the whole of
        // what was written, but a sliver of what a slice would pin.
        let mut buf = BytesMut::with_capacity(256 * 1024);
        buf.extend_from_slice(b"one small frame");
        let allocated = buf.capacity();
        let frames = buf.freeze();
        let chunk = chunk_of(&frames, allocated, &[0..frames.len()]);
        assert_eq!(&chunk[..], b"one small frame");
        assert_ne!(chunk.as_ptr(), frames.as_ptr(), "copied, so the 256 KiB can be freed");
    }
}
