//! The HTTP calls behind `WebSocket::publish` and `WebSocket::presence`: bounded in
//! time and in size, never a PHP error.
//!
//! Over https the daemon's certificate is checked against the system's CA store (where
//! a site's private CA is usually installed), plus `$CFG->websocket_ca_file` when set.

use std::cell::RefCell;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tsugi_notify_core::{PresenceAnswer, PublishAnswer};
use ureq::tls::{Certificate, RootCerts, TlsConfig};

/// The whole call (connect, TLS, send, the answer read to its end) takes at most this
/// long.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The most of a `/publish` answer read (`{"delivered": N, "seq": S}` is a few dozen
/// bytes): a longer one is taken, without a sequence.
const MAX_PUBLISH_ANSWER_BYTES: u64 = 4 << 10;

/// The most of a `/presence` answer read (the daemon lists at most
/// `presence_max_users` users): a longer one is refused.
const MAX_PRESENCE_ANSWER_BYTES: u64 = 1 << 20;

/// Agents kept per PHP worker thread, one per CA file named (few: one per site).
const AGENTS_KEPT: usize = 4;

/// What an agent is kept by: https or not, and the CA file.
type AgentKey = (bool, Option<String>);

thread_local! {
    /// An agent (its connection pool and trust roots) for each `websocket_ca_file`
    /// seen: the system's store is read once per worker, not once per call.
    static AGENTS: RefCell<Vec<(AgentKey, ureq::Agent)>> = const { RefCell::new(Vec::new()) };
}

/// The most a CA file may hold.
const MAX_CA_FILE_BYTES: u64 = 1 << 20;

/// The certificates of a CA file: a regular file (a FIFO or a device would block or
/// never end), at most [`MAX_CA_FILE_BYTES`], with at least one certificate.
fn ca_file_certs(path: &str) -> Option<Vec<CertificateDer<'static>>> {
    use std::io::Read;
    if !std::fs::metadata(path).ok()?.is_file() {
        return None;
    }
    let mut pem = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_CA_FILE_BYTES)
        .read_to_end(&mut pem)
        .ok()?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .ok()?;
    (!certs.is_empty()).then_some(certs)
}

/// The roots to trust: the CA file's certificates (read first: a bad file costs no
/// read of the system's store), and the system's store. `None` when the CA file
/// cannot be used.
fn roots(ca_file: Option<&str>) -> Option<RootCerts> {
    let from_file = match ca_file {
        Some(path) => ca_file_certs(path)?,
        None => Vec::new(),
    };
    let mut certs: Vec<Certificate<'static>> = rustls_native_certs::load_native_certs()
        .certs
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    certs.extend(
        from_file
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()).to_owned()),
    );
    // A machine without a CA store (no ca-certificates) still trusts the public CAs.
    Some(if certs.is_empty() {
        RootCerts::WebPki
    } else {
        RootCerts::new_with_certs(&certs)
    })
}

/// An agent for `https` (trusting the system's store and `ca_file`) or plain `http`
/// (no store read).
fn agent(https: bool, ca_file: Option<&str>) -> Option<ureq::Agent> {
    let roots = if https {
        roots(ca_file)?
    } else {
        RootCerts::WebPki
    };
    let tls = TlsConfig::builder().root_certs(roots).build();
    Some(ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .max_redirects(0)
            .tls_config(tls)
            .user_agent(concat!("tsugi_websocket/", env!("CARGO_PKG_VERSION")))
            .build(),
    ))
}

/// Runs `call` with the agent for `url` (https or not, `ca_file`), made on first use
/// and kept for the worker thread. `ca_file`: a PEM file of CAs to trust besides the
/// system's (`$CFG->websocket_ca_file`), read once per worker thread (a new file is seen
/// after the web server restarts its workers). `None` when the CA file cannot be used.
fn with_agent<R>(
    url: &str,
    ca_file: Option<&str>,
    call: impl FnOnce(&ureq::Agent) -> Option<R>,
) -> Option<R> {
    // Plain http needs no trust roots: no store or CA file is read for it.
    let https = url.starts_with("https://");
    let ca_file = if https { ca_file } else { None };
    AGENTS.with(|agents| {
        let mut agents = agents.borrow_mut();
        let key = (https, ca_file.map(str::to_owned));
        let i = match agents.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                let made = agent(https, ca_file)?;
                if agents.len() >= AGENTS_KEPT {
                    agents.remove(0);
                }
                agents.push((key, made));
                agents.len() - 1
            }
        };
        call(&agents[i].1)
    })
}

/// The body of a 200 answer, at most `limit` bytes read within the call's deadline;
/// `None` when it is longer, cut short or late.
fn answer_body(answer: &mut ureq::http::Response<ureq::Body>, limit: u64) -> Option<Vec<u8>> {
    answer
        .body_mut()
        .with_config()
        .limit(limit)
        .read_to_vec()
        .ok()
}

/// What the daemon said to a publish request it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// The message's sequence in its room: `None` when it has none (`"seq": null`, a
    /// daemon older than the sequences, or an answer that is not
    /// `{"delivered": N, "seq": S}`).
    pub seq: Option<i64>,
}

/// The `seq` of a `/publish` answer (core's [`PublishAnswer`]); anything else is none.
fn publish_seq(answer: &[u8]) -> Option<i64> {
    i64::try_from(PublishAnswer::seq_of(answer)?).ok()
}

/// Posts a publish request; `Some` when the daemon answered 200 (took the message).
pub fn publish(url: &str, token: &str, body: &str, ca_file: Option<&str>) -> Option<Taken> {
    with_agent(url, ca_file, |agent| {
        let mut answer = agent
            .post(url)
            .header("Authorization", &format!("Bearer {token}"))
            .header("Content-Type", "application/json")
            .send(body)
            .ok()
            .filter(|r| r.status() == 200)?;
        // The message is taken: an answer that cannot be read only loses its sequence.
        let seq = answer_body(&mut answer, MAX_PUBLISH_ANSWER_BYTES).and_then(|b| publish_seq(&b));
        Some(Taken { seq })
    })
}

/// The user ids of a `/presence` answer for `room` (core's [`PresenceAnswer`]); `None`
/// for any other answer.
fn presence_users(answer: &[u8], room: &str) -> Option<Vec<String>> {
    PresenceAnswer::users_of(answer, room)
}

/// `room` percent-encoded for a query string: every byte but the unreserved ones
/// (RFC 3986: letters, digits, `-._~`) as `%XX`.
fn query_value(room: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(room.len() * 3);
    for b in room.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
    out
}

/// Asks `GET <url>?room=<room>` who is in the room: the user ids the daemon lists, in
/// its order. `None` when the daemon is not reached, answers other than 200, or not a
/// presence answer for that room.
pub fn presence(url: &str, token: &str, room: &str, ca_file: Option<&str>) -> Option<Vec<String>> {
    let target = format!("{url}?room={}", query_value(room));
    with_agent(url, ca_file, |agent| {
        let mut answer = agent
            .get(&target)
            .header("Authorization", &format!("Bearer {token}"))
            .header("Accept", "application/json")
            .call()
            .ok()
            .filter(|r| r.status() == 200)?;
        presence_users(&answer_body(&mut answer, MAX_PRESENCE_ANSWER_BYTES)?, room)
    })
}
