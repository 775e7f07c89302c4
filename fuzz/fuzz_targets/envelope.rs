//! Envelopes from other nodes (anything may arrive on a Redis channel): refused or
//! opened, never a panic; nothing random ever opens (it would need the site's MAC); what
//! decodes encodes back to the same bytes, and sealing it again opens to the same.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tsugi_notify_core::Keyring;
use tsugi_notifyd::backplane::Envelope;

const CHANNEL: &str = "tsugi-notify:https://w::1";

fn keyring() -> &'static Keyring {
    static K: OnceLock<Keyring> = OnceLock::new();
    K.get_or_init(|| Keyring::new(["fuzz-secret"]).expect("a secret"))
}

fuzz_target!(|data: &[u8]| {
    assert!(
        Envelope::open(data, CHANNEL, keyring(), 1 << 16).is_err(),
        "random bytes opened as an authentic envelope"
    );
    if let Some(e) = Envelope::decode(data) {
        assert_eq!(e.encode().as_deref(), Some(data));
        let sealed = e.seal(CHANNEL, keyring()).expect("a decoded envelope seals");
        if e.message.len() <= 1 << 16 {
            assert_eq!(Envelope::open(&sealed, CHANNEL, keyring(), 1 << 16).ok(), Some(e));
        }
    }
});
