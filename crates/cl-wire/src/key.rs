//! The cluster key: the shared secret that authenticates every frame between the nodes.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

type HmacSha256 = Hmac<Sha256>;

/// Length in bytes of the HMAC-SHA256 tag that ends every frame.
pub(crate) const TAG_LEN: usize = 32;

/// The cluster's shared secret, ready to sign and verify frames.
///
/// Only the keyed HMAC state is kept: cloning it for each frame is cheaper than keying again, and
/// the raw key bytes are then never held here at all. `Debug` prints the length only.
#[derive(Clone)]
pub struct ClusterKey {
    mac: HmacSha256,
    len: usize,
}

/// Why bytes or text could not become a [`ClusterKey`].
#[derive(Debug, Clone, PartialEq, Error)]
pub enum KeyError {
    /// Fewer than [`ClusterKey::MIN_LEN`] bytes.
    #[error(
        "the cluster key is {len} bytes; at least {min} bytes (128 bits, {hex} hexadecimal \
         characters) are needed; `clbuild --genkey` makes one",
        min = ClusterKey::MIN_LEN,
        hex = ClusterKey::MIN_LEN * 2
    )]
    TooShort {
        /// How many bytes were given.
        len: usize,
    },
    /// The text is not an even number of hexadecimal digits (whitespace aside).
    /// The error never quotes the key's text: a key file may be a link to any file.
    #[error("the cluster key is not hexadecimal text ({}); `clbuild --genkey` makes one", describe(.0))]
    NotHex(hex::FromHexError),
}

/// What is wrong with the text, without quoting any of it.
fn describe(e: &hex::FromHexError) -> String {
    match e {
        hex::FromHexError::InvalidHexCharacter { index, .. } => {
            format!("a character other than 0-9 and a-f at position {}", index + 1)
        }
        hex::FromHexError::OddLength => "an odd number of digits".to_string(),
        hex::FromHexError::InvalidStringLength => "a wrong number of digits".to_string(),
    }
}

impl ClusterKey {
    /// Fewest key bytes accepted: 128 bits, the same floor clconf.xml checking applies.
    pub const MIN_LEN: usize = 16;

    /// A key from raw bytes (at least [`Self::MIN_LEN`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() < Self::MIN_LEN {
            return Err(KeyError::TooShort { len: bytes.len() });
        }
        // HMAC is defined for keys of any length (RFC 2104 §2), so this cannot fail.
        let mac = HmacSha256::new_from_slice(bytes).expect("HMAC accepts keys of any length");
        Ok(ClusterKey { mac, len: bytes.len() })
    }

    /// A key from hex text, as in a key file from `clbuild --genkey` (64 hex digits and a
    /// newline); whitespace anywhere is ignored, so wrapped or indented keys work too.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = hex::decode(compact).map_err(KeyError::NotHex)?;
        Self::from_bytes(&bytes)
    }

    /// Length of the key in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a key has at least [`Self::MIN_LEN`] bytes (here for clippy's `len` rule).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A short, non-secret fingerprint (the key's MAC of a fixed label): two nodes can compare
    /// keys, and logs can name them, without revealing them.
    pub fn fingerprint(&self) -> String {
        hex::encode(&self.sign(b"linuxha key fingerprint")[..6])
    }

    /// The HMAC-SHA256 tag of `data`.
    pub(crate) fn sign(&self, data: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.mac.clone();
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is the HMAC-SHA256 tag of `data`, compared in constant time by the hmac
    /// crate so that the time taken does not tell a forger how many leading bytes were right.
    pub(crate) fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.mac.clone();
        mac.update(data);
        mac.verify_slice(tag).is_ok()
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKey(<{} bytes, redacted>)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_tell_keys_apart_without_showing_them() {
        let a = ClusterKey::from_bytes(&[1u8; 32]).expect("key");
        let b = ClusterKey::from_bytes(&[2u8; 32]).expect("key");
        assert_eq!(a.fingerprint(), ClusterKey::from_bytes(&[1u8; 32]).expect("key").fingerprint());
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 12);
    }

    const GENKEY_FILE: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";

    #[test]
    fn key_file_text_with_newline_is_accepted() {
        let key = ClusterKey::from_hex(GENKEY_FILE).expect("valid key");
        assert_eq!(key.len(), 32);
        let bytes: Vec<u8> = (0u8..32).collect();
        let same = ClusterKey::from_bytes(&bytes).expect("valid key");
        assert_eq!(key.sign(b"x"), same.sign(b"x"));
    }

    #[test]
    fn whitespace_anywhere_in_hex_is_ignored() {
        let spaced = "  0001 0203\t0405060708090a0b\r\n0c0d0e0f101112131415161718191a1b1c1d1e1f \n";
        let a = ClusterKey::from_hex(spaced).expect("valid key");
        let b = ClusterKey::from_hex(GENKEY_FILE).expect("valid key");
        assert_eq!(a.sign(b"x"), b.sign(b"x"));
    }

    #[test]
    fn uppercase_hex_is_the_same_key() {
        let a = ClusterKey::from_hex(&GENKEY_FILE.to_uppercase()).expect("valid key");
        let b = ClusterKey::from_hex(GENKEY_FILE).expect("valid key");
        assert_eq!(a.sign(b"x"), b.sign(b"x"));
    }

    #[test]
    fn keys_shorter_than_128_bits_are_refused() {
        assert_eq!(
            ClusterKey::from_bytes(&[7; 15]).expect_err("refused"),
            KeyError::TooShort { len: 15 }
        );
        assert_eq!(
            ClusterKey::from_hex("00112233445566778899aabbccddee").expect_err("refused"),
            KeyError::TooShort { len: 15 }
        );
        assert!(ClusterKey::from_bytes(&[7; 16]).is_ok());
        assert_eq!(ClusterKey::from_hex("").expect_err("refused"), KeyError::TooShort { len: 0 });
    }

    #[test]
    fn non_hex_and_odd_length_text_is_refused() {
        assert!(matches!(
            ClusterKey::from_hex(&GENKEY_FILE.replace('a', "g")),
            Err(KeyError::NotHex(_))
        ));
        assert!(matches!(
            ClusterKey::from_hex(&GENKEY_FILE[..63]),
            Err(KeyError::NotHex(hex::FromHexError::OddLength))
        ));
        let secret = ClusterKey::from_hex(&GENKEY_FILE.replace('a', "Z")).expect_err("refused");
        assert!(!secret.to_string().contains('Z'), "the key's text is never quoted: {secret}");
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let key = ClusterKey::from_hex(GENKEY_FILE).expect("valid key");
        let shown = format!("{key:?} {key:#?}");
        assert_eq!(format!("{key:?}"), "ClusterKey(<32 bytes, redacted>)");
        for needle in ["0001", "0102", "1f", "[0,", "31"] {
            assert!(!shown.contains(needle), "{shown} contains {needle}");
        }
    }

    #[test]
    fn errors_say_how_to_make_a_key() {
        let msg = ClusterKey::from_bytes(&[1; 3]).expect_err("refused").to_string();
        assert!(msg.contains("3 bytes") && msg.contains("clbuild --genkey"), "{msg}");
    }
}
