//! The disk store on a real temporary root.

use super::*;

fn root(tag: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("warren-disk-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    root
}

fn p(s: &str) -> FilePath {
    FilePath::parse(s).unwrap()
}

#[test]
fn an_upload_is_invisible_until_committed_and_gone_when_aborted() {
    let dir = root("commit");
    let store = DiskStore::open(&dir).unwrap();
    let mut sink = store.create(&p("/a/b/c.txt"), 1).unwrap();
    sink.write(b"part").unwrap();
    assert!(matches!(store.open(&p("/a/b/c.txt")), Err(StoreError::NotFound)), "a partial file is never visible");
    assert!(
        store.list(&p("/"), "", usize::MAX).unwrap().0.iter().all(|e| e.name != STATE_DIR),
        "nor is the state directory"
    );
    sink.write(b"ial").unwrap();
    sink.sync().unwrap();
    let meta = sink.commit().unwrap();
    assert_eq!(std::fs::read(dir.join("a/b/c.txt")).unwrap(), b"partial");
    assert_eq!(store.stat(&p("/a/b/c.txt")).unwrap(), meta);
    // Replacing changes the version; aborting leaves the old file and no partial.
    let mut sink = store.create(&p("/a/b/c.txt"), 2).unwrap();
    sink.write(b"new").unwrap();
    sink.abort();
    assert_eq!(std::fs::read(dir.join("a/b/c.txt")).unwrap(), b"partial");
    assert_eq!(std::fs::read_dir(dir.join(".warren/tmp")).unwrap().count(), 0);
    let mut sink = store.create(&p("/a/b/c.txt"), 3).unwrap();
    sink.write(b"newer").unwrap();
    assert_ne!(sink.commit().unwrap().version, meta.version);
    store.delete(&p("/a/b/c.txt")).unwrap();
    assert!(matches!(store.stat(&p("/a/b/c.txt")), Err(StoreError::NotFound)));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn partial_files_of_a_crashed_run_are_removed_on_open() {
    let dir = root("crash");
    let store = DiskStore::open(&dir).unwrap();
    let mut sink = store.create(&p("/x"), 1).unwrap();
    sink.write(b"half").unwrap();
    // A crash: the sink is never dropped, its partial file stays on disk.
    std::mem::forget(sink);
    assert_eq!(std::fs::read_dir(dir.join(".warren/tmp")).unwrap().count(), 1);
    drop(store);
    let _store = DiskStore::open(&dir).unwrap();
    assert_eq!(std::fs::read_dir(dir.join(".warren/tmp")).unwrap().count(), 0);
    assert!(!dir.join("x").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn no_symlink_leads_out_for_reading_or_writing() {
    let dir = root("escape");
    let outside = root("escape-outside");
    std::fs::write(outside.join("secret"), b"s").unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("out")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), dir.join("secret")).unwrap();
    let store = DiskStore::open(&dir).unwrap();
    assert!(matches!(store.open(&p("/secret")), Err(StoreError::Forbidden)));
    assert!(matches!(store.stat(&p("/out/secret")), Err(StoreError::Forbidden)));
    assert!(matches!(store.create(&p("/out/new"), 1).map(|_| ()), Err(StoreError::Forbidden)));
    assert!(matches!(store.delete(&p("/out/secret")), Err(StoreError::Forbidden)));
    assert!(!outside.join("new").exists() && outside.join("secret").exists());
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&outside).unwrap();
}

/// The discarder removes the partial file's name at once, from any thread, while the sink still
/// writes into the (nameless) file; aborting afterwards is harmless, and nothing is left.
#[test]
fn the_discarder_removes_the_name_while_the_file_is_open() {
    let dir = root("discard");
    let store = DiskStore::open(&dir).unwrap();
    let tmp = dir.join(".warren/tmp");
    let mut sink = store.create(&p("/big.bin"), 3).unwrap();
    sink.write(&[7; 1 << 20]).unwrap();
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 1);
    let discard = sink.discarder().expect("the disk store has one");
    std::thread::spawn(move || discard()).join().unwrap();
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "the name is gone at once");
    sink.write(b"more").unwrap();
    sink.abort();
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    assert!(matches!(store.open(&p("/big.bin")), Err(StoreError::NotFound)));
    std::fs::remove_dir_all(&dir).unwrap();
}
