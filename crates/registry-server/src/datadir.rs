//! The embedded store's data directory: private to its user, and holding the registry's token
//! key.
//!
//! The directory is made with mode 0700, and an existing one that its group or others may
//! enter is refused (as PostgreSQL refuses such a data directory, and OpenSSH such a key): the
//! store holds every name's owner. The key (`token.key`, 32 random bytes, mode 0600) is made on
//! first start and read on every later one; token hashes are HMACs under it, so a copy of the
//! store alone does not let anyone test token guesses.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use warren_registry::model::{Error, TokenKey};

/// The key's file name in the data directory.
pub const KEY_FILE: &str = "token.key";

/// Makes `dir` (and missing parents) with mode 0700, or checks that an existing one is closed to
/// its group and others. Also the object server's data directory.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    let fail = |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display()));
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(fail)?;
    let mode = std::fs::metadata(dir).map_err(fail)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(std::io::Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "{}: mode {:o} lets others in; the data must stay private (chmod 700 it)",
                dir.display(),
                mode & 0o777
            ),
        ));
    }
    Ok(())
}

/// The token key kept in `dir`, made (32 random bytes, mode 0600, synced) if there is none.
pub fn token_key(dir: &Path) -> Result<TokenKey, Error> {
    let path = dir.join(KEY_FILE);
    let fail = |e: std::io::Error| storage(format!("{}: {e}", path.display()));
    match std::fs::File::open(&path) {
        Ok(mut file) => {
            let mode = file.metadata().map_err(fail)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(storage(format!("{}: mode {:o}; it must be 0600", path.display(), mode & 0o777)));
            }
            let mut key = [0u8; TokenKey::LEN];
            let mut rest = Vec::new();
            file.read_exact(&mut key).and_then(|()| file.read_to_end(&mut rest)).map_err(fail)?;
            if !rest.is_empty() {
                return Err(storage(format!("{}: not a key ({} bytes expected)", path.display(), TokenKey::LEN)));
            }
            Ok(TokenKey::new(key))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let key = TokenKey::random()?;
            let mut file =
                std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(fail)?;
            file.write_all(key.bytes()).and_then(|()| file.sync_all()).map_err(fail)?;
            // The key must outlive a crash as surely as the hashes made with it.
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(fail)?;
            Ok(key)
        }
        Err(e) => Err(fail(e)),
    }
}

fn storage(why: String) -> Error {
    Error::Unavailable(format!("store: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_and_key_are_private_and_the_key_is_kept() {
        let dir = std::env::temp_dir().join(format!("warren-datadir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let inner = dir.join("a/b");
        private_dir(&inner).unwrap();
        assert_eq!(std::fs::metadata(&inner).unwrap().permissions().mode() & 0o777, 0o700);
        let key = token_key(&inner).unwrap();
        assert_eq!(std::fs::metadata(inner.join(KEY_FILE)).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(token_key(&inner).unwrap().bytes(), key.bytes(), "read back, not made again");
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(private_dir(&inner).is_err(), "a directory others may enter is refused");
        std::fs::set_permissions(inner.join(KEY_FILE), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(token_key(&inner).is_err(), "a key others may read is refused");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
