//! Command line: flags for every setting, `--check-config`, `--dev`, and the `token`
//! tools for admins.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use toml::{Table, Value};
use tsugi_notify_core::{Plaintext, Scope, Tokens};

use crate::config::{Config, LogFormat};

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

/// One flag per setting (the same names as the file's keys, with dashes).
#[derive(Debug, Args)]
pub struct Settings {
    /// $CFG->websocket_url; the daemon listens on its port.
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// $CFG->websocket_secret (prefer secret_file or the environment: flags show in ps).
    #[arg(long, global = true)]
    pub secret: Option<String>,
    /// File with the secrets, one per line (the first mints, any verifies).
    #[arg(long, value_name = "FILE", global = true)]
    pub secret_file: Option<PathBuf>,
    /// $CFG->websocket_proxyport: listen on this port instead of the URL's.
    #[arg(long)]
    pub proxyport: Option<u16>,
    /// Address to listen on [default: 0.0.0.0].
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// Accept tokens minted by unmodified Tsugi servers [default: true].
    #[arg(long, value_name = "BOOL", global = true)]
    pub accept_legacy_tokens: Option<bool>,
    /// Origins allowed to connect, comma-separated [default: any].
    #[arg(long, value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// Largest message in bytes; larger closes with 1009 [default: 65536].
    #[arg(long)]
    pub max_message_bytes: Option<usize>,
    /// Sustained messages per second per connection [default: 20].
    #[arg(long)]
    pub messages_per_second: Option<u32>,
    /// Messages a connection may send at once above its rate [default: 40].
    #[arg(long)]
    pub burst: Option<u32>,
    /// Sustained payload bytes per second per connection [default: 65536].
    #[arg(long)]
    pub bytes_per_second: Option<usize>,
    /// Payload bytes a connection may send at once above its rate [default: 262144].
    #[arg(long)]
    pub burst_bytes: Option<usize>,
    /// Connections in total; more get 503 [default: 19000].
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Connections per space (link); more get 503 [default: 5000].
    #[arg(long)]
    pub max_connections_per_space: Option<usize>,
    /// Connections opened with one token (one page render); more get 429 [default: 8].
    #[arg(long)]
    pub max_connections_per_token: Option<usize>,
    /// Connections per user of a site (v1 tokens naming a user); more get 429 [default: 32].
    #[arg(long)]
    pub max_connections_per_user: Option<usize>,
    /// Sockets not through their handshake; past it the oldest is closed [default: 1024].
    #[arg(long)]
    pub max_pending_handshakes: Option<usize>,
    /// Seconds a client has to send its request [default: 10].
    #[arg(long)]
    pub handshake_timeout_secs: Option<u64>,
    /// Seconds without any frame (not even a pong) before a close [default: 60].
    #[arg(long)]
    pub idle_timeout_secs: Option<u64>,
    /// Seconds between server pings [default: 25].
    #[arg(long)]
    pub ping_interval_secs: Option<u64>,
    /// Seconds a reader is given: no byte taken while output waits, or a queued message
    /// this old, closes it as not reading [default: 10].
    #[arg(long)]
    pub write_timeout_secs: Option<u64>,
    /// Messages queued per connection before it counts as not reading [default: 4096].
    #[arg(long)]
    pub outbound_queue: Option<usize>,
    /// Bytes queued per connection before it counts as not reading [default: 1048576].
    #[arg(long)]
    pub outbound_queue_bytes: Option<usize>,
    /// Address of /metrics, or "off" [default: 127.0.0.1:9102].
    #[arg(long)]
    pub metrics_bind: Option<String>,
    /// Log format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter: error, warn, info, debug, trace, or per module [default: info].
    #[arg(long)]
    pub log_level: Option<String>,
    /// Lifetime of tokens minted by `token mint`, in seconds [default: 86400].
    #[arg(long)]
    pub token_ttl_secs: Option<u64>,
    /// Redis for more than one node ([redis] url), e.g. redis://10.0.0.5:6379/ or
    /// rediss://user@10.0.0.5:6380/ (TLS).
    #[arg(long)]
    pub redis_url: Option<String>,
    /// File whose first line is the Redis password ([redis] password_file).
    #[arg(long, value_name = "FILE")]
    pub redis_password_file: Option<PathBuf>,
    /// PEM file of the CA to trust for rediss:// ([redis] ca_file) [default: the system's].
    #[arg(long, value_name = "FILE")]
    pub redis_ca_file: Option<PathBuf>,
}

impl Settings {
    /// The flags given, as a configuration layer.
    pub fn to_table(&self) -> Table {
        let mut t = Table::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                t.insert(k.to_owned(), v);
            }
        };
        let s = |v: &Option<String>| v.clone().map(Value::String);
        let n = |v: Option<u64>| v.map(|n| Value::Integer(i64::try_from(n).unwrap_or(i64::MAX)));
        put("url", s(&self.url));
        put("secret", s(&self.secret));
        put(
            "secret_file",
            self.secret_file
                .as_ref()
                .map(|p| Value::String(p.display().to_string())),
        );
        put("proxyport", n(self.proxyport.map(u64::from)));
        put("bind", self.bind.map(|b| Value::String(b.to_string())));
        put(
            "accept_legacy_tokens",
            self.accept_legacy_tokens.map(Value::Boolean),
        );
        put(
            "allowed_origins",
            self.allowed_origins
                .clone()
                .map(|v| Value::Array(v.into_iter().map(Value::String).collect())),
        );
        put(
            "max_message_bytes",
            n(self.max_message_bytes.map(|v| v as u64)),
        );
        put(
            "messages_per_second",
            n(self.messages_per_second.map(u64::from)),
        );
        put("burst", n(self.burst.map(u64::from)));
        put(
            "bytes_per_second",
            n(self.bytes_per_second.map(|v| v as u64)),
        );
        put("burst_bytes", n(self.burst_bytes.map(|v| v as u64)));
        put("max_connections", n(self.max_connections.map(|v| v as u64)));
        put(
            "max_connections_per_space",
            n(self.max_connections_per_space.map(|v| v as u64)),
        );
        put(
            "max_connections_per_token",
            n(self.max_connections_per_token.map(|v| v as u64)),
        );
        put(
            "max_connections_per_user",
            n(self.max_connections_per_user.map(|v| v as u64)),
        );
        put(
            "max_pending_handshakes",
            n(self.max_pending_handshakes.map(|v| v as u64)),
        );
        put("handshake_timeout_secs", n(self.handshake_timeout_secs));
        put("idle_timeout_secs", n(self.idle_timeout_secs));
        put("ping_interval_secs", n(self.ping_interval_secs));
        put("write_timeout_secs", n(self.write_timeout_secs));
        put("outbound_queue", n(self.outbound_queue.map(|v| v as u64)));
        put(
            "outbound_queue_bytes",
            n(self.outbound_queue_bytes.map(|v| v as u64)),
        );
        put("metrics_bind", s(&self.metrics_bind));
        put(
            "log_format",
            self.log_format.map(|f| {
                Value::String(match f {
                    LogFormat::Text => "text".into(),
                    LogFormat::Json => "json".into(),
                })
            }),
        );
        put("log_level", s(&self.log_level));
        put("token_ttl_secs", n(self.token_ttl_secs));
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| Value::String(p.display().to_string()));
        for (key, value) in [
            ("redis_url", s(&self.redis_url)),
            ("redis_password_file", path(&self.redis_password_file)),
            ("redis_ca_file", path(&self.redis_ca_file)),
        ] {
            if let Some(v) = value {
                crate::config::insert_key(&mut t, key.into(), v);
            }
        }
        t
    }
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
            let tokens = Tokens::new(config.keyring.clone()).accept_legacy(config.accept_legacy);
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
            let default_root = format!(
                "{}://{}",
                if config.url.is_secure() {
                    "https"
                } else {
                    "http"
                },
                config.url.host()
            );
            let root = wwwroot.clone().unwrap_or(default_root);
            let plaintext = match Plaintext::new(&root, link, context.as_deref(), user.as_deref()) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("tsugi-notifyd: {e}");
                    return 2;
                }
            };
            let tokens =
                Tokens::new(config.keyring.clone()).with_ttl(ttl.unwrap_or(config.token_ttl_secs));
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
