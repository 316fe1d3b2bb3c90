//! Verification throughput of HTTP signatures with the key already at hand (a cached key),
//! as phase 6 makes them, in two ways:
//! - the scheme alone: parse the `Signature` header, build the signing string, check
//!   coverage, the clock window and the signature;
//! - the verifier as the request path calls it ([`Verifier::verify`]): scheme detection, the
//!   trust-store lookup of the key id, all of the above, the `Digest` check against a 2 KiB
//!   body, the latency histogram, the route's counter and the federation-peer table.
//!
//! ```sh
//! cargo bench -p fedgate --features internals --bench signature_verify
//! ```
//!
//! The keys are the unit tests' (`gateway/src/signature/testdata/`, made with OpenSSL).

// The figures are the benchmark's output.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use fedgate::config::SignaturesConfig;
use fedgate::metrics::Metrics;
use fedgate::signature::key::PublicKey;
use fedgate::signature::verifier::Verifier;
use fedgate::signature::{cavage, Message, Outcome, Window};
use futures_util::FutureExt;
use http::{HeaderMap, Method};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};

const RSA_KEY: &str = include_str!("../src/signature/testdata/rsa-2048.key.pem");
const RSA_PUB: &str = include_str!("../src/signature/testdata/rsa-2048.pub.pem");
const ED_KEY: &str = include_str!("../src/signature/testdata/ed25519.key.pem");
const ED_PUB: &str = include_str!("../src/signature/testdata/ed25519.pub.pem");
const DATE: &str = "Wed, 01 May 2024 12:00:00 GMT";
const KEY_ID: &str = "https://remote.example/users/bob#main-key";

fn der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

/// A 2 KiB Create activity, the size of the gateway scenario's signed delivery.
fn body() -> Vec<u8> {
    let head = r#"{"@context":"https://www.w3.org/ns/activitystreams","type":"Create","actor":"https://remote.example/users/bob","object":{"type":"Note","content":""#;
    let tail = r#""}}"#;
    let pad = "x".repeat(2048 - head.len() - tail.len());
    format!("{head}{pad}{tail}").into_bytes()
}

/// The headers of a Mastodon-style delivery of `body`, signed by `sign` under `algorithm`.
fn headers(algorithm: &str, body: &[u8], sign: impl Fn(&[u8]) -> Vec<u8>) -> HeaderMap {
    let digest = format!(
        "SHA-256={}",
        base64::engine::general_purpose::STANDARD
            .encode(ring::digest::digest(&ring::digest::SHA256, body))
    );
    let mut h = HeaderMap::new();
    h.insert("host", "local.example".parse().unwrap());
    h.insert("date", DATE.parse().unwrap());
    h.insert("digest", digest.parse().unwrap());
    h.insert("content-type", "application/activity+json".parse().unwrap());
    let text = format!(
        "(request-target): post /users/alice/inbox\nhost: local.example\ndate: {DATE}\n\
         digest: {digest}\ncontent-type: application/activity+json"
    );
    let sig = base64::engine::general_purpose::STANDARD.encode(sign(text.as_bytes()));
    let value = format!(
        "keyId=\"{KEY_ID}\",algorithm=\"{algorithm}\",\
         headers=\"(request-target) host date digest content-type\",signature=\"{sig}\""
    );
    h.insert("signature", value.parse().unwrap());
    h
}

fn message(headers: &HeaderMap) -> Message<'_> {
    static POST: Method = Method::POST;
    Message {
        method: &POST,
        path_and_query: "/users/alice/inbox",
        authority: Some("local.example"),
        scheme: "https",
        headers,
    }
}

/// Five seconds after the signature's date.
fn now() -> SystemTime {
    httpdate::parse_http_date(DATE).unwrap() + Duration::from_secs(5)
}

/// Verifications per second: the median of 5 batches of about 200 ms each.
fn rate(verify: impl Fn()) -> f64 {
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

/// The scheme alone, with the key at hand.
fn scheme_rate(headers: &HeaderMap, key: &PublicKey) -> f64 {
    let message = message(headers);
    let (window, now) = (Window::default(), now());
    rate(|| {
        cavage::parse(&message)
            .and_then(|s| s.verify(key, &window, now))
            .expect("the signature verifies");
    })
}

/// The verifier of a runtime whose trust store holds `key` under the key id, as the
/// request path calls it for a route that checks signatures.
fn verifier_rate(headers: &HeaderMap, body: &[u8], key: &PublicKey) -> f64 {
    let metrics = Metrics::new(prometheus::Registry::new()).unwrap();
    let config = SignaturesConfig {
        keys: vec![(KEY_ID.to_string(), key.clone())],
        ..SignaturesConfig::default()
    };
    let verifier = Arc::new(Verifier::new(&config, metrics.signature_families(), None));
    let counters = verifier.route_counters("inbox");
    let message = message(headers);
    let now = now();
    rate(|| {
        // A trust-store key is checked in place: the future is ready on its first poll.
        let checked = verifier
            .verify(&counters, &message, body, now)
            .now_or_never()
            .expect("nothing awaited for a trust-store key");
        assert_eq!(checked.outcome, Outcome::Valid, "{:?}", checked.reason);
    })
}

fn main() {
    let body = body();
    assert_eq!(body.len(), 2048);
    let rsa = RsaKeyPair::from_pkcs8(&der(RSA_KEY)).unwrap();
    let rsa_headers = headers("rsa-sha256", &body, |m| {
        let mut sig = vec![0; rsa.public().modulus_len()];
        rsa.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), m, &mut sig)
            .unwrap();
        sig
    });
    let ed = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der(ED_KEY)).unwrap();
    let ed_headers = headers("hs2019", &body, |m| ed.sign(m).as_ref().to_vec());
    let rsa_key = PublicKey::from_pem(RSA_PUB).unwrap();
    let ed_key = PublicKey::from_pem(ED_PUB).unwrap();

    println!(
        "draft-cavage signature verification with a cached key, one core (median of 5 batches)"
    );
    println!("{:<52} {:>15} {:>10}", "case", "verifications/s", "µs each");
    let row = |label: &str, r: f64| println!("{label:<52} {r:>15.0} {:>10.1}", 1e6 / r);
    row("RSA-2048 (rsa-sha256)", scheme_rate(&rsa_headers, &rsa_key));
    row("Ed25519 (hs2019)", scheme_rate(&ed_headers, &ed_key));
    row(
        "RSA-2048 (rsa-sha256), verifier + 2 KiB Digest",
        verifier_rate(&rsa_headers, &body, &rsa_key),
    );
    row(
        "Ed25519 (hs2019), verifier + 2 KiB Digest",
        verifier_rate(&ed_headers, &body, &ed_key),
    );
}
