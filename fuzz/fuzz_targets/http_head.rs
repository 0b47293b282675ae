//! `cargo fuzz run http_head`: see `warren_fuzz::http_head` for the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren_fuzz::http_head::run(data));
