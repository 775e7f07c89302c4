//! wss:// in the daemon: a test CA made here, Rust clients over TLS (isolation and
//! delivery as over ws), a certificate renewed on disk served to new connections while
//! an open one keeps working, a broken renewal refused with the old pair kept, plain
//! HTTP on the TLS port refused, and a TLS handshake that never ends dropped in time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ca;
mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tsugi_notifyd::metrics::Refusal;
use tsugi_notifyd::tls::TlsFiles;
use tsugi_notifyd::{Config, Running};

type Wss = WebSocketStream<TlsStream<TcpStream>>;

struct Fixture {
    ca: ca::TestCa,
    dir: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fixture(name: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("notifyd-wss-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Fixture {
        ca: ca::TestCa::new(&dir),
        dir,
    }
}

/// The tests' config on wss://, TLS from `cert`/`key`, the files looked at every 100 ms.
fn tls_config(cert: PathBuf, key: PathBuf) -> Config {
    on_wss(
        config(),
        "localhost",
        &cert,
        &key,
        Some(Duration::from_millis(100)),
    )
}

/// A TLS client trusting the test CA only.
fn connector(ca: &ca::TestCa) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(ca.pem.as_bytes()).unwrap();
    roots.add(der).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(addr: SocketAddr, ca: &ca::TestCa) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector(ca)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("the TLS handshake succeeds with the test CA")
}

/// The leaf certificate the server presented.
fn presented(s: &TlsStream<TcpStream>) -> Vec<u8> {
    let (_, session) = s.get_ref();
    let certs: &[CertificateDer] = session.peer_certificates().unwrap();
    certs[0].to_vec()
}

/// A browser over wss://: `GET /notify` on a TLS session.
async fn wss(addr: SocketAddr, ca: &ca::TestCa, token: &str, room: &str) -> (Wss, Vec<u8>) {
    let tls = tls_connect(addr, ca).await;
    let der = presented(&tls);
    let url = format!(
        "wss://localhost:{}/notify?token={}&room={}",
        addr.port(),
        enc(token),
        enc(room)
    );
    let (ws, resp) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    assert_eq!(resp.status(), 101);
    (ws, der)
}

async fn text_within(ws: &mut Wss, wait: Duration) -> Option<String> {
    loop {
        match tokio::time::timeout(wait, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Some(t.to_string()),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

async fn daemon(leaf: &ca::Leaf) -> Running {
    start(tls_config(leaf.cert.clone(), leaf.key.clone())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_wss_messages_reach_their_room_and_no_other() {
    let fx = fixture("deliver");
    let leaf = fx.ca.leaf("server");
    let d = daemon(&leaf).await;
    let (mut a, der) = wss(d.addr, &fx.ca, &token("1", "a"), "r").await;
    assert_eq!(der, leaf.der);
    let (mut b, _) = wss(d.addr, &fx.ca, &token("1", "b"), "r").await;
    let (mut other_room, _) = wss(d.addr, &fx.ca, &token("1", "c"), "s").await;
    let (mut other_space, _) = wss(d.addr, &fx.ca, &token("2", "d"), "r").await;
    // Until b is in the room a's message may go nowhere: send until it arrives.
    let mut heard = None;
    for _ in 0..50 {
        a.send(Message::text("over tls")).await.unwrap();
        heard = text_within(&mut b, Duration::from_millis(100)).await;
        if heard.is_some() {
            break;
        }
    }
    assert_eq!(heard.as_deref(), Some("over tls"));
    assert_eq!(
        text_within(&mut other_room, Duration::from_millis(300)).await,
        None
    );
    assert_eq!(
        text_within(&mut other_space, Duration::from_millis(300)).await,
        None
    );
    // /healthz over https, as the doctor and a load balancer ask it.
    let mut tls = tls_connect(d.addr, &fx.ca).await;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.unwrap_or_default();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nok\n"), "{answer}");
    // The expiry is exported for an alert.
    let m = metric(
        &d.metrics,
        "tsugi_notify_tls_certificate_expiry_timestamp_seconds",
    );
    assert!(m > 1_700_000_000, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_serves_new_connections_and_open_ones_keep_working() {
    let fx = fixture("renew");
    let first = fx.ca.leaf("server");
    let d = daemon(&first).await;
    let (mut open_a, der) = wss(d.addr, &fx.ca, &token("1", "a"), "r").await;
    assert_eq!(der, first.der);
    let (mut open_b, _) = wss(d.addr, &fx.ca, &token("1", "b"), "r").await;

    // certbot renews: a new pair written beside, then moved over the served files.
    let renewed = fx.ca.leaf("renewed");
    std::fs::rename(&renewed.key, &first.key).unwrap();
    std::fs::rename(&renewed.cert, &first.cert).unwrap();
    let m = d.metrics.clone();
    wait_until("the renewed pair taken", Duration::from_secs(10), || {
        metric(&m, "tsugi_notify_tls_reloads_total") >= 1
    })
    .await;
    let (_fresh, der) = wss(d.addr, &fx.ca, &token("1", "c"), "r").await;
    assert_eq!(
        der, renewed.der,
        "a new connection gets the renewed certificate"
    );

    // The connections opened before still talk.
    let mut heard = None;
    for _ in 0..50 {
        open_a.send(Message::text("still here")).await.unwrap();
        heard = text_within(&mut open_b, Duration::from_millis(100)).await;
        if heard.is_some() {
            break;
        }
    }
    assert_eq!(heard.as_deref(), Some("still here"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_renewal_is_refused_and_the_pair_in_force_stays() {
    let fx = fixture("broken");
    let first = fx.ca.leaf("server");
    let d = daemon(&first).await;
    let m = d.metrics.clone();
    // A key that is not the certificate's.
    let other = fx.ca.leaf("other");
    std::fs::copy(&other.key, &first.key).unwrap();
    wait_until(
        "the mismatched pair refused",
        Duration::from_secs(10),
        || metric(&m, "tsugi_notify_tls_reload_failures_total") >= 1,
    )
    .await;
    let (_ws, der) = wss(d.addr, &fx.ca, &token("1", "a"), "r").await;
    assert_eq!(der, first.der, "the pair in force stays");
    // Not PEM at all, and a SIGHUP-style reload: refused too.
    std::fs::write(&first.cert, "not a certificate\n").unwrap();
    assert!(!d.reload_tls());
    let (_ws, der) = wss(d.addr, &fx.ca, &token("1", "b"), "r").await;
    assert_eq!(der, first.der);
    assert_eq!(metric(&m, "tsugi_notify_tls_reloads_total"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_the_tls_port_gets_a_clear_refusal_and_a_stalled_handshake_is_dropped() {
    let fx = fixture("plain");
    let leaf = fx.ca.leaf("server");
    let mut c = tls_config(leaf.cert.clone(), leaf.key.clone());
    c.limits.handshake_timeout = Duration::from_secs(1);
    let d = start(c).await;
    let (status, body) = raw_http(
        d.addr,
        b"GET /notify?token=x HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("this port speaks TLS"), "{body}");
    assert_eq!(d.metrics.refused_count(Refusal::PlainHttp), 1);

    // The first byte of a ClientHello, then nothing: closed at the handshake timeout.
    let mut s = TcpStream::connect(d.addr).await.unwrap();
    s.write_all(&[0x16]).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("the daemon closes a stalled TLS handshake")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(d.metrics.refused_count(Refusal::Timeout), 1);
}

#[test]
fn a_pair_that_does_not_belong_together_or_has_expired_is_refused_at_load() {
    let fx = fixture("load");
    let a = fx.ca.leaf("a");
    let b = fx.ca.leaf("b");
    let files = |cert: &PathBuf, key: &PathBuf| TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
        check_every: None,
        host: None,
    };
    let pair = tsugi_notifyd::tls::load(&files(&a.cert, &a.key)).unwrap();
    assert!(
        pair.names.contains(&"localhost".to_owned()),
        "{:?}",
        pair.names
    );
    let e = tsugi_notifyd::tls::load(&files(&a.cert, &b.key)).unwrap_err();
    assert!(e.contains("is not the key of the certificate"), "{e}");
    let e = tsugi_notifyd::tls::load(&files(&a.key, &a.key)).unwrap_err();
    assert!(e.starts_with("tls_cert"), "{e}");
    let e = tsugi_notifyd::tls::load(&files(&a.cert, &a.cert)).unwrap_err();
    assert!(e.starts_with("tls_key"), "{e}");
    // A certificate for other names than the url's host.
    let mut elsewhere = files(&a.cert, &a.key);
    elsewhere.host = Some("socket.example.edu".into());
    let e = tsugi_notifyd::tls::load(&elsewhere).unwrap_err();
    assert!(
        e.contains("not for the url's host socket.example.edu"),
        "{e}"
    );
    elsewhere.host = Some("LOCALHOST".into());
    assert!(tsugi_notifyd::tls::load(&elsewhere).is_ok());
    // A device where a file belongs is neither read for ever nor into memory.
    let e = tsugi_notifyd::tls::load(&files(&PathBuf::from("/dev/zero"), &a.key)).unwrap_err();
    assert!(e.contains("not a regular file"), "{e}");
    let old = fx.ca.leaf_with("old", |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let e = tsugi_notifyd::tls::load(&files(&old.cert, &old.key)).unwrap_err();
    assert!(e.contains("expired"), "{e}");
    // No error quotes a key.
    let key_text = std::fs::read_to_string(&a.key).unwrap();
    let inner = key_text.lines().nth(1).unwrap();
    assert!(!e.contains(inner));
}

#[test]
fn the_settings_check_the_pair_and_the_summary_shows_its_expiry() {
    let fx = fixture("settings");
    let a = fx.ca.leaf("a");
    let b = fx.ca.leaf("b");
    let toml = |url: &str, cert: &PathBuf, key: &PathBuf| {
        format!(
            "url = \"{url}\"\nsecret = \"s\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        )
    };
    let c = Config::from_toml_str(&toml("wss://localhost", &a.cert, &a.key)).unwrap();
    let summary = c.summary();
    let line = summary.lines().find(|l| l.starts_with("tls ")).unwrap();
    assert!(
        line.contains("certificate for 127.0.0.1, localhost expires "),
        "{line}"
    );
    let e = Config::from_toml_str(&toml("wss://localhost", &a.cert, &b.key)).unwrap_err();
    assert!(
        e.to_string().contains("is not the key of the certificate"),
        "{e}"
    );
    let e = Config::from_toml_str(&toml("ws://localhost:2021", &a.cert, &a.key)).unwrap_err();
    assert!(e.to_string().contains("tls_cert needs a wss:// url"), "{e}");
    let only_cert = format!(
        "url = \"wss://localhost\"\nsecret = \"s\"\ntls_cert = \"{}\"\n",
        a.cert.display()
    );
    let e = Config::from_toml_str(&only_cert).unwrap_err();
    assert!(e.to_string().contains("set both, or neither"), "{e}");
}

/// Runs openssl (keys in the encodings certbot and older tools write).
fn openssl(args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed (make test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_pkcs1_ecdsa_sec1_and_a_chain_with_an_intermediate_are_served() {
    let fx = fixture("kinds");
    // A full chain (leaf, then the intermediate), the client trusting the root only.
    let intermediate = fx.ca.intermediate("tsugi-notify test intermediate");
    let chained = intermediate.leaf("chained");
    // An ECDSA key in SEC1 ("EC PRIVATE KEY").
    let ec = fx.ca.leaf("ec");
    let sec1 = fx.dir.join("ec.sec1.key");
    openssl(&[
        "ec",
        "-in",
        &ec.key.display().to_string(),
        "-out",
        &sec1.display().to_string(),
    ]);
    assert!(std::fs::read_to_string(&sec1)
        .unwrap()
        .contains("BEGIN EC PRIVATE KEY"));
    // An RSA key in PKCS#1 ("RSA PRIVATE KEY").
    let pkcs1 = fx.dir.join("rsa.pkcs1.key");
    openssl(&[
        "genrsa",
        "-traditional",
        "-out",
        &pkcs1.display().to_string(),
        "2048",
    ]);
    let pkcs8 = fx.dir.join("rsa.pkcs8.key");
    openssl(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        &pkcs1.display().to_string(),
        "-out",
        &pkcs8.display().to_string(),
    ]);
    let rsa_key = rcgen::KeyPair::from_pem_and_sign_algo(
        &std::fs::read_to_string(&pkcs8).unwrap(),
        &rcgen::PKCS_RSA_SHA256,
    )
    .unwrap();
    let rsa = fx.ca.leaf_for_key("rsa", rsa_key, |_| {});
    assert!(std::fs::read_to_string(&pkcs1)
        .unwrap()
        .contains("BEGIN RSA PRIVATE KEY"));
    for (what, cert, key, der) in [
        ("a chain", &chained.cert, &chained.key, &chained.der),
        ("SEC1", &ec.cert, &sec1, &ec.der),
        ("PKCS#1 RSA", &rsa.cert, &pkcs1, &rsa.der),
    ] {
        let d = start(tls_config(cert.clone(), key.clone())).await;
        let (_ws, presented) = wss(d.addr, &fx.ca, &token("1", "a"), "r").await;
        assert_eq!(&presented, der, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshakes_that_never_finish_count_against_the_pending_cap() {
    let fx = fixture("pending");
    let leaf = fx.ca.leaf("server");
    let mut c = tls_config(leaf.cert.clone(), leaf.key.clone());
    c.limits.max_pending_handshakes = 4;
    let d = start(c).await;
    // Six sockets that start a ClientHello and stop: past the cap, the oldest are
    // closed to make room, and a real client still gets through.
    let mut stalled = Vec::new();
    for _ in 0..6 {
        let mut s = TcpStream::connect(d.addr).await.unwrap();
        s.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
        stalled.push(s);
    }
    let m = d.metrics.clone();
    wait_until("the oldest evicted", Duration::from_secs(10), || {
        m.refused_count(Refusal::Evicted) >= 2
    })
    .await;
    let (_ws, _) = wss(d.addr, &fx.ca, &token("1", "a"), "r").await;
}
