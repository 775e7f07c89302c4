//! One WebSocket connection: read and fan out its messages, write what the room sends
//! it, ping it, and close it with the right code.
//!
//! Every write is bounded twice: by what the outbox says (shutdown, the hub marking the
//! reader slow or sending it to recover) and by `write_timeout`, counted from the last
//! byte the socket took. A client that reads nothing is closed and its slot freed,
//! whatever else it does. The frames themselves are `ws`'s.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::frame::Utf8Bytes;
use tokio_tungstenite::tungstenite::Message;
use tracing::debug;

use crate::config::Limits;
use crate::fanout::Source;
use crate::hub::Membership;
use crate::metrics::{Close, Dropped};
use crate::node::Node;
use crate::outbox::{Outbox, Stop};
use crate::quota::{PerKey, RateLimiter, SharedLimiter, Verdict};
use crate::ws::{Incoming, ReadEnd, Reader, Writer};

/// Messages taken from the queue for one `writev` ...
const WRITE_BATCH: usize = 64;
/// ... and their most bytes (one message at least).
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// Messages read in one turn of a connection's task, their most bytes (one message at
/// least), and its most frames of any kind: then it lets the tasks it woke (its room's
/// readers) run before it reads on, so that a sender's burst reaches their queues no
/// faster than they can drain them, and a flood of pings holds no worker.
const READ_BATCH: usize = 16;
const READ_BATCH_BYTES: usize = 64 * 1024;
const READ_BATCH_FRAMES: usize = 64;
/// Time allowed to send a close frame to a client.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Writes per observation of `tsugi_notify_queue_wait_seconds`.
const QUEUE_WAIT_SAMPLE: u32 = 8;

/// Everything one connection task needs. (It is made before the task and run by
/// reference: a task's future holds each thing once.)
pub struct Connection<S> {
    /// The daemon.
    pub node: Arc<Node>,
    /// Frames written before any queued one (a client of the protocol's opening).
    pub preamble: Vec<Message>,
    /// The upgraded socket: a [`Tracked`] TCP socket, or a TLS session over one (the
    /// progress is the socket's, not what TLS buffers).
    pub io: S,
    /// Its frames in.
    pub reader: Reader,
    /// When the socket last refused to take bytes (shared with `io`).
    pub progress: Arc<Progress>,
    /// Whose rate limit this connection's messages count against.
    pub rate: Sender,
    /// Its place in a room.
    pub membership: Membership,
    /// Its outbound queue, through which it is also told to end.
    pub outbox: Arc<Outbox>,
}

/// How the loop ended.
enum End {
    /// The client went away, or its socket failed.
    Gone,
    /// The client sent a close frame (with this code and reason): it is answered with
    /// the same.
    ClientClosed(Option<(u16, Utf8Bytes)>),
    /// The server closes with this reason.
    Server(Close),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Runs until the connection ends.
    pub async fn run(&mut self) {
        let mut writer = Writer::default();
        let end = self.serve(&mut writer).await;
        self.outbox.close();
        let read_on = match end {
            End::Gone => return,
            End::ClientClosed(close) => {
                writer.close(
                    close
                        .as_ref()
                        .map(|(code, reason)| (*code, reason.as_str())),
                );
                false
            }
            End::Server(reason) => {
                self.node.metrics.closed(reason);
                let (code, text) = match reason {
                    Close::GoingAway => (1001, "server shutting down"),
                    Close::InvalidUtf8 => (1007, "invalid UTF-8"),
                    Close::RateLimit => (1008, "too many messages"),
                    Close::SlowConsumer | Close::WriteTimeout => (1008, "not reading"),
                    Close::TooBig => (1009, "message too big"),
                    Close::Protocol => (1002, "protocol error"),
                    Close::Idle => (1001, "idle"),
                    Close::Resync => (1012, "reconnect to recover"),
                };
                debug!(?reason, "closing");
                writer.close(Some((code, text)));
                // After a frame it could not read (too big: not read whole; a protocol
                // error: not understood), nothing more is read. (Text that is not UTF-8
                // was read whole: reading on lets the client take the close before the
                // socket goes.)
                !matches!(reason, Close::TooBig | Close::Protocol)
            }
        };
        let io = &mut self.io;
        let reader = &mut self.reader;
        // A client that stopped reading has a full socket: its close frame may never go
        // out, so this is bounded; a client that reads is given a moment to answer.
        let close = std::future::poll_fn(|cx| {
            if std::task::ready!(writer.poll_write(io, cx)).is_err() || !read_on {
                return Poll::Ready(());
            }
            loop {
                match std::task::ready!(reader.poll_next(io, cx)) {
                    Ok(Incoming::Close(_)) | Err(_) => return Poll::Ready(()),
                    Ok(_) => {}
                }
            }
        });
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
    }

    async fn serve(&mut self, writer: &mut Writer) -> End {
        let node = Arc::clone(&self.node);
        let limits = &node.config.limits;
        // Made (or found) the first time this connection sends.
        let mut rate: Option<SharedLimiter> = None;
        // The write deadline's timer, made the first time a write has to wait and kept:
        // a connection that blocks and unblocks often re-arms it about once per
        // write_timeout, not once per write.
        let mut deadline: Deadline = None;
        let mut last_seen = Instant::now();
        let mut writes: u32 = 0;
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + limits.ping_interval,
            limits.ping_interval,
        );
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for f in std::mem::take(&mut self.preamble) {
            writer.push(f);
        }
        std::future::poll_fn(|cx| {
            if let Some(why) = self.outbox.poll_stop(cx) {
                return Poll::Ready(End::Server(match why {
                    Stop::Slow => Close::SlowConsumer,
                    Stop::Resync => Close::Resync,
                    Stop::Shutdown => Close::GoingAway,
                }));
            }
            // What the client sent.
            let (mut read, mut read_bytes, mut frames) = (0, 0, 0);
            loop {
                if read >= READ_BATCH
                    || read_bytes >= READ_BATCH_BYTES
                    || frames >= READ_BATCH_FRAMES
                {
                    // Once this turn ends, the task is queued behind the others.
                    cx.waker().wake_by_ref();
                    break;
                }
                let incoming = match self.reader.poll_next(&mut self.io, cx) {
                    Poll::Pending => break,
                    Poll::Ready(Ok(incoming)) => incoming,
                    Poll::Ready(Err(fault)) => return Poll::Ready(read_end(fault)),
                };
                frames += 1;
                last_seen = Instant::now();
                // A client that keeps sending (pings, say) while it reads nothing has its
                // answers stuck: reading on must not keep it open.
                if self.progress.stalled_for(last_seen) >= limits.write_timeout {
                    return Poll::Ready(End::Server(Close::WriteTimeout));
                }
                match incoming {
                    Incoming::Message(msg) => {
                        read += 1;
                        read_bytes += msg.len();
                        node.metrics.received(msg.len());
                        let verdict = rate
                            .get_or_insert_with(|| self.rate.limiter(limits))
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .check(last_seen, msg.len());
                        match verdict {
                            Verdict::Allow => {
                                node.fanout
                                    .broadcast(Source::Member(&self.membership), &msg);
                            }
                            Verdict::Drop => node.metrics.dropped(Dropped::RateLimit),
                            Verdict::Close => {
                                node.metrics.dropped(Dropped::RateLimit);
                                return Poll::Ready(End::Server(Close::RateLimit));
                            }
                        }
                    }
                    // Answered at the next frame boundary, once per turn at most (one
                    // answer at a time: a newer ping replaces an unsent one).
                    Incoming::Ping(payload) => writer.pong(payload),
                    Incoming::Pong => {}
                    Incoming::Close(close) => return Poll::Ready(End::ClientClosed(close)),
                }
            }
            while ping.poll_tick(cx).is_ready() {
                if last_seen.elapsed() >= limits.idle_timeout {
                    return Poll::Ready(End::Server(Close::Idle));
                }
                // Written at the next frame boundary, however much is pending: a client
                // that reads, however far behind, answers it and is not idle.
                writer.ping();
            }
            // What the room sent it, until the socket takes no more.
            loop {
                if !writer.has_frames() {
                    let taken = self
                        .outbox
                        .poll_take(cx, WRITE_BATCH, WRITE_BATCH_BYTES, |m| {
                            writer.push(m);
                        });
                    if let Poll::Ready(oldest) = taken {
                        // One write in QUEUE_WAIT_SAMPLE is observed: the histogram's lock
                        // and a clock read per write would cost the fan-out of a busy room
                        // several percent.
                        if writes % QUEUE_WAIT_SAMPLE == 0 {
                            node.metrics.queue_waited(oldest.elapsed());
                        }
                        writes = writes.wrapping_add(1);
                    } else if writer.is_idle() {
                        return Poll::Pending;
                    }
                }
                match writer.poll_write(&mut self.io, cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(write_error(&e)),
                    Poll::Pending => {
                        return match watch_stall(
                            &self.progress,
                            &mut deadline,
                            limits.write_timeout,
                            cx,
                        ) {
                            Some(end) => Poll::Ready(end),
                            None => Poll::Pending,
                        };
                    }
                }
            }
        })
        .await
    }
}

/// How a read that failed ends the connection.
fn read_end(end: ReadEnd) -> End {
    match end {
        ReadEnd::TooBig => End::Server(Close::TooBig),
        ReadEnd::Utf8 => End::Server(Close::InvalidUtf8),
        ReadEnd::Protocol => End::Server(Close::Protocol),
        // The kernel's TCP_USER_TIMEOUT ends reads too: the same as a failed write.
        ReadEnd::Io(e) => write_error(&e),
        ReadEnd::Eof => End::Gone,
    }
}

/// The sender a connection counts as: its user (v1 tokens) or its token. All of that
/// sender's connections share one rate limiter, made when one of them first sends.
#[derive(Debug)]
pub struct Sender {
    keys: Arc<PerKey>,
    key: u64,
}

impl Sender {
    /// The sender `key` of `keys` (the per-user or the per-token counts).
    pub fn new(keys: Arc<PerKey>, key: u64) -> Self {
        Sender { keys, key }
    }

    /// Counts opening a socket against a rate of its own, as fast as messages may go
    /// (`messages_per_second`, `burst`): whoever opens and closes sockets in a loop is
    /// held to it (every open and close costs each member of the protocol in the room a
    /// frame), and its messages keep their own rate. False when over it.
    pub fn may_connect(&self, limits: &Limits) -> bool {
        self.keys
            .try_open(self.key, limits.messages_per_second, limits.burst)
    }

    fn limiter(&self, limits: &Limits) -> SharedLimiter {
        self.keys
            .limiter(self.key, || RateLimiter::for_limits(limits, Instant::now()))
    }
}

/// A connection's write-deadline timer, once it has needed one.
type Deadline = Option<Pin<Box<tokio::time::Sleep>>>;

/// A write waits on the socket: ends the connection if the socket has taken no byte
/// for `timeout`, or else arms the deadline's timer for the earliest moment it could
/// have. The timer is made the first time a write has to wait and then kept: an idle
/// connection holds none and a fast one touches none.
fn watch_stall(
    progress: &Progress,
    deadline: &mut Deadline,
    timeout: Duration,
    cx: &mut Context<'_>,
) -> Option<End> {
    loop {
        let stalled = progress.stalled_for(Instant::now());
        if stalled >= timeout {
            return Some(End::Server(Close::WriteTimeout));
        }
        let sleep = match deadline {
            Some(sleep) => sleep,
            None => deadline.insert(Box::pin(tokio::time::sleep(timeout - stalled))),
        };
        if sleep.as_mut().poll(cx).is_pending() {
            return None;
        }
        // Fired: look again from the last progress (there may have been some).
        let left = timeout.saturating_sub(progress.stalled_for(Instant::now()));
        sleep.as_mut().reset(tokio::time::Instant::now() + left);
    }
}

/// A failed write: the kernel gave up on a peer that took nothing for
/// `TCP_USER_TIMEOUT` (set to `write_timeout`), or the peer went away.
fn write_error(e: &std::io::Error) -> End {
    if e.kind() == std::io::ErrorKind::TimedOut {
        End::Server(Close::WriteTimeout)
    } else {
        End::Gone
    }
}

/// When a connection's socket last refused bytes it was given (`WouldBlock`), cleared
/// when it takes some: "no progress" is measured from the first refusal.
#[derive(Debug)]
pub struct Progress {
    base: Instant,
    /// Milliseconds since `base` of the first refusal since the last progress, plus one;
    /// 0 while the socket takes what it is given.
    blocked_since: AtomicU64,
}

impl Progress {
    /// A socket that has refused nothing.
    pub fn new() -> Arc<Self> {
        Arc::new(Progress {
            base: Instant::now(),
            blocked_since: AtomicU64::new(0),
        })
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn refused(&self) {
        if self.blocked_since.load(Ordering::Relaxed) == 0 {
            let now = self.millis(Instant::now()) + 1;
            self.blocked_since.store(now, Ordering::Relaxed);
        }
    }

    fn took(&self) {
        if self.blocked_since.load(Ordering::Relaxed) != 0 {
            self.blocked_since.store(0, Ordering::Relaxed);
        }
    }

    /// Notes what a write did: bytes taken are progress, a refusal starts the clock.
    fn wrote(&self, r: &Poll<std::io::Result<usize>>) {
        match r {
            Poll::Ready(Ok(n)) if *n > 0 => self.took(),
            Poll::Pending => self.refused(),
            _ => {}
        }
    }

    /// How long the socket has taken nothing while it had bytes to take.
    pub fn stalled_for(&self, now: Instant) -> Duration {
        match self.blocked_since.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            since => Duration::from_millis(self.millis(now).saturating_sub(since - 1)),
        }
    }
}

/// A socket that reports its write progress to a [`Progress`].
#[derive(Debug)]
pub struct Tracked<S> {
    inner: S,
    progress: Arc<Progress>,
}

impl<S> Tracked<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, progress: Arc<Progress>) -> Self {
        Tracked { inner, progress }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress.wrote(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress.wrote(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        if r.is_pending() {
            self.progress.refused();
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Member;
    use crate::metrics::Metrics;
    use tsugi_notify_core::{Plaintext, Room};

    /// A connection on `io` in the default room of a node whose limits `tune` makes,
    /// and its outbox.
    fn connection_on<S>(
        io: S,
        progress: Arc<Progress>,
        metrics: &Arc<Metrics>,
        tune: impl FnOnce(&mut Limits),
    ) -> (Connection<S>, Arc<Outbox>) {
        let mut config =
            crate::config::Config::from_toml_str("url = \"ws://h:1\"\nsecret = \"s\"\n").unwrap();
        tune(&mut config.limits);
        let node = Node::new(
            config,
            Arc::clone(metrics),
            tokio_util::sync::CancellationToken::new(),
            tokio_util::task::TaskTracker::new(),
        )
        .unwrap();
        let outbox = Arc::new(Outbox::for_limits(&node.config.limits));
        let member = Member {
            id: 1,
            outbox: Arc::clone(&outbox),
            user: None,
            json: false,
        };
        let space = Plaintext::new("https://w", "1", None, None)
            .unwrap()
            .space();
        let membership = node
            .fanout
            .hub()
            .join(space, Room::default(), member)
            .unwrap();
        let conn = Connection {
            reader: Reader::new(node.config.limits.max_message_bytes, Vec::new()),
            node,
            preamble: Vec::new(),
            io,
            progress,
            rate: Sender::new(PerKey::new(1), 1),
            membership,
            outbox: Arc::clone(&outbox),
        };
        (conn, outbox)
    }

    /// Runs a connection on `io` whose reader takes nothing, with one message of
    /// `bytes` queued and a write timeout of 500 ms, until it ends (at most 10 s).
    async fn run_with_a_reader_that_takes_nothing<S: AsyncRead + AsyncWrite + Unpin>(
        io: S,
        progress: Arc<Progress>,
        metrics: &Arc<Metrics>,
        bytes: usize,
    ) {
        let (mut conn, outbox) = connection_on(io, progress, metrics, |l| {
            l.write_timeout = Duration::from_millis(500);
        });
        outbox.push(&Message::binary(vec![0u8; bytes]), Instant::now());
        tokio::time::timeout(Duration::from_secs(10), conn.run())
            .await
            .expect("the connection ended at the write timeout");
    }

    /// A connection on one end of an in-memory pipe of `pipe` bytes, with the limits
    /// `tune` makes, running as a task; the other end, its outbox, its counters, the
    /// task and its socket's progress.
    async fn spawn_on_a_pipe(
        pipe: usize,
        tune: impl FnOnce(&mut Limits),
    ) -> (
        tokio::io::DuplexStream,
        Arc<Outbox>,
        Arc<Metrics>,
        tokio::task::JoinHandle<()>,
        Arc<Progress>,
    ) {
        let metrics = Arc::new(Metrics::default());
        let (server, client) = tokio::io::duplex(pipe);
        let progress = Progress::new();
        let io = Tracked::new(server, Arc::clone(&progress));
        let (mut conn, outbox) = connection_on(io, Arc::clone(&progress), &metrics, tune);
        let task = tokio::spawn(async move { conn.run().await });
        (client, outbox, metrics, task, progress)
    }

    async fn client(
        io: tokio::io::DuplexStream,
    ) -> tokio_tungstenite::WebSocketStream<tokio::io::DuplexStream> {
        tokio_tungstenite::WebSocketStream::from_raw_socket(
            io,
            tokio_tungstenite::tungstenite::protocol::Role::Client,
            None,
        )
        .await
    }

    /// The close frame a client gets, after the messages before it.
    async fn close_after(
        ws: &mut tokio_tungstenite::WebSocketStream<tokio::io::DuplexStream>,
        mut message: impl FnMut(Message),
    ) -> Option<(u16, String)> {
        use futures_util::StreamExt;
        loop {
            match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                Ok(Some(Ok(Message::Close(c)))) => {
                    return c.map(|c| (c.code.into(), c.reason.to_string()))
                }
                Ok(Some(Ok(m))) => message(m),
                other => panic!("no close: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_client_close_is_answered_with_its_code_and_reason() {
        use futures_util::SinkExt;
        let (io, _, metrics, task, _) = spawn_on_a_pipe(64 * 1024, |_| {}).await;
        let mut ws = client(io).await;
        let bye = tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: 4000.into(),
            reason: "bye".into(),
        };
        ws.send(Message::Close(Some(bye))).await.unwrap();
        assert_eq!(
            close_after(&mut ws, |_| {}).await,
            Some((4000, "bye".into()))
        );
        task.await.unwrap();
        assert_eq!(metrics.closed_count(Close::Protocol), 0);
    }

    #[tokio::test]
    async fn a_frame_rfc_6455_forbids_is_closed_with_1002() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut io, _, metrics, task, _) = spawn_on_a_pipe(64 * 1024, |_| {}).await;
        // A masked text frame with a reserved bit set.
        io.write_all(&[0xC1, 0x81, 1, 2, 3, 4, b'x' ^ 1])
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), io.read_to_end(&mut answer)).await;
        assert_eq!(answer[0], 0x88, "{answer:?}");
        assert_eq!(answer[2..4], 1002u16.to_be_bytes());
        task.await.unwrap();
        assert_eq!(metrics.closed_count(Close::Protocol), 1);
    }

    #[tokio::test]
    async fn told_to_end_while_a_write_waits_it_finishes_the_frame_then_closes() {
        for (stop, code) in [
            (Stop::Shutdown, 1001u16),
            (Stop::Resync, 1012),
            (Stop::Slow, 1008),
        ] {
            let (io, outbox, _, task, progress) = spawn_on_a_pipe(1024, |_| {}).await;
            let big = vec![7u8; 64 * 1024];
            outbox.push(&Message::binary(big.clone()), Instant::now());
            outbox.push(&Message::text("never sent"), Instant::now());
            // Once the pipe is full, the frame is part-way out.
            while progress.stalled_for(Instant::now()).is_zero() {
                tokio::task::yield_now().await;
            }
            outbox.stop(stop);
            let mut ws = client(io).await;
            let mut got = Vec::new();
            let close = close_after(&mut ws, |m| got.push(m)).await;
            assert_eq!(got, vec![Message::binary(big)], "{stop:?}");
            assert_eq!(close.map(|c| c.0), Some(code), "{stop:?}");
            task.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_reader_behind_its_backlog_is_pinged_and_not_idle() {
        use futures_util::StreamExt;
        let (io, outbox, metrics, task, _) = spawn_on_a_pipe(4096, |l| {
            l.ping_interval = Duration::from_millis(100);
            l.idle_timeout = Duration::from_millis(400);
        })
        .await;
        let mut ws = client(io).await;
        let started = Instant::now();
        let (mut pings, mut messages) = (0, 0);
        // Reads slowly for three idle timeouts, with always more queued than the pipe
        // holds: it is never caught up, yet it answers the pings it gets.
        for _ in 0..10 {
            outbox.push(&Message::binary(vec![1u8; 2000]), Instant::now());
        }
        while started.elapsed() < Duration::from_millis(1200) {
            match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
                Ok(Some(Ok(Message::Binary(_)))) => {
                    messages += 1;
                    outbox.push(&Message::binary(vec![1u8; 2000]), Instant::now());
                }
                other => panic!("closed: {other:?} after {messages} messages"),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(pings >= 3, "{pings} pings");
        assert_eq!(metrics.closed_count(Close::Idle), 0);
        outbox.stop(Stop::Shutdown);
        drop(ws);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_socket_that_takes_nothing_is_closed_at_the_write_timeout() {
        // An in-memory pipe whose far end never reads: no kernel timer can help here,
        // and nothing is queued after the first message, so only the write deadline
        // can end this connection.
        let (server, client) = tokio::io::duplex(1024);
        let progress = Progress::new();
        let io = Tracked::new(server, Arc::clone(&progress));
        let metrics = Arc::new(Metrics::default());
        let started = Instant::now();
        run_with_a_reader_that_takes_nothing(io, progress, &metrics, 64 * 1024).await;
        assert_eq!(metrics.closed_count(Close::WriteTimeout), 1);
        assert!(started.elapsed() >= Duration::from_millis(500));
        drop(client);
    }

    #[tokio::test]
    async fn under_tls_a_reader_that_takes_nothing_is_closed_at_the_write_timeout() {
        // TLS takes a small message into its own buffer at once, and the stall is in
        // the flush: the progress is the pipe's, under TLS, so it is seen all the same.
        let dir = std::env::temp_dir().join(format!("notifyd-tls-stall-{}", std::process::id()));
        let test_ca = crate::test_ca::TestCa::new(&dir);
        let leaf = test_ca.leaf("server");
        let files = crate::tls::TlsFiles {
            cert: leaf.cert.clone(),
            key: leaf.key.clone(),
            check_every: None,
            host: None,
        };
        let metrics = Arc::new(Metrics::default());
        let acceptor = crate::tls::Certs::new(files, Arc::clone(&metrics))
            .unwrap()
            .acceptor()
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        use rustls_pki_types::pem::PemObject;
        for c in rustls_pki_types::CertificateDer::pem_file_iter(test_ca.ca_file()).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let (server, client) = tokio::io::duplex(1024);
        let progress = Progress::new();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let (server, client) = tokio::join!(
            acceptor.accept(Tracked::new(server, Arc::clone(&progress))),
            tokio_rustls::TlsConnector::from(Arc::new(client_config)).connect(name, client),
        );
        let (server, _client) = (server.unwrap(), client.unwrap());
        run_with_a_reader_that_takes_nothing(server, progress, &metrics, 16 * 1024).await;
        assert_eq!(metrics.closed_count(Close::WriteTimeout), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn progress_measures_from_the_first_refusal() {
        let p = Progress::new();
        let t0 = Instant::now();
        assert_eq!(p.stalled_for(t0 + Duration::from_secs(5)), Duration::ZERO);
        p.refused();
        p.refused();
        let stalled = p.stalled_for(Instant::now() + Duration::from_secs(3));
        assert!(stalled >= Duration::from_secs(3) && stalled < Duration::from_secs(4));
        p.took();
        assert_eq!(p.stalled_for(Instant::now()), Duration::ZERO);
    }
}
