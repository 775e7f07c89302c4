//! Settings: a TOML file, then `TSUGI_NOTIFY_<KEY>` environment variables, then flags,
//! each overriding the one before. One name per setting everywhere; an unknown name is
//! an error that names it.
//!
//! No error ever quotes a value: a secret typed without quotes, or under a misspelled
//! key, must not reach stderr (journald). Errors name the key, the line and what is
//! wrong. Types are therefore checked here, key by key, before serde sees the table.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::{Table, Value};
use tsugi_notify_core::{Keyring, WebsocketUrl};

/// Where development mode listens, and its well-known secret.
pub const DEV_URL: &str = "ws://127.0.0.1:2021";
/// The secret of development mode (Tsugi's own example secret).
pub const DEV_SECRET: &str = "opensource";
/// Prefix of the environment variables.
pub const ENV_PREFIX: &str = "TSUGI_NOTIFY_";
/// Largest `max_message_bytes` accepted.
pub const MAX_MESSAGE_BYTES_LIMIT: usize = 16 * 1024 * 1024;

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

/// How a setting's value is written.
#[derive(Clone, Copy, PartialEq, Eq)]
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
}

/// Every top-level key, with its kind.
const KEYS: &[(&str, Kind)] = &[
    ("url", Kind::Str),
    ("secret", Kind::Str),
    ("secrets", Kind::List),
    ("secret_file", Kind::Str),
    ("proxyport", Kind::Int),
    ("bind", Kind::Str),
    ("accept_legacy_tokens", Kind::Bool),
    ("allowed_origins", Kind::List),
    ("max_message_bytes", Kind::Int),
    ("messages_per_second", Kind::Int),
    ("burst", Kind::Int),
    ("bytes_per_second", Kind::Int),
    ("burst_bytes", Kind::Int),
    ("max_connections", Kind::Int),
    ("max_connections_per_space", Kind::Int),
    ("max_connections_per_token", Kind::Int),
    ("max_connections_per_user", Kind::Int),
    ("max_pending_handshakes", Kind::Int),
    ("handshake_timeout_secs", Kind::Int),
    ("idle_timeout_secs", Kind::Int),
    ("ping_interval_secs", Kind::Int),
    ("write_timeout_secs", Kind::Int),
    ("outbound_queue", Kind::Int),
    ("outbound_queue_bytes", Kind::Int),
    ("metrics_bind", Kind::Str),
    ("log_format", Kind::Str),
    ("log_level", Kind::Str),
    ("token_ttl_secs", Kind::Int),
];

/// The keys of `[redis]`; as environment variables and flags they are `redis_<key>`.
const REDIS_KEYS: &[(&str, Kind)] = &[
    ("url", Kind::Str),
    ("password_file", Kind::Str),
    ("ca_file", Kind::Str),
];

/// The settings as written, before validation (types already checked by `check_types`,
/// so deserializing cannot fail on a well-typed table; a key in `KEYS` missing here
/// fails loudly).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    url: Option<String>,
    secret: Option<String>,
    secrets: Option<Vec<String>>,
    secret_file: Option<PathBuf>,
    proxyport: Option<i64>,
    bind: Option<String>,
    accept_legacy_tokens: Option<bool>,
    allowed_origins: Option<Vec<String>>,
    max_message_bytes: Option<i64>,
    messages_per_second: Option<i64>,
    burst: Option<i64>,
    bytes_per_second: Option<i64>,
    burst_bytes: Option<i64>,
    max_connections: Option<i64>,
    max_connections_per_space: Option<i64>,
    max_connections_per_token: Option<i64>,
    max_connections_per_user: Option<i64>,
    max_pending_handshakes: Option<i64>,
    handshake_timeout_secs: Option<i64>,
    idle_timeout_secs: Option<i64>,
    ping_interval_secs: Option<i64>,
    write_timeout_secs: Option<i64>,
    outbound_queue: Option<i64>,
    outbound_queue_bytes: Option<i64>,
    metrics_bind: Option<String>,
    log_format: Option<String>,
    log_level: Option<String>,
    token_ttl_secs: Option<i64>,
    redis: Option<RedisRaw>,
}

/// `[redis]`: the backplane between nodes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedisRaw {
    url: Option<String>,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
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
    /// Sustained messages per second per connection.
    pub messages_per_second: u32,
    /// Messages a connection may send at once above the sustained rate.
    pub burst: u32,
    /// Sustained payload bytes per second per connection.
    pub bytes_per_second: usize,
    /// Payload bytes a connection may send at once above the sustained rate.
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 64 * 1024,
            messages_per_second: 20,
            burst: 40,
            bytes_per_second: 64 * 1024,
            burst_bytes: 256 * 1024,
            max_connections: 19_000,
            max_connections_per_space: 5_000,
            max_connections_per_token: 8,
            max_connections_per_user: 32,
            max_pending_handshakes: 1024,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            ping_interval: Duration::from_secs(25),
            write_timeout: Duration::from_secs(10),
            outbound_queue: 4096,
            outbound_queue_bytes: 1024 * 1024,
        }
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
    /// The secrets (first mints, any verifies).
    pub keyring: Keyring,
    /// Whether legacy tokens open connections.
    pub accept_legacy: bool,
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
    /// Lifetime of tokens minted by `token mint`.
    pub token_ttl_secs: u64,
    /// Development mode (well-known secret).
    pub dev: bool,
    /// Redis for the backplane between nodes, when configured.
    pub redis: Option<Redis>,
}

impl Config {
    /// A configuration for tests and embedding: loopback, any free port, the given
    /// secret, metrics off, default limits.
    pub fn for_loopback(secret: &str) -> Result<Config, Error> {
        let mut table = Table::new();
        table.insert("url".into(), Value::String(DEV_URL.into()));
        table.insert("secret".into(), Value::String(secret.into()));
        table.insert("bind".into(), Value::String("127.0.0.1".into()));
        table.insert("proxyport".into(), Value::Integer(0));
        table.insert("metrics_bind".into(), Value::String("off".into()));
        Config::from_table(table, false)
    }

    /// Loads the layers in order: `--dev` defaults, the file, the environment, flags.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: Table,
        dev: bool,
    ) -> Result<Config, Error> {
        let mut table = Table::new();
        if dev {
            table.insert("url".into(), Value::String(DEV_URL.into()));
            table.insert("secret".into(), Value::String(DEV_SECRET.into()));
            table.insert("bind".into(), Value::String("127.0.0.1".into()));
        }
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
                path: path.to_owned(),
                source,
            })?;
            layer(&mut table, parse_toml(&text, &path.display().to_string())?);
        }
        layer(&mut table, env_table(env)?);
        check_types(&flags, "flags", None)?;
        layer(&mut table, flags);
        Config::from_table(table, dev)
    }

    /// A configuration from TOML text alone (no environment, no flags), as a file would
    /// give it (the config fuzz target feeds it).
    pub fn from_toml_str(text: &str) -> Result<Config, Error> {
        Config::from_table(parse_toml(text, "configuration")?, false)
    }

    fn from_table(table: Table, dev: bool) -> Result<Config, Error> {
        check_types(&table, "configuration", None)?;
        // Every type was checked above; this cannot fail, and if it did its message
        // (which may quote a value) is not shown.
        let raw = Raw::deserialize(Value::Table(table)).map_err(|_| Error::Invalid {
            origin: "configuration".into(),
            message: "a setting has the wrong type".into(),
        })?;
        validate(raw, dev)
    }
}

/// Parses a file's text, and type-checks it so that errors can give the line.
fn parse_toml(text: &str, origin: &str) -> Result<Table, Error> {
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
    check_types(&table, origin, Some(text))?;
    Ok(table)
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

/// The name of a setting, as `&'static str`, if `name` is one (`redis.url` style too).
fn known(name: &str) -> Option<&'static str> {
    let name = name.strip_prefix("redis.").unwrap_or(name);
    KEYS.iter()
        .chain(REDIS_KEYS)
        .map(|(k, _)| *k)
        .find(|k| *k == name)
}

/// What is said of an unknown name: never the name itself (it could be a secret written
/// where a key goes), but the setting it is a near miss of, if any (a typo).
fn unknown(name: &str, settings: &[(&'static str, Kind)]) -> String {
    match near_miss(name, settings.iter().map(|(k, _)| *k)) {
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

/// The line where `key` is set, in `section` (`None`: the top level).
fn line_of(text: &str, section: Option<&str>, key: &str) -> Option<usize> {
    let mut current: Option<String> = None;
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            current = Some(name.trim().to_owned());
            continue;
        }
        let Some((k, _)) = t.split_once('=') else {
            continue;
        };
        let k = k.trim();
        let here = current.as_deref() == section && k == key;
        let dotted = section.is_some_and(|s| current.is_none() && k == format!("{s}.{key}"));
        if here || dotted {
            return Some(i + 1);
        }
    }
    None
}

/// Checks every key of a layer against its kind, so that an error names where the bad
/// setting came from and never repeats its value.
fn check_types(table: &Table, origin: &str, text: Option<&str>) -> Result<(), Error> {
    let kinds: BTreeMap<&str, Kind> = KEYS.iter().copied().collect();
    let redis_kinds: BTreeMap<&str, Kind> = REDIS_KEYS.iter().copied().collect();
    let at = |section: Option<&str>, key: &str| {
        text.and_then(|t| line_of(t, section, key))
            .map(|l| format!("line {l}: "))
            .unwrap_or_default()
    };
    let invalid = |message: String| Error::Invalid {
        origin: origin.to_owned(),
        message,
    };
    for (key, value) in table {
        if key == "redis" {
            let Value::Table(redis) = value else {
                return Err(invalid(format!(
                    "{}`redis` must be a table ([redis])",
                    at(None, key)
                )));
            };
            for (k, v) in redis {
                let kind = redis_kinds.get(k.as_str()).ok_or_else(|| {
                    invalid(format!(
                        "{}[redis]: {}",
                        at(Some("redis"), k),
                        unknown(k, REDIS_KEYS)
                    ))
                })?;
                if !kind.matches(v) {
                    return Err(invalid(format!(
                        "{}[redis] `{k}` must be {}",
                        at(Some("redis"), k),
                        kind.expected()
                    )));
                }
            }
            continue;
        }
        let kind = kinds
            .get(key.as_str())
            .ok_or_else(|| invalid(format!("{}{}", at(None, key), unknown(key, KEYS))))?;
        if !kind.matches(value) {
            return Err(invalid(format!(
                "{}`{key}` must be {}",
                at(None, key),
                kind.expected()
            )));
        }
    }
    Ok(())
}

/// Overrides `base` with every key of `top`; a secret given in a higher layer in any
/// of its three forms replaces the others from lower layers; `[redis]` keys merge.
fn layer(base: &mut Table, top: Table) {
    const SECRET_KEYS: [&str; 3] = ["secret", "secrets", "secret_file"];
    if SECRET_KEYS.iter().any(|k| top.contains_key(*k)) {
        for k in SECRET_KEYS {
            base.remove(k);
        }
    }
    for (k, v) in top {
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(t)) if k == "redis" => b.extend(t),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// `TSUGI_NOTIFY_<KEY>` variables as a layer.
fn env_table(env: impl IntoIterator<Item = (String, String)>) -> Result<Table, Error> {
    let kinds: BTreeMap<&str, Kind> = KEYS.iter().copied().collect();
    let redis_kinds: BTreeMap<&str, Kind> = REDIS_KEYS.iter().copied().collect();
    let mut table = Table::new();
    for (name, value) in env {
        let Some(key) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        let kind = kinds
            .get(key.as_str())
            .or_else(|| key.strip_prefix("redis_").and_then(|k| redis_kinds.get(k)))
            .copied()
            .ok_or_else(|| Error::UnknownEnv(name.clone()))?;
        let bad = |what: &str| Error::Invalid {
            origin: format!("environment {name}"),
            message: format!("expected {what}"),
        };
        let parsed = match kind {
            Kind::Str => Value::String(value),
            Kind::Int => Value::Integer(value.trim().parse().map_err(|_| bad("an integer"))?),
            Kind::Bool => Value::Boolean(match value.trim() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => return Err(bad("true or false")),
            }),
            Kind::List => Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::String(s.to_owned()))
                    .collect(),
            ),
        };
        insert_key(&mut table, key, parsed);
    }
    check_types(&table, "environment", None)?;
    Ok(table)
}

/// Inserts a flat key; `redis_<key>` goes to `[redis] <key>`.
pub(crate) fn insert_key(table: &mut Table, key: String, value: Value) {
    match key.strip_prefix("redis_") {
        Some(sub) => {
            let redis = table
                .entry("redis")
                .or_insert_with(|| Value::Table(Table::new()));
            if let Value::Table(t) = redis {
                t.insert(sub.to_owned(), value);
            }
        }
        None => {
            table.insert(key, value);
        }
    }
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

/// A whole number in `min..=max`, or `default` when not given.
fn int<T: TryFrom<i64> + Copy>(
    name: &str,
    value: Option<i64>,
    default: T,
    min: i64,
    max: i64,
) -> Result<T, Error> {
    match value {
        None => Ok(default),
        Some(v) if v < min || v > max => Err(Error::Setting(format!(
            "{name} must be between {min} and {max}"
        ))),
        Some(v) => T::try_from(v)
            .map_err(|_| Error::Setting(format!("{name} must be between {min} and {max}"))),
    }
}

/// Reads a file's bytes for a setting.
fn read_file(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

fn validate(raw: Raw, dev: bool) -> Result<Config, Error> {
    let setting = |m: String| Error::Setting(m);
    let url_text = raw
        .url
        .ok_or_else(|| setting("url is required (the same value as $CFG->websocket_url)".into()))?;
    let url = WebsocketUrl::parse(&url_text).ok_or_else(|| {
        setting("url must be a ws:// or wss:// URL with a host, as $CFG->websocket_url".into())
    })?;
    let secrets = match (raw.secret, raw.secrets, raw.secret_file) {
        (Some(s), None, None) => vec![s],
        (None, Some(list), None) => list,
        (None, None, Some(path)) => read_secret_file(&path)?,
        (None, None, None) => {
            return Err(setting(
                "a secret is required: secret, secrets or secret_file ($CFG->websocket_secret)"
                    .into(),
            ))
        }
        _ => {
            return Err(setting(
                "give only one of secret, secrets and secret_file".into(),
            ))
        }
    };
    let keyring = Keyring::new(&secrets)
        .map_err(|_| setting("secrets must be non-empty (and at least one given)".into()))?;
    let bind = match raw.bind.as_deref() {
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Some(b) => b.parse().map_err(|_| {
            setting("bind must be an IP address such as 0.0.0.0, 127.0.0.1 or ::".into())
        })?,
    };
    let port = int("proxyport", raw.proxyport, url.port(), 0, 65_535)?;
    let d = Limits::default();
    const BIG: i64 = i32::MAX as i64;
    let secs = |name: &str, v: Option<i64>, default: Duration| {
        int(name, v, default.as_secs(), 1, 86_400).map(Duration::from_secs)
    };
    let limits = Limits {
        max_message_bytes: int(
            "max_message_bytes",
            raw.max_message_bytes,
            d.max_message_bytes,
            1,
            MAX_MESSAGE_BYTES_LIMIT as i64,
        )?,
        messages_per_second: int(
            "messages_per_second",
            raw.messages_per_second,
            d.messages_per_second,
            1,
            BIG,
        )?,
        burst: int("burst", raw.burst, d.burst, 1, BIG)?,
        bytes_per_second: int(
            "bytes_per_second",
            raw.bytes_per_second,
            d.bytes_per_second,
            1,
            BIG,
        )?,
        burst_bytes: int("burst_bytes", raw.burst_bytes, d.burst_bytes, 1, BIG)?,
        max_connections: int(
            "max_connections",
            raw.max_connections,
            d.max_connections,
            1,
            BIG,
        )?,
        max_connections_per_space: int(
            "max_connections_per_space",
            raw.max_connections_per_space,
            d.max_connections_per_space,
            1,
            BIG,
        )?,
        max_connections_per_token: int(
            "max_connections_per_token",
            raw.max_connections_per_token,
            d.max_connections_per_token,
            1,
            BIG,
        )?,
        max_connections_per_user: int(
            "max_connections_per_user",
            raw.max_connections_per_user,
            d.max_connections_per_user,
            1,
            BIG,
        )?,
        max_pending_handshakes: int(
            "max_pending_handshakes",
            raw.max_pending_handshakes,
            d.max_pending_handshakes,
            1,
            BIG,
        )?,
        handshake_timeout: secs(
            "handshake_timeout_secs",
            raw.handshake_timeout_secs,
            d.handshake_timeout,
        )?,
        idle_timeout: secs("idle_timeout_secs", raw.idle_timeout_secs, d.idle_timeout)?,
        ping_interval: secs(
            "ping_interval_secs",
            raw.ping_interval_secs,
            d.ping_interval,
        )?,
        write_timeout: secs(
            "write_timeout_secs",
            raw.write_timeout_secs,
            d.write_timeout,
        )?,
        outbound_queue: int(
            "outbound_queue",
            raw.outbound_queue,
            d.outbound_queue,
            1,
            BIG,
        )?,
        outbound_queue_bytes: int(
            "outbound_queue_bytes",
            raw.outbound_queue_bytes,
            d.outbound_queue_bytes,
            1,
            BIG,
        )?,
    };
    check_limits(&limits)?;
    let metrics_bind = match raw.metrics_bind.as_deref() {
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9102))),
        Some("" | "off") => None,
        Some(addr) => Some(addr.parse().map_err(|_| {
            setting("metrics_bind must be an address such as 127.0.0.1:9102, or \"off\"".into())
        })?),
    };
    let log_format = match raw.log_format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(_) => return Err(setting("log_format must be \"text\" or \"json\"".into())),
    };
    let log_level = raw.log_level.unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
        return Err(setting(
            "log_level must be a log filter such as info, debug or tsugi_notifyd=debug".into(),
        ));
    }
    let allowed_origins = raw
        .allowed_origins
        .unwrap_or_default()
        .into_iter()
        .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
        .collect();
    Ok(Config {
        url,
        listen: SocketAddr::new(bind, port),
        keyring,
        accept_legacy: raw.accept_legacy_tokens.unwrap_or(true),
        allowed_origins,
        limits,
        metrics_bind,
        log_format,
        log_level,
        token_ttl_secs: int("token_ttl_secs", raw.token_ttl_secs, 86_400, 0, i64::MAX)?,
        dev,
        redis: redis_settings(raw.redis)?,
    })
}

/// `[redis]`: the URL's scheme, and the files read now so that a bad path fails at
/// start (and in `--check-config`), not at the first reconnect.
fn redis_settings(raw: Option<RedisRaw>) -> Result<Option<Redis>, Error> {
    let Some(raw) = raw else { return Ok(None) };
    let Some(url) = raw.url.filter(|u| !u.is_empty()) else {
        if raw.password_file.is_some() || raw.ca_file.is_some() {
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
    let password = match raw.password_file {
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
    let ca_pem = match raw.ca_file {
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
    /// What `--check-config` prints: every setting in force, no secret.
    pub fn summary(&self) -> String {
        let l = &self.limits;
        let origins = if self.allowed_origins.is_empty() {
            "any".to_owned()
        } else {
            self.allowed_origins.join(", ")
        };
        let redis = match &self.redis {
            None => "off (one node)".to_owned(),
            Some(r) => format!(
                "{}{}{}",
                redact_url(&r.url),
                if r.password.is_some() {
                    ", password from file"
                } else {
                    ""
                },
                if r.ca_pem.is_some() {
                    ", own CA file"
                } else {
                    ""
                }
            ),
        };
        format!(
            "url                       {}://{}:{}{}\n\
             listen                    {}\n\
             secrets                   {} configured\n\
             accept_legacy_tokens      {}\n\
             allowed_origins           {}\n\
             max_message_bytes         {}\n\
             messages_per_second       {} (burst {})\n\
             bytes_per_second          {} (burst_bytes {})\n\
             max_connections           {} ({} per space, {} per token, {} per user)\n\
             max_pending_handshakes    {}\n\
             handshake_timeout_secs    {}\n\
             idle_timeout_secs         {} (ping every {} s)\n\
             write_timeout_secs        {}\n\
             outbound_queue            {} messages, {} bytes\n\
             metrics_bind              {}\n\
             log                       {:?} {}\n\
             redis                     {}\n\
             dev                       {}",
            if self.url.is_secure() { "wss" } else { "ws" },
            self.url.host(),
            self.url.port(),
            self.url.path(),
            self.listen,
            self.keyring.len(),
            self.accept_legacy,
            origins,
            l.max_message_bytes,
            l.messages_per_second,
            l.burst,
            l.bytes_per_second,
            l.burst_bytes,
            l.max_connections,
            l.max_connections_per_space,
            l.max_connections_per_token,
            l.max_connections_per_user,
            l.max_pending_handshakes,
            l.handshake_timeout.as_secs(),
            l.idle_timeout.as_secs(),
            l.ping_interval.as_secs(),
            l.write_timeout.as_secs(),
            l.outbound_queue,
            l.outbound_queue_bytes,
            self.metrics_bind
                .map_or("off".to_owned(), |a| a.to_string()),
            self.log_format,
            self.log_level,
            redis,
            self.dev,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(pairs: &[(&str, Value)]) -> Table {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn dev_defaults() {
        let c = Config::load(None, [], Table::new(), true).unwrap();
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
            flags(&[("proxyport", Value::Integer(4000))]),
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
            Table::new(),
            true,
        )
        .unwrap_err();
        assert!(e.to_string().contains("TSUGI_NOTIFY_BRUST"), "{e}");
        let e = Config::load(None, [], flags(&[("brust", Value::Integer(1))]), true).unwrap_err();
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

    #[test]
    fn the_example_config_documents_the_real_defaults() {
        let text = include_str!("../../../packaging/tsugi-notifyd.toml");
        let c = Config::from_toml_str(&format!("secret = \"s\"\n{text}")).unwrap();
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.token_ttl_secs, 86_400);
        assert!(c.accept_legacy);
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
            Table::new(),
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
