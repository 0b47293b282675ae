//! `cargo fuzz run dns_answer`: see `warren_fuzz::dns_answer` for the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren_fuzz::dns_answer::run(data));
