//! `Type=notify`: the daemon tells systemd it is ready once it listens, and that it is
//! stopping at SIGTERM (a datagram socket stands in for systemd).
#![allow(clippy::unwrap_used)]

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tsugi-notifyd");

/// The next state the daemon sends, within `within`.
fn next_state(sock: &UnixDatagram, within: Duration) -> String {
    sock.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("a notification from the daemon");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn ready_once_listening_and_stopping_at_sigterm() {
    let dir = std::env::temp_dir().join(format!("tsugi-notify-sd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).unwrap();
    let mut child = Command::new(BIN)
        .args(["--dev", "--proxyport", "0", "--metrics-bind", "off"])
        .env("NOTIFY_SOCKET", &path)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let ready = next_state(&sock, Duration::from_secs(20));
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let stopping = next_state(&sock, Duration::from_secs(20));
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?} after {:?}", started.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sighup_reloads_and_never_stops_the_daemon() {
    // systemctl reload sends SIGHUP (ExecReload): without TLS there is nothing to
    // reload, and the daemon goes on (the default action of SIGHUP is to exit).
    let dir = std::env::temp_dir().join(format!("tsugi-notify-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).unwrap();
    let mut child = Command::new(BIN)
        .args(["--dev", "--proxyport", "0", "--metrics-bind", "off"])
        .env("NOTIFY_SOCKET", &path)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ready = next_state(&sock, Duration::from_secs(20));
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Read to the end: the daemon's stderr stays open while it runs.
    std::thread::spawn(move || {
        let lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
        for l in lines.map_while(Result::ok) {
            if l.contains("SIGHUP") {
                let _ = tx.send(l);
            }
        }
    });
    let said = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the daemon logs the SIGHUP");
    assert!(said.contains("nothing to reload"), "{said}");
    assert!(
        child.try_wait().unwrap().is_none(),
        "still running after SIGHUP"
    );
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert!(child.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_daemon_whose_stderr_is_gone_still_stops_at_sigterm() {
    // Logging to a closed pipe must not panic the task that logs: the SIGTERM handler
    // logs, and with it dead the daemon never stopped.
    let mut child = Command::new(BIN)
        .args(["--dev", "--proxyport", "0", "--metrics-bind", "off"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    assert!(
        lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.contains("listening")),
        "the daemon starts"
    );
    drop(lines);
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running 20 s after SIGTERM with its stderr closed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}
