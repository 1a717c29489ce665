//! The session's way out to its socket.
//!
//! Frames the hub routes arrive already framed for the wire: the hub writes
//! each routed frame once, WebSocket header included, into a buffer that
//! every recipient shares, and hands each session a slice of it (a server's
//! frames are unmasked, so every recipient's bytes are the same). The session
//! queues that slice here as it is; the frames of its own (`IDENTIFY`
//! replies, errors, pings, the close) are framed here and queued in order
//! with them. [`Body`] is the response body the HTTP layer writes to the
//! socket: it runs the session's actor (actix-web-actors' context, which
//! also decodes what the client sends) and then hands out what the outbox
//! holds. So a routed frame is copied once per recipient on its way to the
//! kernel (into the HTTP layer's write buffer), not framed and copied again
//! by every session.
//!
//! Bytes the hub counted against `limits.max_outbound_bytes` stay counted
//! until the body hands them to the HTTP layer.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_http::ws::{CloseReason, OpCode, Parser};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;

/// The longest piece the body hands the HTTP layer at once, in KiB: under
/// the 128 KiB above which actix-http drops its write buffer after a write
/// and starts again from 1 KiB (vendor/README.md). (A buffer it grew below
/// that is kept for the life of the connection.)
pub const PIECE_KIB: u8 = 64;

/// The piece with `server.compact_write_buffers`: 8 KiB, small pieces joined
/// up to it. The HTTP layer then takes a piece only while its buffer is
/// empty ([`crate::startup`] sets its write buffer size to 1) and, a
/// WebSocket body being written as it is (no chunk headers), never grows
/// that buffer past 8 KiB: after a partial write it is emptied before the
/// next piece, and an empty buffer is reused from its start. BENCHMARKS.md,
/// "Memory after a burst", has what each costs.
pub const COMPACT_PIECE_KIB: u8 = 8;

/// Room for queued chunks kept once the queue is empty; a burst's larger
/// queue is given back.
const KEEP_CHUNKS: usize = 8;

/// What the session has to send, in order. Shared by the session actor and
/// its [`Body`], on the same thread.
#[derive(Clone)]
pub struct Outbox(Rc<RefCell<Queue>>);

struct Queue {
    /// Chunks in order, each with the bytes it counts against the session's
    /// outbound limit (0 for the session's own frames).
    chunks: VecDeque<(Bytes, usize)>,
    /// The session's own frames written since the last chunk was queued.
    tail: BytesMut,
    /// Bytes the hub has queued for the session and not yet handed on.
    outbound: Arc<AtomicUsize>,
    /// The close frame is queued: nothing may follow it.
    closed: bool,
    /// The longest piece handed on at once, in KiB, and whether smaller
    /// pieces are joined up to it (both in the padding after `closed`: no
    /// bytes added per session).
    piece_kib: u8,
    join: bool,
    /// Bytes at the front of the queue that finish a frame a piece cut in
    /// two: they must go before anything else may (in the padding too).
    cut_rest: u32,
}

/// Set in a session's outbound counter by the hub when it orders the session
/// closed: its [`Body`] then runs the actor even with a backlog queued, so
/// that the order is handled (and the backlog dropped) at once instead of
/// after the backlog has drained.
pub const CLOSING: usize = 1 << (usize::BITS - 1);

/// The length of each whole server frame (unmasked) at the start of `bytes`,
/// in order; stops at a header that is not all there.
fn frame_lens(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let rest = bytes.get(at..)?;
        let len = *rest.get(1)? & 0x7f;
        let (header, payload) = match len {
            126 => (4, usize::from(u16::from_be_bytes(rest.get(2..4)?.try_into().ok()?))),
            127 => (
                10,
                usize::try_from(u64::from_be_bytes(rest.get(2..10)?.try_into().ok()?)).ok()?,
            ),
            n => (2, usize::from(n)),
        };
        let frame = payload.checked_add(header)?;
        at = at.checked_add(frame)?;
        Some(frame)
    })
}

/// Where a cut `at` bytes into `bytes` falls, given that the first `rest`
/// bytes finish an earlier frame: how many bytes after the cut finish the
/// frame it splits (0 on a boundary).
fn rest_after_cut(bytes: &[u8], rest: usize, at: usize) -> usize {
    if rest >= at {
        return rest - at;
    }
    let mut end = rest;
    for len in frame_lens(&bytes[rest..]) {
        end += len;
        if end >= at {
            return end - at;
        }
    }
    0
}

impl Outbox {
    /// An outbox handing on pieces of at most 64 KiB, or, `compact`, pieces
    /// of 8 KiB with what is queued joined up to that.
    pub fn new(outbound: Arc<AtomicUsize>, compact: bool) -> Self {
        Outbox(Rc::new(RefCell::new(Queue {
            chunks: VecDeque::new(),
            tail: BytesMut::new(),
            outbound,
            closed: false,
            piece_kib: if compact { COMPACT_PIECE_KIB } else { PIECE_KIB },
            join: compact,
            cut_rest: 0,
        })))
    }

    /// Frames one text message of the session's own.
    pub fn text(&self, text: &str) {
        self.frame(text.as_bytes(), OpCode::Text);
    }

    /// Frames a pong answering a ping.
    pub fn pong(&self, payload: &[u8]) {
        self.frame(payload, OpCode::Pong);
    }

    fn frame(&self, payload: &[u8], op: OpCode) {
        let mut q = self.0.borrow_mut();
        if !q.closed {
            Parser::write_message(&mut q.tail, payload, op, true, false);
        }
    }

    /// Frames the close frame, the last one the session sends.
    pub fn close(&self, reason: Option<CloseReason>) {
        let mut q = self.0.borrow_mut();
        if !q.closed {
            q.closed = true;
            Parser::write_close(&mut q.tail, reason, false);
        }
    }

    /// Queues frames already framed for the wire (by the hub), which count
    /// `counted` bytes against the outbound limit until handed on. After the
    /// close frame they are dropped.
    pub fn push(&self, chunk: Bytes, counted: usize) {
        let mut q = self.0.borrow_mut();
        if q.closed {
            q.outbound.fetch_sub(counted, Ordering::AcqRel);
            return;
        }
        if !q.tail.is_empty() {
            let own = std::mem::take(&mut q.tail).freeze();
            q.chunks.push_back((own, 0));
        }
        q.chunks.push_back((chunk, counted));
    }

    /// Whether the hub has ordered the session closed ([`CLOSING`]).
    fn closing(&self) -> bool {
        self.0.borrow().outbound.load(Ordering::Acquire) & CLOSING != 0
    }

    /// Drops what is queued and not yet handed on (delivery is at most once),
    /// except the rest of a frame already partly handed on, so that what the
    /// session queues next (its `DISCONNECT`) goes out next. Bytes counted
    /// against the outbound limit are released.
    pub fn drop_backlog(&self) {
        let mut q = self.0.borrow_mut();
        let q = &mut *q;
        let mut kept = VecDeque::new();
        let mut keep = q.cut_rest as usize;
        while keep > 0 {
            let Some(piece) = q.take(keep) else { break };
            keep -= piece.len();
            kept.push_back((piece, 0));
        }
        for (_, counted) in q.chunks.drain(..) {
            if counted > 0 {
                q.outbound.fetch_sub(counted, Ordering::AcqRel);
            }
        }
        q.tail = BytesMut::new();
        // What is kept is still the rest of the cut frame.
        q.cut_rest = saturate(kept.iter().map(|(piece, _)| piece.len()).sum());
        q.chunks = kept;
    }

    /// The next piece to write, at most the outbox's piece size long.
    fn pop(&self) -> Option<Bytes> {
        let mut q = self.0.borrow_mut();
        let q = &mut *q;
        let max = usize::from(q.piece_kib) * 1024;
        let piece = match q.take(max) {
            Some(first) if q.join && first.len() < max && !(q.chunks.is_empty() && q.tail.is_empty()) => {
                let mut joined = BytesMut::with_capacity(max);
                joined.extend_from_slice(&first);
                while let Some(next) = q.take(max - joined.len()) {
                    joined.extend_from_slice(&next);
                    if joined.len() == max {
                        break;
                    }
                }
                Some(joined.freeze())
            }
            piece => piece,
        };
        if q.chunks.is_empty() && q.chunks.capacity() > KEEP_CHUNKS {
            q.chunks = VecDeque::new();
        }
        piece
    }
}

impl Queue {
    /// The next `limit` bytes at most (`limit` > 0), in order; a chunk's
    /// counted bytes are released once its last byte is taken.
    /// A piece that ends inside a frame notes how much of it is left
    /// (`cut_rest`).
    fn take(&mut self, limit: usize) -> Option<Bytes> {
        let rest = self.cut_rest as usize;
        let Some((chunk, counted)) = self.chunks.front_mut() else {
            if self.tail.len() > limit {
                self.cut_rest = saturate(rest_after_cut(&self.tail, rest, limit));
                return Some(self.tail.split_to(limit).freeze());
            }
            // The rest taken whole, so that an idle session keeps no buffer.
            self.cut_rest = 0;
            return (!self.tail.is_empty()).then(|| std::mem::take(&mut self.tail).freeze());
        };
        if chunk.len() > limit {
            self.cut_rest = saturate(rest_after_cut(chunk, rest, limit));
            return Some(chunk.split_to(limit));
        }
        // A chunk holds whole frames: taken whole, it ends on a boundary.
        self.cut_rest = 0;
        let counted = *counted;
        let (chunk, _) = self.chunks.pop_front()?;
        if counted > 0 {
            self.outbound.fetch_sub(counted, Ordering::AcqRel);
        }
        Some(chunk)
    }
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The WebSocket response body: the session's actor context, then its outbox.
pub struct Body<S> {
    context: S,
    outbox: Outbox,
    /// The context has ended (the actor stopped).
    ended: bool,
}

impl<S> Body<S> {
    pub fn new(context: S, outbox: Outbox) -> Self {
        Body {
            context,
            outbox,
            ended: false,
        }
    }
}

impl<S, E> Stream for Body<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        // Once the hub has ordered the session closed, the actor runs before
        // any backlog is handed on: it drops the backlog and queues its
        // `DISCONNECT`, which then goes out next.
        if !this.ended && this.outbox.closing() {
            match Pin::new(&mut this.context).poll_next(cx) {
                Poll::Ready(Some(item)) => return Poll::Ready(Some(item)),
                Poll::Ready(None) => this.ended = true,
                Poll::Pending => {}
            }
        }
        if let Some(piece) = this.outbox.pop() {
            return Poll::Ready(Some(Ok(piece)));
        }
        // The outbox is empty: let the actor run (it handles the client's
        // frames and the hub's deliveries, and fills the outbox).
        if !this.ended {
            match Pin::new(&mut this.context).poll_next(cx) {
                // The session writes nothing through the context itself;
                // should it ever, its bytes are passed on.
                Poll::Ready(Some(item)) => return Poll::Ready(Some(item)),
                Poll::Ready(None) => this.ended = true,
                Poll::Pending => {}
            }
        }
        match this.outbox.pop() {
            Some(piece) => Poll::Ready(Some(Ok(piece))),
            None if this.ended => Poll::Ready(None),
            // The context registered the waker: a delivery or a frame from
            // the client wakes this body.
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::task::noop_waker;

    const MAX_PIECE: usize = PIECE_KIB as usize * 1024;

    fn outbox() -> (Outbox, Arc<AtomicUsize>) {
        let outbound = Arc::new(AtomicUsize::new(0));
        (Outbox::new(outbound.clone(), false), outbound)
    }

    fn drain(o: &Outbox) -> Vec<Bytes> {
        std::iter::from_fn(|| o.pop()).collect()
    }

    fn server_frame(payload_len: usize) -> BytesMut {
        let mut b = BytesMut::new();
        Parser::write_message(&mut b, vec![b'x'; payload_len], OpCode::Text, true, false);
        b
    }

    #[test]
    fn a_cut_knows_how_much_of_its_frame_is_left() {
        let mut bytes = server_frame(10); // 12 bytes
        bytes.extend_from_slice(&server_frame(200)); // 204 bytes
        bytes.extend_from_slice(&server_frame(70_000)); // 70,010 bytes
        assert_eq!(frame_lens(&bytes).collect::<Vec<_>>(), [12, 204, 70_010]);
        assert_eq!(rest_after_cut(&bytes, 0, 5), 7);
        assert_eq!(rest_after_cut(&bytes, 0, 12), 0);
        assert_eq!(rest_after_cut(&bytes, 0, 100), 116);
        assert_eq!(rest_after_cut(&bytes, 0, 216 + 10), 70_000);
        // The first 7 bytes finish a frame cut before.
        assert_eq!(rest_after_cut(&bytes[5..], 7, 3), 4);
        assert_eq!(rest_after_cut(&bytes[5..], 7, 7), 0);
        assert_eq!(rest_after_cut(&bytes[5..], 7, 8), 203);
    }

    #[test]
    fn dropping_the_backlog_keeps_only_the_rest_of_a_frame_already_cut() {
        let (o, outbound) = outbox();
        let mut chunk = BytesMut::new();
        for _ in 0..4 {
            chunk.extend_from_slice(&server_frame(30 * 1024)); // 30,724 bytes each
        }
        let len = chunk.len();
        outbound.fetch_add(len, Ordering::AcqRel);
        o.push(chunk.freeze(), len);
        assert_eq!(o.pop().map(|p| p.len()), Some(MAX_PIECE));
        // The piece ended inside the third frame: the rest of it stays, the
        // fourth goes, and what is queued next follows the third.
        o.drop_backlog();
        assert_eq!(outbound.load(Ordering::Acquire), 0, "the counted bytes are released");
        o.text("bye");
        let rest: Vec<_> = drain(&o).iter().map(|p| p.len()).collect();
        assert_eq!(rest, [3 * 30_724 - MAX_PIECE, 5]);

        // The same for a frame of the session's own, cut in two.
        let (o, _) = outbox();
        o.text(&"y".repeat(100 * 1024)); // 102,410 bytes
        o.text("more");
        assert_eq!(o.pop().map(|p| p.len()), Some(MAX_PIECE));
        o.drop_backlog();
        o.text("bye");
        let rest: Vec<_> = drain(&o).iter().map(|p| p.len()).collect();
        assert_eq!(rest, [102_410 - MAX_PIECE, 5]);

        // Dropped twice, the second time before the kept rest has gone:
        // it is still the rest of the cut frame, kept again.
        let (o, _) = outbox();
        o.text(&"y".repeat(100 * 1024));
        assert_eq!(o.pop().map(|p| p.len()), Some(MAX_PIECE));
        o.drop_backlog();
        o.text("more");
        o.drop_backlog();
        o.text("bye");
        let rest: Vec<_> = drain(&o).iter().map(|p| p.len()).collect();
        assert_eq!(rest, [102_410 - MAX_PIECE, 5]);

        // Nothing cut: everything goes.
        let (o, _) = outbox();
        o.text("a");
        o.push(Bytes::from(server_frame(10)), 0);
        o.drop_backlog();
        assert!(drain(&o).is_empty());
    }

    #[test]
    fn own_frames_and_delivered_chunks_leave_in_the_order_they_were_queued() {
        let (o, _) = outbox();
        o.text("a");
        o.push(Bytes::from_static(b"HUB"), 10);
        o.text("b");
        o.close(None);
        let out = drain(&o);
        assert_eq!(
            out,
            vec![
                Bytes::from_static(&[0x81, 1, b'a']),
                Bytes::from_static(b"HUB"),
                Bytes::from_static(&[0x81, 1, b'b', 0x88, 0]),
            ]
        );
        assert!(o.pop().is_none());
    }

    #[test]
    fn nothing_follows_the_close_frame() {
        let (o, outbound) = outbox();
        outbound.store(100, Ordering::SeqCst);
        o.close(None);
        o.text("late");
        o.pong(b"p");
        o.push(Bytes::from_static(b"HUB"), 100);
        o.close(None);
        assert_eq!(drain(&o), vec![Bytes::from_static(&[0x88, 0])]);
        assert_eq!(
            outbound.load(Ordering::SeqCst),
            0,
            "dropped bytes are no longer counted"
        );
    }

    #[test]
    fn counted_bytes_are_released_when_the_whole_chunk_is_handed_on() {
        let (o, outbound) = outbox();
        outbound.store(1000, Ordering::SeqCst);
        o.push(Bytes::from(vec![7u8; MAX_PIECE * 2 + 5]), 600);
        assert_eq!(o.pop().map(|b| b.len()), Some(MAX_PIECE));
        assert_eq!(o.pop().map(|b| b.len()), Some(MAX_PIECE));
        assert_eq!(
            outbound.load(Ordering::SeqCst),
            1000,
            "still counted while pieces remain"
        );
        assert_eq!(o.pop().map(|b| b.len()), Some(5));
        assert_eq!(outbound.load(Ordering::SeqCst), 400);
        assert!(o.pop().is_none());
    }

    #[test]
    fn an_idle_outbox_keeps_no_buffer() {
        let (o, _) = outbox();
        o.text("hello");
        assert_eq!(drain(&o).len(), 1);
        assert_eq!(o.0.borrow().tail.capacity(), 0);
    }

    #[test]
    fn no_piece_is_longer_than_max_piece_and_the_bytes_stay_in_order() {
        let (o, _) = outbox();
        assert_pieces_bounded(&o, MAX_PIECE);
        let compact = Outbox::new(Arc::new(AtomicUsize::new(0)), true);
        assert_pieces_bounded(&compact, usize::from(COMPACT_PIECE_KIB) * 1024);
    }

    /// A large own frame, a chunk and a small frame leave in pieces of at
    /// most `max` bytes, their bytes in order.
    fn assert_pieces_bounded(o: &Outbox, max: usize) {
        // A pong echoing a large ping: the session's own frame.
        let ping = vec![1u8; max * 2];
        o.pong(&ping);
        let chunk = Bytes::from(vec![2u8; max + 1]);
        o.push(chunk.clone(), 0);
        o.text("after");
        let pieces = drain(o);
        assert!(
            pieces.iter().all(|p| p.len() <= max),
            "{:?}",
            pieces.iter().map(Bytes::len).collect::<Vec<_>>()
        );
        let mut expected = BytesMut::new();
        Parser::write_message(&mut expected, &ping, OpCode::Pong, true, false);
        expected.extend_from_slice(&chunk);
        Parser::write_message(&mut expected, "after", OpCode::Text, true, false);
        let all: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
        assert_eq!(all, expected.to_vec());
    }

    #[test]
    fn a_large_own_frame_leaves_in_pieces_and_what_follows_it_stays_behind() {
        let (o, _) = outbox();
        let ping = vec![3u8; MAX_PIECE + 100];
        o.pong(&ping);
        // Part of the pong has left when the next chunk and the close come.
        assert_eq!(o.pop().map(|p| p.len()), Some(MAX_PIECE));
        o.push(Bytes::from_static(b"HUB"), 0);
        o.close(None);
        let mut expected = BytesMut::new();
        Parser::write_message(&mut expected, &ping, OpCode::Pong, true, false);
        let rest = expected.split_off(MAX_PIECE);
        let mut want = rest.to_vec();
        want.extend_from_slice(b"HUB");
        want.extend_from_slice(&[0x88, 0]);
        let got: Vec<u8> = drain(&o).iter().flat_map(|p| p.iter().copied()).collect();
        assert_eq!(got, want);
        assert_eq!(o.0.borrow().tail.capacity(), 0);
    }

    #[test]
    fn compact_pieces_join_what_is_queued_up_to_8_kib() {
        let outbound = Arc::new(AtomicUsize::new(0));
        let o = Outbox::new(outbound.clone(), true);
        let max = usize::from(COMPACT_PIECE_KIB) * 1024;
        let mut want = Vec::new();
        for i in 0..100u8 {
            let chunk = Bytes::from(vec![i; 300]);
            want.extend_from_slice(&chunk);
            outbound.fetch_add(364, Ordering::SeqCst);
            o.push(chunk, 364);
        }
        o.text("own");
        want.extend_from_slice(&[0x81, 3, b'o', b'w', b'n']);
        let pieces = drain(&o);
        let sizes: Vec<usize> = pieces.iter().map(Bytes::len).collect();
        // Every piece but the last is exactly 8 KiB.
        assert!(sizes[..sizes.len() - 1].iter().all(|&n| n == max), "{sizes:?}");
        assert_eq!(sizes.len(), want.len().div_ceil(max));
        let got: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
        assert_eq!(got, want);
        assert_eq!(outbound.load(Ordering::SeqCst), 0, "every chunk's bytes released");
    }

    #[test]
    fn a_burst_s_queue_is_given_back_once_drained() {
        let (o, _) = outbox();
        for _ in 0..1000 {
            o.push(Bytes::from_static(b"HUB"), 0);
        }
        assert!(o.0.borrow().chunks.capacity() >= 1000);
        assert_eq!(drain(&o).len(), 1000);
        assert!(o.0.borrow().chunks.capacity() <= KEEP_CHUNKS);
    }

    /// A context stand-in: yields what it is given, then ends.
    struct Script(VecDeque<Poll<Option<Result<Bytes, ()>>>>, Outbox);

    impl Stream for Script {
        type Item = Result<Bytes, ()>;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            // Like the actor: each poll may queue a frame before answering.
            self.1.text("x");
            self.0.pop_front().unwrap_or(Poll::Ready(None))
        }
    }

    #[test]
    fn once_the_hub_orders_a_close_the_body_runs_the_context_before_the_backlog() {
        let (o, outbound) = outbox();
        let backlog = Bytes::from(server_frame(10));
        outbound.fetch_add(backlog.len(), Ordering::AcqRel);
        o.push(backlog.clone(), backlog.len());
        // Like the session handling the hub's `Close`: drops the backlog and
        // queues its farewell.
        struct Closing(Outbox);
        impl Stream for Closing {
            type Item = Result<Bytes, ()>;
            fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
                self.0.drop_backlog();
                self.0.text("bye");
                Poll::Ready(None)
            }
        }
        let mut body = Body::new(Closing(o.clone()), o.clone());
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        // Without the order, the backlog goes first.
        assert_eq!(
            Pin::new(&mut body).poll_next(&mut cx),
            Poll::Ready(Some(Ok(backlog.clone())))
        );
        outbound.fetch_add(backlog.len(), Ordering::AcqRel);
        o.push(backlog.clone(), backlog.len());
        outbound.fetch_or(CLOSING, Ordering::AcqRel);
        let bye = Bytes::from_static(&[0x81, 3, b'b', b'y', b'e']);
        assert_eq!(Pin::new(&mut body).poll_next(&mut cx), Poll::Ready(Some(Ok(bye))));
        assert_eq!(Pin::new(&mut body).poll_next(&mut cx), Poll::Ready(None));
        assert_eq!(
            outbound.load(Ordering::Acquire),
            CLOSING,
            "the backlog's bytes are released"
        );
    }

    #[test]
    fn the_body_runs_the_context_when_the_outbox_is_empty_and_ends_after_draining_it() {
        let (o, _) = outbox();
        let script = Script(VecDeque::from([Poll::Pending, Poll::Ready(None)]), o.clone());
        let mut body = Body::new(script, o.clone());
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut poll = || Pin::new(&mut body).poll_next(&mut cx);
        let frame_x = Bytes::from_static(&[0x81, 1, b'x']);
        // The context runs (Pending) and queued a frame: handed on at once.
        assert_eq!(poll(), Poll::Ready(Some(Ok(frame_x.clone()))));
        // The context ends, having queued one more: that one still leaves...
        assert_eq!(poll(), Poll::Ready(Some(Ok(frame_x))));
        // ...and then the body ends.
        assert_eq!(poll(), Poll::Ready(None));
    }
}
