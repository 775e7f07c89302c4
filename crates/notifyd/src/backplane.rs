//! More than one node: Redis pub/sub carries messages between daemons.
//!
//! A node subscribes to a space's channel only while it has members in that space, so
//! it never receives the whole site's traffic. Every envelope names its node of origin
//! (and connection), so a node skips its own messages: the origin node delivers to its
//! own members directly, every other node delivers what it receives, and each member
//! gets a message exactly once. While Redis is away, local delivery goes on; the node
//! reconnects with capped exponential backoff and jitter, resubscribes, and reports the
//! backplane down in `/healthz` and the metrics meanwhile.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::protocol::frame::Utf8Bytes;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use tsugi_notify_core::{Room, Space};

use crate::hub::{ConnId, Hub};
use crate::metrics::Metrics;

/// Channel name prefix; the rest is the space.
const CHANNEL_PREFIX: &str = "tsugi-notify:";
/// Envelope format version.
const VERSION: u8 = 1;
/// Messages waiting to be published; more are dropped (and counted) while Redis is slow.
const PUBLISH_QUEUE: usize = 8192;
/// Time allowed for one Redis operation.
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often a live connection is checked with PING.
const PING_EVERY: Duration = Duration::from_secs(2);

/// A message between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The node it came from.
    pub node: u64,
    /// The connection it came from (0 for the publish API).
    pub conn: ConnId,
    /// The room.
    pub room: Room,
    /// The message (text or binary).
    pub message: Message,
}

impl Envelope {
    /// `[version][node u64][conn u64][opcode][room len u16][room][payload]`, big-endian.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let (opcode, payload): (u8, &[u8]) = match &self.message {
            Message::Text(t) => (1, t.as_bytes()),
            Message::Binary(b) => (2, b),
            _ => return None,
        };
        let room = self.room.as_str().as_bytes();
        let mut out = Vec::with_capacity(20 + room.len() + payload.len());
        out.push(VERSION);
        out.extend_from_slice(&self.node.to_be_bytes());
        out.extend_from_slice(&self.conn.to_be_bytes());
        out.push(opcode);
        out.extend_from_slice(&u16::try_from(room.len()).ok()?.to_be_bytes());
        out.extend_from_slice(room);
        out.extend_from_slice(payload);
        Some(out)
    }

    /// Decodes; `None` for anything malformed (never panics on what Redis hands over).
    pub fn decode(bytes: &[u8]) -> Option<Envelope> {
        let (&version, rest) = bytes.split_first()?;
        if version != VERSION || rest.len() < 19 {
            return None;
        }
        let node = u64::from_be_bytes(rest[0..8].try_into().ok()?);
        let conn = u64::from_be_bytes(rest[8..16].try_into().ok()?);
        let opcode = rest[16];
        let room_len = usize::from(u16::from_be_bytes(rest[17..19].try_into().ok()?));
        let rest = &rest[19..];
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
            conn,
            room,
            message,
        })
    }
}

/// The channel of a space.
fn channel(space: &Space) -> String {
    format!("{CHANNEL_PREFIX}{space}")
}

/// This node's handle on the backplane.
#[derive(Debug)]
pub struct Backplane {
    node: u64,
    up: AtomicBool,
    queue: mpsc::Sender<(Space, Vec<u8>)>,
    metrics: Arc<Metrics>,
}

impl Backplane {
    /// Starts the backplane task for `url`; it runs until `shutdown`.
    pub fn start(
        url: &str,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Backplane>> {
        let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("redis url: {e}"))?;
        let node = RandomState::new().hash_one((std::process::id(), std::time::SystemTime::now()));
        let (queue, rx) = mpsc::channel(PUBLISH_QUEUE);
        let bp = Arc::new(Backplane {
            node,
            up: AtomicBool::new(false),
            queue,
            metrics,
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
        let env = Envelope {
            node: self.node,
            conn,
            room: room.clone(),
            message: message.clone(),
        };
        let Some(bytes) = env.encode() else { return };
        if self.queue.try_send((space.clone(), bytes)).is_err() {
            self.metrics.backplane_dropped();
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
    mut rx: mpsc::Receiver<(Space, Vec<u8>)>,
    shutdown: CancellationToken,
) {
    let mut backoff = BACKOFF_MIN;
    let changes = hub.space_changes();
    loop {
        let session = tokio::select! {
            () = shutdown.cancelled() => return,
            s = session(&client, &bp, &hub, &mut rx, &changes, &shutdown) => s,
        };
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
        while rx.try_recv().is_ok() {
            bp.metrics.backplane_dropped();
        }
        let wait = jittered(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        if bp.is_up() {
            backoff = BACKOFF_MIN;
        }
    }
}

async fn timed<T>(
    what: &str,
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(OP_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(anyhow::anyhow!("{what}: {e}")),
        Err(_) => Err(anyhow::anyhow!("{what}: timed out")),
    }
}

/// One connected session: returns Ok at shutdown, Err when Redis is lost.
async fn session(
    client: &redis::Client,
    bp: &Backplane,
    hub: &Hub,
    rx: &mut mpsc::Receiver<(Space, Vec<u8>)>,
    changes: &Notify,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut conn = timed("connect", client.get_multiplexed_async_connection()).await?;
    let pubsub = timed("subscribe connection", client.get_async_pubsub()).await?;
    let (mut sink, mut stream) = pubsub.split();
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
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(()),
            () = changes.notified() => sync_subscriptions(hub, &bp.metrics, &mut sink, &mut subscribed).await?,
            msg = stream.next() => {
                let Some(msg) = msg else { anyhow::bail!("subscription connection closed") };
                let Some(space) = subscribed.get(msg.get_channel_name()) else { continue };
                let Some(env) = Envelope::decode(msg.get_payload_bytes()) else {
                    debug!("malformed envelope ignored");
                    continue;
                };
                if env.node == bp.node {
                    continue;
                }
                bp.metrics.backplane_received();
                if let Some(room) = hub.room(space, &env.room) {
                    room.deliver(None, &env.message, &bp.metrics);
                }
            }
            out = rx.recv() => {
                let Some((space, bytes)) = out else { return Ok(()) };
                let _: i64 = timed("publish", redis::cmd("PUBLISH").arg(channel(&space)).arg(bytes).query_async(&mut conn)).await?;
                bp.metrics.backplane_published();
            }
            _ = ping.tick() => {
                let _: String = timed("ping", redis::cmd("PING").query_async(&mut conn)).await?;
            }
        }
    }
}

/// Subscribes to the spaces that have local members and unsubscribes from the others.
async fn sync_subscriptions(
    hub: &Hub,
    metrics: &Metrics,
    sink: &mut redis::aio::PubSubSink,
    subscribed: &mut HashMap<String, Space>,
) -> anyhow::Result<()> {
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

    #[test]
    fn envelopes_round_trip_and_garbage_is_refused() {
        for message in [Message::text("héllo"), Message::binary(vec![0u8, 255, 7])] {
            let e = Envelope {
                node: 7,
                conn: 9,
                room: Room::new("r ü").unwrap(),
                message,
            };
            assert_eq!(Envelope::decode(&e.encode().unwrap()), Some(e));
        }
        let good = Envelope {
            node: 1,
            conn: 2,
            room: Room::default(),
            message: Message::text("x"),
        }
        .encode()
        .unwrap();
        for n in 0..good.len() {
            let _ = Envelope::decode(&good[..n]);
        }
        let mut bad_utf8 = good.clone();
        *bad_utf8.last_mut().unwrap() = 0xff;
        assert_eq!(Envelope::decode(&bad_utf8), None);
        assert_eq!(Envelope::decode(b""), None);
        assert_eq!(Envelope::decode(&[2; 40]), None);
    }
}
