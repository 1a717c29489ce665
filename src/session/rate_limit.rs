//! The per-session rate limit (§8) and the connect rate: a token bucket, and
//! a one-second window counting the frames it dropped.

use std::time::{Duration, Instant};

/// Allows `rate` events a second with bursts up to `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until the next token, for `Retry-After`.
    pub fn wait_time(&self) -> Duration {
        if self.tokens >= 1.0 || self.rate <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }
}

/// Counts drops within a one-second window that opens at the first drop.
#[derive(Debug, Clone, Default)]
pub struct DropWindow {
    start: Option<Instant>,
    count: u32,
}

impl DropWindow {
    /// Records one drop and returns how many fell in the current window.
    pub fn record(&mut self, now: Instant) -> u32 {
        match self.start {
            Some(start) if now.saturating_duration_since(start) < Duration::from_secs(1) => self.count += 1,
            _ => {
                self.start = Some(now);
                self.count = 1;
            }
        }
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_allows_the_burst_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 3, t0);
        assert_eq!((0..5).filter(|_| b.try_take(t0)).count(), 3);
        assert!(!b.try_take(t0 + Duration::from_millis(50)));
        assert!(b.try_take(t0 + Duration::from_millis(110)));
        assert!(!b.try_take(t0 + Duration::from_millis(120)));
        // A long pause refills no more than the burst.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.try_take(later)).count(), 3);
        assert!(b.wait_time() > Duration::ZERO && b.wait_time() <= Duration::from_millis(100));
    }

    #[test]
    fn the_drop_window_restarts_after_a_second() {
        let t0 = Instant::now();
        let mut w = DropWindow::default();
        assert_eq!(w.record(t0), 1);
        assert_eq!(w.record(t0 + Duration::from_millis(500)), 2);
        assert_eq!(w.record(t0 + Duration::from_millis(999)), 3);
        assert_eq!(w.record(t0 + Duration::from_millis(1000)), 1);
    }
}
