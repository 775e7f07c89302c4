//! A room's history on this node (without Redis): its sequence, its epoch and the
//! messages it keeps for recovery, bounded per room in count, bytes and age, and for
//! all rooms together in bytes: past that, the node's oldest messages go, whichever
//! room kept them. `Logs::sweep` gives back what has aged.
//!
//! A room has a log only once a client of the protocol has joined it: raw-only rooms
//! keep nothing and count nothing. The log outlives its members by `age`, so that a
//! client that reconnects finds it; `Logs::sweep` forgets idle ones.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
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
    /// The limits of the shipped settings.
    fn default() -> Self {
        crate::config::Limits::default().history
    }
}

/// Every log of this node.
#[derive(Debug)]
pub struct Logs {
    limits: HistoryLimits,
    rooms: Mutex<HashMap<(Space, Room), Arc<RoomLog>>>,
    budget: Arc<Budget>,
}

/// The node's bytes of history, and its kept messages oldest first (for `memory`).
/// Lock order: a room's log, then the budget; the budget is never held while a room
/// is locked by the same thread's caller further up.
#[derive(Debug)]
struct Budget {
    memory: usize,
    state: Mutex<BudgetState>,
}

#[derive(Debug, Default)]
struct BudgetState {
    /// Payload bytes kept by every room.
    bytes: usize,
    /// Messages kept by every room.
    kept: usize,
    /// Every message kept, in the order kept: its room and sequence. A message a room
    /// has dropped already (by its own bounds) stays here until it comes to the front
    /// or the order is compacted.
    order: VecDeque<(Weak<RoomLog>, u64)>,
}

/// One room's log.
#[derive(Debug)]
pub struct RoomLog {
    epoch: String,
    limits: HistoryLimits,
    budget: Arc<Budget>,
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
            budget: Arc::new(Budget {
                memory: limits.memory,
                state: Mutex::new(BudgetState::default()),
            }),
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
        let left = {
            let mut rooms = lock(&self.rooms);
            rooms.retain(|_, log| {
                let mut inner = lock(&log.inner);
                // Messages past their age give their bytes back to the node, whether or
                // not anyone is in the room (a room where nobody sends trims nothing
                // else).
                inner.trim_age(now, self.limits.age, &log.budget);
                Arc::strong_count(log) > 1
                    || now.saturating_duration_since(inner.last_used) < self.limits.age
            });
            rooms.len()
        };
        self.budget.compact();
        left
    }

    /// Payload bytes kept by every room now.
    pub fn bytes(&self) -> usize {
        lock(&self.budget.state).bytes
    }
}

impl Budget {
    /// Counts a message kept by `room`; true when the node is now over `memory`.
    fn kept(&self, room: &Arc<RoomLog>, seq: u64, len: usize) -> bool {
        let mut st = lock(&self.state);
        st.bytes += len;
        st.kept += 1;
        st.order.push_back((Arc::downgrade(room), seq));
        st.bytes > self.memory || st.order.len() > 4 * st.kept + 4096
    }

    /// A message dropped by its room.
    fn dropped(&self, len: usize) {
        let mut st = lock(&self.state);
        st.bytes -= len;
        st.kept -= 1;
    }

    /// While the node is over `memory`, the oldest message of the node goes (whatever
    /// its room: a flood in one room ages everyone's history faster, but never stops a
    /// quiet room from keeping its new messages). Called with no room locked.
    fn evict(&self) {
        loop {
            let (room, seq) = {
                let mut st = lock(&self.state);
                if st.bytes <= self.memory {
                    break;
                }
                match st.order.pop_front() {
                    Some(v) => v,
                    None => break,
                }
            };
            if let Some(room) = room.upgrade() {
                room.forget_through(seq);
            }
        }
    }

    /// Forgets the order's entries of messages their rooms no longer keep, so that it
    /// stays within a few times the messages kept. Called with no room locked.
    fn compact(&self) {
        let order = std::mem::take(&mut lock(&self.state).order);
        let mut live: VecDeque<_> = order
            .into_iter()
            .filter(|(room, seq)| {
                room.upgrade().is_some_and(|room| {
                    let inner = lock(&room.inner);
                    inner
                        .entries
                        .front()
                        .is_some_and(|(_, m)| m.seq <= Some(*seq))
                })
            })
            .collect();
        let mut st = lock(&self.state);
        // What was kept meanwhile comes after.
        live.append(&mut st.order);
        st.order = live;
    }
}

/// A room's log held for one delivery: the sequence is given and the message kept while
/// it is held, so that every member gets the room's messages in sequence order.
#[derive(Debug)]
pub struct Appending<'a> {
    log: &'a Arc<RoomLog>,
    inner: Option<MutexGuard<'a, Inner>>,
    /// The node went over its budget: the oldest messages go once the room is let go.
    over: bool,
}

impl RoomLog {
    /// The log's epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Holds the log for one delivery (see [`Appending`]).
    pub fn begin(self: &Arc<Self>) -> Appending<'_> {
        Appending {
            log: self,
            inner: Some(lock(&self.inner)),
            over: false,
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

    /// Drops this room's messages up to `seq` (the node's oldest).
    fn forget_through(&self, seq: u64) {
        let mut inner = lock(&self.inner);
        while inner
            .entries
            .front()
            .is_some_and(|(_, m)| m.seq <= Some(seq))
        {
            inner.pop_front(&self.budget);
        }
    }
}

impl Drop for RoomLog {
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(PoisonError::into_inner);
        while inner.pop_front(&self.budget) {}
    }
}

impl Inner {
    fn pop_front(&mut self, budget: &Budget) -> bool {
        let Some((_, m)) = self.entries.pop_front() else {
            return false;
        };
        let len = m.payload.len();
        self.bytes -= len;
        budget.dropped(len);
        self.lost_through = self.lost_through.max(m.seq.unwrap_or(0));
        true
    }

    fn trim_age(&mut self, now: Instant, age: Duration, budget: &Budget) {
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
    /// Gives `message` the next sequence and keeps it, within the room's bounds (its
    /// own oldest go); returns the sequence. The node's bound is kept when the room is
    /// let go.
    pub fn append(&mut self, mut message: Stored) -> u64 {
        let log = self.log;
        let limits = &log.limits;
        let Some(inner) = self.inner.as_deref_mut() else {
            return 0;
        };
        inner.seq += 1;
        let seq = inner.seq;
        message.seq = Some(seq);
        let now = Instant::now();
        inner.last_used = now;
        let len = message.payload.len();
        inner.trim_age(now, limits.age, &log.budget);
        if limits.messages == 0 || len > limits.bytes || len > limits.memory {
            // Not kept: whoever missed it cannot recover across it.
            inner.lost_through = seq;
            return seq;
        }
        while inner.entries.len() >= limits.messages || inner.bytes + len > limits.bytes {
            inner.pop_front(&log.budget);
        }
        inner.entries.push_back((now, message));
        inner.bytes += len;
        self.over |= log.budget.kept(log, seq, len);
        seq
    }
}

impl Drop for Appending<'_> {
    /// Lets the room go, then (if the node went over its budget) drops the node's
    /// oldest messages: never with a room held, since they may be any room's.
    fn drop(&mut self) {
        drop(self.inner.take());
        if self.over {
            self.log.budget.evict();
            self.log.budget.compact_if_long();
        }
    }
}

impl Budget {
    /// Compacts the order when it has grown to many times the messages kept.
    fn compact_if_long(&self) {
        let long = {
            let st = lock(&self.state);
            st.order.len() > 4 * st.kept + 4096
        };
        if long {
            self.compact();
        }
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
    fn past_the_node_budget_the_oldest_messages_of_the_node_go() {
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
        busy.begin().append(text(&"b".repeat(10)));
        busy.begin().append(text(&"b".repeat(10)));
        assert_eq!(seqs(quiet.resume(0, Some(&qe)).1), Ok(vec![1]));
        // Over 30 bytes: the quiet room's (the oldest) goes first...
        busy.begin().append(text(&"b".repeat(10)));
        assert_eq!(
            seqs(quiet.resume(0, Some(&qe)).1),
            Err(Unrecovered::Trimmed)
        );
        assert_eq!(seqs(busy.resume(0, Some(&be)).1), Ok(vec![1, 2, 3]));
        // ... and a quiet room's new message is still kept.
        quiet.begin().append(text(&"q".repeat(10)));
        assert_eq!(seqs(quiet.resume(1, Some(&qe)).1), Ok(vec![2]));
        assert_eq!(seqs(busy.resume(1, Some(&be)).1), Ok(vec![2, 3]));
        assert!(logs.bytes() <= 30);
        // A flood keeps the node within its budget, and the order compact.
        for _ in 0..20_000 {
            busy.begin().append(text(&"b".repeat(10)));
        }
        assert!(logs.bytes() <= 30);
        assert!(lock(&logs.budget.state).order.len() <= 4 * 3 + 4096 + 1);
    }

    #[test]
    fn aged_messages_give_their_bytes_back_to_the_node_at_the_sweep() {
        let logs = Logs::new(HistoryLimits {
            messages: 100,
            bytes: 100,
            age: Duration::from_secs(60),
            memory: 1000,
        });
        // The room is still held (a tab open), its message aged.
        let quiet = logs.get_or_create(&space(), &Room::new("quiet").unwrap());
        quiet.begin().append(text(&"q".repeat(20)));
        assert_eq!(logs.bytes(), 20);
        assert_eq!(logs.sweep(Instant::now() + Duration::from_secs(61)), 1);
        assert_eq!(logs.bytes(), 0);
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
