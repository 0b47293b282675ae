//! Modules by content: a module's id is the SHA-256 of its bytes, so two nodes that hold the
//! same id hold the same code, and a host compiles each id once.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// The SHA-256 of a module's bytes, shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct ModuleId(pub [u8; 32]);

impl ModuleId {
    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> ModuleId {
        ModuleId(Sha256::digest(bytes).into())
    }
}

impl fmt::Display for ModuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for ModuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModuleId({self})")
    }
}

/// A module id that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a module id is 64 hex digits (a SHA-256), not {0:?}")]
pub struct BadModuleId(pub String);

impl FromStr for ModuleId {
    type Err = BadModuleId;

    fn from_str(text: &str) -> Result<ModuleId, BadModuleId> {
        let bad = || BadModuleId(text.to_owned());
        if text.len() != 64 || !text.is_ascii() {
            return Err(bad());
        }
        let mut id = [0u8; 32];
        for (byte, pair) in id.iter_mut().zip(text.as_bytes().chunks(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(ModuleId(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_the_sha256_and_round_trips_through_hex() {
        let id = ModuleId::of(b"abc");
        let hex = id.to_string();
        assert_eq!(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(hex.parse::<ModuleId>(), Ok(id));
    }

    #[test]
    fn malformed_ids_are_refused() {
        for text in ["", "ab", &"g".repeat(64), &"a".repeat(63), &"é".repeat(32)] {
            assert_eq!(text.parse::<ModuleId>(), Err(BadModuleId(text.to_owned())), "{text:?}");
        }
    }
}
