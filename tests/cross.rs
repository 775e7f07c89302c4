//! Across components: tokens minted by PHP running the built extension (v1 and legacy),
//! and legacy tokens minted by PHP's own openssl functions the way unmodified Tsugi does,
//! open sockets on the daemon; `WebSocket::publish()` posts where
//! `websocket_publish_url` says, with a token good for one room; a second, independent
//! client library (Node's `ws`) talks to Rust clients through it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../crates/notifyd/tests/ca/mod.rs"]
mod ca;
#[path = "../crates/notifyd/tests/common/mod.rs"]
mod common;
mod php;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use php::{php, php_async, root, WWWROOT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tsugi_notify_core::{Keyring, Room, Scope, Tokens};
use tsugi_notifyd::{Config, Running};

/// The daemon with its shipped limits.
async fn daemon() -> Running {
    start(Config::for_loopback(SECRET).unwrap()).await
}

/// The next text message within 5 s.
async fn text(ws: &mut Ws) -> Option<String> {
    next_text(ws, Duration::from_secs(5)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_publish_reaches_the_browsers_of_the_room() {
    let running = daemon().await;
    let tokens: Vec<String> = serde_json::from_str(&php(
        "echo json_encode([Tsugi\\Core\\WebSocket::getToken(launch(77, 1, 1)), Tsugi\\Core\\WebSocket::getToken(launch(77, 1, 2))]);",
    ))
    .unwrap();
    let mut a = connect(running.addr, &tokens[0], Some("grades")).await;
    let mut b = connect(running.addr, &tokens[1], Some("other")).await;
    let port = running.addr.port();
    let out = php_async(format!(
        "$CFG->websocket_url = 'ws://127.0.0.1:{port}'; \
         var_export(Tsugi\\Core\\WebSocket::publish(launch(77, 1, 9), 'grades', '{{\"graded\":true}}'));"
    ))
    .await;
    assert_eq!(out, "true");
    assert_eq!(text(&mut a).await.as_deref(), Some("{\"graded\":true}"));
    let heard = tokio::time::timeout(Duration::from_millis(300), b.next()).await;
    assert!(heard.is_err(), "another room hears nothing: {heard:?}");
}

/// One HTTP request as it arrived: the request line, the headers (names in lower
/// case) and the body.
#[derive(Debug)]
struct Captured {
    line: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Captured {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one HTTP request (head, then Content-Length bytes of body) from a stream.
async fn read_request(stream: &mut TcpStream) -> Captured {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection closed before the request head ended");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection closed before the body ended");
        body.extend_from_slice(&chunk[..n]);
    }
    Captured {
        line,
        headers,
        body: String::from_utf8(body).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_publish_sends_a_room_bound_token_to_websocket_publish_url() {
    // (a) websocket_publish_url points at a plain listener that captures the request;
    // websocket_url names another address, which must not be contacted.
    let capture = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let capture_port = capture.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut stream, _) = tokio::time::timeout(Duration::from_secs(10), capture.accept())
            .await
            .expect("publish() connected to websocket_publish_url")
            .unwrap();
        let req = read_request(&mut stream).await;
        stream
            .write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\
                  Connection: close\r\n\r\n{\"delivered\":1}\n",
            )
            .await
            .unwrap();
        req
    });
    let out = php_async(format!(
        "$CFG->websocket_url = 'wss://127.0.0.1:1'; \
         $CFG->websocket_publish_url = 'http://127.0.0.1:{capture_port}/'; \
         var_export(Tsugi\\Core\\WebSocket::publish(launch(77, 1, 9), 'grades', 'hello'));"
    ))
    .await;
    let req = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the capture server ends")
        .unwrap();
    assert_eq!(out, "true", "publish() took the capture server's 200");
    assert_eq!(req.line, "POST /publish HTTP/1.1");
    assert_eq!(req.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_str(&req.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"room": "grades", "message": "hello"})
    );
    let token = req
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .expect("a bearer token")
        .to_owned();
    let tokens = Tokens::new(Keyring::new([SECRET]).unwrap());
    let verified = tokens.verify(&token, Scope::Publish).unwrap();
    assert_eq!(
        verified.plaintext.to_string(),
        format!("{WWWROOT}::77::1::9")
    );
    assert_eq!(verified.room, Some(Room::new("grades").unwrap()));
    assert_eq!(
        verified.expires_at.unwrap() - verified.issued_at.unwrap(),
        30
    );
    assert!(
        tokens.verify(&token, Scope::Browser).is_err(),
        "it opens no browser socket"
    );

    // (b) The captured token replayed to a real daemon: its room only.
    let running = daemon().await;
    let browser: Vec<String> = serde_json::from_str(&php(
        "echo json_encode([Tsugi\\Core\\WebSocket::getToken(launch(77, 1, 1)), Tsugi\\Core\\WebSocket::getToken(launch(77, 1, 2))]);",
    ))
    .unwrap();
    let mut grades = connect(running.addr, &browser[0], Some("grades")).await;
    let mut other = connect(running.addr, &browser[1], Some("other")).await;
    for body in [
        r#"{"room":"other","message":"replayed"}"#,
        r#"{"room":"","message":"replayed"}"#,
        r#"{"message":"replayed"}"#,
    ] {
        assert_eq!(
            post_publish(running.addr, Some(&token), body).await,
            (403, "{\"error\":\"invalid token\"}\n".to_owned()),
            "{body}"
        );
    }
    assert_eq!(
        post_publish(
            running.addr,
            Some(&token),
            r#"{"room":"grades","message":"replayed"}"#
        )
        .await,
        (200, "{\"delivered\":1}\n".to_owned())
    );
    assert_eq!(text(&mut grades).await.as_deref(), Some("replayed"));
    let heard = tokio::time::timeout(Duration::from_millis(300), other.next()).await;
    assert!(heard.is_err(), "another room hears nothing: {heard:?}");

    // (c) publish() through websocket_publish_url to the real daemon, websocket_url
    // pointing elsewhere, reaches the browsers of the room.
    let port = running.addr.port();
    let out = php_async(format!(
        "$CFG->websocket_url = 'ws://127.0.0.1:1'; \
         $CFG->websocket_publish_url = 'http://127.0.0.1:{port}'; \
         var_export(Tsugi\\Core\\WebSocket::publish(launch(77, 1, 9), 'grades', '{{\"graded\":true}}'));"
    ))
    .await;
    assert_eq!(out, "true");
    assert_eq!(
        text(&mut grades).await.as_deref(),
        Some("{\"graded\":true}")
    );
    let heard = tokio::time::timeout(Duration::from_millis(300), other.next()).await;
    assert!(heard.is_err(), "another room hears nothing: {heard:?}");
    running.shutdown();
}

#[tokio::test]
async fn php_minted_tokens_of_every_kind_share_one_space() {
    let running = daemon().await;
    // v1 from WebSocket::getToken, legacy from the extension's legacy mode, and legacy
    // exactly as tsugi-php mints it (openssl_encrypt + hash_hmac).
    let tokens = php(
        "$v1 = Tsugi\\Core\\WebSocket::getToken(launch(42, 7, 1)); \
         $CFG->websocket_token_format = 'legacy'; \
         $ext_legacy = Tsugi\\Core\\WebSocket::getToken(launch(42, 7, 2)); \
         $php_legacy = TsugiNotifyReference\\legacy_seal($CFG->websocket_secret, $CFG->wwwroot . '::42::7::7', random_bytes(16)); \
         $other = TsugiNotifyReference\\legacy_seal($CFG->websocket_secret, $CFG->wwwroot . '::43::7::7', random_bytes(16)); \
         echo json_encode([$v1, $ext_legacy, $php_legacy, $other]);",
    );
    let tokens: Vec<String> = serde_json::from_str(&tokens).unwrap();
    assert_eq!(tokens[0].matches('.').count(), 2);
    assert!(!tokens[1].contains('.') && !tokens[2].contains('.'));
    let mut socks = Vec::new();
    for t in &tokens {
        socks.push(connect(running.addr, t, Some("room")).await);
    }
    socks[0].send(Message::text("from v1")).await.unwrap();
    assert_eq!(text(&mut socks[1]).await.as_deref(), Some("from v1"));
    assert_eq!(text(&mut socks[2]).await.as_deref(), Some("from v1"));
    socks[2]
        .send(Message::text("from tsugi-php"))
        .await
        .unwrap();
    assert_eq!(text(&mut socks[0]).await.as_deref(), Some("from tsugi-php"));
    // Link 43 is another space: it hears nothing.
    let mut other = socks.pop().unwrap();
    let heard = tokio::time::timeout(Duration::from_millis(300), other.next()).await;
    assert!(heard.is_err(), "{heard:?}");
    // A token signed with another secret is refused.
    let foreign = php(
        "$CFG->websocket_secret = 'another-site'; echo Tsugi\\Core\\WebSocket::getToken(launch(42, 7, 1));",
    );
    assert_eq!(
        refused_status(running.addr, &foreign, Some("room")).await,
        403
    );
}

/// Runs the Node `ws` client; returns its JSON events.
async fn node_client(args: Vec<String>) -> Vec<serde_json::Value> {
    let script = root().join("tests/node/client.mjs");
    assert!(
        root().join("tests/node/node_modules/ws").exists(),
        "install the Node client first (make test does: npm ci --prefix tests/node)"
    );
    let out = tokio::process::Command::new("node")
        .arg(script)
        .args(args)
        .output()
        .await
        .expect("node is installed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn node_ws_client_and_rust_client_talk_through_the_daemon() {
    let running = daemon().await;
    let tokens: Vec<String> = serde_json::from_str(&php(
        "echo json_encode([Tsugi\\Core\\WebSocket::getToken(launch(5, 1, 1)), Tsugi\\Core\\WebSocket::getToken(launch(5, 1, 2))]);",
    ))
    .unwrap();
    let mut rust = connect(running.addr, &tokens[0], Some("r")).await;
    // Node connects, sends a text and a binary message, and waits for one from Rust.
    let node = tokio::spawn(node_client(vec![
        url(running.addr, &tokens[1], Some("r")),
        "--send".into(),
        "hello from node".into(),
        "--send-binary".into(),
        "00ff10".into(),
        "--expect".into(),
        "1".into(),
    ]));
    assert_eq!(text(&mut rust).await.as_deref(), Some("hello from node"));
    assert_eq!(
        recv(&mut rust).await,
        Message::binary(vec![0x00, 0xff, 0x10])
    );
    rust.send(Message::text("hello from rust")).await.unwrap();
    let events = node.await.unwrap();
    let messages: Vec<_> = events.iter().filter(|e| e["event"] == "message").collect();
    assert_eq!(messages.len(), 1, "{events:?}");
    assert_eq!(messages[0]["type"], "text");
    assert_eq!(
        messages[0]["data"], "hello from rust",
        "no echo of node's own messages"
    );
    // Node sees a refusal as an HTTP status before any upgrade.
    let refused = node_client(vec![url(running.addr, "bad-token", Some("r"))]).await;
    assert_eq!(refused[0]["event"], "refused");
    assert_eq!(refused[0]["status"], 403);
    // And the server's close code at shutdown.
    let closing = tokio::spawn(node_client(vec![
        url(running.addr, &tokens[1], Some("r")),
        "--timeout".into(),
        "5000".into(),
    ]));
    // Rust's client, the first Node client and this one: shut down once it is in.
    wait_until("the Node client connected", Duration::from_secs(10), || {
        metric(&running.metrics, "tsugi_notify_handshakes_accepted_total") == 3
    })
    .await;
    running.shutdown();
    let events = closing.await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "close" && e["code"] == 1001),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_publish_reaches_a_wss_daemon_over_https_trusting_websocket_ca_file() {
    let dir = std::env::temp_dir().join(format!("cross-wss-{}", std::process::id()));
    let test_ca = ca::TestCa::new(&dir);
    let leaf = test_ca.leaf("daemon");
    let c = on_wss(
        Config::for_loopback(SECRET).unwrap(),
        "127.0.0.1",
        &leaf.cert,
        &leaf.key,
        None,
    );
    let running = start(c).await;
    let port = running.addr.port();
    let publish = |ca_file: &str| {
        format!(
            "$CFG->websocket_url = 'wss://127.0.0.1:{port}'; {ca_file} \
             var_export(Tsugi\\Core\\WebSocket::publish(launch(77, 1, 9), 'grades', 'over https'));"
        )
    };
    // The test CA is in no system store: without websocket_ca_file the daemon is not
    // trusted, and publish() answers false.
    assert_eq!(php_async(publish("")).await, "false");
    let ca_file = test_ca.ca_file().display().to_string();
    let missing = format!(
        "$CFG->websocket_ca_file = '{}';",
        dir.join("none.pem").display()
    );
    assert_eq!(php_async(publish(&missing)).await, "false");
    assert_eq!(
        php_async(publish("$CFG->websocket_ca_file = '';")).await,
        "false"
    );
    let trusted = format!("$CFG->websocket_ca_file = '{ca_file}';");
    assert_eq!(php_async(publish(&trusted)).await, "true");
    assert_eq!(
        metric(&running.metrics, "tsugi_notify_messages_received_total"),
        1
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_presence_and_publish_sequence_come_from_the_real_daemon() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let running = daemon().await;
    let tokens: Vec<String> = serde_json::from_str(&php(
        "echo json_encode([Tsugi\\Core\\WebSocket::getToken(launch(77, 1, 1)), Tsugi\\Core\\WebSocket::getToken(launch(77, 1, 2))]);",
    ))
    .unwrap();
    // User 1 with the protocol (its room then keeps a sequence), user 2 raw, twice.
    let mut req = url(running.addr, &tokens[0], Some("grades"))
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "tsugi-notify.v1".parse().unwrap());
    let (mut json, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let _raw = connect(running.addr, &tokens[1], Some("grades")).await;
    let _raw2 = connect(running.addr, &tokens[1], Some("grades")).await;
    let _elsewhere = connect(running.addr, &tokens[1], Some("other")).await;
    let port = running.addr.port();
    let out = php_async(format!(
        "$CFG->websocket_url = 'ws://127.0.0.1:{port}'; \
         $who = Tsugi\\Core\\WebSocket::presence(launch(77, 1, 9), 'grades'); sort($who); \
         $ok = Tsugi\\Core\\WebSocket::publish(launch(77, 1, 9), 'grades', 'hello'); \
         echo json_encode([$who, Tsugi\\Core\\WebSocket::presence(launch(77, 1, 9), 'empty'), \
             $ok, Tsugi\\Core\\WebSocket::lastPublishSequence()]);"
    ))
    .await;
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(got, serde_json::json!([["1", "2"], [], true, 1]), "{out}");
    // The protocol's socket got it with that sequence, from the server.
    loop {
        let f: serde_json::Value = serde_json::from_str(&text(&mut json).await.unwrap()).unwrap();
        if f["type"] == "message" {
            assert_eq!(
                (f["seq"].clone(), f["server"].clone()),
                (1.into(), true.into())
            );
            break;
        }
    }
    // A daemon that is gone: false.
    running.shutdown();
    running.wait().await;
    let out = php_async(format!(
        "$CFG->websocket_url = 'ws://127.0.0.1:{port}'; \
         var_export(Tsugi\\Core\\WebSocket::presence(launch(77, 1, 9), 'grades'));"
    ))
    .await;
    assert_eq!(out, "false");
}
