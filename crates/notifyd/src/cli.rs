//! Command line: flags for every setting, `--check-config`, `--dev`, and the `token`
//! tools for admins.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tsugi_notify_core::{Plaintext, Scope};

use crate::config::Config;

/// The Tsugi notification daemon: checks tokens at the WebSocket handshake and relays
/// each message to the other browsers of the same link and room.
///
/// Settings come from a TOML file (--config), then TSUGI_NOTIFY_<KEY> environment
/// variables, then these flags, each overriding the one before.
#[derive(Debug, Parser)]
#[command(name = "tsugi-notifyd", version, max_term_width = 100)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Validate the configuration, print a summary (no secrets) and exit.
    #[arg(long)]
    pub check_config: bool,
    /// Development mode: ws://127.0.0.1:2021 with the secret "opensource".
    #[arg(long, global = true)]
    pub dev: bool,
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// One flag per setting, with the file's names (dashes for underscores; `[redis] url`
/// is `--redis-url`): declared with the settings, in `config`.
pub use crate::config::Settings;

/// The command line's parser: `Cli`'s, with each setting's default (from
/// [`Settings::defaults`]) added to its help as `[default: X]`.
pub fn command() -> clap::Command {
    let defaults: BTreeMap<&str, String> = Settings::defaults()
        .shown()
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
        .collect();
    Cli::command().mut_args(|arg| {
        let Some(default) = defaults.get(arg.get_id().as_str()) else {
            return arg;
        };
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        arg.help(format!("{help} [default: {default}]"))
    })
}

/// Parses the process's command line, as `Cli::try_parse` does.
pub fn parse() -> Result<Cli, clap::Error> {
    let mut command = command();
    let mut matches = command.try_get_matches_from_mut(std::env::args_os())?;
    Cli::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut command))
}

/// Admin tools.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check or make tokens with this configuration's secrets.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// `token verify` and `token mint`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a token's plaintext and claims, or "invalid".
    Verify {
        /// The token (v1 or legacy).
        token: String,
        /// Check it for the publish API instead of a browser connection.
        #[arg(long)]
        publish: bool,
    },
    /// Mint a v1 browser token (for testing a site's settings).
    Mint {
        /// $CFG->wwwroot of the site [default: the url's origin as http(s)].
        #[arg(long)]
        wwwroot: Option<String>,
        /// Link id.
        #[arg(long)]
        link: String,
        /// Context (course) id.
        #[arg(long)]
        context: Option<String>,
        /// User id.
        #[arg(long)]
        user: Option<String>,
        /// Lifetime in seconds (0: never expires) [default: token_ttl_secs].
        #[arg(long)]
        ttl: Option<u64>,
        /// Mint a publish token instead of a browser token.
        #[arg(long)]
        publish: bool,
    },
}

/// Runs a `token` command; returns the process exit code.
pub fn run_token(config: &Config, cmd: &TokenCommand) -> i32 {
    match cmd {
        TokenCommand::Verify { token, publish } => {
            let tokens = &config.tokens;
            let scope = if *publish {
                Scope::Publish
            } else {
                Scope::Browser
            };
            match tokens.verify(token.trim(), scope) {
                Ok(v) => {
                    let p = &v.plaintext;
                    println!("valid ({:?})", v.format);
                    println!("plaintext: {}", p);
                    println!("space:     {}", p.space());
                    println!("wwwroot:   {}", p.wwwroot());
                    println!("link:      {}", p.link());
                    println!("context:   {}", p.context().unwrap_or("(none)"));
                    println!("user:      {}", p.user().unwrap_or("(none)"));
                    if let Some(room) = &v.room {
                        println!(
                            "room:      {:?} (bound: good for this room only)",
                            room.as_str()
                        );
                    }
                    if let Some(iat) = v.issued_at {
                        println!("issued:    {iat} (unix)");
                    }
                    match v.expires_at {
                        Some(exp) => println!("expires:   {exp} (unix)"),
                        None => println!("expires:   never"),
                    }
                    0
                }
                Err(e) => {
                    // The reason is safe to show to an admin: it never holds the token.
                    let why = e
                        .rejection()
                        .map_or_else(|| e.to_string(), |r| r.to_string());
                    println!("invalid ({why})");
                    1
                }
            }
        }
        TokenCommand::Mint {
            wwwroot,
            link,
            context,
            user,
            ttl,
            publish,
        } => {
            let root = wwwroot
                .clone()
                .unwrap_or_else(|| config.http_origin.clone());
            let plaintext = match Plaintext::new(&root, link, context.as_deref(), user.as_deref()) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("tsugi-notifyd: {e}");
                    return 2;
                }
            };
            let tokens = config
                .tokens
                .clone()
                .with_ttl(ttl.unwrap_or(config.tokens.ttl()));
            let scope = if *publish {
                Scope::Publish
            } else {
                Scope::Browser
            };
            match tokens.mint(&plaintext, scope) {
                Ok(t) => {
                    println!("{t}");
                    0
                }
                Err(e) => {
                    eprintln!("tsugi-notifyd: {e}");
                    2
                }
            }
        }
    }
}

/// A command-line error without the words that caused it: clap would quote a value, and
/// a secret given unquoted (`--secret two words`) must not reach the terminal or the
/// journal. Help and version print as usual.
pub fn usage_error(e: &clap::Error) -> ExitCode {
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
            } else if let Some(near) = crate::config::near_miss(long, longs.iter().copied()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_shows_the_real_defaults_and_flags_are_a_layer() {
        let help = command().render_long_help().to_string();
        for line in [
            "Largest message in bytes; larger closes with 1009 [default: 65536]",
            "Lifetime of tokens minted by `token mint`, in seconds (0: never expire) \
             [default: 86400]",
            "Address of /metrics, or \"off\" [default: 127.0.0.1:9102]",
        ] {
            assert!(help.contains(line), "{line}: {help}");
        }
        // The settings without a default say nothing of one.
        assert!(!help.contains("the daemon listens on its port [default"));
        let matches = command()
            .try_get_matches_from([
                "tsugi-notifyd",
                "--url=ws://h:1",
                "--secrets=a,b",
                "--proxyport=0",
                "--redis-url=redis://h/",
                "--allowed-origins=https://a.example,https://b.example",
            ])
            .unwrap();
        let cli = Cli::from_arg_matches(&matches).unwrap();
        let c = Config::load(None, [], cli.settings, false).unwrap();
        assert_eq!((c.tokens.keyring().len(), c.listen.port()), (2, 0));
        assert_eq!(c.allowed_origins.len(), 2);
        assert_eq!(c.redis.unwrap().url, "redis://h/");
    }
}
