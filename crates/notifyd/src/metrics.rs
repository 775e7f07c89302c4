//! Counters and gauges, rendered as Prometheus text. Lock-free: every update is one
//! relaxed atomic add.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Why a handshake was refused. (Its discriminant indexes the counters; `ALL` lists
/// the variants in discriminant order.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 403: missing, bad or expired token.
    InvalidToken,
    /// 403: an Origin not in `allowed_origins`.
    Origin,
    /// 400: malformed request or query.
    BadRequest,
    /// 400: room name over 256 bytes.
    RoomTooLong,
    /// 404: no such path.
    NotFound,
    /// 405: not GET (or POST where allowed).
    Method,
    /// 431: request line or headers too large.
    HeadersTooLarge,
    /// 503: `max_connections` reached.
    Capacity,
    /// 503: `max_connections_per_space` reached.
    SpaceCapacity,
    /// 429: `max_connections_per_token` reached.
    TokenCapacity,
    /// 429: `max_connections_per_user` reached.
    UserCapacity,
    /// Closed before its handshake finished, to make room for newer sockets
    /// (`max_pending_handshakes`, or out of file descriptors): dropped, no response.
    Evicted,
    /// 503: the server is shutting down.
    ShuttingDown,
    /// The request did not arrive within `handshake_timeout_secs` (dropped).
    Timeout,
}

impl Refusal {
    const ALL: [Refusal; 14] = [
        Refusal::InvalidToken,
        Refusal::Origin,
        Refusal::BadRequest,
        Refusal::RoomTooLong,
        Refusal::NotFound,
        Refusal::Method,
        Refusal::HeadersTooLarge,
        Refusal::Capacity,
        Refusal::SpaceCapacity,
        Refusal::TokenCapacity,
        Refusal::UserCapacity,
        Refusal::Evicted,
        Refusal::ShuttingDown,
        Refusal::Timeout,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::InvalidToken => "invalid_token",
            Refusal::Origin => "origin",
            Refusal::BadRequest => "bad_request",
            Refusal::RoomTooLong => "room_too_long",
            Refusal::NotFound => "not_found",
            Refusal::Method => "method",
            Refusal::HeadersTooLarge => "headers_too_large",
            Refusal::Capacity => "capacity",
            Refusal::SpaceCapacity => "space_capacity",
            Refusal::TokenCapacity => "token_capacity",
            Refusal::UserCapacity => "user_capacity",
            Refusal::Evicted => "evicted",
            Refusal::ShuttingDown => "shutting_down",
            Refusal::Timeout => "timeout",
        }
    }
}

/// Why a message from a client was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The sender was over its rate.
    RateLimit,
    /// A receiver's queue was full or its oldest message had waited
    /// `write_timeout_secs` (the receiver is then closed).
    SlowConsumer,
}

/// Why the server closed a connection. (Its discriminant indexes the counters; `ALL`
/// lists the variants in discriminant order.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// 1001: shutting down.
    GoingAway,
    /// 1007: invalid UTF-8 in a text message.
    InvalidUtf8,
    /// 1008: kept sending over its rate.
    RateLimit,
    /// 1008: not reading (its queue full, or its oldest message waited
    /// `write_timeout_secs`).
    SlowConsumer,
    /// 1009: message too big.
    TooBig,
    /// 1002: protocol error.
    Protocol,
    /// No pong within `idle_timeout_secs`.
    Idle,
    /// 1008: the socket took no byte for `write_timeout_secs` while output waited.
    WriteTimeout,
}

impl Close {
    const ALL: [Close; 8] = [
        Close::GoingAway,
        Close::InvalidUtf8,
        Close::RateLimit,
        Close::SlowConsumer,
        Close::TooBig,
        Close::Protocol,
        Close::Idle,
        Close::WriteTimeout,
    ];

    fn label(self) -> &'static str {
        match self {
            Close::GoingAway => "going_away",
            Close::InvalidUtf8 => "invalid_utf8",
            Close::RateLimit => "rate_limit",
            Close::SlowConsumer => "slow_consumer",
            Close::TooBig => "too_big",
            Close::Protocol => "protocol",
            Close::Idle => "idle",
            Close::WriteTimeout => "write_timeout",
        }
    }
}

/// Every figure the daemon exports.
#[derive(Debug, Default)]
pub struct Metrics {
    connections: AtomicI64,
    spaces: AtomicI64,
    rooms: AtomicI64,
    accepted: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
    token_rejections: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    received: AtomicU64,
    delivered: AtomicU64,
    dropped_rate: AtomicU64,
    dropped_slow: AtomicU64,
    closes: [AtomicU64; Close::ALL.len()],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    accept_errors: AtomicU64,
    backplane_up: AtomicI64,
    backplane_published: AtomicU64,
    backplane_received: AtomicU64,
    backplane_dropped: AtomicU64,
    backplane_reconnects: AtomicU64,
    backplane_channels: AtomicI64,
    backplane_refused: [AtomicU64; Envelope::ALL.len()],
    pending: AtomicI64,
}

/// Why an envelope from Redis was not delivered. (Its discriminant indexes the
/// counters; `ALL` lists the variants in discriminant order.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    /// Larger than a message may be.
    TooBig,
    /// Its MAC matches none of the secrets: not from a node of this site.
    BadMac,
    /// Authentic but not decodable (a node of another version).
    Malformed,
    /// Its time is outside the window: recorded and replayed, or a node's clock is off.
    Stale,
    /// Already seen (same node, same or older sequence): replayed.
    Replayed,
    /// Dropped unread: envelopes came faster than this node could check them (a flood
    /// on its channels), and Redis must not see a slow subscriber.
    Overload,
}

impl Envelope {
    const ALL: [Envelope; 6] = [
        Envelope::TooBig,
        Envelope::BadMac,
        Envelope::Malformed,
        Envelope::Stale,
        Envelope::Replayed,
        Envelope::Overload,
    ];

    fn label(self) -> &'static str {
        match self {
            Envelope::TooBig => "too_big",
            Envelope::BadMac => "bad_mac",
            Envelope::Malformed => "malformed",
            Envelope::Stale => "stale",
            Envelope::Replayed => "replayed",
            Envelope::Overload => "overload",
        }
    }
}

/// An open connection, counted in the gauge until it drops (on every way out,
/// a panic included).
#[derive(Debug)]
pub struct OpenConnection(std::sync::Arc<Metrics>);

impl std::ops::Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Relaxed);
    }
}

/// A socket in its handshake, counted in the gauge until it drops.
#[derive(Debug)]
pub struct InHandshake(std::sync::Arc<Metrics>);

impl std::ops::Drop for InHandshake {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Relaxed);
    }
}

impl Metrics {
    /// A connection opened: counted until the guard drops.
    pub fn open_connection(self: &std::sync::Arc<Self>) -> OpenConnection {
        self.connections.fetch_add(1, Relaxed);
        OpenConnection(std::sync::Arc::clone(self))
    }
    /// Open WebSocket connections now.
    pub fn connection_count(&self) -> i64 {
        self.connections.load(Relaxed)
    }
    /// A socket entered its handshake: counted until the guard drops.
    pub fn in_handshake(self: &std::sync::Arc<Self>) -> InHandshake {
        self.pending.fetch_add(1, Relaxed);
        InHandshake(std::sync::Arc::clone(self))
    }
    /// An envelope from Redis was refused.
    pub fn envelope_refused(&self, why: Envelope) {
        self.backplane_refused[why as usize].fetch_add(1, Relaxed);
    }
    /// How many envelopes were refused for this reason.
    pub fn envelope_refused_count(&self, why: Envelope) -> u64 {
        self.backplane_refused[why as usize].load(Relaxed)
    }
    /// A space gained its first (+1) or lost its last (-1) member.
    pub fn spaces(&self, delta: i64) {
        self.spaces.fetch_add(delta, Relaxed);
    }
    /// A room gained its first (+1) or lost its last (-1) member.
    pub fn rooms(&self, delta: i64) {
        self.rooms.fetch_add(delta, Relaxed);
    }
    /// A WebSocket handshake succeeded.
    pub fn accepted(&self) {
        self.accepted.fetch_add(1, Relaxed);
    }
    /// A handshake was refused.
    pub fn refused(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Relaxed);
    }
    /// How many handshakes were refused for this reason.
    pub fn refused_count(&self, why: Refusal) -> u64 {
        self.refused[why as usize].load(Relaxed)
    }
    /// Which token check failed (the code of `Rejection`; never any token content).
    pub fn token_rejected(&self, code: &'static str) {
        if let Ok(mut m) = self.token_rejections.lock() {
            *m.entry(code).or_default() += 1;
        }
    }
    /// A message arrived from a client.
    pub fn received(&self, bytes: usize) {
        self.received.fetch_add(1, Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Relaxed);
    }
    /// Copies of a message were queued for `n` receivers.
    pub fn delivered(&self, n: u64, bytes: usize) {
        self.delivered.fetch_add(n, Relaxed);
        self.bytes_out.fetch_add(n * bytes as u64, Relaxed);
    }
    /// A message was dropped.
    pub fn dropped(&self, why: Dropped) {
        match why {
            Dropped::RateLimit => &self.dropped_rate,
            Dropped::SlowConsumer => &self.dropped_slow,
        }
        .fetch_add(1, Relaxed);
    }
    /// The server closed a connection.
    pub fn closed(&self, why: Close) {
        self.closes[why as usize].fetch_add(1, Relaxed);
    }
    /// How many connections were closed for this reason.
    pub fn closed_count(&self, why: Close) -> u64 {
        self.closes[why as usize].load(Relaxed)
    }
    /// `accept()` failed (e.g. out of file descriptors).
    pub fn accept_error(&self) {
        self.accept_errors.fetch_add(1, Relaxed);
    }
    /// The backplane came up (true) or went down (false).
    pub fn backplane_up(&self, up: bool) {
        self.backplane_up.store(i64::from(up), Relaxed);
    }
    /// A message went to Redis.
    pub fn backplane_published(&self) {
        self.backplane_published.fetch_add(1, Relaxed);
    }
    /// A message came from another node.
    pub fn backplane_received(&self) {
        self.backplane_received.fetch_add(1, Relaxed);
    }
    /// A message could not go to the other nodes (Redis down or slow).
    pub fn backplane_dropped(&self) {
        self.backplane_dropped.fetch_add(1, Relaxed);
    }
    /// Redis channels (spaces) subscribed now.
    pub fn backplane_channels(&self, n: usize) {
        self.backplane_channels.store(n as i64, Relaxed);
    }
    /// Redis channels subscribed now.
    pub fn backplane_channel_count(&self) -> i64 {
        self.backplane_channels.load(Relaxed)
    }
    /// Whether the backplane is connected.
    pub fn backplane_is_up(&self) -> bool {
        self.backplane_up.load(Relaxed) == 1
    }
    /// The connection to Redis was lost.
    pub fn backplane_reconnect(&self) {
        self.backplane_reconnects.fetch_add(1, Relaxed);
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, rows: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP tsugi_notify_{name} {help}");
            let _ = writeln!(out, "# TYPE tsugi_notify_{name} {kind}");
            for (labels, v) in rows {
                let _ = writeln!(out, "tsugi_notify_{name}{labels} {v}");
            }
        };
        let gauge = |a: &AtomicI64| vec![(String::new(), a.load(Relaxed).max(0) as u64)];
        let counter = |a: &AtomicU64| vec![(String::new(), a.load(Relaxed))];
        metric(
            "connections",
            "gauge",
            "Open WebSocket connections.",
            &gauge(&self.connections),
        );
        metric(
            "spaces",
            "gauge",
            "Spaces with at least one connection.",
            &gauge(&self.spaces),
        );
        metric(
            "rooms",
            "gauge",
            "Rooms with at least one connection.",
            &gauge(&self.rooms),
        );
        metric(
            "handshakes_accepted_total",
            "counter",
            "WebSocket handshakes accepted.",
            &counter(&self.accepted),
        );
        let refused: Vec<_> = Refusal::ALL
            .iter()
            .zip(&self.refused)
            .map(|(r, a)| (format!("{{reason=\"{}\"}}", r.label()), a.load(Relaxed)))
            .collect();
        metric(
            "handshakes_refused_total",
            "counter",
            "Requests refused before the upgrade, by reason.",
            &refused,
        );
        let rejections: Vec<_> = self
            .token_rejections
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (format!("{{check=\"{k}\"}}"), *v))
                    .collect()
            })
            .unwrap_or_default();
        metric(
            "token_rejections_total",
            "counter",
            "Refused tokens, by the check that failed.",
            &rejections,
        );
        metric(
            "messages_received_total",
            "counter",
            "Messages received from clients.",
            &counter(&self.received),
        );
        metric(
            "messages_delivered_total",
            "counter",
            "Message copies queued for receivers.",
            &counter(&self.delivered),
        );
        metric(
            "messages_dropped_total",
            "counter",
            "Messages not delivered, by reason.",
            &[
                (
                    "{reason=\"rate_limit\"}".into(),
                    self.dropped_rate.load(Relaxed),
                ),
                (
                    "{reason=\"slow_consumer\"}".into(),
                    self.dropped_slow.load(Relaxed),
                ),
            ],
        );
        let closes: Vec<_> = Close::ALL
            .iter()
            .zip(&self.closes)
            .map(|(c, a)| (format!("{{reason=\"{}\"}}", c.label()), a.load(Relaxed)))
            .collect();
        metric(
            "server_closes_total",
            "counter",
            "Connections closed by the server, by reason.",
            &closes,
        );
        metric(
            "slow_consumer_closes_total",
            "counter",
            "Connections closed because they stopped reading (slow_consumer and write_timeout).",
            &[(
                String::new(),
                self.closed_count(Close::SlowConsumer) + self.closed_count(Close::WriteTimeout),
            )],
        );
        metric(
            "bytes_received_total",
            "counter",
            "Payload bytes received from clients.",
            &counter(&self.bytes_in),
        );
        metric(
            "bytes_sent_total",
            "counter",
            "Payload bytes queued for clients.",
            &counter(&self.bytes_out),
        );
        metric(
            "handshakes_pending",
            "gauge",
            "Sockets accepted and not yet through their handshake.",
            &gauge(&self.pending),
        );
        metric(
            "backplane_up",
            "gauge",
            "1 while Redis is reachable (0 when down or not configured).",
            &gauge(&self.backplane_up),
        );
        metric(
            "backplane_channels",
            "gauge",
            "Redis channels (spaces) subscribed.",
            &gauge(&self.backplane_channels),
        );
        metric(
            "backplane_published_total",
            "counter",
            "Messages sent to the other nodes.",
            &counter(&self.backplane_published),
        );
        metric(
            "backplane_received_total",
            "counter",
            "Messages received from the other nodes and delivered.",
            &counter(&self.backplane_received),
        );
        metric(
            "backplane_dropped_total",
            "counter",
            "Messages not sent to the other nodes (Redis down or slow).",
            &counter(&self.backplane_dropped),
        );
        metric(
            "backplane_reconnects_total",
            "counter",
            "Times the connection to Redis was lost.",
            &counter(&self.backplane_reconnects),
        );
        let refused: Vec<_> = Envelope::ALL
            .iter()
            .zip(&self.backplane_refused)
            .map(|(e, a)| (format!("{{reason=\"{}\"}}", e.label()), a.load(Relaxed)))
            .collect();
        metric(
            "backplane_envelopes_refused_total",
            "counter",
            "Envelopes from Redis refused, by reason (forged, replayed, too big, ...).",
            &refused,
        );
        metric(
            "accept_errors_total",
            "counter",
            "Failed accept() calls (e.g. out of file descriptors).",
            &counter(&self.accept_errors),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_lists_follow_discriminants() {
        for (i, r) in Refusal::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        for (i, c) in Close::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        for (i, e) in Envelope::ALL.iter().enumerate() {
            assert_eq!(*e as usize, i);
        }
    }
}
