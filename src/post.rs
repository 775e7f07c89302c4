//! The HTTP POST behind `WebSocket::publish`: bounded in time, never a PHP error.
//!
//! Over https the daemon's certificate is checked against the system's CA store (where
//! a site's private CA is usually installed), plus `$CFG->websocket_ca_file` when set.

use std::cell::RefCell;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use ureq::tls::{Certificate, RootCerts, TlsConfig};

/// The whole call (connect, TLS, send, answer) takes at most this long.
const TIMEOUT: Duration = Duration::from_secs(2);

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

/// Posts a publish request; true when the daemon answered 200. `ca_file`: a PEM file
/// of CAs to trust besides the system's (`$CFG->websocket_ca_file`), read once per
/// worker thread (a new file is seen after the web server restarts its workers).
pub fn publish(url: &str, token: &str, body: &str, ca_file: Option<&str>) -> bool {
    // Plain http needs no trust roots: no store or CA file is read for it.
    let https = url.starts_with("https://");
    let ca_file = if https { ca_file } else { None };
    AGENTS.with(|agents| {
        let mut agents = agents.borrow_mut();
        let key = (https, ca_file.map(str::to_owned));
        let i = match agents.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                let Some(made) = agent(https, ca_file) else {
                    return false;
                };
                if agents.len() >= AGENTS_KEPT {
                    agents.remove(0);
                }
                agents.push((key, made));
                agents.len() - 1
            }
        };
        agents[i]
            .1
            .post(url)
            .header("Authorization", &format!("Bearer {token}"))
            .header("Content-Type", "application/json")
            .send(body)
            .is_ok_and(|r| r.status() == 200)
    })
}
