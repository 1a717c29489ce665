//! Backpressure between the socket and the session's frame decoder.
//!
//! actix-web-actors' `WsStream` drains the whole request payload into its
//! own buffer every time it is polled, and it is polled once per frame it
//! decodes. So a client that writes faster than its session handles frames
//! (say, a flood of frames that each get an `ERROR` back) had its bytes
//! moved from the socket into that buffer as fast as TCP delivered them:
//! about 100 MB/s of hub memory for one client, while actix-http's own
//! payload limit (32 KiB) never engaged because the payload was always
//! empty.
//!
//! [`Gated`] sits between the payload and the decoder and hands the decoder
//! bytes only once it has decoded every whole frame it holds: after a frame
//! has been handled, the next poll reads nothing and asks to be polled again;
//! if that poll finds no new frame handled, the decoder ran dry and may read.
//! The decoder then never holds more than one partial frame plus one read of
//! the payload, the payload stays full, actix-http stops reading the socket,
//! and the client is slowed by TCP.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_util::Stream;

/// How many messages (frames, fragments, errors) the session has handled;
/// shared by the session and its [`Gated`] payload on the same thread.
#[derive(Debug, Clone, Default)]
pub struct Handled(Rc<Cell<u64>>);

impl Handled {
    /// One more message handled.
    pub fn tick(&self) {
        self.0.set(self.0.get().wrapping_add(1));
    }

    fn count(&self) -> u64 {
        self.0.get()
    }
}

/// A payload stream that waits for the decoder to run dry before each read.
pub struct Gated<S> {
    inner: S,
    handled: Handled,
    /// `handled` when this stream was last polled.
    seen: u64,
}

impl<S> Gated<S> {
    pub fn new(inner: S, handled: Handled) -> Self {
        let seen = handled.count();
        Gated { inner, handled, seen }
    }
}

impl<S: Stream + Unpin> Stream for Gated<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let now = self.handled.count();
        if now != self.seen {
            // The decoder produced a frame since the last poll: it may hold
            // more. Let it decode them before reading; come back in any case,
            // for when it holds none.
            self.seen = now;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// Ends a payload at its first error instead of passing the error on.
///
/// actix-http reports a connection the client closed as a payload error
/// after the last bytes it read, and `WsStream` returns a payload error as
/// soon as it sees one, before it decodes what it already holds. So a client
/// that sends a close frame and then closes its socket at once (many do)
/// would lose that close frame and be taken for a broken connection (1006).
/// Ended instead, the decoder hands over every whole frame it holds first.
pub struct EndOnError<S> {
    inner: S,
    ended: bool,
}

impl<S> EndOnError<S> {
    pub fn new(inner: S) -> Self {
        EndOnError { inner, ended: false }
    }
}

impl<S, T, E> Stream for EndOnError<S>
where
    S: Stream<Item = Result<T, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<T, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Err(e))) => {
                log::debug!("payload ended: {e}");
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(None)
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::task::noop_waker;

    struct Chunks(Vec<&'static str>);

    impl Stream for Chunks {
        type Item = &'static str;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<&'static str>> {
            if self.0.is_empty() {
                Poll::Ready(None)
            } else {
                Poll::Ready(Some(self.0.remove(0)))
            }
        }
    }

    #[test]
    fn a_payload_error_ends_the_stream_after_what_came_before_it() {
        struct Then(Vec<Result<&'static str, &'static str>>);
        impl Stream for Then {
            type Item = Result<&'static str, &'static str>;
            fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
                Poll::Ready((!self.0.is_empty()).then(|| self.0.remove(0)))
            }
        }
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut ending = EndOnError::new(Then(vec![Ok("close frame"), Err("incomplete"), Ok("never")]));
        let mut poll = || Pin::new(&mut ending).poll_next(&mut cx);
        assert_eq!(poll(), Poll::Ready(Some(Ok("close frame"))));
        assert_eq!(poll(), Poll::Ready(None));
        assert_eq!(poll(), Poll::Ready(None), "stays ended");
    }

    #[test]
    fn reads_only_after_a_poll_with_no_frame_handled_in_between() {
        let handled = Handled::default();
        let mut gated = Gated::new(Chunks(vec!["a", "b", "c"]), handled.clone());
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut poll = |g: &mut Gated<Chunks>| Pin::new(g).poll_next(&mut cx);

        // Nothing handled yet: reads freely, chunk after chunk.
        assert_eq!(poll(&mut gated), Poll::Ready(Some("a")));
        assert_eq!(poll(&mut gated), Poll::Ready(Some("b")));
        // A frame was handled: the decoder may hold more, so no read now...
        handled.tick();
        assert_eq!(poll(&mut gated), Poll::Pending);
        // ...another one: still none...
        handled.tick();
        assert_eq!(poll(&mut gated), Poll::Pending);
        // ...and once a poll finds nothing new handled, it reads again.
        assert_eq!(poll(&mut gated), Poll::Ready(Some("c")));
        assert_eq!(poll(&mut gated), Poll::Ready(None));
    }

    #[test]
    fn asks_to_be_polled_again_when_it_holds_back() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        use std::task::{Wake, Waker};

        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
            fn wake_by_ref(self: &Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let handled = Handled::default();
        let mut gated = Gated::new(Chunks(vec!["a"]), handled.clone());
        handled.tick();
        assert_eq!(Pin::new(&mut gated).poll_next(&mut cx), Poll::Pending);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }
}
