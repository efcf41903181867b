//! Sessions of HTTP requests served by the resolver's router: no 5xx, JSON errors, ids unguessable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| peerchannel_resolver::fuzzing::requests(data));
