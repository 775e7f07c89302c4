//! Accepting connections, routing requests, and upgrading `/notify` to a WebSocket.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, debug_span, warn, Instrument};
use tsugi_notify_core::{Room, Scope, Space, Tokens};

use crate::backplane::Backplane;
use crate::config::Config;
use crate::connection::Connection;
use crate::handshake::{self, ReadError, Request};
use crate::hub::{ConnId, Hub, Member, Outbox};
use crate::limits::ConnectionSlots;
use crate::metrics::{Metrics, Refusal};
use crate::publish;

/// tungstenite's read buffer per connection: small, since connections are many and
/// messages are small (it grows for a large message, within `max_message_bytes`).
const READ_BUFFER: usize = 1024;

/// What every connection task shares.
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// Token verification.
    pub tokens: Tokens,
    /// Spaces and rooms.
    pub hub: Arc<Hub>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Open WebSocket connections against `max_connections`.
    pub slots: Arc<ConnectionSlots>,
    /// Cancelled at shutdown.
    pub shutdown: CancellationToken,
    /// Redis between nodes, when configured.
    pub backplane: Option<Arc<Backplane>>,
    /// Every connection task, for the drain at shutdown.
    pub tracker: TaskTracker,
    next_id: AtomicU64,
}

impl Shared {
    /// State for a server with this configuration.
    pub fn new(
        config: Config,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> anyhow::Result<Arc<Self>> {
        let tokens = Tokens::new(config.keyring.clone()).accept_legacy(config.accept_legacy);
        let hub = Arc::new(Hub::new(
            config.limits.max_connections_per_space,
            metrics.clone(),
        ));
        let backplane = match &config.redis_url {
            Some(url) => Some(Backplane::start(
                url,
                Arc::clone(&hub),
                metrics.clone(),
                shutdown.clone(),
            )?),
            None => None,
        };
        Ok(Arc::new(Shared {
            hub,
            slots: ConnectionSlots::new(config.limits.max_connections),
            tokens,
            metrics,
            shutdown,
            backplane,
            tracker,
            config,
            next_id: AtomicU64::new(1),
        }))
    }

    /// Sends a message to the other nodes, if there are any.
    pub fn backplane_publish(
        &self,
        space: &Space,
        room: &Room,
        conn: Option<ConnId>,
        msg: &Message,
    ) {
        if let Some(bp) = &self.backplane {
            bp.publish(space, room, conn.unwrap_or(0), msg);
        }
    }

    /// `/healthz`: always 200 while serving; says whether the backplane is up.
    fn health(&self) -> String {
        match &self.backplane {
            None => "ok\n".to_owned(),
            Some(bp) if bp.is_up() => "ok\nbackplane: up\n".to_owned(),
            Some(_) => "ok\nbackplane: down\n".to_owned(),
        }
    }

    fn ws_config(&self) -> WebSocketConfig {
        let max = self.config.limits.max_message_bytes;
        WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(WRITE_BUFFER)
            .max_write_buffer_size(max.saturating_mul(WRITE_BUFFER_MESSAGES))
            .max_message_size(Some(max))
            .max_frame_size(Some(max))
    }
}

/// Bytes gathered before a write to the socket (a batch of queued messages goes out in
/// few system calls; the final flush writes the rest).
const WRITE_BUFFER: usize = 16 * 1024;

/// Largest write backlog, in messages, before writes fail (the hub closes slow readers
/// long before).
const WRITE_BUFFER_MESSAGES: usize = 128;

/// Accepts until shutdown. Accept errors such as running out of file descriptors back
/// off and retry; they never end the server.
pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let tracker = shared.tracker.clone();
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                let _ = stream.set_nodelay(true);
                let shared = Arc::clone(&shared);
                // Debug level: at the default level no span is allocated per connection.
                let span = debug_span!("conn", %peer);
                tracker.spawn(handle(stream, peer, shared).instrument(span));
            }
            Err(e) => {
                shared.metrics.accept_error();
                if is_resource_exhaustion(&e) {
                    warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed: out of resources; backing off");
                } else {
                    debug!(error = %e, "accept failed");
                }
                tokio::select! {
                    () = shared.shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    // EMFILE 24, ENFILE 23, ENOBUFS 105, ENOMEM 12
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

async fn handle(mut stream: TcpStream, _peer: SocketAddr, shared: Arc<Shared>) {
    let limits = &shared.config.limits;
    let req = match handshake::read_request(&mut stream, limits.handshake_timeout).await {
        Ok(r) => r,
        Err(ReadError::Timeout) => {
            shared.metrics.refused(Refusal::Timeout);
            debug!("handshake timed out");
            return;
        }
        Err(ReadError::TooLarge) => {
            return refuse(&mut stream, &shared, Refusal::HeadersTooLarge).await
        }
        Err(ReadError::Malformed) => {
            return refuse(&mut stream, &shared, Refusal::BadRequest).await
        }
        Err(ReadError::Closed) => return,
    };
    match route(&req) {
        Route::Health => {
            let body = shared.health();
            handshake::respond(&mut stream, 200, "OK", "text/plain; charset=utf-8", &body).await;
        }
        Route::Publish => {
            let out = publish::handle(&mut stream, req, &shared).await;
            if out.status != 200 {
                debug!(status = out.status, "publish refused");
            }
            handshake::respond(
                &mut stream,
                out.status,
                out.reason,
                "application/json",
                &out.body,
            )
            .await;
        }
        Route::Notify => {
            if let Err((why, mut stream)) = upgrade(stream, req, &shared).await {
                refuse(&mut stream, &shared, why).await;
            }
        }
        Route::Refuse(why) => refuse(&mut stream, &shared, why).await,
    }
}

async fn refuse(stream: &mut TcpStream, shared: &Shared, why: Refusal) {
    shared.metrics.refused(why);
    debug!(reason = why.label(), "refused");
    handshake::refuse(stream, why).await;
}

enum Route {
    Health,
    Notify,
    Publish,
    Refuse(Refusal),
}

fn route(req: &Request) -> Route {
    match req.path.as_str() {
        "/healthz" if req.method == "GET" || req.method == "HEAD" => Route::Health,
        "/healthz" => Route::Refuse(Refusal::Method),
        p if p == "/notify" || p.ends_with("/notify") => Route::Notify,
        p if p == "/publish" || p.ends_with("/publish") => Route::Publish,
        _ => Route::Refuse(Refusal::NotFound),
    }
}

/// Checks a `/notify` request in order (upgrade headers, query, origin, token,
/// capacity) and upgrades it, or gives the stream back with the refusal.
async fn upgrade(
    mut stream: TcpStream,
    req: Request,
    shared: &Arc<Shared>,
) -> Result<(), (Refusal, TcpStream)> {
    let checked = (|| {
        let accept = handshake::websocket_accept(&req)?;
        let query = handshake::parse_notify_query(req.query.as_deref())?;
        if !handshake::origin_allowed(&req, &shared.config.allowed_origins) {
            return Err(Refusal::Origin);
        }
        let verified = shared
            .tokens
            .verify(&query.token, Scope::Browser)
            .and_then(|v| v.for_room(&query.room))
            .map_err(|e| {
                if let Some(r) = e.rejection() {
                    shared.metrics.token_rejected(r.code());
                    debug!(check = r.code(), "token refused");
                }
                Refusal::InvalidToken
            })?;
        if shared.shutdown.is_cancelled() {
            return Err(Refusal::ShuttingDown);
        }
        Ok((accept, query.room, verified.plaintext.space()))
    })();
    let (accept, room, space) = match checked {
        Ok(v) => v,
        Err(why) => return Err((why, stream)),
    };
    let Some(slot) = shared.slots.try_take() else {
        return Err((Refusal::Capacity, stream));
    };
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let limits = &shared.config.limits;
    let outbox = Arc::new(Outbox::new(
        limits.outbound_queue,
        limits.outbound_queue_bytes,
    ));
    let slow = CancellationToken::new();
    let member = Member {
        id,
        outbox: outbox.clone(),
        slow: slow.clone(),
    };
    let Ok(membership) = shared.hub.join(space, room, member) else {
        return Err((Refusal::SpaceCapacity, stream));
    };
    // Only the bytes a client sent past its request head are kept.
    let rest = req.rest;
    let response = handshake::switching_protocols(&accept);
    if stream.write_all(response.as_bytes()).await.is_err() {
        return Ok(());
    }
    shared.metrics.accepted();
    shared.metrics.connections(1);
    debug!(space = %membership.space(), "connected");
    // The connection runs as a task of its own, so that what the handshake needed is
    // freed now rather than held for the connection's lifetime.
    let shared = Arc::clone(shared);
    let tracker = shared.tracker.clone();
    tracker.spawn(
        async move {
            let ws = WebSocketStream::from_partially_read(
                stream,
                rest,
                Role::Server,
                Some(shared.ws_config()),
            )
            .await;
            Connection {
                ws,
                membership,
                outbox,
                slow,
                shutdown: shared.shutdown.clone(),
                limits: &shared.config.limits,
                metrics: &shared.metrics,
                backplane: shared.backplane.as_deref(),
            }
            .run()
            .await;
            shared.metrics.connections(-1);
            drop(slot);
            debug!("disconnected");
        }
        .in_current_span(),
    );
    Ok(())
}
