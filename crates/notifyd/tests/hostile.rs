//! One student with one valid token against everybody else: clients that read nothing,
//! senders at the edge of their limits, one token opening many sockets, floods of
//! sockets that never finish their handshake, limits at the edge of what the libraries
//! take. Each test failed on the daemon before these defences.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tsugi_notify_core::{FixedClock, Plaintext, Scope};
use tsugi_notifyd::metrics::{Close, Refusal};
use tsugi_notifyd::{Config, Running};

/// A TCP connection whose receive buffer is small, so that what it does not read backs
/// up into the server quickly.
async fn small_socket(addr: SocketAddr, rcvbuf: u32) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.set_recv_buffer_size(rcvbuf).unwrap();
    s.connect(addr).await.unwrap()
}

/// A raw WebSocket upgrade on `stream`; returns once the 101 head has been read.
async fn raw_upgrade(mut stream: TcpStream, token: &str) -> TcpStream {
    let req = format!(
        "GET /notify?token={} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        enc(token)
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "upgraded");
    stream
}

/// A masked ping frame with 125 bytes of payload (mask key zero: the payload as is).
fn ping_frame() -> Vec<u8> {
    let mut f = vec![0x89, 0x80 | 125, 0, 0, 0, 0];
    f.extend_from_slice(&[b'p'; 125]);
    f
}

fn gauge(server: &Running, name: &str) -> i64 {
    let text = server.metrics.render();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("tsugi_notify_{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_floods_pings_and_reads_nothing_is_closed_and_its_slot_freed() {
    let mut cfg = config();
    cfg.limits.ping_interval = Duration::from_secs(1);
    cfg.limits.idle_timeout = Duration::from_secs(3);
    cfg.limits.write_timeout = Duration::from_secs(2);
    let server = start(cfg).await;
    let stream = small_socket(server.addr, 4096).await;
    let mut flooder = raw_upgrade(stream, &token("1", "flooder")).await;
    wait_until("connected", Duration::from_secs(5), || {
        server.metrics.connection_count() == 1
    })
    .await;
    // Pings as fast as the socket takes them, never reading a pong.
    let flood = tokio::spawn(async move {
        let frame = ping_frame();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if flooder.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    // Answers it never reads back up: within write_timeout (plus the close's own
    // second) its slot is free, although it never stopped sending.
    wait_until("the flooder closed", Duration::from_secs(15), || {
        server.metrics.connection_count() == 0
    })
    .await;
    assert_eq!(server.metrics.closed_count(Close::WriteTimeout), 1);
    flood.abort();
    // The server is fine for everybody else.
    let mut a = connect(server.addr, &token("1", "a"), None).await;
    let mut b = connect(server.addr, &token("1", "b"), None).await;
    a.send(Message::text("still here")).await.unwrap();
    assert_eq!(recv(&mut b).await, Message::text("still here"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_in_a_busy_room_is_closed_whatever_the_queue_bounds() {
    let mut cfg = config();
    // Queue bounds far beyond anything this test sends: only time can judge the reader.
    cfg.limits.outbound_queue = 10_000_000;
    cfg.limits.outbound_queue_bytes = 1 << 34;
    cfg.limits.write_timeout = Duration::from_secs(2);
    let server = start(cfg).await;
    let stalled = raw_upgrade(
        small_socket(server.addr, 4096).await,
        &token("1", "stalled"),
    )
    .await;
    let mut sender = connect(server.addr, &token("1", "s"), None).await;
    let mut reader = connect(server.addr, &token("1", "r"), None).await;
    // The reading client reads all along (it is judged by the same 2 s).
    let read = tokio::spawn(async move {
        let mut n = 0usize;
        loop {
            match recv(&mut reader).await {
                Message::Text(t) if t == "done" => return n,
                Message::Text(_) => n += 1,
                other => panic!("{other:?}"),
            }
        }
    });
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_sending = stop.clone();
    let send = tokio::spawn(async move {
        let body = "m".repeat(1024);
        while !stop_sending.load(Ordering::Relaxed) {
            sender.send(Message::text(body.clone())).await.unwrap();
            counter.fetch_add(1, Ordering::Relaxed);
            // Pacing: a steady sender, until the stalled reader is closed.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        sender
    });
    wait_until("the stalled reader closed", Duration::from_secs(20), || {
        server.metrics.connection_count() == 2
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut sender = send.await.unwrap();
    sender.send(Message::text("done")).await.unwrap();
    // The reading client got every message, before and after.
    assert_eq!(read.await.unwrap(), sent.load(Ordering::Relaxed));
    let closed = server.metrics.closed_count(Close::SlowConsumer)
        + server.metrics.closed_count(Close::WriteTimeout);
    assert_eq!(closed, 1);
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_within_its_limits_never_gets_a_slow_reader_closed() {
    // The shipped defaults, nothing lifted.
    let server = start(Config::for_loopback(SECRET).unwrap()).await;
    let addr = server.addr;
    // A reader on a ~1 Mbit/s link: it takes 125,000 bytes a second off a small buffer.
    let stream = small_socket(addr, 8192).await;
    let (mut reader, _) =
        tokio_tungstenite::client_async(url(addr, &token("1", "slow"), None), stream)
            .await
            .unwrap();
    let mut sender = connect(addr, &token("1", "sender"), None).await;
    let got = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicBool::new(false));
    let (got_r, closed_r) = (got.clone(), closed.clone());
    let read = tokio::spawn(async move {
        while let Some(m) = reader.next().await {
            match m {
                Ok(Message::Binary(b)) => {
                    got_r.fetch_add(1, Ordering::Relaxed);
                    // Pacing: the reader's link speed is what is under test.
                    tokio::time::sleep(Duration::from_secs_f64(b.len() as f64 / 125_000.0)).await;
                }
                Ok(Message::Close(_)) | Err(_) => {
                    closed_r.store(true, Ordering::Relaxed);
                    return;
                }
                Ok(_) => {}
            }
        }
        closed_r.store(true, Ordering::Relaxed);
    });
    // The most a sender may do with the largest messages: a burst of 40 at once, then
    // just under 20 a second for 8 s (as messages_per_second alone would allow: 1.2 MiB/s,
    // ten times what the reader takes).
    let big = vec![7u8; 64 * 1024];
    for _ in 0..40 {
        sender.feed(Message::binary(big.clone())).await.unwrap();
    }
    sender.flush().await.unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / 19));
    for _ in 0..19 * 8 {
        tick.tick().await;
        sender.send(Message::binary(big.clone())).await.unwrap();
    }
    let sent = 40 + 19 * 8;
    wait_until(
        "the daemon took every message",
        Duration::from_secs(10),
        || {
            server
                .metrics
                .render()
                .contains(&format!("tsugi_notify_messages_received_total {sent}"))
        },
    )
    .await;
    let dropped = dropped_for_rate(&server);
    let expected = sent - dropped;
    assert!(
        expected >= 4,
        "a burst of bytes_per_second's burst got through"
    );
    wait_until(
        "the slow reader got everything delivered",
        Duration::from_secs(30),
        || got.load(Ordering::Relaxed) == expected as usize || closed.load(Ordering::Relaxed),
    )
    .await;
    assert!(
        !closed.load(Ordering::Relaxed),
        "the slow reader was closed"
    );
    assert_eq!(got.load(Ordering::Relaxed), expected as usize);
    assert_eq!(server.metrics.closed_count(Close::SlowConsumer), 0);
    assert_eq!(server.metrics.closed_count(Close::WriteTimeout), 0);
    assert_eq!(
        server.metrics.closed_count(Close::RateLimit),
        0,
        "the sender stayed within its limits"
    );
    read.abort();
}

fn dropped_for_rate(server: &Running) -> u64 {
    let text = server.metrics.render();
    text.lines()
        .find_map(|l| l.strip_prefix("tsugi_notify_messages_dropped_total{reason=\"rate_limit\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn one_token_opens_at_most_eight_sockets_and_classmates_still_get_in() {
    let mut cfg = config();
    cfg.limits.max_connections_per_token = Config::for_loopback(SECRET)
        .unwrap()
        .limits
        .max_connections_per_token;
    assert_eq!(cfg.limits.max_connections_per_token, 8, "the default");
    cfg.limits.max_connections_per_user = 32;
    cfg.limits.max_connections_per_space = 50;
    let server = start(cfg).await;
    let page = token("1", "student");
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..100 {
        match tokio_tungstenite::connect_async(url(server.addr, &page, None)).await {
            Ok((ws, _)) => held.push(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 429);
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((held.len(), refused), (8, 92));
    assert_eq!(server.metrics.refused_count(Refusal::TokenCapacity), 92);
    // The link's space is far from full: every classmate gets in.
    for i in 0..30 {
        let _ = connect(server.addr, &token("1", &format!("classmate{i}")), None).await;
    }
    // A socket closed gives its slot back to the token.
    let mut first = held.remove(0);
    first.close(None).await.unwrap();
    while first.next().await.is_some() {}
    eventually("the slot to come back", Duration::from_secs(10), || async {
        tokio_tungstenite::connect_async(url(server.addr, &page, None))
            .await
            .ok()
    })
    .await;
}

#[tokio::test]
async fn one_user_reloading_for_fresh_tokens_opens_at_most_32_sockets() {
    let mut cfg = config();
    let defaults = Config::for_loopback(SECRET).unwrap().limits;
    assert_eq!(defaults.max_connections_per_user, 32, "the default");
    cfg.limits.max_connections_per_user = defaults.max_connections_per_user;
    cfg.limits.max_connections_per_token = defaults.max_connections_per_token;
    let server = start(cfg).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Forty page loads, forty different tokens of one user (one second apart).
    let reload = |i: i64| {
        let p = Plaintext::new(
            "https://site.example",
            "1",
            Some("course"),
            Some("reloader"),
        )
        .unwrap();
        tokens()
            .with_clock(FixedClock(now - i))
            .mint(&p, Scope::Browser)
            .unwrap()
    };
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 0..40 {
        match tokio_tungstenite::connect_async(url(server.addr, &reload(i), None)).await {
            Ok((ws, _)) => held.push(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 429);
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((held.len(), refused), (32, 8));
    assert_eq!(server.metrics.refused_count(Refusal::UserCapacity), 8);
    // The same user on another site is someone else; so is a classmate.
    let _other_site = connect(
        server.addr,
        &token_on("https://other.example", "1", "reloader"),
        None,
    )
    .await;
    let _classmate = connect(server.addr, &token("1", "classmate"), None).await;
    // Legacy tokens carry the course in the user field: not counted per user (a whole
    // course would share 32), only per token.
    let p = Plaintext::new("https://site.example", "1", Some("course"), Some("course")).unwrap();
    for _ in 0..40 {
        let legacy = tokens().mint_legacy(&p).unwrap();
        held.push(connect(server.addr, &legacy, None).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_that_never_finish_their_handshake_are_bounded_and_evicted_oldest_first() {
    let mut cfg = config();
    cfg.limits.max_pending_handshakes = 16;
    let server = start(cfg).await;
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    wait_until("84 evicted", Duration::from_secs(10), || {
        server.metrics.refused_count(Refusal::Evicted) >= 84
    })
    .await;
    wait_until("at most 16 pending", Duration::from_secs(10), || {
        gauge(&server, "handshakes_pending") <= 16
    })
    .await;
    // A real client still gets in at once, and the oldest idle sockets were closed.
    let mut a = connect(server.addr, &token("1", "a"), None).await;
    let mut b = connect(server.addr, &token("1", "b"), None).await;
    a.send(Message::text("through")).await.unwrap();
    assert_eq!(recv(&mut b).await, Message::text("through"));
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), idle[0].read(&mut buf))
        .await
        .expect("the oldest idle socket was closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn a_tiny_max_message_bytes_works_and_every_count_is_released() {
    let mut cfg = config();
    cfg.limits.max_message_bytes = 64;
    cfg.limits.max_connections = 2;
    cfg.limits.max_connections_per_token = 1;
    cfg.limits.max_connections_per_user = 1;
    let server = start(cfg).await;
    let (ta, tb) = (token("1", "a"), token("1", "b"));
    let mut a = connect(server.addr, &ta, None).await;
    let mut b = connect(server.addr, &tb, None).await;
    a.send(Message::text("short")).await.unwrap();
    assert_eq!(recv(&mut b).await, Message::text("short"));
    b.send(Message::text("x".repeat(65))).await.unwrap();
    assert_eq!(close_code(&mut b).await, Some(1009));
    drop(a);
    drop(b);
    wait_until("every connection released", Duration::from_secs(10), || {
        server.metrics.connection_count() == 0
    })
    .await;
    // The daemon's, the tokens' and the users' slots came back too (each bound is 1
    // or 2: a leak of one would refuse these).
    let _a = connect(server.addr, &ta, None).await;
    let _b = connect(server.addr, &tb, None).await;
}

async fn http(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn healthz_is_one_answer_on_both_ports_and_head_gets_no_body() {
    let mut cfg = config();
    cfg.metrics_bind = Some("127.0.0.1:0".parse().unwrap());
    // A backplane that is configured but cannot connect: both must say it is down.
    cfg.redis = Some(tsugi_notifyd::config::Redis {
        url: "redis://127.0.0.1:1/".into(),
        password: None,
        ca_pem: None,
    });
    let server = start(cfg).await;
    let metrics = server.metrics_addr.unwrap();
    let get = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let main = http(server.addr, get).await;
    let side = http(metrics, get).await;
    let body = |r: &str| r.split("\r\n\r\n").nth(1).unwrap().to_owned();
    assert_eq!(body(&main), "ok\nbackplane: down\n");
    assert_eq!(body(&side), body(&main));
    for addr in [server.addr, metrics] {
        let head = http(addr, "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "no body: {head:?}");
        assert!(head.contains("Content-Length: 19"), "{head}");
    }
}

#[tokio::test]
async fn the_rate_limit_counts_bytes_too() {
    let mut cfg = config();
    cfg.limits.bytes_per_second = 1000;
    cfg.limits.burst_bytes = 4000;
    let server = start(cfg).await;
    let mut a = connect(server.addr, &token("1", "a"), None).await;
    let mut b = connect(server.addr, &token("1", "b"), None).await;
    let mut c = connect(server.addr, &token("1", "c"), None).await;
    for _ in 0..6 {
        a.send(Message::text("k".repeat(1000))).await.unwrap();
    }
    // Four fit the byte burst; the two over it are dropped and counted.
    wait_until("two dropped", Duration::from_secs(5), || {
        dropped_for_rate(&server) == 2
    })
    .await;
    for _ in 0..4 {
        assert_eq!(recv(&mut b).await, Message::text("k".repeat(1000)));
    }
    c.send(Message::text("marker")).await.unwrap();
    assert_eq!(recv(&mut b).await, Message::text("marker"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_sockets_from_one_source_evicts_its_own_not_slow_clients_elsewhere() {
    let mut cfg = config();
    cfg.limits.max_pending_handshakes = 16;
    let server = start(cfg).await;
    let addr = server.addr;
    // The flood: idle connections from 127.0.0.2, as fast as they open, for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = stop.clone();
    let flood = tokio::spawn(async move {
        let mut held = std::collections::VecDeque::new();
        while !flooding.load(Ordering::Relaxed) {
            let s = TcpSocket::new_v4().unwrap();
            s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            if let Ok(c) = s.connect(addr).await {
                held.push_back(c);
            }
            if held.len() > 200 {
                held.pop_front();
            }
        }
    });
    wait_until("the flood evicting", Duration::from_secs(10), || {
        server.metrics.refused_count(Refusal::Evicted) > 100
    })
    .await;
    // Clients from elsewhere that take 300 ms to send their request (a far browser,
    // a slow proxy): each gets in, although hundreds of newer sockets came meanwhile.
    let clients = (0..5).map(|i| {
        let t = token("1", &format!("far{i}"));
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            // Pacing: the slowness is what is under test.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let req = format!(
                "GET /notify?token={} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\n\r\n",
                enc(&t)
            );
            stream.write_all(req.as_bytes()).await.unwrap();
            let mut head = [0u8; 12];
            stream.read_exact(&mut head).await.is_ok() && &head == b"HTTP/1.1 101"
        })
    });
    let got: Vec<bool> = futures_util::future::join_all(clients)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    stop.store(true, Ordering::Relaxed);
    flood.await.unwrap();
    assert_eq!(got, vec![true; 5], "every slow client got its 101");
}

#[tokio::test]
async fn the_sockets_of_one_user_share_one_senders_limits() {
    let mut cfg = config();
    cfg.limits.messages_per_second = 1;
    cfg.limits.burst = 5;
    let server = start(cfg).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let p = Plaintext::new(
        "https://site.example",
        "1",
        Some("course"),
        Some("many-tabs"),
    )
    .unwrap();
    // Three tabs (three tokens) of one user, and a reader.
    let mut tabs = Vec::new();
    for i in 0..3 {
        let t = tokens()
            .with_clock(FixedClock(now - i))
            .mint(&p, Scope::Browser)
            .unwrap();
        tabs.push(connect(server.addr, &t, None).await);
    }
    let mut reader = connect(server.addr, &token("1", "reader"), None).await;
    // Nine messages: one burst (5) in all passes, not three; the rest are dropped and
    // counted (four strikes: under the burst of strikes that would close a tab).
    for tab in &mut tabs {
        for n in 0..3 {
            tab.send(Message::text(format!("{n}"))).await.unwrap();
        }
    }
    wait_until("four dropped", Duration::from_secs(5), || {
        dropped_for_rate(&server) == 4
    })
    .await;
    for _ in 0..5 {
        assert!(matches!(recv(&mut reader).await, Message::Text(_)));
    }
    let mut other = connect(server.addr, &token("1", "other"), None).await;
    other.send(Message::text("marker")).await.unwrap();
    assert_eq!(recv(&mut reader).await, Message::text("marker"));
}

#[tokio::test]
async fn closing_and_reopening_does_not_refill_a_senders_limits() {
    let mut cfg = config();
    cfg.limits.messages_per_second = 1;
    cfg.limits.burst = 5;
    let server = start(cfg).await;
    let mut reader = connect(server.addr, &token("1", "reader"), None).await;
    let page = token("1", "sender");
    let mut a = connect(server.addr, &page, None).await;
    for n in 0..5 {
        a.send(Message::text(format!("{n}"))).await.unwrap();
    }
    for _ in 0..5 {
        assert!(matches!(recv(&mut reader).await, Message::Text(_)));
    }
    a.close(None).await.unwrap();
    while a.next().await.is_some() {}
    wait_until("closed", Duration::from_secs(5), || {
        server.metrics.connection_count() == 1
    })
    .await;
    // A new socket of the same sender finds its burst spent, not a fresh one.
    let mut b = connect(server.addr, &page, None).await;
    for n in 0..3 {
        b.send(Message::text(format!("again {n}"))).await.unwrap();
    }
    wait_until("the second burst dropped", Duration::from_secs(5), || {
        dropped_for_rate(&server) >= 2
    })
    .await;
}
