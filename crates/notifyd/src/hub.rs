//! Spaces and rooms: who is in which room of which space, and delivery to this node's
//! members of a room (the rest of fan-out is in `fanout`).
//!
//! A connection joins one room of one space and keeps an `Arc` of its room, so that
//! delivering a message takes only that room's read lock: no global lock and no scan of
//! unrelated clients on the delivery path. The space map's mutex is taken only when a
//! connection joins or leaves. A message is one reference-counted buffer shared by all
//! of its receivers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::Instant;

use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::Message;
use tsugi_notify_core::{Room as RoomName, Space};

use crate::history::{Logs, RoomLog};
use crate::metrics::{Dropped, Metrics};
use crate::outbox::{Outbox, Push, Stop};
use crate::protocol::{ack_frame, membership_frame, message_frame, Identity, Stored};

/// Identifies one connection.
pub type ConnId = u64;

/// One receiver in a room: its outbound queue, through which it is also told to end
/// (when it stops reading, when it must recover, at shutdown).
#[derive(Debug)]
pub struct Member {
    /// The connection.
    pub id: ConnId,
    /// Its outbound queue.
    pub outbox: Arc<Outbox>,
    /// Its user, as presence shows it (`None`: anonymous); its socket's id in presence
    /// is made from the node's tag and `id` when asked for.
    pub user: Option<Arc<str>>,
    /// It speaks the protocol (`tsugi-notify.v1`): it gets JSON frames.
    pub json: bool,
}

impl Member {
    /// Tells it to reconnect and recover: nothing more is written to it (what is queued
    /// is dropped: recovery gives it back), and it closes with 1012.
    fn resync(&self) {
        self.outbox.stop(Stop::Resync);
    }

    /// Queues `msg` counted as `charge` bytes (see [`Outbox::push_charged`]).
    fn push(
        &self,
        msg: &Message,
        seq: u64,
        charge: usize,
        now: Instant,
        metrics: &Metrics,
        d: &mut Delivery,
    ) {
        match self.outbox.push_charged(msg, seq, charge, now) {
            Push::Queued => d.delivered += 1,
            Push::Full => {
                self.outbox.stop(Stop::Slow);
                metrics.dropped(Dropped::SlowConsumer);
                d.slow += 1;
            }
            // The receiver is on its way out.
            Push::Closed => {}
        }
    }
}

/// The members of one room of one space.
#[derive(Debug, Default)]
pub struct Members {
    /// This node's tag, the first part of its sockets' ids.
    tag: Arc<str>,
    members: RwLock<Vec<Member>>,
    /// Members that speak the protocol.
    json: AtomicUsize,
    /// The room's history on this node (without Redis), once a member of the protocol
    /// has been here.
    log: OnceLock<Arc<RoomLog>>,
    /// With Redis: the epoch and last sequence of the room's stream as this node got it.
    stream: Mutex<Option<(u64, u64)>>,
}

/// Where a sequenced message from Redis stands in its room's stream on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// The next one (or the first): delivered.
    Next,
    /// At or before the last one: already delivered, or a recording: not again.
    Old,
    /// After a gap, or of another epoch: the protocol's members are told to reconnect
    /// and recover what fell in the gap (raw members still get the message).
    Gap,
}

/// What a delivery did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Receivers that got the message queued.
    pub delivered: u64,
    /// Receivers whose queue was full (they are being closed).
    pub slow: u64,
    /// The sequence the message got (`None`: none here).
    pub seq: Option<u64>,
}

/// A message on its way to a room.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// The connection that sent it (`None`: the server); it never gets it back.
    pub sender: Option<ConnId>,
    /// The sender's user, for the protocol's `from`.
    pub from: Option<&'a Arc<str>>,
    /// Sent by the server (`POST /publish`), on this node or another.
    pub server: bool,
    /// The payload, as raw members get it.
    pub msg: &'a Message,
}

/// What the protocol's members of a room get of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Json {
    /// The room's log gives the sequence (one node: this one).
    Assign,
    /// Nothing: Redis gives the sequence and the message comes back to this node (or
    /// it came back already: not again).
    Defer,
    /// This sequence (from Redis; `None`: none could be had).
    Given(Option<u64>),
}

impl Members {
    /// Queues `out` for every member but its sender: the payload for raw members (when
    /// `raw`), a `message` frame for the protocol's (as `json` says), and an `ack` to
    /// its sender if that speaks the protocol. Never waits: a full queue marks that
    /// member slow (it is closed) and the others go on.
    pub fn deliver(&self, out: Outgoing<'_>, raw: bool, json: Json, metrics: &Metrics) -> Delivery {
        let mut d = Delivery::default();
        let now = Instant::now();
        let has_json = json != Json::Defer && self.json.load(Ordering::Relaxed) > 0;
        // (Built only for a room with a log or members of the protocol: a raw room's
        // delivery clones nothing.)
        let stored = |seq| Stored {
            seq,
            from: out.from.cloned(),
            server: out.server,
            payload: out.msg.clone(),
        };
        // The log is held while the message is queued: members of a room get its
        // messages in sequence order, whichever task delivers. (Lock order: a room's
        // log, then its members; never the other way.)
        let mut appending = match json {
            Json::Assign => self.log.get().map(|l| l.begin()),
            _ => None,
        };
        let seq = match (json, &mut appending) {
            (Json::Given(seq), _) => seq,
            (Json::Assign, Some(a)) => Some(a.append(stored(None))),
            _ => None,
        };
        d.seq = seq;
        let frame = has_json.then(|| message_frame(&stored(seq), false));
        let seq_key = seq.unwrap_or(0);
        let members = self.members.read().unwrap_or_else(PoisonError::into_inner);
        for m in members.iter() {
            match (&frame, m.json) {
                (Some(_), true) if Some(m.id) == out.sender => {
                    // The sender's ack is no delivery, but a full queue is.
                    let mut ack = Delivery::default();
                    let ack_frame = ack_frame(seq);
                    m.push(&ack_frame, 0, ack_frame.len(), now, metrics, &mut ack);
                    d.slow += ack.slow;
                }
                _ if Some(m.id) == out.sender => {}
                (Some(frame), true) => m.push(frame, seq_key, out.msg.len(), now, metrics, &mut d),
                (None, true) => {}
                (_, false) if raw => m.push(out.msg, 0, out.msg.len(), now, metrics, &mut d),
                (_, false) => {}
            }
        }
        drop(members);
        drop(appending);
        metrics.delivered(d.delivered, out.msg.len());
        d
    }

    /// Queues a frame of the protocol (`join`, `leave`) for its members but `except`.
    pub fn announce(&self, frame: &Message, except: Option<ConnId>, metrics: &Metrics) {
        if self.json.load(Ordering::Relaxed) == 0 {
            return;
        }
        let now = Instant::now();
        let mut d = Delivery::default();
        let members = self.members.read().unwrap_or_else(PoisonError::into_inner);
        for m in members.iter().filter(|m| m.json && Some(m.id) != except) {
            m.push(frame, 0, frame.len(), now, metrics, &mut d);
        }
    }

    /// Places a sequenced message of `epoch` (16 hex digits) in the room's stream.
    pub fn follow(&self, epoch: u64, seq: u64) -> Follow {
        let mut stream = self.stream.lock().unwrap_or_else(PoisonError::into_inner);
        let follow = match *stream {
            Some((e, last)) if e == epoch && seq <= last => return Follow::Old,
            Some((e, last)) if e == epoch && seq == last + 1 => Follow::Next,
            None => Follow::Next,
            Some(_) => Follow::Gap,
        };
        *stream = Some((epoch, seq));
        follow
    }

    /// Member `id` of the protocol opened here where the stream of `epoch` stood at
    /// `seq`. A stream followed already is left as it is (messages up to `seq` may still
    /// be on their way here; the new member skips them itself). A stream of another
    /// epoch ends: the other members of the protocol are sent to recover, and what was
    /// queued for the new one (of the old epoch, as nothing of the new one was followed
    /// yet) is dropped.
    pub fn started_at(&self, epoch: u64, seq: u64, id: ConnId) {
        let mut stream = self.stream.lock().unwrap_or_else(PoisonError::into_inner);
        match *stream {
            Some((e, _)) if e == epoch => {}
            Some(_) => {
                *stream = Some((epoch, seq));
                drop(stream);
                let members = self.members.read().unwrap_or_else(PoisonError::into_inner);
                for m in members.iter().filter(|m| m.json) {
                    if m.id == id {
                        m.outbox.drop_queued();
                    } else {
                        m.resync();
                    }
                }
            }
            None => *stream = Some((epoch, seq)),
        }
    }

    /// Tells the protocol's members to reconnect and recover.
    pub fn resync(&self) {
        let members = self.members.read().unwrap_or_else(PoisonError::into_inner);
        for m in members.iter().filter(|m| m.json) {
            m.resync();
        }
    }

    /// Who is here on this node.
    pub fn presence(&self) -> Vec<Identity> {
        let members = self.members.read().unwrap_or_else(PoisonError::into_inner);
        members
            .iter()
            .map(|m| identity(&self.tag, m.user.as_ref(), m.id))
            .collect()
    }

    /// Whether any member speaks the protocol.
    pub fn has_json(&self) -> bool {
        self.json.load(Ordering::Relaxed) > 0
    }

    /// The room's log on this node, if it has one.
    pub fn log(&self) -> Option<&Arc<RoomLog>> {
        self.log.get()
    }

    /// Members now.
    pub fn len(&self) -> usize {
        self.members
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// True when nobody is in the room.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The spaces, and whether the hub still takes members.
#[derive(Debug, Default)]
struct Spaces {
    map: HashMap<Space, SpaceEntry>,
    /// Shutting down: every member was told, and nobody joins.
    closing: bool,
}

#[derive(Debug, Default)]
struct SpaceEntry {
    connections: usize,
    rooms: HashMap<RoomName, Arc<Members>>,
}

/// Why a join was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The space holds `max_connections_per_space` already.
    SpaceFull,
    /// The server is shutting down.
    Closing,
}

/// The registry of spaces and rooms.
#[derive(Debug)]
pub struct Hub {
    spaces: Mutex<Spaces>,
    max_per_space: usize,
    metrics: Arc<Metrics>,
    /// Signalled when a space gains its first or loses its last member.
    changes: Arc<Notify>,
    /// Rooms' histories (one node; `None` with Redis, which keeps them).
    logs: Option<Arc<Logs>>,
    /// Rooms with more members than this announce no joins and leaves.
    presence_max: usize,
    /// This node's tag, the first part of its sockets' ids in presence.
    tag: Arc<str>,
    /// With Redis: every join and leave, for the other nodes and the room's record.
    feed: Option<mpsc::Sender<Change>>,
}

/// A join or a leave, for the backplane: the room, and the frame its members of the
/// protocol were sent (`None`: the room is over `presence_max_users`).
#[derive(Debug, Clone)]
pub struct Change {
    /// The space.
    pub space: Space,
    /// The room.
    pub room: RoomName,
    /// The `join` or `leave` frame.
    pub frame: Option<Message>,
}

/// Joins and leaves waiting for the backplane; past this they are dropped (the rooms'
/// records, refreshed on a timer, still come right).
const FEED: usize = 16 * 1024;

impl Hub {
    /// An empty hub allowing `max_per_space` connections in one space.
    pub fn new(max_per_space: usize, metrics: Arc<Metrics>) -> Self {
        Hub {
            spaces: Mutex::new(Spaces::default()),
            max_per_space,
            metrics,
            changes: Arc::new(Notify::new()),
            logs: None,
            presence_max: crate::config::Limits::default().presence_max_users,
            tag: Arc::from(crate::protocol::new_epoch()),
            feed: None,
        }
    }

    /// This node's tag (16 hex digits), the first part of its sockets' ids.
    pub fn with_tag(mut self, tag: &str) -> Self {
        self.tag = Arc::from(tag);
        self
    }

    /// Keeps rooms' histories in this node's memory.
    pub fn with_logs(mut self, logs: Arc<Logs>) -> Self {
        self.logs = Some(logs);
        self
    }

    /// Announces joins and leaves in rooms of at most `max` members.
    pub fn with_presence_max(mut self, max: usize) -> Self {
        self.presence_max = max;
        self
    }

    /// Reports every join and leave to the returned queue (for the backplane).
    pub fn with_feed(mut self) -> (Self, mpsc::Receiver<Change>) {
        let (tx, rx) = mpsc::channel(FEED);
        self.feed = Some(tx);
        (self, rx)
    }

    /// The rooms of this node that have members now, and whether any speaks the protocol.
    pub fn rooms(&self) -> Vec<(Space, RoomName, Arc<Members>)> {
        let spaces = self.spaces.lock().unwrap_or_else(PoisonError::into_inner);
        spaces
            .map
            .iter()
            .flat_map(|(s, e)| {
                e.rooms
                    .iter()
                    .map(move |(r, m)| (s.clone(), r.clone(), Arc::clone(m)))
            })
            .collect()
    }

    /// Tells the room's members of the protocol, and the other nodes, that `who` joined
    /// or left.
    fn announce(
        &self,
        space: &Space,
        room_name: &RoomName,
        room: &Members,
        joined: bool,
        who: &Identity,
        id: ConnId,
    ) {
        let frame = (room.len() <= self.presence_max).then(|| membership_frame(joined, who));
        if let Some(f) = &frame {
            room.announce(f, Some(id), &self.metrics);
        }
        if let Some(feed) = &self.feed {
            let change = Change {
                space: space.clone(),
                room: room_name.clone(),
                frame,
            };
            if feed.try_send(change).is_err() {
                self.metrics.backplane_dropped();
            }
        }
    }

    /// Signalled (one stored permit, never lost) when the set of spaces changes.
    pub fn space_changes(&self) -> Arc<Notify> {
        Arc::clone(&self.changes)
    }

    /// The spaces that have members now.
    pub fn spaces(&self) -> Vec<Space> {
        let spaces = self.spaces.lock().unwrap_or_else(PoisonError::into_inner);
        spaces.map.keys().cloned().collect()
    }

    /// Tells every member that the server is shutting down, and takes no more.
    pub fn close_all(&self) {
        let mut spaces = self.spaces.lock().unwrap_or_else(PoisonError::into_inner);
        spaces.closing = true;
        for room in spaces.map.values().flat_map(|e| e.rooms.values()) {
            let members = room.members.read().unwrap_or_else(PoisonError::into_inner);
            for m in members.iter() {
                m.outbox.stop(Stop::Shutdown);
            }
        }
    }

    /// Adds a member to a room, or refuses when its space is full (or the server is
    /// shutting down).
    pub fn join(
        self: &Arc<Self>,
        space: Space,
        room: RoomName,
        member: Member,
    ) -> Result<Membership, Refused> {
        let id = member.id;
        let json = member.json;
        let user = member.user.clone();
        let who = identity(&self.tag, user.as_ref(), id);
        let mut spaces = self.spaces.lock().unwrap_or_else(PoisonError::into_inner);
        if spaces.closing {
            return Err(Refused::Closing);
        }
        let entry = match spaces.map.get_mut(&space) {
            Some(e) => e,
            None => {
                self.metrics.spaces(1);
                self.changes.notify_one();
                spaces.map.entry(space.clone()).or_default()
            }
        };
        if entry.connections >= self.max_per_space {
            if entry.connections == 0 {
                spaces.map.remove(&space);
                self.metrics.spaces(-1);
                self.changes.notify_one();
            }
            return Err(Refused::SpaceFull);
        }
        entry.connections += 1;
        let room_arc = entry
            .rooms
            .entry(room.clone())
            .or_insert_with(|| {
                self.metrics.rooms(1);
                Arc::new(Members {
                    tag: Arc::clone(&self.tag),
                    ..Members::default()
                })
            })
            .clone();
        if let Some(logs) = &self.logs {
            // A room's history starts with its first member of the protocol, and goes on
            // (for raw members' messages too) while the log lives.
            let log = if json {
                Some(logs.get_or_create(&space, &room))
            } else if room_arc.log.get().is_none() {
                logs.find(&space, &room)
            } else {
                None
            };
            if let Some(log) = log {
                let _ = room_arc.log.set(log);
            }
        }
        if json {
            room_arc.json.fetch_add(1, Ordering::Relaxed);
        }
        room_arc
            .members
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(member);
        drop(spaces);
        self.announce(&space, &room, &room_arc, true, &who, id);
        Ok(Membership {
            user,
            hub: Arc::clone(self),
            space,
            room_name: room,
            room: room_arc,
            id,
        })
    }

    /// The room, if anyone is in it (for messages from outside: publish, other nodes).
    pub fn room(&self, space: &Space, room: &RoomName) -> Option<Arc<Members>> {
        let spaces = self.spaces.lock().unwrap_or_else(PoisonError::into_inner);
        spaces.map.get(space)?.rooms.get(room).cloned()
    }

    /// Connections in a space now.
    pub fn connections_in(&self, space: &Space) -> usize {
        let spaces = self.spaces.lock().unwrap_or_else(PoisonError::into_inner);
        spaces.map.get(space).map_or(0, |e| e.connections)
    }

    fn leave(&self, space: &Space, room_name: &RoomName, room: &Members, id: ConnId) {
        let mut spaces = self.spaces.lock().unwrap_or_else(PoisonError::into_inner);
        let mut gone = None;
        let room_empty = {
            let mut members = room.members.write().unwrap_or_else(PoisonError::into_inner);
            if let Some(i) = members.iter().position(|m| m.id == id) {
                let m = members.swap_remove(i);
                if m.json {
                    room.json.fetch_sub(1, Ordering::Relaxed);
                }
                gone = Some(identity(&self.tag, m.user.as_ref(), m.id));
            }
            members.is_empty()
        };
        let Some(entry) = spaces.map.get_mut(space) else {
            return;
        };
        entry.connections = entry.connections.saturating_sub(1);
        if room_empty && entry.rooms.remove(room_name).is_some() {
            self.metrics.rooms(-1);
        }
        if entry.connections == 0 {
            spaces.map.remove(space);
            self.metrics.spaces(-1);
            self.changes.notify_one();
        }
        drop(spaces);
        if let Some(who) = gone {
            self.announce(space, room_name, room, false, &who, id);
        }
    }
}

/// A socket as presence shows it: its user and its id (`<node tag>-<connection, hex>`).
fn identity(tag: &str, user: Option<&Arc<str>>, id: ConnId) -> Identity {
    Identity {
        user: user.cloned(),
        conn: Arc::from(format!("{tag}-{id:x}")),
    }
}

/// A connection's place in a room; leaving is dropping it.
#[derive(Debug)]
pub struct Membership {
    user: Option<Arc<str>>,
    hub: Arc<Hub>,
    space: Space,
    room_name: RoomName,
    room: Arc<Members>,
    id: ConnId,
}

impl Membership {
    /// The room joined.
    pub fn room(&self) -> &Members {
        &self.room
    }
    /// The room's name.
    pub fn room_name(&self) -> &RoomName {
        &self.room_name
    }
    /// The space joined.
    pub fn space(&self) -> &Space {
        &self.space
    }
    /// The connection.
    pub fn id(&self) -> ConnId {
        self.id
    }
    /// Who the connection is, as presence shows it.
    pub fn who(&self) -> Identity {
        identity(&self.room.tag, self.user.as_ref(), self.id)
    }
    /// The connection's user (`None`: anonymous).
    pub fn user(&self) -> Option<&Arc<str>> {
        self.user.as_ref()
    }
    /// The room's members (shared with the hub).
    pub fn members(&self) -> &Arc<Members> {
        &self.room
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.hub
            .leave(&self.space, &self.room_name, &self.room, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tsugi_notify_core::Plaintext;

    fn space(link: &str) -> Space {
        Plaintext::new("https://w", link, None, None)
            .unwrap()
            .space()
    }

    fn member(id: ConnId, cap: usize) -> (Member, Arc<Outbox>) {
        let outbox = Arc::new(Outbox::new(cap, 1 << 20, Duration::from_secs(60)));
        let m = Member {
            id,
            outbox: outbox.clone(),
            user: Some(Arc::from(format!("u{id}"))),
            json: false,
        };
        (m, outbox)
    }

    fn sent(sender: Option<ConnId>, msg: &Message) -> Outgoing<'_> {
        Outgoing {
            sender,
            from: None,
            server: sender.is_none(),
            msg,
        }
    }

    fn texts(o: &Outbox) -> Vec<String> {
        take_all(o)
            .into_iter()
            .map(|m| m.into_text().unwrap().to_string())
            .collect()
    }

    #[test]
    fn the_protocols_members_get_sequenced_frames_acks_and_joins() {
        let metrics = Arc::new(Metrics::default());
        let logs = Arc::new(Logs::new(crate::history::HistoryLimits::default()));
        let hub = Arc::new(Hub::new(10, metrics.clone()).with_logs(logs));
        let (raw, raw_rx) = member(1, 16);
        let (mut j1, j1_rx) = member(2, 16);
        j1.json = true;
        let (mut j2, j2_rx) = member(3, 16);
        j2.json = true;
        let r = RoomName::default();
        let a = hub.join(space("1"), r.clone(), raw).unwrap();
        let b = hub.join(space("1"), r.clone(), j1).unwrap();
        assert!(texts(&j1_rx).is_empty(), "no join frame about itself");
        let c = hub.join(space("1"), r.clone(), j2).unwrap();
        assert_eq!(
            texts(&j1_rx),
            vec![format!(
                r#"{{"type":"join","user":"u3","conn":"{}-3"}}"#,
                hub.tag
            )]
        );
        assert!(
            texts(&raw_rx).is_empty(),
            "raw members get no protocol frames"
        );
        let d = a.room().deliver(
            sent(Some(1), &Message::text("hi")),
            true,
            Json::Assign,
            &metrics,
        );
        assert_eq!(d.seq, Some(1));
        let from = Some(Arc::from("u2"));
        b.room().deliver(
            Outgoing {
                sender: Some(2),
                from: from.as_ref(),
                server: false,
                msg: &Message::text("yo"),
            },
            true,
            Json::Assign,
            &metrics,
        );
        assert_eq!(texts(&raw_rx), vec!["yo"]);
        assert_eq!(
            texts(&j1_rx),
            vec![
                r#"{"type":"message","seq":1,"from":null,"data":"hi"}"#,
                r#"{"type":"ack","seq":2}"#
            ]
        );
        assert_eq!(
            texts(&j2_rx),
            vec![
                r#"{"type":"message","seq":1,"from":null,"data":"hi"}"#,
                r#"{"type":"message","seq":2,"from":"u2","data":"yo"}"#
            ]
        );
        drop(c);
        assert_eq!(
            texts(&j1_rx),
            vec![format!(
                r#"{{"type":"leave","user":"u3","conn":"{}-3"}}"#,
                hub.tag
            )]
        );
        let log = b.members().log().unwrap();
        let (seq, missed) = log.resume(0, Some(log.epoch()));
        assert_eq!((seq, missed.unwrap().len()), (2, 2));
    }

    #[test]
    fn a_room_follows_its_stream_and_sends_its_protocol_members_to_recover_after_a_gap() {
        let metrics = Arc::new(Metrics::default());
        let hub = Arc::new(Hub::new(10, metrics.clone()));
        let (mut j, j_rx) = member(1, 16);
        j.json = true;
        let (raw, raw_rx) = member(2, 16);
        let a = hub.join(space("1"), RoomName::default(), j).unwrap();
        let _b = hub.join(space("1"), RoomName::default(), raw).unwrap();
        let room = a.members();
        // A new member's start does not move a stream followed already.
        assert_eq!(room.follow(7, 1), Follow::Next);
        room.started_at(7, 5, 1);
        assert_eq!(room.follow(7, 2), Follow::Next);
        assert_eq!(room.follow(7, 2), Follow::Old, "a repeat");
        assert_eq!(room.follow(7, 1), Follow::Old, "a recording");
        assert_eq!(j_rx.stopped(), None);
        // A gap: the protocol's members are closed to recover before anything past it.
        assert_eq!(room.follow(7, 5), Follow::Gap);
        room.resync();
        assert_eq!(j_rx.stopped(), Some(Stop::Resync));
        let d = room.deliver(
            sent(None, &Message::text("past the gap")),
            true,
            Json::Defer,
            &metrics,
        );
        assert_eq!(d.delivered, 1);
        assert!(take_all(&j_rx).is_empty());
        assert_eq!(texts(&raw_rx), vec!["past the gap"]);
        // Another epoch is a gap too.
        assert_eq!(room.follow(8, 1), Follow::Gap);
        assert_eq!(room.follow(8, 2), Follow::Next);
    }

    fn take_all(o: &Outbox) -> Vec<Message> {
        let mut v = Vec::new();
        o.take(&mut v, usize::MAX);
        v
    }

    #[test]
    fn delivers_to_others_in_the_same_room_only() {
        let metrics = Arc::new(Metrics::default());
        let hub = Arc::new(Hub::new(10, metrics.clone()));
        let r = |s: &str| RoomName::new(s).unwrap();
        let (m1, rx1) = member(1, 4);
        let (m2, rx2) = member(2, 4);
        let (m3, rx3) = member(3, 4);
        let (m4, rx4) = member(4, 4);
        let a = hub.join(space("1"), r("x"), m1).unwrap();
        let _b = hub.join(space("1"), r("x"), m2).unwrap();
        let _c = hub.join(space("1"), r("01"), m3).unwrap();
        let _d = hub.join(space("2"), r("x"), m4).unwrap();
        let d = a.room().deliver(
            sent(Some(1), &Message::text("hi")),
            true,
            Json::Assign,
            &metrics,
        );
        assert_eq!(
            d,
            Delivery {
                delivered: 1,
                slow: 0,
                seq: None,
            }
        );
        assert_eq!(take_all(&rx2), vec![Message::text("hi")]);
        assert!(
            take_all(&rx1).is_empty() && take_all(&rx3).is_empty() && take_all(&rx4).is_empty()
        );
        assert!(metrics.render().contains("tsugi_notify_rooms 3"));
    }

    #[test]
    fn at_shutdown_every_member_is_told_and_nobody_joins() {
        let metrics = Arc::new(Metrics::default());
        let hub = Arc::new(Hub::new(10, metrics));
        let (m1, rx1) = member(1, 4);
        let (m2, rx2) = member(2, 4);
        let _a = hub.join(space("1"), RoomName::default(), m1).unwrap();
        let _b = hub
            .join(space("2"), RoomName::new("r").unwrap(), m2)
            .unwrap();
        hub.close_all();
        assert_eq!(rx1.stopped(), Some(Stop::Shutdown));
        assert_eq!(rx2.stopped(), Some(Stop::Shutdown));
        let (m3, _) = member(3, 4);
        assert_eq!(
            hub.join(space("1"), RoomName::default(), m3).unwrap_err(),
            Refused::Closing
        );
        // A reader that must recover is told so, whatever it was told before.
        rx1.stop(Stop::Resync);
        assert_eq!(rx1.stopped(), Some(Stop::Resync));
        rx2.stop(Stop::Slow);
        assert_eq!(rx2.stopped(), Some(Stop::Shutdown));
    }

    #[test]
    fn a_full_queue_marks_the_member_slow_and_others_still_receive() {
        let metrics = Arc::new(Metrics::default());
        let hub = Arc::new(Hub::new(10, metrics.clone()));
        let (m1, rx1) = member(1, 1);
        let (m2, rx2) = member(2, 8);
        let a = hub.join(space("1"), RoomName::default(), m1).unwrap();
        let b = hub.join(space("1"), RoomName::default(), m2).unwrap();
        for _ in 0..3 {
            b.room().deliver(
                sent(Some(2), &Message::text("m")),
                true,
                Json::Assign,
                &metrics,
            );
            a.room().deliver(
                sent(None, &Message::text("n")),
                true,
                Json::Assign,
                &metrics,
            );
        }
        assert_eq!(rx1.stopped(), Some(Stop::Slow));
        assert_eq!(take_all(&rx2).len(), 3);
    }

    #[test]
    fn space_cap_and_cleanup() {
        let metrics = Arc::new(Metrics::default());
        let hub = Arc::new(Hub::new(2, metrics.clone()));
        let (m1, ..) = member(1, 1);
        let (m2, ..) = member(2, 1);
        let (m3, ..) = member(3, 1);
        let a = hub.join(space("1"), RoomName::default(), m1).unwrap();
        let b = hub
            .join(space("1"), RoomName::new("r").unwrap(), m2)
            .unwrap();
        assert_eq!(
            hub.join(space("1"), RoomName::default(), m3).unwrap_err(),
            Refused::SpaceFull
        );
        assert_eq!(hub.connections_in(&space("1")), 2);
        drop(a);
        drop(b);
        assert_eq!(hub.connections_in(&space("1")), 0);
        assert!(hub.room(&space("1"), &RoomName::default()).is_none());
        let text = metrics.render();
        assert!(text.contains("tsugi_notify_spaces 0") && text.contains("tsugi_notify_rooms 0"));
    }
}
