//! Accepting sockets and routing their first request: `/healthz`, `POST /publish`, or
//! the `/notify` upgrade; everything else is refused.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, debug_span, warn, Instrument};

use crate::connection::{Progress, Tracked};
use crate::http::{self, ReadError, Request};
use crate::metrics::Refusal;
use crate::node::Node;
use crate::quota::PendingSlot;
use crate::{publish, upgrade};

/// Accepts until shutdown. Accept errors such as running out of file descriptors back
/// off and retry; they never end the server.
pub async fn accept_loop(listener: TcpListener, node: Arc<Node>) {
    let tracker = node.tracker.clone();
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
            () = node.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                let _ = stream.set_nodelay(true);
                // The kernel gives up on a peer that acknowledges nothing (or keeps its
                // window shut) for as long as a reader is given.
                let wt = node.config.limits.write_timeout.as_millis();
                let _ = rustix::net::sockopt::set_tcp_user_timeout(
                    &stream,
                    u32::try_from(wt).unwrap_or(u32::MAX),
                );
                let slot = node.pending.enter(peer.ip());
                let node = Arc::clone(&node);
                // Debug level: at the default level no span is allocated per connection.
                let span = debug_span!("conn", %peer);
                tracker.spawn(handle(stream, node, slot).instrument(span));
            }
            Err(e) => {
                node.metrics.accept_error();
                // Out of file descriptors: a socket still in its handshake makes room
                // (the oldest of the source holding the most; see `Pending`).
                if is_resource_exhaustion(&e) && node.pending.evict_one() {
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
                    () = node.shutdown.cancelled() => return,
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
async fn handle(stream: TcpStream, node: Arc<Node>, slot: PendingSlot) {
    let _counted = node.metrics.in_handshake();
    tokio::select! {
        biased;
        () = slot.evicted() => {
            node.metrics.refused(Refusal::Evicted);
            debug!("closed before its handshake finished, to make room");
        }
        () = serve(stream, &node) => {}
    }
}

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Serves a socket in clear text, or, with `tls_cert` set, after its TLS handshake:
/// both within `handshake_timeout_secs` of the accept, while it holds its pending slot.
async fn serve(stream: TcpStream, node: &Arc<Node>) {
    let accepted = Instant::now();
    // The TCP socket's write progress, under any TLS: a reader that stops is seen by
    // what the socket takes, not by what TLS buffers.
    let progress = Progress::new();
    let Some(tls) = &node.tls else {
        let stream = Tracked::new(stream, Arc::clone(&progress));
        return serve_request(stream, progress, node, accepted).await;
    };
    let deadline = tokio::time::Instant::from_std(accepted + node.config.limits.handshake_timeout);
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Ok(Ok(1..)) if first[0] == TLS_HANDSHAKE_RECORD => {}
        // Plain HTTP (or anything else) on the TLS port: a clear answer, not a hang.
        // The request is read first: closing with it unread would reset the connection
        // and could lose the answer.
        Ok(Ok(1..)) => {
            let mut stream = stream;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let _ = http::read_request(&mut stream, left).await;
            return refuse(&mut stream, node, Refusal::PlainHttp).await;
        }
        Ok(_) => return,
        Err(_) => {
            node.metrics.refused(Refusal::Timeout);
            return;
        }
    }
    let tracked = Tracked::new(stream, Arc::clone(&progress));
    match tokio::time::timeout_at(deadline, tls.accept(tracked)).await {
        Ok(Ok(stream)) => serve_request(stream, progress, node, accepted).await,
        Ok(Err(e)) => {
            node.metrics.refused(Refusal::Tls);
            debug!(error = %e, "TLS handshake failed");
        }
        Err(_) => {
            node.metrics.refused(Refusal::Timeout);
            debug!("TLS handshake timed out");
        }
    }
}

async fn serve_request<S>(
    mut stream: S,
    progress: Arc<Progress>,
    node: &Arc<Node>,
    accepted: Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = &node.config.limits;
    let left = limits.handshake_timeout.saturating_sub(accepted.elapsed());
    let req = match http::read_request(&mut stream, left).await {
        Ok(r) => r,
        Err(ReadError::Timeout) => {
            node.metrics.refused(Refusal::Timeout);
            debug!("handshake timed out");
            return;
        }
        Err(ReadError::TooLarge) => {
            return refuse(&mut stream, node, Refusal::HeadersTooLarge).await
        }
        Err(ReadError::Malformed) => return refuse(&mut stream, node, Refusal::BadRequest).await,
        Err(ReadError::Closed) => return,
    };
    match route(&req) {
        Route::Health => {
            if let Err(why) =
                http::health(&mut stream, &req, node.health(), node.tokens.leeway()).await
            {
                node.metrics.refused(why);
            }
        }
        Route::Publish => {
            let head = Instant::now();
            let out = publish::handle(&mut stream, req, node).await;
            if out.status != 200 {
                debug!(status = out.status, "publish refused");
            }
            http::respond(&mut stream, out.status, "application/json", &out.body).await;
            node.metrics.publish_took(head.elapsed());
        }
        Route::Presence => {
            let out = publish::presence(req, node).await;
            if out.status != 200 {
                debug!(status = out.status, "presence refused");
            }
            http::respond(&mut stream, out.status, "application/json", &out.body).await;
        }
        Route::Notify => {
            if let Err((why, mut stream)) = upgrade::upgrade(stream, progress, req, node).await {
                refuse(&mut stream, node, why).await;
            }
            node.metrics.handshake_took(accepted.elapsed());
        }
        Route::Refuse(why) => refuse(&mut stream, node, why).await,
    }
}

async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, node: &Node, why: Refusal) {
    node.metrics.refused(why);
    debug!(reason = why.label(), "refused");
    http::refuse(stream, why).await;
}

enum Route {
    Health,
    Notify,
    Publish,
    Presence,
    Refuse(Refusal),
}

fn route(req: &Request) -> Route {
    match req.path.as_str() {
        "/healthz" => Route::Health,
        p if p == "/notify" || p.ends_with("/notify") => Route::Notify,
        p if p == "/publish" || p.ends_with("/publish") => Route::Publish,
        p if p == "/presence" || p.ends_with("/presence") => Route::Presence,
        _ => Route::Refuse(Refusal::NotFound),
    }
}
