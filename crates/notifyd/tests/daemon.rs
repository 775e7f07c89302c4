//! The daemon driven by a real WebSocket client (tokio-tungstenite) on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;
use tsugi_notify_core::{Plaintext, Room, Scope};
use tsugi_notifyd::metrics::{Close, Refusal};

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn fan_out_to_others_never_back_to_the_sender() {
    let server = start(config()).await;
    let t = token("42", "a");
    let mut a = connect(server.addr, &t, Some("lobby")).await;
    let mut b = connect(server.addr, &token("42", "b"), Some("lobby")).await;
    let mut c = connect(server.addr, &token("42", "c"), Some("lobby")).await;
    send(&mut a, Message::text("hello")).await;
    assert_eq!(recv(&mut b).await, Message::text("hello"));
    assert_eq!(recv(&mut c).await, Message::text("hello"));
    assert_eq!(recv_within(&mut a, QUIET).await, None, "no echo");
    send(&mut b, Message::text("from b")).await;
    assert_eq!(recv(&mut a).await, Message::text("from b"));
    assert_eq!(recv(&mut c).await, Message::text("from b"));
    assert_eq!(recv_within(&mut b, QUIET).await, None, "no echo");
}

#[tokio::test]
async fn binary_stays_binary_and_text_stays_text_in_order() {
    let server = start(config()).await;
    let mut a = connect(server.addr, &token("1", "a"), None).await;
    let mut b = connect(server.addr, &token("1", "b"), None).await;
    let bin = vec![0u8, 159, 146, 150, 255];
    send(&mut a, Message::binary(bin.clone())).await;
    send(&mut a, Message::text("t")).await;
    for i in 0..50 {
        send(&mut a, Message::text(format!("{i}"))).await;
    }
    assert_eq!(recv(&mut b).await, Message::binary(bin));
    assert_eq!(recv(&mut b).await, Message::text("t"));
    for i in 0..50 {
        assert_eq!(
            recv(&mut b).await,
            Message::text(format!("{i}")),
            "order per sender"
        );
    }
}

#[tokio::test]
async fn rooms_compare_byte_for_byte_and_spaces_never_mix() {
    let server = start(config()).await;
    let addr = server.addr;
    let mut one = connect(addr, &token("7", "a"), Some("1")).await;
    let mut zero_one = connect(addr, &token("7", "b"), Some("01")).await;
    let mut space_one = connect(addr, &token("7", "c"), Some(" 1")).await;
    let mut other_link = connect(addr, &token("8", "d"), Some("1")).await;
    let mut other_site = connect(
        addr,
        &token_on("https://other.example", "7", "e"),
        Some("1"),
    )
    .await;
    let mut same = connect(addr, &token("7", "f"), Some("1")).await;
    let mut default_room = connect(addr, &token("7", "g"), None).await;
    let mut empty_room = connect(addr, &token("7", "h"), Some("")).await;
    send(&mut one, Message::text("x")).await;
    assert_eq!(recv(&mut same).await, Message::text("x"));
    for ws in [
        &mut zero_one,
        &mut space_one,
        &mut other_link,
        &mut other_site,
        &mut default_room,
    ] {
        assert_eq!(recv_within(ws, QUIET).await, None);
    }
    send(&mut default_room, Message::text("d")).await;
    assert_eq!(
        recv(&mut empty_room).await,
        Message::text("d"),
        "absent and empty room are one"
    );
}

#[tokio::test]
async fn randomized_isolation_exactly_once() {
    let server = start(config()).await;
    // 100 clients over 2 sites x 5 links x 5 rooms (50 groups), 100 messages each:
    // 10,000 messages, every one to exactly its group's other members.
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261129);
    let sites = ["https://a.example", "http://[::1]:8888"];
    let mut clients = Vec::new();
    for i in 0..100 {
        let site = sites[rng.random_range(0..sites.len())];
        let link = format!("{}", rng.random_range(0..5));
        let room = ["", "r1", "r2", "01", " 1"][rng.random_range(0..5)].to_owned();
        let t = token_on(site, &link, &format!("u{i}"));
        let ws = connect(server.addr, &t, Some(&room)).await;
        clients.push(((site, link, room), ws));
    }
    // Everyone sends; each message names its sender and number.
    let (groups, mut sockets): (Vec<_>, Vec<_>) = clients.into_iter().unzip();
    exactly_once_in_groups(&groups, &mut sockets, 100).await;
}

#[tokio::test]
async fn refusals_before_the_upgrade() {
    let server = start(config()).await;
    let addr = server.addr;
    let good = token("42", "a");
    // Missing, bad, expired and wrong-scope tokens: 403.
    assert_eq!(refused_status(addr, "", None).await, 403);
    assert_eq!(refused_status(addr, "not-a-token", None).await, 403);
    let expired = tokens()
        .with_clock(tsugi_notify_core::FixedClock(1_000_000))
        .mint(
            &Plaintext::new("https://s", "1", None, None).unwrap(),
            Scope::Browser,
        )
        .unwrap();
    assert_eq!(refused_status(addr, &expired, None).await, 403);
    let publish = tokens()
        .mint(
            &Plaintext::new("https://s", "1", None, None).unwrap(),
            Scope::Publish,
        )
        .unwrap();
    assert_eq!(refused_status(addr, &publish, None).await, 403);
    let mut forged = good.clone();
    forged.pop();
    forged.push(if good.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(refused_status(addr, &forged, None).await, 403);
    // Room too long, malformed query: 400.
    assert_eq!(
        refused_status(addr, &good, Some(&"r".repeat(257))).await,
        400
    );
    connect(addr, &good, Some(&"r".repeat(256))).await;
    let (status, body) = raw_http(
        addr,
        format!("GET /notify?token={good}&room=%zz HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: https://site.example\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (
            400,
            "bad request: expected GET /notify?token=...&room=... with a WebSocket upgrade\n"
        )
    );
    // Not an upgrade, wrong method, wrong path, too large.
    assert_eq!(
        raw_http(addr, b"GET /notify HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .0,
        400
    );
    assert_eq!(raw_http(addr, b"POST /notify HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").await.0, 405);
    assert_eq!(
        raw_http(addr, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .0,
        404
    );
    let huge = format!(
        "GET /notify?{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    assert_eq!(raw_http(addr, huge.as_bytes()).await.0, 431);
    let many_headers: String = (0..200).map(|i| format!("X-{i}: y\r\n")).collect();
    assert_eq!(
        raw_http(
            addr,
            format!("GET /notify HTTP/1.1\r\n{many_headers}\r\n").as_bytes()
        )
        .await
        .0,
        431
    );
    assert_eq!(raw_http(addr, b"\x16\x03\x01garbage\r\n\r\n").await.0, 400);
    let (status, body) = raw_http(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let m = &server.metrics;
    assert_eq!(m.refused_count(Refusal::InvalidToken), 5);
    assert_eq!(m.refused_count(Refusal::RoomTooLong), 1);
    assert_eq!(m.refused_count(Refusal::BadRequest), 3);
    assert_eq!(m.refused_count(Refusal::HeadersTooLarge), 2);
    assert!(m
        .render()
        .contains("tsugi_notify_token_rejections_total{check=\"expired\"} 1"));
}

#[tokio::test]
async fn origins_outside_the_allowed_list_get_403() {
    let mut cfg = config();
    cfg.allowed_origins = vec!["https://site.example".into()];
    let server = start(cfg).await;
    let (addr, good) = (server.addr, token("42", "a"));
    assert_eq!(
        connect_with_origin(addr, &good, "https://evil.example")
            .await
            .err(),
        Some(403)
    );
    assert_eq!(
        refused_status(addr, &good, None).await,
        403,
        "no Origin at all"
    );
    assert!(connect_with_origin(addr, &good, "https://site.example")
        .await
        .is_ok());
    assert!(connect_with_origin(addr, &good, "HTTPS://SITE.EXAMPLE/")
        .await
        .is_ok());
    assert_eq!(server.metrics.refused_count(Refusal::Origin), 2);
}

#[tokio::test]
async fn capacity_refusals_are_503_and_spare_existing_clients() {
    let mut cfg = config();
    cfg.limits.max_connections = 3;
    cfg.limits.max_connections_per_space = 2;
    let server = start(cfg).await;
    let addr = server.addr;
    let mut a = connect(addr, &token("1", "a"), None).await;
    let mut b = connect(addr, &token("1", "b"), None).await;
    assert_eq!(
        refused_status(addr, &token("1", "c"), None).await,
        503,
        "space full"
    );
    let _c = connect(addr, &token("2", "c"), None).await;
    assert_eq!(
        refused_status(addr, &token("3", "d"), None).await,
        503,
        "server full"
    );
    send(&mut a, Message::text("still here")).await;
    assert_eq!(recv(&mut b).await, Message::text("still here"));
    drop(a);
    // The slot comes back when a client leaves.
    eventually(
        "a slot freed by a leaving client to be reused",
        Duration::from_secs(5),
        || async {
            tokio_tungstenite::connect_async(url(addr, &token("1", "e"), None))
                .await
                .ok()
        },
    )
    .await;
    assert_eq!(server.metrics.refused_count(Refusal::SpaceCapacity), 1);
    assert!(server.metrics.refused_count(Refusal::Capacity) >= 1);
}

#[tokio::test]
async fn slow_handshakes_are_dropped_at_the_timeout() {
    let mut cfg = config();
    cfg.limits.handshake_timeout = Duration::from_secs(1);
    let server = start(cfg).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /notify?token=").await.unwrap();
    let mut buf = [0u8; 64];
    let started = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "dropped without a response");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(server.metrics.refused_count(Refusal::Timeout), 1);
}

#[tokio::test]
async fn too_big_closes_with_1009() {
    let mut cfg = config();
    cfg.limits.max_message_bytes = 1024;
    let server = start(cfg).await;
    let mut a = connect(server.addr, &token("1", "a"), None).await;
    let mut b = connect(server.addr, &token("1", "b"), None).await;
    send(&mut a, Message::text("x".repeat(1024))).await;
    assert_eq!(
        recv(&mut b).await,
        Message::text("x".repeat(1024)),
        "exactly the limit passes"
    );
    send(&mut a, Message::binary(vec![0u8; 1025])).await;
    assert_eq!(close_code(&mut a).await, Some(1009));
    assert_eq!(recv_within(&mut b, QUIET).await, None);
    assert_eq!(server.metrics.closed_count(Close::TooBig), 1);
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let server = start(config()).await;
    let mut a = connect(server.addr, &token("1", "a"), None).await;
    let mut b = connect(server.addr, &token("1", "b"), None).await;
    let frame = Frame::message(vec![0xff, 0xfe, 0x41], OpCode::Data(Data::Text), true);
    send(&mut a, Message::Frame(frame)).await;
    assert_eq!(close_code(&mut a).await, Some(1007));
    assert_eq!(recv_within(&mut b, QUIET).await, None);
}

#[tokio::test]
async fn a_flooding_sender_is_trimmed_then_closed_with_1008() {
    let (rate, burst) = (20, 40);
    let mut cfg = config();
    cfg.limits.messages_per_second = rate;
    cfg.limits.burst = burst;
    let server = start(cfg).await;
    let m = &server.metrics;
    let mut a = connect(server.addr, &token("1", "a"), None).await;
    let mut b = connect(server.addr, &token("1", "b"), None).await;
    let started = Instant::now();
    for i in 0..200 {
        if a.feed(Message::text(format!("{i}"))).await.is_err() {
            break;
        }
    }
    let _ = a.flush().await;
    assert_eq!(close_code(&mut a).await, Some(1008));
    // The sender's limiter lived less than this: it refilled at most `rate` a second.
    let elapsed = started.elapsed().as_secs_f64();
    // What a's connection let through it queued for b before it closed, so these counts
    // are final now.
    let delivered = metric(m, "tsugi_notify_messages_delivered_total");
    let dropped = metric(
        m,
        "tsugi_notify_messages_dropped_total{reason=\"rate_limit\"}",
    );
    let most = (f64::from(burst) + f64::from(rate) * elapsed).floor() as u64;
    assert!(
        (u64::from(burst)..=most).contains(&delivered),
        "{delivered} delivered: the burst of {burst}, then at most {rate}/s over {elapsed:.3} s"
    );
    // Closed once the strikes (one a dropped message, draining at `rate`) passed `burst`.
    assert!(dropped > u64::from(burst), "{dropped} dropped");
    assert_eq!(
        metric(m, "tsugi_notify_messages_received_total"),
        delivered + dropped,
        "every message read was delivered or dropped"
    );
    // b gets exactly those, in order: the first `delivered` messages, and then, from
    // another sender, the next thing in its queue.
    for i in 0..delivered {
        assert_eq!(recv(&mut b).await, Message::text(format!("{i}")));
    }
    let mut c = connect(server.addr, &token("1", "c"), None).await;
    send(&mut c, Message::text("after the flood")).await;
    assert_eq!(recv(&mut b).await, Message::text("after the flood"));
    assert_eq!(m.closed_count(Close::RateLimit), 1);
}

#[tokio::test]
async fn a_reader_that_stops_is_closed_and_never_slows_the_room() {
    let mut cfg = config();
    cfg.limits.outbound_queue = 16;
    let server = start(cfg).await;
    let addr = server.addr;
    let mut sender = connect(addr, &token("1", "s"), None).await;
    let mut reader = connect(addr, &token("1", "r"), None).await;
    // A client that completes the handshake and then never reads again.
    let stalled = connect(addr, &token("1", "x"), None).await;
    let payload = "p".repeat(32 * 1024);
    let total = 600; // ~19 MiB: far more than the socket buffers hold
    let recv_task = tokio::spawn(async move {
        let mut n = 0;
        while n < total {
            match recv_within(&mut reader, Duration::from_secs(10)).await {
                Some(Message::Text(_)) => n += 1,
                _ => break,
            }
        }
        n
    });
    for _ in 0..total {
        sender.send(Message::text(payload.clone())).await.unwrap();
    }
    assert_eq!(
        recv_task.await.unwrap(),
        total,
        "the reading client got everything"
    );
    wait_until("the stalled reader closed", Duration::from_secs(10), || {
        server.metrics.closed_count(Close::SlowConsumer) > 0
    })
    .await;
    assert_eq!(server.metrics.closed_count(Close::SlowConsumer), 1);
    drop(stalled);
}

#[tokio::test]
async fn silent_clients_are_closed_after_the_idle_timeout() {
    let mut cfg = config();
    cfg.limits.ping_interval = Duration::from_secs(1);
    cfg.limits.idle_timeout = Duration::from_secs(2);
    let server = start(cfg).await;
    // Raw handshake, then silence: no pong ever.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let req = format!(
        "GET /notify?token={} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        enc(&token("1", "a"))
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut all)).await;
    assert!(read.is_ok(), "closed by the server");
    assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 101"));
    assert_eq!(server.metrics.closed_count(Close::Idle), 1);
    // A live client answers pings and stays.
    let mut live = connect(server.addr, &token("1", "b"), None).await;
    assert_eq!(recv_within(&mut live, Duration::from_secs(3)).await, None);
    send(&mut live, Message::text("still open")).await;
}

#[tokio::test]
async fn shutdown_sends_1001_to_every_client() {
    let server = start(config()).await;
    let mut clients = Vec::new();
    for i in 0..20 {
        clients.push(connect(server.addr, &token(&format!("{}", i % 3), "u"), None).await);
    }
    server.shutdown();
    for ws in &mut clients {
        assert_eq!(close_code(ws).await, Some(1001));
    }
    tokio::time::timeout(Duration::from_secs(5), server.wait())
        .await
        .expect("drained");
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let server = start(config()).await;
    let mut a = connect(server.addr, &token("1", "a"), Some("r")).await;
    let mut b = connect(server.addr, &token("1", "b"), Some("r")).await;
    send(&mut a, Message::text("12345")).await;
    recv(&mut b).await;
    let text = server.metrics.render();
    for line in [
        "tsugi_notify_connections 2",
        "tsugi_notify_spaces 1",
        "tsugi_notify_rooms 1",
        "tsugi_notify_messages_received_total 1",
        "tsugi_notify_messages_delivered_total 1",
        "tsugi_notify_bytes_received_total 5",
        "tsugi_notify_handshakes_accepted_total 2",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    assert!(!text.contains(SECRET));
}

fn publish_token(link: &str) -> String {
    tokens()
        .mint(
            &Plaintext::new("https://site.example", link, None, None).unwrap(),
            Scope::Publish,
        )
        .unwrap()
}

#[tokio::test]
async fn publish_api_reaches_every_member_of_the_room() {
    let mut cfg = config();
    cfg.limits.max_message_bytes = 1000;
    let server = start(cfg).await;
    let addr = server.addr;
    let mut a = connect(addr, &token("9", "a"), Some("q")).await;
    let mut b = connect(addr, &token("9", "b"), Some("q")).await;
    let mut other_room = connect(addr, &token("9", "c"), Some("r")).await;
    let mut other_link = connect(addr, &token("10", "d"), Some("q")).await;
    let (status, body) = post_publish(
        addr,
        Some(&publish_token("9")),
        r#"{"room":"q","message":"graded \u00e9"}"#,
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "{\"delivered\":2}\n"));
    assert_eq!(recv(&mut a).await, Message::text("graded é"));
    assert_eq!(recv(&mut b).await, Message::text("graded é"));
    assert_eq!(recv_within(&mut other_room, QUIET).await, None);
    assert_eq!(recv_within(&mut other_link, QUIET).await, None);
    // Refusals, each with a short reason.
    let pt = publish_token("9");
    assert_eq!(post_publish(addr, None, r#"{"message":"x"}"#).await.0, 401);
    assert_eq!(
        post_publish(addr, Some(&token("9", "a")), r#"{"message":"x"}"#)
            .await
            .0,
        403,
        "browser token"
    );
    assert_eq!(
        post_publish(addr, Some("garbage"), r#"{"message":"x"}"#)
            .await
            .0,
        403
    );
    let big = format!(r#"{{"message":"{}"}}"#, "x".repeat(1001));
    assert_eq!(post_publish(addr, Some(&pt), &big).await.0, 413);
    let huge = format!(r#"{{"message":"{}"}}"#, "x".repeat(8000));
    assert_eq!(post_publish(addr, Some(&pt), &huge).await.0, 413);
    assert_eq!(post_publish(addr, Some(&pt), "not json").await.0, 400);
    assert_eq!(
        post_publish(addr, Some(&pt), r#"{"room":5,"message":"x"}"#)
            .await
            .0,
        400
    );
    let long_room = format!(r#"{{"room":"{}","message":"x"}}"#, "r".repeat(257));
    assert_eq!(post_publish(addr, Some(&pt), &long_room).await.0, 400);
    let (status, body) = raw_http(
        addr,
        format!("POST /publish HTTP/1.1\r\nAuthorization: Bearer {pt}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status, 411, "{body}");
    assert_eq!(
        raw_http(addr, b"GET /publish HTTP/1.1\r\n\r\n").await.0,
        405
    );
    // Nothing else reached anyone.
    assert_eq!(recv_within(&mut a, QUIET).await, None);
    // The default room is the empty name.
    let mut d = connect(addr, &token("9", "e"), None).await;
    assert_eq!(
        post_publish(addr, Some(&pt), r#"{"message":"to default"}"#)
            .await
            .0,
        200
    );
    assert_eq!(recv(&mut d).await, Message::text("to default"));
}

/// A publish token for link `link` bound to `room`, for `ttl` seconds.
fn room_publish_token(link: &str, room: &str, ttl: u64) -> String {
    tokens()
        .mint_for_room(
            &Plaintext::new("https://site.example", link, None, None).unwrap(),
            Scope::Publish,
            &Room::new(room).unwrap(),
            ttl,
        )
        .unwrap()
}

#[tokio::test]
async fn a_room_bound_publish_token_publishes_to_its_room_only() {
    let server = start(config()).await;
    let addr = server.addr;
    let mut grades = connect(addr, &token("9", "a"), Some("grades")).await;
    let mut other = connect(addr, &token("9", "b"), Some("other")).await;
    let mut default = connect(addr, &token("9", "c"), None).await;
    let bound = room_publish_token("9", "grades", 30);
    for body in [
        r#"{"room":"other","message":"x"}"#,
        r#"{"room":"Grades","message":"x"}"#,
        r#"{"room":"grades ","message":"x"}"#,
        r#"{"room":"","message":"x"}"#,
        r#"{"message":"x"}"#,
    ] {
        let (status, reply) = post_publish(addr, Some(&bound), body).await;
        assert_eq!(
            (status, reply.as_str()),
            (403, "{\"error\":\"invalid token\"}\n"),
            "{body}"
        );
    }
    assert!(server
        .metrics
        .render()
        .contains("tsugi_notify_token_rejections_total{check=\"room\"} 5"));
    for ws in [&mut grades, &mut other, &mut default] {
        assert_eq!(recv_within(ws, QUIET).await, None, "nothing was delivered");
    }
    let (status, reply) = post_publish(
        addr,
        Some(&bound),
        r#"{"room":"grades","message":"graded"}"#,
    )
    .await;
    assert_eq!((status, reply.as_str()), (200, "{\"delivered\":1}\n"));
    assert_eq!(recv(&mut grades).await, Message::text("graded"));
    assert_eq!(recv_within(&mut other, QUIET).await, None);
    // Bound to the default room: the body's absent or empty room.
    let to_default = room_publish_token("9", "", 30);
    for body in [r#"{"message":"d1"}"#, r#"{"room":"","message":"d2"}"#] {
        assert_eq!(post_publish(addr, Some(&to_default), body).await.0, 200);
    }
    assert_eq!(recv(&mut default).await, Message::text("d1"));
    assert_eq!(recv(&mut default).await, Message::text("d2"));
    assert_eq!(
        post_publish(
            addr,
            Some(&to_default),
            r#"{"room":"grades","message":"x"}"#
        )
        .await
        .0,
        403
    );
    // The room binding narrows the token's space, never widens it: a room of the same
    // name in another link's space hears nothing.
    let mut link10 = connect(addr, &token("10", "d"), Some("grades")).await;
    assert_eq!(
        post_publish(addr, Some(&bound), r#"{"room":"grades","message":"y"}"#)
            .await
            .0,
        200
    );
    assert_eq!(recv(&mut grades).await, Message::text("y"));
    assert_eq!(recv_within(&mut link10, QUIET).await, None);
}

#[tokio::test]
async fn a_room_bound_browser_token_opens_its_room_only() {
    let server = start(config()).await;
    let addr = server.addr;
    let p = Plaintext::new("https://site.example", "5", Some("course"), Some("u")).unwrap();
    let bound = tokens()
        .mint_for_room(&p, Scope::Browser, &Room::new("lobby").unwrap(), 600)
        .unwrap();
    for room in [Some("other"), Some("Lobby"), Some(""), None] {
        assert_eq!(refused_status(addr, &bound, room).await, 403, "{room:?}");
    }
    assert_eq!(server.metrics.refused_count(Refusal::InvalidToken), 4);
    assert!(server
        .metrics
        .render()
        .contains("tsugi_notify_token_rejections_total{check=\"room\"} 4"));
    let mut a = connect(addr, &bound, Some("lobby")).await;
    let mut b = connect(addr, &token("5", "v"), Some("lobby")).await;
    send(&mut b, Message::text("hi")).await;
    assert_eq!(recv(&mut a).await, Message::text("hi"));
}
