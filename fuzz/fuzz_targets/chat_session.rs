//! `cargo fuzz run chat_session`: see `warren_fuzz::chat_session` for the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren_fuzz::chat_session::run(data));
