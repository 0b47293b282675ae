//! `cargo fuzz run files_wire`: see `warren_fuzz::files_wire` for the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren_fuzz::files_wire::run(data));
