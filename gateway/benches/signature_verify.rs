//! Verification throughput of HTTP signatures with the key already at hand (a cached key),
//! as phase 6 makes them: parse the `Signature` header, build the signing string, check
//! coverage, the clock window and the signature.
//!
//! ```sh
//! cargo bench -p fedgate --bench signature_verify
//! ```
//!
//! The keys are the unit tests' (`gateway/src/signature/testdata/`, made with OpenSSL).

// The figures are the benchmark's output.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use base64::Engine;
use fedgate::signature::key::PublicKey;
use fedgate::signature::{cavage, Message, Window};
use http::{HeaderMap, Method};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};

const RSA_KEY: &str = include_str!("../src/signature/testdata/rsa-2048.key.pem");
const RSA_PUB: &str = include_str!("../src/signature/testdata/rsa-2048.pub.pem");
const ED_KEY: &str = include_str!("../src/signature/testdata/ed25519.key.pem");
const ED_PUB: &str = include_str!("../src/signature/testdata/ed25519.pub.pem");
const DATE: &str = "Wed, 01 May 2024 12:00:00 GMT";

fn der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

fn headers(algorithm: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", "local.example".parse().unwrap());
    h.insert("date", DATE.parse().unwrap());
    h.insert(
        "digest",
        "SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE="
            .parse()
            .unwrap(),
    );
    h.insert("content-type", "application/activity+json".parse().unwrap());
    let text = format!(
        "(request-target): post /users/alice/inbox\nhost: local.example\ndate: {DATE}\n\
         digest: SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=\n\
         content-type: application/activity+json"
    );
    let sig = base64::engine::general_purpose::STANDARD.encode(sign(text.as_bytes()));
    let value = format!(
        "keyId=\"https://remote.example/users/bob#main-key\",algorithm=\"{algorithm}\",\
         headers=\"(request-target) host date digest content-type\",signature=\"{sig}\""
    );
    h.insert("signature", value.parse().unwrap());
    h
}

/// Verifications per second: the median of 5 batches of about 200 ms each.
fn rate(headers: &HeaderMap, key: &PublicKey) -> f64 {
    let method = Method::POST;
    let message = Message {
        method: &method,
        path_and_query: "/users/alice/inbox",
        authority: Some("local.example"),
        scheme: "https",
        headers,
    };
    let now = httpdate::parse_http_date(DATE).unwrap() + Duration::from_secs(5);
    let window = Window::default();
    let verify = || {
        cavage::parse(&message)
            .and_then(|s| s.verify(key, &window, now))
            .expect("the signature verifies");
    };
    // Size the batches from a short trial.
    let t = Instant::now();
    let mut n = 0u32;
    while t.elapsed() < Duration::from_millis(100) {
        verify();
        n += 1;
    }
    let batch = n * 2;
    let mut rates: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..batch {
                verify();
            }
            f64::from(batch) / t.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[2]
}

fn main() {
    let rsa = RsaKeyPair::from_pkcs8(&der(RSA_KEY)).unwrap();
    let rsa_headers = headers("rsa-sha256", |m| {
        let mut sig = vec![0; rsa.public().modulus_len()];
        rsa.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), m, &mut sig)
            .unwrap();
        sig
    });
    let ed = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der(ED_KEY)).unwrap();
    let ed_headers = headers("hs2019", |m| ed.sign(m).as_ref().to_vec());

    println!(
        "draft-cavage signature verification with a cached key, one core (median of 5 batches)"
    );
    println!("{:<36} {:>14} {:>10}", "key", "verifications/s", "µs each");
    for (label, h, key) in [
        (
            "RSA-2048 (rsa-sha256)",
            &rsa_headers,
            PublicKey::from_pem(RSA_PUB).unwrap(),
        ),
        (
            "Ed25519 (hs2019)",
            &ed_headers,
            PublicKey::from_pem(ED_PUB).unwrap(),
        ),
    ] {
        let r = rate(h, &key);
        println!("{label:<36} {r:>14.0} {:>10.1}", 1e6 / r);
    }
}
