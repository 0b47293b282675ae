//! `DocRoot` on real temporary directories: files, directories, and symlinks in and out.

use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::os::unix::fs::symlink;
use std::sync::atomic::{AtomicU64, Ordering};

use warren_proto::http::resolve_target;

use super::*;

/// A temporary tree: `outside/secret.txt` and `root/…`, removed on drop.
struct Tree {
    base: PathBuf,
}

impl Tree {
    fn new() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let base = std::env::temp_dir().join(format!("warren-docroot-test-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        for dir in ["root/docs", "root/empty", "root/sub/deeper", "outside"] {
            fs::create_dir_all(base.join(dir)).unwrap();
        }
        fs::write(base.join("outside/secret.txt"), "secret").unwrap();
        fs::write(base.join("root/a.txt"), "hello").unwrap();
        fs::write(base.join("root/docs/index.html"), "<h1>docs</h1>").unwrap();
        fs::write(base.join("root/sub/deeper/b.txt"), "bee").unwrap();
        symlink(base.join("outside/secret.txt"), base.join("root/leak.txt")).unwrap();
        symlink(base.join("outside"), base.join("root/leakdir")).unwrap();
        symlink("../outside/secret.txt", base.join("root/relleak.txt")).unwrap();
        symlink("sub/deeper/b.txt", base.join("root/inside.txt")).unwrap();
        symlink("../../a.txt", base.join("root/sub/deeper/up.txt")).unwrap();
        symlink("loop", base.join("root/loop")).unwrap();
        Self { base }
    }

    fn root(&self, options: DocRootOptions) -> DocRoot {
        DocRoot::new(self.base.join("root"), options).unwrap()
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.base);
    }
}

fn open(root: &DocRoot, target: &str) -> Result<Entry, FilesError> {
    root.open(&resolve_target(target).unwrap())
}

fn read(entry: Result<Entry, FilesError>) -> String {
    let Ok(Entry::File(f)) = entry else { panic!("not a file: {entry:?}") };
    // At an offset, as the drivers read: a kept file is shared between requests.
    let mut bytes = vec![0; f.len as usize];
    f.file.read_exact_at(&mut bytes, 0).unwrap();
    let mut past = [0u8; 1];
    assert_eq!(f.file.read_at(&mut past, f.len).unwrap(), 0, "longer than announced");
    String::from_utf8(bytes).unwrap()
}

fn file(entry: Result<Entry, FilesError>) -> OpenFile {
    let Ok(Entry::File(f)) = entry else { panic!("not a file: {entry:?}") };
    f
}

#[test]
fn a_file_asked_for_again_is_reused_while_the_path_names_it_unchanged() {
    let tree = Tree::new();
    let root = tree.root(DocRootOptions::default());
    let first = file(open(&root, "/a.txt"));
    let again = file(open(&root, "/a.txt"));
    assert!(Arc::ptr_eq(&first.file, &again.file), "kept and reused");
    assert_eq!((again.len, again.id, again.modified), (first.len, first.id, first.modified));

    // Written in place: opened afresh, and the length is the new one.
    fs::OpenOptions::new().append(true).open(tree.base.join("root/a.txt")).unwrap().write_all(b", world").unwrap();
    assert_eq!(read(open(&root, "/a.txt")), "hello, world");

    // Replaced by another file: that one is served.
    fs::write(tree.base.join("root/new.txt"), "replaced").unwrap();
    fs::rename(tree.base.join("root/new.txt"), tree.base.join("root/a.txt")).unwrap();
    assert_eq!(read(open(&root, "/a.txt")), "replaced");

    // Gone: not found, though a descriptor of it was kept.
    let kept = file(open(&root, "/a.txt"));
    fs::remove_file(tree.base.join("root/a.txt")).unwrap();
    assert!(matches!(open(&root, "/a.txt"), Err(FilesError::NotFound)));
    drop(kept);
}

#[test]
fn a_kept_path_that_now_leads_out_is_refused() {
    let tree = Tree::new();
    let root = tree.root(DocRootOptions::default());
    assert_eq!(read(open(&root, "/sub/deeper/b.txt")), "bee");
    // `sub` becomes a link out of the root, where a `deeper/b.txt` waits.
    fs::create_dir_all(tree.base.join("outside/deeper")).unwrap();
    fs::write(tree.base.join("outside/deeper/b.txt"), "outside").unwrap();
    fs::rename(tree.base.join("root/sub"), tree.base.join("moved")).unwrap();
    symlink(tree.base.join("outside"), tree.base.join("root/sub")).unwrap();
    assert!(matches!(open(&root, "/sub/deeper/b.txt"), Err(FilesError::Forbidden)));
}

#[test]
fn only_so_many_files_are_kept() {
    let tree = Tree::new();
    let root = tree.root(DocRootOptions::default());
    let most = root.most_kept;
    assert!(most > 0 && most <= KEPT_FILES, "{most}");
    for i in 0..most + 10 {
        fs::write(tree.base.join(format!("root/f{i}")), i.to_string()).unwrap();
        assert_eq!(read(open(&root, &format!("/f{i}"))), i.to_string());
    }
    assert_eq!(root.kept().len(), most);
    for i in 0..most + 10 {
        assert_eq!(read(open(&root, &format!("/f{i}"))), i.to_string());
    }
}

#[test]
fn files_inside_the_root_and_links_that_stay_inside() {
    let tree = Tree::new();
    let root = tree.root(DocRootOptions::default());
    assert_eq!(read(open(&root, "/a.txt")), "hello");
    assert_eq!(read(open(&root, "/sub/deeper/b.txt")), "bee");
    assert_eq!(read(open(&root, "/inside.txt")), "bee");
    assert_eq!(read(open(&root, "/sub/deeper/up.txt")), "hello");
}

#[test]
fn symlinks_out_of_the_root_are_refused_unless_configured() {
    let tree = Tree::new();
    let root = tree.root(DocRootOptions::default());
    for target in ["/leak.txt", "/relleak.txt", "/leakdir/secret.txt", "/leakdir/", "/leakdir"] {
        assert!(matches!(open(&root, target), Err(FilesError::Forbidden)), "{target}");
    }
    let open_root = tree.root(DocRootOptions { follow_symlinks_outside: true, ..Default::default() });
    assert_eq!(read(open(&open_root, "/leak.txt")), "secret");
    assert_eq!(read(open(&open_root, "/leakdir/secret.txt")), "secret");
}

#[test]
fn dot_dot_cannot_even_be_asked_for() {
    // The wall's first half: no SafePath holds `..`, in any encoding.
    for target in ["/../outside/secret.txt", "/%2e%2e/outside/secret.txt", "/sub/..%2f..%2foutside"] {
        assert!(resolve_target(target).is_err(), "{target}");
    }
}

#[test]
fn missing_things_and_odd_ones() {
    let tree = Tree::new();
    let root = tree.root(DocRootOptions::default());
    assert!(matches!(open(&root, "/nope.txt"), Err(FilesError::NotFound)));
    assert!(matches!(open(&root, "/nope/a.txt"), Err(FilesError::NotFound)));
    assert!(matches!(open(&root, "/a.txt/x"), Err(FilesError::NotFound)), "a file is no directory");
    assert!(matches!(open(&root, "/loop"), Err(FilesError::Forbidden)), "a symlink loop");
    make_fifo(&tree.base.join("root/fifo"));
    assert!(matches!(open(&root, "/fifo"), Err(FilesError::Forbidden)), "never open a FIFO");
    assert!(DocRoot::new(tree.base.join("root/a.txt"), DocRootOptions::default()).is_err());
    assert!(DocRoot::new(tree.base.join("missing"), DocRootOptions::default()).is_err());
}

/// Makes a FIFO with the `mkfifo` tool (the crate has no libc binding of its own).
fn make_fifo(path: &Path) {
    let status = std::process::Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

#[test]
fn directories_index_listing_or_nothing() {
    let tree = Tree::new();
    let root = tree.root(DocRootOptions::default());
    let Ok(Entry::Dir(Dir { index: Some((name, f)), listing: None })) = open(&root, "/docs/") else {
        panic!("index expected")
    };
    assert_eq!((name.as_str(), f.len), ("index.html", 13));
    assert!(matches!(open(&root, "/empty/"), Ok(Entry::Dir(Dir { index: None, listing: None }))));
    assert!(matches!(open(&root, "/"), Ok(Entry::Dir(Dir { index: None, listing: None }))));

    let listing_root = tree.root(DocRootOptions { listing: true, ..Default::default() });
    let Ok(Entry::Dir(Dir { index: None, listing: Some(entries) })) = open(&listing_root, "/sub/") else {
        panic!("listing expected")
    };
    assert_eq!(entries.iter().map(|e| (e.name.as_str(), e.is_dir)).collect::<Vec<_>>(), [("deeper", true)]);
    let Ok(Entry::Dir(Dir { listing: Some(entries), .. })) = open(&listing_root, "/") else { panic!() };
    let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
    let want = ["a.txt", "docs", "empty", "inside.txt", "leak.txt", "leakdir", "loop", "relleak.txt", "sub"];
    assert_eq!(names, want, "sorted; links out are listed (opening them is refused)");
    assert!(matches!(open(&listing_root, "/docs/"), Ok(Entry::Dir(Dir { index: Some(_), .. }))), "index wins");

    let custom = tree.root(DocRootOptions { index: "b.txt".into(), ..Default::default() });
    assert!(matches!(open(&custom, "/sub/deeper/"), Ok(Entry::Dir(Dir { index: Some(_), .. }))));
}

#[test]
fn an_index_that_links_out_is_not_served() {
    let tree = Tree::new();
    symlink(tree.base.join("outside/secret.txt"), tree.base.join("root/empty/index.html")).unwrap();
    let root = tree.root(DocRootOptions::default());
    assert!(matches!(open(&root, "/empty/"), Ok(Entry::Dir(Dir { index: None, .. }))));
}

#[test]
fn works_with_the_session() {
    use std::time::{Instant, SystemTime};
    use warren_proto::http::Http;
    use warren_proto::{ConnInfo, Output, Service, Session, SessionId, Transmit};

    let tree = Tree::new();
    let http = Http::new(Arc::new(tree.root(DocRootOptions::default())));
    let info = ConnInfo { id: SessionId(1), peer: None, wall: SystemTime::now(), seed: 0 };
    let now = Instant::now();
    let mut s = http.new_session(&info, now);
    let mut out = Output::new();
    s.handle_input(now, b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\nGET /leak.txt HTTP/1.1\r\nHost: x\r\n\r\n", &mut out);
    assert!(out.pending().starts_with(b"HTTP/1.1 200 OK\r\n"));
    out.consume(out.pending().len());
    assert!(matches!(out.poll_transmit(), Some(Transmit::File(f)) if f.len == 5));
    out.consume(5);
    assert!(out.pending().starts_with(b"HTTP/1.1 403 Forbidden\r\n"));
}

#[test]
fn dot_files_are_hidden_unless_configured() {
    let tree = Tree::new();
    let root_dir = tree.base.join("root");
    fs::create_dir_all(root_dir.join(".git")).unwrap();
    fs::write(root_dir.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    fs::write(root_dir.join("sub/.env"), "KEY=secret").unwrap();

    let hidden = tree.root(DocRootOptions { listing: true, ..Default::default() });
    for target in ["/.git/HEAD", "/.git/", "/sub/.env", "/.git"] {
        assert!(matches!(open(&hidden, target), Err(FilesError::NotFound)), "{target} must be hidden");
    }
    let Ok(Entry::Dir(Dir { listing: Some(entries), .. })) = open(&hidden, "/") else { panic!("listing expected") };
    assert!(entries.iter().all(|e| !e.name.starts_with('.')), "dot-files left out of the listing");
    assert_eq!(read(open(&hidden, "/a.txt")), "hello", "other files still served");

    let shown = tree.root(DocRootOptions { listing: true, dotfiles: true, ..Default::default() });
    assert_eq!(read(open(&shown, "/.git/HEAD")), "ref: refs/heads/main\n");
    assert_eq!(read(open(&shown, "/sub/.env")), "KEY=secret");
    let Ok(Entry::Dir(Dir { listing: Some(entries), .. })) = open(&shown, "/") else { panic!("listing expected") };
    assert!(entries.iter().any(|e| e.name == ".git"));
}
