//! Format v1: a compact JWS signed with HS256.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::Mac;
use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::claims::{Format, Scope, Verified, MAX_TOKEN_BYTES};
use crate::error::{Error, Rejection, Result};
use crate::model::{Plaintext, Room};
use crate::secret::Keyring;

/// `BASE64URL({"alg":"HS256","typ":"JWT"})`: the header of every minted token.
const HEADER_B64: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// Claims in the order token-format.md fixes, so that every implementation mints the
/// same bytes from the same inputs.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    lnk: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ctx: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    iat: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scp: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rom: Option<&'a str>,
}

pub(crate) fn mint(
    keyring: &Keyring,
    p: &Plaintext,
    scope: Scope,
    room: Option<&Room>,
    now: i64,
    ttl: u64,
) -> String {
    let exp = (ttl > 0).then(|| now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)));
    let claims = Claims {
        iss: p.wwwroot(),
        lnk: p.link(),
        ctx: p.context(),
        sub: p.user(),
        iat: now,
        exp,
        scp: scope.claim(),
        rom: room.map(Room::as_str),
    };
    // Serializing a struct of strings and integers cannot fail.
    let json = serde_json::to_vec(&claims).unwrap_or_default();
    sign(keyring, &json)
}

/// `header.claims.signature` for these claims' bytes, signed with the minting secret.
fn sign(keyring: &Keyring, claims: &[u8]) -> String {
    let mut token = String::with_capacity(HEADER_B64.len() + claims.len() * 4 / 3 + 48);
    token.push_str(HEADER_B64);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(claims, &mut token);
    let tag = keyring
        .minting()
        .v1
        .clone()
        .chain_update(token.as_bytes())
        .finalize()
        .into_bytes();
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(tag, &mut token);
    token
}

fn reject(r: Rejection) -> Error {
    Error::InvalidToken(r)
}

/// A field that may be absent but, when present, must have the field's type (`null`
/// included: `"sub":null` is a wrong type, not an absent claim).
fn present<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// The header fields a verifier looks at; others are ignored.
#[derive(Deserialize)]
struct Header<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    alg: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "present")]
    typ: Option<Cow<'a, str>>,
}

/// The claims a verifier looks at, borrowed from the decoded JSON where possible.
/// A claim of the wrong type fails the whole parse; unknown claims are ignored.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    iss: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "present")]
    lnk: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "present")]
    ctx: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "present")]
    sub: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "present")]
    iat: Option<i64>,
    #[serde(default, deserialize_with = "present")]
    exp: Option<i64>,
    #[serde(default, borrow, deserialize_with = "present")]
    scp: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "present")]
    rom: Option<Cow<'a, str>>,
}

/// Parses a JSON object (serde would also fill a struct from a JSON array).
fn object<'a, T: Deserialize<'a>>(json: &'a [u8]) -> Option<T> {
    let first = json
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(&b'{') {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// Checks 1 to 6 of token-format.md, in order; the caller checks the scope (7), and
/// the room (8) where the token is used.
pub(crate) fn verify(keyring: &Keyring, token: &str, now: i64, leeway: u64) -> Result<Verified> {
    // 1. Three non-empty parts (the size was checked by the caller).
    let mut parts = token.split('.');
    let (Some(h64), Some(c64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(reject(Rejection::Shape));
    };
    if h64.is_empty() || c64.is_empty() || s64.is_empty() {
        return Err(reject(Rejection::Shape));
    }
    // 2. Strict base64url without padding (canonical: no stray trailing bits), decoded
    // into one buffer on the stack: a token of MAX_TOKEN_BYTES decodes to less.
    let mut buf = [0u8; MAX_TOKEN_BYTES * 3 / 4 + 3];
    let mut at = 0;
    let mut decode = |part: &str| {
        let n = URL_SAFE_NO_PAD
            .decode_slice(part, &mut buf[at..])
            .map_err(|_| reject(Rejection::Encoding))?;
        let range = at..at + n;
        at += n;
        Ok::<_, Error>(range)
    };
    let (h, c, s) = (decode(h64)?, decode(c64)?, decode(s64)?);
    let (header, claims, sig) = (&buf[h], &buf[c], &buf[s]);
    // 3. The signature, in constant time, under any secret. Nothing before this is trusted.
    let signed = &token.as_bytes()[..h64.len() + 1 + c64.len()];
    let ok = keyring
        .keys()
        .iter()
        .any(|k| k.v1.clone().chain_update(signed).verify_slice(sig).is_ok());
    if !ok {
        return Err(reject(Rejection::Signature));
    }
    // 4. Header: alg exactly HS256, typ JWT if present.
    let header: Header<'_> = object(header).ok_or(reject(Rejection::Header))?;
    if header.alg.as_deref() != Some("HS256") || header.typ.is_some_and(|t| t != "JWT") {
        return Err(reject(Rejection::Header));
    }
    // 5. Claims.
    let bad = || reject(Rejection::Claims);
    let c: Incoming<'_> = object(claims).ok_or_else(bad)?;
    let (Some(iss), Some(lnk), Some(iat)) = (c.iss.as_deref(), c.lnk.as_deref(), c.iat) else {
        return Err(bad());
    };
    for s in [iss, lnk] {
        if s.is_empty() || s.chars().any(char::is_control) {
            return Err(bad());
        }
    }
    let (ctx, sub) = (c.ctx.as_deref(), c.sub.as_deref());
    if [Some(lnk), ctx, sub]
        .into_iter()
        .flatten()
        .any(|s| s.contains("::"))
    {
        return Err(bad());
    }
    let room = match c.rom.as_deref() {
        None => None,
        Some(r) => Some(Room::new(r).map_err(|_| bad())?),
    };
    // 6. Time, with leeway, in arithmetic that cannot overflow.
    if let Some(exp) = c.exp {
        if i128::from(now) >= i128::from(exp) + i128::from(leeway) {
            return Err(reject(Rejection::Expired));
        }
    }
    if i128::from(iat) > i128::from(now) + i128::from(leeway) {
        return Err(reject(Rejection::NotYetValid));
    }
    // 7, first half: an unknown scope authorizes nothing; the caller matches the rest.
    let scope = match c.scp.as_deref() {
        None => Scope::Browser,
        Some("publish") => Scope::Publish,
        Some("presence") => Scope::Presence,
        Some(_) => return Err(reject(Rejection::Scope)),
    };
    Ok(Verified {
        plaintext: Plaintext::from_parts(iss, lnk, ctx, sub),
        format: Format::V1,
        issued_at: Some(iat),
        expires_at: c.exp,
        scope,
        room,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_constant_is_the_documented_header() {
        assert_eq!(
            URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
            HEADER_B64
        );
    }

    #[test]
    fn claims_are_minted_in_the_documented_order() {
        let k = Keyring::new(["s"]).unwrap();
        let p = Plaintext::new("https://a.example", "1", Some("2"), Some("3")).unwrap();
        let t = mint(&k, &p, Scope::Publish, None, 100, 10);
        let claims = URL_SAFE_NO_PAD
            .decode(t.split('.').nth(1).unwrap())
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&claims).unwrap(),
            r#"{"iss":"https://a.example","lnk":"1","ctx":"2","sub":"3","iat":100,"exp":110,"scp":"publish"}"#
        );
        let p = Plaintext::new("w", "1", None, None).unwrap();
        let t = mint(&k, &p, Scope::Browser, None, 100, 0);
        let claims = URL_SAFE_NO_PAD
            .decode(t.split('.').nth(1).unwrap())
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&claims).unwrap(),
            r#"{"iss":"w","lnk":"1","iat":100}"#
        );
        // The room comes last, after the scope; a browser token may carry one too.
        let room = Room::new("q \"1\"").unwrap();
        let t = mint(&k, &p, Scope::Publish, Some(&room), 100, 30);
        let claims = URL_SAFE_NO_PAD
            .decode(t.split('.').nth(1).unwrap())
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&claims).unwrap(),
            r#"{"iss":"w","lnk":"1","iat":100,"exp":130,"scp":"publish","rom":"q \"1\""}"#
        );
        let t = mint(&k, &p, Scope::Browser, Some(&Room::default()), 100, 0);
        let claims = URL_SAFE_NO_PAD
            .decode(t.split('.').nth(1).unwrap())
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&claims).unwrap(),
            r#"{"iss":"w","lnk":"1","iat":100,"rom":""}"#
        );
    }

    /// Signs arbitrary claims with the standard header.
    fn signed(k: &Keyring, claims: &str) -> String {
        sign(k, claims.as_bytes())
    }

    #[test]
    fn the_room_claim_is_reported_and_checked() {
        let k = Keyring::new(["s"]).unwrap();
        let p = Plaintext::new("w", "1", Some("2"), None).unwrap();
        let room = Room::new("grades").unwrap();
        let v = verify(
            &k,
            &mint(&k, &p, Scope::Publish, Some(&room), 100, 30),
            100,
            60,
        )
        .unwrap();
        assert_eq!(v.room.as_ref(), Some(&room));
        assert_eq!(v.scope, Scope::Publish);
        assert_eq!((v.issued_at, v.expires_at), (Some(100), Some(130)));
        let unbound = verify(&k, &mint(&k, &p, Scope::Publish, None, 100, 30), 100, 60).unwrap();
        assert_eq!(unbound.room, None);
        // 256 bytes is a room; 257 bytes (here 128 two-byte characters and one more) is not.
        let max = "é".repeat(128);
        let t = signed(
            &k,
            &format!(r#"{{"iss":"w","lnk":"1","iat":100,"rom":"{max}"}}"#),
        );
        assert_eq!(verify(&k, &t, 100, 60).unwrap().room.unwrap().as_str(), max);
        for rom in [
            format!(r#""{max}x""#),
            "5".to_owned(),
            "null".to_owned(),
            "true".to_owned(),
            r#"["a"]"#.to_owned(),
            r#"{"a":1}"#.to_owned(),
        ] {
            let t = signed(
                &k,
                &format!(r#"{{"iss":"w","lnk":"1","iat":100,"rom":{rom}}}"#),
            );
            assert_eq!(
                verify(&k, &t, 100, 60).unwrap_err(),
                Error::InvalidToken(Rejection::Claims),
                "rom {rom}"
            );
        }
        let dup = signed(&k, r#"{"iss":"w","lnk":"1","iat":100,"rom":"a","rom":"b"}"#);
        assert_eq!(
            verify(&k, &dup, 100, 60).unwrap_err(),
            Error::InvalidToken(Rejection::Claims)
        );
    }

    #[test]
    fn repeated_keys_and_non_objects_are_refused() {
        let dup = br#"{"iss":"a","iss":"b","lnk":"1","iat":1}"#;
        assert!(object::<Incoming<'_>>(dup).is_none());
        assert!(object::<Header<'_>>(br#"{"alg":"HS256","alg":"none"}"#).is_none());
        assert!(object::<Header<'_>>(br#"["HS256","JWT"]"#).is_none());
        assert!(object::<Header<'_>>(b" \n{\"alg\":\"HS256\"}").is_some());
        let ok = br#"{"iss":"a","lnk":"1","iat":1,"extra":{"nested":[1,2]}}"#;
        assert!(object::<Incoming<'_>>(ok).is_some());
    }

    #[test]
    fn the_leeway_bounds_both_clocks() {
        let k = Keyring::new(["s"]).unwrap();
        let p = Plaintext::new("https://a.example", "1", None, Some("3")).unwrap();
        // Issued at 1000 by a web server 90 s ahead of a verifier at 910.
        let ahead = mint(&k, &p, Scope::Browser, None, 1000, 60);
        let code = |r: Result<Verified>| r.err().and_then(|e| e.rejection());
        assert_eq!(
            code(verify(&k, &ahead, 910, 60)),
            Some(Rejection::NotYetValid)
        );
        assert!(verify(&k, &ahead, 910, 90).is_ok());
        // Expired at 1060; 100 s later, a leeway of 100 still takes it, 99 does not.
        assert_eq!(code(verify(&k, &ahead, 1160, 99)), Some(Rejection::Expired));
        assert!(verify(&k, &ahead, 1159, 100).is_ok());
        // No leeway: exact.
        assert!(verify(&k, &ahead, 1000, 0).is_ok());
        assert_eq!(
            code(verify(&k, &ahead, 999, 0)),
            Some(Rejection::NotYetValid)
        );
    }
}
