//! The daemon as a process: flags and config files, the token tools, SIGTERM, logs,
//! and thousands of concurrent connections.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_tsugi-notifyd");

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A daemon on a free loopback port; its stderr is collected.
struct Daemon {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

/// A daemon on loopback, any free port, no metrics listener, the tests' secret.
const LOOPBACK: [&str; 10] = [
    "--url",
    "ws://127.0.0.1:2021",
    "--bind",
    "127.0.0.1",
    "--proxyport",
    "0",
    "--metrics-bind",
    "off",
    "--secret",
    SECRET,
];

impl Daemon {
    /// On loopback with the rate limit lifted, plus `extra`.
    fn start(extra: &[&str]) -> Daemon {
        let unlimited = [
            "--messages-per-second",
            "100000",
            "--burst",
            "100000",
            "--outbound-queue",
            "2000000",
            "--max-connections-per-token",
            "100000",
            "--max-connections-per-user",
            "100000",
        ];
        Daemon::start_with(&[&LOOPBACK[..], &unlimited, extra].concat())
    }

    fn start_with(args: &[&str]) -> Daemon {
        Daemon::start_under(&[], args)
    }

    /// Starts the daemon through a wrapper command (e.g. `prlimit ... --`).
    fn start_under(wrapper: &[&str], args: &[&str]) -> Daemon {
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let mut child = cmd
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening") {
                    if let Some(a) = line.split("addr=").nth(1) {
                        let _ = tx.send(a.split_whitespace().next().unwrap().to_owned());
                    }
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the daemon logs its address")
            .parse()
            .unwrap();
        Daemon { child, addr, log }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Kept for make test's check that no log of the whole run holds a token or secret.
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("daemon-logs");
        let _ = std::fs::create_dir_all(&dir);
        if let Ok(log) = self.log.lock() {
            let _ = std::fs::write(dir.join(format!("{}.log", self.child.id())), log.as_bytes());
        }
    }
}

#[test]
fn check_config_accepts_the_documented_file_and_names_bad_keys() {
    let (code, out, _) = run(&["--config", &fixture("valid.toml"), "--check-config"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("configuration ok") && out.contains("2 configured"),
        "{out}"
    );
    assert!(
        !out.contains("new-secret") && !out.contains("old-secret"),
        "no secret printed"
    );
    for (file, needle) in [
        ("unknown-key.toml", "did you mean `max_connections`"),
        ("bad-type.toml", "burst"),
        ("no-secret.toml", "secret"),
        ("bad-url.toml", "url"),
        ("two-secrets.toml", "only one"),
        ("ping-after-idle.toml", "ping_interval_secs"),
        ("not-toml.toml", "not-toml.toml"),
        ("missing-secret-file.toml", "does-not-exist.txt"),
    ] {
        let (code, _, err) = run(&["--config", &fixture(file), "--check-config"]);
        assert_eq!(code, 2, "{file}: {err}");
        assert!(err.contains(needle), "{file}: {err}");
    }
    // Flags override the file, the environment sits between.
    let out = Command::new(BIN)
        .args([
            "--config",
            &fixture("valid.toml"),
            "--check-config",
            "--burst",
            "7",
        ])
        .env("TSUGI_NOTIFY_BURST", "3")
        .env("TSUGI_NOTIFY_OUTBOUND_QUEUE", "640")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.contains("\nburst                     7\n")
            && out.contains("\noutbound_queue            640\n"),
        "{out}"
    );
    let out = Command::new(BIN)
        .args(["--dev", "--check-config"])
        .env("TSUGI_NOTIFY_MAX_CONECTIONS", "3")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TSUGI_NOTIFY_MAX_CONECTIONS"));
}

#[test]
fn secret_file_holds_rotating_secrets() {
    let dir = std::env::temp_dir().join(format!("notifyd-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("secrets");
    std::fs::write(&file, "newest\n\nolder\n").unwrap();
    let f = file.to_str().unwrap();
    let (code, token, _) = run(&[
        "--url",
        "ws://h:1",
        "--secret-file",
        f,
        "token",
        "mint",
        "--link",
        "5",
    ]);
    assert_eq!(code, 0);
    let (code, out, _) = run(&[
        "--url",
        "ws://h:1",
        "--secret",
        "newest",
        "token",
        "verify",
        token.trim(),
    ]);
    assert_eq!(code, 0, "the first line mints: {out}");
    let (code, out, _) = run(&[
        "--url",
        "ws://h:1",
        "--secret",
        "older",
        "token",
        "verify",
        token.trim(),
    ]);
    assert_eq!(
        (code, out.trim()),
        (1, "invalid (signature does not match any secret)")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn token_tools_for_admins() {
    let (code, token, _) = run(&[
        "--dev",
        "token",
        "mint",
        "--wwwroot",
        "https://t.example",
        "--link",
        "42",
        "--context",
        "7",
        "--user",
        "9",
        "--ttl",
        "60",
    ]);
    assert_eq!(code, 0);
    let (code, out, _) = run(&["--dev", "token", "verify", token.trim()]);
    assert_eq!(code, 0);
    assert!(
        out.contains("plaintext: https://t.example::42::7::9"),
        "{out}"
    );
    assert!(out.contains("space:     https://t.example::42"), "{out}");
    let (code, out, _) = run(&["--dev", "token", "verify", "garbage.token.here"]);
    assert_eq!(code, 1);
    assert!(out.starts_with("invalid"));
    let (code, _, err) = run(&["--dev", "token", "mint", "--link", "a::b"]);
    assert_eq!(code, 2);
    assert!(err.contains("link"));
}

#[test]
fn dev_mode_says_so_loudly() {
    let mut d = Daemon::start_with(&["--dev", "--proxyport", "0", "--metrics-bind", "off"]);
    d.signal("TERM");
    assert!(d.wait_exit(Duration::from_secs(5)).is_some());
    let log = d.log.lock().unwrap().clone();
    assert!(log.contains("DEVELOPMENT MODE"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_every_client_with_1001_and_exits_within_5_s() {
    let mut d = Daemon::start(&[]);
    let mut clients = Vec::new();
    for i in 0..100 {
        clients.push(connect(d.addr, &token(&format!("{}", i % 5), "u"), None).await);
    }
    // Under load: ten more clients send a message every millisecond until the server
    // closes them (paced so that the idle receivers' queues cannot fill before SIGTERM).
    let mut senders = Vec::new();
    let sent: Arc<Vec<AtomicUsize>> = Arc::new((0..10).map(|_| AtomicUsize::new(0)).collect());
    for i in 0..10 {
        let mut ws = connect(d.addr, &token(&format!("{}", i % 5), "s"), None).await;
        let sent = sent.clone();
        senders.push(tokio::spawn(async move {
            let mut n = 0u64;
            while ws.send(Message::text(format!("load {n}"))).await.is_ok() {
                n += 1;
                sent[i].fetch_add(1, Ordering::Relaxed);
                // Pacing (see above), not a wait for anything.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            close_code(&mut ws).await
        }));
    }
    wait_until("every sender under way", Duration::from_secs(20), || {
        sent.iter().all(|n| n.load(Ordering::Relaxed) >= 100)
    })
    .await;
    let started = Instant::now();
    d.signal("TERM");
    let codes = futures_util::future::join_all(clients.iter_mut().map(close_code)).await;
    assert!(codes.iter().all(|c| *c == Some(1001)), "{codes:?}");
    for s in senders {
        // A sender learns of the close through its failed send; 1001 or a gone socket.
        let code = s.await.unwrap();
        assert!(matches!(code, Some(1001) | None), "{code:?}");
    }
    let status = tokio::task::spawn_blocking(move || {
        let s = d.wait_exit(Duration::from_secs(5));
        (s, d)
    })
    .await
    .unwrap();
    assert!(status.0.is_some_and(|s| s.success()), "exited cleanly");
    assert!(started.elapsed() < Duration::from_secs(5));
    // SIGINT does the same.
    let mut d = Daemon::start(&[]);
    let mut c = connect(d.addr, &token("1", "u"), None).await;
    d.signal("INT");
    assert_eq!(close_code(&mut c).await, Some(1001));
    assert!(d.wait_exit(Duration::from_secs(5)).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_secret_in_logs_even_at_trace() {
    let d = Daemon::start(&["--log-level", "trace"]);
    let good = token("1", "u");
    let mut a = connect(d.addr, &good, Some("r")).await;
    let mut b = connect(d.addr, &token("1", "v"), Some("r")).await;
    a.send(Message::text("hi")).await.unwrap();
    recv(&mut b).await;
    let forged = format!("{}x", &good[..good.len() - 1]);
    assert_eq!(refused_status(d.addr, &forged, None).await, 403);
    let legacy = tokens()
        .mint_legacy(&tsugi_notify_core::Plaintext::new("https://s", "1", None, None).unwrap())
        .unwrap();
    connect(d.addr, &legacy, None).await;
    drop((a, b));
    // What the daemon logs as the three connections end is looked at too.
    wait_until(
        "three disconnections logged",
        Duration::from_secs(10),
        || d.log.lock().unwrap().matches("disconnected").count() >= 3,
    )
    .await;
    let log = d.log.lock().unwrap().clone();
    assert!(
        log.contains("token refused"),
        "the refusal is logged: {log}"
    );
    for secret_thing in [
        SECRET,
        good.as_str(),
        &good[good.len() - 43..],
        forged.as_str(),
        legacy.as_str(),
    ] {
        assert!(!log.contains(secret_thing), "log leaks {secret_thing}");
    }
    // Not even a token's signature or claims part.
    for part in good.split('.') {
        assert!(!log.contains(part), "log leaks a token part");
    }
}

/// A web server whose clock is 95 s fast: its tokens are refused, and the daemon says
/// so once (not once per refusal), naming the site and how far ahead it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_a_fast_clock_are_refused_with_one_warning_naming_the_issuer() {
    let d = Daemon::start(&[]);
    let now = tsugi_notify_core::Clock::now(&tsugi_notify_core::SystemClock);
    let fast = tsugi_notify_core::Tokens::new(tsugi_notify_core::Keyring::new([SECRET]).unwrap())
        .with_clock(tsugi_notify_core::FixedClock(now + 95));
    let p =
        tsugi_notify_core::Plaintext::new("https://fast.example", "1", None, Some("u")).unwrap();
    let ahead = fast.mint(&p, tsugi_notify_core::Scope::Browser).unwrap();
    for _ in 0..3 {
        assert_eq!(refused_status(d.addr, &ahead, None).await, 403);
    }
    // Another site, on time, still gets in.
    connect(d.addr, &token("1", "v"), None).await;
    wait_until("the clock warning", Duration::from_secs(10), || {
        d.log.lock().unwrap().contains("issued in the future")
    })
    .await;
    let log = d.log.lock().unwrap().clone();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("issued in the future"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning a minute: {log}");
    let w = warnings[0];
    assert!(w.contains("WARN"), "{w}");
    assert!(w.contains("issuer=\"https://fast.example\""), "{w}");
    assert!(
        w.contains("refused_since_last_warning=1"),
        "the first counts itself: {w}"
    );
    assert!(w.contains("clock_skew_secs=60"), "{w}");
    let ahead_secs: u64 = w
        .split("ahead_secs=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("ahead_secs in {w}"));
    assert!((93..=97).contains(&ahead_secs), "{w}");
    assert!(!log.contains(&ahead), "the token is not logged");
}

/// Raises this test process's open-file limit (it holds one socket per client).
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        },
    );
}

async fn hold_and_exercise(addr: SocketAddr, n: usize) {
    // Rooms of 10 in 20 links: every connection receives one message.
    let mut clients = Vec::with_capacity(n);
    let mut pending = futures_util::stream::FuturesOrdered::new();
    for i in 0..n {
        let t = token(&format!("link{}", i % 20), &format!("u{i}"));
        let room = format!("room{}", i / 10 / 20);
        pending.push_back(async move { connect(addr, &t, Some(&room)).await });
        if pending.len() >= 256 {
            clients.push(pending.next().await.unwrap());
        }
    }
    while let Some(c) = pending.next().await {
        clients.push(c);
    }
    assert_eq!(clients.len(), n);
    // In each room, the first member sends; the others must each receive it.
    let mut seen = std::collections::HashSet::new();
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        let key = (i % 20, i / 10 / 20);
        if seen.insert(key) {
            senders.push(c);
        } else {
            receivers.push(c);
        }
    }
    for s in &mut senders {
        s.send(Message::text("ping")).await.unwrap();
    }
    let got = futures_util::future::join_all(receivers.iter_mut().map(|r| async move {
        matches!(recv_within(r, Duration::from_secs(30)).await, Some(Message::Text(t)) if t == "ping")
    }))
    .await;
    let ok = got.iter().filter(|g| **g).count();
    assert_eq!(ok, receivers.len(), "every connection works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eleven_hundred_then_ten_thousand_concurrent_connections() {
    raise_fd_limit();
    let d = Daemon::start(&["--max-connections", "12000"]);
    hold_and_exercise(d.addr, 1_100).await;
    hold_and_exercise(d.addr, 10_000).await;
    let log = d.log.lock().unwrap().clone();
    assert!(!log.contains("accept failed"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_accept_backs_off_and_recovers() {
    // The daemon under a hard limit of 128 open files: connections beyond it fail, the
    // daemon keeps running, and serves again once clients leave (Ratchet stopped for good).
    let d = Daemon::start_under(&["prlimit", "--nofile=128:128", "--"], &LOOPBACK);
    let addr = d.addr;
    let mut held = Vec::new();
    for i in 0..160 {
        let attempt = tokio::time::timeout(
            Duration::from_millis(300),
            tokio_tungstenite::connect_async(url(addr, &token("1", &format!("{i}")), None)),
        )
        .await;
        if let Ok(Ok((ws, _))) = attempt {
            held.push(ws);
        }
    }
    assert!(held.len() < 128, "the limit bites: {} held", held.len());
    let mut d = d;
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "the daemon is still running"
    );
    let log_now = d.log.lock().unwrap().clone();
    assert!(log_now.contains("out of resources"), "{log_now}");
    drop(held);
    let mut a = eventually("the daemon to serve again", Duration::from_secs(20), || {
        let u = url(addr, &token("9", "a"), None);
        async move {
            let attempt = tokio::time::timeout(
                Duration::from_millis(300),
                tokio_tungstenite::connect_async(u),
            )
            .await;
            attempt.ok()?.ok().map(|(ws, _)| ws)
        }
    })
    .await;
    let mut b = connect(addr, &token("9", "b"), None).await;
    a.send(Message::text("recovered")).await.unwrap();
    assert_eq!(recv(&mut b).await, Message::text("recovered"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigkill_and_restart_every_reconnecting_client_is_served() {
    raise_fd_limit();
    let port = free_port();
    let args = |p: u16| {
        vec![
            "--url".to_owned(),
            "ws://127.0.0.1:2021".into(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--proxyport".into(),
            p.to_string(),
            "--metrics-bind".into(),
            "off".into(),
            "--secret".into(),
            SECRET.into(),
        ]
    };
    let argv = args(port);
    let d = Daemon::start_with(&argv.iter().map(String::as_str).collect::<Vec<_>>());
    let addr = d.addr;
    let n = 500;
    let connected = Arc::new(AtomicUsize::new(0));
    let cut_off = Arc::new(AtomicUsize::new(0));
    let reconnected = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (connected, cut_off, reconnected) =
            (connected.clone(), cut_off.clone(), reconnected.clone());
        let t = token(&format!("{}", i % 10), &format!("u{i}"));
        tasks.push(tokio::spawn(async move {
            let mut ws = connect(addr, &t, None).await;
            connected.fetch_add(1, Ordering::Relaxed);
            // Read until the daemon dies, then reconnect with full-jitter backoff.
            while recv_within(&mut ws, Duration::from_secs(60))
                .await
                .is_some()
            {}
            cut_off.fetch_add(1, Ordering::Relaxed);
            let mut ceiling = 50u64;
            loop {
                // The backoff is the clients' behaviour under test, not a wait.
                let wait = rand::random::<u64>() % ceiling;
                tokio::time::sleep(Duration::from_millis(wait)).await;
                if let Ok((ws, _)) = tokio_tungstenite::connect_async(url(addr, &t, None)).await {
                    reconnected.fetch_add(1, Ordering::Relaxed);
                    return ws;
                }
                ceiling = (ceiling * 2).min(2000);
            }
        }));
    }
    wait_until("every client connected", Duration::from_secs(30), || {
        connected.load(Ordering::Relaxed) == n
    })
    .await;
    d.signal("KILL");
    drop(d);
    // The restarted daemon meets a storm: every client has lost its socket first.
    wait_until("every client cut off", Duration::from_secs(30), || {
        cut_off.load(Ordering::Relaxed) == n
    })
    .await;
    let d2 = Daemon::start_with(&argv.iter().map(String::as_str).collect::<Vec<_>>());
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(
            tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("reconnected")
                .unwrap(),
        );
    }
    assert_eq!(reconnected.load(Ordering::Relaxed), n);
    // They all work: one message per link reaches the other 49 members.
    for c in clients.iter_mut().take(10) {
        c.send(Message::text("back")).await.unwrap();
    }
    let mut got = 0;
    for c in clients.iter_mut().skip(10) {
        if matches!(recv_within(c, Duration::from_secs(10)).await, Some(Message::Text(t)) if t == "back")
        {
            got += 1;
        }
    }
    assert_eq!(got, n - 10);
    let rss = std::fs::read_to_string(format!("/proc/{}/status", d2.child.id())).unwrap();
    let kb: u64 = rss
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        kb < 64 * 1024,
        "daemon RSS {kb} kB after the reconnect storm"
    );
}

/// Runs the daemon with `args` and `env` (TSUGI_NOTIFY_* of this process removed).
fn run_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("TSUGI_NOTIFY_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn no_error_ever_prints_a_secret_whichever_way_it_came_in() {
    const S: &str = "hunter2-Zq7x";
    let dir = std::env::temp_dir().join(format!("notifyd-leak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let url = "url = \"ws://h:2021\"\n";
    let secret_file = file("secrets", &format!("#{S}\n{S}-older\n"));
    let not_utf8 = dir.join("not-utf8");
    std::fs::write(&not_utf8, [S.as_bytes(), &[0xff, 0xfe, b'\n']].concat()).unwrap();
    let not_utf8 = not_utf8.display().to_string();
    // (what, args, env, what the error must name)
    type Case<'a> = (&'a str, Vec<String>, Vec<(&'a str, String)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "toml: secret without quotes",
            vec!["--config".into(), file("a.toml", &format!("{url}secret = {S}\n"))],
            vec![],
            "line 2",
        ),
        (
            "toml: misspelled key",
            vec!["--config".into(), file("b.toml", &format!("{url}secrte = \"{S}\"\n"))],
            vec![],
            "line 2: unknown key (did you mean `secret`?)",
        ),
        (
            "toml: secrets of the wrong type",
            vec!["--config".into(), file("c.toml", &format!("{url}secrets = \"{S}\"\n"))],
            vec![],
            "secrets",
        ),
        (
            "toml: unterminated string",
            vec!["--config".into(), file("d.toml", &format!("{url}secret = \"{S}\n"))],
            vec![],
            "line 2",
        ),
        (
            "toml: a redis password and a bad key beside it",
            vec![
                "--config".into(),
                file(
                    "e.toml",
                    &format!("{url}secret = \"s\"\n[redis]\nurl = \"redis://u:{S}@h/\"\npassword = \"{S}\"\n"),
                ),
            ],
            vec![],
            "did you mean `password_file`",
        ),
        (
            "env: misspelled variable",
            vec!["--url".into(), "ws://h:1".into()],
            vec![("TSUGI_NOTIFY_SECRTE", S.into())],
            "TSUGI_NOTIFY_SECRTE",
        ),
        (
            "env: secret given, another variable bad",
            vec!["--url".into(), "ws://h:1".into()],
            vec![("TSUGI_NOTIFY_SECRET", S.into()), ("TSUGI_NOTIFY_BURST", "many".into())],
            "TSUGI_NOTIFY_BURST",
        ),
        (
            "env: a redis URL with a password and the wrong scheme",
            vec!["--url".into(), "ws://h:1".into(), "--secret".into(), "s".into()],
            vec![
                ("TSUGI_NOTIFY_REDIS_URL", format!("http://u:{S}@h/")),
            ],
            "[redis] url",
        ),
        (
            "flags: misspelled flag",
            vec!["--url".into(), "ws://h:1".into(), format!("--secrte={S}")],
            vec![],
            "did you mean --secret?",
        ),
        (
            "flags: secret given, another flag bad",
            vec![
                "--url".into(),
                "ws://h:1".into(),
                "--secret".into(),
                S.into(),
                "--outbound-queue".into(),
                "1".into(),
            ],
            vec![],
            "outbound_queue",
        ),
        (
            "flags: a secret with a space, unquoted",
            vec!["--url".into(), "ws://h:1".into(), "--secret".into(), "two".into(), S.into()],
            vec![],
            "needs quotes",
        ),
        (
            "flags: a secret that starts with a dash",
            vec!["--url".into(), "ws://h:1".into(), "--secret".into(), format!("--{S}")],
            vec![],
            "tsugi-notifyd --help",
        ),
        (
            "flags: a secret where a number goes",
            vec!["--url".into(), "ws://h:1".into(), "--burst".into(), S.into()],
            vec![],
            "--burst",
        ),
        (
            "secret file: read, another setting bad",
            vec![
                "--url".into(),
                "ws://h:1".into(),
                "--secret-file".into(),
                secret_file.clone(),
                "--ping-interval-secs".into(),
                "100".into(),
            ],
            vec![],
            "ping_interval_secs",
        ),
        (
            "secret file: not UTF-8",
            vec!["--url".into(), "ws://h:1".into(), "--secret-file".into(), not_utf8],
            vec![],
            "not-utf8",
        ),
    ];
    for (what, args, env, names) in cases {
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        args.push("--check-config");
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (code, out, err) = run_env(&args, &env);
        assert_ne!(code, 0, "{what}: refused");
        assert!(
            !out.contains(S) && !err.contains(S),
            "{what}: printed the secret: {err}"
        );
        assert!(err.contains(names), "{what}: names {names}: {err}");
    }
    // A good configuration with a password in the Redis URL: the summary masks it.
    let (code, out, err) = run_env(
        &[
            "--url",
            "ws://h:1",
            "--secret-file",
            &secret_file,
            "--check-config",
        ],
        &[(
            "TSUGI_NOTIFY_REDIS_URL",
            &format!("redis://notify:{S}@10.0.0.5:6379/"),
        )],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains(S) && !err.contains(S), "{out}");
    assert!(out.contains("redis://MASKED@10.0.0.5:6379/"), "{out}");
    // The secret file's first line starts with '#': it is a secret, and it mints.
    let (code, token, _) = run_env(
        &[
            "--url",
            "ws://h:1",
            "--secret-file",
            &secret_file,
            "token",
            "mint",
            "--link",
            "5",
        ],
        &[],
    );
    assert_eq!(code, 0);
    let hashed = format!("#{S}");
    let (code, out, _) = run_env(
        &[
            "--url",
            "ws://h:1",
            "--secret",
            &hashed,
            "token",
            "verify",
            token.trim(),
        ],
        &[],
    );
    assert_eq!(code, 0, "a secret starting with # mints: {out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_under_a_low_fd_limit_never_keeps_a_real_client_out() {
    raise_fd_limit();
    // 200 open files for the daemon, 400 idle TCP connections held open by an attacker
    // (more than fit: the rest wait in the listen queue), then a real client.
    let d = Daemon::start_under(&["prlimit", "--nofile=200:200", "--"], &LOOPBACK);
    let mut idle = Vec::new();
    for _ in 0..400 {
        idle.push(tokio::net::TcpStream::connect(d.addr).await.unwrap());
    }
    let started = Instant::now();
    let deadline = Duration::from_secs(5);
    let t = token("1", "real");
    let attempt = tokio::time::timeout(deadline, connect(d.addr, &t, None)).await;
    assert!(
        attempt.is_ok(),
        "a real client got in within {deadline:?} (handshake timeout 10 s)"
    );
    let mut b = tokio::time::timeout(deadline, connect(d.addr, &token("1", "other"), None))
        .await
        .expect("and another");
    let mut a = attempt.unwrap();
    a.send(Message::text("through the flood")).await.unwrap();
    assert_eq!(recv(&mut b).await, Message::text("through the flood"));
    eprintln!("real clients in after {:?}", started.elapsed());
    let log = d.log.lock().unwrap().clone();
    assert!(
        log.contains("closing the oldest pending handshakes"),
        "{log}"
    );
    drop(idle);
}

#[test]
fn an_environment_value_that_is_not_utf8_is_refused_by_name_never_quoted() {
    use std::os::unix::ffi::OsStringExt;
    let value = std::ffi::OsString::from_vec(b"hunter2-secret\xff".to_vec());
    let out = Command::new(BIN)
        .args(["--dev", "--check-config"])
        .env("TSUGI_NOTIFY_SECRET", value)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("TSUGI_NOTIFY_SECRET") && err.contains("not UTF-8"),
        "{err}"
    );
    assert!(
        !err.contains("hunter2") && !err.contains("panicked"),
        "{err}"
    );
}
