//! Bytes off a link, cut into frames and decoded; whatever decodes round-trips.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| peerchannel_proto::fuzzing::frame_decoder(data));
