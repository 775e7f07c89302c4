//! Abuse, each with its expected outcome: a compression offer, ten thousand query
//! parameters, fragments, a ping flood, a thousand rooms, a connection flood above
//! max_connections. (Running out of file descriptors needs the daemon as a process
//! under a lower limit: process.rs, `out_of_file_descriptors_accept_backs_off_and_recovers`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;
use tsugi_notifyd::metrics::{Close, Refusal};

fn upgrade_request(token: &str, extra: &str) -> String {
    format!(
        "GET /notify?token={} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n",
        enc(token)
    )
}

#[tokio::test]
async fn compression_offered_by_the_client_is_not_negotiated() {
    let server = start(config()).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let req = upgrade_request(
        &token("1", "a"),
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(!head.contains("sec-websocket-extensions"), "{head}");
}

#[tokio::test]
async fn a_query_of_ten_thousand_parameters_is_refused() {
    let server = start(config()).await;
    let q: String = (0..10_000).map(|i| format!("&p{i}=1")).collect();
    let req = format!("GET /notify?token=x{q} HTTP/1.1\r\nHost: x\r\n\r\n");
    // Over the head limit as a whole: 431; within it, too many parameters: 400.
    assert_eq!(raw_http(server.addr, req.as_bytes()).await.0, 431);
    let q: String = (0..1_000).map(|i| format!("&{i}")).collect();
    let req =
        upgrade_request(&token("1", "a"), "").replacen(" HTTP/1.1", &format!("{q} HTTP/1.1"), 1);
    assert_eq!(raw_http(server.addr, req.as_bytes()).await.0, 400);
}

#[tokio::test]
async fn fragmented_messages_are_reassembled_and_bounded() {
    let mut cfg = config();
    cfg.limits.max_message_bytes = 4096;
    let server = start(cfg).await;
    let mut a = connect(server.addr, &token("1", "a"), None).await;
    let mut b = connect(server.addr, &token("1", "b"), None).await;
    // A message in three fragments arrives whole.
    let parts = [
        Frame::message(b"frag".to_vec(), OpCode::Data(Data::Text), false),
        Frame::message(b"men".to_vec(), OpCode::Data(Data::Continue), false),
        Frame::message(b"ted".to_vec(), OpCode::Data(Data::Continue), true),
    ];
    for f in parts {
        a.send(Message::Frame(f)).await.unwrap();
    }
    assert_eq!(recv(&mut b).await, Message::text("fragmented"));
    // A flood of small fragments that never ends: closed at the size bound (1009).
    let _ = a
        .send(Message::Frame(Frame::message(
            vec![b'x'; 10],
            OpCode::Data(Data::Text),
            false,
        )))
        .await;
    for _ in 0..1000 {
        if a.feed(Message::Frame(Frame::message(
            vec![b'x'; 10],
            OpCode::Data(Data::Continue),
            false,
        )))
        .await
        .is_err()
        {
            break;
        }
    }
    let _ = a.flush().await;
    assert_eq!(close_code(&mut a).await, Some(1009));
    assert_eq!(recv_within(&mut b, Duration::from_millis(300)).await, None);
    assert_eq!(server.metrics.closed_count(Close::TooBig), 1);
}

#[tokio::test]
async fn a_ping_flood_neither_relays_nor_harms_others() {
    let server = start(config()).await;
    let mut a = connect(server.addr, &token("1", "a"), None).await;
    let mut b = connect(server.addr, &token("1", "b"), None).await;
    for _ in 0..5_000 {
        a.feed(Message::Ping(vec![1, 2, 3].into())).await.unwrap();
    }
    a.flush().await.unwrap();
    // Pings go nowhere else; the room still works both ways.
    assert_eq!(recv_within(&mut b, Duration::from_millis(300)).await, None);
    b.send(Message::text("after the flood")).await.unwrap();
    assert_eq!(recv(&mut a).await, Message::text("after the flood"));
}

#[tokio::test]
async fn a_client_opening_a_thousand_rooms_in_one_space_gets_them_isolated() {
    // Room isolation with one token; the per-token cap is tested in hostile.rs.
    let server = start(config()).await;
    let mut socks = Vec::new();
    for r in 0..1000 {
        socks.push(connect(server.addr, &token("1", "u"), Some(&format!("room{r}"))).await);
    }
    let mut listener = connect(server.addr, &token("1", "v"), Some("room500")).await;
    socks[500].send(Message::text("to 500")).await.unwrap();
    socks[501].send(Message::text("to 501")).await.unwrap();
    assert_eq!(recv(&mut listener).await, Message::text("to 500"));
    assert_eq!(
        recv_within(&mut listener, Duration::from_millis(300)).await,
        None
    );
    assert!(server.metrics.render().contains("tsugi_notify_rooms 1000"));
}

#[tokio::test]
async fn a_connection_flood_above_max_connections_gets_503_and_spares_the_others() {
    let mut cfg = config();
    cfg.limits.max_connections = 50;
    let server = start(cfg).await;
    let mut a = connect(server.addr, &token("1", "a"), None).await;
    let mut b = connect(server.addr, &token("1", "b"), None).await;
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 0..200 {
        match tokio_tungstenite::connect_async(url(server.addr, &token("2", &format!("{i}")), None))
            .await
        {
            Ok((ws, _)) => held.push(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 503);
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((held.len(), refused), (48, 152));
    a.send(Message::text("unaffected")).await.unwrap();
    assert_eq!(recv(&mut b).await, Message::text("unaffected"));
    assert_eq!(server.metrics.refused_count(Refusal::Capacity), 152);
}
