//! Tokens minted by this crate verify under the independent PHP implementation of
//! token-format.md (`tests/vectors/reference.php`: PHP's own hash_hmac and openssl).

#![allow(clippy::unwrap_used)]

use std::process::Command;

use tsugi_notify_core::{Keyring, Plaintext, Room, Scope, Tokens};

#[test]
fn minted_tokens_verify_in_the_php_reference() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let secrets = ["rotating-new", "rotating-old"];
    let tokens = Tokens::new(Keyring::new(secrets).unwrap());
    let now = tsugi_notify_core::Clock::now(&tsugi_notify_core::SystemClock);
    let ids = [
        "1",
        "42",
        "é",
        "a:b",
        "x\"y",
        "tab\there",
        "back\\slash",
        "ユーザー",
        "z:",
    ];
    let mut cases = Vec::new();
    for (i, link) in ids.iter().enumerate() {
        if link.chars().any(char::is_control) {
            continue;
        }
        let ctx = ids[(i + 1) % ids.len()];
        let user = ids[(i + 2) % ids.len()];
        for www in ["https://tsugi.example.edu", "http://[::1]:8888"] {
            let p = Plaintext::new(www, link, Some(ctx), (i % 2 == 0).then_some(user)).unwrap();
            // A room of the ids too: a room-bound token must verify there and name it.
            let room = Room::new(ids[(i + 3) % ids.len()]).unwrap();
            for (token, scope, format, bound) in [
                (tokens.mint(&p, Scope::Browser).unwrap(), None, "v1", None),
                (
                    tokens.mint(&p, Scope::Publish).unwrap(),
                    Some("publish"),
                    "v1",
                    None,
                ),
                (
                    tokens.mint_for_room(&p, Scope::Publish, &room, 30).unwrap(),
                    Some("publish"),
                    "v1",
                    Some(room.as_str()),
                ),
                (
                    tokens.mint_for_room(&p, Scope::Browser, &room, 0).unwrap(),
                    None,
                    "v1",
                    Some(room.as_str()),
                ),
                (tokens.mint_legacy(&p).unwrap(), None, "legacy", None),
            ] {
                cases.push(serde_json::json!({
                    "name": format!("{format} {www} {link}"),
                    "format": format,
                    "secrets": secrets,
                    "now": now,
                    "token": token,
                    "accept_legacy": true,
                    "scope": scope,
                    "expect": p.to_string(),
                    "reason": null,
                    "room": bound,
                }));
            }
        }
    }
    let file = std::env::temp_dir().join(format!("tsugi-minted-{}.json", std::process::id()));
    std::fs::write(&file, serde_json::to_vec(&cases).unwrap()).unwrap();
    let out = Command::new("php")
        .arg(format!("{root}/tests/vectors/check.php"))
        .arg(&file)
        .output()
        .expect("php must be installed (make test installs php8.2-cli)");
    let _ = std::fs::remove_file(&file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("{} passed, 0 failed", cases.len())),
        "{stdout}"
    );
}
