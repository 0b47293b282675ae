//! `cargo fuzz run xinetd_config`: see `warren_fuzz::xinetd_config` for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren_fuzz::xinetd_config::run(data));
