//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>): every request carries
//! `webhook-id` (the event id, the same on every retry so receivers can dedup),
//! `webhook-timestamp` (unix seconds of this attempt) and `webhook-signature`, a
//! space-separated list of `v1,<base64 HMAC-SHA256>` over `"{id}.{timestamp}.{body}"`, one per
//! signing secret. During a secret rotation both the new and the replaced secret sign, so a
//! receiver holding either one accepts the request.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The prefix of a Standard Webhooks secret; the rest is the base64 of the key bytes.
pub const SECRET_PREFIX: &str = "whsec_";

/// A secret that is not `whsec_<base64>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signing secret is not whsec_ followed by standard base64")]
pub struct BadSecret;

/// One signing key, decoded from its `whsec_` form.
#[derive(Clone)]
pub struct SigningKey {
    /// The HMAC keyed with the secret's bytes, cloned per signature.
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// Decodes a `whsec_<base64>` secret.
    pub fn parse(secret: &str) -> Result<Self, BadSecret> {
        let encoded = secret.strip_prefix(SECRET_PREFIX).ok_or(BadSecret)?;
        let key = STANDARD.decode(encoded).map_err(|_| BadSecret)?;
        let mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| BadSecret)?;
        Ok(Self { mac })
    }

    /// The `v1,<base64>` signature of one request.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header value: one signature per key, space-separated.
pub fn signature_header(keys: &[SigningKey], id: &str, timestamp: u64, body: &[u8]) -> String {
    keys.iter().map(|k| k.sign(id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The test vector of the Standard Webhooks reference libraries.
    #[test]
    fn signs_the_reference_vector() {
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, br#"{"test": 2432232314}"#);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn every_key_signs_and_bad_secrets_are_refused() {
        let a = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let b = SigningKey::parse(&format!("whsec_{}", STANDARD.encode([7u8; 32]))).unwrap();
        let header = signature_header(&[a.clone(), b.clone()], "id", 1, b"x");
        assert_eq!(header, format!("{} {}", a.sign("id", 1, b"x"), b.sign("id", 1, b"x")));
        assert_eq!(SigningKey::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(), BadSecret);
        assert_eq!(SigningKey::parse("whsec_!!!").unwrap_err(), BadSecret);
    }
}
