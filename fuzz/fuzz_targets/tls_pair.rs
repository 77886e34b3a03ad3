//! `cargo fuzz run -s none tls_pair`: see `aioport::fuzzing::tls_pair` (feature `tls`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aioport::fuzzing::tls_pair(data));
