//! Registry names: case-insensitive and case-preserving, as DNS names are (RFC 4343) and as
//! Consul's service names are.
//!
//! `HelloServer`, `helloserver` and `HELLOSERVER` are one name: they compare, hash and order
//! alike, reach one stored record, and match the same `list` and `watch` prefixes. Each `Name`
//! also keeps the spelling it was made from, which is what it shows (`Display`, `as_str`, the
//! wire, JSON). The stores keep the spelling a name was first bound or registered with for as
//! long as the name exists: a later write spelt otherwise changes its endpoints, not its
//! spelling (see [`crate::backend`]).

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::model::Error;

/// The longest name: a DNS name's limit, so that `<name>.<zone>` can still be asked for.
pub const MAX_NAME: usize = 253;
/// The longest label (dot-separated part) of a name, as in DNS.
pub const MAX_LABEL: usize = 63;

/// A registered name: 1–253 bytes of ASCII letters, digits, `-`, `_` and `.`, in dot-separated
/// labels of 1–63 bytes.
///
/// Identity is the **key**, the name with ASCII letters lowercased: `Eq`, `Ord`, `Hash` and
/// `Borrow<str>` all use it, so they agree with each other as `BTreeMap` and `HashMap` require,
/// and a map keyed by `Name` is searched by `&str` with the *folded* string ([`fold`] it first:
/// `map.get("HelloServer")` finds nothing, `map.get(&*fold("HelloServer"))` does). The
/// **spelling** is carried beside the key and is what the name shows; two names that differ
/// only in spelling are equal.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name {
    key: String,
    /// The spelling, when it differs from the key (most names are spelt in lowercase).
    spelling: Option<String>,
}

impl Name {
    pub fn new(name: impl Into<String>) -> Result<Name, Error> {
        let name = name.into();
        let bad = |why: &str| Err(Error::Invalid(format!("name {name:?}: {why}")));
        if name.is_empty() || name.len() > MAX_NAME {
            return bad("must be 1 to 253 bytes");
        }
        if let Some(c) = name.chars().find(|&c| !is_name_char(c)) {
            return bad(&format!("{c:?} is not allowed (ASCII letters, digits, '-', '_', '.')"));
        }
        if name.split('.').any(|label| label.is_empty() || label.len() > MAX_LABEL) {
            return bad("every dot-separated label must be 1 to 63 bytes");
        }
        let key = fold(&name);
        let spelling = (key != name).then_some(name);
        Ok(Name { key, spelling })
    }

    /// The name as spelt: what it shows everywhere.
    pub fn as_str(&self) -> &str {
        self.spelling.as_deref().unwrap_or(&self.key)
    }

    /// The case-folded form (ASCII letters lowercased): the name's identity, the key it is
    /// stored under, and what `Borrow<str>` gives.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// The case-folded form of a name or prefix: ASCII letters lowercased, nothing else touched.
pub fn fold(text: &str) -> String {
    text.to_ascii_lowercase()
}

/// Checks a prefix for `list` and `watch` (the empty string, for everything, or a prefix of some
/// valid name) and folds it: a prefix matches names case-insensitively, by their keys.
pub fn fold_prefix(prefix: &str) -> Result<String, Error> {
    if prefix.len() > MAX_NAME || !prefix.chars().all(is_name_char) {
        return Err(Error::Invalid(format!("prefix {prefix:?}: not a prefix of any valid name")));
    }
    Ok(fold(prefix))
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.key == other.key
    }
}

impl Eq for Name {}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes, so that `Borrow<str>` lookups in hash maps find it.
        self.key.as_str().hash(state);
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Name) -> Ordering {
        self.key.cmp(&other.key)
    }
}

// The folded key, so that maps of names can be searched by `&str` (prefix ranges), consistently
// with `Eq`, `Ord` and `Hash`.
impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.key
    }
}

impl TryFrom<String> for Name {
    type Error = Error;
    fn try_from(s: String) -> Result<Name, Error> {
        Name::new(s)
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.spelling.unwrap_or(n.key)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Name").field(&self.as_str()).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::hash::BuildHasher;

    use proptest::prelude::*;

    use super::*;

    fn name(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    #[test]
    fn names_follow_dns_rules_in_either_case() {
        for ok in ["a", "web", "web.eu", "a-b_c.d9", &"x".repeat(63), "HelloServer", "ComputeEngine", "Web.EU"] {
            assert!(Name::new(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "a..b", "a.", ".a", "a b", "a/b", "é", "a\u{212a}", &"x".repeat(64), &"a.".repeat(127)] {
            assert!(Name::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn spellings_are_one_name_and_each_shows_its_own() {
        let (mixed, lower, upper) = (name("HelloServer"), name("helloserver"), name("HELLOSERVER"));
        assert_eq!(mixed, lower);
        assert_eq!(lower, upper);
        assert_eq!((mixed.key(), lower.key()), ("helloserver", "helloserver"));
        assert_eq!((mixed.to_string(), upper.as_str()), ("HelloServer".to_owned(), "HELLOSERVER"));
        assert_eq!(format!("{mixed:?}"), "Name(\"HelloServer\")");
    }

    #[test]
    fn maps_keyed_by_name_hold_one_record_per_name_and_keep_the_first_key() {
        let mut tree = BTreeMap::new();
        tree.insert(name("HelloServer"), 1);
        tree.insert(name("helloserver"), 2);
        assert_eq!(tree.len(), 1);
        assert_eq!(tree.keys().next().unwrap().as_str(), "HelloServer", "insert keeps the key");
        assert_eq!(tree.get("helloserver"), Some(&2));
        assert_eq!(tree.get(&*fold("HELLOSERVER")), Some(&2));
        let mut hash = HashMap::new();
        hash.insert(name("ComputeEngine"), 1);
        assert_eq!(hash.get("computeengine"), Some(&1), "Hash agrees with Borrow<str>");
        assert_eq!(hash.get(&name("COMPUTEENGINE")), Some(&1));
    }

    #[test]
    fn the_wire_carries_the_spelling_and_reading_it_back_folds_again() {
        let mixed = name("HelloServer");
        let bytes = postcard::to_stdvec(&mixed).unwrap();
        assert_eq!(bytes, b"\x0bHelloServer");
        let back: Name = postcard::from_bytes(&bytes).unwrap();
        assert_eq!((back.as_str(), back.key()), ("HelloServer", "helloserver"));
        // Names written before spellings were kept are lowercase: already folded.
        let old: Name = postcard::from_bytes(b"\x03web").unwrap();
        assert_eq!((old.as_str(), old.key()), ("web", "web"));
        assert!(postcard::from_bytes::<Name>(b"\x03a b").is_err(), "validated when read");
    }

    #[test]
    fn prefixes_are_checked_and_folded() {
        assert_eq!(fold_prefix("Hello").unwrap(), "hello");
        assert_eq!(fold_prefix("").unwrap(), "");
        assert_eq!(fold_prefix("web.").unwrap(), "web.", "a prefix may end in a dot");
        assert!(fold_prefix("a/b").is_err());
        assert!(fold_prefix(&"x".repeat(254)).is_err());
    }

    fn spelling() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_-]{1,8}(\\.[a-zA-Z0-9_-]{1,8}){0,2}"
    }

    /// The same letters in a random mix of cases.
    fn respelt(s: &str, flips: &[bool]) -> String {
        s.chars()
            .zip(flips.iter().cycle())
            .map(|(c, &up)| if up { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
            .collect()
    }

    proptest! {
        #[test]
        fn equality_hash_and_order_ignore_case_and_agree_with_borrow(
            a in spelling(),
            b in spelling(),
            flips in proptest::collection::vec(any::<bool>(), 1..8),
        ) {
            let (na, nb) = (name(&a), name(&b));
            let ra = name(&respelt(&a, &flips));
            // Respelling changes nothing but what is shown.
            prop_assert_eq!(&na, &ra);
            prop_assert_eq!(na.cmp(&ra), Ordering::Equal);
            prop_assert_eq!(ra.key(), fold(&a));
            let h = std::collections::hash_map::RandomState::new();
            prop_assert_eq!(h.hash_one(&na), h.hash_one(&ra));
            prop_assert_eq!(h.hash_one(&na), h.hash_one(<Name as Borrow<str>>::borrow(&na)));
            // Eq and Ord agree with the borrowed keys, as BTreeMap and HashMap need.
            let (ka, kb): (&str, &str) = (na.borrow(), nb.borrow());
            prop_assert_eq!(na.cmp(&nb), ka.cmp(kb));
            prop_assert_eq!(na == nb, ka == kb);
            // A prefix matches whatever the case of either side.
            let cut = a.len().min(flips.len());
            let inverse: Vec<bool> = flips.iter().map(|up| !up).collect();
            let prefix = fold_prefix(&respelt(&a[..cut], &inverse)).unwrap();
            prop_assert!(ra.key().starts_with(&prefix));
            // Display and the wire give back the spelling.
            prop_assert_eq!(ra.to_string(), respelt(&a, &flips));
            prop_assert_eq!(String::from(na.clone()), a);
        }
    }
}
