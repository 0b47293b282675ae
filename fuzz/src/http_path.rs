//! `http_path`: the document root's wall, `resolve_target`, on arbitrary targets.
//!
//! Input: any bytes, read as (lossy) UTF-8: the request target.
//!
//! Checks:
//! - no panic;
//! - an accepted target yields only normal components: none empty, `.`, `..` or dots only, none
//!   holding `/`, `\`, NUL or a control character; the relative path has no root and only
//!   `Component::Normal` parts, as many as the components;
//! - decoding happens once: the components, each fully percent-encoded again, resolve to
//!   themselves (a second decoding would have changed any `%` they hold).

use std::path::Component;

use warren_proto::http::resolve_target;

/// Run one input; panics on a failed check.
pub fn run(data: &[u8]) {
    check(&String::from_utf8_lossy(data));
}

/// The checks above for one target.
pub fn check(target: &str) {
    let Ok(path) = resolve_target(target) else { return };
    for c in &path.components {
        assert!(!c.is_empty() && !c.bytes().all(|b| b == b'.'), "{target:?} gave {c:?}");
        assert!(!c.contains(['/', '\\', '\0']) && !c.chars().any(char::is_control), "{target:?} gave {c:?}");
    }
    let rel = path.to_relative_path();
    assert!(!rel.has_root() && rel.components().all(|c| matches!(c, Component::Normal(_))), "{rel:?}");
    assert_eq!(rel.components().count(), path.components.len());
    let mut encoded: String = path
        .components
        .iter()
        .map(|c| format!("/{}", c.bytes().map(|b| format!("%{b:02x}")).collect::<String>()))
        .collect();
    if encoded.is_empty() {
        encoded.push('/'); // the root
    }
    let again = resolve_target(&encoded).expect("encoded components resolve");
    assert_eq!(again.components, path.components);
}
