//! `soak`: a long run, N connections in rooms of 10, one stable sender per room at a steady
//! total rate, a stable cohort of receivers whose deliveries are counted exactly, and
//! churn (two members of every room come and go). Server RSS is sampled on a period.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::open_many;
use crate::client::{connect, token};
use crate::procfs;
use crate::Target;

/// Room members: 0 sends, 1..=7 are counted, 8 and 9 churn.
const ROOM: usize = 10;
const STABLE_RECEIVERS: usize = 7;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 600)]
    pub seconds: u64,
    /// Messages per second in all (one stable sender per room of 10).
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Connections closed and reopened per second.
    #[arg(long, default_value_t = 50)]
    pub churn: usize,
    /// Seconds between RSS samples.
    #[arg(long, default_value_t = 10)]
    pub sample_secs: u64,
    /// CSV file for the samples (seconds, server RSS bytes, connections).
    #[arg(long)]
    pub csv: Option<std::path::PathBuf>,
}

pub async fn run(s: Args) -> anyhow::Result<Option<String>> {
    let target = &s.target;
    let rooms = (s.connections / ROOM).max(1);
    let spec = |i: usize| (format!("soak{}", i / ROOM), format!("r{}", i / ROOM));
    let conns = open_many(target, rooms * ROOM, spec).await?;
    eprintln!("soak: {} connections in {rooms} rooms", conns.len());
    let received = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    let mut churners = Vec::new();
    let mut readers = Vec::new();
    for (i, ws) in conns.into_iter().enumerate() {
        match i % ROOM {
            0 => senders.push(ws),
            m if m <= STABLE_RECEIVERS => {
                let received = received.clone();
                readers.push(tokio::spawn(async move {
                    let mut ws = ws;
                    while let Some(Ok(m)) = ws.next().await {
                        if m.is_text() {
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
            _ => churners.push((i, Some(ws))),
        }
    }
    let start = Instant::now();
    let end = start + Duration::from_secs(s.seconds);
    // Senders: round robin over rooms at the total rate.
    let sent = Arc::new(AtomicU64::new(0));
    let send_task = {
        let sent = sent.clone();
        let rate = s.rate;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
            let mut n = 0usize;
            while Instant::now() < end {
                tick.tick().await;
                let ws = &mut senders[n % rooms];
                if ws.send(Message::text(format!("soak {n}"))).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
            senders
        })
    };
    // Churn and samples.
    let mut samples = Vec::new();
    let mut next_sample = start;
    let mut churned = 0usize;
    let mut cursor = 0usize;
    let target2 = target.clone();
    while Instant::now() < end {
        if Instant::now() >= next_sample {
            let rss = target.server_pid.and_then(procfs::rss_bytes).unwrap_or(0);
            let t = start.elapsed().as_secs_f64();
            samples.push((t, rss));
            eprintln!(
                "soak: t={t:.0}s server RSS {:.1} MiB, {} delivered",
                rss as f64 / 1048576.0,
                received.load(Ordering::Relaxed)
            );
            next_sample += Duration::from_secs(s.sample_secs);
        }
        for _ in 0..s.churn {
            let at = cursor % churners.len();
            let (i, slot) = &mut churners[at];
            cursor += 1;
            drop(slot.take());
            let (space, room) = spec(*i);
            let tok = token(&target2, &space, *i);
            let source = target2.sources[*i % target2.sources.len()];
            if let Ok(ws) = connect(
                target2.addr,
                source,
                &tok,
                &room,
                target2.tls_ca.as_deref(),
                target2.protocol,
            )
            .await
            {
                *slot = Some(ws);
                churned += 1;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let senders = send_task.await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = target.server_pid.and_then(procfs::rss_bytes).unwrap_or(0);
    samples.push((start.elapsed().as_secs_f64(), rss));
    drop(senders);
    drop(churners);
    for r in readers {
        r.abort();
    }
    let sent = sent.load(Ordering::Relaxed);
    let got = received.load(Ordering::Relaxed);
    let expected = sent * STABLE_RECEIVERS as u64;
    // Growth after warm-up: the first sample past 10% of the run against the last.
    let warm = samples
        .iter()
        .find(|(t, _)| *t >= s.seconds as f64 * 0.1)
        .map_or(0, |(_, r)| *r);
    let last = samples.last().map_or(0, |(_, r)| *r);
    let growth = if warm > 0 {
        (last as f64 - warm as f64) / warm as f64 * 100.0
    } else {
        0.0
    };
    if let Some(path) = &s.csv {
        let mut f = std::fs::File::create(path)?;
        writeln!(f, "seconds,server_rss_bytes,connections")?;
        for (t, r) in &samples {
            writeln!(f, "{t:.1},{r},{}", rooms * ROOM)?;
        }
    }
    let report = json!({
        "scenario": "soak", "connections": rooms * ROOM, "seconds": s.seconds,
        "sent": sent, "expected": expected, "delivered": got,
        "loss": expected.saturating_sub(got), "churned": churned,
        "rss_after_warmup": warm, "rss_last": last, "rss_growth_pct": growth,
        "samples": samples.len(),
    });
    eprintln!("soak: sent {sent}, delivered {got} of {expected} to the stable cohort; churned {churned}; RSS growth after warm-up {growth:.2}%");
    Ok(Some(report.to_string()))
}
