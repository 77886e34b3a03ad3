//! `cargo fuzz run -s none limits`: see `aioport::fuzzing::limits`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aioport::fuzzing::limits(data));
