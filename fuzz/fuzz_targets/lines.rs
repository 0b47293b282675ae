//! `cargo fuzz run lines`: see `warren_fuzz::lines` for the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren_fuzz::lines::run(data));
