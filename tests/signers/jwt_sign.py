"""Makes JWT keys and tokens with the `PyJWT` package from PyPI (and `cryptography`), for
fedgate's end-to-end tests: a JWT implementation nobody on this project wrote.

Reads a JSON object on stdin and prints {"out": ...}:
  op "keys": dir (a directory). Writes private keys rsa.pem (RSA 2048), ec.pem (P-256),
    ed.pem (Ed25519) and hs.key (a 32-byte HMAC secret), the same again under the name
    stranger-*, and dir/jwks.json with the public halves of the first set only, as PyJWT
    exports them, with kid "rsa", "ec", "ed" and "hs". "out" is the JWKS path.
  op "sign": alg ("HS256", "RS256", "ES256", "EdDSA" or "none"), key_file (a private key
    PEM, or the HMAC secret file; unused for "none"), kid (optional), claims (object).
    "out" is the compact token.
"""

import json
import os
import sys

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, OKPAlgorithm, RSAAlgorithm


def pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def keys(directory: str) -> str:
    jwks = []
    for prefix in ("", "stranger-"):
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ec_key = ec.generate_private_key(ec.SECP256R1())
        ed_key = ed25519.Ed25519PrivateKey.generate()
        secret = os.urandom(32)
        for name, key in (("rsa", rsa_key), ("ec", ec_key), ("ed", ed_key)):
            with open(os.path.join(directory, f"{prefix}{name}.pem"), "wb") as f:
                f.write(pem(key))
        with open(os.path.join(directory, f"{prefix}hs.key"), "wb") as f:
            f.write(secret)
        if prefix:
            continue
        for kid, alg, exported in (
            ("rsa", "RS256", RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)),
            ("ec", "ES256", ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True)),
            ("ed", "EdDSA", OKPAlgorithm.to_jwk(ed_key.public_key(), as_dict=True)),
            ("hs", "HS256", HMACAlgorithm.to_jwk(secret, as_dict=True)),
        ):
            exported.update({"kid": kid, "alg": alg, "use": "sig"})
            jwks.append(exported)
    path = os.path.join(directory, "jwks.json")
    with open(path, "w") as f:
        json.dump({"keys": jwks}, f, indent=2)
    return path


def sign(spec: dict) -> str:
    alg = spec["alg"]
    headers = {"kid": spec["kid"]} if spec.get("kid") else None
    if alg == "none":
        return jwt.encode(spec["claims"], None, algorithm="none", headers=headers)
    with open(spec["key_file"], "rb") as f:
        material = f.read()
    key = material if alg == "HS256" else serialization.load_pem_private_key(material, None)
    return jwt.encode(spec["claims"], key, algorithm=alg, headers=headers)


def main() -> None:
    spec = json.load(sys.stdin)
    out = keys(spec["dir"]) if spec["op"] == "keys" else sign(spec)
    json.dump({"out": out}, sys.stdout)


if __name__ == "__main__":
    main()
