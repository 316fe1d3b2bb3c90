//! Fuzz target: an upstream's HTTP/1.1 response, its head and then its body, as the
//! gateway's upstream connections read it (input format: `fedgate::fuzzing::h1_response`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let data = fedgate_fuzz::budget(data);
    fedgate::fuzzing::h1_response(data);
});
