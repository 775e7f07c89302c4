//! The delivery hot path: one message queued for every member of a room, raw members
//! and members of the protocol (`tsugi-notify.v1`: a sequence from the room's log, the
//! message kept, one JSON frame shared by all). `cargo bench -p tsugi-notifyd`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tokio_tungstenite::tungstenite::Message;
use tsugi_notify_core::{Plaintext, Room};
use tsugi_notifyd::history::{HistoryLimits, Logs};
use tsugi_notifyd::hub::{Hub, Json, Member, Outgoing};
use tsugi_notifyd::metrics::Metrics;
use tsugi_notifyd::outbox::Outbox;

fn fanout(c: &mut Criterion) {
    for json in [false, true] {
        room_deliver(c, json);
    }
}

fn room_deliver(c: &mut Criterion, json: bool) {
    let name = if json {
        "room deliver tsugi-notify.v1"
    } else {
        "room deliver"
    };
    let mut group = c.benchmark_group(name);
    for members in [10usize, 1000] {
        let metrics = Arc::new(Metrics::default());
        let logs = Arc::new(Logs::new(HistoryLimits::default()));
        let hub = Arc::new(Hub::new(usize::MAX, metrics.clone()).with_logs(logs));
        let space = Plaintext::new("https://w", "1", None, None)
            .unwrap()
            .space();
        let mut outboxes = Vec::new();
        let mut memberships = Vec::new();
        for id in 0..members as u64 {
            let outbox = Arc::new(Outbox::new(
                usize::MAX,
                usize::MAX,
                std::time::Duration::from_secs(3600),
            ));
            outboxes.push(outbox.clone());
            let m = Member {
                id,
                outbox,
                user: Some(Arc::from(id.to_string())),
                json,
            };
            memberships.push(hub.join(space.clone(), Room::default(), m).unwrap());
        }
        let msg = Message::text("x".repeat(64));
        let room = memberships[0].room();
        let mut sink = Vec::new();
        group.throughput(Throughput::Elements(members as u64 - 1));
        group.bench_with_input(BenchmarkId::from_parameter(members), &members, |b, _| {
            b.iter(|| {
                let out = Outgoing {
                    sender: Some(0),
                    from: None,
                    server: false,
                    msg: &msg,
                };
                room.deliver(out, true, Json::Assign, &metrics);
                // Drain as the writers would, so queues stay short.
                for o in &outboxes {
                    o.take(&mut sink, usize::MAX);
                }
                sink.clear();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
