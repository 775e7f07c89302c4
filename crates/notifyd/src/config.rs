//! Settings: `--dev` defaults, then a TOML file, then `TSUGI_NOTIFY_<KEY>` environment
//! variables, then flags, each overriding the one before. One name per setting
//! everywhere; an unknown name is an error that suggests the setting it is a typo of.
//!
//! Every setting is declared once, in [`settings!`] below: its name, type, default and
//! help. That one declaration gives the file's keys (`redis_<key>` is `<key>` of the
//! file's `[redis]` table), the environment variables, the flags with their help and
//! `[default: X]`, the defaults, the type checks and the `--check-config` summary.
//!
//! No error ever quotes a value: a secret typed without quotes, or under a misspelled
//! key, must not reach stderr (journald). Errors name the origin, the key, the line and
//! what is wrong. Types are therefore checked here, key by key, before serde sees a
//! table.
//!
//! The layering is written here rather than taken from a crate made for it (figment):
//! such a crate's errors quote the value they could not use, its TOML errors carry no
//! line, and its environment provider guesses types (a secret `123` would be a number).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::{Table, Value};
use tsugi_notify_core::{Keyring, Site, Tokens, WebsocketUrl, DEFAULT_TTL_SECS, LEEWAY_SECS};

/// Where development mode listens, and its well-known secret.
pub const DEV_URL: &str = "ws://127.0.0.1:2021";
/// The secret of development mode (Tsugi's own example secret).
pub const DEV_SECRET: &str = "opensource";
/// Prefix of the environment variables.
pub const ENV_PREFIX: &str = "TSUGI_NOTIFY_";
/// Largest `max_message_bytes` accepted.
pub const MAX_MESSAGE_BYTES_LIMIT: usize = 16 * 1024 * 1024;
/// The file's tables: a setting named `<table>_<key>` is `<key>` of `[<table>]`.
const TABLES: &[&str] = &["redis"];

/// Declares the settings. Each one is
///
/// ```text
/// /// Help, shown by --help (and the field's documentation).
/// #[arg(...)]                 // if need be: how clap takes the flag `--name`
/// name: Type = default;       // or `name: Type;`: no default
/// ```
///
/// and gives [`Settings`] (one layer: every setting optional; the flags themselves),
/// `KEYS` (every name with its [`Kind`], from the type through [`Setting`]),
/// [`Settings::defaults`] and `Values` (the settings in force: those with a default
/// are always set).
macro_rules! settings {
    ($(
        $(#[$attr:meta])*
        $name:ident : $ty:ty $(= $default:expr)?;
    )*) => {
        /// One layer of settings (`--dev`, the file, the environment or the flags):
        /// every setting, each one optional. Its flags are the daemon's.
        #[derive(Clone, Default, clap::Args, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Settings {
            $( $(#[$attr])* #[arg(long)] pub $name: Option<$ty>, )*
        }

        /// Every setting, with how its value is written.
        const KEYS: &[(&str, Kind)] = &[$( (stringify!($name), <$ty as Setting>::KIND), )*];

        /// The settings in force: those with a default always have a value.
        struct Values {
            $( $name: settings!(@in_force $ty $(, $default)?), )*
        }

        impl Settings {
            /// The defaults of the settings that have one.
            #[allow(clippy::useless_conversion)]
            pub fn defaults() -> Settings {
                Settings { $( $name: settings!(@default $ty $(, $default)?), )* }
            }

            /// Every setting given here, else the one of `lower`.
            fn or(self, lower: Settings) -> Settings {
                Settings { $( $name: self.$name.or(lower.$name), )* }
            }

            /// Every setting's name and its value as it may be shown (secrets are not).
            pub fn shown(&self) -> Vec<(&'static str, Option<String>)> {
                vec![$( (stringify!($name), self.$name.as_ref().map(Setting::show)), )*]
            }

            /// With the default of every setting not given.
            #[allow(clippy::useless_conversion)]
            fn in_force(self) -> Values {
                Values { $( $name: settings!(@resolve self.$name, $ty $(, $default)?), )* }
            }
        }
    };
    (@in_force $ty:ty) => { Option<$ty> };
    (@in_force $ty:ty, $default:expr) => { $ty };
    (@default $ty:ty) => { None };
    (@default $ty:ty, $default:expr) => { Some(<$ty>::from($default)) };
    (@resolve $v:expr, $ty:ty) => { $v };
    (@resolve $v:expr, $ty:ty, $default:expr) => { $v.unwrap_or_else(|| <$ty>::from($default)) };
}

settings! {
    /// $CFG->websocket_url; the daemon listens on its port.
    #[arg(global = true)]
    url: MaskedUrl;
    /// $CFG->websocket_secret (prefer secret_file or the environment: flags show in ps).
    #[arg(global = true)]
    secret: Secret;
    /// Several secrets, comma-separated: the first mints, any verifies (prefer
    /// secret_file or the environment: flags show in ps).
    #[arg(global = true, value_delimiter = ',')]
    secrets: Vec<Secret>;
    /// File with the secrets, one per line (the first mints, any verifies).
    #[arg(value_name = "FILE", global = true)]
    secret_file: PathBuf;
    /// $CFG->websocket_proxyport: listen on this port instead of the URL's (0: any free
    /// port).
    proxyport: i64;
    /// Address to listen on.
    bind: String = "0.0.0.0";
    /// Accept tokens minted by unmodified Tsugi servers.
    #[arg(value_name = "BOOL", global = true)]
    accept_legacy_tokens: bool = true;
    /// Origins allowed to connect, comma-separated; none means any.
    #[arg(value_delimiter = ',')]
    allowed_origins: Vec<String> = Vec::new();
    /// Largest message in bytes; larger closes with 1009.
    max_message_bytes: i64 = 64 * 1024;
    /// Sustained messages per second per sender (a user's sockets, or a token's, share it).
    messages_per_second: i64 = 20;
    /// Messages a sender may send at once above its rate.
    burst: i64 = 40;
    /// Sustained payload bytes per second per sender.
    bytes_per_second: i64 = 64 * 1024;
    /// Payload bytes a sender may send at once above its rate.
    burst_bytes: i64 = 256 * 1024;
    /// Connections in total; more get 503.
    max_connections: i64 = 19_000;
    /// Connections per space (link); more get 503.
    max_connections_per_space: i64 = 5_000;
    /// Connections opened with one token (one page render); more get 429.
    max_connections_per_token: i64 = 8;
    /// Connections per user of a site (v1 tokens naming a user); more get 429.
    max_connections_per_user: i64 = 32;
    /// Sockets not through their handshake; past it the oldest is closed.
    max_pending_handshakes: i64 = 1024;
    /// Seconds a client has to send its request.
    handshake_timeout_secs: i64 = 10;
    /// Seconds without any frame (not even a pong) before a close.
    idle_timeout_secs: i64 = 60;
    /// Seconds between server pings.
    ping_interval_secs: i64 = 25;
    /// Seconds a reader is given: no byte taken while output waits, or a queued message
    /// this old, closes it as not reading.
    write_timeout_secs: i64 = 10;
    /// Messages queued per connection before it counts as not reading.
    outbound_queue: i64 = 4096;
    /// Bytes queued per connection before it counts as not reading.
    outbound_queue_bytes: i64 = 1024 * 1024;
    /// Messages kept per room for tsugi-notify.v1 clients to recover (0: no history).
    history_messages: i64 = 100;
    /// Payload bytes kept per room for recovery.
    history_bytes: i64 = 256 * 1024;
    /// Seconds a message is kept for recovery, and an idle room's history lives.
    history_age_secs: i64 = 300;
    /// Payload bytes of history for all rooms of this node (without Redis).
    history_memory_bytes: i64 = 64 * 1024 * 1024;
    /// Sockets in a room above which presence is counts only (no join/leave frames).
    presence_max_users: i64 = 100;
    /// With Redis: seconds until the sockets of a node that died leave presence.
    presence_ttl_secs: i64 = 15;
    /// Address of /metrics, or "off".
    metrics_bind: String = "127.0.0.1:9102";
    /// Log format.
    #[arg(value_parser = ["text", "json"])]
    log_format: String = "text";
    /// Log filter: error, warn, info, debug, trace, or per module.
    log_level: String = "info";
    /// Lifetime of tokens minted by `token mint`, in seconds (0: never expire).
    token_ttl_secs: i64 = DEFAULT_TTL_SECS as i64;
    /// How far a web server's clock may be from this one, in seconds (0 to 3600): a v1
    /// token issued up to this far in the future, or expired up to this long ago, is
    /// accepted.
    clock_skew_secs: i64 = LEEWAY_SECS;
    /// Redis for more than one node ([redis] url), e.g. redis://10.0.0.5:6379/ or
    /// rediss://user@10.0.0.5:6380/ (TLS).
    redis_url: MaskedUrl;
    /// File whose first line is the Redis password ([redis] password_file).
    #[arg(value_name = "FILE")]
    redis_password_file: PathBuf;
    /// PEM file of the CA to trust for rediss:// ([redis] ca_file); when not set, the
    /// system's store.
    #[arg(value_name = "FILE")]
    redis_ca_file: PathBuf;
    /// TLS on the WebSocket port (wss://, https://): the certificate chain, PEM, leaf
    /// first (certbot's fullchain.pem). Needs tls_key and a wss:// url.
    #[arg(value_name = "FILE")]
    tls_cert: PathBuf;
    /// The certificate's private key, PEM: PKCS#8, SEC1 or PKCS#1 (certbot's privkey.pem).
    #[arg(value_name = "FILE")]
    tls_key: PathBuf;
    /// Seconds between looks at tls_cert and tls_key for a renewed pair (0: only on
    /// SIGHUP).
    tls_check_secs: i64 = 10;
}

impl std::fmt::Debug for Settings {
    /// The names of the settings given, never their values.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let given: Vec<&str> = self
            .shown()
            .into_iter()
            .filter_map(|(k, v)| v.map(|_| k))
            .collect();
        f.debug_struct("Settings").field("given", &given).finish()
    }
}

impl Settings {
    /// `self` (a higher layer) over `lower`: every setting given here wins, and a secret
    /// given here in any of its three forms (secret, secrets, secret_file) replaces the
    /// others from below.
    pub fn over(self, mut lower: Settings) -> Settings {
        if self.secret.is_some() || self.secrets.is_some() || self.secret_file.is_some() {
            lower.secret = None;
            lower.secrets = None;
            lower.secret_file = None;
        }
        self.or(lower)
    }

    /// What `--dev` starts from: loopback, the URL of development mode, its secret.
    fn dev() -> Settings {
        Settings {
            url: Some(DEV_URL.to_owned().into()),
            secret: Some(Secret(DEV_SECRET.into())),
            bind: Some("127.0.0.1".into()),
            ..Settings::default()
        }
    }
}

/// A string setting that is never shown as it is: `Debug`, like the summary, shows
/// [`Setting::show`].
macro_rules! masked_string {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.show())
            }
        }
    };
}

masked_string! {
    /// A secret as given: shown only as given.
    Secret
}

masked_string! {
    /// A URL that may hold `user:password@`: shown through [`redact_url`].
    MaskedUrl
}

/// How a setting's value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Int,
    Bool,
    List,
}

impl Kind {
    fn expected(self) -> &'static str {
        match self {
            Kind::Str => "a string (in quotes)",
            Kind::Int => "an integer",
            Kind::Bool => "true or false",
            Kind::List => "a list of strings",
        }
    }

    fn matches(self, v: &Value) -> bool {
        match (self, v) {
            (Kind::Str, Value::String(_))
            | (Kind::Int, Value::Integer(_))
            | (Kind::Bool, Value::Boolean(_)) => true,
            (Kind::List, Value::Array(items)) => items.iter().all(Value::is_str),
            _ => false,
        }
    }

    /// An environment variable's text as a value of this kind: integers, booleans
    /// (true/1/yes/on, false/0/no/off), comma-separated lists.
    fn parse_env(self, text: String) -> Result<Value, &'static str> {
        Ok(match self {
            Kind::Str => Value::String(text),
            Kind::Int => Value::Integer(text.trim().parse().map_err(|_| "an integer")?),
            Kind::Bool => Value::Boolean(match text.trim() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => return Err("true or false"),
            }),
            Kind::List => Value::Array(
                text.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::String(s.to_owned()))
                    .collect(),
            ),
        })
    }
}

/// The types a setting may have: how each is written, and how it is shown.
trait Setting {
    const KIND: Kind;
    /// For `--help`'s `[default: X]` and the summary; never a secret.
    fn show(&self) -> String;
}

/// [`Setting`] for each type: its kind, and how a value is shown.
macro_rules! setting_types {
    ($($ty:ty: $kind:ident, |$v:ident| $show:expr;)*) => {
        $(impl Setting for $ty {
            const KIND: Kind = Kind::$kind;
            fn show(&self) -> String {
                let $v = self;
                $show
            }
        })*
    };
}

setting_types! {
    String: Str, |s| s.clone();
    PathBuf: Str, |p| p.display().to_string();
    i64: Int, |n| n.to_string();
    bool: Bool, |b| b.to_string();
    Vec<String>: List, |l| if l.is_empty() { "none".to_owned() } else { l.join(", ") };
    Secret: Str, |_s| "(given, not shown)".to_owned();
    Vec<Secret>: List, |l| format!("({} given, not shown)", l.len());
    MaskedUrl: Str, |u| redact_url(&u.0);
}

/// Where a setting is written in the file: `(None, name)` at the top level, or
/// `(Some(table), key)` for `<table>_<key>`.
fn file_key(name: &'static str) -> (Option<&'static str>, &'static str) {
    for table in TABLES {
        if let Some(key) = name.strip_prefix(table).and_then(|r| r.strip_prefix('_')) {
            return (Some(table), key);
        }
    }
    (None, name)
}

/// The keys of the file's `table` (`None`: the top level), with their kinds.
fn file_keys(table: Option<&str>) -> impl Iterator<Item = (&'static str, Kind)> + '_ {
    KEYS.iter().filter_map(move |(name, kind)| {
        let (t, key) = file_key(name);
        (t == table).then_some((key, *kind))
    })
}

/// A configuration error, with the setting and where it came from. Never holds a value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML, or a value has the wrong type, or a key is unknown.
    #[error("{origin}: {message}")]
    Invalid {
        /// File, environment variable or flags.
        origin: String,
        /// What is wrong (names the key and line, never the value).
        message: String,
    },
    /// An environment variable with the prefix that names no setting.
    #[error("environment variable {0} names no setting")]
    UnknownEnv(String),
    /// A value out of its range, or settings that contradict each other.
    #[error("{0}")]
    Setting(String),
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}
/// Bounds on what clients may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest message a client may send; larger closes with 1009.
    pub max_message_bytes: usize,
    /// Sustained messages per second per sender: a user (all the sockets of its v1
    /// tokens) or, for legacy tokens and tokens without a user, a token.
    pub messages_per_second: u32,
    /// Messages a sender may send at once above the sustained rate.
    pub burst: u32,
    /// Sustained payload bytes per second per sender.
    pub bytes_per_second: usize,
    /// Payload bytes a sender may send at once above the sustained rate.
    pub burst_bytes: usize,
    /// Connections in total; more are refused with 503.
    pub max_connections: usize,
    /// Connections per space; more are refused with 503.
    pub max_connections_per_space: usize,
    /// Connections opened with one token; more are refused with 429.
    pub max_connections_per_token: usize,
    /// Connections of one user of one site (v1 tokens that name a user; legacy tokens
    /// carry the course in the user field and are not counted); more are refused with
    /// 429. Bounds a student who reloads the page for fresh tokens.
    pub max_connections_per_user: usize,
    /// Sockets accepted but not through their handshake; beyond it the oldest is closed.
    pub max_pending_handshakes: usize,
    /// Time for a client to send its whole HTTP request.
    pub handshake_timeout: Duration,
    /// A connection silent (not even a pong) this long is closed.
    pub idle_timeout: Duration,
    /// How often the server pings each connection.
    pub ping_interval: Duration,
    /// How long a reader is given: a connection whose socket takes no byte for this
    /// long while the server has something to write, or whose oldest queued message has
    /// waited this long, is closed as not reading.
    pub write_timeout: Duration,
    /// Messages queued for a connection before it counts as a slow reader (closed 1008).
    pub outbound_queue: usize,
    /// Bytes queued for a connection before it counts as a slow reader (closed 1008).
    pub outbound_queue_bytes: usize,
    /// History kept for the protocol's clients to recover.
    pub history: crate::history::HistoryLimits,
    /// Sockets in a room above which presence is counts only.
    pub presence_max_users: usize,
    /// With Redis: how soon the sockets of a node that died leave presence.
    pub presence_ttl: Duration,
}

impl Default for Limits {
    /// The limits of [`Settings::defaults`].
    fn default() -> Self {
        limits(&Settings::default().in_force()).expect("the default limits are valid")
    }
}

/// Redis for the backplane between nodes.
#[derive(Clone)]
pub struct Redis {
    /// `redis://` or `rediss://` (TLS) URL; may hold `user:password@`.
    pub url: String,
    /// A password read from `password_file` (overrides one in the URL).
    pub password: Option<String>,
    /// PEM certificates to trust for `rediss://` instead of the system's store.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("url", &redact_url(&self.url))
            .field("password", &self.password.as_ref().map(|_| "MASKED"))
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .finish()
    }
}

/// A URL with any `user:password@` replaced, for logs and summaries.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(not a URL)".to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://MASKED@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `websocket_url`, as Tsugi has it.
    pub url: WebsocketUrl,
    /// Where the WebSocket listener binds.
    pub listen: SocketAddr,
    /// The tokens minted and accepted, as core's `Site` makes them from `$CFG`: the
    /// secrets (the first mints, any verifies), `token_ttl_secs` for `token mint`, and
    /// whether legacy tokens open connections.
    pub tokens: Tokens,
    /// `http(s)://host` for `ws(s)://`: `token mint`'s default wwwroot (core's `Site`).
    pub http_origin: String,
    /// Origins allowed to connect; empty means any.
    pub allowed_origins: Vec<String>,
    /// Client bounds.
    pub limits: Limits,
    /// Where `/metrics` is served; `None` when switched off.
    pub metrics_bind: Option<SocketAddr>,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (`info`, `debug`, `tsugi_notifyd=debug`, ...).
    pub log_level: String,
    /// Development mode (well-known secret).
    pub dev: bool,
    /// Redis for the backplane between nodes, when configured.
    pub redis: Option<Redis>,
    /// TLS on the WebSocket port, when `tls_cert` and `tls_key` are set.
    pub tls: Option<crate::tls::TlsFiles>,
    /// The settings in force (the layers over the defaults), for the summary.
    settings: Settings,
}

impl Config {
    /// A configuration for tests and embedding: loopback, any free port, the given
    /// secret, metrics off, default limits.
    pub fn for_loopback(secret: &str) -> Result<Config, Error> {
        let settings = Settings {
            secret: Some(Secret(secret.into())),
            proxyport: Some(0),
            metrics_bind: Some("off".into()),
            ..Settings::dev()
        };
        Config::from_settings(settings, false)
    }

    /// Loads the layers in order: `--dev` defaults, the file, the environment, flags.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: Settings,
        dev: bool,
    ) -> Result<Config, Error> {
        let mut settings = if dev {
            Settings::dev()
        } else {
            Settings::default()
        };
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
                path: path.to_owned(),
                source,
            })?;
            settings = parse_toml(&text, &path.display().to_string())?.over(settings);
        }
        settings = env_settings(env)?.over(settings);
        Config::from_settings(flags.over(settings), dev)
    }

    /// A configuration from TOML text alone (no environment, no flags), as a file would
    /// give it: what the config fuzz target feeds.
    pub fn from_toml_str(text: &str) -> Result<Config, Error> {
        Config::from_settings(parse_toml(text, "configuration")?, false)
    }

    fn from_settings(settings: Settings, dev: bool) -> Result<Config, Error> {
        let settings = settings.or(Settings::defaults());
        validate(settings.clone().in_force(), settings, dev)
    }
}

/// A file's text as a layer: parsed, and type-checked so that errors can give the line.
fn parse_toml(text: &str, origin: &str) -> Result<Settings, Error> {
    let table: Table = text.parse().map_err(|e: toml::de::Error| {
        let at = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
        let (line, column) = line_col(text, at);
        let key = key_on_line(text, line)
            .map(|k| format!(" (key `{k}`)"))
            .unwrap_or_default();
        Error::Invalid {
            origin: origin.to_owned(),
            message: format!(
                "line {line}, column {column}{key}: not valid TOML (strings need quotes; \
                 keys are written key = value)"
            ),
        }
    })?;
    check_types(&table, origin, text)?;
    // `[redis] url` is the setting `redis_url`.
    let mut flat = Table::new();
    for (key, value) in table {
        match value {
            Value::Table(inner) if TABLES.contains(&key.as_str()) => {
                flat.extend(inner.into_iter().map(|(k, v)| (format!("{key}_{k}"), v)));
            }
            value => {
                flat.insert(key, value);
            }
        }
    }
    settings_of(flat, origin)
}

/// A checked, flat table (every key a setting of the right kind) as a layer.
fn settings_of(table: Table, origin: &str) -> Result<Settings, Error> {
    // Every key and type was checked before; this cannot fail, and if it did its
    // message (which may quote a value) is not shown.
    Settings::deserialize(Value::Table(table)).map_err(|_| Error::Invalid {
        origin: origin.to_owned(),
        message: "a setting has the wrong type".into(),
    })
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..at];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let column = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
    (line, column)
}

/// The setting written at the start of a line (`key = ...`), if it is one of ours: only
/// a known name is ever repeated (a line of base64 ends in `=` too).
fn key_on_line(text: &str, line: usize) -> Option<&'static str> {
    let l = text.lines().nth(line.checked_sub(1)?)?;
    let (key, _) = l.split_once('=')?;
    known(key.trim())
}

/// The file's key of a setting, as `&'static str`, if `name` is one (in a table, or
/// dotted: `url`, `redis.url`).
fn known(name: &str) -> Option<&'static str> {
    KEYS.iter()
        .map(|(k, _)| file_key(k))
        .find_map(|(table, key)| {
            let dotted = table.is_some_and(|t| {
                name.strip_prefix(t).and_then(|r| r.strip_prefix('.')) == Some(key)
            });
            (name == key || dotted).then_some(key)
        })
}

/// What is said of an unknown name: never the name itself (it could be a secret written
/// where a key goes), but the setting it is a near miss of, if any (a typo).
fn unknown<'a>(name: &str, settings: impl IntoIterator<Item = &'a str>) -> String {
    match near_miss(name, settings) {
        Some(k) => format!("unknown key (did you mean `{k}`?)"),
        None => "unknown key (not a setting: see packaging/tsugi-notifyd.toml)".to_owned(),
    }
}

/// The candidate that `name` is a typo of, if any (a few letters off, or cut short).
pub fn near_miss<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates.into_iter().find(|k| {
        // Close in length too, so that a secret that merely starts like a key
        // (`secret_...`) is never taken for one.
        name.len() <= k.len() + 3
            && (edit_distance(k, name) <= 2.max(k.len() / 5)
                || (name.len() >= 4 && (k.starts_with(name) || name.starts_with(k))))
    })
}

/// Levenshtein distance, for telling typos from other text.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Each `key = ...` line of a file's text: its number (from 1), its table (`None`: the
/// top level) and its key.
fn assignments(text: &str) -> impl Iterator<Item = (usize, Option<String>, &str)> {
    let mut table = None;
    text.lines().enumerate().filter_map(move |(i, l)| {
        let t = l.trim();
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            table = Some(name.trim().to_owned());
            return None;
        }
        let (k, _) = t.split_once('=')?;
        Some((i + 1, table.clone(), k.trim()))
    })
}

/// The line where `key` is set, in `section` (`None`: the top level).
fn line_of(text: &str, section: Option<&str>, key: &str) -> Option<usize> {
    assignments(text)
        .find(|(_, current, k)| {
            let here = current.as_deref() == section && *k == key;
            let dotted = section.is_some_and(|s| current.is_none() && *k == format!("{s}.{key}"));
            here || dotted
        })
        .map(|(line, ..)| line)
}

/// Checks every key of a file against its kind, so that an error names the file, the
/// line and the key, and never repeats a value.
fn check_types(table: &Table, origin: &str, text: &str) -> Result<(), Error> {
    let at = |table: Option<&str>, key: &str| {
        line_of(text, table, key)
            .map(|l| format!("line {l}: "))
            .unwrap_or_default()
    };
    let invalid = |message: String| Error::Invalid {
        origin: origin.to_owned(),
        message,
    };
    let check = |table: Option<&str>, key: &str, value: &Value| {
        let within = table.map(|t| format!("[{t}] ")).unwrap_or_default();
        let Some((_, kind)) = file_keys(table).find(|(k, _)| *k == key) else {
            let within = table.map(|t| format!("[{t}]: ")).unwrap_or_default();
            let keys = file_keys(table).map(|(k, _)| k);
            return Err(invalid(format!(
                "{}{within}{}",
                at(table, key),
                unknown(key, keys)
            )));
        };
        if kind.matches(value) {
            Ok(())
        } else {
            Err(invalid(format!(
                "{}{within}`{key}` must be {}",
                at(table, key),
                kind.expected()
            )))
        }
    };
    for (key, value) in table {
        let Some(name) = TABLES.iter().find(|t| **t == key) else {
            check(None, key, value)?;
            continue;
        };
        let Value::Table(inner) = value else {
            return Err(invalid(format!(
                "{}`{key}` must be a table ([{key}])",
                at(None, key)
            )));
        };
        for (k, v) in inner {
            check(Some(name), k, v)?;
        }
    }
    Ok(())
}

/// `TSUGI_NOTIFY_<KEY>` variables as a layer; a variable with the prefix that names no
/// setting is an error that names the variable.
/// The process's `TSUGI_NOTIFY_*` variables, for [`Config::load`]. A value that is not
/// UTF-8 is an error naming the variable (never the value); other variables are not
/// looked at.
pub fn environment() -> Result<Vec<(String, String)>, Error> {
    use std::os::unix::ffi::OsStrExt;
    let mut ours = Vec::new();
    for (name, value) in std::env::vars_os() {
        if !name.as_bytes().starts_with(ENV_PREFIX.as_bytes()) {
            continue;
        }
        let Some(name) = name.to_str() else {
            return Err(Error::Setting(format!(
                "an environment variable named {ENV_PREFIX}... is not UTF-8"
            )));
        };
        let Ok(value) = value.into_string() else {
            return Err(Error::Invalid {
                origin: format!("environment {name}"),
                message: "not UTF-8".to_owned(),
            });
        };
        ours.push((name.to_owned(), value));
    }
    Ok(ours)
}

fn env_settings(env: impl IntoIterator<Item = (String, String)>) -> Result<Settings, Error> {
    let mut table = Table::new();
    for (name, value) in env {
        let Some(key) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        let Some((key, kind)) = KEYS.iter().find(|(k, _)| *k == key) else {
            return Err(Error::UnknownEnv(name));
        };
        let value = kind.parse_env(value).map_err(|what| Error::Invalid {
            origin: format!("environment {name}"),
            message: format!("expected {what}"),
        })?;
        table.insert((*key).to_owned(), value);
    }
    settings_of(table, "environment")
}

/// One secret per non-empty line, byte for byte (a secret may start with `#`); only a
/// line ending's `\r` is taken off, and lines of nothing but white space are skipped.
fn read_secret_file(path: &Path) -> Result<Vec<String>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(text
        .lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect())
}

/// A whole number in `min..=max`.
fn int<T: TryFrom<i64>>(name: &str, value: i64, min: i64, max: i64) -> Result<T, Error> {
    let out_of_range = || Error::Setting(format!("{name} must be between {min} and {max}"));
    if value < min || value > max {
        return Err(out_of_range());
    }
    T::try_from(value).map_err(|_| out_of_range())
}

/// Reads a file's bytes for a setting.
fn read_file(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

fn validate(mut v: Values, settings: Settings, dev: bool) -> Result<Config, Error> {
    let setting = |m: &str| Error::Setting(m.to_owned());
    let url = v
        .url
        .take()
        .ok_or_else(|| setting("url is required (the same value as $CFG->websocket_url)"))?;
    let secrets = match (v.secret.take(), v.secrets.take(), v.secret_file.take()) {
        (Some(s), None, None) => vec![s.0],
        (None, Some(list), None) => list.into_iter().map(|s| s.0).collect(),
        (None, None, Some(path)) => read_secret_file(&path)?,
        (None, None, None) => {
            return Err(setting(
                "a secret is required: secret, secrets or secret_file ($CFG->websocket_secret)",
            ))
        }
        _ => return Err(setting("give only one of secret, secrets and secret_file")),
    };
    let keyring = Keyring::new(&secrets)
        .map_err(|_| setting("secrets must be non-empty (and at least one given)"))?;
    let bind: IpAddr = v
        .bind
        .parse()
        .map_err(|_| setting("bind must be an IP address such as 0.0.0.0, 127.0.0.1 or ::"))?;
    let proxyport = v
        .proxyport
        .map(|p| int::<u16>("proxyport", p, 0, 65_535))
        .transpose()?;
    let ttl = int::<i64>("token_ttl_secs", v.token_ttl_secs, 0, i64::MAX)?;
    // $CFG semantics (the URL, its port, proxyport, the token lifetime, the legacy
    // switch) are core's, as the PHP extension has them.
    let site = Site::new(Some(&url.0), Some(keyring))
        .with_proxyport(proxyport.map(i64::from))
        .with_ttl(Some(ttl))
        .with_accept_legacy(v.accept_legacy_tokens);
    let skew = int::<u64>("clock_skew_secs", v.clock_skew_secs, 0, 3600)?;
    let (Some(url), Some(tokens)) = (site.url(), site.tokens()) else {
        return Err(setting(
            "url must be a ws:// or wss:// URL with a host, as $CFG->websocket_url",
        ));
    };
    let limits = limits(&v)?;
    let metrics_bind = match v.metrics_bind.as_str() {
        "" | "off" => None,
        addr => Some(addr.parse().map_err(|_| {
            setting("metrics_bind must be an address such as 127.0.0.1:9102, or \"off\"")
        })?),
    };
    let log_format = match v.log_format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        _ => return Err(setting("log_format must be \"text\" or \"json\"")),
    };
    if tracing_subscriber::EnvFilter::try_new(&v.log_level).is_err() {
        return Err(setting(
            "log_level must be a log filter such as info, debug or tsugi_notifyd=debug",
        ));
    }
    let allowed_origins = v
        .allowed_origins
        .into_iter()
        .map(|o| crate::http::origin_key(&o))
        .collect();
    let tls = tls_settings(v.tls_cert, v.tls_key, v.tls_check_secs, url)?;
    Ok(Config {
        url: url.clone(),
        listen: SocketAddr::new(bind, listen_port(&site, proxyport)),
        tokens: tokens.clone().with_leeway(skew),
        http_origin: site.http_origin().unwrap_or_default(),
        allowed_origins,
        limits,
        metrics_bind,
        log_format,
        log_level: v.log_level,
        dev,
        redis: redis_settings(v.redis_url, v.redis_password_file, v.redis_ca_file)?,
        tls,
        settings,
    })
}

/// `tls_cert` and `tls_key`: both or neither, with a `wss://` url (browsers are told to
/// speak TLS to this port), and a pair that loads now, so that a bad file fails at start
/// and in `--check-config`.
fn tls_settings(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    check_secs: i64,
    url: &WebsocketUrl,
) -> Result<Option<crate::tls::TlsFiles>, Error> {
    let setting = |m: String| Error::Setting(m);
    let check = int::<u64>("tls_check_secs", check_secs, 0, 86_400)?;
    let (cert, key) = match (cert, key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        _ => {
            return Err(setting(
                "tls_cert and tls_key go together: set both, or neither".into(),
            ))
        }
    };
    if !url.is_secure() {
        return Err(setting(
            "tls_cert needs a wss:// url: browsers reach a TLS port with wss:// ($CFG->websocket_url)".into(),
        ));
    }
    let files = crate::tls::TlsFiles {
        cert,
        key,
        check_every: (check > 0).then(|| Duration::from_secs(check)),
        host: Some(url.host().to_owned()),
    };
    crate::tls::load(&files).map_err(setting)?;
    Ok(Some(files))
}

/// The port to listen on: `Site`'s (proxyport when set, else the URL's), except that
/// `proxyport = 0` means any free port (tests and embedding bind so), which `Site` takes
/// for "not set".
fn listen_port(site: &Site, proxyport: Option<u16>) -> u16 {
    match proxyport {
        Some(0) => 0,
        _ => site.listen_port().unwrap_or(0),
    }
}

/// The client bounds, each in its range, and agreeing with each other.
fn limits(v: &Values) -> Result<Limits, Error> {
    const BIG: i64 = i32::MAX as i64;
    // A count of at least 1, or seconds from 1 to a day, named after its setting.
    macro_rules! count {
        ($key:ident, $max:expr) => {
            int(stringify!($key), v.$key, 1, $max)?
        };
        ($key:ident) => {
            count!($key, BIG)
        };
    }
    macro_rules! secs {
        ($key:ident) => {
            Duration::from_secs(count!($key, 86_400))
        };
    }
    let limits = Limits {
        max_message_bytes: count!(max_message_bytes, MAX_MESSAGE_BYTES_LIMIT as i64),
        messages_per_second: count!(messages_per_second),
        burst: count!(burst),
        bytes_per_second: count!(bytes_per_second),
        burst_bytes: count!(burst_bytes),
        max_connections: count!(max_connections),
        max_connections_per_space: count!(max_connections_per_space),
        max_connections_per_token: count!(max_connections_per_token),
        max_connections_per_user: count!(max_connections_per_user),
        max_pending_handshakes: count!(max_pending_handshakes),
        handshake_timeout: secs!(handshake_timeout_secs),
        idle_timeout: secs!(idle_timeout_secs),
        ping_interval: secs!(ping_interval_secs),
        write_timeout: secs!(write_timeout_secs),
        outbound_queue: count!(outbound_queue),
        outbound_queue_bytes: count!(outbound_queue_bytes),
        history: crate::history::HistoryLimits {
            messages: int("history_messages", v.history_messages, 0, 100_000)?,
            bytes: count!(history_bytes),
            age: secs!(history_age_secs),
            memory: count!(history_memory_bytes, i64::MAX),
        },
        presence_max_users: count!(presence_max_users),
        presence_ttl: secs!(presence_ttl_secs),
    };
    check_limits(&limits)?;
    Ok(limits)
}

/// `[redis]`: the URL's scheme, and the files read now so that a bad path fails at
/// start (and in `--check-config`), not at the first reconnect.
fn redis_settings(
    url: Option<MaskedUrl>,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
) -> Result<Option<Redis>, Error> {
    let Some(url) = url.map(|u| u.0).filter(|u| !u.is_empty()) else {
        if password_file.is_some() || ca_file.is_some() {
            return Err(Error::Setting(
                "[redis] password_file and ca_file need [redis] url".into(),
            ));
        }
        return Ok(None);
    };
    let tls = url.starts_with("rediss://");
    if !tls && !url.starts_with("redis://") {
        return Err(Error::Setting(
            "[redis] url must start with redis:// or rediss:// (TLS)".into(),
        ));
    }
    if redis::Client::open(url.as_str()).is_err() {
        return Err(Error::Setting(
            "[redis] url is not a valid Redis URL (redis://[user:password@]host[:port][/db])"
                .into(),
        ));
    }
    let password = match password_file {
        Some(path) => {
            let text = String::from_utf8(read_file(&path)?)
                .map_err(|_| Error::Setting("[redis] password_file must hold UTF-8 text".into()))?;
            let pw = text.lines().next().unwrap_or("").trim_end_matches('\r');
            if pw.is_empty() {
                return Err(Error::Setting(
                    "[redis] password_file holds no password on its first line".into(),
                ));
            }
            Some(pw.to_owned())
        }
        None => None,
    };
    let ca_pem = match ca_file {
        Some(_) if !tls => {
            return Err(Error::Setting(
                "[redis] ca_file is for rediss:// (TLS) URLs".into(),
            ))
        }
        Some(path) => {
            let pem = read_file(&path)?;
            const MARKER: &[u8] = b"-----BEGIN CERTIFICATE-----";
            if !pem.windows(MARKER.len()).any(|w| w == MARKER) {
                return Err(Error::Setting(
                    "[redis] ca_file must hold PEM certificates".into(),
                ));
            }
            Some(pem)
        }
        None => None,
    };
    Ok(Some(Redis {
        url,
        password,
        ca_pem,
    }))
}

/// The limits must agree with each other: what one sender may legally send must never
/// get a reader closed by itself, and a ping must come before the idle timeout.
fn check_limits(l: &Limits) -> Result<(), Error> {
    let setting = |m: String| Err(Error::Setting(m));
    if l.ping_interval >= l.idle_timeout {
        return setting("ping_interval_secs must be shorter than idle_timeout_secs".into());
    }
    if l.burst_bytes < l.max_message_bytes {
        return setting(format!(
            "burst_bytes ({}) must be at least max_message_bytes ({}): a message of the \
             largest size could never be sent",
            l.burst_bytes, l.max_message_bytes
        ));
    }
    let secs = l.write_timeout.as_secs();
    let one_sender_messages = u64::from(l.burst) + u64::from(l.messages_per_second) * secs;
    if (l.outbound_queue as u64) < one_sender_messages {
        return setting(format!(
            "outbound_queue ({}) is smaller than what one sender may send within \
             write_timeout_secs (burst + messages_per_second x write_timeout_secs = {}): \
             one sender within its limits could get a reader closed",
            l.outbound_queue, one_sender_messages
        ));
    }
    let one_sender_bytes = l.burst_bytes as u64 + l.bytes_per_second as u64 * secs;
    if (l.outbound_queue_bytes as u64) < one_sender_bytes {
        return setting(format!(
            "outbound_queue_bytes ({}) is smaller than what one sender may send within \
             write_timeout_secs (burst_bytes + bytes_per_second x write_timeout_secs = {}): \
             one sender within its limits could get a reader closed",
            l.outbound_queue_bytes, one_sender_bytes
        ));
    }
    Ok(())
}

impl Config {
    /// What `--check-config` prints: what the daemon makes of the settings (where it
    /// listens, the URL, how many secrets), then every setting with its value in force.
    /// No secret is shown: a secret only as given, a Redis URL through [`redact_url`].
    pub fn summary(&self) -> String {
        let url = &self.url;
        let scheme = if url.is_secure() { "wss" } else { "ws" };
        let mut lines = vec![
            ("listen".to_owned(), self.listen.to_string()),
            (
                "websocket url".to_owned(),
                format!("{scheme}://{}:{}{}", url.host(), url.port(), url.path()),
            ),
            (
                "secrets in use".to_owned(),
                format!("{} configured", self.tokens.keyring().len()),
            ),
            ("dev".to_owned(), self.dev.to_string()),
        ];
        if let Some(tls) = &self.tls {
            let shown = match crate::tls::load(tls) {
                Ok(pair) => {
                    let days = (pair.not_after - crate::tls::unix_now()) / 86_400;
                    format!(
                        "certificate for {} expires {} (in {days} days)",
                        pair.names.join(", "),
                        pair.not_after_text
                    )
                }
                Err(e) => e,
            };
            lines.push(("tls".to_owned(), shown));
        }
        for (name, value) in self.settings.shown() {
            let name = match file_key(name) {
                (Some(table), key) => format!("{table}.{key}"),
                (None, key) => key.to_owned(),
            };
            lines.push((name, value.unwrap_or_else(|| "(not set)".to_owned())));
        }
        lines
            .iter()
            .map(|(name, value)| format!("{name:<25} {value}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (format!("{ENV_PREFIX}{k}"), (*v).to_owned()))
            .collect()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("notifyd-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn dev_defaults() {
        let c = Config::load(None, [], Settings::default(), true).unwrap();
        assert_eq!(c.listen, "127.0.0.1:2021".parse().unwrap());
        assert!(c.dev);
        assert_eq!(c.limits.max_message_bytes, 65536);
        check_limits(&Limits::default()).expect("the defaults agree with each other");
    }

    #[test]
    fn precedence_file_env_flags() {
        let dir = std::env::temp_dir().join(format!("notifyd-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "url = \"ws://h:2021\"\nsecret = \"f\"\nburst = 5\nmessages_per_second = 7\n",
        )
        .unwrap();
        let env = [
            ("TSUGI_NOTIFY_BURST".to_owned(), "6".to_owned()),
            ("TSUGI_NOTIFY_PROXYPORT".to_owned(), "3000".to_owned()),
            ("OTHER".to_owned(), "x".to_owned()),
        ];
        let c = Config::load(
            Some(&file),
            env,
            Settings {
                proxyport: Some(4000),
                ..Settings::default()
            },
            false,
        )
        .unwrap();
        assert_eq!(c.limits.burst, 6);
        assert_eq!(c.limits.messages_per_second, 7);
        assert_eq!(c.listen.port(), 4000);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = Config::load(
            None,
            [("TSUGI_NOTIFY_BRUST".to_owned(), "1".to_owned())],
            Settings::default(),
            true,
        )
        .unwrap_err();
        assert!(e.to_string().contains("TSUGI_NOTIFY_BRUST"), "{e}");
        // (An unknown flag is clap's, and main's error suggests the near miss.)
        let e =
            Config::from_toml_str("url = \"ws://h:1\"\nsecret = \"s\"\nbrust = 1\n").unwrap_err();
        assert!(e.to_string().contains("did you mean `burst`"), "{e}");
        // Whatever starts like a key is still not repeated.
        let e = Config::from_toml_str("url = \"ws://h:1\"\nurlc2VjcmV0 = 1\nsecret = \"s\"\n")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("c2VjcmV0") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let mut c = Config::for_loopback("very-secret-value").unwrap();
        c.redis = Some(Redis {
            url: "rediss://notify:redis-pass-word@10.0.0.5:6380/2".into(),
            password: Some("file-pass-word".into()),
            ca_pem: None,
        });
        let shown = format!("{c:?}");
        for s in ["very-secret-value", "redis-pass-word", "file-pass-word"] {
            assert!(!shown.contains(s), "{shown}");
        }
        assert!(shown.contains("rediss://MASKED@10.0.0.5:6380/2"), "{shown}");
    }

    #[test]
    fn errors_name_key_and_line_never_the_value() {
        let cases = [
            ("url = \"ws://h:1\"\nsecret = hunter2-XYZ\n", "line 2"),
            ("url = \"ws://h:1\"\nsecrte = \"hunter2-XYZ\"\n", "did you mean `secret`"),
            ("url = \"ws://h:1\"\nsecrets = \"hunter2-XYZ\"\n", "`secrets`"),
            ("url = \"ws://h:1\"\nsecret = [\"hunter2-XYZ\"]\n", "`secret`"),
            ("url = \"ws://h:1\"\nsecret = \"hunter2-XYZ\n", "line 2"),
            (
                "url = \"ws://h:1\"\nsecret = \"s\"\n[redis]\nurl = \"redis://:hunter2-XYZ@h\"\npassword = \"hunter2-XYZ\"\n",
                "did you mean `password_file`",
            ),
            (
                "url = \"ws://h:1\"\nsecret = \"s\"\nbind = \"hunter2-XYZ\"\n",
                "bind",
            ),
            (
                "url = \"ws://h:1\"\nsecret = \"s\"\nlog_level = \"hunter2-XYZ[\"\n",
                "log_level",
            ),
            (
                "url = \"ws://h:1\"\nsecret = \"s\"\n[redis]\nurl = \"http://u:hunter2-XYZ@h\"\n",
                "[redis] url",
            ),
        ];
        for (text, needle) in cases {
            let e = Config::from_toml_str(text).unwrap_err().to_string();
            assert!(!e.contains("hunter2-XYZ"), "{text:?} -> {e}");
            assert!(e.contains(needle), "{text:?} -> {e}");
        }
        let e = Config::from_toml_str("url = \"ws://h:1\"\nsecret = hunter2-XYZ\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`secret`"), "{e}");
        // A secret pasted where a key goes: base64 ending in `=`, or a key of its own.
        for text in [
            "url = \"ws://h:1\"\nc2VjcmV0LXZhbHVlLWhlcmU==\n",
            "url = \"ws://h:1\"\nc2VjcmV0LXZhbHVlLWhlcmU = 5\n",
            "url = \"ws://h:1\"\n[redis]\nc2VjcmV0LXZhbHVlLWhlcmU = \"x\"\n",
        ] {
            let e = Config::from_toml_str(text).unwrap_err().to_string();
            assert!(!e.contains("c2VjcmV0"), "{text:?} -> {e}");
            assert!(e.contains("line"), "{text:?} -> {e}");
        }
        let e = Config::from_toml_str("url = \"ws://h:1\"\nsecret_Zq7xR2kP9 = 1\n")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("Zq7x"), "{e}");
        let e = Config::from_toml_str("url = \"ws://h:1\"\nsecrte = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean `secret`"), "{e}");
    }

    /// Every `key = value` line of the example file, commented out or not, with its
    /// table (`# [redis]` opens one too).
    fn example_keys(text: &str) -> Vec<(Option<String>, String)> {
        let uncommented: String = text
            .lines()
            .map(|l| format!("{}\n", l.trim_start_matches('#')))
            .collect();
        assignments(&uncommented)
            .filter(|(_, _, k)| {
                !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            })
            .map(|(_, table, key)| (table, key.to_owned()))
            .collect()
    }

    /// What the example file gets wrong: a key the daemon does not know (set or
    /// commented out), a setting it does not document, a default it misstates.
    fn example_problems(text: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let documented = example_keys(text);
        for (table, key) in &documented {
            if !file_keys(table.as_deref()).any(|(k, _)| k == key) {
                problems.push(format!("`{key}` in {table:?} is not a setting"));
            }
        }
        let given: std::collections::BTreeMap<_, _> = match parse_toml(text, "example") {
            Ok(file) => file.shown().into_iter().collect(),
            Err(e) => return vec![e.to_string()],
        };
        for (name, default) in Settings::defaults().shown() {
            let (table, key) = file_key(name);
            if !documented
                .iter()
                .any(|(t, k)| t.as_deref() == table && k == key)
            {
                problems.push(format!("`{name}` is not documented"));
            }
            if default.is_some() && given[name] != default {
                problems.push(format!("`{name}` is not set to its default"));
            }
        }
        problems
    }

    #[test]
    fn the_example_config_documents_every_key_with_its_real_default() {
        let text = include_str!("../../../packaging/tsugi-notifyd.toml");
        assert_eq!(example_problems(text), Vec::<String>::new());
        let c = Config::from_toml_str(&format!("secret = \"s\"\n{text}")).unwrap();
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.tokens.ttl(), DEFAULT_TTL_SECS);
        assert!(c.tokens.accepts_legacy());
        // The check sees each way of going wrong.
        for (from, to) in [
            ("burst = 40", "burst = 41"),
            ("burst = 40", "# burst = 40"),
            ("bind = \"0.0.0.0\"\n", ""),
            ("# ca_file = ", "# ca_path = "),
            ("# secret = ", "# secert = "),
        ] {
            assert!(text.contains(from), "{from}");
            let wrong = text.replacen(from, to, 1);
            assert!(!example_problems(&wrong).is_empty(), "{from} -> {to}");
        }
    }

    #[test]
    fn every_setting_is_one_of_each_layer() {
        // The file (tables included), the environment and the flags take every key.
        for (name, kind) in KEYS {
            let (table, key) = file_key(name);
            let value = match kind {
                Kind::Str => "\"x\"",
                Kind::Int => "1",
                Kind::Bool => "true",
                Kind::List => "[\"x\"]",
            };
            let text = match table {
                Some(t) => format!("[{t}]\n{key} = {value}\n"),
                None => format!("{key} = {value}\n"),
            };
            let layer = parse_toml(&text, "t").unwrap_or_else(|e| panic!("{name}: {e}"));
            let shown = layer.shown();
            assert!(
                shown.iter().any(|(k, v)| k == name && v.is_some()),
                "{name}"
            );
            let text = match kind {
                Kind::Str => "x",
                Kind::Int => "1",
                Kind::Bool => "on",
                Kind::List => "x,y",
            };
            let upper = name.to_ascii_uppercase();
            let layer = env_settings(env(&[(&upper, text)])).unwrap();
            assert!(layer.shown().iter().any(|(k, v)| k == name && v.is_some()));
        }
    }

    #[test]
    fn env_values_by_kind() {
        let base = env(&[("URL", "ws://h:1"), ("SECRETS", "a, b,,c")]);
        for (var, yes) in [
            ("1", true),
            ("yes", true),
            ("on", true),
            ("off", false),
            ("0", false),
            ("no", false),
        ] {
            let mut vars = base.clone();
            vars.extend(env(&[("ACCEPT_LEGACY_TOKENS", var), ("BURST", " 9 ")]));
            vars.extend(env(&[(
                "ALLOWED_ORIGINS",
                "https://A.example/,https://b.example",
            )]));
            let c = Config::load(None, vars, Settings::default(), false).unwrap();
            assert_eq!(c.tokens.accepts_legacy(), yes, "{var}");
            assert_eq!(c.tokens.keyring().len(), 3);
            assert_eq!(c.limits.burst, 9);
            assert_eq!(
                c.allowed_origins,
                ["https://a.example", "https://b.example"]
            );
        }
        for (var, value) in [("BURST", "many"), ("ACCEPT_LEGACY_TOKENS", "maybe-hunter2")] {
            let mut vars = base.clone();
            vars.extend(env(&[(var, value)]));
            let e = Config::load(None, vars, Settings::default(), false)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("TSUGI_NOTIFY_{var}")) && !e.contains(value),
                "{e}"
            );
        }
    }

    #[test]
    fn a_secret_from_a_higher_layer_replaces_every_form_below_and_redis_merges() {
        let dir = temp_dir("layers");
        let file = dir.join("c.toml");
        let password = dir.join("pw");
        std::fs::write(&password, "pw\n").unwrap();
        std::fs::write(
            &file,
            "url = \"ws://h:2021\"\nsecrets = [\"f1\", \"f2\"]\n[redis]\nurl = \"redis://h/\"\n",
        )
        .unwrap();
        let vars = env(&[
            ("SECRET", "e"),
            ("REDIS_PASSWORD_FILE", password.to_str().unwrap()),
        ]);
        let c = Config::load(Some(&file), vars.clone(), Settings::default(), false).unwrap();
        assert_eq!(
            c.tokens.keyring().len(),
            1,
            "the environment's secret replaced the file's"
        );
        let redis = c.redis.unwrap();
        assert_eq!(
            (redis.url.as_str(), redis.password.as_deref()),
            ("redis://h/", Some("pw"))
        );
        let flags = Settings {
            secret_file: Some(password.clone()),
            ..Settings::default()
        };
        let c = Config::load(Some(&file), vars, flags, true).unwrap();
        assert_eq!(c.tokens.keyring().len(), 1);
        assert_eq!(c.listen.port(), 2021, "the file's url over --dev's");
        // Within one layer, two forms are still refused.
        let e = Config::load(
            None,
            env(&[("URL", "ws://h:1"), ("SECRET", "a"), ("SECRETS", "b")]),
            Settings::default(),
            true,
        )
        .unwrap_err();
        assert!(e.to_string().contains("only one"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn site_semantics_proxyport_ttl_and_origin() {
        let base = "url = \"wss://h.example/socket\"\nsecret = \"s\"\n";
        let c = Config::from_toml_str(base).unwrap();
        assert_eq!(c.listen.port(), 443);
        assert_eq!(c.http_origin, "https://h.example");
        assert_eq!(c.tokens.ttl(), DEFAULT_TTL_SECS);
        let c = Config::from_toml_str(&format!("{base}proxyport = 2021\ntoken_ttl_secs = 0\n"))
            .unwrap();
        assert_eq!((c.listen.port(), c.tokens.ttl()), (2021, 0));
        assert_eq!(c.tokens.ttl(), 0);
        // 0: any free port (Site would take it for "not set").
        let c = Config::from_toml_str(&format!("{base}proxyport = 0\n")).unwrap();
        assert_eq!(c.listen.port(), 0);
        let c = Config::from_toml_str("url = \"ws://h:1\"\nsecret = \"s\"\n").unwrap();
        assert_eq!(c.http_origin, "http://h");
    }

    #[test]
    fn clock_skew_secs_sets_the_token_leeway_within_an_hour() {
        let base = "url = \"ws://h:1\"\nsecret = \"s\"\n";
        let c = Config::from_toml_str(base).unwrap();
        assert_eq!(c.tokens.leeway(), 60);
        let c = Config::from_toml_str(&format!("{base}clock_skew_secs = 300\n")).unwrap();
        assert_eq!(c.tokens.leeway(), 300);
        let e = Config::from_toml_str(&format!("{base}clock_skew_secs = 3601\n")).unwrap_err();
        assert!(
            e.to_string()
                .contains("clock_skew_secs must be between 0 and 3600"),
            "{e}"
        );
    }

    #[test]
    fn a_password_in_the_url_is_never_shown() {
        let c = Config::from_toml_str("url = \"wss://u:hunter2@h.example/\"\nsecret = \"s\"\n")
            .unwrap();
        let shown = format!("{}\n{c:?}", c.summary());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("wss://MASKED@h.example/"), "{shown}");
    }

    #[test]
    fn the_summary_shows_every_setting_in_force_and_no_secret() {
        let dir = temp_dir("summary");
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "url = \"ws://h:2021\"\nsecrets = [\"hunter2-A\", \"hunter2-B\"]\n",
        )
        .unwrap();
        let vars = env(&[
            ("REDIS_URL", "redis://u:hunter2-C@10.0.0.5/"),
            ("BURST", "7"),
        ]);
        let c = Config::load(Some(&file), vars, Settings::default(), false).unwrap();
        let s = c.summary();
        assert!(!s.contains("hunter2"), "{s}");
        for line in [
            "listen                    0.0.0.0:2021",
            "secrets in use            2 configured",
            "burst                     7",
            "messages_per_second       20",
            "redis.url                 redis://MASKED@10.0.0.5/",
            "secret_file               (not set)",
        ] {
            assert!(s.lines().any(|l| l == line), "{line:?} in\n{s}");
        }
        for (name, _) in KEYS {
            let (table, key) = file_key(name);
            let shown = table.map_or(key.to_owned(), |t| format!("{t}.{key}"));
            assert!(
                s.lines().any(|l| l.split(' ').next() == Some(&shown)),
                "{name}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_non_empty_secret_file_line_is_a_secret() {
        let dir = std::env::temp_dir().join(format!("notifyd-sf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("s");
        std::fs::write(
            &file,
            "#starts-with-hash\r\n\n   \nsecond # not a comment\n",
        )
        .unwrap();
        assert_eq!(
            read_secret_file(&file).unwrap(),
            vec!["#starts-with-hash", "second # not a comment"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn limits_that_let_one_sender_close_a_reader_are_refused() {
        let base = "url = \"ws://h:1\"\nsecret = \"s\"\n";
        for (extra, needle) in [
            ("outbound_queue_bytes = 262144\n", "outbound_queue_bytes"),
            ("outbound_queue = 100\n", "outbound_queue"),
            ("burst_bytes = 1000\n", "burst_bytes"),
            ("max_message_bytes = 0\n", "max_message_bytes"),
            ("max_message_bytes = 20000000\n", "max_message_bytes"),
            ("write_timeout_secs = 0\n", "write_timeout_secs"),
            ("proxyport = 70000\n", "proxyport"),
            (
                "max_connections_per_token = 0\n",
                "max_connections_per_token",
            ),
        ] {
            let e = Config::from_toml_str(&format!("{base}{extra}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{extra}: {e}");
        }
        let small = Config::from_toml_str(&format!("{base}max_message_bytes = 16\n")).unwrap();
        assert_eq!(small.limits.max_message_bytes, 16);
    }

    #[test]
    fn redis_urls_and_files() {
        let base = "url = \"ws://h:1\"\nsecret = \"s\"\n";
        let c = Config::load(
            None,
            [(
                "TSUGI_NOTIFY_REDIS_URL".to_owned(),
                "rediss://h:6380/".to_owned(),
            )],
            Settings::default(),
            true,
        )
        .unwrap();
        assert_eq!(c.redis.unwrap().url, "rediss://h:6380/");
        let e = Config::from_toml_str(&format!(
            "{base}[redis]\nurl = \"redis://h/\"\nca_file = \"/nonexistent\"\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("rediss://"), "{e}");
        assert_eq!(
            redact_url("redis://user:pw@h:1/0"),
            "redis://MASKED@h:1/0".to_owned()
        );
        assert_eq!(redact_url("redis://h:1/0"), "redis://h:1/0".to_owned());
    }
}
