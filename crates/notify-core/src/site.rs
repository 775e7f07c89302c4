//! A Tsugi site's notification settings (`$CFG->websocket_*`), interpreted once, the same
//! way by the PHP extension and the daemon.

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::model::Plaintext;
use crate::secret::Keyring;
use crate::token::{Format, Scope, Tokens, Verified, DEFAULT_TTL_SECS};
use crate::url::WebsocketUrl;

/// Lifetime of publish tokens: they authorize sending to a whole space.
pub const PUBLISH_TTL_SECS: u64 = 300;

/// The JSON body of a publish request.
pub fn publish_body(room: &str, message: &str) -> String {
    serde_json::json!({ "room": room, "message": message }).to_string()
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
    mint_format: Format,
}

impl Site<SystemClock> {
    /// From `websocket_url` (if it is a string) and the secrets (if any are usable).
    pub fn new(url: Option<&str>, keyring: Option<Keyring>) -> Self {
        Site {
            url: url.and_then(WebsocketUrl::parse),
            tokens: keyring.map(Tokens::new),
            proxyport: None,
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
            mint_format: self.mint_format,
        }
    }

    /// `websocket_proxyport`: kept when it is a port number (1 to 65535).
    pub fn with_proxyport(mut self, port: Option<i64>) -> Self {
        self.proxyport = port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0);
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

    /// A short-lived v1 token for the publish API ([`PUBLISH_TTL_SECS`]; always v1:
    /// legacy tokens carry no scope).
    pub fn mint_publish(&self, plaintext: &Plaintext) -> Result<String> {
        let tokens = self.tokens.as_ref().ok_or(Error::NoSecret)?;
        tokens.mint_with_ttl(plaintext, Scope::Publish, PUBLISH_TTL_SECS)
    }

    /// Where a Tsugi server posts to the daemon, when enabled: with a proxyport, the
    /// daemon itself over plain HTTP on that port (behind the TLS proxy); otherwise
    /// `http`/`https` for `ws`/`wss` on the URL's port. The URL's path is kept.
    pub fn publish_url(&self) -> Option<String> {
        let url = self.url()?;
        let path = url.path().split(['?', '#']).next().unwrap_or("");
        let path = path.trim_end_matches('/');
        Some(match self.proxyport() {
            Some(port) => format!("http://{}:{port}{path}/publish", url.host()),
            None => format!(
                "{}://{}:{}{path}/publish",
                if url.is_secure() { "https" } else { "http" },
                url.host(),
                url.port()
            ),
        })
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
    use crate::FixedClock;

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
        assert_eq!(
            publish_body("r", "a\"b"),
            r#"{"message":"a\"b","room":"r"}"#
        );
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
}
