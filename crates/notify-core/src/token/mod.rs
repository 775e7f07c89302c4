//! Minting and verifying tokens in either format, under one policy.
//!
//! `claims` holds what the formats share; `v1` and `legacy` are the formats; this
//! module, the policy, uses all three. The formats never reach up into it.

mod claims;
mod legacy;
mod v1;

pub use claims::{Format, Scope, Verified, LEEWAY_SECS, MAX_TOKEN_BYTES};

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Rejection, Result};
use crate::model::{Plaintext, Room};
use crate::secret::Keyring;

/// Token lifetime when none is configured: one day.
pub const DEFAULT_TTL_SECS: u64 = 86_400;

/// Mints and verifies tokens with one keyring, lifetime, legacy switch and clock.
#[derive(Debug, Clone)]
pub struct Tokens<C = SystemClock> {
    keyring: Keyring,
    ttl: u64,
    accept_legacy: bool,
    leeway: u64,
    clock: C,
}

impl Tokens<SystemClock> {
    /// Defaults: one day of lifetime, legacy tokens accepted, the system clock.
    pub fn new(keyring: Keyring) -> Self {
        Tokens {
            keyring,
            ttl: DEFAULT_TTL_SECS,
            accept_legacy: true,
            leeway: LEEWAY_SECS.unsigned_abs(),
            clock: SystemClock,
        }
    }
}

impl<C: Clock> Tokens<C> {
    /// Uses another clock.
    pub fn with_clock<D: Clock>(self, clock: D) -> Tokens<D> {
        Tokens {
            keyring: self.keyring,
            ttl: self.ttl,
            accept_legacy: self.accept_legacy,
            leeway: self.leeway,
            clock,
        }
    }

    /// Lifetime of minted v1 tokens in seconds; 0 mints tokens without `exp`.
    pub fn with_ttl(mut self, secs: u64) -> Self {
        self.ttl = secs;
        self
    }

    /// How far apart the minting and verifying clocks may be, in seconds: a v1 token
    /// issued up to this far in the future, or expired up to this long ago, is still
    /// accepted ([`LEEWAY_SECS`] unless set; at most one hour).
    pub fn with_leeway(mut self, secs: u64) -> Self {
        self.leeway = secs.min(3600);
        self
    }

    /// The clock leeway in seconds.
    pub fn leeway(&self) -> u64 {
        self.leeway
    }

    /// Whether [`Tokens::verify`] accepts legacy tokens.
    pub fn accept_legacy(mut self, yes: bool) -> Self {
        self.accept_legacy = yes;
        self
    }

    /// The lifetime of minted tokens in seconds.
    pub fn ttl(&self) -> u64 {
        self.ttl
    }

    /// The secrets in use.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Whether legacy tokens are accepted.
    pub fn accepts_legacy(&self) -> bool {
        self.accept_legacy
    }

    /// Mints a v1 token with the first secret.
    pub fn mint(&self, plaintext: &Plaintext, scope: Scope) -> Result<String> {
        self.mint_with_ttl(plaintext, scope, self.ttl)
    }

    /// Mints a v1 token with the first secret and a lifetime of its own (0: none).
    pub fn mint_with_ttl(&self, plaintext: &Plaintext, scope: Scope, ttl: u64) -> Result<String> {
        Ok(v1::mint(
            &self.keyring,
            plaintext,
            scope,
            None,
            self.clock.now(),
            ttl,
        ))
    }

    /// Mints a v1 token with the first secret, good only for one room of the space
    /// (the `rom` claim), with a lifetime of its own (0: none).
    pub fn mint_for_room(
        &self,
        plaintext: &Plaintext,
        scope: Scope,
        room: &Room,
        ttl: u64,
    ) -> Result<String> {
        Ok(v1::mint(
            &self.keyring,
            plaintext,
            scope,
            Some(room),
            self.clock.now(),
            ttl,
        ))
    }

    /// Mints a legacy token with the first secret and a fresh IV from the OS CSPRNG.
    /// Legacy tokens never expire and carry no scope.
    pub fn mint_legacy(&self, plaintext: &Plaintext) -> Result<String> {
        legacy::mint(&self.keyring, &plaintext.to_string())
    }

    /// For a v1 token refused as [`Rejection::NotYetValid`]: who issued it (its `iss`,
    /// the site's wwwroot) and how many seconds ahead of this clock it was issued. Only
    /// a token whose signature verifies is reported, so the issuer is authentic. `None`
    /// for any other token.
    pub fn ahead_of_clock(&self, token: &str) -> Option<(String, u64)> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES || !token.contains('.') {
            return None;
        }
        let now = self.clock.now();
        // Any issue time is taken here (and any expiry); the caller's check refused it.
        let verified = v1::verify(&self.keyring, token, now, u64::MAX).ok()?;
        let ahead = verified.issued_at?.checked_sub(now)?;
        let ahead = u64::try_from(ahead).ok()?;
        (ahead > self.leeway).then(|| (verified.plaintext.wwwroot().to_owned(), ahead))
    }

    /// Verifies a token of either format for the given use. Every failure is
    /// [`Error::InvalidToken`]; its [`Rejection`] says why, for a debug log. A token
    /// bound to a room ([`Verified::room`]) is good only for that room: check it with
    /// [`Verified::for_room`].
    pub fn verify(&self, token: &str, scope: Scope) -> Result<Verified> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(Error::InvalidToken(Rejection::Size));
        }
        let verified = if token.contains('.') {
            v1::verify(&self.keyring, token, self.clock.now(), self.leeway)?
        } else if self.accept_legacy {
            legacy::verify(&self.keyring, token)?
        } else {
            return Err(Error::InvalidToken(Rejection::LegacyDisabled));
        };
        if verified.scope != scope {
            return Err(Error::InvalidToken(Rejection::Scope));
        }
        Ok(verified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FixedClock;

    #[test]
    fn a_token_from_the_future_names_its_issuer_and_how_far_ahead() {
        let keyring = Keyring::new(["s"]).unwrap();
        let p = Plaintext::new("https://lms.example.edu", "1", None, Some("7")).unwrap();
        let minted_at = |now| {
            Tokens::new(keyring.clone())
                .with_clock(FixedClock(now))
                .mint(&p, Scope::Browser)
                .unwrap()
        };
        let here = Tokens::new(keyring.clone()).with_clock(FixedClock(1_000));
        let ahead = minted_at(1_095);
        assert_eq!(
            here.verify(&ahead, Scope::Browser).unwrap_err().rejection(),
            Some(Rejection::NotYetValid)
        );
        assert_eq!(
            here.ahead_of_clock(&ahead),
            Some(("https://lms.example.edu".to_owned(), 95))
        );
        // Within the leeway, behind, another secret, a legacy token: nothing to report.
        assert_eq!(here.ahead_of_clock(&minted_at(1_060)), None);
        assert_eq!(here.ahead_of_clock(&minted_at(900)), None);
        let stranger = Tokens::new(Keyring::new(["other"]).unwrap()).with_clock(FixedClock(1_095));
        assert_eq!(
            here.ahead_of_clock(&stranger.mint(&p, Scope::Browser).unwrap()),
            None
        );
        assert_eq!(here.ahead_of_clock(&here.mint_legacy(&p).unwrap()), None);
        assert_eq!(here.ahead_of_clock(""), None);
        // A wider leeway takes the token, and then it is not reported either.
        let tolerant = here.clone().with_leeway(120);
        assert!(tolerant.verify(&ahead, Scope::Browser).is_ok());
        assert_eq!(tolerant.ahead_of_clock(&ahead), None);
    }
}
