//! Which code a host runs: modules signed with ed25519 by a key the host trusts. Unsigned code
//! is refused unless the operator allowed it ([`Unsigned::Allow`]).
//!
//! A signature covers [`signed_message`]: a fixed context string and the module's id. Signing
//! the id rather than the bytes lets an operator sign a module known by its hash, and the
//! context keeps a module signature from being valid as any other message signed by the key.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::ModuleId;

/// What a signature signs before the module's id.
pub const SIGNATURE_CONTEXT: &[u8] = b"warren-agents module v1\0";

/// What a module's signature covers: [`SIGNATURE_CONTEXT`] then the 32 bytes of its id.
pub fn signed_message(id: &ModuleId) -> Vec<u8> {
    [SIGNATURE_CONTEXT, &id.0].concat()
}

/// The context of an order to move or clone an agent, as [`SIGNATURE_CONTEXT`] is a module's.
const ORDER_CONTEXT: &[u8] = b"warren-agents order v1\0";

/// What an order to move agent `agent` to `dest` (or clone it there) signs: its own context,
/// the agent's id (8 bytes, little-endian), 1 for a clone or 0, and the destination.
pub fn order_message(agent: u64, dest: &str, clone: bool) -> Vec<u8> {
    [ORDER_CONTEXT, &agent.to_le_bytes(), &[u8::from(clone)], dest.as_bytes()].concat()
}

/// [`order_message`] with the actions the order asks for its resources (`--bind`), so that
/// they are signed too; without any, the same bytes as [`order_message`].
pub fn order_message_bound(agent: u64, dest: &str, clone: bool, bind: &crate::binding::Overrides) -> Vec<u8> {
    let mut message = order_message(agent, dest, clone);
    let bind = bind.describe();
    if !bind.is_empty() {
        message.extend_from_slice(format!("\0bind:{bind}").as_bytes());
    }
    message
}

/// A module's signature, with the public key that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuleSignature {
    /// The signer's ed25519 public key.
    pub key: [u8; 32],
    /// The ed25519 signature of [`signed_message`].
    pub signature: [u8; 64],
}

impl ModuleSignature {
    /// Signs the module `id` with `key`.
    pub fn sign(id: &ModuleId, key: &SigningKey) -> ModuleSignature {
        ModuleSignature { key: key.verifying_key().to_bytes(), signature: key.sign(&signed_message(id)).to_bytes() }
    }

    /// Signs an order ([`order_message`]) with `key`.
    pub fn sign_order(message: &[u8], key: &SigningKey) -> ModuleSignature {
        ModuleSignature { key: key.verifying_key().to_bytes(), signature: key.sign(message).to_bytes() }
    }
}

/// Whether a host runs modules nobody signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unsigned {
    /// Refuse them (the default).
    #[default]
    Refuse,
    /// Run them: for a host only its operator can reach.
    Allow,
}

/// The keys a host trusts, and what it does with unsigned code.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    keys: Vec<VerifyingKey>,
    unsigned: Unsigned,
}

/// Why a module was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    /// No signature, and the host refuses unsigned code.
    #[error("module {0} is not signed, and this host runs only signed modules")]
    Unsigned(ModuleId),
    /// Signed by a key the host does not trust.
    #[error("module {id} is signed by a key this host does not trust ({key})")]
    UntrustedKey {
        /// The module.
        id: ModuleId,
        /// The key, in hex.
        key: String,
    },
    /// The signature does not verify for this module.
    #[error("module {0}'s signature does not verify")]
    BadSignature(ModuleId),
    /// A trusted key that is not a valid ed25519 point.
    #[error("not an ed25519 public key: {0}")]
    BadKey(String),
}

impl Trust {
    /// Trusts nothing and refuses unsigned code.
    pub fn new() -> Trust {
        Trust::default()
    }

    /// Also trusts `key` (32 bytes of an ed25519 public key).
    pub fn trust_key(mut self, key: [u8; 32]) -> Result<Trust, TrustError> {
        let key = VerifyingKey::from_bytes(&key).map_err(|_| TrustError::BadKey(hex(&key)))?;
        self.keys.push(key);
        Ok(self)
    }

    /// Sets what happens to unsigned code.
    pub fn unsigned(mut self, unsigned: Unsigned) -> Trust {
        self.unsigned = unsigned;
        self
    }

    /// Admits module `id` with `signature`, or says why not.
    pub fn admit(&self, id: &ModuleId, signature: Option<&ModuleSignature>) -> Result<(), TrustError> {
        let Some(signature) = signature else {
            return match self.unsigned {
                Unsigned::Allow => Ok(()),
                Unsigned::Refuse => Err(TrustError::Unsigned(*id)),
            };
        };
        let key = self
            .keys
            .iter()
            .find(|key| key.as_bytes() == &signature.key)
            .ok_or_else(|| TrustError::UntrustedKey { id: *id, key: hex(&signature.key) })?;
        // verify_strict: no malleable or small-order signatures, so one module has one signature
        // per key.
        key.verify_strict(&signed_message(id), &Signature::from_bytes(&signature.signature))
            .map_err(|_| TrustError::BadSignature(*id))
    }

    /// Admits an order ([`order_message`]) signed with `signature`, or says why not: the same
    /// keys vouch for orders as for code, and a host that runs unsigned code takes unsigned
    /// orders.
    pub fn admit_order(&self, message: &[u8], signature: Option<&ModuleSignature>) -> Result<(), String> {
        let Some(signature) = signature else {
            return match self.unsigned {
                Unsigned::Allow => Ok(()),
                Unsigned::Refuse => Err("the order is not signed, and this host takes only signed orders".into()),
            };
        };
        let key = self.keys.iter().find(|key| key.as_bytes() == &signature.key).ok_or_else(|| {
            format!("the order is signed by a key this host does not trust ({})", hex(&signature.key))
        })?;
        key.verify_strict(message, &Signature::from_bytes(&signature.signature))
            .map_err(|_| "the order's signature does not verify".to_owned())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn a_trusted_signature_is_admitted_and_others_are_not() {
        let id = ModuleId::of(b"module");
        let trust = Trust::new().trust_key(key(1).verifying_key().to_bytes()).unwrap();
        assert_eq!(trust.admit(&id, Some(&ModuleSignature::sign(&id, &key(1)))), Ok(()));

        let stranger = ModuleSignature::sign(&id, &key(2));
        assert!(matches!(trust.admit(&id, Some(&stranger)), Err(TrustError::UntrustedKey { .. })));

        let other_module = ModuleSignature::sign(&ModuleId::of(b"other"), &key(1));
        assert_eq!(trust.admit(&id, Some(&other_module)), Err(TrustError::BadSignature(id)));

        let mut flipped = ModuleSignature::sign(&id, &key(1));
        flipped.signature[10] ^= 1;
        assert_eq!(trust.admit(&id, Some(&flipped)), Err(TrustError::BadSignature(id)));
    }

    #[test]
    fn an_order_is_admitted_only_signed_by_a_trusted_key_for_that_agent_and_place() {
        let trust = Trust::new().trust_key(key(1).verifying_key().to_bytes()).unwrap();
        let order = order_message(3, "127.0.0.1:7701", false);
        assert_eq!(trust.admit_order(&order, Some(&ModuleSignature::sign_order(&order, &key(1)))), Ok(()));
        let stranger = ModuleSignature::sign_order(&order, &key(2));
        assert!(trust.admit_order(&order, Some(&stranger)).unwrap_err().contains("does not trust"));
        let elsewhere = ModuleSignature::sign_order(&order_message(3, "127.0.0.1:7702", false), &key(1));
        assert!(trust.admit_order(&order, Some(&elsewhere)).unwrap_err().contains("does not verify"));
        let module = ModuleSignature::sign(&ModuleId::of(b"module"), &key(1));
        assert!(trust.admit_order(&order, Some(&module)).is_err(), "a module signature is no order");
        assert!(trust.admit_order(&order, None).unwrap_err().contains("not signed"));
        assert_eq!(Trust::new().unsigned(Unsigned::Allow).admit_order(&order, None), Ok(()));
    }

    #[test]
    fn unsigned_code_is_refused_unless_allowed() {
        let id = ModuleId::of(b"module");
        assert_eq!(Trust::new().admit(&id, None), Err(TrustError::Unsigned(id)));
        assert_eq!(Trust::new().unsigned(Unsigned::Allow).admit(&id, None), Ok(()));
    }
}
