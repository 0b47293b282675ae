//! `cargo fuzz run chat_wire`: see `warren_fuzz::chat_wire` for the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren_fuzz::chat_wire::run(data));
