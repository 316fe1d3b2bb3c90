//! Fuzz target: the key a key id names in an actor or key document
//! (input format: `fedgate::fuzzing::actor`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let data = fedgate_fuzz::budget(data);
    fedgate::fuzzing::actor(data);
});
