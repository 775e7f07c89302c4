//! One WebSocket connection: read and fan out its messages, write what the room sends
//! it, ping it, and close it with the right code.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::backplane::Backplane;
use crate::config::Limits;
use crate::hub::Membership;
use crate::limits::{RateLimiter, Verdict};
use crate::metrics::{Close, Drop as DropReason, Metrics};

/// Messages written to the socket in one batch before a flush.
const WRITE_BATCH: usize = 64;
/// Time allowed to send a close frame to a client.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Everything one connection task needs.
pub struct Connection<'a, S> {
    /// The upgraded socket.
    pub ws: WebSocketStream<S>,
    /// Its place in a room.
    pub membership: Membership,
    /// Its outbound queue.
    pub rx: mpsc::Receiver<Message>,
    /// Cancelled by the hub when its queue overflows.
    pub slow: CancellationToken,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Bounds.
    pub limits: &'a Limits,
    /// Counters.
    pub metrics: &'a Metrics,
    /// Other nodes, when there are any.
    pub backplane: Option<&'a Backplane>,
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
        if let End::Server(reason) = end {
            self.metrics.closed(reason);
            let (code, text) = match reason {
                Close::GoingAway => (CloseCode::Away, "server shutting down"),
                Close::InvalidUtf8 => (CloseCode::Invalid, "invalid UTF-8"),
                Close::RateLimit => (CloseCode::Policy, "too many messages"),
                Close::SlowConsumer => (CloseCode::Policy, "not reading"),
                Close::TooBig => (CloseCode::Size, "message too big"),
                Close::Protocol => (CloseCode::Protocol, "protocol error"),
                Close::Idle => (CloseCode::Away, "idle"),
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
        let mut rate = RateLimiter::new(limits.messages_per_second, limits.burst, Instant::now());
        let mut last_seen = Instant::now();
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + limits.ping_interval,
            limits.ping_interval,
        );
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return End::Server(Close::GoingAway),
                () = self.slow.cancelled() => return End::Server(Close::SlowConsumer),
                out = self.rx.recv() => {
                    let Some(first) = out else { return End::Client };
                    if let Some(end) = self.write_batch(first).await {
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
                    match msg {
                        Message::Text(_) | Message::Binary(_) => {
                            self.metrics.received(msg.len());
                            match rate.check(last_seen) {
                                Verdict::Allow => {
                                    let m = &self.membership;
                                    m.room().deliver(Some(m.id()), &msg, self.metrics);
                                    if let Some(bp) = self.backplane {
                                        bp.publish(m.space(), m.room_name(), m.id(), &msg);
                                    }
                                }
                                Verdict::Drop => self.metrics.dropped(DropReason::RateLimit),
                                Verdict::Close => {
                                    self.metrics.dropped(DropReason::RateLimit);
                                    return End::Server(Close::RateLimit);
                                }
                            }
                        }
                        // tungstenite queues the pong; send it now.
                        Message::Ping(_) => {
                            if self.ws.flush().await.is_err() {
                                return End::Client;
                            }
                        }
                        Message::Pong(_) | Message::Frame(_) => {}
                        // tungstenite answers the close; read on until the stream ends.
                        Message::Close(_) => {}
                    }
                }
                _ = ping.tick() => {
                    if last_seen.elapsed() >= limits.idle_timeout {
                        return End::Server(Close::Idle);
                    }
                    if self.ws.send(Message::Ping(Default::default())).await.is_err() {
                        return End::Client;
                    }
                }
            }
        }
    }

    /// Writes `first` and whatever else is queued (up to a batch), then flushes once.
    /// A client too slow to take it is closed when the hub marks it slow.
    async fn write_batch(&mut self, first: Message) -> Option<End> {
        let ws = &mut self.ws;
        let rx = &mut self.rx;
        let write = async {
            ws.feed(first).await?;
            for _ in 1..WRITE_BATCH {
                match rx.try_recv() {
                    Ok(m) => ws.feed(m).await?,
                    Err(_) => break,
                }
            }
            ws.flush().await
        };
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => Some(End::Server(Close::GoingAway)),
            () = self.slow.cancelled() => Some(End::Server(Close::SlowConsumer)),
            r = write => r.err().map(|_| End::Client),
        }
    }

    fn read_error(e: WsError) -> End {
        match e {
            WsError::Capacity(CapacityError::MessageTooLong { .. }) | WsError::Capacity(_) => {
                End::Server(Close::TooBig)
            }
            WsError::Utf8(_) => End::Server(Close::InvalidUtf8),
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)
            | WsError::ConnectionClosed
            | WsError::AlreadyClosed
            | WsError::Io(_) => End::Client,
            WsError::Protocol(_) => End::Server(Close::Protocol),
            _ => End::Client,
        }
    }
}
