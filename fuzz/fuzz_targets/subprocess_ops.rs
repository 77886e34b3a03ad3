//! `cargo fuzz run -s none subprocess_ops`: see `aioport::fuzzing::subprocess_ops`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aioport::fuzzing::subprocess_ops(data));
