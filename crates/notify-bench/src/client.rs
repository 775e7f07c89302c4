//! Opening WebSocket connections from chosen source addresses.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The next source port to try (per process; processes use different source addresses).
static NEXT_PORT: AtomicU32 = AtomicU32::new(0);

use std::path::Path;
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tsugi_notify_core::{Keyring, Plaintext, Scope, Tokens};

use crate::Target;

/// A client connection, over ws:// or wss://.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The TLS client for `--tls-ca` (one CA file per run).
fn connector(ca: &Path) -> anyhow::Result<&'static TlsConnector> {
    static CONNECTOR: OnceLock<TlsConnector> = OnceLock::new();
    if let Some(c) = CONNECTOR.get() {
        return Ok(c);
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).context("--tls-ca")? {
        roots.add(cert.context("--tls-ca")?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    // Every connection a full handshake, as browsers opening pages mostly are: a
    // resumed one would understate what TLS costs the daemon.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(CONNECTOR.get_or_init(|| TlsConnector::from(Arc::new(config))))
}

/// The token for a space: minted with the secret, or the space name itself.
pub fn token(target: &Target, space: &str, user: usize) -> String {
    match &target.secret {
        Some(secret) => {
            let tokens = Tokens::new(Keyring::new([secret]).expect("non-empty secret")).with_ttl(0);
            let p = Plaintext::new(
                "https://bench.example",
                space,
                None,
                Some(&user.to_string()),
            )
            .expect("bench ids fit in a token");
            tokens.mint(&p, Scope::Browser).expect("mint")
        }
        None => space.to_owned(),
    }
}

/// Connects from `source` and upgrades to `/notify?token=..&room=..`, over TLS when
/// `tls_ca` names the CA to trust (the server's name: its address), offering the
/// subprotocol tsugi-notify.v1 when `protocol`.
pub async fn connect(
    addr: SocketAddr,
    source: IpAddr,
    token: &str,
    room: &str,
    tls_ca: Option<&Path>,
    protocol: bool,
) -> anyhow::Result<Ws> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // Picking the source port here keeps bind() O(1): with tens of thousands of sockets,
    // the kernel's own search for a free port on bind(port 0) dominates the client.
    // Ports left in TIME_WAIT by an earlier run may be bound again.
    socket.set_reuseaddr(true)?;
    let mut bound = false;
    for _ in 0..256 {
        let port = NEXT_PORT.fetch_add(1, Ordering::Relaxed) + std::process::id() * 7919;
        let port = 10_000 + (port % 55_000) as u16;
        if socket.bind(SocketAddr::new(source, port)).is_ok() {
            bound = true;
            break;
        }
    }
    anyhow::ensure!(bound, "no free source port on {source}");
    let stream = socket.connect(addr).await.context("connect")?;
    stream.set_nodelay(true)?;
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (stream, scheme) = match tls_ca {
        None => (MaybeTlsStream::Plain(stream), "ws"),
        Some(ca) => {
            let name = ServerName::from(addr.ip());
            let tls = connector(ca)?
                .connect(name, stream)
                .await
                .context("TLS handshake")?;
            (MaybeTlsStream::Rustls(tls), "wss")
        }
    };
    let url = format!("{scheme}://{addr}/notify?token={token}&room={room}");
    let mut request = url.into_client_request()?;
    if protocol {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "tsugi-notify.v1".parse()?);
    }
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .context("handshake")?;
    Ok(ws)
}
