//! As a browser: a token minted here opens a socket at `websocket_url` (101), a message
//! sent on one socket reaches another of the room, and `WebSocket::publish()` reaches
//! the socket. A refusal is told apart: clock, origin, secret, proxy, legacy-only daemon.

use std::time::Duration;

use tsugi_notify_core::PublishEndpoint;

use super::daemon::{Clock, DaemonView};
use super::{random_hex, Ctx};
use crate::net::{self, Refused, Ws};
use crate::report::Report;

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

impl Ctx<'_> {
    /// The socket URL a browser opens for `token`.
    fn socket_url(&self, token: &str) -> String {
        format!(
            "{}/notify?token={}&room={}",
            self.site.socket_base,
            enc(token),
            enc(self.room)
        )
    }

    fn open(&self, token: &str) -> Result<Ws, Refused> {
        net::open(
            &self.socket_url(token),
            self.site.origin.as_deref(),
            self.opts.timeout,
            &self.opts.trust,
        )
    }

    /// A refusal's body as it may be printed: short, and never anything that could
    /// be the request echoed back (with its token).
    fn shown(&self, body: &str) -> String {
        let tokens = [self.probe.token(), self.probe.legacy_token()];
        let echoes = body.contains("token")
            || tokens
                .iter()
                .flatten()
                .any(|t| !t.is_empty() && body.contains(*t));
        if body.is_empty() {
            String::new()
        } else if echoes || body.len() > 100 {
            " (its answer not shown)".into()
        } else {
            format!(" {body}")
        }
    }
}

pub(super) fn check(r: &mut Report, cx: &Ctx, daemon: &DaemonView) {
    let t = cx.opts.timeout;
    let Some(token) = cx.probe.token() else {
        r.fail(
            "socket.v1",
            "WebSocket::getToken() gave no token",
            "check $CFG->websocket_secret",
        );
        return;
    };
    let base = &cx.site.socket_base;
    let v1 = token.contains('.');
    let id = if v1 { "socket.v1" } else { "socket.legacy" };
    let mut a = match cx.open(token) {
        Ok(ws) => {
            r.ok(
                id,
                format!("a token minted here opens a socket at {base}/notify (101)"),
            );
            ws
        }
        Err(why) => return refused(r, cx, id, why, daemon.clock),
    };

    // Browser to browser: one socket's message reaches another of the same room.
    let nonce = format!("tsugi-notify-doctor relay {}", random_hex());
    let relayed = match cx.open(token) {
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
    } else if v1 && legacy_relays(cx, t) {
        r.fail(
            "relay",
            "v1 sockets open but nothing reaches them, while legacy-token sockets are relayed: the daemon knows \
             only legacy tokens (an old rachet.php)",
            "stop rachet.php and run tsugi-notifyd on its port; until then set $CFG->websocket_token_format = \
             'legacy' on every server with the extension",
        );
    } else {
        r.fail(
            "relay",
            "nothing sent on one socket reached another socket of the same room",
            "the daemon at websocket_url must be tsugi-notifyd (and, with several nodes, all of them share [redis])",
        );
    }
    publish(r, cx, &mut a);
    net::close(a);
}

/// The socket was refused: say why, as far as can be told from here.
fn refused(r: &mut Report, cx: &Ctx, id: &'static str, why: Refused, clock: Clock) {
    let base = &cx.site.socket_base;
    let origin = cx.site.origin.as_deref().unwrap_or("this site");
    match why {
        Refused::Status(403, body) if body.contains("origin not allowed") => r.fail(
            id,
            format!("the daemon refuses sockets from pages of {origin} (403 origin not allowed)"),
            format!("add {origin} to the daemon's allowed_origins"),
        ),
        Refused::Status(403, body) => {
            let body = cx.shown(&body);
            let (what, fix) = match clock {
                Clock::Ahead => (
                    format!("the daemon refused a token minted here (403{body}): this server's clock is ahead of the daemon's (see clock)"),
                    "fix the clocks (NTP), or raise clock_skew_secs on the daemon",
                ),
                Clock::Unknown => (
                    format!("the daemon refused a token minted here (403{body}); its clock could not be read, so: the secret differs, or this server's clock is ahead of the daemon's"),
                    "compare $CFG->websocket_secret with the daemon's secret, and `date -u` on both machines",
                ),
                _ if legacy_opens(cx) => (
                    format!("the daemon refused a v1 token minted here (403{body}) but took a legacy one: the secret agrees, the v1 token does not pass"),
                    "on the daemon host, `tsugi-notifyd --config FILE token verify TOKEN` with a token from a page says why",
                ),
                _ => (
                    format!("the daemon refused a fresh token minted here (403{body}) and the clocks agree: the secret differs"),
                    "make the daemon's secret (/etc/tsugi-notify/secret, or secret in tsugi-notifyd.toml) the same as \
                     $CFG->websocket_secret, and restart it",
                ),
            };
            r.fail(id, what, fix);
        }
        Refused::Status(404, body) => r.fail(
            id,
            format!("{base}/notify is not found (404{})", cx.shown(&body)),
            "the proxy must pass /notify (with the Upgrade headers) to the daemon; see the README's nginx example",
        ),
        Refused::Status(s @ (429 | 503), body) => r.warn(
            id,
            format!("the daemon is busy or full ({s}{})", cx.shown(&body)),
            "see max_connections in the daemon's settings",
        ),
        Refused::Status(s, body) => r.fail(
            id,
            format!("the socket at {base}/notify is refused ({s}{})", cx.shown(&body)),
            "the address must reach tsugi-notifyd's /notify (directly or through a proxy passing the Upgrade headers)",
        ),
        Refused::Network(e) => r.fail(
            id,
            format!("no socket at {base}/notify: {e}"),
            "check websocket_url and the proxy in front of the daemon",
        ),
    }
}

/// Whether the daemon opens a socket for the legacy token.
fn legacy_opens(cx: &Ctx) -> bool {
    cx.probe
        .legacy_token()
        .is_some_and(|t| cx.open(t).map(net::close).is_ok())
}

/// Two sockets with legacy tokens: does one's message reach the other?
fn legacy_relays(cx: &Ctx, t: Duration) -> bool {
    let Some(legacy) = cx.probe.legacy_token() else {
        return false;
    };
    let (Ok(mut a), Ok(mut b)) = (cx.open(legacy), cx.open(legacy)) else {
        return false;
    };
    let nonce = format!("tsugi-notify-doctor legacy {}", random_hex());
    let got = net::relay(Some(&mut a), &mut b, &nonce, t);
    net::close(a);
    net::close(b);
    got
}

/// Server to browser: `WebSocket::publish()` from this PHP reaches the socket `a`.
fn publish(r: &mut Report, cx: &Ctx, a: &mut Ws) {
    let (endpoint, how) = match &cx.site.publish {
        PublishEndpoint::Configured(u) => (u.clone(), "websocket_publish_url"),
        PublishEndpoint::Derived(u) => (u.clone(), "derived from websocket_url"),
        PublishEndpoint::Invalid => {
            r.fail(
                "publish",
                "$CFG->websocket_publish_url is set but is not an http:// or https:// URL with a host: publish() \
                 answers false",
                "write it as http://127.0.0.1:2021 (the daemon as this server reaches it), or unset it",
            );
            return;
        }
        PublishEndpoint::Off => {
            r.skip("publish", "notifications are off");
            return;
        }
    };
    let message = format!("tsugi-notify-doctor publish {}", random_hex());
    let published = cx.opts.php.probe(
        &cx.opts.config,
        &["publish", cx.room, &message],
        cx.probe.load,
    );
    match published.map(|q| q.published) {
        Ok(Some(true)) if net::wait_for(a, &message, cx.opts.timeout) => r.ok(
            "publish",
            format!("WebSocket::publish() posted to {endpoint} ({how}) and the socket received it"),
        ),
        Ok(Some(true)) => r.fail(
            "publish",
            format!("WebSocket::publish() to {endpoint} ({how}) was taken, but the socket did not receive it"),
            "the daemon publish() reaches is not the one browsers reach: point websocket_publish_url at the same \
             daemon, or give every node the same [redis]",
        ),
        Ok(None) => r.skip(
            "publish",
            "this Tsugi\\Core\\WebSocket has no publish() (tsugi-php's class)",
        ),
        // A daemon with tls_cert speaks only TLS on its port: an old http:// address of
        // it is the likely cause.
        Ok(Some(false)) if endpoint.starts_with("http://") && cx.site.url.is_secure() => r.fail(
            "publish",
            format!("WebSocket::publish() to {endpoint} ({how}) answered false"),
            "a daemon serving wss:// itself (tls_cert) answers only TLS on its port: make \
             $CFG->websocket_publish_url https:// with the certificate's name, or unset it",
        ),
        Ok(Some(false)) => r.fail(
            "publish",
            format!("WebSocket::publish() to {endpoint} ({how}) answered false"),
            "set $CFG->websocket_publish_url to the daemon as this server reaches it (e.g. http://127.0.0.1:2021; \
             with websocket_proxyport set, publish() posts to the proxyport on websocket_url's host)",
        ),
        Err(_) => r.fail(
            "publish",
            "PHP stopped while calling WebSocket::publish()",
            "run the doctor again; see PHP's error log",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(enc("a+b/c="), "a%2Bb%2Fc%3D");
        assert_eq!(enc("room 1&x"), "room%201%26x");
    }
}
