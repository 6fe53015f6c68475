#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| r2_fuzz_targets::labels(data));
