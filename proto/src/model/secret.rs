use std::fmt;

use sha2::{Digest, Sha256};

/// A value that never prints: `Debug` and `Display` show it masked.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The value itself, for the one place that must send it (an upstream header).
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: AsRef<str>> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", mask_secret(self.0.as_ref()))
    }
}

impl<T: AsRef<str>> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_secret(self.0.as_ref()))
    }
}

/// Shows the first 6 and last 4 characters of a secret. Shorter secrets show less, so the
/// mask never reveals more than about half of one.
pub fn mask_secret(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    let (head, tail) = match chars.len() {
        0..=7 => (0, 0),
        8..=19 => (2, 2),
        _ => (6, 4),
    };
    let mut out: String = chars[..head].iter().collect();
    out.push_str("...");
    out.extend(&chars[chars.len() - tail..]);
    out
}

/// The stable id of a key: derived from its provider and secret, so that adding the same
/// key twice, even from two clients at once, lands on the same id.
pub fn key_id(provider: &str, secret: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(provider.as_bytes());
    hasher.update([0u8]);
    hasher.update(secret.as_bytes());
    hex(&hasher.finalize()[..8])
}

/// Lowercase hex SHA-256 of a client token: what the store keeps instead of the token.
pub fn token_hash(token: &str) -> String {
    TokenHash::of(token).as_str().to_string()
}

/// [`token_hash`] without an allocation, for the data plane's per-request token check.
pub struct TokenHash([u8; 64]);

impl TokenHash {
    pub fn of(token: &str) -> Self {
        let digest = Sha256::digest(token.as_bytes());
        let mut hex = [0u8; 64];
        for (i, byte) in digest.iter().enumerate() {
            hex[2 * i] = HEX_DIGITS[usize::from(byte >> 4)];
            hex[2 * i + 1] = HEX_DIGITS[usize::from(byte & 0xf)];
        }
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written.
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(HEX_DIGITS[usize::from(b >> 4)] as char);
        out.push(HEX_DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_long_short_and_tiny_secrets() {
        assert_eq!(mask_secret("AIzaSyA1234567890abcdefWXYZ"), "AIzaSy...WXYZ");
        assert_eq!(mask_secret("abcdefghijkl"), "ab...kl");
        assert_eq!(mask_secret("abc"), "...");
        assert_eq!(mask_secret(""), "...");
    }

    #[test]
    fn secret_never_prints_in_full() {
        let secret = Secret::new("sk-proj-0123456789abcdefghij".to_string());
        assert_eq!(format!("{secret}"), "sk-pro...ghij");
        assert_eq!(format!("{secret:?}"), "Secret(sk-pro...ghij)");
    }

    #[test]
    fn key_id_depends_on_provider_and_secret() {
        let a = key_id("p1", "secret-value");
        assert_eq!(a.len(), 16);
        assert_eq!(a, key_id("p1", "secret-value"));
        assert_ne!(a, key_id("p2", "secret-value"));
        assert_ne!(a, key_id("p1", "secret-valuf"));
    }

    #[test]
    fn token_hash_is_sha256_hex() {
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
