//! Fuzz target: `Digest` and `Content-Digest` against a body
//! (input format: `fedgate::fuzzing::digest`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let data = fedgate_fuzz::budget(data);
    fedgate::fuzzing::digest(data);
});
