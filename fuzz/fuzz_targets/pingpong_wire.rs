//! `cargo fuzz run pingpong_wire`: see `warren_fuzz::pingpong_wire` for the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren_fuzz::pingpong_wire::run(data));
