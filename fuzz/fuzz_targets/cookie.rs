#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| authd_fuzz::cookie(data));
