//! Fan-out, written once: a message from a connection and one from `POST /publish` both
//! go to [`Fanout::broadcast`], which queues it for this node's members of the room and
//! hands it to the backplane for the other nodes. (What arrives from the backplane is
//! delivered to this node's members only: it was broadcast where it came from.)
//!
//! The protocol's members (`tsugi-notify.v1`) get each message with its room sequence:
//! on one node the room's log gives it, at once; with Redis, Redis gives it and the
//! message reaches them when it comes back from Redis, on every node alike, so that
//! every node delivers a room's messages in one order. Raw members get the payload at
//! once either way. [`Fanout::open`] tells a new member of the protocol where the room
//! stands (epoch, sequence, presence) and what it missed.

use std::sync::Arc;

use tokio_tungstenite::tungstenite::Message;
use tsugi_notify_core::{Room, Space};

use crate::backplane::Backplane;
use crate::hub::{Delivery, Hub, Json, Membership, Outgoing};
use crate::metrics::Metrics;
use crate::protocol::{Opening, Presence, Resume, Unrecovered};

/// Who sends a broadcast.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// A connection: to the other members of its room (never back to it).
    Member(&'a Membership),
    /// The server (`POST /publish`): to every member of this room of this space.
    Server {
        /// The space.
        space: &'a Space,
        /// The room.
        room: &'a Room,
    },
}

/// This node's rooms and, when Redis is configured, the other nodes.
#[derive(Debug)]
pub struct Fanout {
    hub: Arc<Hub>,
    backplane: Option<Arc<Backplane>>,
    metrics: Arc<Metrics>,
}

impl Fanout {
    /// Fan-out over `hub` and, if given, the backplane.
    pub fn new(hub: Arc<Hub>, backplane: Option<Arc<Backplane>>, metrics: Arc<Metrics>) -> Self {
        Fanout {
            hub,
            backplane,
            metrics,
        }
    }

    /// The rooms of this node.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The backplane, when Redis is configured.
    pub fn backplane(&self) -> Option<&Backplane> {
        self.backplane.as_deref()
    }

    /// Sends `msg` to every member of the room but its sender, on this node and on the
    /// others; returns what this node's delivery did. Never waits.
    pub fn broadcast(&self, from: Source<'_>, msg: &Message) -> Delivery {
        self.send(from, msg, None)
    }

    fn send(
        &self,
        from: Source<'_>,
        msg: &Message,
        reply: Option<tokio::sync::oneshot::Sender<Option<u64>>>,
    ) -> Delivery {
        // A member holds its room: no lookup (nor a reference count) on a connection's
        // path; the server's message looks its room up.
        let looked_up;
        let (space, room, members, out) = match from {
            Source::Member(m) => {
                let out = Outgoing {
                    sender: Some(m.id()),
                    from: m.user(),
                    server: false,
                    msg,
                };
                (m.space(), m.room_name(), Some(m.room()), out)
            }
            Source::Server { space, room } => {
                let out = Outgoing {
                    sender: None,
                    from: None,
                    server: true,
                    msg,
                };
                looked_up = self.hub.room(space, room);
                (space, room, looked_up.as_deref(), out)
            }
        };
        // What this node's members of the protocol get now: a sequence from the room's
        // log (one node); with Redis, nothing while the message is on its way there (it
        // comes back with its sequence), or the message without one when it will not
        // reach Redis (down, or its queue full). So it goes to Redis first.
        let (json, reply) = match &self.backplane {
            None => (Json::Assign, reply),
            Some(bp) => {
                let user = out.from.cloned();
                let sender = out.sender.unwrap_or(0);
                if bp.publish(space, room, sender, user, msg, reply) {
                    (Json::Defer, None)
                } else {
                    (Json::Given(None), None)
                }
            }
        };
        let d = members.map_or(Delivery::default(), |r| {
            r.deliver(out, true, json, &self.metrics)
        });
        if let Some(reply) = reply {
            let _ = reply.send(d.seq);
        }
        d
    }

    /// A message from the server (`POST /publish`): delivered as [`Fanout::broadcast`]
    /// does; returns how many members of this node got it, and its sequence once known
    /// (with Redis, when Redis gave it; `None` when it has none).
    pub async fn publish(&self, space: &Space, room: &Room, msg: &Message) -> (u64, Option<u64>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let d = self.send(Source::Server { space, room }, msg, Some(tx));
        let seq = tokio::time::timeout(crate::backplane::ANSWER_WAIT, rx)
            .await
            .ok()
            .and_then(Result::ok)
            .flatten();
        (d.delivered, seq)
    }

    /// Where the room stands for a member of the protocol that has just joined: its
    /// epoch and sequence, who is in it, and what the member missed since `resume`.
    pub async fn open(&self, m: &Membership, resume: Option<&Resume>) -> Opening {
        let local = m.members().presence();
        let Some(bp) = &self.backplane else {
            let presence = Presence::of(local);
            // Without Redis the hub gave every room of the protocol a log.
            let Some(log) = m.members().log() else {
                return Opening {
                    epoch: String::new(),
                    seq: 0,
                    presence,
                    recovery: resume.map(|_| Err(Unrecovered::Unavailable)),
                };
            };
            let (seq, recovery) = match resume {
                Some(r) => {
                    let (seq, got) = log.resume(r.since, r.epoch.as_deref());
                    (seq, Some(got))
                }
                None => (log.seq(), None),
            };
            return Opening {
                epoch: log.epoch().to_owned(),
                seq,
                presence,
                recovery,
            };
        };
        let opening = bp.open(m.space(), m.room_name(), local, resume).await;
        // The room's stream on this node starts there for this member; another epoch
        // than the one the room followed sends its other members to recover.
        if let Some(epoch) = crate::backplane::epoch_number(&opening.epoch) {
            m.members().started_at(epoch, opening.seq, m.id());
        }
        opening
    }

    /// Who is in a room, on every node.
    pub async fn presence(&self, space: &Space, room: &Room) -> Presence {
        let local = self
            .hub
            .room(space, room)
            .map(|r| r.presence())
            .unwrap_or_default();
        match &self.backplane {
            Some(bp) => bp.presence(space, room, local).await,
            None => Presence::of(local),
        }
    }
}
