//! RFC 9421 HTTP Message Signatures: `Signature-Input` and `Signature`.
