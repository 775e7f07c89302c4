//! Spaces and rooms: who is in which room of which space, and delivery to this node's
//! members of a room (the rest of fan-out is in `fanout`).
//!
//! A connection joins one room of one space and keeps an `Arc` of its room, so that
//! delivering a message takes only that room's read lock: no global lock and no scan of
//! unrelated clients on the delivery path. The space map's mutex is taken only when a
//! connection joins or leaves. A message is one reference-counted buffer shared by all
//! of its receivers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tsugi_notify_core::{Room as RoomName, Space};

use crate::metrics::{Dropped, Metrics};
use crate::outbox::{Outbox, Push};

/// Identifies one connection.
pub type ConnId = u64;

/// One receiver in a room: its outbound queue and the switch that closes it when the
/// queue overflows.
#[derive(Debug)]
pub struct Member {
    /// The connection.
    pub id: ConnId,
    /// Its outbound queue.
    pub outbox: Arc<Outbox>,
    /// Cancelled when it stops reading (queue full): it then closes with 1008.
    pub slow: CancellationToken,
}

/// The members of one room of one space.
#[derive(Debug, Default)]
pub struct Members {
    members: RwLock<Vec<Member>>,
}

/// What a delivery did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Receivers that got the message queued.
    pub delivered: u64,
    /// Receivers whose queue was full (they are being closed).
    pub slow: u64,
}

impl Members {
    /// Queues `msg` for every member but `from`. Never waits: a full queue marks that
    /// member slow (it is closed) and the others go on.
    pub fn deliver(&self, from: Option<ConnId>, msg: &Message, metrics: &Metrics) -> Delivery {
        let mut d = Delivery::default();
        let now = Instant::now();
        let members = self.members.read().unwrap_or_else(PoisonError::into_inner);
        for m in members.iter() {
            if Some(m.id) == from {
                continue;
            }
            match m.outbox.push(msg, now) {
                Push::Queued => d.delivered += 1,
                Push::Full => {
                    if !m.slow.is_cancelled() {
                        m.slow.cancel();
                    }
                    metrics.dropped(Dropped::SlowConsumer);
                    d.slow += 1;
                }
                // The receiver is on its way out.
                Push::Closed => {}
            }
        }
        metrics.delivered(d.delivered, msg.len());
        d
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

#[derive(Debug, Default)]
struct SpaceEntry {
    connections: usize,
    rooms: HashMap<RoomName, Arc<Members>>,
}

/// Why a join was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceFull;

/// The registry of spaces and rooms.
#[derive(Debug)]
pub struct Hub {
    spaces: Mutex<HashMap<Space, SpaceEntry>>,
    max_per_space: usize,
    metrics: Arc<Metrics>,
    /// Signalled when a space gains its first or loses its last member.
    changes: Arc<Notify>,
}

impl Hub {
    /// An empty hub allowing `max_per_space` connections in one space.
    pub fn new(max_per_space: usize, metrics: Arc<Metrics>) -> Self {
        Hub {
            spaces: Mutex::new(HashMap::new()),
            max_per_space,
            metrics,
            changes: Arc::new(Notify::new()),
        }
    }

    /// Signalled (one stored permit, never lost) when the set of spaces changes.
    pub fn space_changes(&self) -> Arc<Notify> {
        Arc::clone(&self.changes)
    }

    /// The spaces that have members now.
    pub fn spaces(&self) -> Vec<Space> {
        let spaces = self.spaces.lock().unwrap_or_else(PoisonError::into_inner);
        spaces.keys().cloned().collect()
    }

    /// Adds a member to a room, or refuses when its space is full.
    pub fn join(
        self: &Arc<Self>,
        space: Space,
        room: RoomName,
        member: Member,
    ) -> Result<Membership, SpaceFull> {
        let id = member.id;
        let mut spaces = self.spaces.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = match spaces.get_mut(&space) {
            Some(e) => e,
            None => {
                self.metrics.spaces(1);
                self.changes.notify_one();
                spaces.entry(space.clone()).or_default()
            }
        };
        if entry.connections >= self.max_per_space {
            if entry.connections == 0 {
                spaces.remove(&space);
                self.metrics.spaces(-1);
                self.changes.notify_one();
            }
            return Err(SpaceFull);
        }
        entry.connections += 1;
        let room_arc = entry
            .rooms
            .entry(room.clone())
            .or_insert_with(|| {
                self.metrics.rooms(1);
                Arc::new(Members::default())
            })
            .clone();
        room_arc
            .members
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(member);
        Ok(Membership {
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
        spaces.get(space)?.rooms.get(room).cloned()
    }

    /// Connections in a space now.
    pub fn connections_in(&self, space: &Space) -> usize {
        let spaces = self.spaces.lock().unwrap_or_else(PoisonError::into_inner);
        spaces.get(space).map_or(0, |e| e.connections)
    }

    fn leave(&self, space: &Space, room_name: &RoomName, room: &Members, id: ConnId) {
        let mut spaces = self.spaces.lock().unwrap_or_else(PoisonError::into_inner);
        let room_empty = {
            let mut members = room.members.write().unwrap_or_else(PoisonError::into_inner);
            if let Some(i) = members.iter().position(|m| m.id == id) {
                members.swap_remove(i);
            }
            members.is_empty()
        };
        let Some(entry) = spaces.get_mut(space) else {
            return;
        };
        entry.connections = entry.connections.saturating_sub(1);
        if room_empty && entry.rooms.remove(room_name).is_some() {
            self.metrics.rooms(-1);
        }
        if entry.connections == 0 {
            spaces.remove(space);
            self.metrics.spaces(-1);
            self.changes.notify_one();
        }
    }
}

/// A connection's place in a room; leaving is dropping it.
#[derive(Debug)]
pub struct Membership {
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

    fn member(id: ConnId, cap: usize) -> (Member, Arc<Outbox>, CancellationToken) {
        let outbox = Arc::new(Outbox::new(cap, 1 << 20, Duration::from_secs(60)));
        let slow = CancellationToken::new();
        let m = Member {
            id,
            outbox: outbox.clone(),
            slow: slow.clone(),
        };
        (m, outbox, slow)
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
        let (m1, rx1, _) = member(1, 4);
        let (m2, rx2, _) = member(2, 4);
        let (m3, rx3, _) = member(3, 4);
        let (m4, rx4, _) = member(4, 4);
        let a = hub.join(space("1"), r("x"), m1).unwrap();
        let _b = hub.join(space("1"), r("x"), m2).unwrap();
        let _c = hub.join(space("1"), r("01"), m3).unwrap();
        let _d = hub.join(space("2"), r("x"), m4).unwrap();
        let d = a.room().deliver(Some(1), &Message::text("hi"), &metrics);
        assert_eq!(
            d,
            Delivery {
                delivered: 1,
                slow: 0
            }
        );
        assert_eq!(take_all(&rx2), vec![Message::text("hi")]);
        assert!(
            take_all(&rx1).is_empty() && take_all(&rx3).is_empty() && take_all(&rx4).is_empty()
        );
        assert!(metrics.render().contains("tsugi_notify_rooms 3"));
    }

    #[test]
    fn a_full_queue_marks_the_member_slow_and_others_still_receive() {
        let metrics = Arc::new(Metrics::default());
        let hub = Arc::new(Hub::new(10, metrics.clone()));
        let (m1, _rx1, slow1) = member(1, 1);
        let (m2, rx2, _) = member(2, 8);
        let a = hub.join(space("1"), RoomName::default(), m1).unwrap();
        let b = hub.join(space("1"), RoomName::default(), m2).unwrap();
        for _ in 0..3 {
            b.room().deliver(Some(2), &Message::text("m"), &metrics);
            a.room().deliver(None, &Message::text("n"), &metrics);
        }
        assert!(slow1.is_cancelled());
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
            SpaceFull
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
