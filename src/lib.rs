//! `tsugi_websocket`: a native, drop-in `Tsugi\Core\WebSocket` for Tsugi.
//!
//! Glue only: each static method reads `$CFG` (and its argument) into plain Rust values,
//! asks `tsugi-notify-core` what they mean, and hands the answer back to PHP. No input
//! of any type makes it panic into PHP or print a warning: a wrong type answers
//! `false` or `null`, and a panic (a bug) is caught and answered the same way.
#![cfg_attr(windows, feature(abi_vectorcall))]
#![allow(missing_debug_implementations)]

mod php;
mod post;

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};

use ext_php_rs::convert::IntoZval;
use ext_php_rs::prelude::*;
use ext_php_rs::types::Zval;
use ext_php_rs::zend::ModuleEntry;
use ext_php_rs::{info_table_end, info_table_row, info_table_start};
use tsugi_notify_core::{
    CfgString, Clock, Format, Keyring, Plaintext, PublishEndpoint, PublishRequest, Room, Scope,
    Site, Space, SystemClock,
};

/// The wall clock. A build with the `test-clock` feature (never a release) reads the
/// time from `TSUGI_WEBSOCKET_TEST_NOW` instead, so the PHP suite can check the
/// known-answer vectors at the instant they were made.
#[derive(Debug, Clone, Copy)]
struct PhpClock;

impl Clock for PhpClock {
    fn now(&self) -> i64 {
        #[cfg(feature = "test-clock")]
        if let Some(now) = std::env::var("TSUGI_WEBSOCKET_TEST_NOW")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            return now;
        }
        SystemClock.now()
    }
}

/// Runs a method body; a panic becomes `fallback` instead of aborting PHP.
fn guard<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

fn string_or_false(value: Option<&str>) -> Zval {
    let mut z = Zval::new();
    match value {
        Some(s) => {
            if z.set_string(s, false).is_err() {
                z.set_bool(false);
            }
        }
        None => z.set_bool(false),
    }
    z
}

/// A list of strings as a PHP array, or false.
fn strings_or_false(value: Option<Vec<String>>) -> Zval {
    let mut z = Zval::new();
    match value {
        Some(list) => {
            if list.set_zval(&mut z, false).is_err() {
                z.set_bool(false);
            }
        }
        None => z.set_bool(false),
    }
    z
}

thread_local! {
    /// The `seq` of the last publish() of this request, when it was taken with one
    /// (`lastPublishSequence()`); reset by every publish() and at each request start.
    static LAST_PUBLISH_SEQ: Cell<Option<i64>> = const { Cell::new(None) };
}

/// RINIT: a request starts with no publish() made (a worker thread serves many).
extern "C" fn request_startup(_type: i32, _module_number: i32) -> i32 {
    LAST_PUBLISH_SEQ.with(|seq| seq.set(None));
    0
}

thread_local! {
    /// The keyring of the last secrets seen: keyed HMAC state is reused while
    /// `$CFG->websocket_secret` stays the same.
    static KEYRING: RefCell<Option<(Vec<Vec<u8>>, Keyring)>> = const { RefCell::new(None) };
}

/// `websocket_secret`: a non-empty string, or a non-empty array of non-empty strings
/// (the first mints). Anything else is no secret.
fn keyring(cfg: &Zval) -> Option<Keyring> {
    let value = php::property(cfg, "websocket_secret")?;
    let secrets: Vec<&str> = if let Some(s) = php::non_empty_str(&value) {
        vec![s]
    } else {
        let array = value.array()?;
        let mut list = Vec::with_capacity(array.len());
        for (_, item) in array {
            list.push(php::non_empty_str(item.dereference())?);
        }
        list
    };
    KEYRING.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some((seen, keyring)) = cache.as_ref() {
            if seen
                .iter()
                .map(Vec::as_slice)
                .eq(secrets.iter().map(|s| s.as_bytes()))
            {
                return Some(keyring.clone());
            }
        }
        let keyring = Keyring::new(&secrets).ok()?;
        let owned = secrets.iter().map(|s| s.as_bytes().to_vec()).collect();
        *cache = Some((owned, keyring.clone()));
        Some(keyring)
    })
}

/// Which `$CFG` settings a method needs: each reads only those.
#[derive(Clone, Copy)]
struct Need {
    /// `websocket_url` and `websocket_proxyport`.
    endpoint: bool,
    /// `websocket_publish_url`.
    publish: bool,
    /// `websocket_token_ttl` and `websocket_token_format`.
    mint: bool,
    /// `websocket_accept_legacy` and `websocket_clock_skew`.
    verify: bool,
}

// A table: one line a method.
#[rustfmt::skip]
impl Need {
    const NOTHING: Need = Need { endpoint: false, publish: false, mint: false, verify: false };
    /// `enabled()`, `getHost()`, `getPort()`, `getProxyPort()`.
    const ENDPOINT: Need = Need { endpoint: true, ..Need::NOTHING };
    /// `publish()`, `presence()`.
    const PUBLISH: Need = Need { publish: true, ..Need::ENDPOINT };
    /// `getToken()`, `getPublishToken()`.
    const MINT: Need = Need { mint: true, ..Need::NOTHING };
    /// `decodeToken()`.
    const VERIFY: Need = Need { verify: true, ..Need::NOTHING };
    /// `php --ri`.
    const ALL: Need = Need { endpoint: true, publish: true, mint: true, verify: true };
}

/// `$CFG` (when it is an object) and what it says about notifications, as far as
/// `need` goes (the secret always); "not enabled" when `$CFG` is missing.
fn site(need: Need) -> (Option<Zval>, Site<PhpClock>) {
    let Some(cfg) = php::global_cfg() else {
        return (None, Site::new(None, None).with_clock(PhpClock));
    };
    let int = |name: &str| php::property(&cfg, name).and_then(|v| php::int_like(&v));
    let url = need
        .endpoint
        .then(|| php::property(&cfg, "websocket_url"))
        .flatten();
    let mut site =
        Site::new(url.as_ref().and_then(php::non_empty_str), keyring(&cfg)).with_clock(PhpClock);
    if need.endpoint {
        site = site.with_proxyport(int("websocket_proxyport"));
    }
    if need.publish {
        // Absent, null and false are "not set"; any other non-string is refused by core.
        let value = php::property(&cfg, "websocket_publish_url").filter(|v| !v.is_false());
        let setting = match &value {
            None => CfgString::Unset,
            Some(v) => v.str().map_or(CfgString::Other, CfgString::Str),
        };
        site = site.with_publish_url(setting);
    }
    if need.mint {
        let format = php::property(&cfg, "websocket_token_format");
        site = site
            .with_ttl(int("websocket_token_ttl"))
            .with_token_format(format.as_ref().and_then(Zval::str));
    }
    if need.verify {
        let accept = php::property(&cfg, "websocket_accept_legacy");
        site = site
            .with_accept_legacy(!accept.is_some_and(|v| v.is_false()))
            .with_leeway(int("websocket_clock_skew"));
    }
    (Some(cfg), site)
}

/// `$launch->link->id` etc. `Ok(None)` when not set; `Err` when set to something that
/// cannot be an id.
fn launch_id(launch: &Zval, part: &str) -> Result<Option<String>, ()> {
    match php::property(launch, part).and_then(|p| php::property(&p, "id")) {
        None => Ok(None),
        Some(id) => php::id_string(&id).map(Some),
    }
}

/// The plaintext of a launch, from `$CFG->wwwroot` and the launch's ids.
fn plaintext(cfg: Option<&Zval>, launch: &Zval) -> Option<Plaintext> {
    let link = launch_id(launch, "link").ok()??;
    let context = launch_id(launch, "context").ok()?;
    let user = launch_id(launch, "user").ok()?;
    let wwwroot = php::property(cfg?, "wwwroot")?;
    Plaintext::new(
        php::non_empty_str(&wwwroot)?,
        &link,
        context.as_deref(),
        user.as_deref(),
    )
    .ok()
}

/// `$CFG->websocket_ca_file`: absent, null and false: the system's CAs only (`Ok(None)`);
/// a path: those too; anything else (an empty string, a number) is refused (`Err`).
fn ca_file(cfg: Option<&Zval>) -> Result<Option<String>, ()> {
    let value = cfg
        .and_then(|c| php::property(c, "websocket_ca_file"))
        .filter(|v| !v.is_false());
    match &value {
        None => Ok(None),
        Some(v) => php::non_empty_str(v)
            .map(|path| Some(path.to_owned()))
            .ok_or(()),
    }
}

/// Which of the daemon's HTTP APIs a call is for.
#[derive(Clone, Copy)]
enum Api {
    /// `POST /publish`, with a publish token.
    Publish,
    /// `GET /presence`, with a presence token.
    Presence,
}

/// A call to the daemon's HTTP API, ready to send.
struct Call {
    /// The API's URL.
    url: String,
    /// A v1 token of the API's scope for the launch's space, bound to the room.
    token: String,
    /// `$CFG->websocket_ca_file`.
    ca_file: Option<String>,
}

/// The call `api` makes for `room` of the launch's space: `None` when notifications are
/// off, `websocket_publish_url` is not usable, the launch has no link id, the room is
/// not a room name, or `websocket_ca_file` is not a path.
fn daemon_call(launch: &Zval, room: &str, api: Api) -> Option<Call> {
    let (cfg, site) = site(Need::PUBLISH);
    let url = match api {
        Api::Publish => site.publish_url(),
        Api::Presence => site.presence_url(),
    }?;
    let p = plaintext(cfg.as_ref(), launch)?;
    let bound = Room::new(room).ok()?;
    let token = match api {
        Api::Publish => site.mint_publish_for_room(&p, &bound),
        Api::Presence => site.mint_presence_for_room(&p, &bound),
    }
    .ok()?;
    let ca_file = ca_file(cfg.as_ref()).ok()?;
    Some(Call {
        url,
        token,
        ca_file,
    })
}

/// Tsugi's notification tokens and settings (native implementation).
///
/// Reads `$CFG->websocket_url`, `$CFG->websocket_secret` (a string, or an array of
/// strings while rotating: the first one mints), `$CFG->websocket_proxyport`,
/// `$CFG->wwwroot`, `$CFG->websocket_token_ttl` (seconds, default 86400, 0 = no
/// expiry), `$CFG->websocket_token_format` (`'jwt'` default, or `'legacy'`),
/// `$CFG->websocket_accept_legacy` (default true), `$CFG->websocket_clock_skew` (how
/// far apart the minting and verifying clocks may be, seconds, default 60, at most
/// 3600) and `$CFG->websocket_publish_url`
/// (where publish() reaches the daemon, e.g. `'http://127.0.0.1:2021'`; default:
/// derived from `websocket_url`) and `$CFG->websocket_ca_file` (a PEM file of CAs
/// publish() and presence() trust over https besides the system's store).
#[php_class]
#[php(name = "Tsugi\\Core\\WebSocket")]
pub struct WebSocket;

#[php_impl]
impl WebSocket {
    /// Whether this server is configured for notifications: `websocket_url` has a host
    /// and a port (ws: 80, wss: 443 when absent) and `websocket_secret` is non-empty.
    pub fn enabled() -> bool {
        guard(false, || site(Need::ENDPOINT).1.enabled())
    }

    /// The port of the configured socket server, or null when not enabled.
    pub fn get_port() -> Option<i64> {
        guard(None, || site(Need::ENDPOINT).1.port().map(i64::from))
    }

    /// The port the socket server listens on behind a proxy (`websocket_proxyport`),
    /// or null when not enabled or not set.
    pub fn get_proxy_port() -> Option<i64> {
        guard(None, || site(Need::ENDPOINT).1.proxyport().map(i64::from))
    }

    /// The host of the configured socket server, or null when not enabled.
    pub fn get_host() -> Option<String> {
        guard(None, || site(Need::ENDPOINT).1.host().map(str::to_owned))
    }

    /// The plaintext token of a launch: `WWWROOT::LINK::CONTEXT::USER`.
    ///
    /// @param object $launch The LTI launch (needs `$launch->link->id`)
    /// @return string|false The plaintext, or false if no token can be made
    pub fn make_token(launch: &Zval) -> Zval {
        guard(string_or_false(None), || {
            let cfg = php::global_cfg();
            string_or_false(
                plaintext(cfg.as_ref(), launch)
                    .as_ref()
                    .map(Plaintext::as_str),
            )
        })
    }

    /// A signed token for a launch, to render into the page for the browser.
    ///
    /// @param object $launch The LTI launch (needs `$launch->link->id`)
    /// @return string|false The token, or false without a secret or a link id
    pub fn get_token(launch: &Zval) -> Zval {
        guard(string_or_false(None), || {
            let (cfg, site) = site(Need::MINT);
            if !site.has_secret() {
                return string_or_false(None);
            }
            let token = plaintext(cfg.as_ref(), launch).and_then(|p| site.mint_browser(&p).ok());
            string_or_false(token.as_deref())
        })
    }

    /// A token that authorizes the daemon's publish API for every room of the launch's
    /// space for 300 s, for tools that post to `POST /publish` themselves. It is a
    /// bearer token: whoever holds it can publish to the whole space until it expires.
    ///
    /// @param object $launch The LTI launch (needs `$launch->link->id`)
    /// @return string|false The token, or false without a secret or a link id
    pub fn get_publish_token(launch: &Zval) -> Zval {
        guard(string_or_false(None), || {
            let (cfg, site) = site(Need::MINT);
            let token = plaintext(cfg.as_ref(), launch).and_then(|p| site.mint_publish(&p).ok());
            string_or_false(token.as_deref())
        })
    }

    /// Sends a message from the server to every browser of the launch's space and room
    /// (through the daemon's publish API, at most 2 s). Posts `{"room", "message"}` with
    /// a publish token good for this room only, for 30 s, to
    /// `$CFG->websocket_publish_url` + `/publish` when set (point it at an internal
    /// address), else to the address derived from `websocket_url`. Over https the
    /// daemon's certificate must be from a CA of the system's store or of
    /// `$CFG->websocket_ca_file`.
    ///
    /// @param object $launch The LTI launch (needs `$launch->link->id`)
    /// @param string $room The room ('' for the default room; at most 256 bytes)
    /// @param string $message The message, as the browsers will receive it
    /// @return bool True when the daemon took it; false when notifications are off,
    ///   `websocket_publish_url` is not an http(s) URL, the daemon is down or refused it
    pub fn publish(launch: &Zval, room: &str, message: &str) -> bool {
        LAST_PUBLISH_SEQ.with(|seq| seq.set(None));
        guard(false, || {
            let Some(call) = daemon_call(launch, room, Api::Publish) else {
                return false;
            };
            let body = PublishRequest::new(room, message).to_json();
            let Some(taken) = post::publish(&call.url, &call.token, &body, call.ca_file.as_deref())
            else {
                return false;
            };
            LAST_PUBLISH_SEQ.with(|seq| seq.set(taken.seq));
            true
        })
    }

    /// The sequence the daemon gave the message of the last publish() in this request
    /// (its place in the room, as browsers see it in `seq`).
    ///
    /// @return int|null The sequence; null when the last publish() failed, the daemon
    ///   gave the message no sequence, or no publish() was made in this request
    pub fn last_publish_sequence() -> Option<i64> {
        guard(None, || LAST_PUBLISH_SEQ.with(Cell::get))
    }

    /// Who is in a room of the launch's space now, on every node: asks the daemon's
    /// `GET /presence` (at most 2 s) with a presence token good for this room only, for
    /// 30 s, at the address publish() posts to (with `/presence` for `/publish`). The
    /// daemon lists at most `presence_max_users` users; sockets without a user are not
    /// listed.
    ///
    /// @param object $launch The LTI launch (needs `$launch->link->id`)
    /// @param string $room The room ('' for the default room; at most 256 bytes)
    /// @return list<string>|false The user ids present, in the daemon's order; false when
    ///   notifications are off, `websocket_publish_url` is not an http(s) URL, the daemon
    ///   is down or refused, or its answer is not a presence answer
    #[php(defaults(room = "\"\""))]
    pub fn presence(launch: &Zval, room: &str) -> Zval {
        guard(strings_or_false(None), || {
            let users = daemon_call(launch, room, Api::Presence).and_then(|call| {
                post::presence(&call.url, &call.token, room, call.ca_file.as_deref())
            });
            strings_or_false(users)
        })
    }

    /// Checks a token and returns its plaintext.
    ///
    /// @param string $token A v1 token, or a legacy one unless legacy is switched off
    /// @return string|false The plaintext, or false when the token is not valid
    pub fn decode_token(token: &Zval) -> Zval {
        guard(string_or_false(None), || {
            let verified = token
                .str()
                .and_then(|t| site(Need::VERIFY).1.verify(t, Scope::Browser).ok());
            string_or_false(verified.as_ref().map(|v| v.plaintext.as_str()))
        })
    }

    /// The space (`WWWROOT::LINK`) of a plaintext token.
    ///
    /// @param string $plain A plaintext as returned by decodeToken()
    /// @return string|false The space, or false when it is not a plaintext
    pub fn get_space_from_token(plain: &Zval) -> Zval {
        guard(string_or_false(None), || {
            let space = plain.str().and_then(Space::from_plaintext);
            string_or_false(space.as_ref().map(Space::as_str))
        })
    }
}

/// `php --ri tsugi_websocket` and `phpinfo()`: never shows a secret.
pub extern "C" fn module_info(_module: *mut ModuleEntry) {
    let rows = guard(Vec::new(), || {
        let (_, site) = site(Need::ALL);
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        vec![
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
            ("enabled", yes_no(site.enabled()).to_owned()),
            (
                "token format",
                match site.mint_format() {
                    Format::V1 => "jwt (v1, HS256)",
                    Format::Legacy => "legacy (AES-256-CBC)",
                }
                .to_owned(),
            ),
            ("token ttl (s)", site.ttl().to_string()),
            ("clock skew allowed (s)", site.leeway().to_string()),
            (
                "accepts legacy tokens",
                yes_no(site.accepts_legacy()).to_owned(),
            ),
            (
                "secrets configured",
                site.tokens().map_or(0, |t| t.keyring().len()).to_string(),
            ),
            (
                "publish endpoint",
                match site.publish_endpoint() {
                    PublishEndpoint::Configured(url) => url,
                    PublishEndpoint::Derived(url) => format!("derived ({url})"),
                    PublishEndpoint::Invalid => {
                        "off (websocket_publish_url is not an http(s) URL with a host)".to_owned()
                    }
                    PublishEndpoint::Off => "off".to_owned(),
                },
            ),
        ]
    });
    info_table_start!();
    for (name, value) in rows {
        info_table_row!(name, value);
    }
    info_table_end!();
}

#[php_module]
pub fn get_module(module: ModuleBuilder) -> ModuleBuilder {
    module
        .name("tsugi_websocket")
        .version(env!("CARGO_PKG_VERSION"))
        .class::<WebSocket>()
        .request_startup_function(request_startup)
        .info_function(module_info)
}
