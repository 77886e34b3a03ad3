//! `cargo fuzz run -s none registry_ops`: see `aioport::fuzzing::registry_ops`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aioport::fuzzing::registry_ops(data));
