//! More than one node: Redis pub/sub carries messages between daemons.
//!
//! A node subscribes to a space's channel only while it has members in that space, so
//! it never receives the whole site's traffic. Every envelope names its node of origin
//! (and connection), so a node skips its own messages: the origin node delivers to its
//! own members directly, every other node delivers what it receives, and each member
//! gets a message exactly once. While Redis is away, local delivery goes on; the node
//! reconnects with capped exponential backoff and jitter, resubscribes, and reports the
//! backplane down in `/healthz` and the metrics meanwhile.
//!
//! Redis is not trusted: anyone who can `PUBLISH` on it (a Redis shared with other
//! software) could otherwise write into any room. Every envelope carries an HMAC under
//! a key derived from the site's secret, over its channel and its bytes, so it cannot
//! be forged, moved to another space, or altered; it carries its node's sequence number
//! and time, so a recorded one cannot be played again; and one larger than a message
//! may be is refused before anything else is done with it. Each refusal is counted.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::protocol::frame::Utf8Bytes;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use tsugi_notify_core::{Keyring, Room, Space, MAX_ROOM_BYTES};

use crate::config::Redis;
use crate::hub::{ConnId, Hub};
use crate::metrics::{EnvelopeRefusal, Metrics};
use crate::Error;

/// Channel name prefix; the rest is the space.
const CHANNEL_PREFIX: &str = "tsugi-notify:";
/// Envelope format version (2: authenticated).
const VERSION: u8 = 2;
/// Bytes before the room: version, node, sequence, time, connection, opcode, room length.
const HEADER: usize = 1 + 8 + 8 + 8 + 8 + 1 + 2;
/// The MAC at the end.
const TAG: usize = 32;
/// How far an envelope's time may be from this node's clock (recording window, and the
/// clock difference between nodes that is tolerated).
const WINDOW: Duration = Duration::from_secs(60);
/// Messages waiting to be published, in number and in payload bytes; more are dropped
/// (and counted) while Redis is slow.
const PUBLISH_QUEUE: usize = 8192;
const PUBLISH_BYTES: usize = 16 << 20;
/// Envelopes read from Redis and not yet checked, in number and in bytes: past either
/// they are dropped (counted) rather than read late, so that a flood on a channel never
/// makes this node a slow subscriber that Redis cuts off.
const INBOUND_QUEUE: usize = 4096;
const INBOUND_BYTES: usize = 16 << 20;
/// Time allowed for one Redis operation.
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Envelopes sent up to this long before a node started are still taken (from a peer
/// whose clock is a little behind); earlier ones are refused as recordings.
const START_MARGIN_MS: u64 = 2_000;
/// How often a live connection is checked with PING.
const PING_EVERY: Duration = Duration::from_secs(2);

/// A message between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The node it came from.
    pub node: u64,
    /// Its place in the node's sequence (strictly rising per node).
    pub seq: u64,
    /// When it was sent, in Unix milliseconds.
    pub sent_ms: u64,
    /// The connection it came from (0 for the publish API).
    pub conn: ConnId,
    /// The room.
    pub room: Room,
    /// The message (text or binary).
    pub message: Message,
}

impl Envelope {
    /// The largest envelope for messages of at most `max_message_bytes`.
    pub fn max_len(max_message_bytes: usize) -> usize {
        HEADER + MAX_ROOM_BYTES + max_message_bytes + TAG
    }

    /// `[version][node][seq][sent_ms][conn][opcode][room len u16][room][payload]`,
    /// integers big-endian; without the MAC.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let (opcode, payload): (u8, &[u8]) = match &self.message {
            Message::Text(t) => (1, t.as_bytes()),
            Message::Binary(b) => (2, b),
            _ => return None,
        };
        let room = self.room.as_str().as_bytes();
        let mut out = Vec::with_capacity(HEADER + room.len() + payload.len() + TAG);
        out.push(VERSION);
        out.extend_from_slice(&self.node.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.sent_ms.to_be_bytes());
        out.extend_from_slice(&self.conn.to_be_bytes());
        out.push(opcode);
        out.extend_from_slice(&u16::try_from(room.len()).ok()?.to_be_bytes());
        out.extend_from_slice(room);
        out.extend_from_slice(payload);
        Some(out)
    }

    /// Decodes what [`Envelope::encode`] makes; `None` for anything malformed (never
    /// panics on any input).
    pub fn decode(bytes: &[u8]) -> Option<Envelope> {
        if bytes.len() < HEADER || bytes[0] != VERSION {
            return None;
        }
        let u64_at = |i: usize| bytes.get(i..i + 8)?.try_into().ok().map(u64::from_be_bytes);
        let (node, seq, sent_ms, conn) = (u64_at(1)?, u64_at(9)?, u64_at(17)?, u64_at(25)?);
        let opcode = bytes[33];
        let room_len = usize::from(u16::from_be_bytes(bytes.get(34..36)?.try_into().ok()?));
        let rest = &bytes[HEADER..];
        if rest.len() < room_len {
            return None;
        }
        let room = Room::new(std::str::from_utf8(&rest[..room_len]).ok()?).ok()?;
        let payload = Bytes::copy_from_slice(&rest[room_len..]);
        let message = match opcode {
            1 => Message::Text(Utf8Bytes::try_from(payload).ok()?),
            2 => Message::Binary(payload),
            _ => return None,
        };
        Some(Envelope {
            node,
            seq,
            sent_ms,
            conn,
            room,
            message,
        })
    }

    /// The encoded envelope followed by its MAC over the channel and the bytes.
    pub fn seal(&self, channel: &str, keyring: &Keyring) -> Option<Vec<u8>> {
        let mut bytes = self.encode()?;
        let len = channel_len(channel);
        let tag = keyring.sign_backplane(&[&len, channel.as_bytes(), &bytes]);
        bytes.extend_from_slice(&tag);
        Some(bytes)
    }

    /// Checks and decodes an envelope that arrived on `channel`: its size first (before
    /// any work), then its MAC under any secret, then its form.
    pub fn open(
        bytes: &[u8],
        channel: &str,
        keyring: &Keyring,
        max_message_bytes: usize,
    ) -> Result<Envelope, EnvelopeRefusal> {
        if bytes.len() > Envelope::max_len(max_message_bytes) {
            return Err(EnvelopeRefusal::TooBig);
        }
        let Some(split) = bytes.len().checked_sub(TAG) else {
            return Err(EnvelopeRefusal::BadMac);
        };
        let (body, tag) = bytes.split_at(split);
        let len = channel_len(channel);
        if !keyring.verify_backplane(&[&len, channel.as_bytes(), body], tag) {
            return Err(EnvelopeRefusal::BadMac);
        }
        let env = Envelope::decode(body).ok_or(EnvelopeRefusal::Malformed)?;
        if env.message.len() > max_message_bytes {
            return Err(EnvelopeRefusal::TooBig);
        }
        Ok(env)
    }
}

/// The length of a channel name as the MAC input starts with it, so that no two
/// channel/body pairs give the same input.
fn channel_len(channel: &str) -> [u8; 4] {
    u32::try_from(channel.len())
        .unwrap_or(u32::MAX)
        .to_be_bytes()
}

/// Unix time now in milliseconds.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The highest sequence seen from each node lately, to refuse envelopes played again.
/// Only authentic envelopes (MAC checked) enter it, so it holds one entry per real node
/// seen within the window. Envelopes sent before this node started are refused too: a
/// node that has just restarted remembers no sequence, and must not take a recording.
#[derive(Debug, Default)]
struct Seen {
    nodes: HashMap<u64, (u64, Instant)>,
    since_ms: u64,
}

impl Seen {
    /// Refusing what was sent before `since_ms` (Unix ms: this node's start).
    fn since(since_ms: u64) -> Self {
        Seen {
            nodes: HashMap::new(),
            since_ms,
        }
    }

    /// Accepts an envelope sent at `sent_ms` (Unix ms) with `seq` from `node`, or says
    /// why not; `now_ms` is this node's clock.
    fn check(
        &mut self,
        node: u64,
        seq: u64,
        sent_ms: u64,
        now_ms: u64,
    ) -> Result<(), EnvelopeRefusal> {
        let window = u64::try_from(WINDOW.as_millis()).unwrap_or(u64::MAX);
        if sent_ms.abs_diff(now_ms) > window || sent_ms < self.since_ms {
            return Err(EnvelopeRefusal::Stale);
        }
        let now = Instant::now();
        if self.nodes.len() > 64 {
            self.nodes
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < WINDOW * 2);
        }
        match self.nodes.entry(node) {
            Entry::Occupied(mut e) => {
                if seq <= e.get().0 {
                    return Err(EnvelopeRefusal::Replayed);
                }
                e.insert((seq, now));
            }
            Entry::Vacant(e) => {
                e.insert((seq, now));
            }
        }
        Ok(())
    }
}

/// The channel of a space.
fn channel(space: &Space) -> String {
    format!("{CHANNEL_PREFIX}{space}")
}

/// A message waiting to go to Redis; it gets its sequence, time and MAC when it is
/// sent, so that sequences rise in the order Redis sees them.
type Outgoing = (Space, Envelope);

/// This node's handle on the backplane.
#[derive(Debug)]
pub struct Backplane {
    node: u64,
    up: AtomicBool,
    queue: mpsc::Sender<Outgoing>,
    metrics: Arc<Metrics>,
    keyring: Keyring,
    max_message_bytes: usize,
    /// Payload bytes in `queue`.
    queued_bytes: AtomicUsize,
}

/// A Redis client for these settings: the URL's own user and password, or the password
/// from `password_file`; for `rediss://`, the system's CA store or `ca_file`.
fn client(redis: &Redis) -> Result<redis::Client, Error> {
    use redis::IntoConnectionInfo;
    // The error text of a bad URL is not shown: it could quote the password.
    let bad = |_| Error::Redis("url is not a valid Redis URL".into());
    let mut info = redis.url.as_str().into_connection_info().map_err(bad)?;
    if let Some(pw) = &redis.password {
        let settings = info.redis_settings().clone().set_password(pw);
        info = info.set_redis_settings(settings);
    }
    let client = match &redis.ca_pem {
        Some(pem) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        ),
        None => redis::Client::open(info),
    };
    client.map_err(|e| Error::Redis(format!("{:?}", e.kind())))
}

impl Backplane {
    /// Starts the backplane task; it runs until `shutdown`. Envelopes are signed with
    /// the first secret of `keyring` and accepted under any.
    pub fn start(
        redis: &Redis,
        keyring: Keyring,
        max_message_bytes: usize,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Backplane>, Error> {
        // rustls (for rediss://) needs a process-wide provider; ring, as the extension's
        // HTTPS client uses. Installing twice is harmless (the first one stays).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = client(redis)?;
        let node = RandomState::new().hash_one((std::process::id(), SystemTime::now()));
        let (queue, rx) = mpsc::channel(PUBLISH_QUEUE);
        let bp = Arc::new(Backplane {
            node,
            up: AtomicBool::new(false),
            queue,
            metrics,
            keyring,
            max_message_bytes,
            queued_bytes: AtomicUsize::new(0),
        });
        tokio::spawn(run(client, Arc::clone(&bp), hub, rx, shutdown));
        Ok(bp)
    }

    /// Whether Redis is reachable now.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Sends a message to the other nodes (never waits; dropped and counted when the
    /// queue to Redis is full or Redis is down).
    pub fn publish(&self, space: &Space, room: &Room, conn: ConnId, message: &Message) {
        if !self.is_up() {
            self.metrics.backplane_dropped();
            return;
        }
        let len = message.len();
        if self.queued_bytes.fetch_add(len, Ordering::Relaxed) + len > PUBLISH_BYTES {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.metrics.backplane_dropped();
            return;
        }
        let env = Envelope {
            node: self.node,
            seq: 0,
            sent_ms: 0,
            conn,
            room: room.clone(),
            message: message.clone(),
        };
        if self.queue.try_send((space.clone(), env)).is_err() {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.metrics.backplane_dropped();
        }
    }

    /// A message left the publish queue.
    fn dequeued(&self, env: &Envelope) {
        self.queued_bytes
            .fetch_sub(env.message.len(), Ordering::Relaxed);
    }

    /// An envelope from `channel` to deliver, or `None` (counted) when it is forged,
    /// altered, too big, replayed, out of its time window, or this node's own.
    fn accept(&self, channel: &str, bytes: &[u8], seen: &mut Seen) -> Option<Envelope> {
        let checked = Envelope::open(bytes, channel, &self.keyring, self.max_message_bytes)
            .and_then(|env| {
                if env.node == self.node {
                    return Ok(None);
                }
                seen.check(env.node, env.seq, env.sent_ms, unix_ms())?;
                Ok(Some(env))
            });
        match checked {
            Ok(env) => env,
            Err(why) => {
                self.metrics.envelope_refused(why);
                debug!(?why, "envelope from Redis refused");
                None
            }
        }
    }

    fn set_up(&self, up: bool) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            self.metrics.backplane_up(up);
        }
    }
}

/// Full jitter: a random delay up to the current ceiling.
fn jittered(ceiling: Duration) -> Duration {
    let r = RandomState::new().hash_one(std::time::Instant::now()) % 1000;
    ceiling.mul_f64((r as f64 + 1.0) / 1000.0)
}

async fn run(
    client: redis::Client,
    bp: Arc<Backplane>,
    hub: Arc<Hub>,
    mut rx: mpsc::Receiver<Outgoing>,
    shutdown: CancellationToken,
) {
    let mut backoff = BACKOFF_MIN;
    let changes = hub.space_changes();
    let mut state = State {
        seq: 0,
        seen: Seen::since(unix_ms().saturating_sub(START_MARGIN_MS)),
    };
    loop {
        let session = tokio::select! {
            () = shutdown.cancelled() => return,
            s = session(&client, &bp, &hub, &mut rx, &changes, &shutdown, &mut state) => s,
        };
        // A session that got up starts the next wait from the shortest backoff.
        if bp.up.load(Ordering::Relaxed) {
            backoff = BACKOFF_MIN;
        }
        bp.set_up(false);
        bp.metrics.backplane_channels(0);
        match session {
            Ok(()) => return, // shutdown
            Err(e) => {
                warn!(error = %e, "backplane down; local delivery continues");
                bp.metrics.backplane_reconnect();
            }
        }
        // While down, drop what would have been published (counted).
        while let Ok((_, env)) = rx.try_recv() {
            bp.dequeued(&env);
            bp.metrics.backplane_dropped();
        }
        let wait = jittered(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

async fn timed<T>(
    what: &str,
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, Lost> {
    match tokio::time::timeout(OP_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Lost(format!("{what}: {e}"))),
        Err(_) => Err(Lost(format!("{what}: timed out"))),
    }
}

/// Why a session with Redis ended (logged; local delivery goes on).
#[derive(Debug)]
struct Lost(String);

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What outlives one Redis session: this node's sequence, and what other nodes sent.
#[derive(Debug)]
struct State {
    seq: u64,
    seen: Seen,
}

/// One connected session: returns Ok at shutdown, Err when Redis is lost.
async fn session(
    client: &redis::Client,
    bp: &Backplane,
    hub: &Hub,
    rx: &mut mpsc::Receiver<Outgoing>,
    changes: &Notify,
    shutdown: &CancellationToken,
    state: &mut State,
) -> Result<(), Lost> {
    let mut conn = timed("connect", client.get_multiplexed_async_connection()).await?;
    let pubsub = timed("subscribe connection", client.get_async_pubsub()).await?;
    let (mut sink, stream) = pubsub.split();
    // The subscription is read by a task of its own that only queues, so that Redis
    // always finds this node reading, however long the checks take.
    let (inbound_tx, mut inbound) = mpsc::channel(INBOUND_QUEUE);
    let inbound_bytes = Arc::new(AtomicUsize::new(0));
    let _reader = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(read_subscription(
        stream,
        inbound_tx,
        Arc::clone(&inbound_bytes),
        Arc::clone(&bp.metrics),
    )));
    let mut subscribed: HashMap<String, Space> = HashMap::new();
    sync_subscriptions(hub, &bp.metrics, &mut sink, &mut subscribed).await?;
    bp.set_up(true);
    info!(
        node = format_args!("{:016x}", bp.node),
        spaces = subscribed.len(),
        "backplane up"
    );
    let mut ping = tokio::time::interval(PING_EVERY);
    loop {
        // No branch first (a fair choice among the ready ones): neither a flood of
        // envelopes nor a burst of this node's own messages can starve the other, or
        // the pings (a flood waits in its bounded queue and is dropped past it).
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = changes.notified() => sync_subscriptions(hub, &bp.metrics, &mut sink, &mut subscribed).await?,
            _ = ping.tick() => {
                let _: String = timed("ping", redis::cmd("PING").query_async(&mut conn)).await?;
                // The subscription's own connection too: a half-open one is noticed.
                let _: redis::Value = timed("subscription ping", sink.ping()).await?;
            }
            out = rx.recv() => {
                let Some((space, mut env)) = out else { return Ok(()) };
                bp.dequeued(&env);
                state.seq += 1;
                env.seq = state.seq;
                env.sent_ms = unix_ms();
                let channel = channel(&space);
                let Some(bytes) = env.seal(&channel, &bp.keyring) else { continue };
                let _: i64 = timed("publish", redis::cmd("PUBLISH").arg(&channel).arg(bytes).query_async(&mut conn)).await?;
                bp.metrics.backplane_published();
            }
            msg = inbound.recv() => {
                let Some(msg) = msg else { return Err(Lost("subscription connection closed".into())) };
                let bytes = msg.get_payload_bytes();
                inbound_bytes.fetch_sub(bytes.len(), Ordering::Relaxed);
                let name = msg.get_channel_name();
                let Some(space) = subscribed.get(name) else { continue };
                if let Some(env) = bp.accept(name, bytes, &mut state.seen) {
                    bp.metrics.backplane_received();
                    if let Some(room) = hub.room(space, &env.room) {
                        room.deliver(None, &env.message, &bp.metrics);
                    }
                }
            }
        }
    }
}

/// Moves what the subscription delivers into a bounded queue, dropping (and counting)
/// what does not fit; ends when the subscription does.
async fn read_subscription(
    mut stream: redis::aio::PubSubStream,
    queue: mpsc::Sender<redis::Msg>,
    queued_bytes: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
) {
    while let Some(msg) = stream.next().await {
        let len = msg.get_payload_bytes().len();
        if queued_bytes.fetch_add(len, Ordering::Relaxed) + len > INBOUND_BYTES {
            queued_bytes.fetch_sub(len, Ordering::Relaxed);
            metrics.envelope_refused(EnvelopeRefusal::Overload);
            continue;
        }
        if queue.try_send(msg).is_err() {
            queued_bytes.fetch_sub(len, Ordering::Relaxed);
            metrics.envelope_refused(EnvelopeRefusal::Overload);
        }
    }
}

/// Subscribes to the spaces that have local members and unsubscribes from the others.
async fn sync_subscriptions(
    hub: &Hub,
    metrics: &Metrics,
    sink: &mut redis::aio::PubSubSink,
    subscribed: &mut HashMap<String, Space>,
) -> Result<(), Lost> {
    let wanted: HashSet<Space> = hub.spaces().into_iter().collect();
    let stale: Vec<String> = subscribed
        .iter()
        .filter(|(_, s)| !wanted.contains(*s))
        .map(|(c, _)| c.clone())
        .collect();
    for c in stale {
        timed("unsubscribe", sink.unsubscribe(&c)).await?;
        subscribed.remove(&c);
    }
    for space in wanted {
        if let Entry::Vacant(slot) = subscribed.entry(channel(&space)) {
            timed("subscribe", sink.subscribe(slot.key())).await?;
            slot.insert(space);
        }
    }
    metrics.backplane_channels(subscribed.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(message: Message) -> Envelope {
        Envelope {
            node: 7,
            seq: 3,
            sent_ms: unix_ms(),
            conn: 9,
            room: Room::new("r ü").unwrap(),
            message,
        }
    }

    #[test]
    fn envelopes_round_trip_and_garbage_is_refused() {
        for message in [Message::text("héllo"), Message::binary(vec![0u8, 255, 7])] {
            let e = env(message);
            assert_eq!(Envelope::decode(&e.encode().unwrap()), Some(e));
        }
        let good = env(Message::text("x")).encode().unwrap();
        for n in 0..good.len() {
            let _ = Envelope::decode(&good[..n]);
        }
        let mut bad_utf8 = good.clone();
        *bad_utf8.last_mut().unwrap() = 0xff;
        assert_eq!(Envelope::decode(&bad_utf8), None);
        assert_eq!(Envelope::decode(b""), None);
        assert_eq!(
            Envelope::decode(&[1; 40]),
            None,
            "version 1 (unsigned) is gone"
        );
    }

    #[test]
    fn only_sealed_envelopes_open_on_their_own_channel() {
        let keys = Keyring::new(["site-secret"]).unwrap();
        let e = env(Message::text("hello"));
        let sealed = e.seal("tsugi-notify:a", &keys).unwrap();
        assert_eq!(
            Envelope::open(&sealed, "tsugi-notify:a", &keys, 100),
            Ok(e.clone())
        );
        // Another space's channel, another secret, one changed byte, no MAC at all.
        assert_eq!(
            Envelope::open(&sealed, "tsugi-notify:b", &keys, 100),
            Err(EnvelopeRefusal::BadMac)
        );
        let other = Keyring::new(["other"]).unwrap();
        assert_eq!(
            Envelope::open(&sealed, "tsugi-notify:a", &other, 100),
            Err(EnvelopeRefusal::BadMac)
        );
        for i in 0..sealed.len() {
            let mut forged = sealed.clone();
            forged[i] ^= 1;
            assert_eq!(
                Envelope::open(&forged, "tsugi-notify:a", &keys, 100),
                Err(EnvelopeRefusal::BadMac),
                "byte {i}"
            );
        }
        let plain = e.encode().unwrap();
        assert_eq!(
            Envelope::open(&plain, "tsugi-notify:a", &keys, 100),
            Err(EnvelopeRefusal::BadMac)
        );
        // Rotation: sealed under the old secret, opened by a node holding both.
        let rotated = Keyring::new(["new-secret", "site-secret"]).unwrap();
        assert!(Envelope::open(&sealed, "tsugi-notify:a", &rotated, 100).is_ok());
        // An authentic envelope whose message is over the limit (within the envelope
        // bound, which allows for the longest room) is refused after the MAC...
        let big = env(Message::text("x".repeat(200)))
            .seal("tsugi-notify:a", &keys)
            .unwrap();
        assert_eq!(
            Envelope::open(&big, "tsugi-notify:a", &keys, 100),
            Err(EnvelopeRefusal::TooBig)
        );
        // ... and anything longer than the bound before any work at all.
        let huge = vec![0u8; Envelope::max_len(100) + 1];
        assert_eq!(
            Envelope::open(&huge, "tsugi-notify:a", &keys, 100),
            Err(EnvelopeRefusal::TooBig)
        );
    }

    #[test]
    fn an_authentic_envelope_that_does_not_decode_is_malformed() {
        let keys = Keyring::new(["site-secret"]).unwrap();
        let channel = "tsugi-notify:a";
        let mut body = env(Message::text("x")).encode().unwrap();
        body[33] = 9; // no such opcode
        let len = channel_len(channel);
        let tag = keys.sign_backplane(&[&len, channel.as_bytes(), &body]);
        body.extend_from_slice(&tag);
        assert_eq!(
            Envelope::open(&body, channel, &keys, 100),
            Err(EnvelopeRefusal::Malformed)
        );
    }

    #[test]
    fn replays_and_stale_envelopes_are_refused() {
        let mut seen = Seen::default();
        let now = unix_ms();
        assert_eq!(seen.check(1, 5, now, now), Ok(()));
        assert_eq!(seen.check(1, 5, now, now), Err(EnvelopeRefusal::Replayed));
        assert_eq!(seen.check(1, 4, now, now), Err(EnvelopeRefusal::Replayed));
        assert_eq!(seen.check(1, 6, now, now), Ok(()));
        assert_eq!(seen.check(2, 1, now, now), Ok(()), "nodes are apart");
        assert_eq!(
            seen.check(3, 1, now - 61_000, now),
            Err(EnvelopeRefusal::Stale)
        );
        assert_eq!(
            seen.check(3, 1, now + 61_000, now),
            Err(EnvelopeRefusal::Stale)
        );
        assert_eq!(seen.check(3, 1, now - 59_000, now), Ok(()));
        // After a restart: nothing sent before it, however fresh its sequence.
        let mut restarted = Seen::since(now);
        assert_eq!(
            restarted.check(1, 99, now - 1_000, now),
            Err(EnvelopeRefusal::Stale)
        );
        assert_eq!(restarted.check(1, 99, now, now), Ok(()));
    }
}
