//! Fuzz target: public keys: SPKI/PKCS#1 PEM, SPKI DER, multibase Ed25519
//! (input format: `fedgate::fuzzing::key`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let data = fedgate_fuzz::budget(data);
    fedgate::fuzzing::key(data);
});
