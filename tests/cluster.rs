//! More than one node: three daemons share a real redis-server (started here on a free
//! loopback port). Delivery across nodes is exactly once, never an echo, never a leak;
//! with Redis stopped each node still serves its own clients and says the backplane is
//! down; with Redis back, cross-node delivery resumes; PHP's WebSocket::publish reaches
//! browsers on every node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../crates/notifyd/tests/common/mod.rs"]
mod common;
mod php;

use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt;
use php::{php_async, WWWROOT};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(20);

/// A browser token for link `link` of the PHP side's site.
fn browser(link: &str, user: &str) -> String {
    token_on(WWWROOT, link, user)
}

/// The body of /healthz.
async fn health(addr: std::net::SocketAddr) -> String {
    let (status, body) = raw_http(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_exactly_once_survive_redis_restart_and_take_php_publish() {
    let mut redis = RedisServer::start("cluster", "", false);
    let port = redis.port;
    let nodes = [
        node(plain(port)).await,
        node(plain(port)).await,
        node(plain(port)).await,
    ];
    for n in &nodes {
        wait_until("backplane up", WAIT, || n.metrics.backplane_is_up()).await;
    }

    // 36 clients spread over the nodes, 2 links x 2 rooms.
    let mut clients = Vec::new();
    for i in 0..36usize {
        let node = i % 3;
        let link = ["1", "2"][(i / 3) % 2];
        let room = ["a", "b"][(i / 6) % 2];
        let ws = connect(
            nodes[node].addr,
            &browser(link, &format!("u{i}")),
            Some(room),
        )
        .await;
        clients.push(((link, room), ws));
    }
    // Every node subscribed to every space it has members in (both here).
    for n in &nodes {
        wait_until("subscriptions", WAIT, || {
            n.metrics.backplane_channel_count() == 2
        })
        .await;
    }
    let (groups, mut sockets): (Vec<_>, Vec<_>) = clients.into_iter().unzip();
    exactly_once_in_groups(&groups, &mut sockets, 10).await;

    // Redis goes away: every node keeps serving its own clients.
    redis.kill();
    for n in &nodes {
        wait_until("backplane down", WAIT, || !n.metrics.backplane_is_up()).await;
        assert_eq!(health(n.addr).await, "ok\nbackplane: down\n");
    }
    for n in &nodes {
        let mut a = connect(n.addr, &browser("3", "x"), Some("local")).await;
        let mut b = connect(n.addr, &browser("3", "y"), Some("local")).await;
        a.send(Message::text("local only")).await.unwrap();
        assert_eq!(
            next_text(&mut b, Duration::from_secs(5)).await.as_deref(),
            Some("local only")
        );
    }

    // Redis comes back on the same port: cross-node delivery resumes.
    let mut a = connect(nodes[0].addr, &browser("4", "a"), Some("r")).await;
    let mut b = connect(nodes[1].addr, &browser("4", "b"), Some("r")).await;
    let restarted = Instant::now();
    let _redis = RedisServer::start_on("cluster-again", port, "", false);
    let mut n = 0;
    let resumed = loop {
        n += 1;
        a.send(Message::text(format!("probe {n}"))).await.unwrap();
        if let Some(m) = next_text(&mut b, Duration::from_millis(100)).await {
            assert!(m.starts_with("probe "));
            break restarted.elapsed();
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(20),
            "delivery did not resume"
        );
    };
    println!(
        "cross-node delivery resumed {} ms after redis-server restarted",
        resumed.as_millis()
    );
    for n in &nodes {
        wait_until("backplane up again", WAIT, || n.metrics.backplane_is_up()).await;
        assert_eq!(health(n.addr).await, "ok\nbackplane: up\n");
    }

    // PHP's WebSocket::publish, posted to node 2, reaches browsers on nodes 0 and 1.
    let mut c = connect(nodes[2].addr, &browser("4", "c"), Some("r")).await;
    while next_text(&mut b, Duration::from_millis(50)).await.is_some() {}
    wait_until("node 2 subscribed", WAIT, || {
        nodes[2].metrics.backplane_channel_count() >= 1
    })
    .await;
    let node2 = nodes[2].addr.port();
    let out = php_async(format!(
        "$CFG->websocket_url = 'ws://127.0.0.1:{node2}'; \
         var_export(Tsugi\\Core\\WebSocket::publish((object) ['link' => (object) ['id' => 4]], 'r', 'from php'));"
    ))
    .await;
    assert_eq!(out, "true");
    for ws in [&mut a, &mut b, &mut c] {
        let mut got = None;
        while let Some(m) = next_text(ws, Duration::from_secs(5)).await {
            if m == "from php" {
                got = Some(m);
                break;
            }
        }
        assert_eq!(got.as_deref(), Some("from php"));
    }
}
