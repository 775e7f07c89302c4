//! Accepting connections, routing requests, and upgrading `/notify` to a WebSocket.

use std::hash::{BuildHasher, RandomState};
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
use tsugi_notify_core::{Format, Room, Scope, Space, Tokens};

use crate::backplane::Backplane;
use crate::config::Config;
use crate::connection::{Connection, Progress, Sender, Tracked};
use crate::handshake::{self, ReadError, Request};
use crate::hub::{ConnId, Hub, Member, Outbox};
use crate::limits::{ConnectionSlots, Pending, PendingSlot, PerKey};
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
    /// Open WebSocket connections per token against `max_connections_per_token`.
    pub per_token: Arc<PerKey>,
    /// Open WebSocket connections per user against `max_connections_per_user`.
    pub per_user: Arc<PerKey>,
    /// Sockets in their handshake against `max_pending_handshakes`.
    pub pending: Arc<Pending>,
    /// Keys the per-token counts (a token is never kept, only its keyed hash).
    token_hasher: RandomState,
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
        let tokens = config.tokens();
        let hub = Arc::new(Hub::new(
            config.limits.max_connections_per_space,
            metrics.clone(),
        ));
        let backplane = match &config.redis {
            Some(redis) => Some(Backplane::start(
                redis,
                config.keyring.clone(),
                config.limits.max_message_bytes,
                Arc::clone(&hub),
                metrics.clone(),
                shutdown.clone(),
            )?),
            None => None,
        };
        Ok(Arc::new(Shared {
            hub,
            slots: ConnectionSlots::new(config.limits.max_connections),
            per_token: PerKey::new(config.limits.max_connections_per_token),
            per_user: PerKey::new(config.limits.max_connections_per_user),
            pending: Pending::new(config.limits.max_pending_handshakes),
            token_hasher: RandomState::new(),
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

    /// `/healthz` on either listener: always 200 while serving; says whether the
    /// backplane is up.
    pub fn health(&self) -> String {
        match &self.backplane {
            None => "ok\n".to_owned(),
            Some(bp) if bp.is_up() => "ok\nbackplane: up\n".to_owned(),
            Some(_) => "ok\nbackplane: down\n".to_owned(),
        }
    }

    /// tungstenite's settings for a connection. Its write buffer holds at most one
    /// message past `WRITE_BUFFER` (each write waits for the socket once it is over), so
    /// that is its bound; tungstenite requires the bound to exceed `WRITE_BUFFER` for
    /// every `max_message_bytes`. Control frames (up to 125 bytes) always fit a frame.
    fn ws_config(&self) -> WebSocketConfig {
        let max = self.config.limits.max_message_bytes;
        WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(WRITE_BUFFER)
            .max_write_buffer_size(WRITE_BUFFER + max + WRITE_SLACK)
            .max_message_size(Some(max))
            .max_frame_size(Some(max.max(MAX_CONTROL_PAYLOAD)))
    }
}

/// Bytes gathered before a write to the socket (a batch of queued messages goes out in
/// few system calls; the final flush writes the rest).
const WRITE_BUFFER: usize = 16 * 1024;

/// Room in the write buffer beyond one message: its frame header, a pong, a close.
const WRITE_SLACK: usize = 4096;

/// The largest payload of a control frame (RFC 6455).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Accepts until shutdown. Accept errors such as running out of file descriptors back
/// off and retry; they never end the server.
pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let tracker = shared.tracker.clone();
    let mut backoff = Duration::from_millis(5);
    // Out-of-resource warnings at most once a second: a flood must not flood the log.
    let mut warned: Option<std::time::Instant> = None;
    let mut warn_now = move || {
        let due = warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if due {
            warned = Some(std::time::Instant::now());
        }
        due
    };
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                let _ = stream.set_nodelay(true);
                // The kernel gives up on a peer that acknowledges nothing (or keeps its
                // window shut) for as long as a reader is given.
                let wt = shared.config.limits.write_timeout.as_millis();
                let _ = rustix::net::sockopt::set_tcp_user_timeout(
                    &stream,
                    u32::try_from(wt).unwrap_or(u32::MAX),
                );
                let slot = shared.pending.enter(peer.ip());
                let shared = Arc::clone(&shared);
                // Debug level: at the default level no span is allocated per connection.
                let span = debug_span!("conn", %peer);
                tracker.spawn(handle(stream, peer, shared, slot).instrument(span));
            }
            Err(e) => {
                shared.metrics.accept_error();
                // Out of file descriptors: a socket still in its handshake makes room
                // (the oldest of the source holding the most; see `Pending`).
                if is_resource_exhaustion(&e) && shared.pending.evict_one() {
                    if warn_now() {
                        warn!(error = %e, "accept failed: out of resources; closing the oldest pending handshakes to make room");
                    }
                    // Give the evicted task a moment to close its socket, so that one
                    // refused accept evicts one socket, not every pending one.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                if is_resource_exhaustion(&e) && warn_now() {
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

/// Serves one accepted socket until its request is answered or it is upgraded (then
/// the connection runs as a task of its own); dropped early if evicted to make room.
async fn handle(stream: TcpStream, _peer: SocketAddr, shared: Arc<Shared>, slot: PendingSlot) {
    let _counted = shared.metrics.in_handshake();
    tokio::select! {
        biased;
        () = slot.evicted() => {
            shared.metrics.refused(Refusal::Evicted);
            debug!("closed before its handshake finished, to make room");
        }
        () = serve_request(stream, &shared) => {}
    }
}

async fn serve_request(mut stream: TcpStream, shared: &Arc<Shared>) {
    let limits = &shared.config.limits;
    let req = match handshake::read_request(&mut stream, limits.handshake_timeout).await {
        Ok(r) => r,
        Err(ReadError::Timeout) => {
            shared.metrics.refused(Refusal::Timeout);
            debug!("handshake timed out");
            return;
        }
        Err(ReadError::TooLarge) => {
            return refuse(&mut stream, shared, Refusal::HeadersTooLarge).await
        }
        Err(ReadError::Malformed) => return refuse(&mut stream, shared, Refusal::BadRequest).await,
        Err(ReadError::Closed) => return,
    };
    match route(&req) {
        Route::Health => handshake::health(&mut stream, &req, &shared.health()).await,
        Route::Publish => {
            let out = publish::handle(&mut stream, req, shared).await;
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
            if let Err((why, mut stream)) = upgrade(stream, req, shared).await {
                refuse(&mut stream, shared, why).await;
            }
        }
        Route::Refuse(why) => refuse(&mut stream, shared, why).await,
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
        let token_key = shared.token_hasher.hash_one(query.token.as_str());
        // Only a v1 token's user is a user: a legacy token holds the course there.
        let p = &verified.plaintext;
        let user_key = match (verified.format, p.user()) {
            (Format::V1, Some(user)) => Some(shared.token_hasher.hash_one((p.wwwroot(), user))),
            _ => None,
        };
        Ok((accept, query.room, p.space(), token_key, user_key))
    })();
    let (accept, room, space, token_key, user_key) = match checked {
        Ok(v) => v,
        Err(why) => return Err((why, stream)),
    };
    // One page render mints one token: its sockets are bounded, so one page (or one
    // student with its token) cannot fill a link's space or the daemon.
    let limits = &shared.config.limits;
    let Some(token_slot) = shared.per_token.try_take(token_key) else {
        return Err((Refusal::TokenCapacity, stream));
    };
    // A student who reloads the page for fresh tokens is still one user.
    let user_slot = match user_key.map(|k| shared.per_user.try_take(k)) {
        Some(None) => return Err((Refusal::UserCapacity, stream)),
        Some(Some(s)) => Some(s),
        None => None,
    };
    // One sender is one user (v1), or one token (legacy, or no user): all its sockets
    // share one rate limiter, so the rule that one sender cannot overflow a reader
    // holds however many sockets it opens.
    let rate = match user_key {
        Some(k) => Sender::new(Arc::clone(&shared.per_user), k),
        None => Sender::new(Arc::clone(&shared.per_token), token_key),
    };
    let Some(slot) = shared.slots.try_take() else {
        return Err((Refusal::Capacity, stream));
    };
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let outbox = Arc::new(Outbox::for_limits(limits));
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
    // Every count this connection holds is released when the task ends, whichever way.
    // (The gauge last: when it says a connection is gone, its slots are free.)
    let held = (
        slot,
        token_slot,
        user_slot,
        shared.metrics.open_connection(),
    );
    debug!(space = %membership.space(), "connected");
    // The connection runs as a task of its own, so that what the handshake needed is
    // freed now rather than held for the connection's lifetime.
    let shared = Arc::clone(shared);
    let tracker = shared.tracker.clone();
    tracker.spawn(
        async move {
            let progress = Progress::new();
            let ws = WebSocketStream::from_partially_read(
                Tracked::new(stream, Arc::clone(&progress)),
                rest,
                Role::Server,
                Some(shared.ws_config()),
            )
            .await;
            Connection {
                ws,
                progress,
                rate,
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
            drop(held);
            debug!("disconnected");
        }
        .in_current_span(),
    );
    Ok(())
}
