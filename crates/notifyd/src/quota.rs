//! Quotas: the rate limiter each sender (a user, or a token) shares among its sockets,
//! and the counts that bound connections: in total, per token, per user, and sockets
//! still in their handshake.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv6Addr};
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

    /// Full buckets with a sender's limits (`messages_per_second`/`burst`,
    /// `bytes_per_second`/`burst_bytes`).
    pub fn for_limits(limits: &crate::config::Limits, now: Instant) -> Self {
        RateLimiter::new(
            limits.messages_per_second,
            limits.burst,
            limits.bytes_per_second,
            limits.burst_bytes,
            now,
        )
    }

    /// Whether, by `now`, every bucket would be full again and every strike gone: only
    /// then is forgetting this limiter the same as keeping it.
    pub fn rested(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.rate >= self.burst
            && self.byte_tokens + elapsed * self.byte_rate >= self.burst_bytes
            && self.strikes - elapsed * self.rate <= 0.0
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

/// Connections per key (a token's or a user's keyed hash), each bounded by `max`; the
/// connections of one key share one rate limiter, so that several sockets send no more
/// than one may, and a key's limiter outlives its last socket until it has rested, so
/// that closing and reopening does not refill it. A key's opens are paced too (a few
/// bytes in its entry: an idle connection costs no limiter).
#[derive(Debug)]
pub struct PerKey {
    counts: Mutex<HashMap<u64, Entry>>,
    max: usize,
    takes: AtomicU64,
    /// What the opens' clock counts from.
    base: Instant,
}

/// A key's connections, its shared rate limiter once one sends, and its opens.
#[derive(Debug, Default)]
struct Entry {
    open: usize,
    limiter: Option<SharedLimiter>,
    opens: Opens,
}

/// A token bucket for a key's opens: tokens left, and when (ms since the owner's base)
/// they were counted; `None` while full.
#[derive(Debug, Default, Clone, Copy)]
struct Opens(Option<(f32, u32)>);

impl Opens {
    /// Takes one open at `now_ms` under `rate` per second and `burst`; false when none
    /// is left.
    fn take(&mut self, now_ms: u32, rate: f32, burst: f32) -> bool {
        let (tokens, at) = self.0.unwrap_or((burst, now_ms));
        let tokens = (tokens + now_ms.saturating_sub(at) as f32 / 1000.0 * rate).min(burst);
        if tokens < 1.0 {
            self.0 = Some((tokens, now_ms));
            return false;
        }
        self.0 = Some((tokens - 1.0, now_ms));
        true
    }
}

/// How often (in takes) keys with no connection and a rested limiter are swept.
const SWEEP_EVERY: u64 = 1024;

fn rested(limiter: &Option<SharedLimiter>, now: Instant) -> bool {
    limiter
        .as_ref()
        .is_none_or(|l| l.lock().unwrap_or_else(PoisonError::into_inner).rested(now))
}

/// A rate limiter shared by the connections of one key.
pub type SharedLimiter = Arc<Mutex<RateLimiter>>;

/// One counted connection of a key; released on drop.
#[derive(Debug)]
pub struct KeySlot {
    owner: Arc<PerKey>,
    key: u64,
}

/// A key that opened nothing for this long may lose its opens' bucket (refilled by then
/// at any rate but the slowest; a key kept a little longer costs a few bytes).
const OPENS_RESTED_AFTER_MS: u32 = 60_000;

impl PerKey {
    /// At most `max` connections per key.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(PerKey {
            counts: Mutex::new(HashMap::new()),
            max,
            takes: AtomicU64::new(0),
            base: Instant::now(),
        })
    }

    fn now_ms(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.base).as_millis()).unwrap_or(u32::MAX)
    }

    /// Counts one more connection for `key`, or `None` when it has `max` already.
    pub fn try_take(self: &Arc<Self>, key: u64) -> Option<KeySlot> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if self.takes.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            let now = Instant::now();
            let now_ms = self.now_ms(now);
            counts.retain(|_, e| {
                e.open > 0
                    || !rested(&e.limiter, now)
                    || e.opens
                        .0
                        .is_some_and(|(_, at)| now_ms.saturating_sub(at) < OPENS_RESTED_AFTER_MS)
            });
        }
        let e = counts.entry(key).or_default();
        if e.open >= self.max {
            return None;
        }
        e.open += 1;
        Some(KeySlot {
            owner: Arc::clone(self),
            key,
        })
    }

    /// Counts an open of `key` against `rate` per second with `burst`; false when over.
    pub fn try_open(&self, key: u64, rate: u32, burst: u32) -> bool {
        let now_ms = self.now_ms(Instant::now());
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts
            .entry(key)
            .or_default()
            .opens
            .take(now_ms, rate as f32, burst as f32)
    }

    /// The rate limiter shared by the connections of `key`, made with `make` the first
    /// time one of them sends (an idle connection costs none).
    pub fn limiter(&self, key: u64, make: impl FnOnce() -> RateLimiter) -> SharedLimiter {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let e = counts.entry(key).or_default();
        Arc::clone(
            e.limiter
                .get_or_insert_with(|| Arc::new(Mutex::new(make()))),
        )
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
        let now = Instant::now();
        let now_ms = self.owner.now_ms(now);
        if let Some(e) = counts.get_mut(&self.key) {
            e.open -= 1;
            let opens_rested = e
                .opens
                .0
                .is_none_or(|(_, at)| now_ms.saturating_sub(at) >= OPENS_RESTED_AFTER_MS);
            if e.open == 0 && rested(&e.limiter, now) && opens_rested {
                counts.remove(&self.key);
            }
        }
    }
}

/// Sockets accepted and not yet through their handshake (request read, token checked,
/// 101 or a refusal written). Bounded: past `max`, one of them is told to close, so a
/// flood of idle TCP connections can never keep a real client out, and when `accept`
/// runs out of file descriptors one is closed to make room. The one closed is the
/// oldest of the source that holds the most (an IPv4 address, or an IPv6 /64): a flood
/// from a few sources evicts its own sockets, not those of clients elsewhere.
#[derive(Debug)]
pub struct Pending {
    state: Mutex<PendingState>,
    next: AtomicU64,
    max: usize,
}

#[derive(Debug, Default)]
struct PendingState {
    /// Every socket: its source and its switch.
    sockets: HashMap<u64, (IpAddr, CancellationToken)>,
    /// Each source's sockets, oldest first.
    by_source: HashMap<IpAddr, BTreeSet<u64>>,
    /// Sources by how many sockets they hold, ties by whose oldest socket is oldest
    /// (the one to evict last).
    ranked: BTreeSet<Rank>,
}

/// A source's place in the eviction order: (sockets, its oldest socket reversed, source).
type Rank = (usize, std::cmp::Reverse<u64>, IpAddr);

fn rank(ids: &BTreeSet<u64>, source: IpAddr) -> Option<Rank> {
    let oldest = *ids.first()?;
    Some((ids.len(), std::cmp::Reverse(oldest), source))
}

impl PendingState {
    /// Changes one source's sockets, keeping its rank up to date.
    fn update(&mut self, source: IpAddr, change: impl FnOnce(&mut BTreeSet<u64>)) {
        let ids = self.by_source.entry(source).or_default();
        if let Some(r) = rank(ids, source) {
            self.ranked.remove(&r);
        }
        change(ids);
        match rank(ids, source) {
            Some(r) => {
                self.ranked.insert(r);
            }
            None => {
                self.by_source.remove(&source);
            }
        }
    }

    fn add(&mut self, id: u64, source: IpAddr, evicted: CancellationToken) {
        self.update(source, |ids| {
            ids.insert(id);
        });
        self.sockets.insert(id, (source, evicted));
    }

    fn remove(&mut self, id: u64) -> Option<CancellationToken> {
        let (source, evicted) = self.sockets.remove(&id)?;
        self.update(source, |ids| {
            ids.remove(&id);
        });
        Some(evicted)
    }

    /// Closes the oldest socket of the source holding the most (of those holding as
    /// many, the one whose oldest socket is oldest); false when empty.
    fn evict_one(&mut self) -> bool {
        let Some(&(_, _, source)) = self.ranked.last() else {
            return false;
        };
        let Some(&id) = self.by_source.get(&source).and_then(|ids| ids.first()) else {
            return false;
        };
        self.remove(id).map(|t| t.cancel()).is_some()
    }
}

/// What counts as one source: an IPv4 address, or an IPv6 /64 (one host's share).
fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
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
            state: Mutex::new(PendingState::default()),
            next: AtomicU64::new(0),
            max: max.max(1),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PendingState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a new socket from `peer`, evicting one first when all room is taken.
    pub fn enter(self: &Arc<Self>, peer: IpAddr) -> PendingSlot {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let evicted = CancellationToken::new();
        let mut state = self.lock();
        while state.sockets.len() >= self.max && state.evict_one() {}
        state.add(id, source(peer), evicted.clone());
        drop(state);
        PendingSlot {
            owner: Arc::clone(self),
            id,
            evicted,
        }
    }

    /// Tells one socket in its handshake to close (the oldest of the source holding the
    /// most); false when there is none.
    pub fn evict_one(&self) -> bool {
        self.lock().evict_one()
    }

    /// Sockets in their handshake now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().sockets.len()
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
        self.owner.lock().remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keys_opens_are_paced_apart_from_its_connections() {
        let keys = PerKey::new(100);
        let allowed = (0..50).filter(|_| keys.try_open(7, 20, 40)).count();
        assert_eq!(allowed, 40, "the burst");
        assert!(keys.try_open(8, 20, 40), "another key is apart");
        let mut o = Opens::default();
        assert!(o.take(0, 1.0, 1.0));
        assert!(!o.take(500, 1.0, 1.0));
        assert!(o.take(1500, 1.0, 1.0), "refilled at the rate");
    }
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
        let t0 = Instant::now();
        let make = || RateLimiter::new(1, 1, 100, 100, t0);
        let a = per.try_take(7).unwrap();
        let _b = per.try_take(7).unwrap();
        assert!(per.try_take(7).is_none());
        let c = per.try_take(8).unwrap();
        // A key that never sent holds no limiter and is forgotten with its last socket.
        drop(per.try_take(9).unwrap());
        assert_eq!(per.keys(), 2);
        // One key's connections share their limiter: one message in all, not each.
        let send = |key: u64| per.limiter(key, make).lock().unwrap().check(t0, 1);
        assert_eq!(send(7), Verdict::Allow);
        assert_eq!(send(7), Verdict::Drop);
        assert_eq!(send(8), Verdict::Allow);
        drop(a);
        assert!(per.try_take(7).is_some());
        drop(c);
        // Key 8 spent its burst: it is remembered after its last socket closed, and a
        // new socket of it gets the same spent limiter, not a fresh one.
        assert_eq!(per.keys(), 2);
        let _again = per.try_take(8).unwrap();
        assert_eq!(send(8), Verdict::Drop);
    }

    #[test]
    fn pending_evicts_the_oldest_of_the_busiest_source() {
        let p = Pending::new(3);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let real = p.enter(ip("192.0.2.1"));
        let f1 = p.enter(ip("198.51.100.7"));
        let f2 = p.enter(ip("198.51.100.7"));
        // Full: the flooder's oldest goes, not the older real client.
        let f3 = p.enter(ip("198.51.100.7"));
        assert!(f1.evicted.is_cancelled() && !real.evicted.is_cancelled());
        // One IPv6 host is one source, whatever its addresses in its /64.
        let v6a = p.enter(ip("2001:db8:1:2::a"));
        assert!(f2.evicted.is_cancelled() && !real.evicted.is_cancelled());
        // Now one each: a tie, and of those the oldest socket goes (the real client).
        let v6b = p.enter(ip("2001:db8:1:2::b"));
        assert!(real.evicted.is_cancelled() && !f3.evicted.is_cancelled());
        // The /64 holds two now: it loses its oldest next.
        let _late = p.enter(ip("192.0.2.9"));
        assert!(v6a.evicted.is_cancelled() && !v6b.evicted.is_cancelled());
        assert_eq!(p.len(), 3);
        drop(v6b);
        assert_eq!(p.len(), 2);
        assert!(p.evict_one() && p.evict_one() && !p.evict_one());
        assert_eq!(source(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        // Sources of one socket each: the oldest socket goes, whatever the address.
        let p = Pending::new(2);
        let old = p.enter(ip("10.0.0.1"));
        let _newer = p.enter(ip("2001:db8::1"));
        let _newest = p.enter(ip("192.0.2.200"));
        assert!(old.evicted.is_cancelled());
    }
}
