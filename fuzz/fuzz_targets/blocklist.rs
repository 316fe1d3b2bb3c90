//! Fuzz target: a blocklist file, and requests and activities checked against it
//! (input format: `fedgate::fuzzing::blocklist`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let data = fedgate_fuzz::budget(data);
    fedgate::fuzzing::blocklist(data);
});
