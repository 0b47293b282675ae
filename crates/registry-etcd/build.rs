//! Checks that the vendored protoc `tools/protoc` runs is the one this build has.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if let Err(e) = protoc_bin_vendored::protoc_bin_path() {
        println!("cargo:warning=no vendored protoc for this platform ({e}); tools/protoc falls back to protoc on PATH");
    }
}
