//! `Root` and `Dir` on real temporary directories: opens that stay beneath, every way out
//! refused, and the writes a store makes.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::symlink;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::stat::{SFlag, fstat};

use super::*;

/// A temporary tree: `outside/secret`, `root/a/b.txt` and links in and out, removed on drop.
struct Tree {
    base: PathBuf,
}

impl Tree {
    fn new() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let base = std::env::temp_dir().join(format!("warren-beneath-test-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(base.join("root/a")).unwrap();
        fs::create_dir_all(base.join("outside")).unwrap();
        fs::write(base.join("outside/secret"), "secret").unwrap();
        fs::write(base.join("root/a/b.txt"), "bee").unwrap();
        symlink(base.join("outside"), base.join("root/abs")).unwrap();
        symlink("../outside", base.join("root/rel")).unwrap();
        symlink("a", base.join("root/inside")).unwrap();
        symlink("../a/b.txt", base.join("root/a/up")).unwrap();
        Self { base }
    }

    fn root(&self) -> Root {
        Root::new(self.base.join("root")).unwrap()
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.base);
    }
}

fn read(fd: OwnedFd) -> String {
    let mut s = String::new();
    File::from(fd).read_to_string(&mut s).unwrap();
    s
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

#[test]
fn the_root_and_what_lies_beneath_it() {
    let tree = Tree::new();
    let root = tree.root();
    assert_eq!(root.path(), fs::canonicalize(tree.base.join("root")).unwrap());
    assert_eq!(read(root.open("a/b.txt", OFlag::O_RDONLY).unwrap()), "bee");
    assert_eq!(read(root.open("inside/b.txt", OFlag::O_RDONLY).unwrap()), "bee", "a link inside is followed");
    assert_eq!(read(root.open("a/up", OFlag::O_RDONLY).unwrap()), "bee", "also when it climbs");
    for itself in ["", "."] {
        let st = fstat(root.open(itself, OFlag::O_PATH).unwrap()).unwrap();
        assert_eq!(kind(&st), SFlag::S_IFDIR, "{itself:?}");
    }
    assert!(Root::new(tree.base.join("root/a/b.txt")).is_err(), "a file is no root");
    assert!(Root::new(tree.base.join("missing")).is_err());
}

#[test]
fn every_way_out_is_refused() {
    let tree = Tree::new();
    let root = tree.root();
    for path in ["..", "../outside/secret", "abs/secret", "rel/secret", "a/../../outside/secret", "/etc/passwd"] {
        assert_eq!(root.open(path, OFlag::O_RDONLY).map(drop), Err(Errno::EXDEV), "{path}");
    }
    // Beneath a Dir means beneath that directory, not only beneath the root.
    let a = root.open_dir("a").unwrap();
    assert_eq!(a.open_dir("..").map(drop), Err(Errno::EXDEV));
    assert_eq!(a.open_dir("up").map(drop), Err(Errno::EXDEV), "up climbs out of a");
}

#[test]
fn directories_made_files_created_renamed_and_removed() {
    let tree = Tree::new();
    let root = tree.root();
    let top = root.open_dir("").unwrap();
    top.make_dir("new", 0o755).unwrap();
    top.make_dir("new", 0o755).unwrap();
    top.make_dir("inside", 0o755).unwrap();
    let new = top.open_dir("new").unwrap();
    assert_eq!(top.open_dir_nofollow("inside").map(drop), Err(Errno::ENOTDIR), "a link does not stand in");

    let mut file = new.create_new("f.part", 0o644).unwrap();
    file.write_all(b"data").unwrap();
    assert_eq!(new.create_new("f.part", 0o644).map(drop), Err(Errno::EEXIST));
    let a = top.open_dir("inside").unwrap();
    new.rename("f.part", &a, "f").unwrap();
    new.sync().unwrap();
    a.sync().unwrap();
    assert_eq!(fs::read(tree.base.join("root/a/f")).unwrap(), b"data");
    assert_eq!(new.names().unwrap(), Vec::<OsString>::new());

    let mut names = a.names().unwrap();
    names.sort();
    assert_eq!(names, ["b.txt", "f", "up"]);
    assert_eq!(kind(&top.stat("inside").unwrap()), SFlag::S_IFDIR);
    assert_eq!(kind(&top.lstat("inside").unwrap()), SFlag::S_IFLNK);

    a.unlink("f").unwrap();
    assert_eq!(a.unlink("f"), Err(Errno::ENOENT));
    assert_eq!(top.unlink("new"), Err(Errno::EISDIR));
    assert!(!tree.base.join("root/a/f").exists());
}
