//! Per-connection rate limiting and the global connection count.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// What to do with a message under the rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver it.
    Allow,
    /// Drop it (counted).
    Drop,
    /// Drop it and close the connection: it keeps sending over its rate.
    Close,
}

/// A token bucket (`rate` per second, `burst` at once), plus a second bucket of
/// strikes: each dropped message is a strike, strikes drain at `rate`, and more than
/// `burst` outstanding strikes close the connection. A client that sends at twice its
/// rate is closed after about `burst / rate` seconds; one that bursts now and then is
/// only trimmed.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    strikes: f64,
    last: Instant,
}

impl RateLimiter {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        RateLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            strikes: 0.0,
            last: now,
        }
    }

    /// Accounts one message at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.strikes = (self.strikes - elapsed * self.rate).max(0.0);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allow;
        }
        self.strikes += 1.0;
        if self.strikes > self.burst {
            Verdict::Close
        } else {
            Verdict::Drop
        }
    }
}

/// Counts open connections against `max_connections`.
#[derive(Debug)]
pub struct ConnectionSlots {
    open: AtomicUsize,
    max: usize,
}

/// One taken slot; released on drop.
#[derive(Debug)]
pub struct Slot(Arc<ConnectionSlots>);

impl ConnectionSlots {
    /// Room for `max` connections.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(ConnectionSlots {
            open: AtomicUsize::new(0),
            max,
        })
    }

    /// Takes a slot, or `None` when all are taken.
    pub fn try_take(self: &Arc<Self>) -> Option<Slot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(Arc::clone(self)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate_then_close() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(20, 40, t0);
        for _ in 0..40 {
            assert_eq!(r.check(t0), Verdict::Allow);
        }
        for _ in 0..40 {
            assert_eq!(r.check(t0), Verdict::Drop);
        }
        assert_eq!(r.check(t0), Verdict::Close);
        // A well-behaved client after a pause is fine again.
        let mut r = RateLimiter::new(20, 40, t0);
        for i in 0..200u32 {
            let at = t0 + Duration::from_millis(u64::from(i) * 50);
            assert_eq!(r.check(at), Verdict::Allow, "message {i}");
        }
    }

    #[test]
    fn slots_are_bounded_and_released() {
        let slots = ConnectionSlots::new(2);
        let a = slots.try_take().unwrap();
        let _b = slots.try_take().unwrap();
        assert!(slots.try_take().is_none());
        drop(a);
        assert!(slots.try_take().is_some());
    }
}
