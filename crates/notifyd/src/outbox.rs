//! A connection's outbound queue.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::Message;

/// A connection's outbound queue, bounded in messages, in bytes and in time: a reader
/// whose oldest queued message has waited `max_age` is not keeping up, whatever the
/// sizes. It allocates only while it holds messages, so an idle connection costs
/// nothing here.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<OutboxState>,
    max_messages: usize,
    max_bytes: usize,
    max_age: Duration,
}

#[derive(Debug, Default)]
struct OutboxState {
    /// Each message, when it was queued, its room sequence (0: none) and the bytes it
    /// counts for.
    queue: VecDeque<(Message, Instant, u64, usize)>,
    bytes: usize,
    closed: bool,
    /// Sequenced messages up to this one were written already (by recovery): they are
    /// not written again.
    skip_through: u64,
    /// Closed for its reader to reconnect and recover.
    resync: bool,
    /// The connection's task, waiting for something to be queued.
    waiting: Option<Waker>,
}

/// What became of a message offered to an outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued.
    Queued,
    /// The queue is full, or its oldest message has waited too long: its reader is
    /// not keeping up.
    Full,
    /// The connection is closing.
    Closed,
}

impl Outbox {
    /// An empty queue with these bounds (a single message larger than `max_bytes` is
    /// still taken when the queue is empty).
    pub fn new(max_messages: usize, max_bytes: usize, max_age: Duration) -> Self {
        Outbox {
            state: Mutex::new(OutboxState::default()),
            max_messages,
            max_bytes,
            max_age,
        }
    }

    /// An empty queue with a connection's bounds: `outbound_queue` messages,
    /// `outbound_queue_bytes` bytes, `write_timeout` of waiting.
    pub fn for_limits(limits: &crate::config::Limits) -> Self {
        Outbox::new(
            limits.outbound_queue,
            limits.outbound_queue_bytes,
            limits.write_timeout,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutboxState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Offers a message (a reference-counted clone) at `now`. Never waits.
    pub fn push(&self, msg: &Message, now: Instant) -> Push {
        self.push_charged(msg, 0, msg.len(), now)
    }

    /// Sequenced messages up to `seq` are not to be written (recovery wrote them).
    pub fn skip_through(&self, seq: u64) {
        self.lock().skip_through = seq;
    }

    /// Offers a message with its room sequence (0: none) that counts as `charge` bytes
    /// against the byte bound: a frame of the protocol counts as the payload it
    /// carries, so that what holds a raw reader (the rate limits against
    /// `outbound_queue_bytes`) holds one of the protocol too, however much JSON escaping
    /// grows it (at most 6 times).
    pub fn push_charged(&self, msg: &Message, seq: u64, charge: usize, now: Instant) -> Push {
        let mut st = self.lock();
        if st.closed {
            return Push::Closed;
        }
        let len = charge;
        let over = st.queue.len() >= self.max_messages
            || (!st.queue.is_empty() && st.bytes + len > self.max_bytes)
            || st
                .queue
                .front()
                .is_some_and(|(_, at, _, _)| now.saturating_duration_since(*at) >= self.max_age);
        if over {
            return Push::Full;
        }
        st.queue.push_back((msg.clone(), now, seq, len));
        st.bytes += len;
        let waiting = st.waiting.take();
        drop(st);
        if let Some(w) = waiting {
            w.wake();
        }
        Push::Queued
    }

    /// Moves up to `max` queued messages into `out`; returns when the oldest of them
    /// was queued, or `None` when the queue was empty.
    pub fn take(&self, out: &mut Vec<Message>, max: usize) -> Option<Instant> {
        self.take_with(max, usize::MAX, None, |m| out.push(m))
    }

    /// Like [`Outbox::take`], for a connection's task, taking at most `max_bytes` (at
    /// least one message): what a slow reader holds is the queue's bound and one batch.
    /// When the queue is empty, the task is woken by the next message queued.
    pub fn poll_take(
        &self,
        cx: &mut Context<'_>,
        max: usize,
        max_bytes: usize,
        out: impl FnMut(Message),
    ) -> Poll<Instant> {
        match self.take_with(max, max_bytes, Some(cx.waker()), out) {
            Some(oldest) => Poll::Ready(oldest),
            None => Poll::Pending,
        }
    }

    fn take_with(
        &self,
        max: usize,
        max_bytes: usize,
        waker: Option<&Waker>,
        mut out: impl FnMut(Message),
    ) -> Option<Instant> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let mut n = 0;
        let mut bytes = 0;
        for (_, _, _, charge) in st.queue.iter().take(max) {
            if n > 0 && bytes + charge > max_bytes {
                break;
            }
            n += 1;
            bytes += charge;
        }
        if n == 0 {
            if let Some(w) = waker {
                if !st.waiting.as_ref().is_some_and(|old| old.will_wake(w)) {
                    st.waiting = Some(w.clone());
                }
            }
            return None;
        }
        let oldest = st.queue.front().map(|(_, at, _, _)| *at);
        let skip = st.skip_through;
        for (m, _, seq, charge) in st.queue.drain(..n) {
            st.bytes -= charge;
            if seq == 0 || seq > skip {
                out(m);
            }
        }
        // Give back the memory once it has gone out: an idle connection holds nothing.
        if st.queue.is_empty() {
            st.queue = VecDeque::new();
        }
        oldest
    }

    /// Closes it for its reader to reconnect and recover (see [`Outbox::resyncing`]).
    pub fn close_to_resync(&self) {
        self.lock().resync = true;
        self.close();
    }

    /// Whether it was closed for its reader to recover.
    pub fn resyncing(&self) -> bool {
        self.lock().resync
    }

    /// Drops what is queued, and takes what comes.
    pub fn drop_queued(&self) {
        let mut st = self.lock();
        st.queue = VecDeque::new();
        st.bytes = 0;
    }

    /// Refuses further messages and drops the queued ones.
    pub fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.queue = VecDeque::new();
        st.bytes = 0;
        st.waiting = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take_all(o: &Outbox) -> Vec<Message> {
        let mut v = Vec::new();
        o.take(&mut v, usize::MAX);
        v
    }

    #[test]
    fn outbox_bounds_messages_and_bytes_and_frees_bursts() {
        let o = Outbox::new(3, 10, Duration::from_secs(60));
        let t = Instant::now();
        assert_eq!(
            o.push(&Message::text("0123456789abc"), t),
            Push::Queued,
            "one big message fits an empty queue"
        );
        assert_eq!(
            o.push(&Message::text("x"), t),
            Push::Full,
            "over the byte bound"
        );
        assert_eq!(take_all(&o).len(), 1);
        for _ in 0..3 {
            assert_eq!(o.push(&Message::text("x"), t), Push::Queued);
        }
        assert_eq!(
            o.push(&Message::text("x"), t),
            Push::Full,
            "over the message bound"
        );
        let mut v = Vec::new();
        assert!(o.take(&mut v, 2).is_some());
        assert_eq!(v.len(), 2);
        assert_eq!(o.push(&Message::text("y"), t), Push::Queued);
        o.close();
        assert_eq!(o.push(&Message::text("z"), t), Push::Closed);
        assert!(take_all(&o).is_empty());
    }

    #[test]
    fn a_message_waiting_too_long_marks_the_reader_slow() {
        let o = Outbox::new(100, 1 << 20, Duration::from_secs(10));
        let t = Instant::now();
        assert_eq!(o.push(&Message::text("a"), t), Push::Queued);
        let later = t + Duration::from_secs(9);
        assert_eq!(o.push(&Message::text("b"), later), Push::Queued);
        let too_late = t + Duration::from_secs(10);
        assert_eq!(o.push(&Message::text("c"), too_late), Push::Full);
        // Once the reader took the old ones, the queue is judged by what waits now.
        assert_eq!(take_all(&o).len(), 2);
        assert_eq!(o.push(&Message::text("d"), too_late), Push::Queued);
    }
}
