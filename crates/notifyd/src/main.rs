//! `tsugi-notifyd`: flags, logging, then the library.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;
use tsugi_notifyd::cli::Cli;
use tsugi_notifyd::{shutdown, systemd, Config, LogFormat, Server};

fn main() -> ExitCode {
    let cli = match tsugi_notifyd::cli::parse() {
        Ok(cli) => cli,
        Err(e) => return command_line_error(&e),
    };
    let config = match Config::load(
        cli.config.as_deref(),
        std::env::vars(),
        cli.settings.clone(),
        cli.dev,
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tsugi-notifyd: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(tsugi_notifyd::cli::Command::Token(cmd)) = &cli.command {
        return ExitCode::from(tsugi_notifyd::cli::run_token(&config, cmd) as u8);
    }
    if cli.check_config {
        println!("configuration ok");
        println!("{}", config.summary());
        return ExitCode::SUCCESS;
    }
    init_logging(&config);
    let fds = systemd::raise_fd_limit();
    let wanted = config.limits.max_connections + config.limits.max_pending_handshakes + 64;
    if (fds as usize) < wanted {
        tracing::warn!(
            open_files = fds,
            max_connections = config.limits.max_connections,
            "the open-file limit is below max_connections + max_pending_handshakes: raise LimitNOFILE"
        );
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tsugi-notifyd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("tsugi-notifyd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if config.dev {
        tracing::warn!(
            "DEVELOPMENT MODE: the secret is the well-known \"opensource\"; never use --dev in production"
        );
    }
    let token = CancellationToken::new();
    shutdown::on_signal(token.clone())?;
    let running = Server::bind(config).await?.start(token.clone())?;
    systemd::notify(systemd::State::Ready);
    token.cancelled().await;
    systemd::notify(systemd::State::Stopping);
    running.wait().await;
    tracing::info!("stopped");
    Ok(())
}

fn init_logging(config: &Config) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    // Colours only on a terminal (not in journald or a file).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// A command-line error without the words that caused it: clap would quote a value, and
/// a secret given unquoted (`--secret two words`) must not reach the terminal or the
/// journal. Help and version print as usual.
fn command_line_error(e: &clap::Error) -> ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    // The flag's name, and only when it is one of ours (what was typed could be a
    // secret that starts with `-`).
    use clap::CommandFactory;
    let command = Cli::command();
    let longs: Vec<&str> = command
        .get_arguments()
        .filter_map(clap::Arg::get_long)
        .collect();
    let flag = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => {
            let name = s.split(['=', ' ']).next().unwrap_or("");
            let long = name.strip_prefix("--").unwrap_or("");
            if longs.contains(&long) {
                format!(" ({name})")
            } else if let Some(near) = tsugi_notifyd::config::near_miss(long, longs.iter().copied())
            {
                format!(" (did you mean --{near}?)")
            } else {
                String::new()
            }
        }
        _ => String::new(),
    };
    let what = match e.kind() {
        ErrorKind::InvalidValue | ErrorKind::ValueValidation => "a flag has an invalid value",
        ErrorKind::UnknownArgument => "unknown flag",
        ErrorKind::InvalidSubcommand => {
            "unexpected word on the command line (a value with spaces needs quotes)"
        }
        ErrorKind::MissingRequiredArgument => "a required argument is missing",
        ErrorKind::TooManyValues | ErrorKind::WrongNumberOfValues => "too many values for a flag",
        ErrorKind::ArgumentConflict => "flags that cannot go together",
        _ => "invalid command line",
    };
    eprintln!("tsugi-notifyd: {what}{flag}; see tsugi-notifyd --help");
    ExitCode::from(2)
}
