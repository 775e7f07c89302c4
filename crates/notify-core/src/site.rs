//! A Tsugi site's notification settings (`$CFG->websocket_*`), interpreted once, the same
//! way by the PHP extension and the daemon.

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::model::{Plaintext, Room};
use crate::secret::Keyring;
use crate::token::{Format, Scope, Tokens, Verified, DEFAULT_TTL_SECS};
use crate::url::{self, WebsocketUrl};

/// Lifetime of the publish tokens a tool asks for ([`Site::mint_publish`]): they
/// authorize sending to every room of a space.
pub const PUBLISH_TTL_SECS: u64 = 300;

/// Lifetime of the token one publish call sends ([`Site::mint_publish_for_room`]): it
/// authorizes sending to one room, and is used at once.
pub const PUBLISH_CALL_TTL_SECS: u64 = 30;

/// A `$CFG` setting that must be a string when it is set, as the caller read it: a
/// value of another type is refused rather than taken as "not set".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CfgString<'a> {
    /// Not set (for PHP: absent, null or false).
    Unset,
    /// A string, perhaps empty.
    Str(&'a str),
    /// A value of any other type.
    Other,
}

impl<'a> From<Option<&'a str>> for CfgString<'a> {
    fn from(value: Option<&'a str>) -> Self {
        value.map_or(CfgString::Unset, CfgString::Str)
    }
}

/// Where `publish()` posts ([`Site::publish_endpoint`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishEndpoint {
    /// `websocket_publish_url`, with `/publish`.
    Configured(String),
    /// Derived from `websocket_url` (and `websocket_proxyport`): no
    /// `websocket_publish_url` is set.
    Derived(String),
    /// `websocket_publish_url` is set but is not an `http(s)` URL with a host: publishing
    /// is off rather than sent elsewhere.
    Invalid,
    /// Notifications are not enabled.
    Off,
}

/// What `websocket_publish_url` says.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PublishTarget {
    /// Not set: derived from `websocket_url` and `websocket_proxyport`.
    Derived,
    /// Set: this URL (with `/publish`).
    Set(String),
    /// Set to something that is not an `http(s)` URL with a host: no publishing.
    Refused,
}

/// `http` for `ws`, `https` for `wss`.
fn http_scheme(url: &WebsocketUrl) -> &'static str {
    if url.is_secure() {
        "https"
    } else {
        "http"
    }
}

/// What `$CFG` says about notifications.
///
/// Enabled when `websocket_url` is a WebSocket URL with a host and a port and there is at
/// least one non-empty secret; every other combination is "not enabled".
#[derive(Debug, Clone)]
pub struct Site<C = SystemClock> {
    url: Option<WebsocketUrl>,
    tokens: Option<Tokens<C>>,
    proxyport: Option<u16>,
    publish_target: PublishTarget,
    mint_format: Format,
}

impl Site<SystemClock> {
    /// From `websocket_url` (if it is a string) and the secrets (if any are usable).
    pub fn new(url: Option<&str>, keyring: Option<Keyring>) -> Self {
        Site {
            url: url.and_then(WebsocketUrl::parse),
            tokens: keyring.map(Tokens::new),
            proxyport: None,
            publish_target: PublishTarget::Derived,
            mint_format: Format::V1,
        }
    }
}

impl<C: Clock> Site<C> {
    /// Uses another clock for minting and verifying.
    pub fn with_clock<D: Clock + Clone>(self, clock: D) -> Site<D> {
        Site {
            url: self.url,
            tokens: self.tokens.map(|t| t.with_clock(clock.clone())),
            proxyport: self.proxyport,
            publish_target: self.publish_target,
            mint_format: self.mint_format,
        }
    }

    /// `websocket_proxyport`: kept when it is a port number (1 to 65535).
    pub fn with_proxyport(mut self, port: Option<i64>) -> Self {
        self.proxyport = port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0);
        self
    }

    /// `websocket_publish_url`: the daemon's address as this web server reaches it
    /// (`http://` or `https://`, a host, an optional port and path), where
    /// [`Site::publish_url`] then points instead of the address derived from
    /// `websocket_url`. Not set keeps the derived address; a value that is not such a
    /// URL (another type, another scheme, empty, no host, userinfo, a query) switches
    /// publishing off rather than falling back to the public address.
    pub fn with_publish_url<'a>(mut self, url: impl Into<CfgString<'a>>) -> Self {
        self.publish_target = match url.into() {
            CfgString::Unset => PublishTarget::Derived,
            CfgString::Str(s) => {
                url::publish_endpoint(s).map_or(PublishTarget::Refused, PublishTarget::Set)
            }
            CfgString::Other => PublishTarget::Refused,
        };
        self
    }

    /// `websocket_token_ttl` in seconds: 0 mints tokens that never expire; absent or
    /// negative means the default of one day.
    pub fn with_ttl(mut self, ttl: Option<i64>) -> Self {
        let ttl = ttl
            .and_then(|t| u64::try_from(t).ok())
            .unwrap_or(DEFAULT_TTL_SECS);
        self.tokens = self.tokens.map(|t| t.with_ttl(ttl));
        self
    }

    /// `websocket_token_format`: `"legacy"` mints legacy tokens; anything else v1.
    pub fn with_token_format(mut self, format: Option<&str>) -> Self {
        self.mint_format = if format == Some("legacy") {
            Format::Legacy
        } else {
            Format::V1
        };
        self
    }

    /// `websocket_clock_skew` in seconds: how far this server's clock and the minting
    /// clock may differ when a token is verified (at most an hour); absent or negative
    /// keeps the default of [`crate::LEEWAY_SECS`].
    pub fn with_leeway(mut self, secs: Option<i64>) -> Self {
        if let Some(secs) = secs.and_then(|s| u64::try_from(s).ok()) {
            self.tokens = self.tokens.map(|t| t.with_leeway(secs));
        }
        self
    }

    /// The clock leeway verification allows, in seconds.
    pub fn leeway(&self) -> u64 {
        self.tokens
            .as_ref()
            .map_or(crate::LEEWAY_SECS.unsigned_abs(), Tokens::leeway)
    }

    /// `websocket_accept_legacy`: only an explicit `false` refuses legacy tokens.
    pub fn with_accept_legacy(mut self, accept: bool) -> Self {
        self.tokens = self.tokens.map(|t| t.accept_legacy(accept));
        self
    }

    /// True when notifications are configured: a usable URL and a secret.
    pub fn enabled(&self) -> bool {
        self.url.is_some() && self.tokens.is_some()
    }

    /// The URL, when enabled.
    pub fn url(&self) -> Option<&WebsocketUrl> {
        self.url.as_ref().filter(|_| self.tokens.is_some())
    }

    /// The socket server's host, when enabled.
    pub fn host(&self) -> Option<&str> {
        self.url().map(WebsocketUrl::host)
    }

    /// The socket server's port, when enabled.
    pub fn port(&self) -> Option<u16> {
        self.url().map(WebsocketUrl::port)
    }

    /// The port the server listens on behind a proxy, when enabled and set.
    pub fn proxyport(&self) -> Option<u16> {
        self.proxyport.filter(|_| self.enabled())
    }

    /// The port the socket server listens on, when enabled: `websocket_proxyport` when it
    /// is set (the server sits behind a proxy), else the URL's port.
    pub fn listen_port(&self) -> Option<u16> {
        self.proxyport().or_else(|| self.port())
    }

    /// The site's web origin as `websocket_url` implies it, when enabled: `http://host`
    /// for `ws`, `https://host` for `wss`, the host as written (an IPv6 literal in
    /// brackets) and no port: the `wwwroot` the daemon's `token mint` uses when none is
    /// given.
    pub fn http_origin(&self) -> Option<String> {
        self.url()
            .map(|url| format!("{}://{}", http_scheme(url), url.host()))
    }

    /// Whether a secret is configured (minting and verifying need one).
    pub fn has_secret(&self) -> bool {
        self.tokens.is_some()
    }

    /// The format `mint_browser` produces.
    pub fn mint_format(&self) -> Format {
        self.mint_format
    }

    /// Lifetime of minted v1 tokens, in seconds (0: no expiry).
    pub fn ttl(&self) -> u64 {
        self.tokens.as_ref().map_or(DEFAULT_TTL_SECS, Tokens::ttl)
    }

    /// Whether legacy tokens are accepted.
    pub fn accepts_legacy(&self) -> bool {
        self.tokens.as_ref().is_none_or(Tokens::accepts_legacy)
    }

    /// The token and secret set, when a secret is configured.
    pub fn tokens(&self) -> Option<&Tokens<C>> {
        self.tokens.as_ref()
    }

    /// `getToken`: a browser token in the configured format.
    pub fn mint_browser(&self, plaintext: &Plaintext) -> Result<String> {
        let tokens = self.tokens.as_ref().ok_or(Error::NoSecret)?;
        match self.mint_format {
            Format::V1 => tokens.mint(plaintext, Scope::Browser),
            Format::Legacy => tokens.mint_legacy(plaintext),
        }
    }

    /// `getPublishToken`: a v1 token for the publish API, good for every room of the
    /// space for [`PUBLISH_TTL_SECS`] (always v1: legacy tokens carry no scope).
    pub fn mint_publish(&self, plaintext: &Plaintext) -> Result<String> {
        let tokens = self.tokens.as_ref().ok_or(Error::NoSecret)?;
        tokens.mint_with_ttl(plaintext, Scope::Publish, PUBLISH_TTL_SECS)
    }

    /// The token `publish()` sends: a v1 publish token bound to one room (`rom`), for
    /// [`PUBLISH_CALL_TTL_SECS`].
    pub fn mint_publish_for_room(&self, plaintext: &Plaintext, room: &Room) -> Result<String> {
        let tokens = self.tokens.as_ref().ok_or(Error::NoSecret)?;
        tokens.mint_for_room(plaintext, Scope::Publish, room, PUBLISH_CALL_TTL_SECS)
    }

    /// The token `presence()` sends: a v1 presence token bound to one room (`rom`), for
    /// [`PUBLISH_CALL_TTL_SECS`]: it reads who is in that room and nothing else.
    pub fn mint_presence_for_room(&self, plaintext: &Plaintext, room: &Room) -> Result<String> {
        let tokens = self.tokens.as_ref().ok_or(Error::NoSecret)?;
        tokens.mint_for_room(plaintext, Scope::Presence, room, PUBLISH_CALL_TTL_SECS)
    }

    /// The URL `presence()` asks: the publish API's address with `/presence` for
    /// `/publish` (the same listener serves both).
    pub fn presence_url(&self) -> Option<String> {
        let url = self.publish_url()?;
        Some(format!("{}/presence", url.strip_suffix("/publish")?))
    }

    /// Where `publish()` posts, and why: `websocket_publish_url` when it is set, else
    /// the address derived from `websocket_url`.
    pub fn publish_endpoint(&self) -> PublishEndpoint {
        let Some(url) = self.url() else {
            return PublishEndpoint::Off;
        };
        match &self.publish_target {
            PublishTarget::Set(set) => PublishEndpoint::Configured(set.clone()),
            PublishTarget::Refused => PublishEndpoint::Invalid,
            PublishTarget::Derived => {
                let path = url.path().split(['?', '#']).next().unwrap_or("");
                let path = path.trim_end_matches('/');
                PublishEndpoint::Derived(match self.proxyport() {
                    Some(port) => format!("http://{}:{port}{path}/publish", url.host()),
                    None => format!(
                        "{}://{}:{}{path}/publish",
                        http_scheme(url),
                        url.host(),
                        url.port()
                    ),
                })
            }
        }
    }

    /// The URL `publish()` posts to, when it may post: `websocket_publish_url` (with
    /// `/publish`) when it is set and usable; when it is not set, derived from
    /// `websocket_url`: with a proxyport, the daemon itself over plain HTTP on that port
    /// (behind the TLS proxy), otherwise `http`/`https` for `ws`/`wss` on the URL's
    /// port, the URL's path kept. `None` when not enabled, or when
    /// `websocket_publish_url` is set to something unusable.
    pub fn publish_url(&self) -> Option<String> {
        match self.publish_endpoint() {
            PublishEndpoint::Configured(url) | PublishEndpoint::Derived(url) => Some(url),
            PublishEndpoint::Invalid | PublishEndpoint::Off => None,
        }
    }

    /// `decodeToken`: verifies a browser token.
    pub fn verify(&self, token: &str, scope: Scope) -> Result<Verified> {
        self.tokens
            .as_ref()
            .ok_or(Error::NoSecret)?
            .verify(token, scope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FixedClock;
    use crate::error::Rejection;

    fn keyring() -> Option<Keyring> {
        Keyring::new(["opensource"]).ok()
    }

    #[test]
    fn enabled_needs_url_and_secret() {
        assert!(Site::new(Some("ws://localhost:2021"), keyring()).enabled());
        assert!(!Site::new(Some("ws://localhost:2021"), None).enabled());
        assert!(!Site::new(Some("xyzzy"), keyring()).enabled());
        assert!(!Site::new(None, keyring()).enabled());
        let off = Site::new(Some("ws://localhost:2021"), None).with_proxyport(Some(8080));
        assert_eq!(
            (off.host(), off.port(), off.proxyport()),
            (None, None, None)
        );
        let on = Site::new(Some("wss://h.example"), keyring()).with_proxyport(Some(8080));
        assert_eq!(
            (on.host(), on.port(), on.proxyport()),
            (Some("h.example"), Some(443), Some(8080))
        );
        let bad_proxy = Site::new(Some("ws://h:1"), keyring()).with_proxyport(Some(70000));
        assert_eq!(bad_proxy.proxyport(), None);
    }

    #[test]
    fn publish_urls() {
        let site = |url: &str, proxy: Option<i64>| {
            Site::new(Some(url), keyring())
                .with_proxyport(proxy)
                .publish_url()
        };
        assert_eq!(
            site("ws://h:2021", None).as_deref(),
            Some("http://h:2021/publish")
        );
        assert_eq!(
            site("wss://h", None).as_deref(),
            Some("https://h:443/publish")
        );
        assert_eq!(
            site("wss://h/sock/", Some(9000)).as_deref(),
            Some("http://h:9000/sock/publish")
        );
        assert_eq!(
            site("ws://[::1]:1", None).as_deref(),
            Some("http://[::1]:1/publish")
        );
        assert_eq!(Site::new(Some("ws://h:1"), None).publish_url(), None);
    }

    #[test]
    fn listen_port_is_the_proxyport_else_the_urls_port() {
        let port = |url: Option<&str>, secret: Option<Keyring>, proxy: Option<i64>| {
            Site::new(url, secret).with_proxyport(proxy).listen_port()
        };
        assert_eq!(port(Some("ws://h:2021"), keyring(), None), Some(2021));
        assert_eq!(port(Some("ws://h:2021"), keyring(), Some(9000)), Some(9000));
        assert_eq!(port(Some("wss://h"), keyring(), None), Some(443));
        assert_eq!(port(Some("ws://h"), keyring(), None), Some(80));
        assert_eq!(
            port(Some("wss://h/sock"), keyring(), Some(8443)),
            Some(8443)
        );
        // A proxyport that is no port number is not set.
        for unusable in [0, -1, 65_536] {
            assert_eq!(
                port(Some("ws://h:2021"), keyring(), Some(unusable)),
                Some(2021)
            );
        }
        // Not enabled: none, whatever the proxyport.
        assert_eq!(port(Some("ws://h:2021"), None, Some(9000)), None);
        assert_eq!(port(Some("xyzzy"), keyring(), Some(9000)), None);
        assert_eq!(port(None, keyring(), None), None);
    }

    #[test]
    fn http_origin_is_scheme_and_host_without_the_port() {
        let origin = |url: &str| {
            Site::new(Some(url), keyring())
                .with_proxyport(Some(9000))
                .http_origin()
        };
        for (url, want) in [
            ("ws://localhost:2021", "http://localhost"),
            ("wss://socket.example.org", "https://socket.example.org"),
            (
                "wss://socket.example.org:8443/sock?x",
                "https://socket.example.org",
            ),
            ("WSS://H.example:443", "https://H.example"),
            ("ws://[::1]:2021", "http://[::1]"),
            ("ws://u:p@h:1/", "http://h"),
        ] {
            assert_eq!(origin(url).as_deref(), Some(want), "{url}");
            // The daemon's default wwwroot for `token mint`, from the same URL.
            let u = WebsocketUrl::parse(url).unwrap();
            assert_eq!(
                format!(
                    "{}://{}",
                    if u.is_secure() { "https" } else { "http" },
                    u.host()
                ),
                want
            );
        }
        assert_eq!(Site::new(Some("ws://h:1"), None).http_origin(), None);
        // Browsers take http(s) URLs in `new WebSocket`; so does the site.
        assert_eq!(
            Site::new(Some("https://h:1"), keyring())
                .http_origin()
                .as_deref(),
            Some("https://h")
        );
        assert_eq!(Site::new(Some("ftp://h:1"), keyring()).http_origin(), None);
    }

    #[test]
    fn format_ttl_and_legacy_switch() {
        let p = Plaintext::new("https://w", "1", None, None).unwrap();
        let site = Site::new(Some("ws://h:1"), keyring())
            .with_clock(FixedClock(1000))
            .with_ttl(Some(-5))
            .with_token_format(Some("legacy"))
            .with_accept_legacy(false);
        assert_eq!(site.ttl(), DEFAULT_TTL_SECS);
        let legacy = site.mint_browser(&p).unwrap();
        assert!(!legacy.contains('.'));
        assert!(site.verify(&legacy, Scope::Browser).is_err());
        let site = site
            .with_accept_legacy(true)
            .with_token_format(Some("jwt"))
            .with_ttl(Some(0));
        assert_eq!(site.verify(&legacy, Scope::Browser).unwrap().plaintext, p);
        let v1 = site.mint_browser(&p).unwrap();
        assert_eq!(site.verify(&v1, Scope::Browser).unwrap().expires_at, None);
        assert!(site
            .verify(&site.mint_publish(&p).unwrap(), Scope::Publish)
            .is_ok());
        assert_eq!(
            Site::new(None, None).mint_browser(&p).unwrap_err(),
            Error::NoSecret
        );
    }

    #[test]
    fn websocket_publish_url_replaces_the_derived_url() {
        let site = |setting: CfgString<'_>| {
            Site::new(Some("wss://public.example"), keyring())
                .with_proxyport(Some(9000))
                .with_publish_url(setting)
        };
        for (set, want) in [
            ("http://127.0.0.1:2021", "http://127.0.0.1:2021/publish"),
            (
                "https://notify.internal:2021/sock",
                "https://notify.internal:2021/sock/publish",
            ),
            ("http://[::1]:2021", "http://[::1]:2021/publish"),
            ("http://[fd00::1]/n/", "http://[fd00::1]/n/publish"),
            ("http://10.0.0.5:2021/", "http://10.0.0.5:2021/publish"),
            (
                "http://10.0.0.5:2021/publish",
                "http://10.0.0.5:2021/publish",
            ),
            ("https://h/a/publish/", "https://h/a/publish"),
        ] {
            let site = site(CfgString::Str(set));
            assert_eq!(site.publish_url().as_deref(), Some(want), "{set:?}");
            assert_eq!(
                site.publish_endpoint(),
                PublishEndpoint::Configured(want.to_owned())
            );
        }
        for bad in [
            "",
            "ftp://h:21",
            "ws://127.0.0.1:2021",
            "http://",
            "http://:2021",
            "127.0.0.1:2021",
            "notify.internal",
            "/publish",
            "http://u:secret@h",
            "http://h/?x",
        ] {
            let site = site(CfgString::Str(bad));
            assert_eq!(site.publish_url(), None, "{bad:?}");
            assert_eq!(site.publish_endpoint(), PublishEndpoint::Invalid, "{bad:?}");
        }
        assert_eq!(site(CfgString::Other).publish_url(), None);
        assert_eq!(
            site(CfgString::Other).publish_endpoint(),
            PublishEndpoint::Invalid
        );
        // Not set: derived, as before.
        for unset in [CfgString::Unset, None.into()] {
            assert_eq!(
                site(unset).publish_endpoint(),
                PublishEndpoint::Derived("http://public.example:9000/publish".to_owned())
            );
        }
        let set = Site::new(Some("ws://h:1"), keyring()).with_publish_url(Some("http://i:2"));
        assert_eq!(set.publish_url().as_deref(), Some("http://i:2/publish"));
        // Not enabled: off, whatever websocket_publish_url says.
        for off in [
            Site::new(Some("xyzzy"), keyring()).with_publish_url(Some("http://i:2")),
            Site::new(Some("ws://h:1"), None).with_publish_url(Some("http://i:2")),
        ] {
            assert_eq!(off.publish_endpoint(), PublishEndpoint::Off);
            assert_eq!(off.publish_url(), None);
        }
        // The last setting wins; settings survive a change of clock.
        let site = site(CfgString::Other)
            .with_publish_url(Some("http://i:2"))
            .with_clock(FixedClock(5));
        assert_eq!(site.publish_url().as_deref(), Some("http://i:2/publish"));
    }

    #[test]
    fn a_publish_call_token_is_bound_to_its_room_and_short_lived() {
        let p = Plaintext::new("https://w", "1", Some("2"), Some("3")).unwrap();
        let site = Site::new(Some("ws://h:1"), keyring())
            .with_clock(FixedClock(1000))
            .with_ttl(Some(5));
        let room = Room::new("grades").unwrap();
        let v = site
            .verify(
                &site.mint_publish_for_room(&p, &room).unwrap(),
                Scope::Publish,
            )
            .unwrap();
        assert_eq!(v.plaintext, p);
        assert_eq!(v.room.as_ref(), Some(&room));
        assert_eq!(
            (v.issued_at, v.expires_at),
            (Some(1000), Some(1000 + PUBLISH_CALL_TTL_SECS as i64))
        );
        assert!(v.clone().for_room(&room).is_ok());
        for other in ["", "Grades", "grades ", "other"] {
            assert_eq!(
                v.clone().for_room(&Room::new(other).unwrap()).unwrap_err(),
                Error::InvalidToken(Rejection::Room),
                "{other:?}"
            );
        }
        // getPublishToken: the whole space, 300 s, any room.
        let whole = site
            .verify(&site.mint_publish(&p).unwrap(), Scope::Publish)
            .unwrap();
        assert_eq!(whole.room, None);
        assert_eq!(whole.expires_at, Some(1000 + PUBLISH_TTL_SECS as i64));
        assert!(whole.for_room(&Room::new("any").unwrap()).is_ok());
        // Bound to the default room: only the default room.
        let default = site
            .verify(
                &site.mint_publish_for_room(&p, &Room::default()).unwrap(),
                Scope::Publish,
            )
            .unwrap();
        assert!(default.clone().for_room(&Room::default()).is_ok());
        assert!(default.for_room(&room).is_err());
        // A room-bound publish token is still no browser token.
        assert_eq!(
            site.verify(
                &site.mint_publish_for_room(&p, &room).unwrap(),
                Scope::Browser
            )
            .unwrap_err(),
            Error::InvalidToken(Rejection::Scope)
        );
        assert_eq!(
            Site::new(None, None)
                .mint_publish_for_room(&p, &room)
                .unwrap_err(),
            Error::NoSecret
        );
    }
}
