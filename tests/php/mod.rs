//! PHP running the built extension, for the root package's tests: `$CFG` is set for
//! the tests' site and secret, `launch()` makes a launch object, and the reference
//! implementation in tests/vectors/reference.php is loaded.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use crate::common::SECRET;

/// The site the PHP side mints for (`$CFG->wwwroot`).
pub const WWWROOT: &str = "https://tsugi.example.edu/tsugi";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn extension() -> PathBuf {
    let so = root().join("target/release/libtsugi_websocket.so");
    assert!(
        so.exists(),
        "build the extension first (make test does: cargo build --release -p tsugi-websocket)"
    );
    so
}

/// Runs PHP with the extension and `$CFG` set; `code` prints its result.
pub fn php(code: &str) -> String {
    let prelude = format!(
        "$CFG = new stdClass; $CFG->wwwroot = '{WWWROOT}'; $CFG->websocket_url = 'ws://127.0.0.1:2021'; \
         $CFG->websocket_secret = '{SECRET}'; \
         function launch($link, $ctx, $user) {{ return (object) ['link' => (object) ['id' => $link], \
         'context' => (object) ['id' => $ctx], 'user' => (object) ['id' => $user]]; }} \
         require '{}'; ",
        root().join("tests/vectors/reference.php").display()
    );
    let out = Command::new("php")
        .arg("-d")
        .arg(format!("extension={}", extension().display()))
        .arg("-r")
        .arg(format!("{prelude}{code}"))
        .output()
        .expect("php is installed (make test installs php8.2-cli)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `php(code)` on a blocking thread, so that this test's runtime goes on serving what
/// PHP talks to (`WebSocket::publish()` posting to a daemon of the test, say).
pub async fn php_async(code: String) -> String {
    tokio::task::spawn_blocking(move || php(&code))
        .await
        .unwrap()
}
