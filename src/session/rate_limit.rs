//! The per-session rate limit (§8) and the connect rate: a token bucket, and
//! a window counting the frames it dropped over the last second.

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

/// Counts the drops of the last second, in tenths of a second: any more than
/// the limit within 0.9 s are always seen together, and none further apart
/// than a second are ever added up. (A window that opened at the first drop
/// and restarted after a second let up to twice the limit through when the
/// drops straddled its end.) Idle until the first drop: the slots are
/// allocated then, so a session that is never rate limited holds a pointer.
#[derive(Debug, Clone, Default)]
pub struct DropWindow(Option<Box<Slots>>);

#[derive(Debug, Clone)]
struct Slots {
    start: Instant,
    /// Tenths of a second from `start` to the newest slot.
    tick: u64,
    /// Drops per tenth of a second, the slot of tick `t` at `t % SLOTS`.
    counts: [u32; SLOTS],
}

const SLOTS: usize = 10;
const SLOT: Duration = Duration::from_millis(100);

impl DropWindow {
    /// Records one drop and returns how many fell within the last second.
    pub fn record(&mut self, now: Instant) -> u32 {
        let slots = self.0.get_or_insert_with(|| {
            Box::new(Slots {
                start: now,
                tick: 0,
                counts: [0; SLOTS],
            })
        });
        let tick = (now.saturating_duration_since(slots.start).as_nanos() / SLOT.as_nanos()) as u64;
        if tick > slots.tick {
            // Empty the slots of the tenths that passed without a drop.
            for t in slots.tick + 1..=tick.min(slots.tick + SLOTS as u64) {
                slots.counts[(t % SLOTS as u64) as usize] = 0;
            }
            slots.tick = tick;
        }
        // (An `Instant` earlier than the newest slot counts in it.)
        let newest = &mut slots.counts[(slots.tick % SLOTS as u64) as usize];
        *newest = newest.saturating_add(1);
        slots.counts.iter().fold(0u32, |sum, &n| sum.saturating_add(n))
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
    fn the_drop_window_counts_the_last_second_whatever_the_boundaries() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut w = DropWindow::default();
        assert_eq!(w.record(ms(0)), 1);
        assert_eq!(w.record(ms(500)), 2);
        assert_eq!(w.record(ms(950)), 3);
        // The first drop's tenth has passed; the others are within the second.
        assert_eq!(w.record(ms(1050)), 3);
        // Drops on both sides of where a window opened at the first drop
        // would have ended are counted together.
        let mut w = DropWindow::default();
        w.record(ms(0));
        for t in [851, 880, 910, 940, 970, 990, 1000, 1010, 1021] {
            w.record(ms(t));
        }
        assert_eq!(w.record(ms(1030)), 10);
        // After a pause of more than a second nothing is left.
        assert_eq!(w.record(ms(2500)), 1);
        assert_eq!(w.record(ms(60_000)), 1);
        // An earlier instant (clocks of two threads) counts in the newest slot.
        assert_eq!(w.record(ms(59_990)), 2);
    }

    #[test]
    fn an_idle_drop_window_holds_no_slots() {
        assert_eq!(std::mem::size_of::<DropWindow>(), std::mem::size_of::<usize>());
    }
}
