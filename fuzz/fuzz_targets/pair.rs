//! `cargo fuzz run -s none pair`: see `aioport::fuzzing::pair`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aioport::fuzzing::pair(data));
