//! Who may do what: credentials with a right each, the right of anonymous clients, and the
//! keys that prove a client identity (so that owed callbacks go only to their client).
//!
//! **Credentials** are bearer tokens, as SFTP servers take keys from `authorized_keys` and
//! etcd its users: the operator lists each token's SHA-256 with a right (`read` or `write`)
//! and a name in a tokens file; the server keeps only the hashes. Tokens are 32 random bytes
//! (`warren files token` makes one), so an unsalted hash is as good as any: there is nothing to
//! guess. A connection without a credential has the anonymous right (`read` unless told).
//!
//! **Client identities** are handed out by the server: a `Hello` for client 0 gets a random
//! id and its key, `HMAC-SHA256(secret, id)` cut to 16 bytes, where the secret is 32 random
//! bytes in the server's state directory (0600). A later `Hello` must bring the key: nobody
//! else can speak for that client and take the callbacks it is owed. The key is checked
//! without a table, so it survives restarts with the secret, and in constant time.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::wire::{ClientKey, Right};

type HmacSha256 = Hmac<Sha256>;

/// Random bytes from the system, or an error that says so.
pub fn random<const N: usize>() -> io::Result<[u8; N]> {
    let mut bytes = [0; N];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
    Ok(bytes)
}

/// Whom quotas count against: the credential's name, else the peer's address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Principal {
    Token(String),
    Peer(IpAddr),
    /// A connection with no address (handed over without one).
    Unknown,
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Token(name) => write!(f, "token {name}"),
            Principal::Peer(ip) => write!(f, "anonymous client {ip}"),
            Principal::Unknown => f.write_str("anonymous client"),
        }
    }
}

/// A credential the server knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    pub right: Right,
    pub name: String,
}

/// What the server trusts: its credentials, the anonymous right, the client-key secret.
pub struct Access {
    /// By the token's SHA-256.
    tokens: HashMap<[u8; 32], Credential>,
    pub anonymous: Right,
    secret: [u8; 32],
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access").field("tokens", &self.tokens.len()).field("anonymous", &self.anonymous).finish()
    }
}

/// Why a tokens file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("line {line}: {why}")]
    Line { line: usize, why: String },
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl Access {
    /// No credentials, anonymous clients with `anonymous`, client keys from `secret`.
    pub fn new(anonymous: Right, secret: [u8; 32]) -> Self {
        Self { tokens: HashMap::new(), anonymous, secret }
    }

    /// Add the credentials of a tokens file's text: one per line, `RIGHT sha256:HEX [NAME]`,
    /// with `#` comments and blank lines. Anything else is refused with its line number.
    pub fn add_tokens(&mut self, text: &str) -> Result<(), TokensError> {
        for (n, raw) in text.lines().enumerate() {
            let line = n + 1;
            let bad = |why: &str| TokensError::Line { line, why: why.to_owned() };
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let fields: Vec<&str> = content.split_whitespace().collect();
            let (right, hash, name) = match fields.as_slice() {
                [right, hash] => (*right, *hash, None),
                [right, hash, name] => (*right, *hash, Some(*name)),
                _ => return Err(bad("expected `read|write sha256:HEX [name]`")),
            };
            let right = match right {
                "read" => Right::Read,
                "write" => Right::Write,
                other => return Err(bad(&format!("unknown right {other:?} (read or write)"))),
            };
            let Some(hex) = hash.strip_prefix("sha256:") else {
                return Err(bad("give the token's hash (sha256:HEX, as `warren files token` prints), not the token"));
            };
            let hash = parse_hex32(hex).ok_or_else(|| bad("sha256: takes 64 hexadecimal digits"))?;
            let name = name.map_or_else(|| hex[..8].to_owned(), str::to_owned);
            if self.tokens.insert(hash, Credential { right, name }).is_some() {
                return Err(bad("this token is listed twice"));
            }
        }
        Ok(())
    }

    /// The credential `token` names, if any. A lookup by hash reveals nothing about the tokens
    /// through its timing: finding a hash tells nothing of a preimage.
    pub fn authenticate(&self, token: &str) -> Option<&Credential> {
        self.tokens.get(&token_hash(token))
    }

    /// A new client identity and its key.
    pub fn new_client(&self) -> io::Result<(u64, ClientKey)> {
        let client = u64::from_le_bytes(random()?).max(1);
        Ok((client, self.key_of(client)))
    }

    /// Whether `key` proves `client` (constant time).
    pub fn proves(&self, client: u64, key: &ClientKey) -> bool {
        client != 0 && self.mac(client).verify_truncated_left(key).is_ok()
    }

    fn key_of(&self, client: u64) -> ClientKey {
        let tag = self.mac(client).finalize().into_bytes();
        tag[..16].try_into().expect("a SHA-256 tag has 32 bytes")
    }

    fn mac(&self, client: u64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes keys of any length");
        mac.update(b"warren files client ");
        mac.update(&client.to_be_bytes());
        mac
    }
}

/// A token's SHA-256.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new token (64 hexadecimal digits of 32 random bytes) and its tokens-file hash.
pub fn new_token() -> io::Result<(String, String)> {
    let token = to_hex(&random::<32>()?);
    let hash = format!("sha256:{}", to_hex(&token_hash(&token)));
    Ok((token, hash))
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The client-key secret at `path`: read, or made (32 random bytes, mode 0600, synced) if the
/// file does not exist. A file of another size is an error, not a new secret: that would
/// silently disown every client.
pub fn load_or_create_secret(path: &Path) -> io::Result<[u8; 32]> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(mut file) => {
            let secret = random::<32>()?;
            file.write_all(&secret)?;
            file.sync_all()?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(secret)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let mut bytes = Vec::new();
            std::fs::File::open(path)?.read_to_end(&mut bytes)?;
            bytes.try_into().map_err(|b: Vec<u8>| {
                io::Error::other(format!("{}: {} bytes, not a 32-byte secret", path.display(), b.len()))
            })
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_file_lines() {
        let (token, hash) = new_token().unwrap();
        let mut access = Access::new(Right::Read, [7; 32]);
        access.add_tokens(&format!("# who\n\nwrite {hash} alice  # the writer\n")).unwrap();
        assert_eq!(access.authenticate(&token), Some(&Credential { right: Right::Write, name: "alice".into() }));
        assert_eq!(access.authenticate("guess"), None);
        let refused = |text: &str| Access::new(Right::Read, [0; 32]).add_tokens(text).unwrap_err().to_string();
        assert!(refused(&format!("write {token}")).contains("line 1: give the token's hash"));
        assert!(refused(&format!("admin {hash}")).contains("unknown right"));
        assert!(refused("read sha256:abc").contains("64 hexadecimal digits"));
        assert!(refused(&format!("read {hash}\nwrite {hash}")).contains("line 2: this token is listed twice"));
    }

    #[test]
    fn a_key_proves_only_its_client_and_only_under_its_secret() {
        let access = Access::new(Right::Read, [1; 32]);
        let (client, key) = access.new_client().unwrap();
        assert!(access.proves(client, &key));
        assert!(!access.proves(client ^ 1, &key));
        assert!(!access.proves(client, &[0; 16]));
        assert!(!access.proves(0, &key));
        assert!(!Access::new(Right::Read, [2; 32]).proves(client, &key));
    }
}
