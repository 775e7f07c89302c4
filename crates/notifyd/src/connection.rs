//! One WebSocket connection: read and fan out its messages, write what the room sends
//! it, ping it, and close it with the right code.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::backplane::Backplane;
use crate::config::Limits;
use crate::hub::{Membership, Outbox};
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
    pub outbox: Arc<Outbox>,
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
        self.outbox.close();
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
        // Created once: re-arming these on every turn of the loop is measurable.
        let shutdown = self.shutdown.clone();
        let slow = self.slow.clone();
        let stop = async {
            tokio::select! {
                () = shutdown.cancelled() => Close::GoingAway,
                () = slow.cancelled() => Close::SlowConsumer,
            }
        };
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                why = &mut stop => return End::Server(why),
                () = self.outbox.ready() => {
                    // The same stop future bounds the write: a reader too slow to take
                    // it is closed when the hub marks it slow.
                    tokio::select! {
                        biased;
                        why = &mut stop => return End::Server(why),
                        written = write_queued(&mut self.ws, &self.outbox) => {
                            if written.is_err() {
                                return End::Client;
                            }
                        }
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

/// Writes what is queued, a batch at a time, each batch with one flush.
async fn write_queued<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    outbox: &Outbox,
) -> Result<(), WsError> {
    let mut batch = Vec::new();
    while outbox.take(&mut batch, WRITE_BATCH) > 0 {
        for m in batch.drain(..) {
            ws.feed(m).await?;
        }
        ws.flush().await?;
    }
    Ok(())
}
