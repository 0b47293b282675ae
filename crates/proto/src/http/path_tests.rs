//! Tests of `resolve_target`: good targets, the path-escape battery, and proptests of the wall's
//! invariants.

use std::path::Component;

use proptest::prelude::*;

use super::path::{PathError, SafePath, resolve_target};

/// The wall's invariant for any accepted target: only normal, harmless components.
fn assert_safe(target: &str, path: &SafePath) {
    for c in &path.components {
        assert!(!c.is_empty() && c != "." && c != "..", "{target:?} gave component {c:?}");
        assert!(!c.chars().all(|ch| ch == '.'), "{target:?} gave component {c:?}");
        assert!(!c.contains(['/', '\\', '\0']) && !c.chars().any(char::is_control), "{target:?} gave {c:?}");
    }
    let rel = path.to_relative_path();
    assert!(rel.is_relative() && !rel.has_root(), "{target:?} gave {rel:?}");
    assert!(rel.components().all(|c| matches!(c, Component::Normal(_))), "{target:?} gave {rel:?}");
    assert_eq!(rel.components().count(), path.components.len(), "{target:?}");
}

#[test]
fn good_targets() {
    let cases: &[(&str, &[&str], bool)] = &[
        ("/", &[], true),
        ("/index.html", &["index.html"], false),
        ("/a/b/", &["a", "b"], true),
        ("/a//b/./c", &["a", "b", "c"], false),
        ("/a/.", &["a"], true),
        ("/a%20b/%41", &["a b", "A"], false),
        ("/a%2fb", &["a", "b"], false), // a decoded `/` separates like any other
        ("/caf%C3%A9/ünï", &["café", "ünï"], false),
        ("/x?q=/../..#frag", &["x"], false),
        ("/d/?", &["d"], true),
        ("/.hidden/..x/x..", &[".hidden", "..x", "x.."], false),
        ("/%252e%252e/", &["%2e%2e"], true), // decoded once: a literal name
        ("/%25", &["%"], false),
        ("http://host/a/b", &["a", "b"], false),
        ("HTTP://host", &[], true),
        ("https://h:8080/x?y", &["x"], false),
        ("/C:/boot.ini", &["C:", "boot.ini"], false), // a plain name on Unix, under the root
    ];
    for (target, components, trailing) in cases {
        let path = resolve_target(target).unwrap_or_else(|e| panic!("{target:?}: {e}"));
        assert_safe(target, &path);
        assert_eq!(path.components, *components, "{target:?}");
        assert_eq!(path.trailing_slash, *trailing, "{target:?}");
    }
    assert_eq!(resolve_target("/a/b").unwrap().to_relative_path(), std::path::Path::new("a/b"));
    assert_eq!(resolve_target("/").unwrap().to_relative_path(), std::path::Path::new(""));
}

/// Hostile targets: each is refused, or (for the few that decode to a harmless literal name)
/// reduced to safe components.
const HOSTILE: &[&str] = &[
    "/../etc/passwd",
    "/..",
    "/../",
    "/a/../../b",
    "/a/b/../../../etc/passwd",
    "/./././..",
    "/%2e%2e/",
    "/%2E%2E/etc/passwd",
    "/%2e%2e%2fetc%2fpasswd",
    "/%2E%2E%2F",
    "/..%2f",
    "/..%2F..%2Fetc%2Fpasswd",
    "/.%2e/",
    "/%2e./",
    "/%2e",
    "/a/%2e%2e/%2e%2e/b",
    "/%252e%252e/",
    "/%252e%252e%252fetc%252fpasswd",
    "/%25252e%25252e/",
    "/%c0%ae%c0%ae/",
    "/%c0%ae%c0%ae%c0%afetc%c0%afpasswd",
    "/%e0%80%ae%e0%80%ae/",
    "/%c0%2e%c0%2e/",
    "/..\\..\\etc\\passwd",
    "/..\\",
    "/a\\b",
    "/..%5c..%5cetc",
    "/%5c..%5c",
    "/%5C",
    "/etc/passwd%00.html",
    "/%00",
    "/a%00/b",
    "/\0",
    "//etc/passwd",
    "///etc//passwd",
    "/%2fetc/passwd",
    "/%2F%2Fetc%2Fpasswd",
    "/C:/Windows/win.ini",
    "/C:\\Windows\\win.ini",
    "/c%3a%5cwindows",
    "/...",
    "/..../",
    "/a/...",
    "/%0a",
    "/a%0d%0aSet-Cookie:x",
    "/%7f",
    "/%c2%85",
    "/%",
    "/%2",
    "/%zz",
    "/%%32%65",
    "/%u002e%u002e/",
    "..",
    "../etc/passwd",
    "",
    "*",
    "host:80",
    "etc/passwd",
    "file:///etc/passwd",
    "http://host/../etc/passwd",
    "http://host/%2e%2e/",
    "http:///etc/passwd",
    "\\..\\etc",
    "/%ff%fe",
];

#[test]
fn path_escape_battery() {
    assert!(HOSTILE.len() >= 40);
    let mut refused = 0;
    for target in HOSTILE {
        match resolve_target(target) {
            Ok(path) => assert_safe(target, &path),
            Err(e) => {
                assert!(matches!(e.status(), 400 | 403), "{target:?}");
                refused += 1;
            }
        }
    }
    // Only harmless forms get through: `/.`, `%2e%2e`-like literal names, plain names after `//`.
    let allowed: Vec<_> = HOSTILE.iter().filter(|t| resolve_target(t).is_ok()).collect();
    assert_eq!(
        allowed,
        [
            &"/%2e", // `/.`: the root
            &"/%252e%252e/",
            &"/%252e%252e%252fetc%252fpasswd",
            &"/%25252e%25252e/",
            &"//etc/passwd",
            &"///etc//passwd",
            &"/%2fetc/passwd",
            &"/%2F%2Fetc%2Fpasswd",
            &"/C:/Windows/win.ini",
        ]
    );
    assert_eq!(refused + allowed.len(), HOSTILE.len());
    assert_eq!(resolve_target("/%252e%252e%252fetc%252fpasswd").unwrap().components, ["%2e%2e%2fetc%2fpasswd"]);
    assert_eq!(resolve_target("//etc/passwd").unwrap().components, ["etc", "passwd"]);
}

#[test]
fn error_kinds() {
    use PathError::*;
    let cases = [
        ("*", NotOriginForm),
        ("host:80", NotOriginForm),
        ("", NotOriginForm),
        ("ftp://h/x", NotOriginForm),
        ("/%", BadEscape),
        ("/%g0", BadEscape),
        ("/%c0%ae", NotUtf8),
        ("/../x", Forbidden),
        ("/%00", Forbidden),
        ("/a\\b", Forbidden),
    ];
    for (target, want) in cases {
        assert_eq!(resolve_target(target), Err(want), "{target:?}");
    }
    assert_eq!([NotOriginForm, BadEscape, NotUtf8, Forbidden].map(|e| e.status()), [400, 400, 400, 403]);
}

fn encode_all(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

fn hostile_piece() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "/", ".", "..", "%2e", "%2E", "%2f", "%5c", "\\", "%00", "%25", "%252e", "%c0%ae", "a", "%", "?", "#", "%0a",
        "//", "C:", "http://h",
    ])
}

proptest! {
    #[test]
    fn any_string_is_safe_or_refused(target in any::<String>()) {
        if let Ok(path) = resolve_target(&target) {
            assert_safe(&target, &path);
        }
    }

    #[test]
    fn hostile_pieces_are_safe_or_refused(pieces in prop::collection::vec(hostile_piece(), 0..16)) {
        let target = pieces.concat();
        if let Ok(path) = resolve_target(&target) {
            assert_safe(&target, &path);
        }
    }

    /// Decoding happens once: names fully percent-encoded come back exactly as they were.
    #[test]
    fn encoded_names_decode_once(names in prop::collection::vec("[a-zA-Z0-9_%.~ -]{1,8}", 1..5)) {
        prop_assume!(names.iter().all(|n| !n.chars().all(|c| c == '.')));
        let target: String = names.iter().map(|n| format!("/{}", encode_all(n))).collect();
        let path = resolve_target(&target).unwrap();
        prop_assert_eq!(path.components, names);
        prop_assert!(!path.trailing_slash);
    }
}
