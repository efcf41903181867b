//! Three honest protocol nodes, messages made up by the fuzzer, lost links and time steps; the
//! nodes' bounds and timers hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| peerchannel_proto::fuzzing::state_machine(data));
