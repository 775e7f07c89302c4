//! `notify-bench`: a load client for tsugi-notifyd and for the reference server in
//! `bench/node-ws/`. Subcommands `idle` (connections held, server memory per
//! connection), `fanout` (rooms x subscribers x senders x messages: deliveries per
//! second, latency, loss, duplicates, leaks, echoes), `churn` (connect/disconnect
//! storms) and `soak` (a long run with traffic and churn, server RSS sampled), one
//! module each under `scenario/`. Every run reports its own CPU use so a saturated
//! client shows, and ends with one JSON line holding every figure.

mod client;
mod procfs;
mod scenario;

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
    /// Connect over wss:// (TLS), trusting the CA certificates of this PEM file.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Offer the subprotocol tsugi-notify.v1: receivers get JSON frames with sequences
    /// (the payload is read from their `data`).
    #[arg(long)]
    pub protocol: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Hold N idle connections; server RSS before and after, bytes per connection.
    Idle(scenario::idle::Args),
    /// R rooms x M subscribers, S senders per room sending K messages each.
    Fanout(scenario::fanout::Args),
    /// Hold N connections with steady traffic and churn for a while; sample server RSS.
    Soak(scenario::soak::Args),
    /// Connect N, disconnect all, R times: handshakes per second under churn.
    Churn(scenario::churn::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        match cli.command {
            Command::Idle(a) => scenario::idle::run(a).await,
            Command::Fanout(a) => scenario::fanout::run(a).await,
            Command::Soak(a) => scenario::soak::run(a).await,
            Command::Churn(a) => scenario::churn::run(a).await,
        }
    })?;
    if let Some(report) = report {
        println!("{report}");
    }
    Ok(())
}
