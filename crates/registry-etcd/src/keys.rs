//! How the registry lies in etcd's key space, under a prefix (default `/warren/`):
//!
//! ```text
//! <prefix>ep/<key>/<transport>/<address>/<port>   →  {"endpoint": {...}, "owner": "<hmac hex>",
//!                                                      "name": "<spelling>"}
//! <prefix>lease/<lease id, 32 hex digits>         →  "<hmac hex>" (attached to the lease)
//! <prefix>token.key                               →  the token key, 64 hex digits
//! ```
//!
//! One key per endpoint: a name is bound exactly while it has an endpoint key, so when etcd
//! deletes the last leased key of a name the name is gone too, with no second key to keep in
//! step. Every endpoint carries its name's owner (the token's keyed hash, never the token), so
//! any one key answers "who may change this name". A name's key is its case-folded form, so every
//! spelling reaches the same keys; each value also carries the name as spelt when it was created
//! (values written before names had case have none, and their names are their lowercase keys),
//! and every write to a bound name copies the spelling its keys already have. Each lease has a key naming the token that
//! registered it, attached to the lease so that it goes with it: renewals and releases check it.
//! The token key is written once, by the first registry instance that finds none, and read by
//! every other. Values are JSON so that `etcdctl get --prefix /warren/` reads well.

use serde::{Deserialize, Serialize};
use warren_registry::model::{Endpoint, Error, LeaseId, Name, TokenHash};

/// Keys of one registry in etcd.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Keys { prefix }
    }

    /// Every endpoint of every name whose name starts with `name_prefix` lies under this prefix
    /// (names cannot contain `/`, so `ep/foo` covers `foo` and `foobar` as `list("foo")` wants).
    /// The prefix must be case-folded (`fold_prefix`), as the keys are.
    pub fn names_with_prefix(&self, name_prefix: &str) -> String {
        format!("{}ep/{name_prefix}", self.prefix)
    }

    /// The endpoints of exactly one name, in any spelling.
    pub fn name(&self, name: &Name) -> String {
        format!("{}ep/{}/", self.prefix, name.key())
    }

    pub fn endpoint(&self, name: &Name, e: &Endpoint) -> String {
        format!("{}{}/{}/{}", self.name(name), e.transport, e.addr, e.port)
    }

    /// The record of who registered a lease.
    pub fn lease(&self, lease: LeaseId) -> String {
        format!("{}lease/{lease}", self.prefix)
    }

    /// The registry's token key.
    pub fn token_key(&self) -> String {
        format!("{}token.key", self.prefix)
    }

    /// The name an endpoint key and its value belong to, spelt as the value says.
    pub fn name_of(&self, key: &[u8], value: &Stored) -> Result<Name, Error> {
        let key = std::str::from_utf8(key).map_err(|_| corrupt("a key that is not UTF-8"))?;
        let rest = key.strip_prefix(&self.prefix).and_then(|k| k.strip_prefix("ep/")).ok_or_else(|| corrupt(key))?;
        let folded = rest.split('/').next().ok_or_else(|| corrupt(key))?;
        value.name_under(folded)
    }
}

/// The value stored under an endpoint key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stored {
    pub endpoint: Endpoint,
    pub owner: String,
    /// The name as spelt; `None` in values written before names had case (then it is the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Stored {
    pub fn new(name: &Name, endpoint: Endpoint, owner: &TokenHash) -> Stored {
        Stored { endpoint, owner: hex(owner), name: Some(name.to_string()) }
    }

    /// The name this value belongs to, stored under `key` (the name's case-folded form).
    pub fn name_under(&self, key: &str) -> Result<Name, Error> {
        let spelling = self.name.as_deref().unwrap_or(key);
        match Name::new(spelling) {
            Ok(name) if name.key() == key => Ok(name),
            _ => Err(corrupt(&format!("an endpoint of {spelling:?} under the key {key:?}"))),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("endpoints serialise")
    }

    pub fn decode(bytes: &[u8]) -> Result<Stored, Error> {
        serde_json::from_slice(bytes).map_err(|e| corrupt(&format!("an endpoint value ({e})")))
    }

    pub fn owned_by(&self, owner: &TokenHash) -> bool {
        self.owner == hex(owner)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes `hex` wrote.
pub fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(text).ok()?;
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

fn corrupt(what: &str) -> Error {
    Error::Unavailable(format!("etcd holds {what} this registry did not write"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_keys_sit_under_their_name_and_give_it_back() {
        let keys = Keys::new("/w");
        let name = Name::new("db.eu").unwrap();
        let e = Endpoint::tcp("[::1]:5432".parse().unwrap());
        let key = keys.endpoint(&name, &e);
        assert_eq!(key, "/w/ep/db.eu/tcp/::1/5432");
        assert!(key.starts_with(&keys.name(&name)) && key.starts_with(&keys.names_with_prefix("db")));
        let value = Stored::new(&name, e, &[0; 32]);
        assert_eq!(keys.name_of(key.as_bytes(), &value).unwrap(), name);
        assert!(keys.name_of(b"/other/ep/x/tcp/1/1", &value).is_err());
    }

    #[test]
    fn every_spelling_has_the_folded_key_and_the_value_keeps_the_spelling() {
        let keys = Keys::new("/w/");
        let e = Endpoint::tcp("127.0.0.1:1099".parse().unwrap());
        let (mixed, lower) = (Name::new("HelloServer").unwrap(), Name::new("helloserver").unwrap());
        assert_eq!(keys.endpoint(&mixed, &e), "/w/ep/helloserver/tcp/127.0.0.1/1099");
        assert_eq!(keys.endpoint(&lower, &e), keys.endpoint(&mixed, &e));
        let key = keys.endpoint(&mixed, &e);
        let value = Stored::decode(&Stored::new(&mixed, e.clone(), &[0; 32]).encode()).unwrap();
        assert_eq!(keys.name_of(key.as_bytes(), &value).unwrap().as_str(), "HelloServer");
        // A value from before names had case: the name is its key.
        let old = Stored::decode(
            br#"{"endpoint":{"addr":"127.0.0.1","port":1099,"transport":"Tcp","weight":1,"meta":{}},"owner":"00"}"#,
        )
        .unwrap();
        assert_eq!(keys.name_of(key.as_bytes(), &old).unwrap().as_str(), "helloserver");
        // A key that is not folded, or a spelling of another name, was not written by a registry.
        assert!(keys.name_of(b"/w/ep/HelloServer/tcp/127.0.0.1/1099", &old).is_err());
        let other = Stored { name: Some("Other".into()), ..old };
        assert!(keys.name_of(key.as_bytes(), &other).is_err());
    }

    #[test]
    fn values_round_trip_and_name_their_owner() {
        let owner = [7u8; 32];
        let name = Name::new("Web").unwrap();
        let stored = Stored::new(&name, Endpoint::tcp("127.0.0.1:80".parse().unwrap()), &owner);
        let back = Stored::decode(&stored.encode()).unwrap();
        assert!(back.owned_by(&owner) && !back.owned_by(&[8; 32]));
        assert_eq!((back.endpoint, back.name.as_deref()), (stored.endpoint, Some("Web")));
        assert!(Stored::decode(b"{}").is_err());
    }
}
