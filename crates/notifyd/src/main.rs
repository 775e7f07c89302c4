//! `tsugi-notifyd`: the command line, then the library.

use std::process::ExitCode;

use tsugi_notifyd::cli::{self, Command};
use tsugi_notifyd::{logging, server, systemd, Config};

fn main() -> ExitCode {
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(e) => return cli::usage_error(&e),
    };
    let env = tsugi_notifyd::config::environment();
    let loaded =
        env.and_then(|env| Config::load(cli.config.as_deref(), env, cli.settings.clone(), cli.dev));
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tsugi-notifyd: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Token(cmd)) = &cli.command {
        return ExitCode::from(cli::run_token(&config, cmd) as u8);
    }
    if cli.check_config {
        println!("configuration ok\n{}", config.summary());
        return ExitCode::SUCCESS;
    }
    logging::init(&config);
    systemd::raise_fd_limit(&config.limits);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tsugi-notifyd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime
        .block_on(server::serve(config))
        .map_err(anyhow::Error::from)
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("tsugi-notifyd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
