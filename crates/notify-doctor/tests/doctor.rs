//! The doctor against real parts: a tsugi-notifyd in this process, PHP running the built
//! extension on a config.php written here, and the doctor's own binary. The verdicts of
//! the README's troubleshooting table, each produced by the fault it names (not here:
//! a 404/429/503 at /notify, a publish taken by another daemon, a config slower than
//! 30 s, and an extension installed but off for the CLI, which needs the system's PHP
//! changed). TLS: a daemon on wss:// with a certificate of a test CA.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../notifyd/tests/ca/mod.rs"]
mod ca;
#[path = "../../notifyd/tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use common::{free_port, on_wss, start, SECRET};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;
use tsugi_notify_core::{Format, Keyring, Scope, Tokens};
use tsugi_notifyd::{Config, Running};

const WWWROOT: &str = "https://tsugi.example.edu/tsugi";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn built(path: &str, how: &str) -> String {
    let so = root().join(path);
    assert!(so.exists(), "build the extension first ({how})");
    so.canonicalize().unwrap().display().to_string()
}

fn release_ext() -> String {
    built("target/release/libtsugi_websocket.so", "make ext")
}

fn testclock_ext() -> String {
    built(
        "target/testclock/libtsugi_websocket.so",
        "make ext-testclock",
    )
}

/// A scratch directory for one test, removed when dropped (a failed test's too).
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("notify-doctor-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// A Tsugi config.php setting `$CFG` (each value a PHP expression).
fn config(dir: &Path, settings: &[(&str, String)]) -> PathBuf {
    let mut php = String::from("<?php\n$CFG = new stdClass;\n");
    php.push_str(&format!("$CFG->wwwroot = '{WWWROOT}';\n"));
    for (k, v) in settings {
        php.push_str(&format!("$CFG->{k} = {v};\n"));
    }
    let file = dir.join("config.php");
    std::fs::write(&file, php).unwrap();
    file
}

/// A conf.d directory `name` under `parent` holding `files` (name, content).
fn conf_d(parent: &Path, name: &str, files: &[(&str, String)]) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for (file, text) in files {
        std::fs::write(dir.join(file), text).unwrap();
    }
    dir
}

fn q(s: &str) -> String {
    format!("'{s}'")
}

/// The settings of a site whose daemon is at `port`.
fn site(port: u16, secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("websocket_url", q(&format!("ws://127.0.0.1:{port}"))),
        ("websocket_secret", q(secret)),
    ]
}

struct Run {
    code: i32,
    out: String,
}

impl Run {
    /// The line of check `id`: `VERDICT ID: what`.
    fn line(&self, id: &str) -> &str {
        self.out
            .lines()
            .find(|l| {
                l.split_once(' ')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with(&format!("{id}: ")))
            })
            .unwrap_or_else(|| panic!("no {id} line in:\n{}", self.out))
    }

    fn verdict(&self, id: &str) -> &str {
        self.line(id).split_whitespace().next().unwrap()
    }

    /// The fix printed under check `id`.
    fn fix(&self, id: &str) -> &str {
        let line = self.line(id);
        let mut lines = self.out.lines().skip_while(|l| *l != line).skip(1);
        lines
            .next()
            .and_then(|l| l.trim_start().strip_prefix("fix: "))
            .unwrap_or_else(|| panic!("no fix under {id} in:\n{}", self.out))
    }

    fn assert(&self, id: &str, verdict: &str, says: &str) {
        assert_eq!(self.verdict(id), verdict, "{id} in:\n{}", self.out);
        assert!(
            self.line(id).contains(says),
            "{id} says {says:?} in:\n{}",
            self.out
        );
    }
}

/// Runs the doctor on `config` with `args` (and the environment `env` for PHP). The
/// tests may run as root (CI does): `--allow-root`.
async fn doctor(config: &Path, args: &[String], env: &[(&str, String)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tsugi-notify-doctor"));
    cmd.arg(config)
        .args(args)
        .args(["--timeout", "3", "--allow-root"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        out: String::from_utf8(out.stdout).unwrap(),
    };
    assert!(
        !run.out.contains(SECRET),
        "the secret is never printed:\n{}",
        run.out
    );
    assert!(
        !run.out.contains("eyJ"),
        "no token is printed:\n{}",
        run.out
    );
    run
}

fn ext_args(ext: String) -> Vec<String> {
    vec!["--extension".into(), ext]
}

async fn daemon() -> Running {
    start(Config::for_loopback(SECRET).unwrap()).await
}

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_right_config_passes_every_check_and_exits_0() {
    let running = daemon().await;
    let dir = scratch("right");
    let cfg = config(&dir, &site(running.addr.port(), SECRET));
    // The web server's PHP (here a conf.d of the test's) loads the extension.
    let fpm = conf_d(
        &dir,
        "fpm",
        &[(
            "20-tsugi_websocket.ini",
            "extension=tsugi_websocket\n".into(),
        )],
    );
    let mut args = ext_args(release_ext());
    args.extend(["--sapi-ini-dir".into(), format!("fpm={}", fpm.display())]);
    let run = doctor(&cfg, &args, &[]).await;
    assert_eq!(run.code, 0, "{}", run.out);
    run.assert("extension.class", "ok", "native class");
    run.assert("extension.web", "ok", "fpm: tsugi_websocket enabled");
    run.assert(
        "config.enabled",
        "ok",
        &format!("getPort {}", running.addr.port()),
    );
    run.assert("daemon.url", "ok", "tsugi-notifyd answers");
    run.assert("clock", "ok", "agrees");
    run.assert("socket.v1", "ok", "(101)");
    run.assert("relay", "ok", "reached another socket");
    run.assert("publish", "ok", "the socket received it");
    assert!(!run.out.contains("\nfail "), "{}", run.out);
    assert!(run.out.contains(" 0 fail, "), "{}", run.out);

    // The same as JSON, for tools.
    let mut json_args = args.clone();
    json_args.push("--json".into());
    let run = doctor(&cfg, &json_args, &[]).await;
    assert_eq!(run.code, 0);
    let v: serde_json::Value = serde_json::from_str(&run.out).unwrap();
    assert_eq!(v["ok"], true);
    let checks = v["checks"].as_array().unwrap();
    let publish = checks.iter().find(|c| c["id"] == "publish").unwrap();
    assert_eq!(publish["verdict"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_named_as_such() {
    let running = daemon().await;
    let dir = scratch("secret");
    let cfg = config(&dir, &site(running.addr.port(), "not-the-daemons-secret"));
    let run = doctor(&cfg, &ext_args(release_ext()), &[]).await;
    assert_eq!(run.code, 1, "{}", run.out);
    run.assert("daemon.url", "ok", "tsugi-notifyd answers");
    run.assert("clock", "ok", "agrees");
    run.assert("socket.v1", "fail", "the secret differs");
    assert!(run.fix("socket.v1").contains("websocket_secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_is_down_is_reported_with_its_address() {
    let dir = scratch("down");
    let port = free_port();
    let cfg = config(&dir, &site(port, SECRET));
    let run = doctor(&cfg, &ext_args(release_ext()), &[]).await;
    assert_eq!(run.code, 1, "{}", run.out);
    run.assert(
        "daemon.url",
        "fail",
        &format!("nothing answers at 127.0.0.1:{port}"),
    );
    assert!(run
        .fix("daemon.url")
        .contains("systemctl status tsugi-notifyd"));
    run.assert("socket.v1", "skip", "not reachable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_server_clock_ahead_of_the_daemon_is_measured_and_blamed() {
    let running = daemon().await;
    let dir = scratch("clock");
    let cfg = config(&dir, &site(running.addr.port(), SECRET));
    // The test-clock build mints as if this server's clock were 95 s fast.
    let fast = [("TSUGI_WEBSOCKET_TEST_NOW", (now() + 95).to_string())];
    let run = doctor(&cfg, &ext_args(testclock_ext()), &fast).await;
    assert_eq!(run.code, 1, "{}", run.out);
    let line = run.line("clock");
    assert_eq!(run.verdict("clock"), "fail", "{}", run.out);
    let secs: i64 = line
        .split("clock is ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!((93..=97).contains(&secs), "{line}");
    assert!(line.contains("its clock_skew_secs (60)"), "{line}");
    run.assert("socket.v1", "fail", "clock is ahead");
    assert!(run.fix("clock").contains("NTP"));

    // 30 s fast is within the leeway: a warning, and everything works.
    let slightly = [("TSUGI_WEBSOCKET_TEST_NOW", (now() + 30).to_string())];
    let run = doctor(&cfg, &ext_args(testclock_ext()), &slightly).await;
    assert_eq!(run.code, 0, "{}", run.out);
    run.assert("clock", "warn", "within the daemon's leeway of 60 s");
    run.assert("publish", "ok", "received");

    // The daemon's own clock_skew_secs is what counts (it says it in /healthz): 95 s
    // is within a daemon's 120.
    let mut wide = Config::for_loopback(SECRET).unwrap();
    wide.tokens = wide.tokens.clone().with_leeway(120);
    let running = start(wide).await;
    let cfg = config(&dir, &site(running.addr.port(), SECRET));
    let run = doctor(&cfg, &ext_args(testclock_ext()), &fast).await;
    assert_eq!(run.code, 0, "{}", run.out);
    run.assert("clock", "warn", "within the daemon's leeway of 120 s");
    run.assert("socket.v1", "ok", "(101)");
}

/// A TCP forwarder standing in for the TLS proxy in front of the daemon.
async fn forwarder(to: std::net::SocketAddr) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut out) = TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_the_proxyport_is_checked_and_publish_follows_it() {
    let running = daemon().await;
    let proxy = forwarder(running.addr).await;
    let dir = scratch("proxy");
    let mut settings = site(proxy, SECRET);
    settings.push(("websocket_proxyport", running.addr.port().to_string()));
    let cfg = config(&dir, &settings);
    let run = doctor(&cfg, &ext_args(release_ext()), &[]).await;
    assert_eq!(run.code, 0, "{}", run.out);
    run.assert(
        "config.enabled",
        "ok",
        &format!("getProxyPort {}", running.addr.port()),
    );
    run.assert("daemon.url", "ok", &format!("http://127.0.0.1:{proxy}"));
    run.assert(
        "daemon.proxyport",
        "ok",
        &format!("http://127.0.0.1:{}", running.addr.port()),
    );
    run.assert("socket.v1", "ok", &format!("ws://127.0.0.1:{proxy}/notify"));
    run.assert(
        "publish",
        "ok",
        &format!("http://127.0.0.1:{}/publish", running.addr.port()),
    );

    // A proxyport the daemon does not listen on: publish() posts there and fails.
    let dead = free_port();
    let mut settings = site(proxy, SECRET);
    settings.push(("websocket_proxyport", dead.to_string()));
    let cfg = config(&dir, &settings);
    let run = doctor(&cfg, &ext_args(release_ext()), &[]).await;
    assert_eq!(run.code, 1, "{}", run.out);
    run.assert("daemon.proxyport", "warn", &format!("127.0.0.1:{dead}"));
    run.assert("socket.v1", "ok", "(101)");
    run.assert(
        "publish",
        "fail",
        &format!("http://127.0.0.1:{dead}/publish"),
    );
    assert!(run.fix("publish").contains("websocket_publish_url"));
}

type Rooms = Arc<Mutex<HashMap<(String, String), Vec<mpsc::UnboundedSender<String>>>>>;

/// An old rachet.php as far as a browser can tell: any socket opens, but only sockets
/// with legacy tokens join their space's room (a v1 token stays unattached); messages
/// go to the room's other sockets; a plain request gets 426, and there is no /healthz.
async fn rachet() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let rooms: Rooms = Arc::default();
    let tokens = Tokens::new(Keyring::new([SECRET]).unwrap()).accept_legacy(true);
    let tokens = Arc::new(tokens);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (rooms, tokens) = (rooms.clone(), tokens.clone());
            tokio::spawn(async move { rachet_conn(stream, rooms, tokens).await });
        }
    });
    port
}

#[allow(clippy::result_large_err)] // the handshake callback's type, set by tungstenite
async fn rachet_conn(mut stream: TcpStream, rooms: Rooms, tokens: Arc<Tokens>) {
    let mut buf = vec![0u8; 8192];
    let head = loop {
        let Ok(n) = stream.peek(&mut buf).await else {
            return;
        };
        let seen = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
        if seen.contains("\r\n\r\n") || n == buf.len() {
            break seen;
        }
        if n == 0 {
            return;
        }
        tokio::task::yield_now().await;
    };
    if !head.contains("upgrade: websocket") {
        let _ = stream
            .write_all(
                b"HTTP/1.1 426 No Upgrade Header\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await;
        return;
    }
    let mut query = String::new();
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, |req: &Request, resp: Response| {
        query = req.uri().query().unwrap_or_default().to_owned();
        Ok(resp)
    })
    .await
    else {
        return;
    };
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .map(|v| {
                let mut out = Vec::new();
                let b = v.as_bytes();
                let mut i = 0;
                while i < b.len() {
                    if b[i] == b'%' && i + 2 < b.len() {
                        out.push(
                            u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap(), 16)
                                .unwrap(),
                        );
                        i += 3;
                    } else {
                        out.push(b[i]);
                        i += 1;
                    }
                }
                String::from_utf8(out).unwrap()
            })
    };
    let room = param("room").unwrap_or_default();
    let key = param("token")
        .and_then(|t| tokens.verify(&t, Scope::Browser).ok())
        .filter(|v| v.format == Format::Legacy)
        .map(|v| (v.plaintext.space().to_string(), room));
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    if let Some(key) = &key {
        rooms
            .lock()
            .unwrap()
            .entry(key.clone())
            .or_default()
            .push(tx.clone());
    }
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(Message::text(m)).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(msg)) = source.next().await {
        if let (Message::Text(t), Some(key)) = (msg, &key) {
            for other in rooms.lock().unwrap().get(key).into_iter().flatten() {
                if !other.same_channel(&tx) {
                    let _ = other.send(t.to_string());
                }
            }
        }
    }
    writer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_knows_only_legacy_tokens_is_recognised() {
    let port = rachet().await;
    let dir = scratch("rachet");
    let cfg = config(&dir, &site(port, SECRET));
    let run = doctor(&cfg, &ext_args(release_ext()), &[]).await;
    assert_eq!(run.code, 1, "{}", run.out);
    run.assert("daemon.url", "note", "not tsugi-notifyd's health check");
    run.assert("socket.v1", "ok", "(101)");
    run.assert("relay", "fail", "knows only legacy tokens");
    assert!(run
        .fix("relay")
        .contains("websocket_token_format = 'legacy'"));
    run.assert("publish", "fail", "answered false");

    // With legacy tokens meanwhile, the pages work again (publish() still has nowhere to go).
    let mut settings = site(port, SECRET);
    settings.push(("websocket_token_format", q("legacy")));
    let cfg = config(&dir, &settings);
    let run = doctor(&cfg, &ext_args(release_ext()), &[]).await;
    run.assert("config.tokens", "note", "'legacy'");
    run.assert("socket.legacy", "ok", "(101)");
    run.assert("relay", "ok", "reached another socket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extension_in_the_cli_fpm_and_preload_is_checked() {
    let running = daemon().await;
    let dir = scratch("sapi");
    let cfg = config(&dir, &site(running.addr.port(), SECRET));
    // FPM enables it; Apache's PHP does not; a preload script requires WebSocket.php.
    let preload = dir.join("preload.php");
    std::fs::write(
        &preload,
        "<?php require 'vendor/tsugi/lib/src/Core/WebSocket.php';\n",
    )
    .unwrap();
    let fpm = conf_d(
        &dir,
        "fpm",
        &[(
            "20-tsugi_websocket.ini",
            "extension=tsugi_websocket.so\n".into(),
        )],
    );
    let apache = conf_d(
        &dir,
        "apache2",
        &[(
            "10-opcache.ini",
            format!("opcache.preload={}\n", preload.display()),
        )],
    );
    let mut args = ext_args(release_ext());
    for (name, d) in [("fpm", &fpm), ("apache2", &apache)] {
        args.extend(["--sapi-ini-dir".into(), format!("{name}={}", d.display())]);
    }
    let run = doctor(&cfg, &args, &[]).await;
    assert_eq!(run.code, 0, "warnings only: {}", run.out);
    run.assert("extension.web", "ok", "fpm: tsugi_websocket enabled");
    assert!(
        run.out
            .contains("warn extension.web: apache2: no extension=tsugi_websocket"),
        "{}",
        run.out
    );
    run.assert(
        "extension.preload",
        "warn",
        "preload.php loads tsugi-php's WebSocket.php",
    );

    // A config that requires tsugi-php's class while the extension is loaded.
    let php_class = dir.join("WebSocket.php");
    std::fs::write(&php_class, "<?php namespace Tsugi\\Core; class WebSocket { public static function enabled() { return false; } }\n").unwrap();
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!("require '{}';\n", php_class.display()));
    std::fs::write(&cfg, text).unwrap();
    let run = doctor(&cfg, &ext_args(release_ext()), &[]).await;
    assert_eq!(run.code, 1, "{}", run.out);
    run.assert("config", "fail", "Cannot declare class");
    assert!(run
        .fix("config")
        .contains("phpdismod -s cli tsugi_websocket"));

    // Without the extension, tsugi-php's class is found and named.
    let run = doctor(
        &cfg,
        &[
            "--extension".into(),
            "/nonexistent/tsugi_websocket.so".into(),
        ],
        &[],
    )
    .await;
    run.assert("extension.cli", "fail", "cannot be loaded");
    run.assert("extension.class", "warn", "tsugi-php's PHP class");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_paths_origins_and_a_relative_config_path_are_read_as_a_browser_would() {
    // The daemon takes pages of one origin; wwwroot names it with its default port.
    let mut c = Config::for_loopback(SECRET).unwrap();
    c.allowed_origins = vec!["https://tsugi.example.edu".into()];
    let running = start(c).await;
    let port = running.addr.port();
    let dir = scratch("urls");
    let mut settings = vec![
        (
            "websocket_url",
            q(&format!("http://127.0.0.1:{port}/sock/")),
        ),
        ("websocket_secret", q(SECRET)),
    ];
    settings.push(("wwwroot", q("https://Tsugi.Example.edu:443/tsugi")));
    config(&dir, &settings);
    // Given as a relative path, from the config's directory.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tsugi-notify-doctor"));
    cmd.current_dir(&*dir).arg("config.php").args([
        "--allow-root",
        "--timeout",
        "3",
        "--extension",
        &release_ext(),
    ]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        out: String::from_utf8(out.stdout).unwrap(),
    };
    assert_eq!(run.code, 0, "{}", run.out);
    run.assert(
        "config.enabled",
        "ok",
        &format!("ws://127.0.0.1:{port}/sock/notify"),
    );
    run.assert("socket.v1", "ok", "(101)");
    run.assert(
        "publish",
        "ok",
        &format!("http://127.0.0.1:{port}/sock/publish"),
    );

    // Pages of another origin are refused, and the doctor says which to allow.
    settings.push(("wwwroot", q("https://other.example.edu/tsugi")));
    let cfg = config(&dir, &settings);
    let run = doctor(&cfg, &ext_args(release_ext()), &[]).await;
    assert_eq!(run.code, 1, "{}", run.out);
    run.assert(
        "socket.v1",
        "fail",
        "refuses sockets from pages of https://other.example.edu",
    );
    assert!(run.fix("socket.v1").contains("allowed_origins"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_loading_the_extension_is_a_note_and_root_is_refused() {
    let running = daemon().await;
    let dir = scratch("cli");
    let cfg = config(&dir, &site(running.addr.port(), SECRET));
    // The CLI's ini loads the extension (as the Debian package does for every SAPI).
    let ini = conf_d(
        &dir,
        "conf.d",
        &[(
            "20-tsugi_websocket.ini",
            format!("extension={}\n", release_ext()),
        )],
    );
    let scan = [("PHP_INI_SCAN_DIR", ini.display().to_string())];
    let run = doctor(&cfg, &[], &scan).await;
    assert_eq!(run.code, 0, "{}", run.out);
    run.assert("extension.cli", "note", "loaded for the PHP CLI too");
    assert!(run
        .fix("extension.cli")
        .contains("phpdismod -s cli tsugi_websocket"));
    run.assert("publish", "ok", "received");

    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").unwrap().uid() == 0 {
        let out = Command::new(env!("CARGO_BIN_EXE_tsugi-notify-doctor"))
            .arg(&cfg)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("sudo -u www-data"));
    }
}

/// A hostile server: any socket opens, then gets the head of a 60,000-byte frame and
/// one byte of it a second; a plain request gets its own request line echoed in a 404.
async fn trickler() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(trickle(stream));
        }
    });
    port
}

async fn trickle(mut stream: TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 8192];
    let mut seen = Vec::new();
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&seen).to_string();
    let Some(key) = head.lines().find_map(|l| {
        l.strip_prefix("Sec-WebSocket-Key: ")
            .or_else(|| l.strip_prefix("sec-websocket-key: "))
    }) else {
        let line = head.lines().next().unwrap_or_default().to_owned();
        let _ = stream
            .write_all(
                format!(
                    "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\n\r\n{line}",
                    line.len()
                )
                .as_bytes(),
            )
            .await;
        return;
    };
    let accept =
        tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.trim().as_bytes());
    let _ = stream
        .write_all(
            format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")
                .as_bytes(),
        )
        .await;
    // A text frame of 60,000 bytes (within what the doctor reads), then a byte a second.
    let mut head = vec![0x81u8, 126];
    head.extend_from_slice(&60_000u16.to_be_bytes());
    if stream.write_all(&head).await.is_err() {
        return;
    }
    for _ in 0..120 {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        if stream.write_all(b"x").await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_server_neither_holds_the_doctor_nor_gets_a_token_printed() {
    let port = trickler().await;
    let dir = scratch("hostile");
    let cfg = config(&dir, &site(port, SECRET));
    let started = std::time::Instant::now();
    // The doctor's own deadlines end it; this bound only keeps a broken one from hanging the suite.
    let run = tokio::time::timeout(
        std::time::Duration::from_secs(90),
        doctor(&cfg, &ext_args(release_ext()), &[]),
    )
    .await
    .expect("the doctor ends by its own deadlines");
    assert_eq!(run.code, 1, "{}", run.out);
    run.assert(
        "relay",
        "fail",
        "nothing sent on one socket reached another",
    );
    // The 404 echoing the request (with its token) is not printed.
    assert!(!run.out.contains("token="), "{}", run.out);
    eprintln!(
        "the doctor took {:?} against the trickling server",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_off_no_php_a_slow_clock_and_a_lost_backplane() {
    let dir = scratch("misc");
    // No websocket_url: notifications are off, and nothing more is checked.
    let cfg = config(&dir, &[("websocket_secret", q(SECRET))]);
    let run = doctor(&cfg, &ext_args(release_ext()), &[]).await;
    assert_eq!(run.code, 1, "{}", run.out);
    run.assert("config.enabled", "fail", "websocket_url is not set");
    assert!(!run.out.contains("daemon.url"), "{}", run.out);
    // No PHP where --php says.
    let run = doctor(&cfg, &["--php".into(), "/nonexistent/php".into()], &[]).await;
    assert_eq!(run.code, 1, "{}", run.out);
    run.assert("php", "fail", "cannot run PHP");

    // A daemon whose Redis is gone: it still serves its own browsers, and says so.
    let gone = free_port();
    let running = common::node(common::plain(gone)).await;
    let cfg = config(&dir, &site(running.addr.port(), SECRET));
    // This server's clock 200 s slow: publish() tokens (30 s + 60 s) arrive expired.
    let slow = [("TSUGI_WEBSOCKET_TEST_NOW", (now() - 200).to_string())];
    let run = doctor(&cfg, &ext_args(testclock_ext()), &slow).await;
    assert_eq!(run.code, 1, "{}", run.out);
    run.assert("daemon.url", "warn", "backplane is down");
    let line = run.line("clock");
    assert_eq!(run.verdict("clock"), "fail", "{}", run.out);
    assert!(
        line.contains("s behind the daemon's: publish() tokens"),
        "{line}"
    );
    run.assert("publish", "fail", "answered false");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wss_daemon_whose_certificate_is_not_trusted_is_a_tls_failure() {
    let dir = scratch("wss");
    let test_ca = ca::TestCa::new(&dir.join("ca"));
    let leaf = test_ca.leaf("daemon");
    let c = on_wss(
        Config::for_loopback(SECRET).unwrap(),
        "127.0.0.1",
        &leaf.cert,
        &leaf.key,
        None,
    );
    let running = start(c).await;
    let port = running.addr.port();
    let ca_file = test_ca.ca_file().display().to_string();
    let cfg = config(
        &dir,
        &[
            ("websocket_url", q(&format!("wss://127.0.0.1:{port}"))),
            ("websocket_secret", q(SECRET)),
            ("websocket_ca_file", q(&ca_file)),
        ],
    );
    // A certificate from a CA browsers do not know.
    let run = doctor(&cfg, &ext_args(release_ext()), &[]).await;
    assert_eq!(run.code, 1, "{}", run.out);
    run.assert("daemon.url", "fail", "TLS with 127.0.0.1 failed");
    assert!(run.fix("daemon.url").contains("--ca-file"));
    // A site on a private CA, checked with it: everything over wss:// and https://.
    let mut args = ext_args(release_ext());
    args.extend(["--ca-file".into(), ca_file]);
    let run = doctor(&cfg, &args, &[]).await;
    assert_eq!(run.code, 0, "{}", run.out);
    run.assert("daemon.url", "ok", &format!("https://127.0.0.1:{port}"));
    run.assert("clock", "ok", "agrees");
    run.assert("socket.v1", "ok", &format!("wss://127.0.0.1:{port}/notify"));
    run.assert("relay", "ok", "reached");
    run.assert(
        "publish",
        "ok",
        &format!("https://127.0.0.1:{port}/publish"),
    );
    // An old plain-http publish address of a daemon that now speaks TLS.
    let cfg = config(
        &dir,
        &[
            ("websocket_url", q(&format!("wss://127.0.0.1:{port}"))),
            ("websocket_secret", q(SECRET)),
            (
                "websocket_publish_url",
                q(&format!("http://127.0.0.1:{port}")),
            ),
        ],
    );
    let run = doctor(&cfg, &args, &[]).await;
    assert_eq!(run.code, 1, "{}", run.out);
    run.assert("publish", "fail", "answered false");
    assert!(
        run.fix("publish").contains("answers only TLS"),
        "{}",
        run.out
    );
}
