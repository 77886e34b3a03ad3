//! `cargo fuzz run -s none start_tls_pair`: see `aioport::fuzzing::start_tls_pair`
//! (feature `tls`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aioport::fuzzing::start_tls_pair(data));
