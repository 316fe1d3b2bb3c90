//! Fuzz target: the federation view of an activity body (input format: the body itself;
//! see `fedgate::fuzzing::activity`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let data = fedgate_fuzz::budget(data);
    fedgate::fuzzing::activity(data);
});
