//! Every check of token-format.md, at the socket: a token failing it is refused with
//! 403 before the upgrade, and the same token fixed opens a socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use common::*;
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha512};
use tsugi_notify_core::{Keyring, Plaintext, Tokens};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

fn sign(header: &str, claims: &str, secret: &str) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

fn claims(extra: &str) -> String {
    let t = now();
    format!(
        r#"{{"iss":"https://site.example","lnk":"42","sub":"u","iat":{t},"exp":{}{extra}}}"#,
        t + 600
    )
}

const H: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

#[tokio::test]
async fn each_check_refuses_at_the_socket() {
    let server = start(config()).await;
    let addr = server.addr;
    let good = sign(H, &claims(""), SECRET);
    connect(addr, &good, None).await;
    let parts: Vec<&str> = good.split('.').collect();
    let t = now();
    let hs512 = {
        let input = format!(
            "{}.{}",
            b64(r#"{"alg":"HS512","typ":"JWT"}"#),
            b64(&claims(""))
        );
        let mut mac = Hmac::<Sha512>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(input.as_bytes());
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    };
    let cases: Vec<(&str, String)> = vec![
        // 1. size and shape
        (
            "over 4096 bytes",
            sign(
                H,
                &claims(&format!(r#","pad":"{}""#, "x".repeat(4000))),
                SECRET,
            ),
        ),
        ("two parts", format!("{}.{}", parts[0], parts[1])),
        ("four parts", format!("{good}.{}", parts[2])),
        ("empty part", format!("{}..{}", parts[0], parts[2])),
        // 2. strict base64url
        ("padding", format!("{good}=")),
        (
            "plus sign",
            format!("{}.{}.+{}", parts[0], parts[1], &parts[2][1..]),
        ),
        // 3. signature
        ("wrong secret", sign(H, &claims(""), "another-secret")),
        ("HS512 signature", hs512),
        // 4. header
        (
            "alg none",
            sign(r#"{"alg":"none","typ":"JWT"}"#, &claims(""), SECRET),
        ),
        ("alg missing", sign(r#"{"typ":"JWT"}"#, &claims(""), SECRET)),
        (
            "typ not JWT",
            sign(r#"{"alg":"HS256","typ":"JWS"}"#, &claims(""), SECRET),
        ),
        (
            "header not an object",
            sign(r#"["HS256"]"#, &claims(""), SECRET),
        ),
        // 5. claims
        (
            "iss missing",
            sign(H, &format!(r#"{{"lnk":"42","iat":{t}}}"#), SECRET),
        ),
        (
            "iss empty",
            sign(H, &format!(r#"{{"iss":"","lnk":"42","iat":{t}}}"#), SECRET),
        ),
        (
            "lnk an integer",
            sign(
                H,
                &format!(r#"{{"iss":"https://s","lnk":42,"iat":{t}}}"#),
                SECRET,
            ),
        ),
        (
            "lnk with ::",
            sign(
                H,
                &format!(r#"{{"iss":"https://s","lnk":"4::2","iat":{t}}}"#),
                SECRET,
            ),
        ),
        (
            "sub with ::",
            sign(
                H,
                &format!(r#"{{"iss":"https://s","lnk":"42","sub":"a::b","iat":{t}}}"#),
                SECRET,
            ),
        ),
        (
            "iat a string",
            sign(
                H,
                &format!(r#"{{"iss":"https://s","lnk":"42","iat":"{t}"}}"#),
                SECRET,
            ),
        ),
        (
            "exp a float",
            sign(
                H,
                &format!(r#"{{"iss":"https://s","lnk":"42","iat":{t},"exp":{t}.5}}"#),
                SECRET,
            ),
        ),
        ("claims not an object", sign(H, "[1]", SECRET)),
        // 6. time
        (
            "expired past the leeway",
            sign(
                H,
                &format!(
                    r#"{{"iss":"https://s","lnk":"42","iat":{},"exp":{}}}"#,
                    t - 1000,
                    t - 61
                ),
                SECRET,
            ),
        ),
        (
            "issued in the future",
            sign(
                H,
                &format!(r#"{{"iss":"https://s","lnk":"42","iat":{}}}"#, t + 120),
                SECRET,
            ),
        ),
        // 7. scope
        (
            "publish scope",
            sign(H, &claims(r#","scp":"publish""#), SECRET),
        ),
        (
            "unknown scope",
            sign(H, &claims(r#","scp":"admin""#), SECRET),
        ),
        // legacy
        ("legacy with a flipped mac byte", {
            let legacy = Tokens::new(Keyring::new([SECRET]).unwrap())
                .mint_legacy(&Plaintext::new("https://s", "42", None, None).unwrap())
                .unwrap();
            let mut raw = STANDARD.decode(legacy).unwrap();
            raw[20] ^= 1;
            STANDARD.encode(raw)
        }),
        ("legacy too short", STANDARD.encode([7u8; 48])),
    ];
    for (name, token) in &cases {
        assert_eq!(refused_status(addr, token, None).await, 403, "{name}");
    }
    // Within the leeway both ways, still accepted.
    let edge = sign(
        H,
        &format!(
            r#"{{"iss":"https://s","lnk":"42","iat":{},"exp":{}}}"#,
            t + 30,
            t - 30
        ),
        SECRET,
    );
    connect(addr, &edge, None).await;
    assert_eq!(
        server
            .metrics
            .refused_count(tsugi_notifyd::metrics::Refusal::InvalidToken),
        cases.len() as u64
    );
}

#[tokio::test]
async fn legacy_tokens_refused_when_switched_off() {
    let mut cfg = config();
    cfg.tokens = cfg.tokens.accept_legacy(false);
    let server = start(cfg).await;
    let legacy = Tokens::new(Keyring::new([SECRET]).unwrap())
        .mint_legacy(&Plaintext::new("https://s", "42", None, None).unwrap())
        .unwrap();
    assert_eq!(refused_status(server.addr, &legacy, None).await, 403);
    connect(server.addr, &token("42", "u"), None).await;
}

#[tokio::test]
async fn a_web_server_clock_ahead_by_more_than_clock_skew_secs_is_refused_and_counted() {
    let t = now();
    let ahead = sign(
        H,
        &format!(
            r#"{{"iss":"https://s","lnk":"42","sub":"u","iat":{}}}"#,
            t + 200
        ),
        SECRET,
    );
    let strict = start(config()).await;
    assert_eq!(refused_status(strict.addr, &ahead, None).await, 403);
    let row = "tsugi_notify_token_rejections_total{check=\"not_yet_valid\"}";
    assert_eq!(metric(&strict.metrics, row), 1);
    let mut cfg = config();
    cfg.tokens = cfg.tokens.with_leeway(300);
    let tolerant = start(cfg).await;
    connect(tolerant.addr, &ahead, None).await;
}
