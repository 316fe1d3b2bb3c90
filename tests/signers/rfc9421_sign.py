"""Signs one request with the `http-message-signatures` package from PyPI (RFC 9421), for
fedgate's end-to-end tests: an RFC 9421 client nobody on this project wrote.

Reads a JSON object on stdin:
  key_id, key_file (private key PEM; a text secret for hmac-sha256),
  algorithm ("ed25519", "rsa-v1_5-sha256", "rsa-pss-sha512", "ecdsa-p256-sha256",
  "hmac-sha256"), method, url (e.g. "http://local.example/users/alice/inbox"),
  headers (object), body (text), covered (component ids), content_digest (bool: let the
  library add the RFC 9530 Content-Digest of the body), created (optional Unix time)
and prints the headers to send (Signature-Input and Signature included) as a JSON object.
"""

import datetime
import json
import sys

import requests
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from http_message_signatures import HTTPMessageSigner, HTTPSignatureKeyResolver, algorithms

ALGORITHMS = {
    "ed25519": algorithms.ED25519,
    "rsa-v1_5-sha256": algorithms.RSA_V1_5_SHA256,
    "rsa-pss-sha512": algorithms.RSA_PSS_SHA512,
    "ecdsa-p256-sha256": algorithms.ECDSA_P256_SHA256,
    "hmac-sha256": algorithms.HMAC_SHA256,
}


class Keys(HTTPSignatureKeyResolver):
    def __init__(self, secret: bytes, hmac: bool) -> None:
        self.key = secret if hmac else load_pem_private_key(secret, password=None)

    def resolve_private_key(self, key_id: str):
        return self.key

    def resolve_public_key(self, key_id: str):
        raise NotImplementedError


def main() -> None:
    spec = json.load(sys.stdin)
    body = spec.get("body", "").encode()
    headers = dict(spec.get("headers", {}))
    request = requests.Request(spec["method"], spec["url"], headers=headers, data=body).prepare()
    with open(spec["key_file"], "rb") as f:
        secret = f.read()
    algorithm = spec["algorithm"]
    signer = HTTPMessageSigner(
        signature_algorithm=ALGORITHMS[algorithm],
        key_resolver=Keys(secret, algorithm == "hmac-sha256"),
    )
    created = spec.get("created")
    signer.sign(
        request,
        key_id=spec["key_id"],
        created=datetime.datetime.fromtimestamp(created, datetime.timezone.utc) if created else None,
        covered_component_ids=spec["covered"],
        include_alg=True,
        # The library adds the Content-Digest of the body when the signature covers it.
        body=body if spec.get("content_digest") else None,
    )
    json.dump(dict(request.headers), sys.stdout)


if __name__ == "__main__":
    main()
