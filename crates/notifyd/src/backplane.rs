//! More than one node: Redis pub/sub carries messages between daemons.
//!
//! A node subscribes to a space's channel only while it has members in that space, so
//! it never receives the whole site's traffic. Every envelope names its node of origin
//! (and connection): the origin node delivers to its own raw members directly and to
//! its members of the protocol when the message comes back from Redis with its room
//! sequence, every other node delivers what it receives, and each member gets a
//! message exactly once. While Redis is away, local delivery goes on; the node
//! reconnects with capped exponential backoff and jitter, resubscribes, and reports the
//! backplane down in `/healthz` and the metrics meanwhile.
//!
//! Redis is not trusted: anyone who can `PUBLISH` on it (a Redis shared with other
//! software) could otherwise write into any room. Every envelope carries an HMAC under
//! a key derived from the site's secret, over its channel and its bytes, so it cannot
//! be forged, moved to another space, or altered; it carries its node's sequence number
//! and time, so a recorded one cannot be played again; and one larger than a message
//! may be is refused before anything else is done with it. Each refusal is counted.
//!
//! For the protocol's clients (`tsugi-notify.v1`) Redis also holds, per room: its
//! state (epoch and last sequence, one hash) and its history (a Stream per epoch
//! trimmed to `history_messages`), which expire `history_age_secs` after their last
//! use; and a hash of each node's
//! members of the room, each field a record sealed like the envelopes with its own
//! expiry time, so that a dead node's members leave within `presence_ttl_secs`. One
//! script gives a message its sequence, keeps it and publishes it, so every node sees a
//! room's messages in sequence order. Redis can delete, delay or reorder these; it
//! cannot forge a message or a member.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_tungstenite::tungstenite::protocol::frame::Utf8Bytes;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use tsugi_notify_core::{Keyring, Room, Space, MAX_ROOM_BYTES};

use crate::config::Redis;
use crate::history::HistoryLimits;
use crate::hub::{Change, ConnId, Follow, Hub, Json, Outgoing as RoomOutgoing};
use crate::metrics::{EnvelopeRefusal, Metrics};
use crate::protocol::{
    new_epoch, Identity, Opening, Presence, Resume, Stored, Unlisted, Unrecovered,
};
use crate::Error;

/// Channel name prefix; the rest is the space.
const CHANNEL_PREFIX: &str = "tsugi-notify:";
/// Envelope format version (2: authenticated; 3: with the sender's user after the
/// room). Version 2 is still read.
const VERSION: u8 = 3;
const VERSION_2: u8 = 2;
/// Bytes before the room: version, node, sequence, time, connection, opcode, room length.
const HEADER: usize = 1 + 8 + 8 + 8 + 8 + 1 + 2;
/// Opcode of an envelope carrying a `join`/`leave` frame of the protocol.
const OP_PRESENCE: u8 = 3;
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
pub const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// Joins and leaves taken at once (their rooms' records written in one pipeline).
const FEED_BATCH: usize = 256;
/// How long the publish API and the questions wait for Redis: below the 2 s within
/// which PHP's publish() and presence() give up, so that an answer comes first.
pub const ANSWER_WAIT: Duration = Duration::from_millis(1500);
/// Questions (recovery, presence) waiting for the backplane; past this they are
/// answered "unavailable" at once.
const QUESTIONS: usize = 1024;
/// Fields of a room's hash read at most (one per node): past it, presence is not read
/// (someone else wrote there).
pub const MAX_NODES: usize = 64;
/// The longest sender's user id carried (longer ones go as anonymous, in envelopes and
/// in presence).
pub const MAX_USER_BYTES: usize = 1024;
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
    /// The sender's user (for the protocol's `from`).
    pub from: Option<Arc<str>>,
    /// The message (text or binary), or a protocol frame ([`Envelope::presence`]).
    pub message: Message,
    /// The message is a `join`/`leave` frame for the protocol's members.
    pub presence: bool,
}

impl Envelope {
    /// The largest envelope for messages of at most `max_message_bytes`.
    pub fn max_len(max_message_bytes: usize) -> usize {
        HEADER + MAX_ROOM_BYTES + 2 + MAX_USER_BYTES + max_message_bytes + TAG
    }

    /// `[version][node][seq][sent_ms][conn][opcode][room len u16][room][user len u16]
    /// [user][payload]`, integers big-endian; without the MAC. (User length 0xFFFF: no
    /// user.)
    pub fn encode(&self) -> Option<Vec<u8>> {
        let (opcode, payload): (u8, &[u8]) = match &self.message {
            Message::Text(t) if self.presence => (OP_PRESENCE, t.as_bytes()),
            Message::Text(t) => (1, t.as_bytes()),
            Message::Binary(b) => (2, b),
            _ => return None,
        };
        let room = self.room.as_str().as_bytes();
        let user = self
            .from
            .as_deref()
            .map(str::as_bytes)
            .filter(|u| u.len() <= MAX_USER_BYTES);
        let mut out = Vec::with_capacity(
            HEADER + room.len() + 2 + user.map_or(0, <[u8]>::len) + payload.len() + TAG,
        );
        out.push(VERSION);
        out.extend_from_slice(&self.node.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.sent_ms.to_be_bytes());
        out.extend_from_slice(&self.conn.to_be_bytes());
        out.push(opcode);
        out.extend_from_slice(&u16::try_from(room.len()).ok()?.to_be_bytes());
        out.extend_from_slice(room);
        match user {
            Some(u) => {
                out.extend_from_slice(&u16::try_from(u.len()).ok()?.to_be_bytes());
                out.extend_from_slice(u);
            }
            None => out.extend_from_slice(&u16::MAX.to_be_bytes()),
        }
        out.extend_from_slice(payload);
        Some(out)
    }

    /// Decodes what [`Envelope::encode`] makes; `None` for anything malformed (never
    /// panics on any input).
    pub fn decode(bytes: &[u8]) -> Option<Envelope> {
        if bytes.len() < HEADER || (bytes[0] != VERSION && bytes[0] != VERSION_2) {
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
        let mut rest = &rest[room_len..];
        let mut from = None;
        if bytes[0] == VERSION {
            let len = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?);
            rest = &rest[2..];
            if len != u16::MAX {
                let len = usize::from(len);
                if len > MAX_USER_BYTES || rest.len() < len {
                    return None;
                }
                from = Some(Arc::from(std::str::from_utf8(&rest[..len]).ok()?));
                rest = &rest[len..];
            }
        }
        let payload = Bytes::copy_from_slice(rest);
        let (message, presence) = match opcode {
            1 => (Message::Text(Utf8Bytes::try_from(payload).ok()?), false),
            2 => (Message::Binary(payload), false),
            OP_PRESENCE => (Message::Text(Utf8Bytes::try_from(payload).ok()?), true),
            _ => return None,
        };
        Some(Envelope {
            node,
            seq,
            sent_ms,
            conn,
            room,
            from,
            message,
            presence,
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

/// A key of a room: `tsugi-notify:<space>:<room in hex>:<kind>` (hex has no `:`, so
/// no two rooms share a key).
fn room_key(space: &Space, room: &Room, kind: &str) -> String {
    use std::fmt::Write;
    let mut key = format!("{CHANNEL_PREFIX}{space}:");
    for b in room.as_str().as_bytes() {
        let _ = write!(key, "{b:02x}");
    }
    key.push(':');
    key.push_str(kind);
    key
}

/// The keys of a room's history and members: its state (a hash of the epoch `e` and
/// the last sequence `s`, which go together), its history (a Stream per epoch: the
/// script appends the epoch to `log`) and its members' records.
struct RoomKeys {
    state: String,
    log: String,
    here: String,
}

impl RoomKeys {
    fn new(space: &Space, room: &Room) -> Self {
        RoomKeys {
            state: room_key(space, room, "state"),
            log: room_key(space, room, "log:"),
            here: room_key(space, room, "here"),
        }
    }
}

/// What the scripts share. `state(k)`: the room's epoch and sequence; a state that is
/// not one this daemon wrote (an epoch not of 16 hex digits, a sequence not of at most
/// 15 digits, a key of another type: someone else writes to this Redis) is dropped,
/// and the room starts a new epoch. Numbers are written with `%d` (Lua would write
/// 1e+14). `read_here(k, fields, record, total)`: the members' records,
/// read with bounds since anyone who can write to Redis can write there: none when
/// the hash has more than `fields` fields; only fields named like a node (16 hex
/// digits) with a record of at most `record` bytes, `total` bytes in all.
macro_rules! lua_prelude {
    () => {
        r"
local function valid(e)
  return type(e) == 'string' and #e == 16 and not e:find('[^0-9a-f]')
end
local function state(k)
  local v = redis.pcall('HMGET', k, 'e', 's')
  if type(v) ~= 'table' or v.err then
    redis.call('DEL', k)
    return false, 0
  end
  local raw = v[2] or '0'
  if not valid(v[1]) or type(raw) ~= 'string' or not raw:match('^%d+$') or #raw > 15 then
    if v[1] or v[2] then redis.call('DEL', k) end
    return false, 0
  end
  return v[1], tonumber(raw)
end
local function read_here(k, fields, record, total)
  local out, sum = {}, 0
  local n = redis.pcall('HLEN', k)
  if type(n) ~= 'number' or n > tonumber(fields) then return out end
  local all = redis.call('HGETALL', k)
  for i = 1, #all, 2 do
    local f, v = all[i], all[i + 1]
    if valid(f) and #v <= tonumber(record) then
      sum = sum + #v
      if sum > tonumber(total) then break end
      out[#out + 1] = f
      out[#out + 1] = v
    end
  end
  return out
end
"
    };
}

/// Gives a message its room sequence, keeps it in the room's history and publishes it,
/// in one step, so that subscribers get a room's messages in sequence order. Only rooms
/// with an epoch (a client of the protocol was there lately) count and keep; others just
/// publish. A history that cannot take the message is no longer whole: the epoch ends
/// there. What is published is `S<epoch>:<seq>:<envelope>` (an empty epoch and 0: no
/// sequence).
const PUBLISH_SCRIPT: &str = concat!(
    lua_prelude!(),
    r"
local e, s = state(KEYS[1])
if e then
  s = redis.call('HINCRBY', KEYS[1], 's', 1)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  if tonumber(ARGV[3]) > 0 then
    local log = KEYS[2] .. e
    local r = redis.pcall('XADD', log, 'MAXLEN', ARGV[3], string.format('%d-1', s), 'm', ARGV[2])
    if type(r) == 'table' and r.err then
      redis.call('DEL', KEYS[1], log)
      e, s = false, 0
    else
      redis.call('PEXPIRE', log, ARGV[4])
    end
  end
end
redis.call('PUBLISH', ARGV[1], 'S' .. (e or '') .. ':' .. string.format('%d', s) .. ':' .. ARGV[2])
return {e or '', s}
"
);

/// Removes a dead node's record if it is still the one read, and publishes the
/// `leave` envelopes for its members (ARGV[4..]); returns 1 when it did.
const SWEEP_SCRIPT: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  for i = 4, #ARGV do
    redis.call('PUBLISH', ARGV[3], ARGV[i])
  end
  return 1
end
return 0
";

/// Where a room stands, for a member of the protocol that opens there (and for the
/// refresh, with no resume): the room's state kept alive (a new epoch when it has
/// none: ARGV[1]), its epoch and sequence, the members' records (bounds ARGV[5..7])
/// and, when ARGV[3] (since) is not empty and the history can hold what was missed
/// (at most ARGV[4] messages), the entries after it: each at most ARGV[8] bytes and
/// ARGV[9] in all, else `whole` is 0.
const OPEN_SCRIPT: &str = concat!(
    lua_prelude!(),
    r"
local e, s = state(KEYS[1])
if not e then
  e, s = ARGV[1], 0
  redis.call('HSET', KEYS[1], 'e', e, 's', 0)
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local log = KEYS[2] .. e
redis.call('PEXPIRE', log, ARGV[2])
local here = read_here(KEYS[3], ARGV[5], ARGV[6], ARGV[7])
local entries, whole = {}, 0
local since = tonumber(ARGV[3])
if since and since <= s and s - since <= tonumber(ARGV[4]) then
  whole = 1
  local sum = 0
  if s > since then
    local from, count = string.format('%d-0', since + 1), string.format('%d', s - since)
    for _, entry in ipairs(redis.call('XRANGE', log, from, '+', 'COUNT', count)) do
      local m = entry[2][2]
      if type(m) ~= 'string' or #m > tonumber(ARGV[8]) then whole = 0 break end
      sum = sum + #m
      if sum > tonumber(ARGV[9]) then whole = 0 break end
      entries[#entries + 1] = {entry[1], m}
    end
  end
end
return {e, s, here, entries, whole}
"
);

/// The members' records of a room (the bounds of `read_here`: ARGV[1..3]).
const HERE_SCRIPT: &str = concat!(
    lua_prelude!(),
    r"
return read_here(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
"
);

/// The scripts a session runs.
struct Scripts {
    publish: redis::Script,
    sweep: redis::Script,
    open: redis::Script,
    here: redis::Script,
}

/// A message waiting to go to Redis; it gets its node sequence, time and MAC when it is
/// sent, so that sequences rise in the order Redis sees them.
#[derive(Debug)]
struct Outgoing {
    space: Space,
    env: Envelope,
    /// Told the message's room sequence (the publish API waits for it).
    reply: Option<oneshot::Sender<Option<u64>>>,
}

/// What other tasks ask of Redis.
#[derive(Debug)]
enum Question {
    /// A member of the protocol opens: the room's epoch, sequence, members on other
    /// nodes, and what it missed.
    Open {
        space: Space,
        room: Room,
        resume: Option<Resume>,
        reply: oneshot::Sender<Result<Answer, Lost>>,
    },
    /// The members of a room on other nodes.
    Presence {
        space: Space,
        room: Room,
        reply: oneshot::Sender<Result<Presence, Lost>>,
    },
}

impl Question {
    /// Whoever asked has stopped waiting.
    fn abandoned(&self) -> bool {
        match self {
            Question::Open { reply, .. } => reply.is_closed(),
            Question::Presence { reply, .. } => reply.is_closed(),
        }
    }
}

/// Redis's answer to an [`Question::Open`].
#[derive(Debug)]
struct Answer {
    epoch: String,
    seq: u64,
    others: Presence,
    recovery: Option<Result<Vec<Stored>, Unrecovered>>,
}

/// This node's handle on the backplane.
#[derive(Debug)]
pub struct Backplane {
    node: u64,
    up: AtomicBool,
    /// The first session has come up or failed: until then, a question waits for it
    /// (bounded) rather than being answered as if Redis were away. A client that
    /// reconnects to a daemon just started recovers what it missed.
    tried: AtomicBool,
    settled: tokio::sync::Notify,
    queue: mpsc::Sender<Outgoing>,
    questions: mpsc::Sender<Question>,
    metrics: Arc<Metrics>,
    keyring: Keyring,
    max_message_bytes: usize,
    history: HistoryLimits,
    presence_ttl: Duration,
    presence_max: usize,
    /// Payload bytes in `queue`.
    queued_bytes: AtomicUsize,
    /// When an error reply was last logged (Unix ms).
    soft_warned: AtomicU64,
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

/// What the backplane needs beyond Redis's address.
#[derive(Debug)]
pub struct Setup {
    /// This node's id (its sockets' ids start with it, in hex).
    pub node: u64,
    /// Signs and checks envelopes and records.
    pub keyring: Keyring,
    /// The largest message.
    pub max_message_bytes: usize,
    /// How much history rooms keep.
    pub history: HistoryLimits,
    /// How soon a dead node's members leave.
    pub presence_ttl: Duration,
    /// Sockets a record lists at most (then counts only).
    pub presence_max: usize,
    /// This node's rooms.
    pub hub: Arc<Hub>,
    /// Every join and leave of this node.
    pub feed: mpsc::Receiver<Change>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Cancelled at shutdown.
    pub shutdown: CancellationToken,
}

impl Backplane {
    /// Starts the backplane task; it runs until `shutdown`. Envelopes are signed with
    /// the first secret of `keyring` and accepted under any.
    pub fn start(redis: &Redis, setup: Setup) -> Result<Arc<Backplane>, Error> {
        // rustls (for rediss://) needs a process-wide provider; ring, as the extension's
        // HTTPS client uses. Installing twice is harmless (the first one stays).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = client(redis)?;
        let node = setup.node;
        let (queue, rx) = mpsc::channel(PUBLISH_QUEUE);
        let (questions, asked) = mpsc::channel(QUESTIONS);
        let bp = Arc::new(Backplane {
            node,
            up: AtomicBool::new(false),
            tried: AtomicBool::new(false),
            settled: tokio::sync::Notify::new(),
            queue,
            questions,
            metrics: setup.metrics,
            keyring: setup.keyring,
            max_message_bytes: setup.max_message_bytes,
            history: setup.history,
            presence_ttl: setup.presence_ttl,
            presence_max: setup.presence_max,
            queued_bytes: AtomicUsize::new(0),
            soft_warned: AtomicU64::new(0),
        });
        let queues = Queues {
            rx,
            asked,
            feed: setup.feed,
        };
        tokio::spawn(run(
            client,
            Arc::clone(&bp),
            setup.hub,
            queues,
            setup.shutdown,
        ));
        Ok(bp)
    }

    /// Whether Redis is reachable now.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// This node's id in Redis (hex), the prefix of its connections' ids.
    pub fn node_tag(&self) -> String {
        format!("{:016x}", self.node)
    }

    /// Sends a message to the other nodes (never waits; dropped and counted when the
    /// queue to Redis is full or Redis is down: then false). `reply` is told its room
    /// sequence.
    pub fn publish(
        &self,
        space: &Space,
        room: &Room,
        conn: ConnId,
        from: Option<Arc<str>>,
        message: &Message,
        reply: Option<oneshot::Sender<Option<u64>>>,
    ) -> bool {
        let env = Envelope {
            node: self.node,
            seq: 0,
            sent_ms: 0,
            conn,
            room: room.clone(),
            from,
            message: message.clone(),
            presence: false,
        };
        self.enqueue(space, env, reply)
    }

    /// Queues an envelope for Redis; false (counted) when it is dropped instead.
    fn enqueue(
        &self,
        space: &Space,
        env: Envelope,
        reply: Option<oneshot::Sender<Option<u64>>>,
    ) -> bool {
        if !self.is_up() {
            self.metrics.backplane_dropped();
            return false;
        }
        let len = env.message.len();
        if self.queued_bytes.fetch_add(len, Ordering::Relaxed) + len > PUBLISH_BYTES {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.metrics.backplane_dropped();
            return false;
        }
        let out = Outgoing {
            space: space.clone(),
            env,
            reply,
        };
        if self.queue.try_send(out).is_err() {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.metrics.backplane_dropped();
            return false;
        }
        true
    }

    /// Asks the backplane task, bounded by [`OP_TIMEOUT`]; `None` when Redis is down,
    /// the queue is full or the answer is late.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, Lost>>) -> Question,
    ) -> Option<T> {
        let started = tokio::time::Instant::now();
        if !self.tried.load(Ordering::Acquire) {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if !self.tried.load(Ordering::Acquire) {
                let _ = tokio::time::timeout(ANSWER_WAIT, settled).await;
            }
        }
        if !self.is_up() {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.questions.try_send(make(tx)).ok()?;
        tokio::time::timeout_at(started + ANSWER_WAIT, rx)
            .await
            .ok()?
            .ok()?
            .ok()
    }

    /// Where a room stands for a member of the protocol that joined it on this node
    /// (whose members here are `local`), from Redis; while Redis is away: this node's
    /// members, no history.
    pub async fn open(
        &self,
        space: &Space,
        room: &Room,
        local: Vec<Identity>,
        resume: Option<&Resume>,
    ) -> Opening {
        let answer = self
            .ask(|reply| Question::Open {
                space: space.clone(),
                room: room.clone(),
                resume: resume.cloned(),
                reply,
            })
            .await;
        let (epoch, seq, others, recovery) = match answer {
            Some(a) => (a.epoch, a.seq, a.others, a.recovery),
            None => (
                String::new(),
                0,
                Presence::default(),
                resume.map(|_| Err(Unrecovered::Unavailable)),
            ),
        };
        let mut presence = Presence::of(local);
        presence.merge(others);
        Opening {
            epoch,
            seq,
            presence,
            recovery,
        }
    }

    /// The members of a room on every node (`local`: this node's).
    pub async fn presence(&self, space: &Space, room: &Room, local: Vec<Identity>) -> Presence {
        let others = self
            .ask(|reply| Question::Presence {
                space: space.clone(),
                room: room.clone(),
                reply,
            })
            .await
            .unwrap_or_default();
        let mut presence = Presence::of(local);
        presence.merge(others);
        presence
    }

    /// A message left the publish queue.
    fn dequeued(&self, env: &Envelope) {
        self.queued_bytes
            .fetch_sub(env.message.len(), Ordering::Relaxed);
    }

    /// An envelope from `channel` to deliver, or `None` (counted) when it is forged,
    /// altered, too big, replayed, or out of its time window (this node's own come back
    /// for the sequence Redis gave them, and are checked alike).
    fn accept(&self, channel: &str, bytes: &[u8], seen: &mut Seen) -> Option<Envelope> {
        let checked = Envelope::open(bytes, channel, &self.keyring, self.max_message_bytes)
            .and_then(|env| {
                // This node's own too: they come back in order, and a recording of one
                // must not reach its members of the protocol twice.
                seen.check(env.node, env.seq, env.sent_ms, unix_ms())?;
                Ok(env)
            });
        match checked {
            Ok(env) => Some(env),
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
        if !self.tried.swap(true, Ordering::AcqRel) {
            self.settled.notify_waiters();
        }
    }

    /// The largest record this node writes, and reads: a list of at most
    /// `presence_max` sockets (JSON escapes a byte into at most 6).
    fn max_record(&self) -> usize {
        // A listed socket: its user (at most MAX_USER_BYTES, escaped) and its id.
        self.presence_max
            .saturating_mul(6 * (MAX_USER_BYTES + 64) + 16)
            + 512
    }

    /// The most bytes of records read from one room's hash.
    fn max_here(&self) -> usize {
        self.max_record().saturating_mul(2).max(2 << 20)
    }

    /// This node's record of a room's members, sealed for the room's hash: the sockets,
    /// or their counts only past `presence_max_users`.
    fn record(&self, here_key: &str, members: Vec<Identity>) -> Vec<u8> {
        let expires = unix_ms()
            .saturating_add(u64::try_from(self.presence_ttl.as_millis()).unwrap_or(u64::MAX));
        let part = Presence::of(members);
        let list: Vec<(Option<&str>, &str)> = if part.members.len() <= self.presence_max {
            part.members
                .iter()
                .map(|m| (m.user.as_deref(), &*m.conn))
                .collect()
        } else {
            Vec::new()
        };
        let unlisted = if list.is_empty() {
            part.counts()
        } else {
            Unlisted::default()
        };
        let mut body =
            serde_json::to_vec(&serde_json::json!({ "x": expires, "m": list, "c": unlisted }))
                .unwrap_or_default();
        let len = channel_len(here_key);
        let me = self.node_tag();
        let tag = self
            .keyring
            .sign_backplane(&[&len, here_key.as_bytes(), me.as_bytes(), &body]);
        body.extend_from_slice(&tag);
        body
    }

    /// A record read from a room's hash under `field`: its part of the room and whether
    /// it has expired, or `None` (counted) when it is not authentic or not readable.
    fn open_record(&self, here_key: &str, field: &[u8], bytes: &[u8]) -> Option<(Presence, bool)> {
        #[derive(serde::Deserialize)]
        struct Record {
            x: u64,
            m: Vec<(Option<String>, String)>,
            c: Unlisted,
        }
        let refuse = |why| {
            self.metrics.envelope_refused(why);
            None
        };
        if bytes.len() > self.max_record() {
            return refuse(EnvelopeRefusal::TooBig);
        }
        let Some(split) = bytes.len().checked_sub(TAG) else {
            return refuse(EnvelopeRefusal::BadMac);
        };
        let (body, tag) = bytes.split_at(split);
        // Sealed for this room's hash and the field of the node that wrote it: a record
        // copied to another room or field does not open.
        let len = channel_len(here_key);
        if field.len() != 16
            || !self
                .keyring
                .verify_backplane(&[&len, here_key.as_bytes(), field, body], tag)
        {
            return refuse(EnvelopeRefusal::BadMac);
        }
        let Ok(r) = serde_json::from_slice::<Record>(body) else {
            return refuse(EnvelopeRefusal::Malformed);
        };
        // Its sockets are its own: their ids start with its field.
        if r.m.iter().any(|(_, conn)| {
            !conn.as_bytes().starts_with(field) || conn.as_bytes().get(16) != Some(&b'-')
        }) {
            return refuse(EnvelopeRefusal::Malformed);
        }
        let members =
            r.m.into_iter()
                .map(|(user, conn)| Identity {
                    user: user.map(Arc::from),
                    conn: Arc::from(conn),
                })
                .collect();
        let part = Presence {
            members,
            unlisted: r.c,
        };
        Some((part, r.x <= unix_ms()))
    }
}

/// Full jitter: a random delay up to the current ceiling.
fn jittered(ceiling: Duration) -> Duration {
    let r = RandomState::new().hash_one(std::time::Instant::now()) % 1000;
    ceiling.mul_f64((r as f64 + 1.0) / 1000.0)
}

/// What the backplane task reads besides Redis.
struct Queues {
    rx: mpsc::Receiver<Outgoing>,
    asked: mpsc::Receiver<Question>,
    feed: mpsc::Receiver<Change>,
}

async fn run(
    client: redis::Client,
    bp: Arc<Backplane>,
    hub: Arc<Hub>,
    mut queues: Queues,
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
            s = session(&client, &bp, &hub, &mut queues, &changes, &shutdown, &mut state) => s,
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
        // While down, drop what would have been published (counted), and answer
        // questions "unavailable" (by dropping them).
        while let Ok(out) = queues.rx.try_recv() {
            bp.dequeued(&out.env);
            bp.metrics.backplane_dropped();
            unsent(&bp, &hub, &out.space, &out.env);
        }
        while queues.asked.try_recv().is_ok() {}
        while queues.feed.try_recv().is_ok() {}
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

/// A Redis operation whose error reply concerns only it (a permission the ACL does not
/// give, a key of another type written by someone else): `Ok(None)`, logged at most
/// once a minute, and the session goes on. A lost or late connection ends the session.
async fn soft<T>(
    bp: &Backplane,
    what: &str,
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<Option<T>, Lost> {
    match tokio::time::timeout(OP_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(Some(v)),
        Ok(Err(e))
            if !(e.is_io_error()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_unrecoverable_error()) =>
        {
            let now = unix_ms();
            let last = bp.soft_warned.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= 60_000
                && bp
                    .soft_warned
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                warn!(error = %e, "{what} refused by Redis: presence and history need the \
                    commands and keys of the README's ACL; messages still go between nodes");
            }
            Ok(None)
        }
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

/// A message's room epoch (as a number) and sequence.
type Placed = (u64, u64);

/// The room's epoch and sequence, and the envelope, of what a subscription delivered
/// (`S<epoch>:<seq>:<envelope>`; no sequence for an empty epoch or 0, and for a bare
/// envelope from a node of the previous version). `None` for anything else: an epoch
/// that is not 16 hex digits, a sequence past 2^53.
fn split_published(bytes: &[u8]) -> Option<(Option<Placed>, &[u8])> {
    let Some(rest) = bytes.strip_prefix(b"S") else {
        return Some((None, bytes));
    };
    let colon = rest.iter().position(|&b| b == b':')?;
    let (epoch, rest) = (&rest[..colon], &rest[colon + 1..]);
    let colon = rest.iter().position(|&b| b == b':')?;
    let seq: u64 = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
    let envelope = &rest[colon + 1..];
    if epoch.is_empty() && seq == 0 {
        return Some((None, envelope));
    }
    let epoch = parse_epoch(epoch)?;
    if seq == 0 || seq > crate::protocol::MAX_SEQ {
        return None;
    }
    Some((Some((epoch, seq)), envelope))
}

/// An epoch as this daemon writes them (16 lowercase hex digits), as a number.
pub fn epoch_number(epoch: &str) -> Option<u64> {
    parse_epoch(epoch.as_bytes())
}

/// See [`epoch_number`].
fn parse_epoch(epoch: &[u8]) -> Option<u64> {
    if epoch.len() != 16 || !epoch.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(epoch).ok()?, 16).ok()
}

/// One connected session: returns Ok at shutdown, Err when Redis is lost.
async fn session(
    client: &redis::Client,
    bp: &Backplane,
    hub: &Hub,
    queues: &mut Queues,
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
    let scripts = Scripts {
        publish: redis::Script::new(PUBLISH_SCRIPT),
        sweep: redis::Script::new(SWEEP_SCRIPT),
        open: redis::Script::new(OPEN_SCRIPT),
        here: redis::Script::new(HERE_SCRIPT),
    };
    // Every room's record, now (others may have seen this node's expire and said its
    // members left: they are announced again, as joins are idempotent).
    refresh(bp, hub, &mut conn, &scripts, state).await?;
    bp.set_up(true);
    for (space, room, members) in hub.rooms() {
        let here = members.presence();
        if here.len() <= bp.presence_max {
            for who in &here {
                announce(
                    bp,
                    &space,
                    &room,
                    crate::protocol::membership_frame(true, who),
                );
            }
        }
    }
    info!(
        node = format_args!("{:016x}", bp.node),
        spaces = subscribed.len(),
        "backplane up"
    );
    let mut ping = tokio::time::interval(PING_EVERY);
    let mut refresh_every =
        tokio::time::interval((bp.presence_ttl / 3).max(Duration::from_millis(200)));
    refresh_every.tick().await;
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
            out = queues.rx.recv() => {
                let Some(out) = out else { return Ok(()) };
                bp.dequeued(&out.env);
                state.seq += 1;
                let (space, env) = (out.space.clone(), out.env.clone());
                if let Err(lost) = send(bp, &mut conn, &scripts, out, state.seq).await {
                    // It will not reach Redis: this node's members still get it.
                    unsent(bp, hub, &space, &env);
                    return Err(lost);
                }
                bp.metrics.backplane_published();
            }
            msg = inbound.recv() => {
                let Some(msg) = msg else { return Err(Lost("subscription connection closed".into())) };
                let bytes = msg.get_payload_bytes();
                inbound_bytes.fetch_sub(bytes.len(), Ordering::Relaxed);
                let name = msg.get_channel_name();
                let Some(space) = subscribed.get(name) else { continue };
                let Some((seq, bytes)) = split_published(bytes) else {
                    bp.metrics.envelope_refused(EnvelopeRefusal::Malformed);
                    continue;
                };
                if let Some(env) = bp.accept(name, bytes, &mut state.seen) {
                    deliver(bp, hub, space, &env, seq);
                }
            }
            q = queues.asked.recv() => {
                let Some(q) = q else { return Ok(()) };
                // Nobody waits for it any more (its wait ran out): not asked.
                if q.abandoned() {
                    continue;
                }
                // A room's first member here: subscribed before its history is read,
                // so that nothing falls between the two.
                sync_subscriptions(hub, &bp.metrics, &mut sink, &mut subscribed).await?;
                answer(bp, &mut conn, &scripts, q).await?;
            }
            change = queues.feed.recv() => {
                let Some(change) = change else { return Ok(()) };
                // Every change waiting, at once: the rooms' records are written before
                // their joins and leaves go out, so that whoever hears of a socket finds
                // it in the room's hash too.
                let mut changes = vec![change];
                while changes.len() < FEED_BATCH {
                    match queues.feed.try_recv() {
                        Ok(c) => changes.push(c),
                        Err(_) => break,
                    }
                }
                let rooms: HashSet<(Space, Room)> = changes.iter().map(|c| (c.space.clone(), c.room.clone())).collect();
                write_records(bp, hub, &mut conn, &rooms.into_iter().collect::<Vec<_>>()).await?;
                for change in changes {
                    if let Some(frame) = change.frame {
                        announce(bp, &change.space, &change.room, frame);
                    }
                }
            }
            _ = refresh_every.tick() => refresh(bp, hub, &mut conn, &scripts, state).await?,
        }
    }
}

/// Delivers an envelope from Redis to this node's members of its room: a `join`/`leave`
/// to the protocol's members (this node's own were delivered when they happened); a
/// message to raw members (unless it is this node's own: they had it at once) and, with
/// its room sequence, to the protocol's members.
fn deliver(bp: &Backplane, hub: &Hub, space: &Space, env: &Envelope, seq: Option<Placed>) {
    let own = env.node == bp.node;
    if !own {
        bp.metrics.backplane_received();
    }
    let Some(room) = hub.room(space, &env.room) else {
        return;
    };
    if env.presence {
        if !own {
            room.announce(&env.message, None, &bp.metrics);
        }
        return;
    }
    // The room's stream as this node got it (every sequenced message, this node's own
    // too, followed whoever is in the room): a message at or before the last one is
    // not delivered to the protocol's members again; after a gap (a message dropped
    // here or lost in Redis) or a new epoch they are told to reconnect and recover,
    // first, so that nothing past the gap reaches them before.
    let follow = seq.map_or(Follow::Next, |(epoch, seq)| room.follow(epoch, seq));
    if follow == Follow::Gap {
        room.resync();
    }
    if own && (follow != Follow::Next || !room.has_json()) {
        return;
    }
    // This node's own message comes back for its members of the protocol (and its
    // sender's ack); a message of the publish API (connection 0) is the server's.
    let out = RoomOutgoing {
        sender: (own && env.conn != 0).then_some(env.conn),
        from: env.from.as_ref(),
        server: env.conn == 0,
        msg: &env.message,
    };
    let json = match follow {
        // (Raw members still get another node's message: the envelope check let it in.)
        Follow::Old | Follow::Gap => Json::Defer,
        Follow::Next => Json::Given(seq.map(|(_, s)| s)),
    };
    room.deliver(out, !own, json, &bp.metrics);
}

/// Sends a message (or a `join`/`leave`) to Redis as this node's `seq`-th envelope: a
/// message through the publish script (its room sequence to `reply`), or, when Redis
/// refuses the script, plainly, without a sequence.
async fn send(
    bp: &Backplane,
    conn: &mut redis::aio::MultiplexedConnection,
    scripts: &Scripts,
    out: Outgoing,
    seq: u64,
) -> Result<(), Lost> {
    let Outgoing {
        space,
        mut env,
        reply,
    } = out;
    env.seq = seq;
    env.sent_ms = unix_ms();
    let channel = channel(&space);
    let Some(bytes) = env.seal(&channel, &bp.keyring) else {
        return Ok(());
    };
    let mut room_seq = 0;
    let mut plain = env.presence;
    if !env.presence {
        let keys = RoomKeys::new(&space, &env.room);
        let mut script = scripts.publish.key(&keys.state);
        script
            .key(&keys.log)
            .arg(&channel)
            .arg(&bytes)
            .arg(bp.history.messages)
            .arg(millis(bp.history.age));
        let sequenced: Option<(Vec<u8>, u64)> =
            soft(bp, "publish script", script.invoke_async(conn)).await?;
        match sequenced {
            Some((_, s)) => room_seq = s,
            // Refused (an ACL of an older version, a key someone else wrote): the
            // message still goes, without a sequence.
            None => plain = true,
        }
    }
    if plain {
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(&channel).arg(&bytes);
        let _: i64 = timed("publish", publish.query_async(conn)).await?;
    }
    if let Some(reply) = reply {
        let _ = reply.send((room_seq > 0).then_some(room_seq));
    }
    Ok(())
}

/// Sends a `join`/`leave` frame of this node to the other nodes' members of the room.
fn announce(bp: &Backplane, space: &Space, room: &Room, frame: Message) {
    let env = Envelope {
        node: bp.node,
        seq: 0,
        sent_ms: 0,
        conn: 0,
        room: room.clone(),
        from: None,
        message: frame,
        presence: true,
    };
    bp.enqueue(space, env, None);
}

/// A message of this node that will not reach Redis: its members of the protocol, who
/// were to get it back from Redis with its sequence, get it now without one.
fn unsent(bp: &Backplane, hub: &Hub, space: &Space, env: &Envelope) {
    if env.presence {
        return;
    }
    if let Some(room) = hub.room(space, &env.room) {
        let out = RoomOutgoing {
            sender: (env.conn != 0).then_some(env.conn),
            from: env.from.as_ref(),
            server: env.conn == 0,
            msg: &env.message,
        };
        room.deliver(out, false, Json::Given(None), &bp.metrics);
    }
}

/// What [`OPEN_SCRIPT`] answers: the epoch, the sequence, the members' records (field,
/// record, ...), the history's entries after `since` (id, sealed envelope), and whether
/// those are all of them within the bounds.
struct Opened {
    epoch: String,
    seq: u64,
    here: Vec<Vec<u8>>,
    entries: Vec<(String, Vec<u8>)>,
    whole: bool,
}

/// Runs [`OPEN_SCRIPT`] for a room (`since`: read the history after it); `None` when
/// Redis refused it.
async fn open_room(
    bp: &Backplane,
    conn: &mut redis::aio::MultiplexedConnection,
    scripts: &Scripts,
    keys: &RoomKeys,
    since: Option<u64>,
) -> Result<Option<Opened>, Lost> {
    let since = since.map_or(String::new(), |s| s.to_string());
    // An entry is a sealed envelope: its payload and at most this much around it.
    let overhead = Envelope::max_len(0);
    type Answer = (String, u64, Vec<Vec<u8>>, Vec<(String, Vec<u8>)>, u8);
    let opened: Option<Answer> = soft(
        bp,
        "open",
        scripts
            .open
            .key(&keys.state)
            .key(&keys.log)
            .key(&keys.here)
            .arg(new_epoch())
            .arg(millis(bp.history.age))
            .arg(since)
            .arg(bp.history.messages)
            .arg(MAX_NODES)
            .arg(bp.max_record())
            .arg(bp.max_here())
            .arg(Envelope::max_len(bp.max_message_bytes))
            .arg(
                bp.history
                    .bytes
                    .saturating_add(overhead.saturating_mul(bp.history.messages)),
            )
            .invoke_async(conn),
    )
    .await?;
    Ok(opened.map(|(epoch, seq, here, entries, whole)| Opened {
        epoch,
        seq,
        here,
        entries,
        whole: whole == 1,
    }))
}

/// Milliseconds of a duration, at least 1 (for PEXPIRE).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis().max(1)).unwrap_or(u64::MAX)
}

/// Answers a question from Redis.
async fn answer(
    bp: &Backplane,
    conn: &mut redis::aio::MultiplexedConnection,
    scripts: &Scripts,
    q: Question,
) -> Result<(), Lost> {
    match q {
        Question::Presence { space, room, reply } => {
            let keys = RoomKeys::new(&space, &room);
            let here: Option<Vec<Vec<u8>>> = soft(
                bp,
                "presence",
                scripts
                    .here
                    .key(&keys.here)
                    .arg(MAX_NODES)
                    .arg(bp.max_record())
                    .arg(bp.max_here())
                    .invoke_async(conn),
            )
            .await?;
            let _ = reply.send(match here {
                Some(here) => Ok(others(bp, &keys.here, here)),
                None => Err(Lost("presence refused".into())),
            });
        }
        Question::Open {
            space,
            room,
            resume,
            reply,
        } => {
            let keys = RoomKeys::new(&space, &room);
            let since = resume.as_ref().map(|r| r.since);
            let Some(opened) = open_room(bp, conn, scripts, &keys, since).await? else {
                let _ = reply.send(Err(Lost("open refused".into())));
                return Ok(());
            };
            let recovery = resume.map(|r| recover(bp, &space, &room, &opened, &r));
            let others = others(bp, &keys.here, opened.here);
            let _ = reply.send(Ok(Answer {
                epoch: opened.epoch,
                seq: opened.seq,
                others,
                recovery,
            }));
        }
    }
    Ok(())
}

/// The unexpired members of other nodes in a room's hash.
fn others(bp: &Backplane, here_key: &str, here: Vec<Vec<u8>>) -> Presence {
    let me = bp.node_tag();
    let mut all = Presence::default();
    for pair in here.chunks_exact(2) {
        if pair[0] == me.as_bytes() {
            continue;
        }
        if let Some((part, false)) = bp.open_record(here_key, &pair[0], &pair[1]) {
            all.merge(part);
        }
    }
    all
}

/// What a client that saw `since` of `epoch` missed, from the room's Stream: exactly
/// the messages `since + 1 ..= seq`, authentic, of this room, young enough, or why not.
fn recover(
    bp: &Backplane,
    space: &Space,
    room: &Room,
    opened: &Opened,
    resume: &Resume,
) -> Result<Vec<Stored>, Unrecovered> {
    let seq = opened.seq;
    if resume.epoch.as_deref() != Some(opened.epoch.as_str()) || resume.since > seq {
        return Err(Unrecovered::Epoch);
    }
    if bp.history.messages == 0 {
        return Err(Unrecovered::Unavailable);
    }
    if !opened.whole {
        return Err(Unrecovered::Trimmed);
    }
    let channel = channel(space);
    let oldest = unix_ms().saturating_sub(millis(bp.history.age));
    let mut out = Vec::new();
    let mut bytes = 0;
    // Each node's messages in the order it sent them: a message kept twice, or moved,
    // is not this room's history.
    let mut last_of: HashMap<u64, u64> = HashMap::new();
    for (id, sealed) in &opened.entries {
        let n: Option<u64> = id.split('-').next().and_then(|n| n.parse().ok());
        let Some(n) = n.filter(|&n| n > resume.since && n <= seq) else {
            continue;
        };
        let Ok(env) = Envelope::open(sealed, &channel, &bp.keyring, bp.max_message_bytes) else {
            return Err(Unrecovered::Trimmed);
        };
        let in_order = last_of
            .insert(env.node, env.seq)
            .is_none_or(|before| before < env.seq);
        if env.room != *room || env.presence || env.sent_ms < oldest || !in_order {
            return Err(Unrecovered::Trimmed);
        }
        bytes += env.message.len();
        out.push(Stored {
            seq: Some(n),
            from: env.from,
            server: env.conn == 0,
            payload: env.message,
        });
    }
    // Every message since `since`, one each, in order, within the room's bounds.
    let complete = out.len() as u64 == seq - resume.since
        && out
            .iter()
            .zip(resume.since + 1..)
            .all(|(m, want)| m.seq == Some(want));
    if !complete || bytes > bp.history.bytes {
        return Err(Unrecovered::Trimmed);
    }
    Ok(out)
}

/// Writes this node's record of each room (or removes it when the room has no member
/// here any more).
async fn write_records(
    bp: &Backplane,
    hub: &Hub,
    conn: &mut redis::aio::MultiplexedConnection,
    rooms: &[(Space, Room)],
) -> Result<(), Lost> {
    if rooms.is_empty() {
        return Ok(());
    }
    let me = bp.node_tag();
    let ttl = u64::try_from(bp.presence_ttl.as_millis().max(1)).unwrap_or(u64::MAX) * 2;
    let mut pipe = redis::pipe();
    for (space, room) in rooms {
        let keys = RoomKeys::new(space, room);
        let members = hub
            .room(space, room)
            .map(|r| r.presence())
            .unwrap_or_default();
        if members.is_empty() {
            pipe.cmd("HDEL").arg(&keys.here).arg(&me).ignore();
        } else {
            pipe.cmd("HSET")
                .arg(&keys.here)
                .arg(&me)
                .arg(bp.record(&keys.here, members))
                .ignore();
            pipe.cmd("PEXPIRE").arg(&keys.here).arg(ttl).ignore();
        }
    }
    let _: Option<()> = soft(bp, "presence records", pipe.query_async(conn)).await?;
    Ok(())
}

/// Every `presence_ttl / 3`: writes this node's record of every room it has members
/// in, keeps the history of the protocol's rooms alive, and removes the records of
/// dead nodes there (with a `leave` for each of their members).
async fn refresh(
    bp: &Backplane,
    hub: &Hub,
    conn: &mut redis::aio::MultiplexedConnection,
    scripts: &Scripts,
    state: &mut State,
) -> Result<(), Lost> {
    let rooms = hub.rooms();
    let all: Vec<(Space, Room)> = rooms
        .iter()
        .map(|(s, r, _)| (s.clone(), r.clone()))
        .collect();
    write_records(bp, hub, conn, &all).await?;
    let me = bp.node_tag();
    for (space, room, members) in rooms.iter().filter(|(_, _, m)| m.has_json()) {
        let keys = RoomKeys::new(space, room);
        // The history kept alive (a new epoch if it was lost), the hash read.
        let Some(Opened { here, .. }) = open_room(bp, conn, scripts, &keys, None).await? else {
            continue;
        };
        for pair in here.chunks_exact(2) {
            let (node, record) = (&pair[0], &pair[1]);
            // Never this node's own (a copy of an old one must not make it leave).
            if node.as_slice() == me.as_bytes() {
                continue;
            }
            let Some((gone, true)) = bp.open_record(&keys.here, node, record) else {
                continue;
            };
            // Sealed leaves for the dead node's members, published only if this node
            // is the one that removes the record.
            let channel = channel(space);
            let mut call = scripts.sweep.key(&keys.here);
            call.arg(node).arg(record).arg(&channel);
            let mut leaves = Vec::new();
            for who in gone.members.iter().take(bp.presence_max) {
                state.seq += 1;
                let env = Envelope {
                    node: bp.node,
                    seq: state.seq,
                    sent_ms: unix_ms(),
                    conn: 0,
                    room: room.clone(),
                    from: None,
                    message: crate::protocol::membership_frame(false, who),
                    presence: true,
                };
                if let Some(sealed) = env.seal(&channel, &bp.keyring) {
                    call.arg(sealed);
                    leaves.push(env.message);
                }
            }
            let removed: Option<i64> = soft(bp, "sweep", call.invoke_async(conn)).await?;
            if removed == Some(1) {
                for frame in &leaves {
                    members.announce(frame, None, &bp.metrics);
                }
            }
        }
    }
    Ok(())
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
            from: Some(Arc::from("user 7")),
            message,
            presence: false,
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
