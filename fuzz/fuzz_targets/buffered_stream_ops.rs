//! `cargo fuzz run -s none buffered_stream_ops`: see `aioport::fuzzing::buffered_stream_ops`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aioport::fuzzing::buffered_stream_ops(data));
