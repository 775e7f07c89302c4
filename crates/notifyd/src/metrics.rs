//! Every figure the daemon exports, through `prometheus-client`: typed label sets (one
//! enum per label), the Prometheus text format, the `process_*` figures of the daemon's
//! own process, and histograms where a count hides the story. A counter's update is one
//! atomic add (every labelled counter is made when the daemon starts, so every reason is
//! exported from 0 and counting looks nothing up); a histogram's takes the library's
//! short lock, which is why none is observed per delivery.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tsugi_notify_core::Rejection;

/// The `Content-Type` of what [`Metrics::render`] writes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Why a handshake was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// 429: the sender (a user, or a token) opens sockets faster than its rate of opens
    /// (`messages_per_second`, `burst`, counted apart from its messages: each open costs
    /// every member of the protocol in the room a `join` frame).
    ConnectRate,
    /// Closed before its handshake finished, to make room for newer sockets
    /// (`max_pending_handshakes`, or out of file descriptors): dropped, no response.
    Evicted,
    /// 503: the server is shutting down.
    ShuttingDown,
    /// The request did not arrive within `handshake_timeout_secs` (dropped).
    Timeout,
    /// 400: plain HTTP on a TLS port (`tls_cert` set).
    PlainHttp,
    /// The TLS handshake failed (dropped).
    Tls,
}

impl Refusal {
    const ALL: [Refusal; 17] = [
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
        Refusal::ConnectRate,
        Refusal::Evicted,
        Refusal::ShuttingDown,
        Refusal::Timeout,
        Refusal::PlainHttp,
        Refusal::Tls,
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
            Refusal::ConnectRate => "connect_rate",
            Refusal::Evicted => "evicted",
            Refusal::ShuttingDown => "shutting_down",
            Refusal::Timeout => "timeout",
            Refusal::PlainHttp => "plain_http",
            Refusal::Tls => "tls",
        }
    }
}

/// Why a message from a client was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dropped {
    /// The sender was over its rate.
    RateLimit,
    /// A receiver's queue was full or its oldest message had waited
    /// `write_timeout_secs` (the receiver is then closed).
    SlowConsumer,
}

impl Dropped {
    const ALL: [Dropped; 2] = [Dropped::RateLimit, Dropped::SlowConsumer];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Dropped::RateLimit => "rate_limit",
            Dropped::SlowConsumer => "slow_consumer",
        }
    }
}

/// Why the server closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// 1012: a client of the protocol whose room's stream from Redis had a gap (or a
    /// new epoch): it reconnects and recovers what it missed.
    Resync,
}

impl Close {
    const ALL: [Close; 9] = [
        Close::GoingAway,
        Close::InvalidUtf8,
        Close::RateLimit,
        Close::SlowConsumer,
        Close::TooBig,
        Close::Protocol,
        Close::Idle,
        Close::WriteTimeout,
        Close::Resync,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Close::GoingAway => "going_away",
            Close::InvalidUtf8 => "invalid_utf8",
            Close::RateLimit => "rate_limit",
            Close::SlowConsumer => "slow_consumer",
            Close::TooBig => "too_big",
            Close::Protocol => "protocol",
            Close::Idle => "idle",
            Close::Resync => "resync",
            Close::WriteTimeout => "write_timeout",
        }
    }
}

/// Why an envelope from Redis was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EnvelopeRefusal {
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

impl EnvelopeRefusal {
    const ALL: [EnvelopeRefusal; 6] = [
        EnvelopeRefusal::TooBig,
        EnvelopeRefusal::BadMac,
        EnvelopeRefusal::Malformed,
        EnvelopeRefusal::Stale,
        EnvelopeRefusal::Replayed,
        EnvelopeRefusal::Overload,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            EnvelopeRefusal::TooBig => "too_big",
            EnvelopeRefusal::BadMac => "bad_mac",
            EnvelopeRefusal::Malformed => "malformed",
            EnvelopeRefusal::Stale => "stale",
            EnvelopeRefusal::Replayed => "replayed",
            EnvelopeRefusal::Overload => "overload",
        }
    }
}

/// A reason enum: a label value (its `label()`) in a label set `{reason="..."}` of its
/// own, and the name and help of its counter family.
trait Reason: Copy {
    /// The label set.
    type Label: From<Self> + EncodeLabelSet + Clone + std::fmt::Debug + std::hash::Hash + Eq;
    /// The family's name (without the prefix and `_total`).
    const NAME: &'static str;
    /// The family's help.
    const HELP: &'static str;
}

macro_rules! reason {
    ($($t:ident => $set:ident, $name:literal, $help:literal;)*) => {$(
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(encoder, self.label())
            }
        }

        #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
        struct $set {
            reason: $t,
        }

        impl From<$t> for $set {
            fn from(reason: $t) -> Self {
                $set { reason }
            }
        }

        impl Reason for $t {
            type Label = $set;
            const NAME: &'static str = $name;
            const HELP: &'static str = $help;
        }
    )*};
}

reason! {
    Refusal => RefusalLabel, "handshakes_refused",
        "Requests refused before the upgrade, by reason";
    Dropped => DroppedLabel, "messages_dropped", "Messages not delivered, by reason";
    Close => CloseLabel, "server_closes", "Connections closed by the server, by reason";
    EnvelopeRefusal => EnvelopeLabel, "backplane_envelopes_refused",
        "Envelopes from Redis refused, by reason (forged, replayed, too big, ...)";
}

/// A token check (core's `Rejection`) as a label value: its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Check(Rejection);

impl EncodeLabelValue for Check {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.0.code())
    }
}

/// The label set `{check="..."}`: which token check failed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CheckLabel {
    check: Check,
}

impl From<Check> for CheckLabel {
    fn from(check: Check) -> Self {
        CheckLabel { check }
    }
}

impl Reason for Check {
    type Label = CheckLabel;
    const NAME: &'static str = "token_rejections";
    const HELP: &'static str = "Refused tokens, by the check that failed";
}

/// The label set of `build_info`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Build {
    version: &'static str,
}

type Int = Gauge<i64, AtomicI64>;

/// The counters of a reason family, one per variant, made when the daemon starts so that
/// every reason is exported (at 0 until it happens) and counting takes no lock.
#[derive(Debug)]
struct ByReason<const N: usize>([Counter<u64, AtomicU64>; N]);

impl<const N: usize> ByReason<N> {
    fn new<T: Reason>(registry: &mut Registry, all: [T; N]) -> Self
    where
        T::Label: Send + Sync + 'static,
    {
        let family = Family::<T::Label, Counter>::default();
        let counters = all.map(|reason| family.get_or_create(&T::Label::from(reason)).clone());
        registry.register(T::NAME, T::HELP, family);
        ByReason(counters)
    }
}

/// Every figure the daemon exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections: Int,
    spaces: Int,
    rooms: Int,
    pending: Int,
    accepted: Counter,
    refused: ByReason<{ Refusal::ALL.len() }>,
    token_rejections: ByReason<{ Rejection::ALL.len() }>,
    received: Counter,
    delivered: Counter,
    dropped: ByReason<{ Dropped::ALL.len() }>,
    closes: ByReason<{ Close::ALL.len() }>,
    slow_closes: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
    accept_errors: Counter,
    backplane_up: Int,
    backplane_channels: Int,
    backplane_published: Counter,
    backplane_received: Counter,
    backplane_dropped: Counter,
    backplane_reconnects: Counter,
    backplane_refused: ByReason<{ EnvelopeRefusal::ALL.len() }>,
    handshake_seconds: Histogram,
    queue_wait_seconds: Histogram,
    publish_seconds: Histogram,
    tls_expiry: Int,
    tls_reloads: Counter,
    tls_reload_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Gauges and counters, registered under `registry` as they are made.
struct Maker<'a>(&'a mut Registry);

impl Maker<'_> {
    fn gauge(&mut self, name: &str, help: &str) -> Int {
        let g = Int::default();
        self.0.register(name, help, g.clone());
        g
    }
    fn counter(&mut self, name: &str, help: &str) -> Counter {
        let c = Counter::default();
        self.0.register(name, help, c.clone());
        c
    }
    /// Seconds, from 100 us to about 13 s in doublings (past the 10 s defaults of
    /// `handshake_timeout_secs` and `write_timeout_secs`).
    fn seconds(&mut self, name: &str, help: &str) -> Histogram {
        let h = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        self.0.register(name, help, h.clone());
        h
    }
}

impl Metrics {
    /// Every figure at zero, and the process's own.
    pub fn new() -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(Process::new(PROCESS_REFRESH)));
        let registry = root.sub_registry_with_prefix("tsugi_notify");
        registry.register(
            "build",
            "The daemon's version (always 1)",
            Info::new(Build {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        let refused = ByReason::new(registry, Refusal::ALL);
        let dropped = ByReason::new(registry, Dropped::ALL);
        let closes = ByReason::new(registry, Close::ALL);
        let backplane_refused = ByReason::new(registry, EnvelopeRefusal::ALL);
        let token_rejections = ByReason::new(registry, Rejection::ALL.map(Check));
        let mut m = Maker(registry);
        let metrics = Metrics {
            connections: m.gauge("connections", "Open WebSocket connections"),
            spaces: m.gauge("spaces", "Spaces with at least one connection"),
            rooms: m.gauge("rooms", "Rooms with at least one connection"),
            pending: m.gauge(
                "handshakes_pending",
                "Sockets accepted and not yet through their handshake",
            ),
            accepted: m.counter("handshakes_accepted", "WebSocket handshakes accepted"),
            received: m.counter("messages_received", "Messages received from clients"),
            delivered: m.counter("messages_delivered", "Message copies queued for receivers"),
            slow_closes: m.counter(
                "slow_consumer_closes",
                "Connections closed because they stopped reading (slow_consumer and write_timeout)",
            ),
            bytes_in: m.counter("bytes_received", "Payload bytes received from clients"),
            bytes_out: m.counter("bytes_sent", "Payload bytes queued for clients"),
            accept_errors: m.counter(
                "accept_errors",
                "Failed accept() calls (e.g. out of file descriptors)",
            ),
            backplane_up: m.gauge(
                "backplane_up",
                "1 while Redis is reachable (0 when down or not configured)",
            ),
            backplane_channels: m.gauge("backplane_channels", "Redis channels (spaces) subscribed"),
            backplane_published: m
                .counter("backplane_published", "Messages sent to the other nodes"),
            backplane_received: m.counter(
                "backplane_received",
                "Messages received from the other nodes and delivered",
            ),
            backplane_dropped: m.counter(
                "backplane_dropped",
                "Messages not sent to the other nodes (Redis down or slow)",
            ),
            backplane_reconnects: m.counter(
                "backplane_reconnects",
                "Times the connection to Redis was lost",
            ),
            handshake_seconds: m.seconds(
                "handshake_duration_seconds",
                "From accept to the answer (101 or a refusal) of a /notify request",
            ),
            queue_wait_seconds: m.seconds(
                "queue_wait_seconds",
                "How long the oldest message of a write waited in its receiver's queue (one write in 8 of each connection, the first included)",
            ),
            publish_seconds: m.seconds(
                "publish_duration_seconds",
                "From a POST /publish request's head to its answer",
            ),
            tls_expiry: m.gauge(
                "tls_certificate_expiry_timestamp_seconds",
                "When the TLS certificate in force expires, Unix seconds (0 without TLS)",
            ),
            tls_reloads: m.counter(
                "tls_reloads",
                "New TLS certificates taken (SIGHUP or the files changed)",
            ),
            tls_reload_failures: m.counter(
                "tls_reload_failures",
                "New TLS certificates refused (the one in force stayed)",
            ),
            refused,
            dropped,
            closes,
            backplane_refused,
            token_rejections,
            registry: Registry::default(),
        };
        Metrics {
            registry: root,
            ..metrics
        }
    }

    /// A connection opened: counted until the guard drops.
    pub fn open_connection(self: &Arc<Self>) -> OpenConnection {
        self.connections.inc();
        OpenConnection(Arc::clone(self))
    }
    /// Open WebSocket connections now.
    pub fn connection_count(&self) -> i64 {
        self.connections.get()
    }
    /// A socket entered its handshake: counted until the guard drops.
    pub fn in_handshake(self: &Arc<Self>) -> InHandshake {
        self.pending.inc();
        InHandshake(Arc::clone(self))
    }
    /// A request got its answer (101 or a refusal) this long after it was accepted.
    pub fn handshake_took(&self, took: Duration) {
        self.handshake_seconds.observe(took.as_secs_f64());
    }
    /// The oldest message of a write had waited this long in its receiver's queue.
    pub fn queue_waited(&self, waited: Duration) {
        self.queue_wait_seconds.observe(waited.as_secs_f64());
    }
    /// A `POST /publish` was answered this long after its head arrived.
    pub fn publish_took(&self, took: Duration) {
        self.publish_seconds.observe(took.as_secs_f64());
    }
    /// An envelope from Redis was refused.
    pub fn envelope_refused(&self, why: EnvelopeRefusal) {
        self.backplane_refused.0[why as usize].inc();
    }
    /// How many envelopes were refused for this reason.
    pub fn envelope_refused_count(&self, why: EnvelopeRefusal) -> u64 {
        self.backplane_refused.0[why as usize].get()
    }
    /// A space gained its first (+1) or lost its last (-1) member.
    pub fn spaces(&self, delta: i64) {
        self.spaces.inc_by(delta);
    }
    /// A room gained its first (+1) or lost its last (-1) member.
    pub fn rooms(&self, delta: i64) {
        self.rooms.inc_by(delta);
    }
    /// A WebSocket handshake succeeded.
    pub fn accepted(&self) {
        self.accepted.inc();
    }
    /// A TLS certificate expiring at `not_after` (Unix seconds) is in force.
    pub fn tls_loaded(&self, not_after: i64) {
        self.tls_expiry.set(not_after);
    }
    /// A new TLS certificate was taken (`true`) or refused.
    pub fn tls_reloaded(&self, taken: bool) {
        if taken {
            self.tls_reloads.inc();
        } else {
            self.tls_reload_failures.inc();
        }
    }
    /// A handshake was refused.
    pub fn refused(&self, why: Refusal) {
        self.refused.0[why as usize].inc();
    }
    /// How many handshakes were refused for this reason.
    pub fn refused_count(&self, why: Refusal) -> u64 {
        self.refused.0[why as usize].get()
    }
    /// Which token check failed.
    pub fn token_rejected(&self, why: Rejection) {
        if let Some(i) = Rejection::ALL.iter().position(|r| *r == why) {
            self.token_rejections.0[i].inc();
        }
    }
    /// A message arrived from a client.
    pub fn received(&self, bytes: usize) {
        self.received.inc();
        self.bytes_in.inc_by(bytes as u64);
    }
    /// Copies of a message were queued for `n` receivers.
    pub fn delivered(&self, n: u64, bytes: usize) {
        self.delivered.inc_by(n);
        self.bytes_out.inc_by(n * bytes as u64);
    }
    /// A message was dropped.
    pub fn dropped(&self, why: Dropped) {
        self.dropped.0[why as usize].inc();
    }
    /// The server closed a connection.
    pub fn closed(&self, why: Close) {
        self.closes.0[why as usize].inc();
        if matches!(why, Close::SlowConsumer | Close::WriteTimeout) {
            self.slow_closes.inc();
        }
    }
    /// How many connections were closed for this reason.
    pub fn closed_count(&self, why: Close) -> u64 {
        self.closes.0[why as usize].get()
    }
    /// `accept()` failed (e.g. out of file descriptors).
    pub fn accept_error(&self) {
        self.accept_errors.inc();
    }
    /// The backplane came up (true) or went down (false).
    pub fn backplane_up(&self, up: bool) {
        self.backplane_up.set(i64::from(up));
    }
    /// A message went to Redis.
    pub fn backplane_published(&self) {
        self.backplane_published.inc();
    }
    /// A message came from another node.
    pub fn backplane_received(&self) {
        self.backplane_received.inc();
    }
    /// A message could not go to the other nodes (Redis down or slow).
    pub fn backplane_dropped(&self) {
        self.backplane_dropped.inc();
    }
    /// Redis channels (spaces) subscribed now.
    pub fn backplane_channels(&self, n: usize) {
        self.backplane_channels
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    /// Redis channels subscribed now.
    pub fn backplane_channel_count(&self) -> i64 {
        self.backplane_channels.get()
    }
    /// Whether the backplane is connected.
    pub fn backplane_is_up(&self) -> bool {
        self.backplane_up.get() == 1
    }
    /// The connection to Redis was lost.
    pub fn backplane_reconnect(&self) {
        self.backplane_reconnects.inc();
    }

    /// The Prometheus text exposition format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// An open connection, counted in the gauge until it drops (on every way out,
/// a panic included).
#[derive(Debug)]
pub struct OpenConnection(Arc<Metrics>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections.dec();
    }
}

/// A socket in its handshake, counted in the gauge until it drops.
#[derive(Debug)]
pub struct InHandshake(Arc<Metrics>);

impl Drop for InHandshake {
    fn drop(&mut self) {
        self.0.pending.dec();
    }
}

/// The standard `process_*` figures of this process (the names and units every
/// Prometheus dashboard knows), read from `/proc/self` at most once a second whatever the
/// number of scrapes (listing 20,000 open descriptors takes milliseconds), each figure on
/// its own: one that cannot be read is left out, the others are still exported. Only
/// `/proc/self` is read, which the unit's `ProcSubset=pid` leaves visible.
#[derive(Debug)]
struct Process {
    /// When this process started, in seconds since the epoch (read once).
    start_time: Option<f64>,
    /// How long one reading is served.
    refresh: Duration,
    last: std::sync::Mutex<Option<(std::time::Instant, ProcessStat)>>,
}

/// How long one reading of `/proc/self` is served.
const PROCESS_REFRESH: Duration = Duration::from_secs(1);

/// What `/proc/self` says.
#[derive(Debug, Default, Clone, PartialEq)]
struct ProcessStat {
    cpu_seconds: Option<f64>,
    virtual_bytes: Option<f64>,
    resident_bytes: Option<f64>,
    open_fds: Option<f64>,
    max_fds: Option<f64>,
}

/// `/proc` counts CPU time in USER_HZ ticks, which Linux fixes at 100 for user space
/// on every architecture (what `sysconf(_SC_CLK_TCK)` answers).
const USER_HZ: f64 = 100.0;

/// When the first daemon of this process started serving: `process_start_time_seconds`
/// (read from the clock, not `/proc/stat`, which `ProcSubset=pid` hides).
static STARTED: std::sync::OnceLock<f64> = std::sync::OnceLock::new();

impl Process {
    fn new(refresh: Duration) -> Self {
        let started = *STARTED.get_or_init(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        });
        Process {
            start_time: Some(started),
            refresh,
            last: std::sync::Mutex::new(None),
        }
    }

    fn stat(&self) -> ProcessStat {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*last {
            Some((at, stat)) if at.elapsed() < self.refresh => stat.clone(),
            _ => {
                let stat = ProcessStat::read();
                *last = Some((std::time::Instant::now(), stat.clone()));
                stat
            }
        }
    }
}

impl ProcessStat {
    fn read() -> ProcessStat {
        // `/proc/self/stat` after the command (in parentheses, and it may hold spaces):
        // field n of proc(5) is at index n - 3; utime is 14, stime 15.
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let after = stat
            .rfind(')')
            .and_then(|at| stat.get(at + 2..))
            .unwrap_or("");
        let fields: Vec<&str> = after.split(' ').collect();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        // `/proc/self/status` gives the sizes in kB (no page size needed).
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kib = |key: &str| {
            status.lines().find_map(|l| {
                let rest = l.strip_prefix(key)?.trim().strip_suffix("kB")?;
                rest.trim().parse::<f64>().ok().map(|k| k * 1024.0)
            })
        };
        ProcessStat {
            cpu_seconds: field(14)
                .zip(field(15))
                .map(|(u, s)| (u + s) as f64 / USER_HZ),
            virtual_bytes: kib("VmSize:"),
            resident_bytes: kib("VmRSS:"),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as f64),
            max_fds: rustix::process::getrlimit(rustix::process::Resource::Nofile)
                .current
                .map(|n| n as f64),
        }
    }
}

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let p = self.stat();
        if let Some(cpu) = p.cpu_seconds {
            let counter = ConstCounter::new(cpu);
            counter.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                counter.metric_type(),
            )?)?;
        }
        #[rustfmt::skip]
        let gauges = [
            ("process_start_time_seconds", "Start time of the process since unix epoch in seconds", self.start_time),
            ("process_resident_memory_bytes", "Resident memory size in bytes", p.resident_bytes),
            ("process_virtual_memory_bytes", "Virtual memory size in bytes", p.virtual_bytes),
            ("process_open_fds", "Number of open file descriptors", p.open_fds),
            ("process_max_fds", "Maximum number of open file descriptors", p.max_fds),
        ];
        for (name, help, value) in gauges {
            let Some(value) = value else { continue };
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
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
        for (i, d) in Dropped::ALL.iter().enumerate() {
            assert_eq!(*d as usize, i);
        }
        for (i, c) in Close::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        for (i, e) in EnvelopeRefusal::ALL.iter().enumerate() {
            assert_eq!(*e as usize, i);
        }
    }

    #[test]
    fn every_reason_is_exported_and_counted_under_its_label() {
        let m = Metrics::new();
        m.refused(Refusal::TokenCapacity);
        m.closed(Close::WriteTimeout);
        m.dropped(Dropped::RateLimit);
        m.envelope_refused(EnvelopeRefusal::BadMac);
        m.token_rejected(Rejection::Expired);
        let text = m.render();
        for line in [
            "tsugi_notify_handshakes_refused_total{reason=\"token_capacity\"} 1",
            "tsugi_notify_handshakes_refused_total{reason=\"timeout\"} 0",
            "tsugi_notify_server_closes_total{reason=\"write_timeout\"} 1",
            "tsugi_notify_slow_consumer_closes_total 1",
            "tsugi_notify_messages_dropped_total{reason=\"rate_limit\"} 1",
            "tsugi_notify_backplane_envelopes_refused_total{reason=\"bad_mac\"} 1",
            "tsugi_notify_token_rejections_total{check=\"expired\"} 1",
            "tsugi_notify_connections 0",
            "tsugi_notify_backplane_up 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert!(
            text.contains("tsugi_notify_build_info{version=\""),
            "{text}"
        );
    }

    #[test]
    fn the_process_figures_are_read() {
        let p = ProcessStat::read();
        let (rss, vsz) = (p.resident_bytes.unwrap(), p.virtual_bytes.unwrap());
        assert!(rss > 0.0 && vsz >= rss);
        let (open, max) = (p.open_fds.unwrap(), p.max_fds.unwrap());
        assert!(open >= 3.0 && max >= open);
        assert!(p.cpu_seconds.unwrap() >= 0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let start = Process::new(PROCESS_REFRESH).start_time.unwrap();
        assert!(
            start > now - 86_400.0 && start <= now + 1.0,
            "{start} vs {now}"
        );
        let text = Metrics::new().render();
        for name in [
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_cpu_seconds_total ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }

    #[test]
    fn scrapes_within_a_second_read_proc_once() {
        let p = Process::new(Duration::from_secs(3600));
        let first = p.stat();
        let _many_more_fds: Vec<_> = (0..50)
            .map(|_| std::fs::File::open("/proc/self/stat"))
            .collect();
        assert_eq!(
            p.stat().open_fds,
            first.open_fds,
            "served from the last reading"
        );
    }
}
