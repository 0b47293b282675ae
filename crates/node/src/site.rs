//! The node's own site: what the `http` builtin serves when its configuration names no `root`.
//!
//! A directory made for it, `$XDG_DATA_HOME/warren/www` (else `~/.local/share/warren/www`),
//! holding an `index.html` written on first use and never overwritten after, so an operator may
//! edit it. Serving the current directory instead would hand out whatever `warren up` was started
//! in: a repository's `.git`, keys, build trees.

use std::io::{self, ErrorKind};
use std::path::PathBuf;

/// The page written into a new site directory.
const INDEX: &str = include_str!("site/index.html");

/// The site directory, made (with its index page) when missing.
pub fn default_root() -> io::Result<PathBuf> {
    let dir = data_home()?.join("warren/www");
    std::fs::create_dir_all(&dir).map_err(|e| with_path(e, &dir))?;
    let index = dir.join("index.html");
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&index) {
        Ok(mut file) => io::Write::write_all(&mut file, INDEX.as_bytes()).map_err(|e| with_path(e, &index))?,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(with_path(e, &index)),
    }
    Ok(dir)
}

/// `$XDG_DATA_HOME`, else `$HOME/.local/share`.
fn data_home() -> io::Result<PathBuf> {
    let non_empty = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    non_empty("XDG_DATA_HOME")
        .or_else(|| non_empty("HOME").map(|home| home.join(".local/share")))
        .ok_or_else(|| io::Error::new(ErrorKind::NotFound, "neither XDG_DATA_HOME nor HOME is set for the http site"))
}

fn with_path(e: io::Error, path: &std::path::Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}
