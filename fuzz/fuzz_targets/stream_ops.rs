//! `cargo fuzz run -s none stream_ops`: see `aioport::fuzzing::stream_ops`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aioport::fuzzing::stream_ops(data));
