//! Fan-out, written once: a message from a connection and one from `POST /publish` both
//! go to [`Fanout::broadcast`], which queues it for this node's members of the room and
//! hands it to the backplane for the other nodes. (What arrives from the backplane is
//! delivered to this node's members only: it was broadcast where it came from.)

use std::sync::Arc;

use tokio_tungstenite::tungstenite::Message;
use tsugi_notify_core::{Room, Space};

use crate::backplane::Backplane;
use crate::hub::{Hub, Membership};
use crate::metrics::Metrics;

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
    /// others; returns how many members of this node got it queued. Never waits.
    pub fn broadcast(&self, from: Source<'_>, msg: &Message) -> u64 {
        let (space, room, delivered, conn) = match from {
            // A member holds its room: no lookup on a connection's path.
            Source::Member(m) => {
                let d = m.room().deliver(Some(m.id()), msg, &self.metrics);
                (m.space(), m.room_name(), d.delivered, m.id())
            }
            Source::Server { space, room } => {
                let d = self
                    .hub
                    .room(space, room)
                    .map_or(0, |r| r.deliver(None, msg, &self.metrics).delivered);
                (space, room, d, 0)
            }
        };
        if let Some(bp) = &self.backplane {
            bp.publish(space, room, conn, msg);
        }
        delivered
    }
}
