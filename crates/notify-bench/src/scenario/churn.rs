//! `churn`: connect N, disconnect all, R times: handshakes per second under churn.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{mib, open_many, server_rss};
use crate::procfs;
use crate::Target;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    #[arg(long, default_value_t = 2000)]
    pub connections: usize,
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
}

pub async fn run(a: Args) -> anyhow::Result<Option<String>> {
    let (target, connections, rounds) = (&a.target, a.connections, a.rounds);
    let before = server_rss(target);
    let cpu0 = procfs::own_cpu_secs();
    let t0 = Instant::now();
    let mut opened = 0;
    for round in 0..rounds {
        let conns = open_many(target, connections, |i| {
            (format!("churn{}", i % 50), format!("{}", i % 7))
        })
        .await?;
        opened += conns.len();
        // Everyone leaves at once, as after a restart or a class ending.
        drop(conns);
        if round + 1 < rounds {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = server_rss(target);
    let report = json!({
        "scenario": "churn",
        "connections": connections, "rounds": rounds, "opened": opened,
        "seconds": secs,
        "handshakes_per_sec": opened as f64 / secs,
        "server_rss_before": before, "server_rss_after": after,
        "client_cpu_secs": procfs::own_cpu_secs() - cpu0,
    });
    eprintln!(
        "churn: {opened} handshakes in {secs:.2} s = {:.0}/s; server RSS {} -> {}",
        opened as f64 / secs,
        mib(before),
        mib(after)
    );
    Ok(Some(report.to_string()))
}
