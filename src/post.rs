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

thread_local! {
    /// An agent (its connection pool and trust roots) for each `websocket_ca_file`
    /// seen: the system's store is read once per worker, not once per call.
    static AGENTS: RefCell<Vec<(Option<String>, ureq::Agent)>> = const { RefCell::new(Vec::new()) };
}

/// The roots to trust: the system's store, and the CA file's certificates. `None` when
/// the CA file cannot be read or holds no certificate.
fn roots(ca_file: Option<&str>) -> Option<RootCerts> {
    let mut certs: Vec<Certificate<'static>> = rustls_native_certs::load_native_certs()
        .certs
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    if let Some(path) = ca_file {
        let from_file: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .ok()?
            .collect::<Result<_, _>>()
            .ok()?;
        if from_file.is_empty() {
            return None;
        }
        certs.extend(
            from_file
                .iter()
                .map(|c| Certificate::from_der(c.as_ref()).to_owned()),
        );
    }
    // A machine without a CA store (no ca-certificates) still trusts the public CAs.
    Some(if certs.is_empty() {
        RootCerts::WebPki
    } else {
        RootCerts::new_with_certs(&certs)
    })
}

fn agent(ca_file: Option<&str>) -> Option<ureq::Agent> {
    let tls = TlsConfig::builder().root_certs(roots(ca_file)?).build();
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
/// of CAs to trust besides the system's (`$CFG->websocket_ca_file`).
pub fn publish(url: &str, token: &str, body: &str, ca_file: Option<&str>) -> bool {
    AGENTS.with(|agents| {
        let mut agents = agents.borrow_mut();
        let key = ca_file.map(str::to_owned);
        let i = match agents.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                let Some(made) = agent(ca_file) else {
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
