//! `cargo fuzz run registry_wire`: see `warren_fuzz::registry_wire` for the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren_fuzz::registry_wire::run(data));
