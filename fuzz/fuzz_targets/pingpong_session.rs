//! `cargo fuzz run pingpong_session`: see `warren_fuzz::pingpong_session` for the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren_fuzz::pingpong_session::run(data));
