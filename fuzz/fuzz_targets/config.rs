//! Fuzz target: the TOML config, parsed and validated
//! (input format: `fedgate::fuzzing::config`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let data = fedgate_fuzz::budget(data);
    fedgate::fuzzing::config(data);
});
