//! Fuzz target: RFC 9421 `Signature-Input` and `Signature` dictionaries and signature bases
//! (input format: `fedgate::fuzzing::rfc9421`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let data = fedgate_fuzz::budget(data);
    fedgate::fuzzing::rfc9421(data);
});
