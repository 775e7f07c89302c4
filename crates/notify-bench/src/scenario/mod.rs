//! The scenarios, one a module: each has its command-line `Args` (the shared `Target`
//! flattened in) and a `run` that returns its JSON report line. Here: what more than
//! one of them uses.

pub mod churn;
pub mod fanout;
pub mod floor;
pub mod idle;
pub mod soak;

use std::sync::Arc;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::sync::Notify;

use crate::client::{connect, token, Ws};
use crate::procfs;
use crate::Target;

/// Opens `n` connections, `concurrency` at a time; `spec(i)` gives space and room.
pub(crate) async fn open_many(
    target: &Target,
    n: usize,
    spec: impl Fn(usize) -> (String, String),
) -> anyhow::Result<Vec<Ws>> {
    let mut out: Vec<Option<Ws>> = (0..n).map(|_| None).collect();
    let mut pending = FuturesUnordered::new();
    let mut next = 0;
    while next < n || !pending.is_empty() {
        while next < n && pending.len() < target.concurrency {
            let (space, room) = spec(next);
            let tok = token(target, &space, next);
            let source = target.sources[next % target.sources.len()];
            let addr = target.addr;
            let i = next;
            let tls = target.tls_ca.as_deref();
            let protocol = target.protocol;
            pending
                .push(async move { (i, connect(addr, source, &tok, &room, tls, protocol).await) });
            next += 1;
        }
        if let Some((i, ws)) = pending.next().await {
            out[i] = Some(ws?);
        }
    }
    Ok(out.into_iter().flatten().collect())
}

pub(crate) fn server_rss(target: &Target) -> Option<u64> {
    target.server_pid.and_then(procfs::rss_bytes)
}

pub(crate) fn server_cpu(target: &Target) -> Option<f64> {
    target.server_pid.and_then(procfs::cpu_secs)
}

/// Keeps connections answering pings until `stop`.
pub(crate) fn hold(conns: Vec<Ws>, stop: Arc<Notify>) -> Vec<tokio::task::JoinHandle<()>> {
    conns
        .into_iter()
        .map(|mut ws| {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = stop.notified() => {}
                    () = async { while let Some(Ok(_)) = ws.next().await {} } => {}
                }
            })
        })
        .collect()
}

pub(crate) fn mib(b: Option<u64>) -> String {
    b.map_or("?".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0))
}
