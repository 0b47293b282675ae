//! Keys and signatures as text, for files an operator reads and edits: a secret key, a public
//! key and a detached signature are hex on one line, and a trusted-keys file holds one public
//! key per line, with `#` comments. The node reads the trusted keys; `warren agents keygen`,
//! `sign` and `run --key` write and read the rest.

use ed25519_dalek::SigningKey;

use crate::ModuleSignature;

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// `N` bytes from `2N` hex digits, or why not (`what` names them in the message).
pub fn unhex<const N: usize>(text: &str, what: &str) -> Result<[u8; N], String> {
    let bad = || format!("{what} is {} hex digits, not {text:?}", 2 * N);
    if text.len() != 2 * N || !text.is_ascii() {
        return Err(bad());
    }
    let mut bytes = [0u8; N];
    for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
    }
    Ok(bytes)
}

/// A trusted-keys file: one ed25519 public key (64 hex digits) per line; blank lines and `#`
/// comments are skipped. An error names the line.
pub fn parse_trusted(text: &str) -> Result<Vec<[u8; 32]>, String> {
    let mut keys = Vec::new();
    for (at, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if !line.is_empty() {
            keys.push(unhex::<32>(line, "a public key").map_err(|e| format!("line {}: {e}", at + 1))?);
        }
    }
    Ok(keys)
}

/// A secret-key file: the 32-byte ed25519 seed in hex.
pub fn parse_secret(text: &str) -> Result<SigningKey, String> {
    Ok(SigningKey::from_bytes(&unhex::<32>(text.trim(), "a secret key")?))
}

/// A signature file's one line: the signer's public key, a space, the signature.
pub fn format_signature(signature: &ModuleSignature) -> String {
    format!("{} {}\n", hex(&signature.key), hex(&signature.signature))
}

/// Reads what [`format_signature`] wrote.
pub fn parse_signature(text: &str) -> Result<ModuleSignature, String> {
    let mut words = text.split_whitespace();
    let (Some(key), Some(signature), None) = (words.next(), words.next(), words.next()) else {
        return Err("a signature file is one line: the public key and the signature, in hex".into());
    };
    Ok(ModuleSignature { key: unhex(key, "a public key")?, signature: unhex(signature, "a signature")? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ModuleId, Trust};

    #[test]
    fn a_signature_written_and_read_back_admits_its_module() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let secret = parse_secret(&format!("{}\n", hex(&key.to_bytes()))).unwrap();
        let id = ModuleId::of(b"module");
        let signature = parse_signature(&format_signature(&ModuleSignature::sign(&id, &secret))).unwrap();
        let trusted = parse_trusted(&format!("# the operator\n\n{}  # laptop\n", hex(&key.verifying_key().to_bytes())));
        let trust = Trust::new().trust_key(trusted.unwrap()[0]).unwrap();
        assert_eq!(trust.admit(&id, Some(&signature)), Ok(()));
    }

    #[test]
    fn malformed_keys_and_signatures_are_refused_with_the_line() {
        assert_eq!(parse_trusted("\nabc\n"), Err("line 2: a public key is 64 hex digits, not \"abc\"".into()));
        assert!(parse_secret(&"zz".repeat(32)).unwrap_err().starts_with("a secret key is 64 hex digits"));
        assert!(parse_signature("only-one-word").is_err());
        let short = format!("{} {}", "ab".repeat(32), "cd".repeat(10));
        assert!(parse_signature(&short).unwrap_err().starts_with("a signature is 128 hex digits"));
    }
}
