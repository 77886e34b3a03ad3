//! `cargo fuzz run -s none datagram_ops`: see `aioport::fuzzing::datagram_ops`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aioport::fuzzing::datagram_ops(data));
