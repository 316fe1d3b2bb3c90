//! Public keys as federation servers publish them, and signature verification with ring.
//!
//! Accepted forms: SPKI PEM (`-----BEGIN PUBLIC KEY-----`, what ActivityPub actors carry in
//! `publicKey.publicKeyPem`), PKCS#1 PEM (`-----BEGIN RSA PUBLIC KEY-----`) and multibase
//! Ed25519 (`z6Mk...`, as in `publicKeyMultibase`). RSA keys shorter than 2048 bits are
//! refused: ring does not verify with them, and no current server makes them.

use ring::signature::{self, UnparsedPublicKey};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::RSAPublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::{Outcome, Rejection};

/// What kind of key a [`PublicKey`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Rsa,
    EcdsaP256,
    Ed25519,
}

/// A signature algorithm, as the schemes name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (`rsa-sha256`, `rsa-v1_5-sha256`).
    RsaPkcs1Sha256,
    /// RSASSA-PSS with SHA-512 (`rsa-pss-sha512`).
    RsaPssSha512,
    /// ECDSA P-256 with SHA-256, the signature as `r || s` (RFC 9421 `ecdsa-p256-sha256`).
    EcdsaP256Sha256Fixed,
    /// ECDSA P-256 with SHA-256, the signature DER-encoded (draft-cavage `ecdsa-sha256`);
    /// a 64-byte `r || s` signature is accepted too, as Misskey signs.
    EcdsaP256Sha256Asn1,
    Ed25519,
}

impl Algorithm {
    /// The key type the algorithm verifies with.
    pub fn key_type(self) -> KeyType {
        match self {
            Algorithm::RsaPkcs1Sha256 | Algorithm::RsaPssSha512 => KeyType::Rsa,
            Algorithm::EcdsaP256Sha256Fixed | Algorithm::EcdsaP256Sha256Asn1 => KeyType::EcdsaP256,
            Algorithm::Ed25519 => KeyType::Ed25519,
        }
    }

    /// What draft-cavage's `hs2019` means for a key: the algorithm is told by the key, as
    /// the fediverse does it (RSA keys sign with RSA-SHA256, not RSASSA-PSS).
    pub fn hs2019(key: KeyType) -> Algorithm {
        match key {
            KeyType::Rsa => Algorithm::RsaPkcs1Sha256,
            KeyType::EcdsaP256 => Algorithm::EcdsaP256Sha256Asn1,
            KeyType::Ed25519 => Algorithm::Ed25519,
        }
    }

    fn ring(self) -> &'static dyn signature::VerificationAlgorithm {
        match self {
            Algorithm::RsaPkcs1Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Algorithm::RsaPssSha512 => &signature::RSA_PSS_2048_8192_SHA512,
            Algorithm::EcdsaP256Sha256Fixed => &signature::ECDSA_P256_SHA256_FIXED,
            Algorithm::EcdsaP256Sha256Asn1 => &signature::ECDSA_P256_SHA256_ASN1,
            Algorithm::Ed25519 => &signature::ED25519,
        }
    }
}

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM public key")]
    NotPem,
    #[error("not a public key: {0}")]
    Der(String),
    #[error("RSA key of {0} bits; at least 2048 are required")]
    RsaTooShort(usize),
    #[error("unsupported key type (algorithm {0})")]
    Unsupported(String),
    #[error("not a multibase Ed25519 key")]
    Multibase,
}

/// A public key, ready to verify: its type and the bytes ring takes for it (PKCS#1
/// `RSAPublicKey` DER, the uncompressed P-256 point, or the 32 Ed25519 bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    kind: KeyType,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("kind", &self.kind)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl PublicKey {
    pub fn kind(&self) -> KeyType {
        self.kind
    }

    /// Reads an SPKI (`PUBLIC KEY`) or PKCS#1 (`RSA PUBLIC KEY`) PEM block.
    pub fn from_pem(pem: &str) -> Result<PublicKey, KeyError> {
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.trim().as_bytes())
            .map_err(|_| KeyError::NotPem)?;
        match block.label.as_str() {
            "PUBLIC KEY" => PublicKey::from_spki_der(&block.contents),
            "RSA PUBLIC KEY" => PublicKey::rsa_from_pkcs1(&block.contents),
            _ => Err(KeyError::NotPem),
        }
    }

    /// Reads a DER `SubjectPublicKeyInfo`.
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, KeyError> {
        let (_, spki) =
            SubjectPublicKeyInfo::from_der(der).map_err(|e| KeyError::Der(e.to_string()))?;
        let key = spki.subject_public_key.data.as_ref();
        let oid = &spki.algorithm.algorithm;
        if *oid == OID_PKCS1_RSAENCRYPTION {
            PublicKey::rsa_from_pkcs1(key)
        } else if *oid == OID_SIG_ED25519 {
            if key.len() != 32 {
                return Err(KeyError::Der("an Ed25519 key has 32 bytes".into()));
            }
            Ok(PublicKey {
                kind: KeyType::Ed25519,
                bytes: key.to_vec(),
            })
        } else if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            if curve.as_ref() != Some(&OID_EC_P256) {
                return Err(KeyError::Unsupported(
                    "elliptic curve other than P-256".into(),
                ));
            }
            if key.len() != 65 || key[0] != 4 {
                return Err(KeyError::Der("a P-256 key is an uncompressed point".into()));
            }
            Ok(PublicKey {
                kind: KeyType::EcdsaP256,
                bytes: key.to_vec(),
            })
        } else {
            Err(KeyError::Unsupported(oid.to_id_string()))
        }
    }

    fn rsa_from_pkcs1(der: &[u8]) -> Result<PublicKey, KeyError> {
        let (_, rsa) = RSAPublicKey::from_der(der).map_err(|e| KeyError::Der(e.to_string()))?;
        let bits = rsa.key_size();
        if bits < 2048 {
            return Err(KeyError::RsaTooShort(bits));
        }
        Ok(PublicKey {
            kind: KeyType::Rsa,
            bytes: der.to_vec(),
        })
    }

    /// Reads a multibase Ed25519 key: `z`, then base58btc of the multicodec prefix
    /// `0xed 0x01` and the 32 key bytes.
    pub fn from_multibase(text: &str) -> Result<PublicKey, KeyError> {
        let encoded = text.trim().strip_prefix('z').ok_or(KeyError::Multibase)?;
        let bytes = bs58::decode(encoded)
            .into_vec()
            .map_err(|_| KeyError::Multibase)?;
        match bytes.as_slice() {
            [0xed, 0x01, key @ ..] if key.len() == 32 => Ok(PublicKey {
                kind: KeyType::Ed25519,
                bytes: key.to_vec(),
            }),
            _ => Err(KeyError::Multibase),
        }
    }

    /// Verifies `signature` over `message` with `algorithm`.
    pub fn verify(
        &self,
        algorithm: Algorithm,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), Rejection> {
        // The key published for the key id is of another type than the signature's
        // algorithm: it cannot have made this signature.
        if algorithm.key_type() != self.kind {
            return Err(Rejection::new(
                Outcome::Invalid,
                format!(
                    "algorithm {algorithm:?} does not go with a {:?} key",
                    self.kind
                ),
            ));
        }
        let key = UnparsedPublicKey::new(algorithm.ring(), &self.bytes);
        let verified = key.verify(message, signature).or_else(|e| {
            // draft-cavage leaves the encoding of an ECDSA signature open: Mastodon-style
            // signers send DER, Misskey's sends `r || s` (64 bytes for P-256). A 64-byte
            // signature that is not valid DER is tried in that form.
            if algorithm == Algorithm::EcdsaP256Sha256Asn1 && signature.len() == 64 {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &self.bytes)
                    .verify(message, signature)
            } else {
                Err(e)
            }
        });
        verified.map_err(|_| Rejection::new(Outcome::Invalid, "the signature does not verify"))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};

    /// The keys in `testdata/` (made with OpenSSL; see its README).
    pub(crate) const RSA_KEY: &str = include_str!("testdata/rsa-2048.key.pem");
    pub(crate) const RSA_PUB: &str = include_str!("testdata/rsa-2048.pub.pem");
    const RSA_PKCS1: &str = include_str!("testdata/rsa-2048.pkcs1.pem");
    const RSA_1024_PUB: &str = include_str!("testdata/rsa-1024.pub.pem");
    pub(crate) const ED_KEY: &str = include_str!("testdata/ed25519.key.pem");
    pub(crate) const ED_PUB: &str = include_str!("testdata/ed25519.pub.pem");
    const P256_KEY: &str = include_str!("testdata/p256.key.pem");
    const P256_PUB: &str = include_str!("testdata/p256.pub.pem");

    fn der(pem: &str) -> Vec<u8> {
        x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .unwrap()
            .1
            .contents
    }

    pub(crate) fn rsa_pair() -> RsaKeyPair {
        RsaKeyPair::from_pkcs8(&der(RSA_KEY)).unwrap()
    }

    pub(crate) fn ed_pair() -> Ed25519KeyPair {
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der(ED_KEY)).unwrap()
    }

    #[test]
    fn rsa_keys_from_spki_and_pkcs1_pem_verify_rsa_sha256_and_pss() {
        let pair = rsa_pair();
        let spki = PublicKey::from_pem(RSA_PUB).unwrap();
        assert_eq!(spki.kind(), KeyType::Rsa);
        assert_eq!(PublicKey::from_pem(RSA_PKCS1).unwrap(), spki);

        let rng = SystemRandom::new();
        let message = b"(request-target): post /inbox";
        let mut sig = vec![0; pair.public().modulus_len()];
        pair.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)
            .unwrap();
        assert!(spki
            .verify(Algorithm::RsaPkcs1Sha256, message, &sig)
            .is_ok());
        let wrong = spki
            .verify(
                Algorithm::RsaPkcs1Sha256,
                b"(request-target): post /other",
                &sig,
            )
            .unwrap_err();
        assert_eq!(wrong.outcome, Outcome::Invalid);
        let mismatched = spki.verify(Algorithm::Ed25519, message, &sig).unwrap_err();
        assert_eq!(mismatched.outcome, Outcome::Invalid);

        pair.sign(&signature::RSA_PSS_SHA512, &rng, message, &mut sig)
            .unwrap();
        assert!(spki.verify(Algorithm::RsaPssSha512, message, &sig).is_ok());
        assert!(spki
            .verify(Algorithm::RsaPkcs1Sha256, message, &sig)
            .is_err());
    }

    #[test]
    fn ed25519_and_p256_keys_verify() {
        let rng = SystemRandom::new();
        let ed = ed_pair();
        let key = PublicKey::from_pem(ED_PUB).unwrap();
        assert_eq!(key.kind(), KeyType::Ed25519);
        let sig = ed.sign(b"hello");
        assert!(key
            .verify(Algorithm::Ed25519, b"hello", sig.as_ref())
            .is_ok());
        assert!(key
            .verify(Algorithm::Ed25519, b"hellO", sig.as_ref())
            .is_err());

        let mut multicodec = vec![0xed, 0x01];
        multicodec.extend_from_slice(ed.public_key().as_ref());
        let multibase = format!("z{}", bs58::encode(multicodec).into_string());
        assert!(multibase.starts_with("z6Mk"));
        assert_eq!(PublicKey::from_multibase(&multibase).unwrap(), key);
        assert_eq!(
            PublicKey::from_multibase("z6MkNOTBASE58"),
            Err(KeyError::Multibase)
        );

        let ec = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &der(P256_KEY),
            &rng,
        )
        .unwrap();
        let key = PublicKey::from_pem(P256_PUB).unwrap();
        assert_eq!(key.kind(), KeyType::EcdsaP256);
        let sig = ec.sign(&rng, b"hello").unwrap();
        assert_eq!(sig.as_ref().len(), 64);
        assert!(key
            .verify(Algorithm::EcdsaP256Sha256Fixed, b"hello", sig.as_ref())
            .is_ok());
        // A cavage ECDSA signature in `r || s` form, as Misskey sends it, verifies too...
        assert!(key
            .verify(Algorithm::EcdsaP256Sha256Asn1, b"hello", sig.as_ref())
            .is_ok());
        assert!(key
            .verify(Algorithm::EcdsaP256Sha256Asn1, b"hellO", sig.as_ref())
            .is_err());
        // ... while RFC 9421's fixed form takes no DER.
        let der_signer = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &der(P256_KEY),
            &rng,
        )
        .unwrap();
        let der_sig = der_signer.sign(&rng, b"hello").unwrap();
        assert!(key
            .verify(Algorithm::EcdsaP256Sha256Asn1, b"hello", der_sig.as_ref())
            .is_ok());
        assert!(key
            .verify(Algorithm::EcdsaP256Sha256Fixed, b"hello", der_sig.as_ref())
            .is_err());
    }

    #[test]
    fn bad_keys_say_why() {
        assert_eq!(PublicKey::from_pem("not pem"), Err(KeyError::NotPem));
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(PublicKey::from_pem(cert), Err(KeyError::NotPem));
        assert_eq!(
            PublicKey::from_pem(RSA_1024_PUB),
            Err(KeyError::RsaTooShort(1024))
        );
        let garbage = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert!(matches!(
            PublicKey::from_pem(garbage),
            Err(KeyError::Der(_))
        ));
    }
}
