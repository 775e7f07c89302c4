//! TLS in the daemon: `wss://` (and `https://` for `/publish` and `/healthz`) on the
//! WebSocket port, from PEM files as certbot writes them (`fullchain.pem`, `privkey.pem`:
//! RSA or ECDSA, PKCS#8, SEC1 or PKCS#1). rustls with the `ring` provider: the daemon
//! already uses it for `rediss://`, it needs no C toolchain beyond what `ring` builds,
//! and no OpenSSL. TLS 1.2 and 1.3, ALPN `http/1.1`.
//!
//! The pair in force is replaced for new connections on SIGHUP and when the files
//! change on disk (certbot renews every 60 days); open connections keep theirs. A new
//! pair that does not load (unreadable, no key, key and certificate not matching,
//! expired) is refused with a log line, and the pair in force stays.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::ring::default_provider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::Metrics;

/// `tls_cert` and `tls_key`, and how often their files are checked for a change.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (certbot's `fullchain.pem`).
    pub cert: PathBuf,
    /// Its private key (certbot's `privkey.pem`).
    pub key: PathBuf,
    /// How often the files are looked at for a change (`tls_check_secs`); `None`: only
    /// on SIGHUP.
    pub check_every: Option<Duration>,
    /// The url's host: a certificate not valid for it is refused (browsers would refuse
    /// it), e.g. the web site's own copied over the socket's by a deploy hook.
    pub host: Option<String>,
}

/// A certificate and key that belong together, with what an admin needs to know of it.
#[derive(Debug)]
pub struct Pair {
    key: Arc<CertifiedKey>,
    /// The leaf's notAfter, Unix seconds.
    pub not_after: i64,
    /// The same as a date.
    pub not_after_text: String,
    /// The names it is valid for (subject alternative names).
    pub names: Vec<String>,
}

/// Loads and checks a pair: both files readable, a certificate and a key in them, the
/// key the certificate's, the certificate not expired. The error names the setting
/// and says what is wrong; it never quotes the files.
pub fn load(files: &TlsFiles) -> Result<Pair, String> {
    let cert_path = files.cert.display();
    let cert_pem = read_pem(&files.cert).map_err(|e| format!("tls_cert {cert_path}: {e}"))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls_cert {cert_path}: {}", pem_error(&e)))?;
    if certs.is_empty() {
        return Err(format!(
            "tls_cert {cert_path}: no certificate in it (a PEM file such as certbot's fullchain.pem)"
        ));
    }
    let key_path = files.key.display();
    let key_pem = read_pem(&files.key).map_err(|e| format!("tls_key {key_path}: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        format!(
            "tls_key {key_path}: {} (a PEM private key, PKCS#8, SEC1 or PKCS#1, such as certbot's privkey.pem)",
            pem_error(&e)
        )
    })?;
    let signing = default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|_| format!("tls_key {key_path}: not a usable RSA or ECDSA key"))?;
    let pair = CertifiedKey::new(certs, signing);
    match pair.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(format!(
                "tls_key {key_path} is not the key of the certificate in tls_cert {cert_path}"
            ))
        }
    }
    let leaf = pair
        .end_entity_cert()
        .map_err(|_| format!("tls_cert {cert_path}: no certificate in it"))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|_| format!("tls_cert {cert_path}: not an X.509 certificate"))?;
    let not_after = parsed.validity().not_after.timestamp();
    let names: Vec<String> = parsed
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                    x509_parser::extensions::GeneralName::IPAddress(ip) => ip_text(ip),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if not_after < unix_now() {
        return Err(format!(
            "tls_cert {cert_path}: the certificate expired on {}",
            parsed.validity().not_after
        ));
    }
    if parsed.validity().not_before.timestamp() > unix_now() {
        return Err(format!(
            "tls_cert {cert_path}: the certificate is not valid before {} (this clock, or the certificate, is wrong)",
            parsed.validity().not_before
        ));
    }
    if let Some(host) = &files.host {
        if !names.iter().any(|n| name_matches(n, host)) {
            return Err(format!(
                "tls_cert {cert_path}: the certificate is for {}, not for the url's host {host}",
                names.join(", ")
            ));
        }
    }
    let not_after_text = parsed.validity().not_after.to_string();
    Ok(Pair {
        key: Arc::new(pair),
        not_after,
        not_after_text,
        names,
    })
}

/// The most a PEM file may hold (a chain of a few certificates is under 10 KiB).
const MAX_PEM_BYTES: u64 = 1 << 20;

/// A regular file's bytes, at most [`MAX_PEM_BYTES`]: a device or a FIFO put where a
/// certificate belongs must neither block nor fill memory.
fn read_pem(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    // Looked at before it is opened: opening a FIFO blocks until a writer comes.
    if !std::fs::metadata(path)
        .map_err(|e| e.to_string())?
        .is_file()
    {
        return Err("not a regular file".into());
    }
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_PEM_BYTES {
        return Err(format!("larger than {MAX_PEM_BYTES} bytes"));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_PEM_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// Whether a certificate name (a DNS name, `*.` wildcard, or an IP address) covers
/// `host` (as written in the url; an IPv6 literal in brackets).
fn name_matches(name: &str, host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if name.eq_ignore_ascii_case(host) {
        return true;
    }
    match name.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(parent)),
        None => false,
    }
}

fn pem_error(e: &rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(io) => io.to_string(),
        rustls_pki_types::pem::Error::NoItemsFound => "nothing of that kind in it".into(),
        _ => "not a PEM file of that kind".into(),
    }
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv4Addr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv6Addr::from(b).to_string()),
        _ => None,
    }
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// What the files looked like when last loaded (inode, time, length): a change of
/// either reloads. (The inode too: a pair moved over the served files may have their
/// length and, on a filesystem whose clock ticks every few milliseconds, their time.)
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(
    Option<(u64, SystemTime, u64)>,
    Option<(u64, SystemTime, u64)>,
);

fn stamp(files: &TlsFiles) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    // Through symlinks: certbot's live/ names point into archive/.
    let of = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.ino(), m.modified().ok()?, m.len())))
    };
    Stamp(of(&files.cert), of(&files.key))
}

/// The pair in force, which every new TLS handshake gets.
#[derive(Debug)]
pub struct Certs {
    current: RwLock<Arc<CertifiedKey>>,
    files: TlsFiles,
    /// The files as last loaded (held while loading: one reload at a time, so that a
    /// slow load of old files never overwrites a newer pair).
    seen: Mutex<Stamp>,
    metrics: Arc<Metrics>,
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

impl Certs {
    /// Loads the pair (an error if it does not load: the daemon does not start).
    pub fn new(files: TlsFiles, metrics: Arc<Metrics>) -> Result<Arc<Certs>, String> {
        let seen = stamp(&files);
        let pair = load(&files)?;
        metrics.tls_loaded(pair.not_after);
        info!(
            cert = %files.cert.display(),
            names = ?pair.names,
            not_after = pair.not_after,
            "TLS certificate loaded"
        );
        Ok(Arc::new(Certs {
            current: RwLock::new(pair.key),
            files,
            seen: Mutex::new(seen),
            metrics,
        }))
    }

    /// Loads the files again; the new pair serves new connections, or, when it does
    /// not load, the pair in force stays. `why`: SIGHUP, or the files changed.
    pub fn reload(&self, why: &'static str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        *seen = stamp(&self.files);
        match load(&self.files) {
            Ok(pair) => {
                info!(
                    why,
                    names = ?pair.names,
                    not_after = pair.not_after,
                    "TLS certificate reloaded: new connections get it"
                );
                self.metrics.tls_loaded(pair.not_after);
                self.metrics.tls_reloaded(true);
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = pair.key;
                true
            }
            Err(e) => {
                warn!(why, error = %e, "new TLS certificate refused; the one in force stays");
                self.metrics.tls_reloaded(false);
                false
            }
        }
    }

    /// Reloads whenever the files change, until shutdown.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(every) = self.files.check_every else {
            return;
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A change is taken once the files look the same at two looks in a row: a
        // renewal that replaces the certificate and the key one after the other is
        // loaded once, whole, not refused half-way.
        let mut settling: Option<Stamp> = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = stamp(&self.files);
            if *self.seen.lock().unwrap_or_else(|e| e.into_inner()) == now {
                settling = None;
                continue;
            }
            let settled = settling.as_ref() == Some(&now);
            settling = Some(now);
            if settled {
                settling = None;
                // File reads and key parsing off the runtime's workers.
                let certs = Arc::clone(&self);
                let _ =
                    tokio::task::spawn_blocking(move || certs.reload("the files changed")).await;
            }
        }
    }

    /// The acceptor for the WebSocket listener: TLS 1.2 and 1.3, ALPN `http/1.1`, the
    /// pair in force.
    pub fn acceptor(self: &Arc<Self>) -> Result<Acceptor, String> {
        let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Acceptor(TlsAcceptor::from(Arc::new(config))))
    }
}

/// The TLS side of the WebSocket listener.
#[derive(Clone)]
pub struct Acceptor(TlsAcceptor);

impl Acceptor {
    /// The server side of a TLS handshake on `stream`.
    pub fn accept<S>(&self, stream: S) -> tokio_rustls::Accept<S>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        self.0.accept(stream)
    }
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Acceptor(TLS 1.2, 1.3)")
    }
}
