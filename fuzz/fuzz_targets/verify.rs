//! Token verification (v1 and legacy) on arbitrary input: never panics, and accepts
//! only what a valid signature or MAC covers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsugi_notify_core::{FixedClock, Keyring, Plaintext, Scope, Space, Tokens, WebsocketUrl};

fuzz_target!(|data: &[u8]| {
    let tokens = Tokens::new(Keyring::new(["opensource", "older"]).expect("static secrets"))
        .with_clock(FixedClock(1_767_225_600));
    let text = String::from_utf8_lossy(data);
    for scope in [Scope::Browser, Scope::Publish] {
        if let Ok(v) = tokens.verify(&text, scope) {
            // Anything accepted must have been minted with one of the secrets: the
            // fuzzer cannot forge a MAC, so reaching here with random input is a bug.
            panic!("forged token accepted: {:?}", v.format);
        }
    }
    let _ = Plaintext::parse(&text);
    let _ = Space::from_plaintext(&text);
    let _ = WebsocketUrl::parse(&text);
});
