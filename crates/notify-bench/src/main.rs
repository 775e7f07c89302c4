//! `notify-bench`: a load client for tsugi-notifyd and for the reference server in
//! `bench/node-ws/`. Subcommands `idle` (connections held, server memory per
//! connection), `fanout` (rooms x subscribers x senders x messages: deliveries per
//! second, latency, loss, duplicates, leaks, echoes) and `churn` (connect/disconnect
//! storms). Every run reports its own CPU use so a saturated client shows, and ends
//! with one JSON line holding every figure.

mod client;
mod procfs;
mod scenario;
mod soak;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "notify-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What every scenario needs to reach and observe the server.
#[derive(Debug, Args, Clone)]
pub struct Target {
    /// Server address, e.g. 127.0.0.1:2021.
    #[arg(long)]
    pub addr: std::net::SocketAddr,
    /// The server's secret: tokens are minted with it. Without it, tokens are plain
    /// space names (the reference server's convention).
    #[arg(long)]
    pub secret: Option<String>,
    /// The server's process id, for its memory and CPU time from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Source addresses to spread connections over (each has ~28k ephemeral ports).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1")]
    pub sources: Vec<std::net::IpAddr>,
    /// Connections opened at once.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Hold N idle connections; server RSS before and after, bytes per connection.
    Idle {
        #[command(flatten)]
        target: Target,
        /// Connections in total.
        #[arg(long)]
        connections: usize,
        /// Client processes to spread them over (a process may hold ~19,900 sockets).
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Seconds to hold them before measuring.
        #[arg(long, default_value_t = 3)]
        settle_secs: u64,
        /// Internal: run as a worker (connect, print "ready", hold until stdin closes).
        #[arg(long, hide = true)]
        worker: bool,
    },
    /// R rooms x M subscribers, S senders per room sending K messages each.
    Fanout {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 1)]
        rooms: usize,
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        #[arg(long, default_value_t = 1)]
        senders: usize,
        #[arg(long, default_value_t = 2000)]
        messages: usize,
        /// Message size in bytes (at least 48).
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Messages per second per sender; 0 sends unpaced.
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Connect the senders to this server instead (another node: cross-node delivery).
        #[arg(long)]
        sender_addr: Option<std::net::SocketAddr>,
    },
    /// Hold N connections with steady traffic and churn for a while; sample server RSS.
    Soak {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// Messages per second in all (one stable sender per room of 10).
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        /// Connections closed and reopened per second.
        #[arg(long, default_value_t = 50)]
        churn: usize,
        /// Seconds between RSS samples.
        #[arg(long, default_value_t = 10)]
        sample_secs: u64,
        /// CSV file for the samples (seconds, server RSS bytes, connections).
        #[arg(long)]
        csv: Option<std::path::PathBuf>,
    },
    /// Connect N, disconnect all, R times: handshakes per second under churn.
    Churn {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 2000)]
        connections: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        match cli.command {
            Command::Idle {
                target,
                connections,
                workers,
                settle_secs,
                worker,
            } => {
                if worker {
                    scenario::idle_worker(&target, connections).await
                } else {
                    scenario::idle(&target, connections, workers, settle_secs).await
                }
            }
            Command::Fanout {
                target,
                rooms,
                subscribers,
                senders,
                messages,
                size,
                rate,
                sender_addr,
            } => {
                scenario::fanout(
                    &target,
                    scenario::Fanout {
                        rooms,
                        subscribers,
                        senders,
                        messages,
                        size: size.max(48),
                        rate,
                        sender_addr,
                    },
                )
                .await
            }
            Command::Churn {
                target,
                connections,
                rounds,
            } => scenario::churn(&target, connections, rounds).await,
            Command::Soak {
                target,
                connections,
                seconds,
                rate,
                churn,
                sample_secs,
                csv,
            } => {
                crate::soak::run(
                    &target,
                    crate::soak::Soak {
                        connections,
                        seconds,
                        rate,
                        churn,
                        sample_secs,
                        csv,
                    },
                )
                .await
            }
        }
    })?;
    if let Some(report) = report {
        println!("{report}");
    }
    Ok(())
}
