//! The site's config as the extension reads it: notifications on or off, where
//! browsers connect, where `publish()` posts, and the Origin of the site's pages.

use tsugi_notify_core::{CfgString, Keyring, PublishEndpoint, Site, WebsocketUrl};

use super::text;
use crate::php::Probe;
use crate::report::Report;

/// What the checks after this one need of the config.
pub(super) struct SiteView {
    pub url: WebsocketUrl,
    /// Where browsers connect: `ws[s]://host:port/path`, without a query or a trailing `/`.
    pub socket_base: String,
    /// The Origin header of the site's pages (from `wwwroot`).
    pub origin: Option<String>,
    pub proxyport: Option<u16>,
    pub publish: PublishEndpoint,
}

pub(super) fn check(r: &mut Report, p: &Probe) -> Option<SiteView> {
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
                "set $CFG->websocket_url to the daemon's address as browsers reach it, e.g. wss://socket.example.edu",
            ),
            (Some(u), None) => (
                format!(
                    "notifications are off: $CFG->websocket_url '{u}' is not a ws://, wss://, http:// or https:// URL with a host"
                ),
                "write it as wss://host[:port] (or ws:// for a test site)",
            ),
            _ if !cfg.secret_set => (
                "notifications are off: $CFG->websocket_secret is not set".to_owned(),
                "set $CFG->websocket_secret to the daemon's secret",
            ),
            _ => (
                "notifications are off: WebSocket::enabled() is false".to_owned(),
                "check $CFG->websocket_url and $CFG->websocket_secret",
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
    // The proxyport as the extension read it (getProxyPort()).
    let proxyport = p
        .proxyport
        .as_ref()
        .and_then(serde_json::Value::as_u64)
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
    let path = url.path().split(['?', '#']).next().unwrap_or("");
    let socket_base = format!(
        "{}://{}:{}{}",
        if url.is_secure() { "wss" } else { "ws" },
        url.host(),
        url.port(),
        path.trim_end_matches('/')
    );
    // As the extension reports them (what pages put in front of the browser).
    let shown = |v: &Option<serde_json::Value>| text(v).unwrap_or_else(|| "none".into());
    r.ok(
        "config.enabled",
        format!(
            "notifications on: browsers open {socket_base}/notify (getHost {}, getPort {}, getProxyPort {})",
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
        socket_base,
        url,
        proxyport,
    })
}

/// The Origin a browser sends from a page under `wwwroot`: scheme and host in lower
/// case, the port only when it is not the scheme's default, no user info.
fn origin_of(wwwroot: &str) -> Option<String> {
    let (scheme, rest) = wwwroot.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let default = match scheme.as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    let hostport = hostport.strip_suffix(default).unwrap_or(hostport);
    (!hostport.is_empty()).then(|| format!("{scheme}://{}", hostport.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_is_what_a_browser_sends() {
        assert_eq!(
            origin_of("https://Tsugi.Example.edu/tsugi").as_deref(),
            Some("https://tsugi.example.edu")
        );
        assert_eq!(
            origin_of("https://tsugi.example.edu:443/tsugi").as_deref(),
            Some("https://tsugi.example.edu")
        );
        assert_eq!(
            origin_of("http://admin:pw@127.0.0.1:8080").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            origin_of("http://[::1]:80/x").as_deref(),
            Some("http://[::1]")
        );
        assert_eq!(origin_of("tsugi"), None);
        assert_eq!(origin_of("ftp://h"), None);
    }
}
