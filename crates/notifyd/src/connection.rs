//! One WebSocket connection: read and fan out its messages, write what the room sends
//! it, ping it, and close it with the right code.
//!
//! Every write is bounded twice: by the stop future (shutdown, or the hub marking the
//! reader slow) and by `write_timeout`, counted from the last byte the socket took. A
//! client that reads nothing is closed and its slot freed, whatever else it does.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::config::Limits;
use crate::fanout::{Fanout, Source};
use crate::hub::Membership;
use crate::metrics::{Close, Dropped, Metrics};
use crate::outbox::Outbox;
use crate::quota::{PerKey, RateLimiter, SharedLimiter, Verdict};

/// Messages written to the socket in one batch before a flush.
const WRITE_BATCH: usize = 64;
/// Time allowed to send a close frame to a client.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Writes per observation of `tsugi_notify_queue_wait_seconds`.
const QUEUE_WAIT_SAMPLE: u32 = 8;

/// Everything one connection task needs.
pub struct Connection<'a, S> {
    /// Frames written before any queued one (a client of the protocol's opening).
    pub preamble: Vec<Message>,
    /// The upgraded socket: a [`Tracked`] TCP socket, or a TLS session over one (the
    /// progress is the socket's, not what TLS buffers).
    pub ws: WebSocketStream<S>,
    /// When the socket last refused to take bytes (shared with `ws`'s stream).
    pub progress: Arc<Progress>,
    /// Whose rate limit this connection's messages count against.
    pub rate: Sender,
    /// Its place in a room.
    pub membership: Membership,
    /// Its outbound queue.
    pub outbox: Arc<Outbox>,
    /// Cancelled by the hub when its queue overflows, or when it must reconnect to
    /// recover (its outbox says which).
    pub slow: CancellationToken,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Bounds.
    pub limits: &'a Limits,
    /// Counters.
    pub metrics: &'a Metrics,
    /// Where its messages go.
    pub fanout: &'a Fanout,
}

/// How the loop ended.
enum End {
    /// The client closed or went away.
    Client,
    /// The server closes with this reason.
    Server(Close),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<'_, S> {
    /// Runs until the connection ends.
    pub async fn run(mut self) {
        let end = self.serve().await;
        self.outbox.close();
        if let End::Server(reason) = end {
            self.metrics.closed(reason);
            let (code, text) = match reason {
                Close::GoingAway => (CloseCode::Away, "server shutting down"),
                Close::InvalidUtf8 => (CloseCode::Invalid, "invalid UTF-8"),
                Close::RateLimit => (CloseCode::Policy, "too many messages"),
                Close::SlowConsumer | Close::WriteTimeout => (CloseCode::Policy, "not reading"),
                Close::TooBig => (CloseCode::Size, "message too big"),
                Close::Protocol => (CloseCode::Protocol, "protocol error"),
                Close::Idle => (CloseCode::Away, "idle"),
                Close::Resync => (CloseCode::Restart, "reconnect to recover"),
            };
            debug!(?reason, "closing");
            let frame = CloseFrame {
                code,
                reason: text.into(),
            };
            let close = async {
                // A client that stopped reading has a full socket: its close frame may
                // never go out, so this is bounded.
                let _ = self.ws.send(Message::Close(Some(frame))).await;
                // Let the client answer the close, briefly.
                while let Some(Ok(_)) = self.ws.next().await {}
            };
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
        }
    }

    async fn serve(&mut self) -> End {
        let limits = self.limits;
        // Made (or found) the first time this connection sends.
        let mut rate: Option<SharedLimiter> = None;
        let progress = Arc::clone(&self.progress);
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
        // Created once: re-arming these on every turn of the loop is measurable.
        let shutdown = self.shutdown.clone();
        let slow = self.slow.clone();
        let outbox = Arc::clone(&self.outbox);
        let stop = async {
            tokio::select! {
                () = shutdown.cancelled() => Close::GoingAway,
                () = slow.cancelled() => if outbox.resyncing() { Close::Resync } else { Close::SlowConsumer },
            }
        };
        tokio::pin!(stop);
        if !self.preamble.is_empty() {
            let frames = std::mem::take(&mut self.preamble);
            // Boxed: only a client of the protocol writes an opening, and every
            // connection's task is as large as its largest await.
            let mut write = Box::pin(async {
                for f in frames {
                    self.ws.feed(f).await?;
                }
                self.ws.flush().await
            });
            let write = write.as_mut();
            if let Some(end) = bounded(
                &mut stop,
                &progress,
                &mut deadline,
                limits.write_timeout,
                write,
            )
            .await
            {
                return end;
            }
        }
        loop {
            tokio::select! {
                biased;
                why = &mut stop => return End::Server(why),
                () = self.outbox.ready() => {
                    let write = std::pin::pin!(write_queued(&mut self.ws, &self.outbox, self.metrics, &mut writes));
                    if let Some(end) = bounded(&mut stop, &progress, &mut deadline, limits.write_timeout, write).await {
                        return end;
                    }
                }
                incoming = self.ws.next() => {
                    let msg = match incoming {
                        None => return End::Client,
                        Some(Ok(m)) => m,
                        Some(Err(e)) => return Self::read_error(e),
                    };
                    last_seen = Instant::now();
                    // A client that keeps sending (pings, say) while it reads nothing has
                    // its answers stuck: reading on must not keep it open.
                    if progress.stalled_for(last_seen) >= limits.write_timeout {
                        return End::Server(Close::WriteTimeout);
                    }
                    match msg {
                        Message::Text(_) | Message::Binary(_) => {
                            self.metrics.received(msg.len());
                            let verdict = rate
                                .get_or_insert_with(|| self.rate.limiter(limits))
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .check(last_seen, msg.len());
                            match verdict {
                                Verdict::Allow => {
                                    self.fanout.broadcast(Source::Member(&self.membership), &msg);
                                }
                                Verdict::Drop => self.metrics.dropped(Dropped::RateLimit),
                                Verdict::Close => {
                                    self.metrics.dropped(Dropped::RateLimit);
                                    return End::Server(Close::RateLimit);
                                }
                            }
                        }
                        // tungstenite queues the pong (one at a time: a newer ping replaces
                        // an unsent answer) and writes it as the stream is read on, without
                        // waiting on a full socket.
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                        // tungstenite answers the close; read on until the stream ends.
                        Message::Close(_) => {}
                    }
                }
                _ = ping.tick() => {
                    if last_seen.elapsed() >= limits.idle_timeout {
                        return End::Server(Close::Idle);
                    }
                    let write = std::pin::pin!(self.ws.send(Message::Ping(Default::default())));
                    if let Some(end) = bounded(&mut stop, &progress, &mut deadline, limits.write_timeout, write).await {
                        return end;
                    }
                }
            }
        }
    }

    fn read_error(e: WsError) -> End {
        match e {
            WsError::Capacity(CapacityError::MessageTooLong { .. }) | WsError::Capacity(_) => {
                End::Server(Close::TooBig)
            }
            WsError::Utf8(_) => End::Server(Close::InvalidUtf8),
            // The kernel's TCP_USER_TIMEOUT ends reads too: the same as a failed write.
            WsError::Io(_) => write_error(e),
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)
            | WsError::ConnectionClosed
            | WsError::AlreadyClosed => End::Client,
            WsError::Protocol(_) => End::Server(Close::Protocol),
            _ => End::Client,
        }
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

/// Runs a write until it is done, the stop future fires, or the socket takes no byte for
/// `timeout`; `None` when the write completed. The deadline's timer is only looked at
/// once the write has to wait (most writes go straight into the socket buffer), made
/// the first time, and then kept armed for the earliest moment the socket could have
/// stalled that long: an idle connection holds none and a fast one touches none.
/// (A plain function over a pinned write, so that the write future is held once, by the
/// caller: a connection's task stays small.)
fn bounded<'a, 's, W, X>(
    stop: &'a mut Pin<&'s mut X>,
    progress: &'a Progress,
    deadline: &'a mut Deadline,
    timeout: Duration,
    mut write: Pin<&'a mut W>,
) -> impl Future<Output = Option<End>> + use<'a, 's, W, X>
where
    W: Future<Output = Result<(), WsError>>,
    X: Future<Output = Close>,
{
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(why) = stop.as_mut().poll(cx) {
            return Poll::Ready(Some(End::Server(why)));
        }
        if let Poll::Ready(written) = write.as_mut().poll(cx) {
            return Poll::Ready(written.err().map(write_error));
        }
        // The write waits on the socket: watch for a stall.
        loop {
            let stalled = progress.stalled_for(Instant::now());
            if stalled >= timeout {
                return Poll::Ready(Some(End::Server(Close::WriteTimeout)));
            }
            let sleep = match deadline {
                Some(sleep) => sleep,
                None => deadline.insert(Box::pin(tokio::time::sleep(timeout - stalled))),
            };
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // Fired: look again from the last progress (there may have been some).
            let left = timeout.saturating_sub(progress.stalled_for(Instant::now()));
            sleep.as_mut().reset(tokio::time::Instant::now() + left);
        }
    })
}

/// A failed write: the kernel gave up on a peer that took nothing for
/// `TCP_USER_TIMEOUT` (set to `write_timeout`), or the peer went away.
fn write_error(e: WsError) -> End {
    match e {
        WsError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            End::Server(Close::WriteTimeout)
        }
        _ => End::Client,
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
        match &r {
            Poll::Ready(Ok(n)) if *n > 0 => self.progress.took(),
            Poll::Pending => self.progress.refused(),
            _ => {}
        }
        r
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

/// Writes what is queued, a batch at a time, each batch with one flush.
async fn write_queued<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    outbox: &Outbox,
    metrics: &Metrics,
    writes: &mut u32,
) -> Result<(), WsError> {
    let mut batch = Vec::new();
    while let Some(oldest) = outbox.take(&mut batch, WRITE_BATCH) {
        // One write in QUEUE_WAIT_SAMPLE is observed (the first of each connection
        // among them): the histogram's lock and a clock read per write would cost
        // the fan-out of a busy room several percent.
        if *writes % QUEUE_WAIT_SAMPLE == 0 {
            metrics.queue_waited(oldest.elapsed());
        }
        *writes = writes.wrapping_add(1);
        for m in batch.drain(..) {
            ws.feed(m).await?;
        }
        ws.flush().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Hub, Member};
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tsugi_notify_core::{Plaintext, Room};

    /// Runs a connection on `ws` whose reader takes nothing, with one message of
    /// `bytes` queued and a write timeout of 500 ms, until it ends (at most 10 s).
    async fn run_with_a_reader_that_takes_nothing<S: AsyncRead + AsyncWrite + Unpin>(
        ws: WebSocketStream<S>,
        progress: Arc<Progress>,
        metrics: &Arc<Metrics>,
        bytes: usize,
    ) {
        let hub = Arc::new(Hub::new(10, Arc::clone(metrics)));
        let fanout = Fanout::new(Arc::clone(&hub), None, Arc::clone(metrics));
        let limits = Limits {
            write_timeout: Duration::from_millis(500),
            ..Limits::default()
        };
        let outbox = Arc::new(Outbox::for_limits(&limits));
        let slow = CancellationToken::new();
        let member = Member {
            id: 1,
            outbox: Arc::clone(&outbox),
            slow: slow.clone(),
            user: None,
            json: false,
        };
        let space = Plaintext::new("https://w", "1", None, None)
            .unwrap()
            .space();
        let membership = hub.join(space, Room::default(), member).unwrap();
        outbox.push(&Message::binary(vec![0u8; bytes]), Instant::now());
        let conn = Connection {
            preamble: Vec::new(),
            ws,
            progress,
            rate: Sender::new(PerKey::new(1), 1),
            membership,
            outbox,
            slow,
            shutdown: CancellationToken::new(),
            limits: &limits,
            metrics,
            fanout: &fanout,
        };
        tokio::time::timeout(Duration::from_secs(10), conn.run())
            .await
            .expect("the connection ended at the write timeout");
    }

    #[tokio::test]
    async fn a_socket_that_takes_nothing_is_closed_at_the_write_timeout() {
        // An in-memory pipe whose far end never reads: no kernel timer can help here,
        // and nothing is queued after the first message, so only the write deadline
        // can end this connection.
        let (server, client) = tokio::io::duplex(1024);
        let progress = Progress::new();
        let ws = WebSocketStream::from_raw_socket(
            Tracked::new(server, Arc::clone(&progress)),
            Role::Server,
            None,
        )
        .await;
        let metrics = Arc::new(Metrics::default());
        let started = Instant::now();
        run_with_a_reader_that_takes_nothing(ws, progress, &metrics, 64 * 1024).await;
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
        let ws = WebSocketStream::from_raw_socket(server, Role::Server, None).await;
        run_with_a_reader_that_takes_nothing(ws, progress, &metrics, 16 * 1024).await;
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
