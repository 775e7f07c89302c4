//! Format legacy: tsugi-php's `AesOpenSSL` token, what unmodified Tsugi servers mint.
//!
//! `base64(iv || HMAC-SHA256(key, ct || iv) || ct)` with `key = SHA-256(secret)` and
//! `ct = AES-256-CBC(key, iv, PKCS#7(plaintext))`.

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::Mac;

use super::claims::{Format, Scope, Verified};
use crate::error::{Error, Rejection, Result};
use crate::model::Plaintext;
use crate::secret::{Key, Keyring};

type Encryptor = cbc::Encryptor<aes::Aes256>;
type Decryptor = cbc::Decryptor<aes::Aes256>;

const IV: usize = 16;
const MAC: usize = 32;
const BLOCK: usize = 16;

pub(crate) fn mint(keyring: &Keyring, plain: &str) -> Result<String> {
    let mut iv = [0u8; IV];
    getrandom::fill(&mut iv).map_err(|_| Error::Random)?;
    Ok(seal(keyring.minting(), &iv, plain.as_bytes()))
}

/// Encrypts with a given IV. Only `mint` (with a random IV) and tests call this.
pub(crate) fn seal(key: &Key, iv: &[u8; IV], plain: &[u8]) -> String {
    let ct =
        Encryptor::new(&key.legacy_key.into(), iv.into()).encrypt_padded_vec_mut::<Pkcs7>(plain);
    let mac = key
        .legacy_mac
        .clone()
        .chain_update(&ct)
        .chain_update(iv)
        .finalize()
        .into_bytes();
    let mut raw = Vec::with_capacity(IV + MAC + ct.len());
    raw.extend_from_slice(iv);
    raw.extend_from_slice(&mac);
    raw.extend_from_slice(&ct);
    STANDARD.encode(raw)
}

pub(crate) fn verify(keyring: &Keyring, token: &str) -> Result<Verified> {
    let raw = STANDARD
        .decode(token)
        .map_err(|_| Error::InvalidToken(Rejection::Encoding))?;
    if raw.len() < IV + MAC + BLOCK || (raw.len() - IV - MAC) % BLOCK != 0 {
        return Err(Error::InvalidToken(Rejection::LegacyLength));
    }
    let (iv, rest) = raw.split_at(IV);
    let (mac, ct) = rest.split_at(MAC);
    let key = keyring
        .keys()
        .iter()
        .find(|k| {
            k.legacy_mac
                .clone()
                .chain_update(ct)
                .chain_update(iv)
                .verify_slice(mac)
                .is_ok()
        })
        .ok_or(Error::InvalidToken(Rejection::Signature))?;
    let plain = Decryptor::new(&key.legacy_key.into(), iv.into())
        .decrypt_padded_vec_mut::<Pkcs7>(ct)
        .map_err(|_| Error::InvalidToken(Rejection::LegacyPadding))?;
    let plain =
        String::from_utf8(plain).map_err(|_| Error::InvalidToken(Rejection::LegacyPlaintext))?;
    let plaintext =
        Plaintext::parse(&plain).ok_or(Error::InvalidToken(Rejection::LegacyPlaintext))?;
    Ok(Verified {
        plaintext,
        format: Format::Legacy,
        issued_at: None,
        expires_at: None,
        scope: Scope::Browser,
        room: None,
    })
}
