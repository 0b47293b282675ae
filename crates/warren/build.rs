//! Lays out the code a forked connection process runs next to itself in the binary.
//!
//! Under `--model fork` each connection's process maps the binary's text page by page as it
//! runs it, and the kernel maps a whole 64 KiB window around every fault (fault-around). The
//! hundred or so functions the child runs lie scattered over 30 MB of text, so each child
//! mapped some 1.4 MiB of it: pages that exist once in memory but count in every child's RSS.
//! `fork-path.order` lists those functions (made by `scripts/fork-path-order`); the linker puts
//! them together, so a child maps a few windows instead. A name the binary no longer defines is
//! skipped without a word, so a stale list costs locality, never a build.
//!
//! Only lld reads the list: it is used on x86-64 Linux (glibc), where rustc links with its own
//! lld by default. `WARREN_NO_SYMBOL_ORDER=1` leaves it out, for builds with another linker.

fn main() {
    println!("cargo::rerun-if-changed=fork-path.order");
    println!("cargo::rerun-if-env-changed=WARREN_NO_SYMBOL_ORDER");
    let target = std::env::var("TARGET").unwrap_or_default();
    let skip = std::env::var_os("WARREN_NO_SYMBOL_ORDER").is_some_and(|v| v != "0");
    if target != "x86_64-unknown-linux-gnu" || skip {
        return;
    }
    let order = concat!(env!("CARGO_MANIFEST_DIR"), "/fork-path.order");
    println!("cargo::rustc-link-arg-bin=warren=-Wl,--symbol-ordering-file={order}");
    println!("cargo::rustc-link-arg-bin=warren=-Wl,--no-warn-symbol-ordering");
}
