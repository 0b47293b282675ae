//! `cargo fuzz run hub_frame`: see `warren_fuzz::hub_frame` for the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren_fuzz::hub_frame::run(data));
