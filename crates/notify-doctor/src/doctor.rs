//! The checks, in the order an admin would fix things: the extension, the config, the
//! daemon, the clocks, then a real socket, a relayed message and a `publish()`.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tsugi_notify_core::{
    CfgString, Keyring, PublishEndpoint, Site, WebsocketUrl, LEEWAY_SECS, PUBLISH_CALL_TTL_SECS,
};

use crate::net::{self, Refused};
use crate::php::{Php, Probe, ProbeError};
use crate::report::Report;

/// What the doctor was asked to check.
#[derive(Debug)]
pub struct Options {
    pub config: PathBuf,
    pub php: Php,
    /// `NAME=DIR` conf.d directories of the web server's PHP; empty: the FPM, Apache
    /// and CGI ones beside the CLI's.
    pub sapi_dirs: Vec<(String, PathBuf)>,
    pub timeout: Duration,
}

/// The extension's name in `extension=` lines and `phpenmod`.
const EXT: &str = "tsugi_websocket";

fn random_hex() -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

fn text(v: &Option<serde_json::Value>) -> Option<String> {
    match v {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

fn int(v: &Option<serde_json::Value>) -> Option<i64> {
    match v {
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `scheme://host[:port]` of `wwwroot`: the Origin of the site's pages.
fn origin_of(wwwroot: &str) -> Option<String> {
    let (scheme, rest) = wwwroot.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    (!authority.is_empty()).then(|| {
        format!(
            "{}://{}",
            scheme.to_ascii_lowercase(),
            authority.to_ascii_lowercase()
        )
    })
}

pub fn run(opts: &Options) -> Report {
    let mut r = Report::default();
    let room = format!("tsugi-notify-doctor-{}", random_hex());
    let Some(probe) = extension(&mut r, opts, &room) else {
        return r;
    };
    web_sapis(&mut r, opts, &probe);
    let Some(site) = config(&mut r, opts, &probe) else {
        return r;
    };
    daemon(&mut r, opts, &probe, &site, &room);
    r
}

/// Runs the probe, and says whether the extension is there for the CLI.
fn extension(r: &mut Report, opts: &Options, room: &str) -> Option<Probe> {
    let first = match opts.php.probe(&opts.config, &["info", room], None) {
        Ok(p) => p,
        Err(e) => {
            probe_failed(r, opts, e);
            return None;
        }
    };
    if first.config_missing {
        r.fail(
            "config",
            format!("{} is not a file", opts.config.display()),
            "give the path of the site's config.php (the one that sets $CFG->websocket_url)",
        );
        return None;
    }
    let mut probe = first;
    if opts.php.extension.is_some() {
        if probe.extension_loaded {
            r.ok(
                "extension.cli",
                format!("{EXT} {} loaded (--extension)", version(&probe)),
            );
        } else {
            r.fail(
                "extension.cli",
                format!(
                    "--extension {} cannot be loaded by this PHP",
                    opts.php.extension.as_deref().unwrap_or("")
                ),
                "give the path of a tsugi_websocket.so built for this PHP version",
            );
        }
    } else if probe.extension_loaded {
        r.note(
            "extension.cli",
            format!("{EXT} {} is loaded for the PHP CLI too", version(&probe)),
            Some(format!(
                "Tsugi's own PHPUnit suite and scripts that require tsugi-php's WebSocket.php stop with \
                 'Cannot declare class' under it: `phpdismod -s cli {EXT}` keeps it for the web server only"
            )),
        );
    } else if probe.fatal.is_none() {
        // Off for the CLI, as recommended: check with it loaded, as the web server runs.
        match opts.php.probe(&opts.config, &["info", room], Some(EXT)) {
            Ok(mut p) if p.extension_loaded => {
                p.load = Some(EXT);
                r.ok(
                    "extension.cli",
                    format!("{EXT} {} is installed (off for the PHP CLI; checked with -d extension={EXT})", version(&p)),
                );
                probe = p;
            }
            Ok(_) | Err(ProbeError::NoReport(_)) => r.fail(
                "extension.cli",
                format!(
                    "{EXT} is not installed for PHP {}: `php -d extension={EXT}` cannot load it",
                    probe.php_version.as_deref().unwrap_or("?")
                ),
                "install the package for this PHP (tsugi-notify-phpX.Y) or `make install-ext`, then `phpenmod tsugi_websocket` \
                 and reload the web server",
            ),
            Err(e) => {
                probe_failed(r, opts, e);
                return None;
            }
        }
    }
    if let Some(fatal) = &probe.fatal {
        if fatal.contains("Cannot declare class") && fatal.contains("WebSocket") {
            r.fail(
                "config",
                format!("loading {} stopped: {fatal}", opts.config.display()),
                format!(
                    "the extension declares Tsugi\\Core\\WebSocket itself: remove the require of tsugi-php's WebSocket.php \
                     (Composer's autoloader is fine), or keep the extension off for this PHP (`phpdismod -s cli {EXT}`)"
                ),
            );
        } else {
            r.fail(
                "config",
                format!("loading {} stopped: {fatal}", opts.config.display()),
                "run `php CONFIG` to see the error, and fix the config",
            );
        }
        return None;
    }
    match &probe.class {
        None => {
            r.fail(
                "extension.class",
                "Tsugi\\Core\\WebSocket is not defined after loading the config",
                format!("load the extension (`phpenmod {EXT}`) or install tsugi-php (composer install)"),
            );
            return None;
        }
        Some(c) if c.internal => r.ok("extension.class", "Tsugi\\Core\\WebSocket is the extension's native class"),
        Some(c) => r.warn(
            "extension.class",
            format!(
                "Tsugi\\Core\\WebSocket is tsugi-php's PHP class ({}): pages mint legacy tokens, and publish() is missing",
                c.file.as_deref().unwrap_or("?")
            ),
            format!("load the extension: `phpenmod {EXT}` and reload the web server"),
        ),
    }
    Some(probe)
}

fn version(p: &Probe) -> String {
    p.extension_version.clone().unwrap_or_else(|| "?".into())
}

fn probe_failed(r: &mut Report, opts: &Options, e: ProbeError) {
    match e {
        ProbeError::Spawn(why) => r.fail(
            "php",
            format!("cannot run PHP: {why}"),
            "install PHP's CLI, or give the web server's PHP with --php PATH",
        ),
        ProbeError::NoReport(out) => r.fail(
            "config",
            format!("PHP gave no report for {}: {out}", opts.config.display()),
            "run `php CONFIG` to see the error, and fix the config",
        ),
    }
}

/// The extension in the web server's PHP (FPM, Apache, CGI), and preload scripts.
fn web_sapis(r: &mut Report, opts: &Options, probe: &Probe) {
    let dirs: Vec<(String, PathBuf)> = if opts.sapi_dirs.is_empty() {
        probe
            .conf_dir()
            .and_then(|d| d.parent().and_then(Path::parent).map(Path::to_path_buf))
            .map(|php| {
                ["fpm", "apache2", "cgi"]
                    .iter()
                    .map(|s| (s.to_string(), php.join(s).join("conf.d")))
                    .filter(|(_, d)| d.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    } else {
        opts.sapi_dirs.clone()
    };
    let mut preloads: Vec<String> = Vec::new();
    if !probe.preload.is_empty() {
        preloads.push(probe.preload.clone());
    }
    if dirs.is_empty() {
        r.skip(
            "extension.web",
            "no FPM, Apache or CGI PHP config beside the CLI's: check phpinfo() on the web server (or give --sapi-ini-dir NAME=DIR)",
        );
    }
    for (name, dir) in &dirs {
        let scan = scan_ini(dir);
        preloads.extend(scan.preload);
        match scan.extension {
            Some(file) => r.ok(
                "extension.web",
                format!("{name}: {EXT} enabled in {}", file.display()),
            ),
            None => r.warn(
                "extension.web",
                format!(
                    "{name}: no extension={EXT} in {}: its pages use tsugi-php's PHP class",
                    dir.display()
                ),
                format!("`phpenmod -s {name} {EXT}` and reload {name}"),
            ),
        }
    }
    let mut bad = Vec::new();
    for p in &preloads {
        let text = std::fs::read_to_string(p).unwrap_or_default();
        if text.contains("WebSocket.php") {
            bad.push(p.clone());
        }
    }
    if bad.is_empty() {
        r.ok(
            "extension.preload",
            "no opcache.preload script loads tsugi-php's WebSocket.php",
        );
    } else {
        r.warn(
            "extension.preload",
            format!("opcache.preload script {} loads tsugi-php's WebSocket.php: PHP stops with 'Cannot declare class' while the extension is loaded", bad.join(", ")),
            "drop WebSocket.php from the preload list (the extension defines the class)",
        );
    }
}

struct Scan {
    extension: Option<PathBuf>,
    preload: Vec<String>,
}

/// The `extension=tsugi_websocket` line and `opcache.preload` settings in a conf.d.
fn scan_ini(dir: &Path) -> Scan {
    let mut scan = Scan {
        extension: None,
        preload: Vec::new(),
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    for file in files
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "ini"))
    {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with(';') || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches(['"', '\'']);
            match key.trim() {
                "extension" | "zend_extension"
                    if Path::new(value)
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .is_some_and(|s| s == EXT || s == format!("lib{EXT}")) =>
                {
                    scan.extension.get_or_insert(file.clone());
                }
                "opcache.preload" if !value.is_empty() => scan.preload.push(value.to_owned()),
                _ => {}
            }
        }
    }
    scan
}

/// What the config says: notifications on or off, and where browsers connect.
struct SiteView {
    url: WebsocketUrl,
    raw_url: String,
    origin: Option<String>,
    proxyport: Option<u16>,
    leeway: u64,
    publish: PublishEndpoint,
}

fn config(r: &mut Report, _opts: &Options, p: &Probe) -> Option<SiteView> {
    let cfg = &p.cfg;
    if !cfg.present {
        r.fail(
            "config.enabled",
            "the config sets no $CFG",
            "give the site's config.php",
        );
        return None;
    }
    let raw_url = text(&cfg.websocket_url);
    let url = raw_url.as_deref().and_then(WebsocketUrl::parse);
    if !p.enabled {
        let (what, fix) = match (&raw_url, &url) {
            (None, _) => (
                "notifications are off: $CFG->websocket_url is not set".to_owned(),
                "set $CFG->websocket_url to the daemon's address as browsers reach it, e.g. wss://socket.example.edu".to_owned(),
            ),
            (Some(u), None) => (
                format!("notifications are off: $CFG->websocket_url '{u}' is not a ws://, wss://, http:// or https:// URL with a host"),
                "write it as wss://host[:port] (or ws:// for a test site)".to_owned(),
            ),
            _ if !cfg.secret_set => (
                "notifications are off: $CFG->websocket_secret is not set".to_owned(),
                "set $CFG->websocket_secret to the daemon's secret".to_owned(),
            ),
            _ => (
                "notifications are off: WebSocket::enabled() is false".to_owned(),
                "check $CFG->websocket_url and $CFG->websocket_secret".to_owned(),
            ),
        };
        r.fail("config.enabled", what, fix);
        return None;
    }
    let (Some(raw_url), Some(url)) = (raw_url, url) else {
        r.fail(
            "config.enabled",
            "WebSocket::enabled() is true but $CFG->websocket_url is not a URL this doctor reads",
            "write it as wss://host[:port]",
        );
        return None;
    };
    let proxyport = int(&cfg.websocket_proxyport)
        .and_then(|v| u16::try_from(v).ok())
        .filter(|&v| v > 0);
    let publish_url = match &cfg.websocket_publish_url {
        None | Some(serde_json::Value::Null | serde_json::Value::Bool(false)) => CfgString::Unset,
        Some(serde_json::Value::String(s)) => CfgString::Str(s),
        Some(_) => CfgString::Other,
    };
    // The endpoint does not depend on the secret, which the doctor never reads: a
    // stand-in key makes the site "enabled" as the extension found it.
    let site = Site::new(Some(&raw_url), Keyring::new(["tsugi-notify-doctor"]).ok())
        .with_proxyport(proxyport.map(i64::from))
        .with_publish_url(publish_url);
    // As the extension reads websocket_clock_skew: 0 to 3600 s, else the default.
    let leeway = int(&cfg.websocket_clock_skew)
        .and_then(|s| u64::try_from(s).ok())
        .map_or(LEEWAY_SECS.unsigned_abs(), |s| s.min(3600));
    // As the extension reports them (what pages put in front of the browser).
    let shown = |v: &Option<serde_json::Value>| text(v).unwrap_or_else(|| "none".into());
    r.ok(
        "config.enabled",
        format!(
            "notifications on: browsers open {}/notify (getHost {}, getPort {}, getProxyPort {})",
            raw_url.trim_end_matches('/'),
            shown(&p.host),
            shown(&p.port),
            shown(&p.proxyport),
        ),
    );
    if text(&cfg.websocket_token_format).is_some_and(|f| f.eq_ignore_ascii_case("legacy")) {
        r.note(
            "config.tokens",
            "$CFG->websocket_token_format is 'legacy': pages carry legacy tokens, which never expire",
            Some("once no browser talks to rachet.php, remove the setting (v1 tokens are the default)".into()),
        );
    }
    Some(SiteView {
        origin: text(&cfg.wwwroot).as_deref().and_then(origin_of),
        publish: site.publish_endpoint(),
        url,
        raw_url,
        proxyport,
        leeway,
    })
}

fn http_base(secure: bool, host: &str, port: u16) -> String {
    format!("{}://{host}:{port}", if secure { "https" } else { "http" })
}

/// The daemon: `/healthz`, its clock, a socket, a relayed message, `publish()`.
fn daemon(r: &mut Report, opts: &Options, p: &Probe, site: &SiteView, room: &str) {
    let url = &site.url;
    let base = http_base(url.is_secure(), url.host(), url.port());
    let mut date = None;
    let mut reachable = true;
    match net::get(&format!("{base}/healthz"), opts.timeout) {
        Ok(a) => {
            date = a.date;
            health(r, "daemon.url", &base, &a);
        }
        Err(e) => {
            reachable = false;
            let tls = url.is_secure()
                && (e.contains("certificate") || e.contains("tls") || e.contains("TLS"));
            if tls {
                r.fail(
                    "daemon.url",
                    format!("TLS with {} failed: {e}", url.host()),
                    format!("the certificate on port {} must be valid for {} and from a CA this server trusts", url.port(), url.host()),
                );
            } else {
                r.fail(
                    "daemon.url",
                    format!("nothing answers at {}:{}: {e}", url.host(), url.port()),
                    "start the daemon (`systemctl status tsugi-notifyd`), or make websocket_url's port the one it (or its proxy) listens on",
                );
            }
        }
    }
    if let Some(pp) = site.proxyport {
        let pbase = http_base(false, url.host(), pp);
        match net::get(&format!("{pbase}/healthz"), opts.timeout) {
            Ok(a) => {
                date = date.or(a.date);
                health(r, "daemon.proxyport", &pbase, &a);
            }
            Err(e) => r.warn(
                "daemon.proxyport",
                format!("nothing answers at {}:{pp} (websocket_proxyport): {e}", url.host()),
                "the daemon should listen on websocket_proxyport behind the proxy (fine to ignore if a firewall keeps this server out)",
            ),
        }
    }
    let clock_bad = clock(r, p, site, date);
    if !reachable {
        r.skip("socket.v1", "the daemon is not reachable");
        return;
    }
    sockets(r, opts, p, site, room, clock_bad);
}

fn health(r: &mut Report, id: &'static str, base: &str, a: &net::Answer) {
    if a.status == 200 && a.body.starts_with("ok") {
        let backplane = a.body.lines().find_map(|l| l.strip_prefix("backplane: "));
        match backplane {
            Some("down") => r.warn(
                id,
                format!("tsugi-notifyd answers at {base}, but its Redis backplane is down: messages reach only that node's browsers"),
                "check the daemon's [redis] url and the redis-server it names (the daemon's log says why)",
            ),
            Some(state) => r.ok(id, format!("tsugi-notifyd answers at {base} (backplane {state})")),
            None => r.ok(id, format!("tsugi-notifyd answers at {base} (one node, no backplane)")),
        }
    } else {
        r.note(
            id,
            format!(
                "{base}/healthz answers {}: not tsugi-notifyd's health check (a proxy passing only /notify and /publish, or another server such as rachet.php)",
                a.status
            ),
            None,
        );
    }
}

/// This server's clock (the token's `iat`) against the daemon's `Date`; true when v1
/// tokens from here are refused for it.
fn clock(r: &mut Report, p: &Probe, site: &SiteView, date: Option<SystemTime>) -> bool {
    let Some(date) = date else {
        r.skip(
            "clock",
            "the daemon's time is unknown (no Date header from /healthz)",
        );
        return false;
    };
    let Some(here) = p.token_iat.or(p.time) else {
        r.skip("clock", "this server's time is unknown");
        return false;
    };
    let theirs = match date.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
    };
    let ahead = here.saturating_sub(theirs);
    let leeway = i64::try_from(site.leeway).unwrap_or(i64::MAX);
    let ntp =
        "keep both clocks on NTP (`timedatectl set-ntp true`; `chronyc tracking` shows the offset)";
    if ahead > leeway {
        r.fail(
            "clock",
            format!(
                "this server's clock is {ahead} s ahead of the daemon's, more than clock_skew_secs ({leeway}): the daemon refuses every v1 token minted here"
            ),
            format!("{ntp}; meanwhile raise clock_skew_secs on the daemon (and $CFG->websocket_clock_skew)"),
        );
        return true;
    }
    let behind = -ahead;
    let publish_life = i64::try_from(PUBLISH_CALL_TTL_SECS)
        .unwrap_or(30)
        .saturating_add(leeway);
    if behind > publish_life {
        r.fail(
            "clock",
            format!("this server's clock is {behind} s behind the daemon's: publish() tokens (valid {PUBLISH_CALL_TTL_SECS} s) arrive expired"),
            ntp,
        );
        return false;
    }
    if ahead.abs() > 2 {
        r.warn(
            "clock",
            format!(
                "the clocks are {} s apart ({}), within the leeway of {leeway} s",
                ahead.abs(),
                if ahead > 0 {
                    "this server ahead"
                } else {
                    "this server behind"
                }
            ),
            ntp,
        );
    } else {
        r.ok(
            "clock",
            format!("this server's clock agrees with the daemon's ({ahead:+} s)"),
        );
    }
    false
}

/// The socket URL a browser opens for `token`.
fn socket_url(site: &SiteView, token: &str, room: &str) -> String {
    let url = &site.url;
    let path = url
        .path()
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .trim_end_matches('/');
    format!(
        "{}://{}:{}{path}/notify?token={}&room={}",
        if url.is_secure() { "wss" } else { "ws" },
        url.host(),
        url.port(),
        enc(token),
        enc(room)
    )
}

fn sockets(
    r: &mut Report,
    opts: &Options,
    p: &Probe,
    site: &SiteView,
    room: &str,
    clock_bad: bool,
) {
    let t = opts.timeout;
    let origin = site.origin.as_deref();
    let Some(token) = p.token() else {
        r.fail(
            "socket.v1",
            "WebSocket::getToken() gave no token",
            "check $CFG->websocket_secret",
        );
        return;
    };
    let shown = site.raw_url.trim_end_matches('/');
    let v1 = token.contains('.');
    let id = if v1 { "socket.v1" } else { "socket.legacy" };
    let mut a = match net::open(&socket_url(site, token, room), origin, t) {
        Ok(ws) => {
            r.ok(
                id,
                format!("a token minted here opens a socket at {shown}/notify (101)"),
            );
            ws
        }
        Err(Refused::Status(403, body)) if body.contains("origin") => {
            r.fail(
                id,
                format!(
                    "the daemon refuses sockets from pages of {} (403 {body})",
                    origin.unwrap_or("this site")
                ),
                format!(
                    "add {} to the daemon's allowed_origins",
                    origin.unwrap_or("$CFG->wwwroot's origin")
                ),
            );
            return;
        }
        Err(Refused::Status(403, body)) => {
            refused_token(r, id, opts, p, site, room, &body, clock_bad);
            return;
        }
        Err(Refused::Status(404, body)) => {
            r.fail(
                id,
                format!("{shown}/notify is not found (404 {body})"),
                "the proxy must pass /notify (with the Upgrade headers) to the daemon; see the README's nginx example",
            );
            return;
        }
        Err(Refused::Status(s @ (429 | 503), body)) => {
            r.warn(
                id,
                format!("the daemon is busy or full ({s} {body})"),
                "see max_connections in the daemon's settings",
            );
            return;
        }
        Err(Refused::Status(s, body)) => {
            r.fail(
                id,
                format!("the socket at {shown}/notify is refused ({s} {body})"),
                "the address must reach tsugi-notifyd's /notify (directly or through a proxy passing the Upgrade headers)",
            );
            return;
        }
        Err(Refused::Network(e)) => {
            r.fail(
                id,
                format!("no socket at {shown}/notify: {e}"),
                "check websocket_url and the proxy in front of the daemon",
            );
            return;
        }
    };

    // Browser to browser: one socket's message reaches another of the same room.
    let nonce = format!("tsugi-notify-doctor relay {}", random_hex());
    let relayed = match net::open(&socket_url(site, token, room), origin, t) {
        Ok(mut b) => {
            let got = net::relay(Some(&mut a), &mut b, &nonce, t);
            net::close(b);
            got
        }
        Err(_) => false,
    };
    if relayed {
        r.ok(
            "relay",
            "a message sent on one socket reached another socket of the same room",
        );
    } else if v1 && legacy_relays(p, site, room, origin, t) {
        r.fail(
            "relay",
            "v1 sockets open but nothing reaches them, while legacy-token sockets are relayed: the daemon knows only legacy tokens (an old rachet.php)",
            "stop rachet.php and run tsugi-notifyd on its port; until then set $CFG->websocket_token_format = 'legacy' on every server with the extension",
        );
    } else {
        r.fail(
            "relay",
            "nothing sent on one socket reached another socket of the same room",
            "the daemon at websocket_url must be tsugi-notifyd (or, with several nodes, all of them share [redis])",
        );
    }

    // Server to browser: WebSocket::publish() from this PHP reaches the socket.
    let (endpoint, configured) = match &site.publish {
        PublishEndpoint::Configured(u) => (u.clone(), "websocket_publish_url"),
        PublishEndpoint::Derived(u) => (u.clone(), "derived from websocket_url"),
        PublishEndpoint::Invalid => {
            r.fail(
                "publish",
                "$CFG->websocket_publish_url is set but is not an http:// or https:// URL with a host: publish() answers false",
                "write it as http://127.0.0.1:2021 (the daemon as this server reaches it), or unset it",
            );
            net::close(a);
            return;
        }
        PublishEndpoint::Off => {
            r.skip("publish", "notifications are off");
            net::close(a);
            return;
        }
    };
    let message = format!("tsugi-notify-doctor publish {}", random_hex());
    match opts.php.probe(&opts.config, &["publish", room, &message], p.load) {
        Ok(q) if q.published == Some(true) => {
            if net::wait_for(&mut a, &message, t) {
                r.ok("publish", format!("WebSocket::publish() posted to {endpoint} ({configured}) and the socket received it"));
            } else {
                r.fail(
                    "publish",
                    format!("WebSocket::publish() to {endpoint} ({configured}) was taken, but the socket did not receive it"),
                    "the daemon publish() reaches is not the one browsers reach: point websocket_publish_url at the same daemon, or give every node the same [redis]",
                );
            }
        }
        Ok(q) if q.published.is_none() => r.skip("publish", "this Tsugi\\Core\\WebSocket has no publish() (tsugi-php's class)"),
        Ok(_) => r.fail(
            "publish",
            format!("WebSocket::publish() to {endpoint} ({configured}) answered false"),
            "set $CFG->websocket_publish_url to the daemon as this server reaches it (e.g. http://127.0.0.1:2021; with websocket_proxyport set, publish() posts to the proxyport on websocket_url's host)",
        ),
        Err(_) => r.fail("publish", "PHP stopped while calling WebSocket::publish()", "run the doctor again; see PHP's error log"),
    }
    net::close(a);
}

/// Two sockets with legacy tokens: does one's message reach the other?
fn legacy_relays(
    p: &Probe,
    site: &SiteView,
    room: &str,
    origin: Option<&str>,
    t: Duration,
) -> bool {
    let Some(legacy) = p.legacy_token() else {
        return false;
    };
    let (Ok(mut a), Ok(mut b)) = (
        net::open(&socket_url(site, legacy, room), origin, t),
        net::open(&socket_url(site, legacy, room), origin, t),
    ) else {
        return false;
    };
    let nonce = format!("tsugi-notify-doctor legacy {}", random_hex());
    let got = net::relay(Some(&mut a), &mut b, &nonce, t);
    net::close(a);
    net::close(b);
    got
}

/// A v1 token refused with 403: say why, as far as can be told from here.
#[allow(clippy::too_many_arguments)]
fn refused_token(
    r: &mut Report,
    id: &'static str,
    opts: &Options,
    p: &Probe,
    site: &SiteView,
    room: &str,
    body: &str,
    clock_bad: bool,
) {
    if clock_bad {
        r.fail(
            id,
            format!("the daemon refused a token minted here (403 {body}): this server's clock is ahead of the daemon's (see clock)"),
            "fix the clocks (NTP), or raise clock_skew_secs on the daemon",
        );
        return;
    }
    let legacy_opens = p.legacy_token().is_some_and(|t| {
        net::open(
            &socket_url(site, t, room),
            site.origin.as_deref(),
            opts.timeout,
        )
        .map(net::close)
        .is_ok()
    });
    if legacy_opens {
        r.fail(
            id,
            format!("the daemon refused a v1 token minted here (403 {body}) but took a legacy one: the secret agrees, the v1 token does not pass"),
            "on the daemon host, `tsugi-notifyd --config FILE token verify TOKEN` with a token from a page says why",
        );
    } else {
        r.fail(
            id,
            format!("the daemon refused a fresh token minted here (403 {body}) and the clocks agree: the secret differs"),
            "make the daemon's secret (/etc/tsugi-notify/secret, or secret in tsugi-notifyd.toml) the same as $CFG->websocket_secret, and restart it",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_is_scheme_and_authority() {
        assert_eq!(
            origin_of("https://Tsugi.Example.edu/tsugi").as_deref(),
            Some("https://tsugi.example.edu")
        );
        assert_eq!(
            origin_of("http://127.0.0.1:8080").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(origin_of("tsugi"), None);
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(enc("a+b/c="), "a%2Bb%2Fc%3D");
        assert_eq!(enc("room 1&x"), "room%201%26x");
    }

    #[test]
    fn ini_lines_are_read_as_php_reads_them() {
        let dir = std::env::temp_dir().join(format!("doctor-ini-{}", random_hex()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("10-opcache.ini"),
            "zend_extension=opcache.so\nopcache.preload=/srv/preload.php\n",
        )
        .unwrap();
        std::fs::write(dir.join("20-other.ini"), ";extension=tsugi_websocket\n").unwrap();
        let scan = scan_ini(&dir);
        assert!(
            scan.extension.is_none(),
            "a commented line does not load it"
        );
        assert_eq!(scan.preload, ["/srv/preload.php"]);
        std::fs::write(
            dir.join("30-tsugi_websocket.ini"),
            "extension = \"/usr/lib/php/20220829/tsugi_websocket.so\"\n",
        )
        .unwrap();
        assert_eq!(
            scan_ini(&dir).extension,
            Some(dir.join("30-tsugi_websocket.ini"))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
