//! Property tests: round trips, tamper resistance, and no panic on any input.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use tsugi_notify_core::{
    Error, FixedClock, Keyring, Plaintext, Rejection, Room, Scope, Site, Space, Tokens,
};

const NOW: i64 = 1_767_225_600;

/// Ids as Tsugi may hold them: anything but empty, `::` or a leading `:`.
fn id() -> impl Strategy<Value = String> {
    "\\PC{1,24}".prop_filter("fits in a token", |s| {
        !s.contains("::") && !s.starts_with(':')
    })
}

fn tokens(secret: &[u8]) -> Tokens<FixedClock> {
    Tokens::new(Keyring::new([secret]).unwrap()).with_clock(FixedClock(NOW))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn mint_then_verify_round_trips(
        secret in proptest::collection::vec(any::<u8>(), 1..80),
        www in "https?://[a-z0-9.:\\[\\]]{1,30}(/[a-z]{0,8})?",
        link in id().prop_filter("no control", |s| !s.chars().any(char::is_control)),
        ctx in proptest::option::of(id()),
        user in proptest::option::of(id()),
        ttl in 0u64..10_000_000,
        publish in any::<bool>(),
    ) {
        let t = tokens(&secret).with_ttl(ttl);
        let p = Plaintext::new(&www, &link, ctx.as_deref(), user.as_deref()).unwrap();
        let scope = if publish { Scope::Publish } else { Scope::Browser };
        let v = t.verify(&t.mint(&p, scope).unwrap(), scope).unwrap();
        prop_assert_eq!(&v.plaintext, &p);
        prop_assert_eq!(v.expires_at, (ttl > 0).then(|| NOW + ttl as i64));
        let text = p.to_string();
        prop_assert_eq!(Plaintext::parse(&text).unwrap().space(), p.space());
        prop_assert_eq!(Space::from_plaintext(&text).unwrap(), p.space());
        // Legacy tokens round-trip too (browser scope only).
        if !publish {
            let lt = t.mint_legacy(&p).unwrap();
            prop_assert_eq!(t.verify(&lt, Scope::Browser).unwrap().plaintext.to_string(), text);
        }
    }

    #[test]
    fn any_single_byte_change_is_refused(
        at in any::<prop::sample::Index>(),
        to in any::<u8>(),
        legacy in any::<bool>(),
    ) {
        let t = tokens(b"opensource");
        let p = Plaintext::new("https://tsugi.example", "42", Some("7"), Some("9")).unwrap();
        let good = if legacy { t.mint_legacy(&p).unwrap() } else { t.mint(&p, Scope::Browser).unwrap() };
        let mut bytes = good.into_bytes();
        let i = at.index(bytes.len());
        prop_assume!(bytes[i] != to);
        bytes[i] = to;
        let tampered = String::from_utf8_lossy(&bytes);
        prop_assert!(matches!(t.verify(&tampered, Scope::Browser), Err(Error::InvalidToken(_))));
    }

    #[test]
    fn a_room_bound_token_names_its_room_and_no_other(
        room in "\\PC{0,64}",
        other in "\\PC{0,64}",
        publish in any::<bool>(),
    ) {
        let t = tokens(b"opensource");
        let p = Plaintext::new("https://tsugi.example", "42", Some("7"), None).unwrap();
        let scope = if publish { Scope::Publish } else { Scope::Browser };
        let Ok(room) = Room::new(&room) else { return Ok(()) };
        let v = t.verify(&t.mint_for_room(&p, scope, &room, 30).unwrap(), scope).unwrap();
        prop_assert_eq!(v.room.as_ref(), Some(&room));
        prop_assert_eq!(&v.plaintext, &p);
        prop_assert!(v.clone().for_room(&room).is_ok());
        if let Ok(other) = Room::new(&other) {
            let used = v.for_room(&other);
            if other == room {
                prop_assert!(used.is_ok());
            } else {
                prop_assert_eq!(used.unwrap_err(), Error::InvalidToken(Rejection::Room));
            }
        }
    }

    #[test]
    fn verify_never_panics_on_arbitrary_input(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        dots in any::<bool>(),
    ) {
        let t = tokens(b"opensource");
        let mut s = String::from_utf8_lossy(&bytes).into_owned();
        if dots { s = s.replacen('a', ".", 2); }
        let _ = t.verify(&s, Scope::Browser);
        let _ = t.verify(&s, Scope::Publish);
        let _ = Space::from_plaintext(&s);
        let _ = Plaintext::parse(&s);
        let _ = tsugi_notify_core::WebsocketUrl::parse(&s);
        let _ = Site::new(Some("ws://h:1"), None).with_publish_url(Some(s.as_str())).publish_url();
    }

    #[test]
    fn signed_garbage_claims_never_panic(claims in proptest::collection::vec(any::<u8>(), 0..300)) {
        use base64::Engine as _;
        use hmac::Mac;
        let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let input = format!("{}.{}", enc.encode(br#"{"alg":"HS256"}"#), enc.encode(&claims));
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"k").unwrap();
        mac.update(input.as_bytes());
        let token = format!("{input}.{}", enc.encode(mac.finalize().into_bytes()));
        let _ = tokens(b"k").verify(&token, Scope::Browser);
    }
}
