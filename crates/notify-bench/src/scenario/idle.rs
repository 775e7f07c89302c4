//! `idle`: N connections held, server RSS before and after, bytes per connection;
//! spread over worker processes (this binary again, `--worker`) when one cannot hold
//! them all.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Notify;

use super::{hold, mib, open_many, server_rss};
use crate::procfs;
use crate::Target;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// Connections in total.
    #[arg(long)]
    pub connections: usize,
    /// Client processes to spread them over (a process may hold ~19,900 sockets).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Seconds to hold them before measuring.
    #[arg(long, default_value_t = 3)]
    pub settle_secs: u64,
    /// Internal: run as a worker (connect, print "ready", hold until stdin closes).
    #[arg(long, hide = true)]
    pub worker: bool,
}

pub async fn run(a: Args) -> anyhow::Result<Option<String>> {
    if a.worker {
        worker(&a.target, a.connections).await
    } else {
        parent(&a.target, a.connections, a.workers, a.settle_secs).await
    }
}

/// As a worker: opens its share, prints `ready N SECS`, holds them until stdin closes.
async fn worker(target: &Target, connections: usize) -> anyhow::Result<Option<String>> {
    let started = Instant::now();
    let conns = open_many(target, connections, |i| {
        (format!("idle{}", i % 100), String::new())
    })
    .await?;
    let secs = started.elapsed().as_secs_f64();
    println!("ready {} {secs}", conns.len());
    std::io::stdout().flush()?;
    let stop = Arc::new(Notify::new());
    let tasks = hold(conns, stop.clone());
    // Hold until the parent closes stdin.
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).unwrap_or(0) > 0 {}
    })
    .await?;
    stop.notify_waiters();
    for t in tasks {
        t.abort();
    }
    Ok(None)
}

/// Starts the workers, waits until each is ready, settles, then measures.
async fn parent(
    target: &Target,
    connections: usize,
    workers: usize,
    settle_secs: u64,
) -> anyhow::Result<Option<String>> {
    let before = server_rss(target);
    let slab_before = procfs::kernel_slab_bytes();
    let cpu0 = procfs::own_cpu_secs();
    let workers = workers.max(1);
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for w in 0..workers {
        let n = connections / workers + usize::from(w < connections % workers);
        let sources: Vec<String> = target
            .sources
            .iter()
            .enumerate()
            .filter(|(i, _)| target.sources.len() < workers || i % workers == w)
            .map(|(_, s)| s.to_string())
            .collect();
        let mut cmd = Command::new(&exe);
        cmd.args(["idle", "--worker", "--connections", &n.to_string()])
            .args([
                "--addr",
                &target.addr.to_string(),
                "--sources",
                &sources.join(","),
            ])
            .args(["--concurrency", &target.concurrency.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some(s) = &target.secret {
            cmd.args(["--secret", s]);
        }
        if let Some(ca) = &target.tls_ca {
            cmd.arg("--tls-ca").arg(ca);
        }
        children.push(cmd.spawn()?);
    }
    let mut held = 0usize;
    let mut connect_secs: f64 = 0.0;
    let mut client_cpu = 0.0;
    for child in &mut children {
        let out = child.stdout.take().expect("piped");
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        let mut parts = line.split_whitespace();
        anyhow::ensure!(parts.next() == Some("ready"), "a worker failed: {line:?}");
        held += parts.next().unwrap_or("0").parse::<usize>()?;
        connect_secs = connect_secs.max(parts.next().unwrap_or("0").parse()?);
        client_cpu += procfs::cpu_secs(child.id()).unwrap_or(0.0);
    }
    tokio::time::sleep(Duration::from_secs(settle_secs)).await;
    let after = server_rss(target);
    let slab_after = procfs::kernel_slab_bytes();
    for mut child in children {
        drop(child.stdin.take());
        let _ = child.wait();
    }
    let per_conn = match (before, after) {
        (Some(b), Some(a)) if held > 0 => Some((a.saturating_sub(b)) as f64 / held as f64),
        _ => None,
    };
    // Both ends of every connection are on this machine: this is a client's socket and
    // the server's, together.
    let kernel_per_conn = match (slab_before, slab_after) {
        (Some(b), Some(a)) if held > 0 => Some((a.saturating_sub(b)) as f64 / held as f64),
        _ => None,
    };
    let report = json!({
        "scenario": "idle",
        "connections": held,
        "handshakes_per_sec": held as f64 / connect_secs.max(1e-9),
        "connect_secs": connect_secs,
        "server_rss_before": before,
        "server_rss_after": after,
        "server_bytes_per_connection": per_conn,
        "kernel_slab_bytes_per_connection_both_ends": kernel_per_conn,
        "client_cpu_secs": client_cpu + procfs::own_cpu_secs() - cpu0,
    });
    eprintln!(
        "idle: {held} connections in {connect_secs:.2} s ({:.0} handshakes/s); server RSS {} -> {} ({} per connection)",
        held as f64 / connect_secs.max(1e-9),
        mib(before),
        mib(after),
        per_conn.map_or("?".into(), |b| format!("{:.0} B", b)),
    );
    Ok(Some(report.to_string()))
}
