//! Fuzz target: a JWKS and bearer tokens verified against it
//! (input format: `fedgate::fuzzing::jwt`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let data = fedgate_fuzz::budget(data);
    fedgate::fuzzing::jwt(data);
});
