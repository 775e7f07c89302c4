//! The daemon: `/healthz` at the URL and at the proxyport (is it tsugi-notifyd, is its
//! backplane up), and its clock against this server's as a token's `iat` shows it.

use tsugi_notify_core::PUBLISH_CALL_TTL_SECS;

use super::Ctx;
use crate::net::{self, Answer};
use crate::report::Report;

/// How this server's clock stands with the daemon's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Clock {
    /// No tsugi-notifyd `/healthz` answered: its time is not known.
    Unknown,
    /// Within 2 s.
    Agrees,
    /// Apart, but within the daemon's leeway.
    Apart,
    /// Ahead by more than the leeway: the daemon refuses every v1 token from here.
    Ahead,
    /// So far behind that publish tokens arrive expired.
    Behind,
}

pub(super) struct DaemonView {
    /// Something answered at the URL's host and port.
    pub reachable: bool,
    pub clock: Clock,
}

pub(super) fn check(r: &mut Report, cx: &Ctx) -> DaemonView {
    let url = &cx.site.url;
    let base = format!(
        "{}://{}:{}",
        if url.is_secure() { "https" } else { "http" },
        url.host(),
        url.port()
    );
    let mut reachable = true;
    let mut at_url = None;
    match net::get(&format!("{base}/healthz"), cx.opts.timeout, &cx.opts.trust) {
        Ok(a) => {
            health(r, "daemon.url", &base, &a);
            at_url = Some(a);
        }
        Err(e) => {
            reachable = false;
            // ureq names TLS failures in its message; nothing else says "certificate".
            let tls = url.is_secure()
                && ["certificate", "tls", "TLS", "handshake"]
                    .iter()
                    .any(|w| e.contains(w));
            if tls {
                r.fail(
                    "daemon.url",
                    format!("TLS with {} failed: {e}", url.host()),
                    format!(
                        "the certificate on port {} must be valid for {} and from a CA browsers trust (a private \
                         CA: give it with --ca-file)",
                        url.port(),
                        url.host()
                    ),
                );
            } else {
                r.fail(
                    "daemon.url",
                    format!("nothing answers at {}:{}: {e}", url.host(), url.port()),
                    "start the daemon (`systemctl status tsugi-notifyd`), or make websocket_url's port the one it \
                     (or its proxy) listens on",
                );
            }
        }
    }
    let mut at_proxyport = None;
    if let Some(pp) = cx.site.proxyport {
        let pbase = format!("http://{}:{pp}", url.host());
        match net::get(&format!("{pbase}/healthz"), cx.opts.timeout, &cx.opts.trust) {
            Ok(a) => {
                health(r, "daemon.proxyport", &pbase, &a);
                at_proxyport = Some(a);
            }
            Err(e) => r.warn(
                "daemon.proxyport",
                format!(
                    "nothing answers at {}:{pp} (websocket_proxyport): {e}",
                    url.host()
                ),
                "the daemon should listen on websocket_proxyport behind the proxy (fine to ignore if a firewall \
                 keeps this server out)",
            ),
        }
    }
    // The daemon's own clock: the proxyport reaches it directly; a proxy in front of the
    // URL passes the header on (its Date would be the proxy's).
    let daemon = [at_proxyport.as_ref(), at_url.as_ref()]
        .into_iter()
        .flatten()
        .filter(|a| is_tsugi(a))
        .find_map(|a| Some((a.daemon_time?, a.daemon_skew?)));
    let clock = clock(r, cx, daemon);
    DaemonView { reachable, clock }
}

fn is_tsugi(a: &Answer) -> bool {
    a.status == 200 && a.body.starts_with("ok")
}

fn health(r: &mut Report, id: &'static str, base: &str, a: &Answer) {
    if !is_tsugi(a) {
        r.note(
            id,
            format!(
                "{base}/healthz answers {}: not tsugi-notifyd's health check (a proxy passing only /notify and \
                 /publish, or another server such as rachet.php)",
                a.status
            ),
            None,
        );
        return;
    }
    match a.body.lines().find_map(|l| l.strip_prefix("backplane: ")) {
        Some("down") => r.warn(
            id,
            format!(
                "tsugi-notifyd answers at {base}, but its Redis backplane is down: messages reach only that node's \
                 browsers"
            ),
            "check the daemon's [redis] url and the redis-server it names (the daemon's log says why)",
        ),
        Some(state) => r.ok(
            id,
            format!("tsugi-notifyd answers at {base} (backplane {state})"),
        ),
        None => r.ok(
            id,
            format!("tsugi-notifyd answers at {base} (one node, no backplane)"),
        ),
    }
}

/// This server's clock (the token's `iat`) against the daemon's, judged by the
/// daemon's own `clock_skew_secs`.
fn clock(r: &mut Report, cx: &Ctx, daemon: Option<(i64, u64)>) -> Clock {
    let Some((theirs, leeway)) = daemon else {
        r.skip(
            "clock",
            "the daemon's time is unknown (no answer from tsugi-notifyd's /healthz)",
        );
        return Clock::Unknown;
    };
    let Some(here) = cx.probe.token_iat.or(cx.probe.time) else {
        r.skip("clock", "this server's time is unknown");
        return Clock::Unknown;
    };
    let ahead = here.saturating_sub(theirs);
    let leeway = i64::try_from(leeway).unwrap_or(i64::MAX);
    let ntp =
        "keep both clocks on NTP (`timedatectl set-ntp true`; `chronyc tracking` shows the offset)";
    if ahead > leeway {
        r.fail(
            "clock",
            format!(
                "this server's clock is {ahead} s ahead of the daemon's, more than its clock_skew_secs ({leeway}): \
                 the daemon refuses every v1 token minted here"
            ),
            format!("{ntp}; meanwhile raise clock_skew_secs on the daemon"),
        );
        return Clock::Ahead;
    }
    let behind = ahead.saturating_neg();
    let publish_life = i64::try_from(PUBLISH_CALL_TTL_SECS)
        .unwrap_or(30)
        .saturating_add(leeway);
    if behind > publish_life {
        r.fail(
            "clock",
            format!(
                "this server's clock is {behind} s behind the daemon's: publish() tokens (valid \
                 {PUBLISH_CALL_TTL_SECS} s) arrive expired"
            ),
            ntp,
        );
        return Clock::Behind;
    }
    if ahead.unsigned_abs() > 2 {
        r.warn(
            "clock",
            format!(
                "the clocks are {} s apart ({}), within the daemon's leeway of {leeway} s",
                ahead.unsigned_abs(),
                if ahead > 0 {
                    "this server ahead"
                } else {
                    "this server behind"
                }
            ),
            ntp,
        );
        Clock::Apart
    } else {
        r.ok(
            "clock",
            format!("this server's clock agrees with the daemon's ({ahead:+} s)"),
        );
        Clock::Agrees
    }
}
