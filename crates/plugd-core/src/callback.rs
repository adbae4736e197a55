//! Signed callback URLs: `{base}/bk_plugin/callback/{token}/`, or `{callback_base}/callback/{token}/`.
//!
//! A token is `{trace_id}.{callback_id}.{expires_unix}.{signature}`, where the signature is the
//! hex HMAC-SHA256 of the first three parts under a server secret. The token carries everything
//! needed to find the invocation, so a server that serves many plugins needs no lookup table, and
//! nothing secret: knowing a token lets one post that one callback, which is its purpose.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use plugd_sdk::{CallbackPreparation, CallbackPreparer};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::new_trace_id;

/// How long a callback URL stays valid unless configured otherwise: 7 days.
pub const DEFAULT_CALLBACK_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Issues and verifies signed callback URLs.
#[derive(Clone)]
pub struct SignedCallbacks {
    secret: Vec<u8>,
    /// What `/callback/{token}/` is appended to.
    callback_base: String,
    ttl: Duration,
}

impl std::fmt::Debug for SignedCallbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("SignedCallbacks").field("callback_base", &self.callback_base).field("ttl", &self.ttl).finish()
    }
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackClaims {
    /// The invocation to re-run.
    pub trace_id: String,
    /// The prepared callback.
    pub callback_id: String,
    /// Unix time after which the token is refused.
    pub expires_at: u64,
}

/// Why a token was refused. Messages never echo the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not of the form `trace.callback.expiry.signature`.
    #[error("malformed callback token")]
    Malformed,
    /// The signature does not match: forged or altered.
    #[error("callback token signature is invalid")]
    BadSignature,
    /// Signed, but past its expiry.
    #[error("callback token has expired")]
    Expired,
}

type HmacSha256 = Hmac<Sha256>;

impl SignedCallbacks {
    /// Signs with `secret` and builds URLs as `{base_url}/bk_plugin/callback/{token}/` (no trailing
    /// slash needed on `base_url`), valid for [`DEFAULT_CALLBACK_TTL`].
    pub fn new(secret: &[u8], base_url: &str) -> SignedCallbacks {
        SignedCallbacks {
            secret: secret.to_vec(),
            callback_base: format!("{}/bk_plugin", base_url.trim_end_matches('/')),
            ttl: DEFAULT_CALLBACK_TTL,
        }
    }

    /// Builds URLs as `{callback_base}/callback/{token}/` instead: behind the BlueKing API gateway,
    /// whose `callback` resource lives under the stage URL (`https://bkapi.example.com/api/app/prod`).
    pub fn with_callback_base(mut self, callback_base: &str) -> SignedCallbacks {
        self.callback_base = callback_base.trim_end_matches('/').to_owned();
        self
    }

    /// Sets how long new URLs stay valid.
    pub fn with_ttl(mut self, ttl: Duration) -> SignedCallbacks {
        self.ttl = ttl;
        self
    }

    /// A random 32-byte secret, for a process that keeps no state (`plugd run`).
    pub fn random_secret() -> Vec<u8> {
        rand::random::<[u8; 32]>().to_vec()
    }

    /// The URL a token is posted to.
    pub fn url_for(&self, token: &str) -> String {
        format!("{}/callback/{token}/", self.callback_base)
    }

    /// A token for `trace_id` and `callback_id` that expires at `expires_at` (Unix seconds).
    pub fn token(&self, trace_id: &str, callback_id: &str, expires_at: u64) -> String {
        let payload = format!("{trace_id}.{callback_id}.{expires_at}");
        let signature = hex::encode(self.mac(&payload).finalize().into_bytes());
        format!("{payload}.{signature}")
    }

    /// Checks a token's form, signature (in constant time) and expiry against `now`.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<CallbackClaims, TokenError> {
        let (payload, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let mut parts = payload.split('.');
        let (Some(trace_id), Some(callback_id), Some(expires), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let is_id = |s: &str| s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !is_id(trace_id) || !is_id(callback_id) {
            return Err(TokenError::Malformed);
        }
        // One spelling per token: digits without sign or leading zeros, lower-case hex, as issued.
        let expires_at: u64 = expires.parse().map_err(|_| TokenError::Malformed)?;
        let is_lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if expires != expires_at.to_string() || !is_lower_hex(signature) {
            return Err(TokenError::Malformed);
        }
        let signature = hex::decode(signature).map_err(|_| TokenError::Malformed)?;
        let expected = self.mac(payload).finalize().into_bytes();
        if !bool::from(expected.as_slice().ct_eq(&signature)) {
            return Err(TokenError::BadSignature);
        }
        if unix_secs(now) >= expires_at {
            return Err(TokenError::Expired);
        }
        Ok(CallbackClaims { trace_id: trace_id.to_owned(), callback_id: callback_id.to_owned(), expires_at })
    }

    fn mac(&self, payload: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC accepts keys of any length");
        mac.update(b"plugd-callback-v1|");
        mac.update(payload.as_bytes());
        mac
    }
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl CallbackPreparer for SignedCallbacks {
    fn prepare_callback(&self, trace_id: &str) -> Result<CallbackPreparation, String> {
        let id = new_trace_id();
        let expires_at = unix_secs(SystemTime::now()) + self.ttl.as_secs();
        let url = self.url_for(&self.token(trace_id, &id, expires_at));
        Ok(CallbackPreparation { id, url, example: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "0123456789abcdef0123456789abcdef";
    const ID: &str = "fedcba9876543210fedcba9876543210";

    fn signer() -> SignedCallbacks {
        SignedCallbacks::new(b"test secret", "http://127.0.0.1:9000/")
    }

    #[test]
    fn a_prepared_url_verifies() {
        let signer = signer();
        let prep = signer.prepare_callback(TRACE).unwrap();
        let token = prep.url.strip_prefix("http://127.0.0.1:9000/bk_plugin/callback/").unwrap();
        let token = token.strip_suffix('/').unwrap();
        let claims = signer.verify(token, SystemTime::now()).unwrap();
        assert_eq!(claims.trace_id, TRACE);
        assert_eq!(claims.callback_id, prep.id);
    }

    #[test]
    fn forged_altered_expired_and_malformed_tokens_are_refused() {
        let signer = signer();
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let token = signer.token(TRACE, ID, 2_000);
        assert!(signer.verify(&token, now).is_ok());
        assert_eq!(signer.verify(&token, UNIX_EPOCH + Duration::from_secs(2_000)), Err(TokenError::Expired));
        let other = SignedCallbacks::new(b"other secret", "http://x");
        assert_eq!(other.verify(&token, now), Err(TokenError::BadSignature));
        let altered = token.replacen("2000", "9000", 1);
        assert_eq!(signer.verify(&altered, now), Err(TokenError::BadSignature));
        for bad in ["", "abc", "a.b.c.d", &format!("{TRACE}.{ID}.x.00"), &format!("{TRACE}.{ID}.1.zz")] {
            assert_eq!(signer.verify(bad, now), Err(TokenError::Malformed), "{bad}");
        }
    }

    #[test]
    fn only_the_issued_spelling_of_a_token_verifies() {
        let signer = signer();
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let token = signer.token(TRACE, ID, 2_000);
        let (payload, signature) = token.rsplit_once('.').unwrap();
        let upper = format!("{payload}.{}", signature.to_ascii_uppercase());
        let padded = token.replacen(".2000.", ".02000.", 1);
        let signed = token.replacen(".2000.", ".+2000.", 1);
        for variant in [upper, padded, signed] {
            assert_eq!(signer.verify(&variant, now), Err(TokenError::Malformed), "{variant}");
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        assert!(!format!("{:?}", signer()).contains("test secret"));
    }
}
