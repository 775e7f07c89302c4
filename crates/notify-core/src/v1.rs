//! Format v1: a compact JWS signed with HS256.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::Mac;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Rejection, Result};
use crate::model::Plaintext;
use crate::secret::Keyring;
use crate::token::{Format, Scope, Verified, LEEWAY_SECS};

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
}

pub(crate) fn mint(keyring: &Keyring, p: &Plaintext, scope: Scope, now: i64, ttl: u64) -> String {
    let exp = (ttl > 0).then(|| now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)));
    let claims = Claims {
        iss: p.wwwroot(),
        lnk: p.link(),
        ctx: p.context(),
        sub: p.user(),
        iat: now,
        exp,
        scp: scope.claim(),
    };
    // Serializing a struct of strings and integers cannot fail.
    let json = serde_json::to_vec(&claims).unwrap_or_default();
    let mut token = String::with_capacity(HEADER_B64.len() + json.len() * 4 / 3 + 48);
    token.push_str(HEADER_B64);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&json, &mut token);
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

/// Checks 1 to 6 of token-format.md, in order; the caller checks the scope (7).
pub(crate) fn verify(keyring: &Keyring, token: &str, now: i64) -> Result<Verified> {
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
    // 2. Strict base64url without padding (canonical: no stray trailing bits).
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| reject(Rejection::Encoding))
    };
    let header = decode(h64)?;
    let claims = decode(c64)?;
    let sig = decode(s64)?;
    // 3. The signature, in constant time, under any secret. Nothing before this is trusted.
    let signed = &token.as_bytes()[..h64.len() + 1 + c64.len()];
    let ok = keyring
        .keys()
        .iter()
        .any(|k| k.v1.clone().chain_update(signed).verify_slice(&sig).is_ok());
    if !ok {
        return Err(reject(Rejection::Signature));
    }
    // 4. Header: alg exactly HS256, typ JWT if present.
    let header: Map<String, Value> =
        serde_json::from_slice(&header).map_err(|_| reject(Rejection::Header))?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(reject(Rejection::Header));
    }
    if let Some(typ) = header.get("typ") {
        if typ.as_str() != Some("JWT") {
            return Err(reject(Rejection::Header));
        }
    }
    // 5. Claims.
    let claims: Map<String, Value> =
        serde_json::from_slice(&claims).map_err(|_| reject(Rejection::Claims))?;
    let bad = || reject(Rejection::Claims);
    let iss = claims.get("iss").and_then(Value::as_str).ok_or_else(bad)?;
    let lnk = claims.get("lnk").and_then(Value::as_str).ok_or_else(bad)?;
    for s in [iss, lnk] {
        if s.is_empty() || s.chars().any(char::is_control) {
            return Err(bad());
        }
    }
    let optional_str = |name: &str| -> Result<Option<&str>> {
        match claims.get(name) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(bad),
        }
    };
    let ctx = optional_str("ctx")?;
    let sub = optional_str("sub")?;
    if [Some(lnk), ctx, sub]
        .into_iter()
        .flatten()
        .any(|s| s.contains("::"))
    {
        return Err(bad());
    }
    let iat = claims.get("iat").and_then(Value::as_i64).ok_or_else(bad)?;
    let exp = match claims.get("exp") {
        None => None,
        Some(v) => Some(v.as_i64().ok_or_else(bad)?),
    };
    let scp = optional_str("scp")?;
    // 6. Time, with leeway, in arithmetic that cannot overflow.
    if let Some(exp) = exp {
        if i128::from(now) >= i128::from(exp) + i128::from(LEEWAY_SECS) {
            return Err(reject(Rejection::Expired));
        }
    }
    if i128::from(iat) > i128::from(now) + i128::from(LEEWAY_SECS) {
        return Err(reject(Rejection::NotYetValid));
    }
    // 7, first half: an unknown scope authorizes nothing; the caller matches the rest.
    let scope = match scp {
        None => Scope::Browser,
        Some("publish") => Scope::Publish,
        Some(_) => return Err(reject(Rejection::Scope)),
    };
    Ok(Verified {
        plaintext: Plaintext::from_parts(iss, lnk, ctx, sub),
        format: Format::V1,
        issued_at: Some(iat),
        expires_at: exp,
        scope,
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
        let t = mint(&k, &p, Scope::Publish, 100, 10);
        let claims = URL_SAFE_NO_PAD
            .decode(t.split('.').nth(1).unwrap())
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&claims).unwrap(),
            r#"{"iss":"https://a.example","lnk":"1","ctx":"2","sub":"3","iat":100,"exp":110,"scp":"publish"}"#
        );
        let p = Plaintext::new("w", "1", None, None).unwrap();
        let t = mint(&k, &p, Scope::Browser, 100, 0);
        let claims = URL_SAFE_NO_PAD
            .decode(t.split('.').nth(1).unwrap())
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&claims).unwrap(),
            r#"{"iss":"w","lnk":"1","iat":100}"#
        );
    }
}
