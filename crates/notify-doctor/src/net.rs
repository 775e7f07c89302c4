//! What the doctor asks of the network: `GET /healthz` over http or https, and a
//! browser's WebSocket (ws or wss), each within a timeout.

use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::Connector;
use tungstenite::{Message, WebSocket};
use ureq::tls::{Certificate, RootCerts, TlsConfig};

/// Whom the doctor trusts over TLS: the public CAs a browser trusts (webpki roots), or
/// the CAs of `--ca-file` (a site on a private CA that its users' machines trust).
#[derive(Debug, Clone, Default)]
pub struct Trust(Option<Vec<CertificateDer<'static>>>);

impl Trust {
    /// The CAs of a PEM file.
    pub fn from_file(path: &std::path::Path) -> Result<Trust, String> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no certificate in it", path.display()));
        }
        Ok(Trust(Some(certs)))
    }

    fn ureq_roots(&self) -> RootCerts {
        match &self.0 {
            None => RootCerts::WebPki,
            Some(certs) => RootCerts::new_with_certs(
                &certs
                    .iter()
                    .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                    .collect::<Vec<_>>(),
            ),
        }
    }

    fn connector(&self) -> Option<Connector> {
        let certs = self.0.as_ref()?;
        let mut roots = rustls::RootCertStore::empty();
        for c in certs {
            let _ = roots.add(c.clone());
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Some(Connector::Rustls(Arc::new(config)))
    }
}

/// The largest message or frame the doctor reads: its own are under 100 bytes.
const MAX_MESSAGE: usize = 64 * 1024;

/// An HTTP answer: status, body (at most 64 KiB) and, from tsugi-notifyd's
/// `/healthz`, its clock and its `clock_skew_secs`.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub daemon_time: Option<i64>,
    pub daemon_skew: Option<u64>,
}

/// Shuts a socket down at a deadline unless dropped first. Read timeouts bound each
/// read, not an exchange: a server that trickles a byte at a time would hold the
/// doctor for ever without this.
struct Deadline {
    done: Arc<(Mutex<bool>, Condvar)>,
}

impl Deadline {
    fn new(stream: &TcpStream, within: Duration) -> Deadline {
        let done = Arc::new((Mutex::new(false), Condvar::new()));
        if let Ok(sock) = stream.try_clone() {
            let watch = Arc::clone(&done);
            std::thread::spawn(move || {
                let (lock, cv) = &*watch;
                let end = Instant::now() + within;
                let mut finished = lock.lock().unwrap_or_else(|e| e.into_inner());
                while !*finished {
                    let left = end.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        let _ = sock.shutdown(Shutdown::Both);
                        return;
                    }
                    finished = match cv.wait_timeout(finished, left) {
                        Ok((g, _)) => g,
                        Err(e) => e.into_inner().0,
                    };
                }
            });
        }
        Deadline { done }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        let (lock, cv) = &*self.done;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }
}

/// `GET url` within `timeout`; `Err` says why nothing answered.
pub fn get(url: &str, timeout: Duration, trust: &Trust) -> Result<Answer, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(TlsConfig::builder().root_certs(trust.ureq_roots()).build())
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let mut resp = agent.get(url).call().map_err(|e| e.to_string())?;
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_owned())
    };
    let daemon_time = header("tsugi-notify-time").and_then(|v| v.parse().ok());
    let daemon_skew = header("tsugi-notify-clock-skew").and_then(|v| v.parse().ok());
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .unwrap_or_default();
    Ok(Answer {
        status,
        body,
        daemon_time,
        daemon_skew,
    })
}

pub type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

/// Why a WebSocket did not open.
#[derive(Debug)]
pub enum Refused {
    /// The server answered the handshake with this status and body.
    Status(u16, String),
    /// No connection, TLS failed, or no answer in time.
    Network(String),
}

/// Opens `url` as a browser on a page of `origin` would.
pub fn open(
    url: &str,
    origin: Option<&str>,
    timeout: Duration,
    trust: &Trust,
) -> Result<Ws, Refused> {
    let mut request = url
        .into_client_request()
        .map_err(|e| Refused::Network(e.to_string()))?;
    if let Some(origin) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
        request.headers_mut().insert("Origin", origin);
    }
    let uri = request.uri().clone();
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("wss") {
            443
        } else {
            80
        });
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| Refused::Network(format!("{host}: {e}")))?
        .collect();
    let mut last = format!("{host}: no address");
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    let stream = stream.ok_or(Refused::Network(last))?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    // TLS and the upgrade together within `timeout`.
    let _deadline = Deadline::new(&stream, timeout);
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    match tungstenite::client_tls_with_config(request, stream, Some(config), trust.connector()) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            let body = resp
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).trim().to_owned())
                .unwrap_or_default();
            Err(Refused::Status(resp.status().as_u16(), body))
        }
        Err(tungstenite::HandshakeError::Failure(e)) => Err(Refused::Network(e.to_string())),
        Err(tungstenite::HandshakeError::Interrupted(_)) => Err(Refused::Network(
            "no answer to the handshake in time".into(),
        )),
    }
}

fn tcp(ws: &Ws) -> Option<&TcpStream> {
    match ws.get_ref() {
        MaybeTlsStream::Plain(s) => Some(s),
        MaybeTlsStream::Rustls(s) => Some(s.get_ref()),
        // Non-exhaustive: no other kind is built here.
        _ => None,
    }
}

fn read_timeout(ws: &Ws, wait: Duration) {
    if let Some(s) = tcp(ws) {
        let _ = s.set_read_timeout(Some(wait));
    }
}

/// Sends one text message.
pub fn send(ws: &mut Ws, text: &str) -> bool {
    ws.send(Message::text(text)).is_ok()
}

/// Waits until a text message equal to `want` arrives on `on`, at most `within`.
pub fn wait_for(on: &mut Ws, want: &str, within: Duration) -> bool {
    relay(None, on, want, within)
}

/// Sends `text` on `from` (again every half second: a new socket may not have joined
/// its room everywhere yet) until it arrives on `to`, at most `within`.
pub fn relay(mut from: Option<&mut Ws>, to: &mut Ws, text: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    // Past the deadline (a frame trickling in), the socket is shut.
    let _hard = tcp(to).map(|s| Deadline::new(s, within + Duration::from_secs(1)));
    let mut next_send = Instant::now();
    loop {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        if let Some(from) = from.as_deref_mut() {
            if now >= next_send {
                if !send(from, text) {
                    return false;
                }
                next_send = now + Duration::from_millis(500);
            }
        }
        let until = if from.is_some() {
            next_send.min(deadline)
        } else {
            deadline
        };
        read_timeout(
            to,
            until
                .saturating_duration_since(now)
                .max(Duration::from_millis(1)),
        );
        match to.read() {
            Ok(Message::Text(t)) if t.as_str() == text => return true,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return false,
        }
    }
}

/// Closes politely, without waiting long.
pub fn close(mut ws: Ws) {
    read_timeout(&ws, Duration::from_millis(200));
    let _ = ws.close(None);
    let _ = ws.flush();
}
