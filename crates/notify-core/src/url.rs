//! `$CFG->websocket_url`, read the way Tsugi reads it.

/// A parsed `websocket_url` such as `wss://socket.example.org:443`.
///
/// `ws` and `wss` are WebSocket schemes; `http` and `https` are read as `ws` and `wss`,
/// as browsers read them in `new WebSocket(url)`. The port defaults to 80 for `ws` and
/// 443 for `wss`. Anything else (`xyzzy`, `false`, an empty string, a missing host, a
/// port out of range) is not a WebSocket URL, and notifications are then not enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebsocketUrl {
    secure: bool,
    host: String,
    port: u16,
    path: String,
}

impl WebsocketUrl {
    /// Parses a `websocket_url`; `None` when it is not a usable WebSocket URL.
    pub fn parse(url: &str) -> Option<Self> {
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return None;
        }
        let (scheme, rest) = url.split_once("://")?;
        let secure = if scheme.eq_ignore_ascii_case("ws") || scheme.eq_ignore_ascii_case("http") {
            false
        } else if scheme.eq_ignore_ascii_case("wss") || scheme.eq_ignore_ascii_case("https") {
            true
        } else {
            return None;
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        // Userinfo (`user:pass@`) is not part of the host.
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = host_port(hostport)?;
        let port = port.unwrap_or(if secure { 443 } else { 80 });
        Some(WebsocketUrl {
            secure,
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }

    /// True for `wss`.
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// The host as written, an IPv6 literal keeping its brackets (as PHP's `parse_url`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, explicit or the scheme's default.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whatever followed the authority (`/path?query`), usually empty.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// Splits `host[:port]` (the host a name or an IPv6 literal in brackets, the port 1 to
/// 65535; an absent or empty port is `None`). `None` when either is malformed.
fn host_port(hostport: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if hostport.starts_with('[') {
        let close = hostport.find(']')?;
        let (host, after) = hostport.split_at(close + 1);
        let inner = &host[1..close];
        let v6_ok = !inner.is_empty()
            && inner
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
        if !v6_ok {
            return None;
        }
        let port = if after.is_empty() {
            None
        } else {
            Some(after.strip_prefix(':')?)
        };
        (host, port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let host_ok = host.starts_with('[')
        || (!host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')));
    if !host_ok {
        return None;
    }
    let port = match port {
        None | Some("") => None,
        Some(p) if p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            match p.parse::<u16>() {
                Ok(0) | Err(_) => return None,
                Ok(n) => Some(n),
            }
        }
        Some(_) => return None,
    };
    Some((host, port))
}

/// `$CFG->websocket_publish_url`: the daemon's address as the web server reaches it,
/// `http://` or `https://` with a host (a name or an IPv6 literal), an optional port
/// and an optional path. Answers the URL to post to: the path with `/publish` appended
/// (a trailing `/` or `/publish` is not doubled). `None` for anything else, and for a
/// URL with userinfo, a query or a fragment, white space or control characters.
pub(crate) fn publish_endpoint(url: &str) -> Option<String> {
    if url
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#'))
    {
        return None;
    }
    let (scheme, rest) = url.split_once("://")?;
    let scheme = if scheme.eq_ignore_ascii_case("http") {
        "http"
    } else if scheme.eq_ignore_ascii_case("https") {
        "https"
    } else {
        return None;
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.contains('@') {
        return None;
    }
    let (host, port) = host_port(authority)?;
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix("/publish").unwrap_or(path);
    let path = path.trim_end_matches('/');
    Some(match port {
        Some(port) => format!("{scheme}://{host}:{port}{path}/publish"),
        None => format!("{scheme}://{host}{path}/publish"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(url: &str) -> Option<(String, u16)> {
        WebsocketUrl::parse(url).map(|u| (u.host().to_owned(), u.port()))
    }

    #[test]
    fn tsugi_examples() {
        assert_eq!(hp("ws://localhost:2021"), Some(("localhost".into(), 2021)));
        assert_eq!(
            hp("wss://socket.tsugicloud.org:443"),
            Some(("socket.tsugicloud.org".into(), 443))
        );
        assert_eq!(hp("ws://example.org"), Some(("example.org".into(), 80)));
        assert_eq!(hp("wss://example.org/"), Some(("example.org".into(), 443)));
        assert_eq!(
            hp("WSS://Example.org:8443/x?y"),
            Some(("Example.org".into(), 8443))
        );
        assert_eq!(hp("ws://[::1]:2021"), Some(("[::1]".into(), 2021)));
        assert_eq!(hp("ws://[::1]"), Some(("[::1]".into(), 80)));
        assert_eq!(hp("ws://u:p@host:99"), Some(("host".into(), 99)));
    }

    #[test]
    fn http_and_https_are_read_as_ws_and_wss() {
        // Browsers take these in `new WebSocket(url)`; so do we, rather than switching
        // notifications off.
        for (url, secure, port) in [
            ("http://localhost:2021", false, 2021),
            ("http://example.org", false, 80),
            ("HTTPS://socket.example.org", true, 443),
            ("https://socket.example.org:8443/", true, 8443),
        ] {
            let u = WebsocketUrl::parse(url).expect(url);
            assert_eq!((u.is_secure(), u.port()), (secure, port), "{url}");
        }
    }

    #[test]
    fn not_websocket_urls() {
        for bad in [
            "",
            "xyzzy",
            "false",
            "1",
            "ws://",
            "ws://:2021",
            "http://",
            "https://:443",
            "ftp://localhost:2021",
            "localhost:2021",
            "ws://host:0",
            "ws://host:65536",
            "ws://host:-1",
            "ws://host:12ab",
            "ws://[::1",
            "ws://[zz]:1",
            "ws://[::1]x",
            "ws://ho st:1",
            " ws://host:1",
            "ws://host:1\n",
            "ws://h%41:1",
            "ws://host:000000000080",
        ] {
            assert_eq!(WebsocketUrl::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn publish_endpoints() {
        for (url, want) in [
            ("http://127.0.0.1:2021", "http://127.0.0.1:2021/publish"),
            (
                "https://notify.internal:2021/sock",
                "https://notify.internal:2021/sock/publish",
            ),
            ("HTTP://h", "http://h/publish"),
            ("https://h.example", "https://h.example/publish"),
            ("http://[::1]:2021", "http://[::1]:2021/publish"),
            ("http://[fd00::5]", "http://[fd00::5]/publish"),
            ("http://h:2021/", "http://h:2021/publish"),
            ("http://h:2021//", "http://h:2021/publish"),
            ("http://h:2021/publish", "http://h:2021/publish"),
            ("http://h:2021/publish/", "http://h:2021/publish"),
            ("http://h/sock/publish", "http://h/sock/publish"),
            ("http://h/sock/", "http://h/sock/publish"),
            ("http://h/publisher", "http://h/publisher/publish"),
            ("http://h:/x", "http://h/x/publish"),
        ] {
            assert_eq!(publish_endpoint(url).as_deref(), Some(want), "{url:?}");
        }
        for bad in [
            "",
            "ftp://h:21",
            "ws://h:2021",
            "wss://h",
            "file:///tmp/sock",
            "http://",
            "http:///publish",
            "http://:2021",
            "http:/h",
            "h:2021",
            "127.0.0.1:2021",
            "/publish",
            "http://h:0",
            "http://h:65536",
            "http://h:x",
            "http://[::1",
            "http://[zz]:1",
            "http://ho st",
            " http://h",
            "http://h\n",
            "http://u:p@h",
            "http://h/?a=1",
            "http://h#x",
            "http://h%41",
        ] {
            assert_eq!(publish_endpoint(bad), None, "{bad:?}");
        }
    }
}
