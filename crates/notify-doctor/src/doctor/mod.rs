//! The checks, in the order an admin would fix things: the extension
//! ([`extension`]), the config ([`site`]), the daemon and the clocks ([`daemon`]), then a
//! real socket, a relayed message and a `publish()` ([`socket`]).

mod daemon;
mod extension;
mod site;
mod socket;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::php::{Php, Probe};
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
    /// Whom to trust over TLS (`--ca-file`, else the public CAs).
    pub trust: crate::net::Trust,
}

/// The extension's name in `extension=` lines and `phpenmod`.
const EXT: &str = "tsugi_websocket";

/// What every check after the config's may use.
struct Ctx<'a> {
    opts: &'a Options,
    probe: &'a Probe,
    site: &'a site::SiteView,
    /// The doctor's room, random for each run.
    room: &'a str,
}

pub fn run(opts: &Options) -> Report {
    let mut r = Report::default();
    let room = format!("tsugi-notify-doctor-{}", random_hex());
    let Some(probe) = extension::check(&mut r, opts, &room) else {
        return r;
    };
    extension::web_sapis(&mut r, opts, &probe);
    let Some(site) = site::check(&mut r, &probe) else {
        return r;
    };
    let cx = Ctx {
        opts,
        probe: &probe,
        site: &site,
        room: &room,
    };
    let daemon = daemon::check(&mut r, &cx);
    if daemon.reachable {
        socket::check(&mut r, &cx, &daemon);
    } else {
        r.skip("socket.v1", "the daemon is not reachable");
    }
    r
}

/// 64 random bits in hex (std's randomly keyed hasher, fed the time and pid).
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

/// A JSON string or number as text.
fn text(v: &Option<serde_json::Value>) -> Option<String> {
    match v {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}
