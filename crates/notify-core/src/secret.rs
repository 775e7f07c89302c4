//! Secrets, kept only as the keyed MAC state derived from them (never printed).

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// The MAC state of one secret, keyed once and cloned for each use.
#[derive(Clone)]
pub(crate) struct Key {
    /// HMAC-SHA256 keyed with the secret itself: v1 signatures.
    pub(crate) v1: HmacSha256,
    /// SHA-256 of the secret: the legacy AES-256 key and HMAC key.
    pub(crate) legacy_key: [u8; 32],
    /// HMAC-SHA256 keyed with `legacy_key`: legacy MACs.
    pub(crate) legacy_mac: HmacSha256,
    /// HMAC-SHA256 keyed with HMAC-SHA256(secret, [`BACKPLANE_KEY_LABEL`]): messages
    /// between daemons. A key of its own, so that no backplane MAC can ever stand for
    /// a token signature or the other way round.
    pub(crate) backplane: HmacSha256,
}

/// What the backplane key is derived under.
pub(crate) const BACKPLANE_KEY_LABEL: &[u8] = b"tsugi-notify backplane envelope v1";

impl Key {
    fn new(secret: &[u8]) -> Result<Self> {
        if secret.is_empty() {
            return Err(Error::NoSecret);
        }
        let legacy_key: [u8; 32] = Sha256::digest(secret).into();
        let v1 = HmacSha256::new_from_slice(secret).map_err(|_| Error::NoSecret)?;
        let derived = v1
            .clone()
            .chain_update(BACKPLANE_KEY_LABEL)
            .finalize()
            .into_bytes();
        Ok(Key {
            v1,
            legacy_key,
            legacy_mac: HmacSha256::new_from_slice(&legacy_key).map_err(|_| Error::NoSecret)?,
            backplane: HmacSha256::new_from_slice(&derived).map_err(|_| Error::NoSecret)?,
        })
    }
}

/// One or more secrets: the first mints, any one verifies (key rotation).
/// Cloning shares the keyed state (no rekeying, no copy).
#[derive(Clone)]
pub struct Keyring {
    keys: Arc<[Key]>,
}

impl Keyring {
    /// Builds a keyring. Refuses an empty list and any empty secret.
    pub fn new<I, S>(secrets: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        let keys = secrets
            .into_iter()
            .map(|s| Key::new(s.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        if keys.is_empty() {
            return Err(Error::NoSecret);
        }
        Ok(Keyring { keys: keys.into() })
    }

    /// How many secrets the keyring holds (at least one).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: a keyring holds at least one secret.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key that mints.
    pub(crate) fn minting(&self) -> &Key {
        // `new` guarantees at least one key.
        &self.keys[0]
    }

    /// Every key that verifies.
    pub(crate) fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// The backplane MAC of `parts` (concatenated) under the first secret's derived key.
    pub fn sign_backplane(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.minting().backplane.clone();
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is the backplane MAC of `parts` under any secret (constant time).
    pub fn verify_backplane(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        self.keys.iter().any(|k| {
            let mut mac = k.backplane.clone();
            for p in parts {
                mac.update(p);
            }
            mac.verify_slice(tag).is_ok()
        })
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keyring({} secrets, MASKED)", self.keys.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secret_bytes() {
        let k = Keyring::new(["hunter2", "older"]).unwrap();
        let shown = format!("{k:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("older"),
            "{shown}"
        );
    }

    #[test]
    fn backplane_macs_rotate_and_differ_from_token_macs() {
        let old = Keyring::new(["old"]).unwrap();
        let both = Keyring::new(["new", "old"]).unwrap();
        let tag = old.sign_backplane(&[b"chan", b"body"]);
        assert!(both.verify_backplane(&[b"chan", b"body"], &tag));
        assert!(!both.verify_backplane(&[b"chan", b"bodz"], &tag));
        assert!(!Keyring::new(["new"])
            .unwrap()
            .verify_backplane(&[b"chan", b"body"], &tag));
        let v1: [u8; 32] = HmacSha256::new_from_slice(b"old")
            .unwrap()
            .chain_update(b"chanbody")
            .finalize()
            .into_bytes()
            .into();
        assert_ne!(v1, tag, "a key of its own");
        assert!(!both.verify_backplane(&[b"chan", b"body"], &tag[..31]));
    }

    #[test]
    fn refuses_empty_secrets() {
        assert_eq!(
            Keyring::new(Vec::<&str>::new()).unwrap_err(),
            Error::NoSecret
        );
        assert_eq!(Keyring::new(["a", ""]).unwrap_err(), Error::NoSecret);
    }
}
