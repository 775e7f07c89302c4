//! What every task of one daemon shares: the configuration, token checks, the rooms and
//! their fan-out, the quotas, and the counters.

use std::hash::RandomState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};
use tsugi_notify_core::{Rejection, Tokens};

use crate::backplane::Backplane;
use crate::config::Config;
use crate::fanout::Fanout;
use crate::history::Logs;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::quota::{ConnectionSlots, Pending, PerKey};
use crate::tls::Certs;
use crate::Error;

/// One daemon's state, shared by its listeners and connection tasks.
#[derive(Debug)]
pub struct Node {
    /// The configuration.
    pub config: Config,
    /// Token verification.
    pub tokens: Tokens,
    /// Spaces and rooms, and delivery to them and to the other nodes.
    pub fanout: Fanout,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Open WebSocket connections against `max_connections`.
    pub slots: Arc<ConnectionSlots>,
    /// Open WebSocket connections per token against `max_connections_per_token`.
    pub per_token: Arc<PerKey>,
    /// Open WebSocket connections per user against `max_connections_per_user`.
    pub per_user: Arc<PerKey>,
    /// Sockets in their handshake against `max_pending_handshakes`.
    pub pending: Arc<Pending>,
    /// Keys the per-token and per-user counts (a token is never kept, only its keyed
    /// hash).
    pub key_hasher: RandomState,
    /// Cancelled at shutdown.
    pub shutdown: CancellationToken,
    /// Every connection task, for the drain at shutdown.
    pub tracker: TaskTracker,
    /// The next connection's id.
    pub next_id: AtomicU64,
    /// The warning about tokens from the future, at most once a minute.
    skew_warning: SkewWarning,
    /// TLS on the WebSocket port: the handshake, with the pair in force.
    pub tls: Option<crate::tls::Acceptor>,
    /// The pair in force, reloaded on SIGHUP and when its files change.
    pub certs: Option<Arc<Certs>>,
}

/// How often the clock-skew warning may be logged.
const SKEW_WARNING_EVERY: Duration = Duration::from_secs(60);

/// When the clock-skew warning was last logged, and how many such refusals came since.
#[derive(Debug, Default)]
struct SkewWarning {
    last: Mutex<Option<Instant>>,
    since: AtomicU64,
}

impl Node {
    /// State for a daemon with this configuration; starts the backplane task when Redis
    /// is configured.
    pub fn new(
        config: Config,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Result<Arc<Self>, Error> {
        let tokens = config.tokens.clone();
        let limits = &config.limits;
        // This node's id: in Redis, and (as 16 hex digits) in its sockets' ids.
        let node_id = std::hash::BuildHasher::hash_one(
            &RandomState::new(),
            (std::process::id(), std::time::SystemTime::now()),
        );
        let hub = Hub::new(limits.max_connections_per_space, metrics.clone())
            .with_presence_max(limits.presence_max_users)
            .with_tag(&format!("{node_id:016x}"));
        let (backplane, hub) = match &config.redis {
            Some(redis) => {
                let (hub, feed) = hub.with_feed();
                let hub = Arc::new(hub);
                let setup = crate::backplane::Setup {
                    node: node_id,
                    keyring: config.tokens.keyring().clone(),
                    max_message_bytes: limits.max_message_bytes,
                    history: limits.history,
                    presence_ttl: limits.presence_ttl,
                    presence_max: limits.presence_max_users,
                    hub: Arc::clone(&hub),
                    feed,
                    metrics: metrics.clone(),
                    shutdown: shutdown.clone(),
                };
                (Some(Backplane::start(redis, setup)?), hub)
            }
            None => {
                let logs = Arc::new(Logs::new(limits.history));
                tokio::spawn(sweep_logs(
                    Arc::clone(&logs),
                    limits.history.age,
                    shutdown.clone(),
                ));
                (None, Arc::new(hub.with_logs(logs)))
            }
        };
        let fanout = Fanout::new(hub, backplane, metrics.clone());
        let certs = match &config.tls {
            Some(files) => Some(Certs::new(files.clone(), metrics.clone()).map_err(Error::Tls)?),
            None => None,
        };
        let tls = certs
            .as_ref()
            .map(|c| c.acceptor().map_err(Error::Tls))
            .transpose()?;
        if let Some(c) = &certs {
            tokio::spawn(Arc::clone(c).watch(shutdown.clone()));
        }
        // At shutdown every connection is told through its outbox (a task per connection
        // waiting on the token would cost each of them its waiter).
        let hub = Arc::clone(fanout.hub());
        let closing = shutdown.clone();
        tokio::spawn(async move {
            closing.cancelled().await;
            hub.close_all();
        });
        Ok(Arc::new(Node {
            tls,
            certs,
            fanout,
            slots: ConnectionSlots::new(config.limits.max_connections),
            per_token: PerKey::new(config.limits.max_connections_per_token),
            per_user: PerKey::new(config.limits.max_connections_per_user),
            pending: Pending::new(config.limits.max_pending_handshakes),
            key_hasher: RandomState::new(),
            tokens,
            metrics,
            shutdown,
            tracker,
            config,
            next_id: AtomicU64::new(1),
            skew_warning: SkewWarning::default(),
        }))
    }

    /// Counts a refused token by its reason (`what`: which check, for the debug log).
    /// A token issued in the future, more than `clock_skew_secs` ahead, is the web
    /// server's clock running fast, which breaks every page of that site: that is
    /// logged as a warning naming the issuer and by how much, at most once a minute.
    pub fn token_refused(&self, what: &'static str, token: &str, e: &tsugi_notify_core::Error) {
        let Some(r) = e.rejection() else {
            return;
        };
        self.metrics.token_rejected(r);
        debug!(check = r.code(), "{what} token refused");
        if r != Rejection::NotYetValid {
            return;
        }
        self.skew_warning.since.fetch_add(1, Ordering::Relaxed);
        let Ok(mut last) = self.skew_warning.last.try_lock() else {
            return;
        };
        if last.is_some_and(|at| at.elapsed() < SKEW_WARNING_EVERY) {
            return;
        }
        // A second signature check, once a minute at most: the issuer logged is the
        // one that signed.
        let Some((issuer, ahead_secs)) = self.tokens.ahead_of_clock(token) else {
            return;
        };
        *last = Some(Instant::now());
        // This one included; any counted meanwhile go to the next warning.
        let since = self.skew_warning.since.swap(0, Ordering::Relaxed);
        // Quoted: any holder of a secret names the issuer, and it must not pass for
        // other fields of the line.
        warn!(
            issuer = ?issuer,
            ahead_secs,
            clock_skew_secs = self.tokens.leeway(),
            refused_since_last_warning = since,
            "tokens issued in the future refused: the issuer's clock is ahead of this \
             daemon's by more than clock_skew_secs; set both clocks right (NTP) or raise \
             clock_skew_secs"
        );
    }

    /// `/healthz` on either listener: always 200 while serving; says whether the
    /// backplane is up.
    pub fn health(&self) -> &'static str {
        match self.fanout.backplane() {
            None => "ok\n",
            Some(bp) if bp.is_up() => "ok\nbackplane: up\n",
            Some(_) => "ok\nbackplane: down\n",
        }
    }
}

/// Forgets the rooms' histories nobody has used for `age`, every `age / 4`.
async fn sweep_logs(logs: Arc<Logs>, age: Duration, shutdown: CancellationToken) {
    let mut every = tokio::time::interval((age / 4).max(Duration::from_secs(1)));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {
                logs.sweep(Instant::now());
            }
        }
    }
}
