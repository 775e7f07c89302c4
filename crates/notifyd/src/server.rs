//! The server: binds its listeners, serves until shutdown, then closes every client
//! with 1001 and waits for them, within a deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::Config;
use crate::http;
use crate::listener::accept_loop;
use crate::metrics::{Metrics, Refusal};
use crate::node::Node;
use crate::systemd;
use crate::Error;

/// Requests the metrics listener serves at once; more are closed unanswered (it is
/// meant for loopback or a private network, and must never use up file descriptors the
/// WebSocket port needs).
const METRICS_CONCURRENCY: usize = 32;

/// Time given to connections to close after shutdown starts.
const DRAIN_DEADLINE: Duration = Duration::from_secs(4);

/// A bound, not yet serving, server.
#[derive(Debug)]
pub struct Server {
    config: Config,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
}

/// A serving server.
#[derive(Debug)]
pub struct Running {
    /// Where WebSocket clients connect.
    pub addr: SocketAddr,
    /// Where `/metrics` is served, if it is.
    pub metrics_addr: Option<SocketAddr>,
    /// The counters.
    pub metrics: Arc<Metrics>,
    certs: Option<Arc<crate::tls::Certs>>,
    shutdown: CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Binds the listeners of `config`.
    pub async fn bind(config: Config) -> Result<Server, Error> {
        let bind = |what, addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind { what, addr, source })
        };
        let listener = bind("websocket", config.listen).await?;
        let metrics_listener = match config.metrics_bind {
            Some(addr) => Some(bind("metrics", addr).await?),
            None => None,
        };
        Ok(Server {
            config,
            listener,
            metrics_listener,
        })
    }

    /// Where WebSocket clients connect.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Starts serving; `shutdown` stops it.
    pub fn start(self, shutdown: CancellationToken) -> Result<Running, Error> {
        let addr = self.listener.local_addr()?;
        let metrics_addr = self
            .metrics_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        let metrics = Arc::new(Metrics::default());
        let tracker = TaskTracker::new();
        let node = Node::new(
            self.config,
            metrics.clone(),
            shutdown.clone(),
            tracker.clone(),
        )?;
        let certs = node.certs.clone();
        if let Some(l) = self.metrics_listener {
            tokio::spawn(serve_metrics(l, Arc::clone(&node), shutdown.clone()));
        }
        let accept = accept_loop(self.listener, node);
        let done = tokio::spawn(async move {
            accept.await;
            tracker.close();
            if tokio::time::timeout(DRAIN_DEADLINE, tracker.wait())
                .await
                .is_err()
            {
                warn!(
                    left = tracker.len(),
                    "connections still open at the shutdown deadline"
                );
            }
        });
        info!(%addr, metrics = ?metrics_addr, "listening");
        Ok(Running {
            addr,
            metrics_addr,
            metrics,
            certs,
            shutdown,
            done,
        })
    }
}

impl Running {
    /// Starts shutdown (as SIGTERM does).
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Loads `tls_cert` and `tls_key` again (as SIGHUP does): `true` when the new pair
    /// serves new connections; `false` when it was refused (the one in force stays) or
    /// there is no TLS.
    pub fn reload_tls(&self) -> bool {
        self.certs.as_ref().is_some_and(|c| c.reload("SIGHUP"))
    }

    /// Waits until every connection is closed (or the drain deadline passed).
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// `GET /metrics` (Prometheus text) and `/healthz` (the same answer as the main port's)
/// on the metrics address.
async fn serve_metrics(listener: TcpListener, node: Arc<Node>, shutdown: CancellationToken) {
    let permits = Arc::new(tokio::sync::Semaphore::new(METRICS_CONCURRENCY));
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        let Ok((mut stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            continue;
        };
        let node = Arc::clone(&node);
        tokio::spawn(async move {
            let _permit = permit;
            let Ok(req) = http::read_request(&mut stream, Duration::from_secs(5)).await else {
                return;
            };
            match (req.method.as_str(), req.path.as_str()) {
                ("GET", "/metrics") => {
                    // Off the runtime's workers: reading /proc takes milliseconds with
                    // many sockets open.
                    let metrics = Arc::clone(&node.metrics);
                    let Ok(body) = tokio::task::spawn_blocking(move || metrics.render()).await
                    else {
                        return;
                    };
                    http::respond(&mut stream, 200, crate::metrics::CONTENT_TYPE, &body).await;
                }
                (_, "/healthz") => {
                    let _ =
                        http::health(&mut stream, &req, node.health(), node.tokens.leeway()).await;
                }
                _ => http::refuse(&mut stream, Refusal::NotFound).await,
            }
        });
    }
}

/// Runs a daemon until SIGTERM or SIGINT, telling systemd when it is ready and when it
/// stops.
pub async fn serve(config: Config) -> Result<(), Error> {
    if config.dev {
        tracing::warn!(
            "DEVELOPMENT MODE: the secret is the well-known \"opensource\"; never use --dev in production"
        );
    }
    let token = CancellationToken::new();
    crate::shutdown::on_signal(token.clone())?;
    // SIGHUP (systemctl reload, certbot's deploy hook): a renewed TLS pair. Taken
    // before "listening" is logged: a HUP from then on must never end the daemon.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let running = Server::bind(config).await?.start(token.clone())?;
    let certs = running.certs.clone();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match &certs {
                Some(c) => {
                    // One reload at a time, off the runtime's workers: a SIGHUP storm
                    // queues in the signal stream, it does not pile up reloads.
                    let c = Arc::clone(c);
                    let _ = tokio::task::spawn_blocking(move || c.reload("SIGHUP")).await;
                }
                None => tracing::info!("SIGHUP: nothing to reload (no tls_cert)"),
            }
        }
    });
    systemd::notify(systemd::State::Ready);
    token.cancelled().await;
    systemd::notify(systemd::State::Stopping);
    running.wait().await;
    tracing::info!("stopped");
    Ok(())
}
