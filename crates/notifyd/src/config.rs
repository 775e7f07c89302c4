//! Settings: a TOML file, then `TSUGI_NOTIFY_<KEY>` environment variables, then flags,
//! each overriding the one before. One name per setting everywhere; an unknown name is
//! an error that names it.

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

/// A configuration error, with the setting and where it came from.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML, or a value has the wrong type, or a key is unknown.
    #[error("{origin}: {message}")]
    Invalid {
        /// File, environment variable or flag.
        origin: String,
        /// What is wrong (names the key).
        message: String,
    },
    /// An environment variable with the prefix that names no setting.
    #[error("environment variable {0} names no setting")]
    UnknownEnv(String),
    /// A value out of its range, or settings that contradict each other.
    #[error("{0}")]
    Setting(String),
}

/// How a setting's text is read from the environment.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    List,
}

/// Every top-level key, with how its environment value is read.
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
    ("max_connections", Kind::Int),
    ("max_connections_per_space", Kind::Int),
    ("handshake_timeout_secs", Kind::Int),
    ("idle_timeout_secs", Kind::Int),
    ("ping_interval_secs", Kind::Int),
    ("outbound_queue", Kind::Int),
    ("outbound_queue_bytes", Kind::Int),
    ("metrics_bind", Kind::Str),
    ("log_format", Kind::Str),
    ("log_level", Kind::Str),
    ("token_ttl_secs", Kind::Int),
    ("redis_url", Kind::Str),
];

/// The settings as written, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    url: Option<String>,
    secret: Option<String>,
    secrets: Option<Vec<String>>,
    secret_file: Option<PathBuf>,
    proxyport: Option<u16>,
    bind: Option<IpAddr>,
    accept_legacy_tokens: Option<bool>,
    allowed_origins: Option<Vec<String>>,
    max_message_bytes: Option<usize>,
    messages_per_second: Option<u32>,
    burst: Option<u32>,
    max_connections: Option<usize>,
    max_connections_per_space: Option<usize>,
    handshake_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    ping_interval_secs: Option<u64>,
    outbound_queue: Option<usize>,
    outbound_queue_bytes: Option<usize>,
    metrics_bind: Option<String>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
    token_ttl_secs: Option<u64>,
    redis: Option<RedisRaw>,
}

/// `[redis]`: the backplane between nodes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedisRaw {
    /// `redis://host:port/` (also `TSUGI_NOTIFY_REDIS_URL`, `--redis-url`).
    url: Option<String>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Bounds on what clients may do.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest message a client may send; larger closes with 1009.
    pub max_message_bytes: usize,
    /// Sustained messages per second per connection.
    pub messages_per_second: u32,
    /// Messages a connection may send at once above the sustained rate.
    pub burst: u32,
    /// Connections in total; more are refused with 503.
    pub max_connections: usize,
    /// Connections per space; more are refused with 503.
    pub max_connections_per_space: usize,
    /// Time for a client to send its whole HTTP request.
    pub handshake_timeout: Duration,
    /// A connection silent (not even a pong) this long is closed.
    pub idle_timeout: Duration,
    /// How often the server pings each connection.
    pub ping_interval: Duration,
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
            max_connections: 19_000,
            max_connections_per_space: 5_000,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            ping_interval: Duration::from_secs(25),
            outbound_queue: 4096,
            outbound_queue_bytes: 256 * 1024,
        }
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
    pub redis_url: Option<String>,
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
            let invalid = |e: toml::de::Error| Error::Invalid {
                origin: path.display().to_string(),
                // The full text quotes the offending line, so it names the key.
                message: e.to_string().trim_end().to_owned(),
            };
            let file_table: Table = text.parse().map_err(invalid)?;
            toml::from_str::<Raw>(&text).map_err(invalid)?;
            layer(&mut table, file_table);
        }
        layer(&mut table, env_table(env)?);
        check_types(&flags, "flags")?;
        layer(&mut table, flags);
        Config::from_table(table, dev)
    }

    /// A configuration from TOML text alone (no environment, no flags): what a file
    /// holds. Used by `--check-config`'s checks and the config fuzz target.
    pub fn from_toml_str(text: &str) -> Result<Config, Error> {
        let invalid = |e: toml::de::Error| Error::Invalid {
            origin: "configuration".into(),
            message: e.to_string().trim_end().to_owned(),
        };
        let table: Table = text.parse().map_err(invalid)?;
        toml::from_str::<Raw>(text).map_err(invalid)?;
        Config::from_table(table, false)
    }

    fn from_table(table: Table, dev: bool) -> Result<Config, Error> {
        let raw = Raw::deserialize(Value::Table(table)).map_err(|e| Error::Invalid {
            origin: "configuration".into(),
            message: e.message().to_owned(),
        })?;
        validate(raw, dev)
    }
}

/// Overrides `base` with every key of `top`; a secret given in a higher layer in any
/// of its three forms replaces the others from lower layers.
fn layer(base: &mut Table, top: Table) {
    const SECRET_KEYS: [&str; 3] = ["secret", "secrets", "secret_file"];
    if SECRET_KEYS.iter().any(|k| top.contains_key(*k)) {
        for k in SECRET_KEYS {
            base.remove(k);
        }
    }
    base.extend(top);
}

/// Type-checks one layer alone, so that an error names where the bad value came from.
fn check_types(table: &Table, origin: &str) -> Result<(), Error> {
    Raw::deserialize(Value::Table(table.clone()))
        .map(|_| ())
        .map_err(|e| Error::Invalid {
            origin: origin.to_owned(),
            message: e.message().to_owned(),
        })
}

/// `TSUGI_NOTIFY_<KEY>` variables as a layer.
fn env_table(env: impl IntoIterator<Item = (String, String)>) -> Result<Table, Error> {
    let kinds: BTreeMap<&str, Kind> = KEYS.iter().copied().collect();
    let mut table = Table::new();
    for (name, value) in env {
        let Some(key) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        let kind = *kinds
            .get(key.as_str())
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
    check_types(&table, "environment")?;
    Ok(table)
}

/// Inserts a flat key; `redis_url` goes to `[redis] url`.
pub(crate) fn insert_key(table: &mut Table, key: String, value: Value) {
    if key == "redis_url" {
        let mut redis = Table::new();
        redis.insert("url".into(), value);
        table.insert("redis".into(), Value::Table(redis));
    } else {
        table.insert(key, value);
    }
}

fn read_secret_file(path: &Path) -> Result<Vec<String>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    // One secret per line; blank lines and `#` comments are skipped.
    Ok(text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(str::to_owned)
        .collect())
}

/// A count or duration that must be at least 1; `default` when not given.
fn at_least_one<T: Copy + Default + PartialEq>(
    name: &str,
    value: Option<T>,
    default: T,
) -> Result<T, Error> {
    match value {
        Some(v) if v == T::default() => Err(Error::Setting(format!("{name} must be at least 1"))),
        Some(v) => Ok(v),
        None => Ok(default),
    }
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
    let bind = raw.bind.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let port = raw.proxyport.unwrap_or_else(|| url.port());
    let d = Limits::default();
    let secs = |name: &str, v: Option<u64>, default: Duration| {
        at_least_one(name, v, default.as_secs()).map(Duration::from_secs)
    };
    let limits = Limits {
        max_message_bytes: at_least_one(
            "max_message_bytes",
            raw.max_message_bytes,
            d.max_message_bytes,
        )?,
        messages_per_second: at_least_one(
            "messages_per_second",
            raw.messages_per_second,
            d.messages_per_second,
        )?,
        burst: at_least_one("burst", raw.burst, d.burst)?,
        max_connections: at_least_one("max_connections", raw.max_connections, d.max_connections)?,
        max_connections_per_space: at_least_one(
            "max_connections_per_space",
            raw.max_connections_per_space,
            d.max_connections_per_space,
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
        outbound_queue: at_least_one("outbound_queue", raw.outbound_queue, d.outbound_queue)?,
        outbound_queue_bytes: at_least_one(
            "outbound_queue_bytes",
            raw.outbound_queue_bytes,
            d.outbound_queue_bytes,
        )?,
    };
    if limits.max_message_bytes > 16 * 1024 * 1024 {
        return Err(setting("max_message_bytes may be at most 16 MiB".into()));
    }
    if limits.ping_interval >= limits.idle_timeout {
        return Err(setting(
            "ping_interval_secs must be shorter than idle_timeout_secs".into(),
        ));
    }
    let metrics_bind = match raw.metrics_bind.as_deref() {
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9102))),
        Some("" | "off") => None,
        Some(addr) => Some(addr.parse().map_err(|_| {
            setting(format!(
                "metrics_bind must be an address such as 127.0.0.1:9102, or \"off\" (got {addr:?})"
            ))
        })?),
    };
    let log_level = raw.log_level.unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
        return Err(setting(format!(
            "log_level {log_level:?} is not a log filter"
        )));
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
        log_format: raw.log_format.unwrap_or_default(),
        log_level,
        token_ttl_secs: raw.token_ttl_secs.unwrap_or(86_400),
        dev,
        redis_url: raw.redis.and_then(|r| r.url).filter(|u| !u.is_empty()),
    })
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
        format!(
            "url                       {}://{}:{}{}\n\
             listen                    {}\n\
             secrets                   {} configured\n\
             accept_legacy_tokens      {}\n\
             allowed_origins           {}\n\
             max_message_bytes         {}\n\
             messages_per_second       {} (burst {})\n\
             max_connections           {} ({} per space)\n\
             handshake_timeout_secs    {}\n\
             idle_timeout_secs         {} (ping every {} s)\n\
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
            l.max_connections,
            l.max_connections_per_space,
            l.handshake_timeout.as_secs(),
            l.idle_timeout.as_secs(),
            l.ping_interval.as_secs(),
            l.outbound_queue,
            l.outbound_queue_bytes,
            self.metrics_bind
                .map_or("off".to_owned(), |a| a.to_string()),
            self.log_format,
            self.log_level,
            if self.redis_url.is_some() {
                "configured"
            } else {
                "off (one node)"
            },
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
        assert!(e.to_string().contains("brust"), "{e}");
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let c = Config::for_loopback("very-secret-value").unwrap();
        assert!(!format!("{c:?}").contains("very-secret-value"));
    }
}
