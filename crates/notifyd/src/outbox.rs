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
    /// Why its connection must end, when another task says so.
    stop: Option<Stop>,
    /// The connection's task.
    task: Option<Waker>,
    /// The task waits for something to be queued.
    wants: bool,
}

/// Why a connection must end, as the hub or the server tells it through its outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Its queue overflowed: it is not reading (1008).
    Slow,
    /// It must reconnect to recover (1012): nothing more is queued for it.
    Resync,
    /// The server is shutting down (1001).
    Shutdown,
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
        if std::mem::take(&mut st.wants) {
            if let Some(task) = &st.task {
                task.wake_by_ref();
            }
        }
        Push::Queued
    }

    /// Moves up to `max` queued messages into `out`; returns when the oldest of them
    /// was queued, or `None` when the queue was empty. (For tests and benches: a
    /// connection takes with [`Outbox::poll_take`].)
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
                register(&mut st.task, w);
                st.wants = true;
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

    /// Tells its connection to end (the first reason stands, but for a reader that
    /// must recover: that one is told so whatever came before). It then takes nothing
    /// more; for [`Stop::Resync`], what is queued is dropped (recovery gives it back).
    pub fn stop(&self, why: Stop) {
        let mut st = self.lock();
        if st.stop == Some(why) || (st.stop.is_some() && why != Stop::Resync) {
            // Told already (a slow reader is offered every message until it is gone).
            return;
        }
        st.stop = Some(why);
        if why == Stop::Resync {
            st.closed = true;
            st.queue = VecDeque::new();
            st.bytes = 0;
        }
        if let Some(task) = &st.task {
            task.wake_by_ref();
        }
    }

    /// Why its connection must end, if it must; else the task is woken when it must.
    pub fn poll_stop(&self, cx: &mut Context<'_>) -> Option<Stop> {
        let mut st = self.lock();
        if st.stop.is_none() {
            register(&mut st.task, cx.waker());
        }
        st.stop
    }

    /// Why its connection must end, if it must.
    #[cfg(test)]
    pub fn stopped(&self) -> Option<Stop> {
        self.lock().stop
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
        st.task = None;
    }
}

/// Keeps `waker` as the task's (a clone only when it changed).
fn register(task: &mut Option<Waker>, waker: &Waker) {
    if !task.as_ref().is_some_and(|old| old.will_wake(waker)) {
        *task = Some(waker.clone());
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
    fn its_task_is_woken_once_per_reason() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let count = std::sync::Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(std::sync::Arc::clone(&count));
        let o = Outbox::new(1, 1 << 20, Duration::from_secs(60));
        assert_eq!(o.poll_stop(&mut Context::from_waker(&waker)), None);
        for _ in 0..100 {
            o.stop(Stop::Slow);
        }
        assert_eq!(
            count.0.load(Ordering::Relaxed),
            1,
            "a slow reader is told once"
        );
        o.stop(Stop::Shutdown);
        assert_eq!(o.stopped(), Some(Stop::Slow));
        o.stop(Stop::Resync);
        assert_eq!(
            o.stopped(),
            Some(Stop::Resync),
            "told to recover, whatever came before"
        );
        assert_eq!(count.0.load(Ordering::Relaxed), 2);
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
