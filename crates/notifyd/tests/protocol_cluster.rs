//! `tsugi-notify.v1` across nodes on a real redis-server: presence over three nodes
//! (one a separate process, killed without a word: its members leave within
//! `presence_ttl_secs`), joins and leaves between nodes, recovery on another node than
//! the one a client left, and after the node restarted (Redis keeps the history).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(15);
const BIN: &str = env!("CARGO_BIN_EXE_tsugi-notifyd");

async fn open(addr: SocketAddr, token: &str, resume: Option<(u64, &str)>) -> Ws {
    open_protocol(addr, token, Some("r"), resume).await
}

/// The users in a presence frame.
fn users(p: &Value) -> BTreeSet<String> {
    p["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user"].as_str().unwrap().to_owned())
        .collect()
}

/// The users a new socket on `addr` sees in the room.
async fn seen_from(addr: SocketAddr) -> BTreeSet<String> {
    let mut ws = open(addr, &token("1", "observer"), None).await;
    let mut u = users(&frame_of(&mut ws, "presence").await);
    u.remove("observer");
    u
}

fn cluster_config(port: u16) -> tsugi_notifyd::Config {
    let mut c = config();
    c.redis = Some(plain(port));
    c.limits.presence_ttl = Duration::from_secs(2);
    c
}

/// A daemon in a process of its own on `redis_port`, killed (SIGKILL) on drop.
struct Process {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Process {
    async fn start(redis_port: u16) -> Process {
        let port = free_port();
        let child = Command::new(BIN)
            .args([
                "--url",
                "ws://127.0.0.1:2021",
                "--bind",
                "127.0.0.1",
                "--metrics-bind",
                "off",
            ])
            .args(["--secret", SECRET, "--presence-ttl-secs", "2"])
            .args(["--proxyport", &port.to_string()])
            .args(["--redis-url", &format!("redis://127.0.0.1:{redis_port}/")])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut p = Process { child, addr };
        let deadline = std::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(p.child.try_wait().unwrap().is_none(), "the daemon exited");
            assert!(
                std::time::Instant::now() < deadline,
                "the daemon did not listen"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        p
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_spans_three_nodes_and_a_killed_nodes_members_leave() {
    let redis = RedisServer::start("presence3", "", false);
    let a = start(cluster_config(redis.port)).await;
    let b = start(cluster_config(redis.port)).await;
    let c = Process::start(redis.port).await;
    wait_until("backplanes up", WAIT, || {
        a.metrics.backplane_is_up() && b.metrics.backplane_is_up()
    })
    .await;
    let mut alice = open(a.addr, &token("1", "alice"), None).await;
    frame_of(&mut alice, "presence").await;
    // Joins reach the other nodes' members.
    let mut bob = open(b.addr, &token("1", "bob"), None).await;
    frame_of(&mut bob, "presence").await;
    let j = frame_of(&mut alice, "join").await;
    assert_eq!(j["user"], "bob");
    let _carol = open(c.addr, &token("1", "carol"), None).await;
    let j = frame_of(&mut alice, "join").await;
    assert_eq!(j["user"], "carol");
    // Every node shows the same room, whichever a browser lands on; another room and
    // another link show none of it.
    let everyone: BTreeSet<String> = ["alice", "bob", "carol"].map(String::from).into();
    for addr in [a.addr, b.addr, c.addr] {
        let want = &everyone;
        eventually("the same presence on every node", WAIT, || async move {
            (seen_from(addr).await == *want).then_some(())
        })
        .await;
    }
    let mut elsewhere = open(a.addr, &token("2", "dave"), None).await;
    assert!(
        users(&frame_of(&mut elsewhere, "presence").await) == BTreeSet::from(["dave".to_owned()])
    );

    // The third node dies without a word: carol leaves within the expiry.
    drop(c);
    let started = std::time::Instant::now();
    // (The observers' own joins and leaves come and go meanwhile.)
    while frame_of(&mut alice, "leave").await["user"] != "carol" {}
    assert!(started.elapsed() < Duration::from_secs(10));
    let want: BTreeSet<String> = ["alice", "bob"].map(String::from).into();
    assert_eq!(seen_from(b.addr).await, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_recovers_on_another_node_and_after_its_node_restarted() {
    let redis = RedisServer::start("recover3", "", false);
    let a = start(cluster_config(redis.port)).await;
    let b = start(cluster_config(redis.port)).await;
    wait_until("backplanes up", WAIT, || {
        a.metrics.backplane_is_up() && b.metrics.backplane_is_up()
    })
    .await;
    let mut reader = open(a.addr, &token("1", "reader"), None).await;
    let hello = frame_of(&mut reader, "hello").await;
    let epoch = hello["epoch"].as_str().unwrap().to_owned();
    assert_eq!(epoch.len(), 16);
    // A raw sender on the other node, subscribed once its own socket is there.
    let mut sender = connect(b.addr, &token("1", "sender"), Some("r")).await;
    wait_until("b subscribed", WAIT, || {
        b.metrics.backplane_channel_count() == 1
    })
    .await;
    for i in 1..=5 {
        sender.send(Message::text(format!("m{i}"))).await.unwrap();
    }
    for i in 1..=5 {
        let m = frame_of(&mut reader, "message").await;
        assert_eq!(
            (m["seq"].as_u64(), m["data"].as_str(), m["from"].as_str()),
            (Some(i), Some(&*format!("m{i}")), Some("sender"))
        );
    }
    // The reader goes; five more are sent; it comes back on a third node.
    drop(reader);
    for i in 6..=10 {
        sender.send(Message::text(format!("m{i}"))).await.unwrap();
    }
    let c = start(cluster_config(redis.port)).await;
    wait_until("c up", WAIT, || c.metrics.backplane_is_up()).await;
    let mut back = open(c.addr, &token("1", "reader"), Some((5, &epoch))).await;
    let hello = frame_of(&mut back, "hello").await;
    assert_eq!(hello["epoch"], epoch.as_str());
    let mut got = Vec::new();
    loop {
        let f = frame(&mut back).await;
        match f["type"].as_str().unwrap() {
            "message" => got.push((
                f["seq"].as_u64().unwrap(),
                f["data"].as_str().unwrap().to_owned(),
            )),
            "recovery" => {
                assert_eq!(f["recovered"], true, "{f}");
                break;
            }
            _ => {}
        }
    }
    let want: Vec<(u64, String)> = (6..=10).map(|i| (i, format!("m{i}"))).collect();
    assert_eq!(got, want);
    // Live again, without a gap or a repeat.
    sender.send(Message::text("m11")).await.unwrap();
    let m = frame_of(&mut back, "message").await;
    assert_eq!(
        (m["seq"].as_u64(), m["data"].as_str()),
        (Some(11), Some("m11"))
    );
    // Its own message is acknowledged with its sequence.
    back.send(Message::text("mine")).await.unwrap();
    assert_eq!(frame_of(&mut back, "ack").await["seq"], 12);
    assert_eq!(recv(&mut sender).await, Message::text("mine"));

    // Node C restarts (a deploy): Redis kept the history, so nothing is lost.
    drop(back);
    c.shutdown();
    c.wait().await;
    sender.send(Message::text("m13")).await.unwrap();
    // Nothing waits for its backplane: a client that reconnects the moment the node
    // listens still recovers (its question waits for the first session to Redis).
    let c2 = start(cluster_config(redis.port)).await;
    let mut again = open(c2.addr, &token("1", "reader"), Some((12, &epoch))).await;
    let m = frame_of(&mut again, "message").await;
    assert_eq!(
        (
            m["seq"].as_u64(),
            m["data"].as_str(),
            m["recovered"].as_bool()
        ),
        (Some(13), Some("m13"), Some(true))
    );
    assert_eq!(frame_of(&mut again, "recovery").await["recovered"], true);
    // The publish API gets its sequence from Redis too.
    let publish = publish_token("1");
    let (status, body) =
        post_publish(a.addr, Some(&publish), r#"{"room":"r","message":"server"}"#).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(body.trim()).unwrap()["seq"],
        14
    );
    let m = frame_of(&mut again, "message").await;
    assert_eq!(
        (m["seq"].as_u64(), m["server"].as_bool()),
        (Some(14), Some(true))
    );
}

/// A client of the test Redis (someone else who can write to it).
async fn redis_conn(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The Redis keys of room `r` of the tests' link 1 (the hex of "r" is 72).
fn room_key(kind: &str) -> String {
    let p =
        tsugi_notify_core::Plaintext::new("https://site.example", "1", Some("course"), Some("u"))
            .unwrap();
    format!("tsugi-notify:{}:72:{kind}", p.space())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoever_writes_to_redis_cannot_replay_renumber_or_bloat_a_room() {
    let redis = RedisServer::start("hostile-v1", "", false);
    let a = start(cluster_config(redis.port)).await;
    wait_until("up", WAIT, || a.metrics.backplane_is_up()).await;
    let mut reader = open(a.addr, &token("1", "reader"), None).await;
    let hello = frame_of(&mut reader, "hello").await;
    let epoch = hello["epoch"].as_str().unwrap().to_owned();
    let mut sender = connect(a.addr, &token("1", "sender"), Some("r")).await;
    wait_until("subscribed", WAIT, || {
        a.metrics.backplane_channel_count() == 1
    })
    .await;
    // The attacker listens, to play back what it sees.
    let spy = redis::Client::open(format!("redis://127.0.0.1:{}/", redis.port)).unwrap();
    let mut spy = spy.get_async_pubsub().await.unwrap();
    let p =
        tsugi_notify_core::Plaintext::new("https://site.example", "1", Some("course"), Some("u"))
            .unwrap();
    let channel = format!("tsugi-notify:{}", p.space());
    spy.subscribe(&channel).await.unwrap();
    let mut spy = spy.into_on_message();
    use futures_util::StreamExt;
    sender.send(Message::text("grades posted")).await.unwrap();
    assert_eq!(frame_of(&mut reader, "message").await["seq"], 1);
    let captured: Vec<u8> = spy.next().await.unwrap().get_payload_bytes().to_vec();
    // 1. This node's own message played back, under its own and under new sequences.
    let envelope = &captured[captured.iter().rposition(|&b| b == b':').map_or(0, |_| {
        // S<epoch>:<seq>:<envelope>: after the second colon.
        let first = captured.iter().position(|&b| b == b':').unwrap();
        first
            + 1
            + captured[first + 1..]
                .iter()
                .position(|&b| b == b':')
                .unwrap()
            + 1
    })..];
    let mut conn = redis_conn(redis.port).await;
    for seq in ["1", "2", "424242", "9007199254740993"] {
        let mut replay = format!("S{epoch}:{seq}:").into_bytes();
        replay.extend_from_slice(envelope);
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(replay)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let _: i64 = redis::cmd("PUBLISH")
        .arg(&channel)
        .arg(&captured)
        .query_async(&mut conn)
        .await
        .unwrap();
    sender.send(Message::text("marker")).await.unwrap();
    let next = frame_of(&mut reader, "message").await;
    assert_eq!(
        (next["data"].as_str(), next["seq"].as_u64()),
        (Some("marker"), Some(2)),
        "no replay reached the reader"
    );

    // 2. A bloated epoch and a sequence past 2^53: the room starts a new epoch; the
    // reader, whose stream changed epoch, is told to reconnect (1012) and recover.
    let state = room_key("state");
    let _: () = redis::cmd("HSET")
        .arg(&state)
        .arg("e")
        .arg("x".repeat(4 << 20))
        .query_async(&mut conn)
        .await
        .unwrap();
    sender.send(Message::text("after bloat")).await.unwrap();
    let mut fresh = open(a.addr, &token("1", "fresh"), None).await;
    let hello2 = frame_of(&mut fresh, "hello").await;
    let epoch2 = hello2["epoch"].as_str().unwrap().to_owned();
    assert_eq!(epoch2.len(), 16);
    assert_ne!(epoch2, epoch);
    assert_eq!(
        close_code(&mut reader).await,
        Some(1012),
        "the reader is sent to recover"
    );
    let mut back = open(a.addr, &token("1", "reader"), Some((2, &epoch))).await;
    assert_eq!(frame_of(&mut back, "recovery").await["reason"], "epoch");
    let _: () = redis::cmd("HSET")
        .arg(&state)
        .arg("s")
        .arg("9007199254740993")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut third = open(a.addr, &token("1", "third"), None).await;
    let hello3 = frame_of(&mut third, "hello").await;
    assert_ne!(hello3["epoch"], epoch2.as_str());
    assert_eq!(hello3["seq"], 0);

    // 3. The counter renumbered (its field deleted): the history cannot take the next
    // message, so that epoch ends rather than answer with the wrong messages.
    let epoch3 = hello3["epoch"].as_str().unwrap().to_owned();
    for i in 0..3 {
        sender.send(Message::text(format!("k{i}"))).await.unwrap();
    }
    let last = loop {
        let f = frame_of(&mut third, "message").await;
        if f["data"] == "k2" {
            break f["seq"].as_u64().unwrap();
        }
    };
    let _: () = redis::cmd("HDEL")
        .arg(&state)
        .arg("s")
        .query_async(&mut conn)
        .await
        .unwrap();
    sender.send(Message::text("renumbered")).await.unwrap();
    sender.send(Message::text("renumbered 2")).await.unwrap();
    let mut late = open(a.addr, &token("1", "late"), Some((last - 1, &epoch3))).await;
    let r = frame_of(&mut late, "recovery").await;
    assert_eq!(r["recovered"], false, "{r}");

    // 4. A node's record copied under another field: it does not count, and nobody is
    // made to leave when the copy expires.
    let here = room_key("here");
    let fields: Vec<Vec<u8>> = redis::cmd("HKEYS")
        .arg(&here)
        .query_async(&mut conn)
        .await
        .unwrap();
    let record: Vec<u8> = redis::cmd("HGET")
        .arg(&here)
        .arg(&fields[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&here)
        .arg("0123456789abcdef")
        .arg(&record)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut watcher = open(a.addr, &token("1", "watcher"), None).await;
    let presence = frame_of(&mut watcher, "presence").await;
    let before = a
        .metrics
        .envelope_refused_count(tsugi_notifyd::metrics::EnvelopeRefusal::BadMac);
    assert!(before >= 1, "the copy was refused");
    // Past the presence expiry (2 s) and a refresh or two: the sender (in the copied
    // record, and still here) is never said to leave. (Sockets this test closed do.)
    assert!(users(&presence).contains("sender"));
    tokio::time::timeout(Duration::from_secs(4), async {
        loop {
            let f = frame(&mut watcher).await;
            assert!(!(f["type"] == "leave" && f["user"] == "sender"), "{f}");
        }
    })
    .await
    .expect_err("no leave for the sender within 4 s");
    let mut last_look = open(a.addr, &token("1", "look"), None).await;
    assert!(users(&frame_of(&mut last_look, "presence").await).contains("sender"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_hangs_protocol_readers_still_hear_their_own_node() {
    let redis = RedisServer::start("hang-v1", "", false);
    let a = start(cluster_config(redis.port)).await;
    wait_until("up", WAIT, || a.metrics.backplane_is_up()).await;
    let mut reader = open(a.addr, &token("1", "reader"), None).await;
    frame_of(&mut reader, "presence").await;
    let mut raw = connect(a.addr, &token("1", "raw"), Some("r")).await;
    let mut sender = connect(a.addr, &token("1", "sender"), Some("r")).await;
    wait_until("subscribed", WAIT, || {
        a.metrics.backplane_channel_count() == 1
    })
    .await;
    redis.freeze(true);
    sender
        .send(Message::text("while Redis hangs"))
        .await
        .unwrap();
    // The raw neighbour hears it at once; the protocol's reader too, without a
    // sequence, once the message is known not to reach Redis.
    assert_eq!(recv(&mut raw).await, Message::text("while Redis hangs"));
    let m = frame_of(&mut reader, "message").await;
    assert_eq!(
        (m["data"].as_str(), m["seq"].clone()),
        (Some("while Redis hangs"), Value::Null)
    );
    redis.freeze(false);
    wait_until("up again", Duration::from_secs(30), || {
        a.metrics.backplane_is_up()
    })
    .await;
    sender.send(Message::text("after")).await.unwrap();
    assert_eq!(frame_of(&mut reader, "message").await["data"], "after");
}
