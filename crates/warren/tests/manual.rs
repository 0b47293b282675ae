//! The man pages and shell completions `warren` generates, read by the tools that use them:
//! groff and man for the pages, bash's completion machinery for the script.

mod support;

use std::process::Command;

use support::{T, command, run};

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("warren-manual-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn man_writes_a_page_per_command_that_groff_renders_without_warnings() {
    let dir = scratch("man");
    let (status, out, err) = run(command(&["man", "--out", dir.to_str().unwrap()]), b"", T);
    assert!(status.success(), "{err}");
    let pages: Vec<&str> = out.lines().collect();
    for expected in ["warren.1", "warren-up.1", "warren-serve.1", "warren-files-put.1", "warren-bench-http.1"] {
        assert!(pages.iter().any(|p| p.ends_with(&format!("/{expected}"))), "no {expected} in {pages:#?}");
    }
    assert!(!pages.iter().any(|p| p.ends_with("-help.1")), "help is not a command of its own");
    // -k: the pages are UTF-8 (help text has arrows and ellipses), read through preconv as man does.
    for page in &pages {
        let out = Command::new("groff").args(["-k", "-man", "-Tutf8", "-ww", "-z", page]).output().expect("groff runs");
        assert!(out.status.success() && out.stderr.is_empty(), "{page}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // man(1) formats a page as a reader sees it: the flags and their help are there.
    let up = dir.join("warren-up.1");
    let out = Command::new("man").arg("-l").arg(&up).env("MANWIDTH", "100").env("MAN_KEEP_FORMATTING", "0").output();
    // Bold and underline come as overstrikes (a character, a backspace, a character), as col -b
    // would read them: keep the last character of each.
    let mut text = String::new();
    for c in String::from_utf8_lossy(&out.expect("man runs").stdout).chars() {
        match c {
            '\u{8}' => drop(text.pop()),
            c => text.push(c),
        }
    }
    assert!(text.contains("warren-up") || text.contains("warren up"), "{text}");
    assert!(text.contains("--grace") && text.contains("--kill-after"), "{text}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bash_completes_subcommands_and_flags_from_the_generated_script() {
    let dir = scratch("bash");
    std::fs::create_dir_all(&dir).unwrap();
    let (status, script, err) = run(command(&["completions", "bash"]), b"", T);
    assert!(status.success(), "{err}");
    let path = dir.join("warren.bash");
    std::fs::write(&path, script).unwrap();
    // Bash's own completion machinery: the function the script registers for `warren`, called as
    // readline would call it for `warren se<TAB>` and `warren up --gr<TAB>`.
    let complete = |words: &str, current: usize| {
        let shell = format!(
            "source {}; f=$(complete -p warren | sed -E 's/.*-F ([^ ]+).*/\\1/'); \
             COMP_WORDS=({words}); COMP_CWORD={current}; COMP_LINE=\"{words}\"; COMP_POINT=${{#COMP_LINE}}; \
             $f warren \"${{COMP_WORDS[$COMP_CWORD]}}\" \"${{COMP_WORDS[$COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            path.display()
        );
        let out = Command::new("bash").args(["--norc", "-c", &shell]).output().expect("bash runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let subcommands = complete("warren se", 1);
    assert!(subcommands.lines().any(|l| l == "serve"), "{subcommands}");
    let flags = complete("warren up --gr", 2);
    assert!(flags.lines().any(|l| l == "--grace"), "{flags}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn completions_refuse_an_unknown_shell_naming_the_ones_there_are() {
    let (status, _, err) = run(command(&["completions", "tcsh"]), b"", T);
    assert!(!status.success());
    assert!(err.contains("tcsh") && err.contains("bash") && err.contains("zsh"), "{err}");
}
