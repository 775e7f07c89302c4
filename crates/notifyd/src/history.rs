//! A room's history on this node (without Redis): its sequence, its epoch and the
//! messages it keeps for recovery, bounded per room in count, bytes and age, and for
//! all rooms together in bytes: when those are spent, the room that appends gives up
//! its own oldest messages, and keeps nothing when it has none (a busy room never
//! takes a quiet room's history). `Logs::sweep` gives back what has aged.
//!
//! A room has a log only once a client of the protocol has joined it: raw-only rooms
//! keep nothing and count nothing. The log outlives its members by `age`, so that a
//! client that reconnects finds it; `Logs::sweep` forgets idle ones.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tsugi_notify_core::{Room, Space};

use crate::protocol::{new_epoch, Stored, Unrecovered};

/// How much history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Messages per room (0: no history).
    pub messages: usize,
    /// Payload bytes per room.
    pub bytes: usize,
    /// How long a message is kept, and an idle room's log.
    pub age: Duration,
    /// Payload bytes of all rooms of this node.
    pub memory: usize,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            messages: 100,
            bytes: 256 * 1024,
            age: Duration::from_secs(300),
            memory: 64 << 20,
        }
    }
}

/// Every log of this node.
#[derive(Debug)]
pub struct Logs {
    limits: HistoryLimits,
    rooms: Mutex<HashMap<(Space, Room), Arc<RoomLog>>>,
    /// Payload bytes kept by every room of this node.
    budget: Arc<AtomicUsize>,
}

/// One room's log.
#[derive(Debug)]
pub struct RoomLog {
    epoch: String,
    limits: HistoryLimits,
    budget: Arc<AtomicUsize>,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    seq: u64,
    entries: VecDeque<(Instant, Stored)>,
    bytes: usize,
    /// The highest sequence no longer kept (0: none lost).
    lost_through: u64,
    last_used: Instant,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Logs {
    /// No logs yet.
    pub fn new(limits: HistoryLimits) -> Self {
        Logs {
            limits,
            rooms: Mutex::new(HashMap::new()),
            budget: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The room's log, if it has one.
    pub fn find(&self, space: &Space, room: &Room) -> Option<Arc<RoomLog>> {
        lock(&self.rooms)
            .get(&(space.clone(), room.clone()))
            .cloned()
    }

    /// The room's log, made now if it has none.
    pub fn get_or_create(&self, space: &Space, room: &Room) -> Arc<RoomLog> {
        let mut rooms = lock(&self.rooms);
        Arc::clone(
            rooms
                .entry((space.clone(), room.clone()))
                .or_insert_with(|| {
                    Arc::new(RoomLog {
                        epoch: new_epoch(),
                        limits: self.limits,
                        budget: Arc::clone(&self.budget),
                        inner: Mutex::new(Inner {
                            seq: 0,
                            entries: VecDeque::new(),
                            bytes: 0,
                            lost_through: 0,
                            last_used: Instant::now(),
                        }),
                    })
                }),
        )
    }

    /// Drops every message older than `age`, and forgets the logs no room holds that
    /// were last used `age` ago; returns how many are left.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut rooms = lock(&self.rooms);
        rooms.retain(|_, log| {
            let mut inner = lock(&log.inner);
            // Messages past their age give their bytes back to the node, whether or
            // not anyone is in the room (a room where nobody sends trims nothing else).
            inner.trim_age(now, self.limits.age, &log.budget);
            Arc::strong_count(log) > 1
                || now.saturating_duration_since(inner.last_used) < self.limits.age
        });
        rooms.len()
    }

    /// Payload bytes kept by every room now.
    pub fn bytes(&self) -> usize {
        self.budget.load(Ordering::Relaxed)
    }
}

/// A room's log held for one delivery: the sequence is given and the message kept while
/// it is held, so that every member gets the room's messages in sequence order.
#[derive(Debug)]
pub struct Appending<'a> {
    log: &'a RoomLog,
    inner: MutexGuard<'a, Inner>,
}

impl RoomLog {
    /// The log's epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Holds the log for one delivery (see [`Appending`]).
    pub fn begin(&self) -> Appending<'_> {
        Appending {
            log: self,
            inner: lock(&self.inner),
        }
    }

    /// The last sequence, and what a client that saw `since` of `epoch` missed, or why
    /// that cannot be told.
    pub fn resume(
        &self,
        since: u64,
        epoch: Option<&str>,
    ) -> (u64, Result<Vec<Stored>, Unrecovered>) {
        let mut inner = lock(&self.inner);
        let now = Instant::now();
        inner.last_used = now;
        inner.trim_age(now, self.limits.age, &self.budget);
        let seq = inner.seq;
        if epoch != Some(self.epoch.as_str()) || since > seq {
            return (seq, Err(Unrecovered::Epoch));
        }
        if self.limits.messages == 0 {
            return (seq, Err(Unrecovered::Unavailable));
        }
        if since < inner.lost_through {
            return (seq, Err(Unrecovered::Trimmed));
        }
        let missed = inner
            .entries
            .iter()
            .filter(|(_, m)| m.seq.is_some_and(|s| s > since))
            .map(|(_, m)| m.clone())
            .collect();
        (seq, Ok(missed))
    }

    /// The last sequence.
    pub fn seq(&self) -> u64 {
        let mut inner = lock(&self.inner);
        inner.last_used = Instant::now();
        inner.seq
    }
}

impl Drop for RoomLog {
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(PoisonError::into_inner);
        self.budget.fetch_sub(inner.bytes, Ordering::Relaxed);
    }
}

impl Inner {
    fn pop_front(&mut self, budget: &AtomicUsize) -> bool {
        let Some((_, m)) = self.entries.pop_front() else {
            return false;
        };
        let len = m.payload.len();
        self.bytes -= len;
        budget.fetch_sub(len, Ordering::Relaxed);
        self.lost_through = self.lost_through.max(m.seq.unwrap_or(0));
        true
    }

    fn trim_age(&mut self, now: Instant, age: Duration, budget: &AtomicUsize) {
        while self
            .entries
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= age)
        {
            self.pop_front(budget);
        }
    }
}

impl Appending<'_> {
    /// Gives `message` the next sequence and keeps it if it can; returns the sequence.
    /// When the node's `memory` is spent, this room gives up its own oldest messages
    /// first, and keeps nothing when it has none: a busy room never takes a quiet
    /// room's history.
    pub fn append(&mut self, mut message: Stored) -> u64 {
        let limits = &self.log.limits;
        let budget = &*self.log.budget;
        let inner = &mut *self.inner;
        inner.seq += 1;
        let seq = inner.seq;
        message.seq = Some(seq);
        let now = Instant::now();
        inner.last_used = now;
        let len = message.payload.len();
        inner.trim_age(now, limits.age, budget);
        while !inner.entries.is_empty()
            && (inner.entries.len() >= limits.messages
                || inner.bytes + len > limits.bytes
                || budget.load(Ordering::Relaxed) + len > limits.memory)
        {
            inner.pop_front(budget);
        }
        let fits = limits.messages > 0
            && inner.bytes + len <= limits.bytes
            && budget.fetch_add(len, Ordering::Relaxed) + len <= limits.memory;
        if !fits {
            if limits.messages > 0 && len <= limits.bytes {
                budget.fetch_sub(len, Ordering::Relaxed);
            }
            // Not kept: whoever missed it cannot recover across it.
            inner.lost_through = seq;
            return seq;
        }
        inner.entries.push_back((now, message));
        inner.bytes += len;
        seq
    }

    /// The last sequence given.
    pub fn seq(&self) -> u64 {
        self.inner.seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::Message;
    use tsugi_notify_core::Plaintext;

    fn space() -> Space {
        Plaintext::new("https://w", "1", None, None)
            .unwrap()
            .space()
    }

    fn text(s: &str) -> Stored {
        Stored {
            seq: None,
            from: None,
            server: false,
            payload: Message::text(s),
        }
    }

    fn seqs(r: Result<Vec<Stored>, Unrecovered>) -> Result<Vec<u64>, Unrecovered> {
        r.map(|v| v.into_iter().map(|m| m.seq.unwrap()).collect())
    }

    #[test]
    fn resumes_within_the_log_and_refuses_outside_it() {
        let logs = Logs::new(HistoryLimits {
            messages: 3,
            bytes: 100,
            age: Duration::from_secs(60),
            memory: 1000,
        });
        let log = logs.get_or_create(&space(), &Room::default());
        let e = log.epoch().to_owned();
        for i in 0..5 {
            log.begin().append(text(&format!("m{i}")));
        }
        assert_eq!(seqs(log.resume(2, Some(&e)).1), Ok(vec![3, 4, 5]));
        assert_eq!(seqs(log.resume(4, Some(&e)).1), Ok(vec![5]));
        assert_eq!(seqs(log.resume(5, Some(&e)).1), Ok(vec![]));
        assert_eq!(seqs(log.resume(1, Some(&e)).1), Err(Unrecovered::Trimmed));
        assert_eq!(seqs(log.resume(6, Some(&e)).1), Err(Unrecovered::Epoch));
        assert_eq!(
            seqs(log.resume(5, Some("other")).1),
            Err(Unrecovered::Epoch)
        );
        assert_eq!(seqs(log.resume(5, None).1), Err(Unrecovered::Epoch));
        assert_eq!(logs.bytes(), 6);
        // Bytes per room: a 100-byte message leaves room for nothing else.
        log.begin().append(text(&"x".repeat(100)));
        assert_eq!(seqs(log.resume(5, Some(&e)).1), Ok(vec![6]));
        log.begin().append(text(&"x".repeat(101)));
        assert_eq!(seqs(log.resume(6, Some(&e)).1), Err(Unrecovered::Trimmed));
        assert_eq!(seqs(log.resume(7, Some(&e)).1), Ok(vec![]));
        drop(log);
        assert_eq!(logs.sweep(Instant::now()), 1, "kept for its age");
        assert_eq!(logs.sweep(Instant::now() + Duration::from_secs(61)), 0);
        assert_eq!(logs.bytes(), 0);
    }

    #[test]
    fn the_node_budget_is_paid_by_the_room_that_appends() {
        let logs = Logs::new(HistoryLimits {
            messages: 100,
            bytes: 100,
            age: Duration::from_secs(60),
            memory: 30,
        });
        let quiet = logs.get_or_create(&space(), &Room::new("quiet").unwrap());
        let busy = logs.get_or_create(&space(), &Room::new("busy").unwrap());
        let qe = quiet.epoch().to_owned();
        let be = busy.epoch().to_owned();
        quiet.begin().append(text(&"q".repeat(10)));
        for _ in 0..50 {
            busy.begin().append(text(&"b".repeat(10)));
        }
        assert!(logs.bytes() <= 30);
        assert_eq!(seqs(quiet.resume(0, Some(&qe)).1), Ok(vec![1]));
        assert_eq!(seqs(busy.resume(48, Some(&be)).1), Ok(vec![49, 50]));
        assert_eq!(
            seqs(busy.resume(47, Some(&be)).1),
            Err(Unrecovered::Trimmed)
        );
    }

    #[test]
    fn aged_messages_give_their_bytes_back_to_the_node_at_the_sweep() {
        let logs = Logs::new(HistoryLimits {
            messages: 100,
            bytes: 100,
            age: Duration::from_secs(60),
            memory: 20,
        });
        let quiet = logs.get_or_create(&space(), &Room::new("quiet").unwrap());
        let busy = logs.get_or_create(&space(), &Room::new("busy").unwrap());
        quiet.begin().append(text(&"q".repeat(20)));
        busy.begin().append(text("b"));
        let be = busy.epoch().to_owned();
        assert_eq!(seqs(busy.resume(0, Some(&be)).1), Err(Unrecovered::Trimmed));
        // The quiet room is still held (a tab open), its message aged.
        logs.sweep(Instant::now() + Duration::from_secs(61));
        assert_eq!(logs.bytes(), 0);
        busy.begin().append(text("c"));
        assert_eq!(seqs(busy.resume(1, Some(&be)).1), Ok(vec![2]));
    }

    #[test]
    fn messages_older_than_the_age_are_gone() {
        let logs = Logs::new(HistoryLimits {
            age: Duration::from_millis(1),
            ..HistoryLimits::default()
        });
        let log = logs.get_or_create(&space(), &Room::default());
        let e = log.epoch().to_owned();
        log.begin().append(text("a"));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(seqs(log.resume(0, Some(&e)).1), Err(Unrecovered::Trimmed));
        assert_eq!(logs.bytes(), 0);
    }
}
