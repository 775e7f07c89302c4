//! Every known-answer case of `tests/vectors/tokens.json`: verified or refused as
//! recorded (with the recorded reason and bound room), and every minted case reproduced
//! byte for byte.

#![allow(clippy::unwrap_used)]

use serde::Deserialize;
use tsugi_notify_core::{Error, FixedClock, Keyring, Plaintext, Room, Scope, Tokens};

#[derive(Deserialize)]
struct Case {
    name: String,
    format: String,
    secrets: Vec<String>,
    now: i64,
    token: String,
    accept_legacy: bool,
    scope: Option<String>,
    expect: Option<String>,
    reason: Option<String>,
    /// The room an accepted token is bound to; absent: none.
    room: Option<String>,
    mint: Option<Mint>,
}

#[derive(Deserialize)]
struct Mint {
    wwwroot: String,
    link: String,
    context: Option<String>,
    user: Option<String>,
    now: i64,
    ttl: u64,
    scope: Option<String>,
    /// Minted bound to this room; absent: to none.
    room: Option<String>,
}

fn scope(s: &Option<String>) -> Scope {
    match s.as_deref() {
        None => Scope::Browser,
        Some("publish") => Scope::Publish,
        Some(other) => panic!("unknown scope {other} in the vectors"),
    }
}

fn cases() -> Vec<Case> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/vectors/tokens.json"
    );
    let text = std::fs::read_to_string(path).expect("tests/vectors/tokens.json");
    serde_json::from_str(&text).expect("tokens.json parses")
}

#[test]
fn every_vector_verifies_as_recorded() {
    let cases = cases();
    assert!(cases.len() >= 40, "only {} vectors", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        assert!(c.format == "v1" || c.format == "legacy", "{}", c.name);
        let tokens = Tokens::new(Keyring::new(&c.secrets).unwrap())
            .accept_legacy(c.accept_legacy)
            .with_clock(FixedClock(c.now));
        let got = tokens.verify(&c.token, scope(&c.scope));
        let (plain, reason, room) = match &got {
            Ok(v) => (
                Some(v.plaintext.to_string()),
                None,
                v.room.as_ref().map(|r| r.as_str().to_owned()),
            ),
            Err(Error::InvalidToken(r)) => (None, Some(r.code().to_owned()), None),
            Err(e) => panic!("{}: unexpected error {e}", c.name),
        };
        if plain != c.expect || reason != c.reason || room != c.room {
            failures.push(format!(
                "{}: got {plain:?}/{reason:?}/room {room:?}, want {:?}/{:?}/room {:?}",
                c.name, c.expect, c.reason, c.room
            ));
        }
        if let Ok(v) = &got {
            // What decodeToken returns splits back into the same plaintext and space.
            let text = v.plaintext.to_string();
            assert_eq!(
                tsugi_notify_core::Space::from_plaintext(&text).as_ref(),
                Some(&v.plaintext.space()),
                "{}",
                c.name
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_minted_vector_is_reproduced_byte_for_byte() {
    let mut n = 0;
    for c in cases() {
        let Some(m) = &c.mint else { continue };
        let p = Plaintext::new(&m.wwwroot, &m.link, m.context.as_deref(), m.user.as_deref())
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let tokens = Tokens::new(Keyring::new(&c.secrets[..1]).unwrap())
            .with_ttl(m.ttl)
            .with_clock(FixedClock(m.now));
        let minted = match &m.room {
            None => tokens.mint(&p, scope(&m.scope)).unwrap(),
            Some(r) => tokens
                .mint_for_room(&p, scope(&m.scope), &Room::new(r).unwrap(), m.ttl)
                .unwrap(),
        };
        assert_eq!(minted, c.token, "{}", c.name);
        n += 1;
    }
    assert!(n >= 10, "only {n} minted vectors");
}

#[test]
fn the_room_binding_vectors_are_there() {
    let cases = cases();
    let bound: Vec<_> = cases.iter().filter(|c| c.room.is_some()).collect();
    assert!(
        bound
            .iter()
            .any(|c| c.scope.as_deref() == Some("publish") && c.room.as_deref() == Some("grades")),
        "a publish token bound to a room"
    );
    assert!(bound
        .iter()
        .all(|c| c.mint.as_ref().is_some_and(|m| m.room == c.room)));
    for name in ["rom a number", "rom null", "rom of 257 bytes"] {
        assert!(
            cases
                .iter()
                .any(|c| c.name.contains(name) && c.reason.as_deref() == Some("claims")),
            "{name}"
        );
    }
}
