//! Redis shared with other software: whoever can PUBLISH on it must not reach a room.
//! Two daemons on a real redis-server (started here on a free loopback port): forged,
//! altered, moved, replayed and oversized envelopes are refused and counted while real
//! ones go through; and the backplane over TLS (rediss://, a test CA made here) with an
//! ACL user whose password comes from a file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ca;
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tsugi_notify_core::Plaintext;
use tsugi_notifyd::config::Redis;
use tsugi_notifyd::metrics::EnvelopeRefusal as Refused;

/// The channel of the test space (link `1` of the tests' site).
fn channel(link: &str) -> String {
    let p = Plaintext::new("https://site.example", link, Some("course"), Some("u")).unwrap();
    format!("tsugi-notify:{}", p.space())
}

async fn publish(port: u16, channel: &str, bytes: &[u8]) {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(channel)
        .arg(bytes)
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_moved_replayed_and_oversized_envelopes_never_reach_a_room() {
    let redis = RedisServer::start("forge", "", false);
    let a = node(plain(redis.port)).await;
    let b = node(plain(redis.port)).await;
    let mut on_a = connect(a.addr, &token("1", "x"), Some("r")).await;
    let mut elsewhere_on_a = connect(a.addr, &token("2", "z"), Some("r")).await;
    let mut on_b = connect(b.addr, &token("1", "y"), Some("r")).await;
    wait_until("subscribed", Duration::from_secs(20), || {
        a.metrics.backplane_channel_count() == 2 && b.metrics.backplane_channel_count() == 1
    })
    .await;
    // An attacker with access to Redis listens to the channel, to replay what it sees.
    let spy = redis::Client::open(format!("redis://127.0.0.1:{}/", redis.port)).unwrap();
    let mut spy = spy.get_async_pubsub().await.unwrap();
    spy.subscribe(channel("1")).await.unwrap();
    let mut spy = spy.into_on_message();
    use futures_util::SinkExt;
    on_b.send(Message::text("genuine")).await.unwrap();
    assert_eq!(recv(&mut on_a).await, Message::text("genuine"));
    let captured: Vec<u8> = spy.next().await.unwrap().get_payload_bytes().to_vec();

    // 1. The old, unsigned envelope format, crafted by hand: a payload of its choosing.
    let mut forged = vec![1u8];
    forged.extend_from_slice(&42u64.to_be_bytes());
    forged.extend_from_slice(&1u64.to_be_bytes());
    forged.push(1);
    forged.extend_from_slice(&1u16.to_be_bytes());
    forged.extend_from_slice(b"r");
    forged.extend_from_slice(b"forged");
    publish(redis.port, &channel("1"), &forged).await;
    // 2. A real envelope with its payload changed.
    let mut altered = captured.clone();
    let at = altered.len() - 33;
    altered[at] ^= 0x20;
    publish(redis.port, &channel("1"), &altered).await;
    // 3. A real envelope moved to another space's channel.
    publish(redis.port, &channel("2"), &captured).await;
    // 4. A real envelope played again.
    publish(redis.port, &channel("1"), &captured).await;
    // 5. Seven megabytes.
    publish(redis.port, &channel("1"), &vec![b'x'; 7 << 20]).await;
    let m = &a.metrics;
    wait_until("every forgery counted", Duration::from_secs(20), || {
        m.envelope_refused_count(Refused::BadMac) == 3
            && m.envelope_refused_count(Refused::Replayed) == 1
            && m.envelope_refused_count(Refused::TooBig) == 1
    })
    .await;
    // Nothing of it reached anyone; real traffic still flows both ways.
    on_b.send(Message::text("after")).await.unwrap();
    assert_eq!(recv(&mut on_a).await, Message::text("after"));
    on_a.send(Message::text("back")).await.unwrap();
    assert_eq!(recv(&mut on_b).await, Message::text("back"));
    assert_eq!(
        recv_within(&mut elsewhere_on_a, Duration::from_millis(300)).await,
        None
    );
    let text = a.metrics.render();
    assert!(
        text.contains("tsugi_notify_backplane_envelopes_refused_total{reason=\"bad_mac\"} 3"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_rotated_secrets_still_hear_each_other() {
    let redis = RedisServer::start("rotate", "", false);
    // Node a already mints with the new secret; node b still has only the old one
    // first. Each accepts under any of its secrets.
    let mut ca = config();
    ca.tokens = tsugi_notify_core::Tokens::new(
        tsugi_notify_core::Keyring::new(["new-secret", SECRET]).unwrap(),
    );
    ca.redis = Some(plain(redis.port));
    let a = start(ca).await;
    let mut cb = config();
    cb.tokens = tsugi_notify_core::Tokens::new(
        tsugi_notify_core::Keyring::new([SECRET, "new-secret"]).unwrap(),
    );
    cb.redis = Some(plain(redis.port));
    let b = start(cb).await;
    let mut on_a = connect(a.addr, &token("1", "x"), None).await;
    let mut on_b = connect(b.addr, &token("1", "y"), None).await;
    wait_until("subscribed", Duration::from_secs(20), || {
        a.metrics.backplane_channel_count() == 1 && b.metrics.backplane_channel_count() == 1
    })
    .await;
    use futures_util::SinkExt;
    on_a.send(Message::text("from the new secret"))
        .await
        .unwrap();
    assert_eq!(recv(&mut on_b).await, Message::text("from the new secret"));
    on_b.send(Message::text("from the old secret"))
        .await
        .unwrap();
    assert_eq!(recv(&mut on_a).await, Message::text("from the old secret"));
}

/// A CA, and a certificate for 127.0.0.1 signed by it, as PEM files in `dir`.
fn test_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca = ca::TestCa::new(dir);
    let leaf = ca.leaf("redis");
    (ca.ca_file(), leaf.cert, leaf.key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_an_acl_user_whose_password_is_in_a_file() {
    let certs = std::env::temp_dir().join(format!("notifyd-tls-{}", std::process::id()));
    let (ca, cert, key) = test_ca(&certs);
    // The least the daemon needs (the README shows the same ACL): its own channels,
    // and the few commands it sends. The default user is switched off.
    let conf = format!(
        "tls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\ntls-auth-clients no\n\
         user default off\n\
         user tsugi-notify on >acl-pass-word resetchannels &tsugi-notify:* resetkeys ~tsugi-notify:* -@all +publish +subscribe +unsubscribe +ping +evalsha +script|load +hget +hmget +hset +hdel +hlen +hgetall +hincrby +del +pexpire +xadd +xrange\n",
        cert.display(),
        key.display(),
        ca.display()
    );
    let redis = RedisServer::start("tls", &conf, true);
    let ca_pem = std::fs::read(&ca).unwrap();
    let good = Redis {
        url: format!("rediss://tsugi-notify@127.0.0.1:{}/", redis.port),
        password: Some("acl-pass-word".into()),
        ca_pem: Some(ca_pem.clone()),
    };
    let a = node(good.clone()).await;
    let b = node(good).await;
    let mut on_a = connect(a.addr, &token("1", "x"), None).await;
    let mut on_b = connect(b.addr, &token("1", "y"), None).await;
    wait_until(
        "both up and subscribed over TLS",
        Duration::from_secs(20),
        || {
            a.metrics.backplane_is_up()
                && b.metrics.backplane_is_up()
                && a.metrics.backplane_channel_count() == 1
                && b.metrics.backplane_channel_count() == 1
        },
    )
    .await;
    use futures_util::SinkExt;
    on_a.send(Message::text("over tls")).await.unwrap();
    assert_eq!(recv(&mut on_b).await, Message::text("over tls"));
    // That ACL is enough for presence and history too: a client of the protocol gets an
    // epoch, sequences, the other node's members, and recovers on the other node.
    let mut v1 = open_protocol(a.addr, &token("1", "v"), None, None).await;
    let hello = frame_of(&mut v1, "hello").await;
    let epoch = hello["epoch"].as_str().unwrap().to_owned();
    assert_eq!(epoch.len(), 16, "{hello}");
    let presence = frame_of(&mut v1, "presence").await;
    assert_eq!(presence["connections"], 3, "{presence}");
    on_b.send(Message::text("sequenced")).await.unwrap();
    let m = frame_of(&mut v1, "message").await;
    assert_eq!(
        (m["seq"].as_u64(), m["data"].as_str()),
        (Some(1), Some("sequenced"))
    );
    drop(v1);
    on_b.send(Message::text("missed")).await.unwrap();
    let mut back = open_protocol(b.addr, &token("1", "v"), None, Some((1, &epoch))).await;
    // "missed" comes recovered, or live if Redis had it only after the socket opened:
    // once either way.
    let mut got = Vec::new();
    let mut recovered = None;
    while recovered.is_none() || got.is_empty() {
        let f = frame(&mut back).await;
        match f["type"].as_str() {
            Some("message") => got.push((f["seq"].as_u64(), f["data"].as_str().map(str::to_owned))),
            Some("recovery") => recovered = Some(f["recovered"].clone()),
            _ => {}
        }
    }
    assert_eq!(recovered, Some(serde_json::Value::Bool(true)));
    assert_eq!(got, vec![(Some(2), Some("missed".to_owned()))]);
    // A wrong password, plain redis:// to a TLS port, or a CA that did not sign the
    // server's certificate: the backplane stays down (and says so), nothing crashes.
    let other_ca = test_ca(&certs.join("other")).0;
    let bad = [
        Redis {
            url: format!("rediss://tsugi-notify@127.0.0.1:{}/", redis.port),
            password: Some("wrong".into()),
            ca_pem: Some(ca_pem.clone()),
        },
        Redis {
            url: format!(
                "redis://tsugi-notify:acl-pass-word@127.0.0.1:{}/",
                redis.port
            ),
            password: None,
            ca_pem: None,
        },
        Redis {
            url: format!("rediss://tsugi-notify@127.0.0.1:{}/", redis.port),
            password: Some("acl-pass-word".into()),
            ca_pem: Some(std::fs::read(&other_ca).unwrap()),
        },
    ];
    for r in bad {
        let n = node(r).await;
        let _c = connect(n.addr, &token("1", "w"), None).await;
        let m = n.metrics.clone();
        wait_until("two failed attempts", Duration::from_secs(20), || {
            metric(&m, "tsugi_notify_backplane_reconnects_total") >= 2
        })
        .await;
        assert!(!n.metrics.backplane_is_up());
    }
    let _ = std::fs::remove_dir_all(&certs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_junk_on_a_channel_never_takes_the_backplane_down() {
    let redis = RedisServer::start("junk", "", false);
    let a = node(plain(redis.port)).await;
    let b = node(plain(redis.port)).await;
    let mut on_a = connect(a.addr, &token("1", "x"), None).await;
    let mut on_b = connect(b.addr, &token("1", "y"), None).await;
    wait_until("subscribed", Duration::from_secs(20), || {
        a.metrics.backplane_channel_count() == 1 && b.metrics.backplane_channel_count() == 1
    })
    .await;
    // Two connections publish 4 KiB of junk on the space's channel, 50 at a time with a
    // short pause: 2 x 2,000 envelopes, each refused or dropped unread (counted), and
    // neither node becomes a subscriber Redis cuts off. (A flood faster than a node can
    // read gets it cut off by Redis all the same: only an ACL that keeps others off the
    // channels prevents that; see the README.)
    // What the flood is judged by: reconnects from here on (a slow first start of
    // redis-server may cost an attempt before the subscription, which is not the flood's).
    let reconnects_before: Vec<u64> = [&a, &b]
        .iter()
        .map(|n| metric(&n.metrics, "tsugi_notify_backplane_reconnects_total"))
        .collect();
    let junk = vec![0x5a_u8; 4 * 1024];
    let floods = (0..2).map(|_| {
        let (port, junk, chan) = (redis.port, junk.clone(), channel("1"));
        tokio::spawn(async move {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            for _ in 0..40 {
                // Pacing: the flood's rate is what is under test, not a wait.
                tokio::time::sleep(Duration::from_millis(10)).await;
                let mut pipe = redis::pipe();
                for _ in 0..50 {
                    pipe.cmd("PUBLISH").arg(&chan).arg(&junk).ignore();
                }
                let () = pipe.query_async(&mut conn).await.unwrap();
            }
        })
    });
    futures_util::future::join_all(floods).await;
    use futures_util::SinkExt;
    // Every junk envelope is accounted for on each node, and neither lost Redis.
    for (n, before) in [&a, &b].into_iter().zip(reconnects_before) {
        let m = n.metrics.clone();
        wait_until("4,000 accounted for", Duration::from_secs(30), || {
            m.envelope_refused_count(Refused::BadMac) + m.envelope_refused_count(Refused::Overload)
                == 4_000
        })
        .await;
        assert!(n.metrics.backplane_is_up());
        assert_eq!(
            metric(&n.metrics, "tsugi_notify_backplane_reconnects_total"),
            before,
            "no reconnect during the flood"
        );
    }
    on_a.send(Message::text("after the junk")).await.unwrap();
    assert_eq!(recv(&mut on_b).await, Message::text("after the junk"));
}
