//! Fuzz target: draft-cavage `Signature` / `Authorization: Signature` parameters and signing strings
//! (input format: `fedgate::fuzzing::cavage`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let data = fedgate_fuzz::budget(data);
    fedgate::fuzzing::cavage(data);
});
