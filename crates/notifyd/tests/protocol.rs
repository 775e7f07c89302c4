//! The opt-in protocol `tsugi-notify.v1` (docs/protocol.md) against a real daemon and
//! real WebSocket clients: every frame type, raw and protocol clients in one room,
//! recovery (exactly once, in order, under live traffic) and its refusals, history
//! bounds under a flood, and isolation of presence and history between spaces and
//! rooms. With Redis: tests/protocol_cluster.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

use common::open_protocol as open;

/// The opening frames: hello and presence.
async fn opening(ws: &mut Ws) -> (Value, Value) {
    let hello = frame(ws).await;
    assert_eq!(hello["type"], "hello", "{hello}");
    let presence = frame(ws).await;
    assert_eq!(presence["type"], "presence", "{presence}");
    (hello, presence)
}

/// The users of a presence frame: user -> number of sockets.
fn users(p: &Value) -> BTreeMap<String, usize> {
    p["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["user"].as_str().unwrap().to_owned(),
                u["conns"].as_array().unwrap().len(),
            )
        })
        .collect()
}

#[tokio::test]
async fn raw_and_protocol_clients_share_a_room_and_every_frame_has_its_shape() {
    let d = start(config()).await;
    // A raw client (tsugi-static's tsugiNotifySocket) gets no subprotocol.
    let (mut raw, resp) =
        tokio_tungstenite::connect_async(url(d.addr, &token("1", "r"), Some("x")))
            .await
            .unwrap();
    assert!(resp.headers().get("sec-websocket-protocol").is_none());
    let mut a = open(d.addr, &token("1", "alice"), Some("x"), None).await;
    let (hello, presence) = opening(&mut a).await;
    assert_eq!(hello["protocol"], "tsugi-notify.v1");
    assert_eq!(hello["user"], "alice");
    assert_eq!(hello["seq"], 0);
    assert_eq!(hello["epoch"].as_str().unwrap().len(), 16);
    let alice_conn = hello["conn"].as_str().unwrap().to_owned();
    assert_eq!(
        users(&presence),
        BTreeMap::from([("alice".into(), 1), ("r".into(), 1)])
    );
    assert_eq!(presence["connections"], 2);
    // A second tab of the same user, and a legacy token (anonymous).
    let mut a2 = open(d.addr, &token("1", "alice"), Some("x"), None).await;
    let (_, p2) = opening(&mut a2).await;
    assert_eq!(users(&p2)["alice"], 2);
    let join = frame(&mut a).await;
    assert_eq!(join["type"], "join");
    assert_eq!(join["user"], "alice");
    assert_ne!(join["conn"], alice_conn.as_str());

    // Raw to protocol: a message frame with a sequence and the sender's user.
    raw.send(Message::text("from raw")).await.unwrap();
    let m = frame(&mut a).await;
    assert_eq!(m["type"], "message");
    assert_eq!(m["seq"], 1);
    assert_eq!(m["from"], "r");
    assert_eq!(m["data"], "from raw");
    assert!(m.get("recovered").is_none() && m.get("server").is_none());
    // Protocol to raw: the bare payload; the sender gets an ack, never its message.
    a.send(Message::text("from alice")).await.unwrap();
    assert_eq!(recv(&mut raw).await, Message::text("from alice"));
    let ack = frame(&mut a).await;
    assert_eq!(ack, serde_json::json!({"type": "ack", "seq": 2}));
    // Binary, in base64.
    raw.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    let b = frame_of(&mut a, "message").await;
    assert_eq!(
        (b["binary"].clone(), b["data"].clone(), b["seq"].clone()),
        (Value::Bool(true), "AAEC/w==".into(), 3.into())
    );
    // The server (POST /publish): from nobody, marked, its sequence in the answer.
    let publish = publish_token("1");
    let (status, body) =
        post_publish(d.addr, Some(&publish), r#"{"room":"x","message":"grades"}"#).await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(answer["seq"], 4);
    let s = frame_of(&mut a, "message").await;
    assert_eq!(
        (s["server"].clone(), s["from"].clone(), s["seq"].clone()),
        (Value::Bool(true), Value::Null, 4.into())
    );
    assert_eq!(recv(&mut raw).await, Message::text("grades"));
    // Leave: the second tab goes.
    a2.close(None).await.unwrap();
    let leave = frame_of(&mut a, "leave").await;
    assert_eq!(leave["user"], "alice");
    // GET /presence with a presence token bound to the room.
    let p =
        tsugi_notify_core::Plaintext::new("https://site.example", "1", Some("course"), Some("u"))
            .unwrap();
    let pres = tokens()
        .mint_for_room(
            &p,
            tsugi_notify_core::Scope::Presence,
            &tsugi_notify_core::Room::new("x").unwrap(),
            30,
        )
        .unwrap();
    let (status, body) = raw_http(
        d.addr,
        format!("GET /presence?room=x HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {pres}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let json: Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(json["count"], 2);
    assert_eq!(json["truncated"], false);
    // That token reads no other room, and a publish token reads no presence.
    let (status, _) = raw_http(
        d.addr,
        format!("GET /presence?room=y HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {pres}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = raw_http(
        d.addr,
        format!("GET /presence?room=x HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {publish}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_legacy_token_is_anonymous_in_presence() {
    let d = start(config()).await;
    let p =
        tsugi_notify_core::Plaintext::new("https://site.example", "1", Some("course"), Some("ctx"))
            .unwrap();
    let legacy = tokens().mint_legacy(&p).unwrap();
    let mut a = open(d.addr, &legacy, None, None).await;
    let (hello, presence) = opening(&mut a).await;
    assert_eq!(hello["user"], Value::Null);
    assert_eq!(presence["anonymous"], 1);
    assert_eq!(presence["count"], 0);
    assert!(presence["users"].as_array().unwrap().is_empty());
}

/// Reads message frames until `last` (a payload), returning their (seq, payload).
async fn messages_until(ws: &mut Ws, last: &str) -> Vec<(u64, String, bool)> {
    let mut out = Vec::new();
    loop {
        let f = frame(ws).await;
        if f["type"] != "message" {
            continue;
        }
        let data = f["data"].as_str().unwrap().to_owned();
        out.push((
            f["seq"].as_u64().unwrap(),
            data.clone(),
            f["recovered"] == true,
        ));
        if data == last {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_client_gets_what_it_missed_in_order_exactly_once_under_live_traffic() {
    let mut c = config();
    // Everything the writer sends while the reader is away is kept.
    c.limits.history.messages = 10_000;
    let d = start(c).await;
    let mut reader = open(d.addr, &token("1", "reader"), None, None).await;
    let (hello, _) = opening(&mut reader).await;
    let epoch = hello["epoch"].as_str().unwrap().to_owned();
    let mut sender = connect(d.addr, &token("1", "sender"), None).await;
    // Live traffic all along, from a raw client.
    let total = 600;
    let writer = tokio::spawn(async move {
        for i in 1..=total {
            sender.send(Message::text(format!("m{i}"))).await.unwrap();
            // Pacing: the reader goes and comes back while this still sends.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        sender
    });
    // Read some, then drop the connection mid-stream and come back after what was seen.
    let mut seen: Vec<u64> = Vec::new();
    while seen.len() < 100 {
        let f = frame_of(&mut reader, "message").await;
        seen.push(f["seq"].as_u64().unwrap());
    }
    drop(reader);
    let since = *seen.last().unwrap();
    let mut back = open(d.addr, &token("1", "reader"), None, Some((since, &epoch))).await;
    opening(&mut back).await;
    let mut recovered = 0;
    loop {
        let f = frame(&mut back).await;
        match f["type"].as_str().unwrap() {
            "message" => {
                assert_eq!(f["recovered"], true);
                seen.push(f["seq"].as_u64().unwrap());
                recovered += 1;
            }
            "recovery" => {
                assert_eq!(f["recovered"], true, "{f}");
                assert_eq!(f["count"], recovered);
                assert_eq!(f["since"], since);
                break;
            }
            _ => {}
        }
    }
    let _sender = writer.await.unwrap();
    for (seq, _, rec) in messages_until(&mut back, &format!("m{total}")).await {
        assert!(!rec);
        seen.push(seq);
    }
    let want: Vec<u64> = (1..=total).collect();
    assert_eq!(seen, want, "every message once, in order");
}

#[tokio::test]
async fn recovery_says_why_it_cannot_recover() {
    let mut c = config();
    c.limits.history.messages = 5;
    let d = start(c).await;
    let mut a = open(d.addr, &token("1", "a"), None, None).await;
    let (hello, _) = opening(&mut a).await;
    let epoch = hello["epoch"].as_str().unwrap().to_owned();
    let mut s = connect(d.addr, &token("1", "s"), None).await;
    for i in 1..=8 {
        s.send(Message::text(format!("m{i}"))).await.unwrap();
    }
    messages_until(&mut a, "m8").await;
    let reason = |since: u64, epoch: Option<&str>| {
        let epoch = epoch.map(str::to_owned);
        async move {
            let mut u = url(d.addr, &token("1", "b"), None);
            u.push_str(&format!("&since={since}"));
            if let Some(e) = epoch {
                u.push_str(&format!("&epoch={e}"));
            }
            let mut req = u.into_client_request().unwrap();
            req.headers_mut()
                .insert("Sec-WebSocket-Protocol", "tsugi-notify.v1".parse().unwrap());
            let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
            let r = frame_of(&mut ws, "recovery").await;
            (
                r["recovered"].as_bool().unwrap(),
                r["reason"].as_str().map(str::to_owned),
                r["count"].as_u64(),
            )
        }
    };
    assert_eq!(reason(3, Some(&epoch)).await, (true, None, Some(5)));
    assert_eq!(reason(8, Some(&epoch)).await, (true, None, Some(0)));
    assert_eq!(
        reason(2, Some(&epoch)).await,
        (false, Some("trimmed".into()), None)
    );
    assert_eq!(
        reason(3, Some("0123456789abcdef")).await,
        (false, Some("epoch".into()), None)
    );
    assert_eq!(reason(3, None).await, (false, Some("epoch".into()), None));
    assert_eq!(
        reason(9, Some(&epoch)).await,
        (false, Some("epoch".into()), None)
    );
    // A malformed since is a bad request, never a guess.
    let bad = format!("{}&since=-1", url(d.addr, &token("1", "b"), None));
    let mut req = bad.into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "tsugi-notify.v1".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 400),
        other => panic!("accepted: {:?}", other.map(|_| ())),
    }

    // history_messages = 0: no history at all.
    let mut c = config();
    c.limits.history.messages = 0;
    let off = start(c).await;
    let mut a = open(off.addr, &token("1", "a"), None, None).await;
    let (hello, _) = opening(&mut a).await;
    let e = hello["epoch"].as_str().unwrap().to_owned();
    let mut b = open(off.addr, &token("1", "b"), None, Some((0, &e))).await;
    let r = frame_of(&mut b, "recovery").await;
    assert_eq!(r["reason"], "unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_stays_within_its_bounds_under_a_flood() {
    let mut c = config();
    c.limits.history.messages = 1000;
    c.limits.history.bytes = 4000;
    c.limits.history.memory = 20_000;
    let d = start(c).await;
    // A quiet room keeps its one message however hard other rooms flood.
    let mut quiet = open(d.addr, &token("1", "q"), Some("quiet"), None).await;
    let (hello, _) = opening(&mut quiet).await;
    let quiet_epoch = hello["epoch"].as_str().unwrap().to_owned();
    let mut q_sender = connect(d.addr, &token("1", "qs"), Some("quiet")).await;
    q_sender.send(Message::text("keep me")).await.unwrap();
    messages_until(&mut quiet, "keep me").await;
    // Ten rooms, each flooded with 1,000 messages of 100 bytes (1 MB in all).
    let payload = "x".repeat(96);
    let mut epochs = Vec::new();
    for r in 0..10 {
        let room = format!("flood{r}");
        let mut watcher = open(d.addr, &token("1", "w"), Some(&room), None).await;
        let (hello, _) = opening(&mut watcher).await;
        let mut flooder = connect(d.addr, &token("1", "f"), Some(&room)).await;
        for i in 0..1000 {
            flooder
                .send(Message::text(format!("{i:03}:{payload}")))
                .await
                .unwrap();
        }
        flooder.send(Message::text("end")).await.unwrap();
        messages_until(&mut watcher, "end").await;
        epochs.push((room, hello["epoch"].as_str().unwrap().to_owned()));
    }
    // Each room kept at most its bytes (4,000: the last 39 messages of 100 and "end"):
    // asking further back is "trimmed". The node kept at most its memory (20,000): its
    // oldest messages went, so the rooms flooded last kept theirs, the first ones and
    // the quiet room's first message did not.
    let mut full_rooms = Vec::new();
    for (room, epoch) in &epochs {
        let mut ws = open(
            d.addr,
            &token("1", "late"),
            Some(room),
            Some((1001 - 39, epoch)),
        )
        .await;
        let r = frame_of(&mut ws, "recovery").await;
        if r["recovered"] == true {
            assert_eq!(r["count"], 39, "{room}: {r}");
            full_rooms.push(room.clone());
        } else {
            assert_eq!(r["reason"], "trimmed", "{room}: {r}");
        }
        let mut ws = open(
            d.addr,
            &token("1", "late"),
            Some(room),
            Some((1001 - 41, epoch)),
        )
        .await;
        assert_eq!(frame_of(&mut ws, "recovery").await["reason"], "trimmed");
    }
    assert!(
        full_rooms.contains(&"flood9".to_owned()),
        "the newest room kept its last messages: {full_rooms:?}"
    );
    assert!(
        !full_rooms.contains(&"flood0".to_owned()),
        "the oldest went: {full_rooms:?}"
    );
    assert!(
        full_rooms.len() * 3_900 <= 20_000,
        "{full_rooms:?}: rooms of 3,900 bytes"
    );
    let mut ws = open(
        d.addr,
        &token("1", "late"),
        Some("quiet"),
        Some((0, &quiet_epoch)),
    )
    .await;
    assert_eq!(frame_of(&mut ws, "recovery").await["reason"], "trimmed");
    // The quiet room still keeps what it sends now.
    q_sender.send(Message::text("keep me")).await.unwrap();
    messages_until(&mut quiet, "keep me").await;
    let mut ws = open(
        d.addr,
        &token("1", "late"),
        Some("quiet"),
        Some((1, &quiet_epoch)),
    )
    .await;
    let m = frame_of(&mut ws, "message").await;
    assert_eq!(m["data"], "keep me");
    assert_eq!(frame_of(&mut ws, "recovery").await["recovered"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_history_never_leak_between_spaces_and_rooms() {
    use rand::{Rng, SeedableRng};
    let seed: u64 = rand::rng().random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let d = start(config()).await;
    // Three sites' links and rooms; clients scattered over them at random.
    let groups: Vec<(String, String, String)> = [
        ("https://a.example", "1"),
        ("https://a.example", "2"),
        ("https://b.example", "1"),
    ]
    .iter()
    .flat_map(|(site, link)| {
        ["", "r"].map(|room| (site.to_string(), link.to_string(), room.to_string()))
    })
    .collect();
    let mut clients = Vec::new();
    for i in 0..24 {
        let g = rng.random_range(0..groups.len());
        let (site, link, room) = &groups[g];
        let user = format!("u{i}");
        let ws = open(d.addr, &token_on(site, link, &user), Some(room), None).await;
        clients.push((g, user, ws));
    }
    // Each sends twice; then everyone's presence and recovered history.
    for (i, (_, _, ws)) in clients.iter_mut().enumerate() {
        for k in 0..2 {
            ws.send(Message::text(format!("c{i}-{k}"))).await.unwrap();
        }
    }
    for (g, (site, link, room)) in groups.iter().enumerate() {
        let members: BTreeSet<String> = clients
            .iter()
            .filter(|c| c.0 == g)
            .map(|c| c.1.clone())
            .collect();
        let sent: BTreeSet<String> = clients
            .iter()
            .enumerate()
            .filter(|(_, c)| c.0 == g)
            .flat_map(|(i, _)| (0..2).map(move |k| format!("c{i}-{k}")))
            .collect();
        let mut ws = open(d.addr, &token_on(site, link, "observer"), Some(room), None).await;
        let (hello, presence) = opening(&mut ws).await;
        let mut listed: BTreeSet<String> = users(&presence).into_keys().collect();
        listed.remove("observer");
        assert_eq!(listed, members, "seed {seed}: presence of group {g}");
        // The room's history, from its start: exactly what its members sent.
        let epoch = hello["epoch"].as_str().unwrap().to_owned();
        let mut ws = open(
            d.addr,
            &token_on(site, link, "observer2"),
            Some(room),
            Some((0, &epoch)),
        )
        .await;
        let mut got = BTreeSet::new();
        loop {
            let f = frame(&mut ws).await;
            match f["type"].as_str().unwrap() {
                "message" => {
                    got.insert(f["data"].as_str().unwrap().to_owned());
                }
                "recovery" => break,
                _ => {}
            }
        }
        if sent.is_empty() {
            // A room nobody of the protocol joined before has no history yet.
            assert!(got.is_empty());
        } else {
            eventually_equal(&d, site, link, room, &epoch, &sent, seed, g, got).await;
        }
    }
}

/// The recovered history of a room equals `want` (messages may still be on their way
/// when it is first read: read again until they are there).
#[allow(clippy::too_many_arguments)]
async fn eventually_equal(
    d: &tsugi_notifyd::Running,
    site: &str,
    link: &str,
    room: &str,
    epoch: &str,
    want: &BTreeSet<String>,
    seed: u64,
    g: usize,
    mut got: BTreeSet<String>,
) {
    let deadline = std::time::Instant::now() + WAIT;
    while &got != want {
        assert!(
            got.is_subset(want),
            "seed {seed}: group {g} got {got:?}, want {want:?}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "seed {seed}: group {g} missing messages"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut ws = open(
            d.addr,
            &token_on(site, link, "observer3"),
            Some(room),
            Some((0, epoch)),
        )
        .await;
        got.clear();
        loop {
            let f = frame(&mut ws).await;
            match f["type"].as_str().unwrap() {
                "message" => {
                    got.insert(f["data"].as_str().unwrap().to_owned());
                }
                "recovery" => break,
                _ => {}
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_legal_burst_reaches_a_protocol_reader_however_much_json_grows_it() {
    // The shipped queue bound (1 MiB) and message size (64 KiB); the rate limit lifted
    // so that one sender's burst is the largest the bound must hold.
    let d = start(config()).await;
    let mut reader = open(d.addr, &token("1", "reader"), None, None).await;
    opening(&mut reader).await;
    let mut sender = connect(d.addr, &token("1", "sender"), None).await;
    // Characters JSON writes as six bytes each (\u0001), and quotes (two each): a
    // 64 KiB message is a frame of up to 384 KiB.
    let control = "\u{1}".repeat(64 * 1024);
    let quotes = "\"".repeat(64 * 1024);
    // 14 x 64 KiB = 896 KiB: within the reader's 1 MiB of payload, 5 MiB of JSON. The
    // reader reads nothing until all are sent.
    for i in 0..14 {
        let m = if i % 2 == 0 { &control } else { &quotes };
        sender.send(Message::text(m.clone())).await.unwrap();
    }
    sender.send(Message::text("end")).await.unwrap();
    let got = messages_until(&mut reader, "end").await;
    assert_eq!(
        got.len(),
        15,
        "the reader was not closed as slow, nor its frames refused"
    );
    assert_eq!(got[0].1, control);
    assert_eq!(got[1].1, quotes);
    assert_eq!(
        metric(
            &d.metrics,
            "tsugi_notify_messages_dropped_total{reason=\"slow_consumer\"}"
        ),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_churns_sockets_spends_its_own_rate_not_the_rooms() {
    let mut c = config();
    c.limits.messages_per_second = 20;
    c.limits.burst = 40;
    let d = start(c).await;
    let mut watcher = open(d.addr, &token("1", "watcher"), None, None).await;
    opening(&mut watcher).await;
    // One student opens and closes sockets as fast as it can.
    let started = std::time::Instant::now();
    let (mut accepted, mut refused) = (0u64, 0u64);
    for _ in 0..200 {
        match tokio_tungstenite::connect_async(url(d.addr, &token("1", "churner"), None)).await {
            Ok((mut ws, _)) => {
                accepted += 1;
                ws.close(None).await.unwrap();
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 429);
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let allowed = 40 + (20.0 * started.elapsed().as_secs_f64()).ceil() as u64 + 1;
    assert!(
        accepted <= allowed,
        "{accepted} opens accepted, at most {allowed} allowed"
    );
    assert!(refused > 0);
    assert_eq!(
        metric(
            &d.metrics,
            "tsugi_notify_handshakes_refused_total{reason=\"connect_rate\"}"
        ),
        refused
    );
    // The room's members heard at most one join and one leave per accepted socket, and
    // another user is not held back.
    let _other = open(d.addr, &token("1", "other"), None, None).await;
    let mut frames = 0;
    loop {
        let f = frame(&mut watcher).await;
        if f["user"] == "other" {
            break;
        }
        frames += 1;
    }
    assert!(
        frames <= 2 * accepted,
        "{frames} frames for {accepted} sockets"
    );
}
