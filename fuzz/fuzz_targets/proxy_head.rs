//! `cargo fuzz run proxy_head`: see `warren_fuzz::proxy_head` for the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren_fuzz::proxy_head::run(data));
