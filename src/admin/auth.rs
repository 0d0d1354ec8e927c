//! The admin API key check: `Authorization: Bearer <key>`, or HTTP Basic with the key as the
//! password (so a person can open the dashboard in a browser, which asks for it).
//!
//! The comparison takes the same time whatever the candidate: both sides are hashed to fixed
//! length digests first (so neither the key's length nor the position of the first differing
//! byte shows in the timing), and the digests are compared without an early exit.

use base64::Engine as _;
use http::HeaderMap;
use http::header::AUTHORIZATION;
use sha1::{Digest, Sha1};

/// The configured key, as a digest; None: every request is allowed.
#[derive(Debug)]
pub struct ApiKey {
    /// SHA-1 of the key.
    digest: Option<[u8; 20]>,
}

fn digest(bytes: &[u8]) -> [u8; 20] {
    Sha1::digest(bytes).into()
}

/// Equal digests, compared in constant time.
fn same(a: &[u8; 20], b: &[u8; 20]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ApiKey {
    /// The check for `key` (None: no key configured).
    pub fn new(key: Option<&str>) -> ApiKey {
        ApiKey {
            digest: key.map(|k| digest(k.as_bytes())),
        }
    }

    /// Whether a request with these headers may proceed.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.digest else {
            return true;
        };
        let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let Some((scheme, credentials)) = value.trim().split_once(' ') else {
            return false;
        };
        let credentials = credentials.trim();
        let candidate = if scheme.eq_ignore_ascii_case("bearer") {
            credentials.as_bytes().to_vec()
        } else if scheme.eq_ignore_ascii_case("basic") {
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(credentials) else {
                return false;
            };
            match decoded.iter().position(|b| *b == b':') {
                Some(colon) => decoded[colon + 1..].to_vec(),
                None => return false,
            }
        } else {
            return false;
        };
        same(expected, &digest(&candidate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn bearer_and_basic_carry_the_key() {
        let key = ApiKey::new(Some("s3cret"));
        assert!(key.allows(&headers("Bearer s3cret")));
        assert!(key.allows(&headers("bearer  s3cret ")));
        let basic = base64::engine::general_purpose::STANDARD.encode("admin:s3cret");
        assert!(key.allows(&headers(&format!("Basic {basic}"))));
        assert!(!key.allows(&headers("Bearer s3cre")));
        assert!(!key.allows(&headers("Bearer s3cret2")));
        assert!(!key.allows(&headers("Token s3cret")));
        assert!(!key.allows(&HeaderMap::new()));
        assert!(ApiKey::new(None).allows(&HeaderMap::new()));
    }
}
