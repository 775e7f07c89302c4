//! Per-connection rate limiting, and the counts that bound connections: in total, per
//! token, and sockets still in their handshake.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

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

/// Two token buckets, one of messages (`rate` per second, `burst` at once) and one of
/// payload bytes (`byte_rate`, `burst_bytes`), plus a bucket of strikes: each dropped
/// message is a strike, strikes drain at `rate`, and more than `burst` outstanding
/// strikes close the connection. A client that sends at twice its rate is closed after
/// about `burst / rate` seconds; one that bursts now and then is only trimmed.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    byte_rate: f64,
    burst_bytes: f64,
    byte_tokens: f64,
    strikes: f64,
    last: Instant,
}

impl RateLimiter {
    /// Full buckets.
    pub fn new(rate: u32, burst: u32, byte_rate: usize, burst_bytes: usize, now: Instant) -> Self {
        RateLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            byte_rate: byte_rate as f64,
            burst_bytes: burst_bytes as f64,
            byte_tokens: burst_bytes as f64,
            strikes: 0.0,
            last: now,
        }
    }

    /// Accounts one message of `bytes` payload bytes at `now`.
    pub fn check(&mut self, now: Instant, bytes: usize) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.byte_tokens = (self.byte_tokens + elapsed * self.byte_rate).min(self.burst_bytes);
        self.strikes = (self.strikes - elapsed * self.rate).max(0.0);
        let bytes = bytes as f64;
        if self.tokens >= 1.0 && self.byte_tokens >= bytes {
            self.tokens -= 1.0;
            self.byte_tokens -= bytes;
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

/// Connections per key (a token's hash), each bounded by `max`.
#[derive(Debug)]
pub struct PerKey {
    counts: Mutex<HashMap<u64, usize>>,
    max: usize,
}

/// One counted connection of a key; released on drop.
#[derive(Debug)]
pub struct KeySlot {
    owner: Arc<PerKey>,
    key: u64,
}

impl PerKey {
    /// At most `max` connections per key.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(PerKey {
            counts: Mutex::new(HashMap::new()),
            max,
        })
    }

    /// Counts one more connection for `key`, or `None` when it has `max` already.
    pub fn try_take(self: &Arc<Self>, key: u64) -> Option<KeySlot> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = counts.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(KeySlot {
            owner: Arc::clone(self),
            key,
        })
    }

    /// Keys with at least one connection (a map entry each).
    #[cfg(test)]
    fn keys(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for KeySlot {
    fn drop(&mut self) {
        let mut counts = self
            .owner
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// Sockets accepted and not yet through their handshake (request read, token checked,
/// 101 or a refusal written). Bounded: past `max`, the oldest is told to close, so a
/// flood of idle TCP connections can never keep a real client out, and when `accept`
/// runs out of file descriptors the oldest is closed to make room.
#[derive(Debug)]
pub struct Pending {
    waiting: Mutex<BTreeMap<u64, CancellationToken>>,
    next: AtomicU64,
    max: usize,
}

/// One socket in its handshake; leaves the registry on drop.
#[derive(Debug)]
pub struct PendingSlot {
    owner: Arc<Pending>,
    id: u64,
    evicted: CancellationToken,
}

impl Pending {
    /// Room for `max` sockets in their handshake.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Pending {
            waiting: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
            max: max.max(1),
        })
    }

    /// Registers a new socket; returns its slot and whether an older socket was evicted
    /// to make room.
    pub fn enter(self: &Arc<Self>) -> (PendingSlot, bool) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let evicted = CancellationToken::new();
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        let mut made_room = false;
        while waiting.len() >= self.max {
            if let Some((_, oldest)) = waiting.pop_first() {
                oldest.cancel();
                made_room = true;
            }
        }
        waiting.insert(id, evicted.clone());
        drop(waiting);
        let slot = PendingSlot {
            owner: Arc::clone(self),
            id,
            evicted,
        };
        (slot, made_room)
    }

    /// Tells the oldest socket in its handshake to close; false when there is none.
    pub fn evict_oldest(&self) -> bool {
        let oldest = self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_first();
        oldest.map(|(_, t)| t.cancel()).is_some()
    }

    /// Sockets in their handshake now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// True when no socket is in its handshake.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl PendingSlot {
    /// Resolves when this socket is evicted to make room.
    pub async fn evicted(&self) {
        self.evicted.cancelled().await;
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.owner
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate_then_close() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(20, 40, 1 << 20, 1 << 20, t0);
        for _ in 0..40 {
            assert_eq!(r.check(t0, 1), Verdict::Allow);
        }
        for _ in 0..40 {
            assert_eq!(r.check(t0, 1), Verdict::Drop);
        }
        assert_eq!(r.check(t0, 1), Verdict::Close);
        // A well-behaved client after a pause is fine again.
        let mut r = RateLimiter::new(20, 40, 1 << 20, 1 << 20, t0);
        for i in 0..200u32 {
            let at = t0 + Duration::from_millis(u64::from(i) * 50);
            assert_eq!(r.check(at, 1), Verdict::Allow, "message {i}");
        }
    }

    #[test]
    fn bytes_are_limited_too() {
        let t0 = Instant::now();
        // 1,000 bytes/s, 4,000 at once: four messages of 1,000 pass, the fifth waits a second.
        let mut r = RateLimiter::new(100, 100, 1000, 4000, t0);
        for _ in 0..4 {
            assert_eq!(r.check(t0, 1000), Verdict::Allow);
        }
        assert_eq!(r.check(t0, 1000), Verdict::Drop);
        let later = t0 + Duration::from_millis(1000);
        assert_eq!(r.check(later, 1000), Verdict::Allow);
        assert_eq!(r.check(later, 1000), Verdict::Drop);
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

    #[test]
    fn per_key_counts_are_bounded_and_released() {
        let per = PerKey::new(2);
        let a = per.try_take(7).unwrap();
        let _b = per.try_take(7).unwrap();
        assert!(per.try_take(7).is_none());
        let _c = per.try_take(8).unwrap();
        drop(a);
        assert!(per.try_take(7).is_some());
        drop(_c);
        assert_eq!(per.keys(), 1);
    }

    #[test]
    fn pending_evicts_the_oldest() {
        let p = Pending::new(2);
        let (a, _) = p.enter();
        let (b, _) = p.enter();
        let (c, made_room) = p.enter();
        assert!(made_room);
        assert!(a.evicted.is_cancelled() && !b.evicted.is_cancelled());
        assert!(p.evict_oldest());
        assert!(b.evicted.is_cancelled() && !c.evicted.is_cancelled());
        drop(c);
        assert!(p.is_empty() && !p.evict_oldest());
    }
}
