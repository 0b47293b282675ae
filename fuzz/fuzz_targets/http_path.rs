//! `cargo fuzz run http_path`: see `warren_fuzz::http_path` for the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren_fuzz::http_path::run(data));
