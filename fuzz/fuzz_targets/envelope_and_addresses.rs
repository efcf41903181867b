//! The runtime's decoders of what other nodes wrote: envelopes, peer addresses, frame bodies.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| peerchannel::fuzzing::envelope_and_addresses(data));
