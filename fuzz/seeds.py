#!/usr/bin/env python3
"""Writes the seed corpus of each fuzz target into fuzz/corpus/<target>/.

The seeds are realistic inputs in each target's format (see gateway/src/fuzzing.rs):
Mastodon-style draft-cavage deliveries and fetches, RFC 9421 requests (the RFC's own
examples and fediverse-style ones), digests, keys, actor documents, JWKS files and tokens,
blocklists, configs and upstream responses. Signatures are made with the test keys in
gateway/src/signature/testdata, so that the seeds verify and the fuzzer starts from the
paths valid inputs take. Needs Python's `cryptography` package. Seeds are named after what
they hold; running it again rewrites them (files the fuzzer added are left alone).

    python3 fuzz/seeds.py
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import urllib.parse

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTDATA = os.path.join(ROOT, "gateway", "src", "signature", "testdata")
CORPUS = os.path.join(ROOT, "fuzz", "corpus")

# The clock of the fuzz targets (fuzzing.rs `NOW`) is 30 s after this.
DATE = "Wed, 01 May 2024 12:00:00 GMT"
CREATED = 1714564800
KEY_ID = "https://remote.example/users/bob#main-key"
ACTOR = "https://remote.example/users/bob"
# fuzzing.rs `HS256_SECRET`, `ISSUER`, `AUDIENCE`.
HS256_SECRET = b"fedgate fuzzing HS256 secret, 32+ bytes"
ISSUER = "https://issuer.example"
AUDIENCE = "fedgate"


def b64(data):
    return base64.b64encode(data).decode()


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def read(name):
    with open(os.path.join(TESTDATA, name), "rb") as f:
        return f.read()


def private(name):
    return serialization.load_pem_private_key(read(name), password=None)


RSA = private("rsa-2048.key.pem")
ED = private("ed25519.key.pem")
P256 = private("p256.key.pem")


def rsa_sign(data):
    return RSA.sign(data, padding.PKCS1v15(), hashes.SHA256())


def rsa_pss_sign(data):
    return RSA.sign(data, padding.PSS(padding.MGF1(hashes.SHA512()), 64), hashes.SHA512())


def ed_sign(data):
    return ED.sign(data)


def p256_der_sign(data):
    return P256.sign(data, ec.ECDSA(hashes.SHA256()))


def p256_raw_sign(data):
    r, s = decode_dss_signature(p256_der_sign(data))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


written = {}


def seed(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
    written[target] = written.get(target, 0) + 1


def request(first, fields, body=b""):
    """A request-shaped input: the first line, fields, an empty line, the body."""
    head = first + "\n" + "".join(f"{n}: {v}\n" for n, v in fields) + "\n"
    return head.encode() + (body if isinstance(body, bytes) else body.encode())


# ---- draft-cavage -------------------------------------------------------------------------

ACTIVITY = json.dumps(
    {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": "https://remote.example/users/bob#follows/1/undo",
        "type": "Follow",
        "actor": ACTOR,
        "object": "https://local.example/users/alice",
    },
    separators=(",", ":"),
).encode()
DIGEST = "SHA-256=" + b64(hashlib.sha256(ACTIVITY).digest())


def cavage_value(key_id, algorithm, covered, sig, extra=""):
    alg = f'algorithm="{algorithm}",' if algorithm else ""
    return f'keyId="{key_id}",{alg}headers="{covered}",{extra}signature="{sig}"'


def cavage_delivery(algorithm, sign, authorization=False, name_extra=""):
    fields = [
        ("host", "local.example"),
        ("date", DATE),
        ("digest", DIGEST),
        ("content-type", "application/activity+json"),
    ]
    covered = "(request-target) host date digest content-type"
    text = "(request-target): post /users/alice/inbox\n" + "\n".join(
        f"{n}: {v}" for n, v in fields
    )
    value = cavage_value(KEY_ID, algorithm, covered, b64(sign(text.encode())))
    if authorization:
        fields.append(("authorization", "Signature " + value))
    else:
        fields.append(("signature", value))
    return request("POST /users/alice/inbox local.example https", fields, ACTIVITY)


seed("cavage", "mastodon-delivery-rsa-sha256", cavage_delivery("rsa-sha256", rsa_sign))
seed("cavage", "mastodon-delivery-hs2019", cavage_delivery("hs2019", rsa_sign))
seed("cavage", "authorization-signature", cavage_delivery("rsa-sha256", rsa_sign, True))
seed("cavage", "misskey-ed25519", cavage_delivery("ed25519", ed_sign))
seed("cavage", "ecdsa-sha256-der", cavage_delivery("ecdsa-sha256", p256_der_sign))
seed("cavage", "ecdsa-sha256-raw", cavage_delivery("hs2019", p256_raw_sign))

# A Mastodon GET of an actor document (signed fetch, authorized fetch mode).
get_fields = [
    ("host", "local.example"),
    ("date", DATE),
    ("accept", "application/activity+json, application/ld+json"),
]
get_text = "(request-target): get /users/alice\nhost: local.example\ndate: " + DATE + (
    "\naccept: application/activity+json, application/ld+json"
)
seed(
    "cavage",
    "mastodon-signed-get",
    request(
        "GET /users/alice local.example https",
        get_fields
        + [
            (
                "signature",
                cavage_value(
                    KEY_ID,
                    "rsa-sha256",
                    "(request-target) host date accept",
                    b64(rsa_sign(get_text.encode())),
                ),
            )
        ],
    ),
)

# (created) and (expires), unquoted numbers, as GoToSocial-style hs2019 signers send them.
ce_text = (
    f"(request-target): get /users/alice/outbox?page=true\nhost: local.example\n"
    f"(created): {CREATED}\n(expires): {CREATED + 300}"
)
seed(
    "cavage",
    "created-expires-ed25519",
    request(
        "GET /users/alice/outbox?page=true local.example",
        [
            ("host", "local.example"),
            (
                "signature",
                f'keyId="{KEY_ID}",algorithm="hs2019",created={CREATED},expires={CREATED + 300}.5,'
                f'headers="(request-target) host (created) (expires)",'
                f'signature="{b64(ed_sign(ce_text.encode()))}"',
            ),
        ],
    ),
)

# No headers parameter (the date alone), escaped quotes, odd spacing and case.
seed(
    "cavage",
    "defaults-and-escapes",
    request(
        "DELETE /users/alice/inbox",
        [
            ("Host", "local.example"),
            ("Date", DATE),
            ("Signature", 'KeyId = "https://remote.example/users/b\\"ob" , Signature="AAAA"'),
        ],
    ),
)
seed(
    "cavage",
    "repeated-fields",
    request(
        "POST /inbox local.example",
        [
            ("host", "local.example"),
            ("date", DATE),
            ("x-multi", "a"),
            ("x-multi", "b"),
            ("digest", DIGEST),
            (
                "signature",
                'keyId="acct:bob@remote.example",headers="(request-target) date digest x-multi",'
                'signature="AAAA"',
            ),
        ],
        ACTIVITY,
    ),
)
seed(
    "cavage",
    "malformed",
    request(
        "POST /inbox",
        [("date", DATE), ("signature", 'keyId="x,signature="AAAA",headers=date')],
    ),
)

# ---- RFC 9421 -----------------------------------------------------------------------------

# RFC 9421 B.2's test-request and its published signatures (RFC 8792 line wraps joined).
RFC_DIGEST = (
    "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwE"
    "mTHWXvJwew==:"
)
RFC_FIELDS = [
    ("host", "example.com"),
    ("date", "Tue, 20 Apr 2021 02:07:55 GMT"),
    ("content-type", "application/json"),
    ("content-digest", RFC_DIGEST),
    ("content-length", "18"),
]
RFC_BODY = b'{"hello": "world"}'
RFC_FIRST = "POST /foo?param=Value&Pet=dog example.com https"
RFC_EXAMPLES = {
    "b21": (
        'sig-b21=();created=1618884473;keyid="test-key-rsa-pss";nonce="b3k2pp5k7z-50gnwp.yemd"',
        "sig-b21=:d2pmTvmbncD3xQm8E9ZV2828BjQWGgiwAaw5bAkgibUopemLJcWDy/lkbbHAve4cRAtx31Iq786U7i"
        "t++wgGxbtRxf8Udx7zFZsckzXaJMkA7ChG52eSkFxykJeNqsrWH5S+oxNFlD4dzVuwe8DhTSja8xxbR/Z2cOGdCb"
        "zR72rgFWhzx2VjBqJzsPLMIQKhO4DGezXehhWwE56YCE+O6c0mKZsfxVrogUvA4HELjVKWmAvtl6UnCh8jYzuV"
        "G5WSb/QEVPnP5TmcAnLH1g+s++v6d4s8m0gCw1fV5/SITLq9mhho8K3+7EPYTU8IU1bLhdxO5Nyt8C8ssinQ98X"
        "w9Q==:",
    ),
    "b22": (
        'sig-b22=("@authority" "content-digest" "@query-param";name="Pet");created=1618884473'
        ';keyid="test-key-rsa-pss";tag="header-example"',
        "sig-b22=:LjbtqUbfmvjj5C5kr1Ugj4PmLYvx9wVjZvD9GsTT4F7GrcQEdJzgI9qHxICagShLRiLMlAJjtq6N4C"
        "DfKtjvuJyE5qH7KT8UCMkSowOB4+ECxCmT8rtAmj/0PIXxi0A0nxKyB09RNrCQibbUjsLS/2YyFYXEu4TRJQzRw"
        "1rLEuEfY17SARYhpTlaqwZVtR8NV7+4UKkjqpcAoFqWFQh62s7Cl+H2fjBSpqfZUJcsIk4N6wiKYd4je2U/lank"
        "enQ99PZfB4jY3I5rSV2DSBVkSFsURIjYErOs0tFTQosMTAoxk//0RoKUqiYY8Bh0aaUEb0rQl3/XaVe4bXTugEjH"
        "Sw==:",
    ),
    "b23": (
        'sig-b23=("date" "@method" "@path" "@query" "@authority" "content-type" '
        '"content-digest" "content-length");created=1618884473;keyid="test-key-rsa-pss"',
        "sig-b23=:bbN8oArOxYoyylQQUU6QYwrTuaxLwjAC9fbY2F6SVWvh0yBiMIRGOnMYwZ/5MR6fb0Kh1rIRASVxFk"
        "eGt683+qRpRRU5p2voTp768ZrCUb38K0fUxN0O0iC59DzYx8DFll5GmydPxSmme9v6ULbMFkl+V5B1TP/yPViV7"
        "KsLNmvKiLJH1pFkh/aYA2HXXZzNBXmIkoQoLd7YfW91kE9o/CCoC1xMy7JA1ipwvKvfrs65ldmlu9bpG6A9Bmzhu"
        "zF8Eim5f8ui9eH8LZH896+QIF61ka39VBrohr9iyMUJpvRX2Zbhl5ZJzSRxpJyoEZAFL2FUo5fTIztsDZKEgM4c"
        "UA==:",
    ),
    "b26": (
        'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length")'
        ';created=1618884473;keyid="test-key-ed25519"',
        "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5"
        "WPpBKRCw==:",
    ),
}
for name, (inp, sig) in RFC_EXAMPLES.items():
    seed(
        "rfc9421",
        f"rfc9421-{name}",
        request(RFC_FIRST, RFC_FIELDS + [("signature-input", inp), ("signature", sig)], RFC_BODY),
    )
# Two signatures, the second picked by label.
seed(
    "rfc9421",
    "rfc9421-two-labels",
    request(
        RFC_FIRST,
        RFC_FIELDS
        + [
            ("signature-input", RFC_EXAMPLES["b21"][0]),
            ("signature-input", RFC_EXAMPLES["b26"][0]),
            ("signature", RFC_EXAMPLES["b21"][1] + ", " + RFC_EXAMPLES["b26"][1]),
            ("x-fuzz-label", "sig-b26"),
        ],
        RFC_BODY,
    ),
)


def sf_string(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def rfc9421_request(label, method, path, authority, fields, components, params, sign, body=b""):
    """Signs `components` of a request the way RFC 9421 2.5 builds the base."""
    scheme = "https"
    path_only, _, query = path.partition("?")
    derived = {
        "@method": method,
        "@target-uri": f"{scheme}://{authority}{path}",
        "@authority": authority,
        "@scheme": scheme,
        "@request-target": path,
        "@path": path_only,
        "@query": "?" + query,
    }
    lookup = {}
    for n, v in fields:
        lookup.setdefault(n.lower(), []).append(v.strip())
    lines = []
    ids = []
    for c in components:
        if isinstance(c, tuple):  # ("@query-param", "name")
            ident = f'"@query-param";name="{c[1]}"'
            raw = dict(p.split("=", 1) for p in query.split("&"))[c[1]]
            value = "".join(
                chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "*-._") else f"%{b:02X}"
                for b in urllib.parse.unquote_plus(raw).encode()
            )
        else:
            ident = sf_string(c)
            value = derived[c] if c.startswith("@") else ", ".join(lookup[c])
        ids.append(ident)
        lines.append(f"{ident}: {value}")
    sig_params = "(" + " ".join(ids) + ")" + params
    lines.append(f'"@signature-params": {sig_params}')
    base = "\n".join(lines).encode()
    all_fields = fields + [
        ("signature-input", f"{label}={sig_params}"),
        ("signature", f"{label}=:{b64(sign(base))}:"),
    ]
    return request(f"{method} {path} {authority} {scheme}", all_fields, body)


CONTENT_DIGEST = "sha-256=:" + b64(hashlib.sha256(ACTIVITY).digest()) + ":"
inbox_fields = [
    ("host", "local.example"),
    ("date", DATE),
    ("content-type", "application/activity+json"),
    ("content-digest", CONTENT_DIGEST),
]
for name, alg, sign in [
    ("ed25519", "ed25519", ed_sign),
    ("rsa-v1_5", "rsa-v1_5-sha256", rsa_sign),
    ("rsa-pss", "rsa-pss-sha512", rsa_pss_sign),
    ("ecdsa-p256", "ecdsa-p256-sha256", p256_raw_sign),
]:
    seed(
        "rfc9421",
        f"fediverse-delivery-{name}",
        rfc9421_request(
            "sig1",
            "POST",
            "/users/alice/inbox",
            "local.example",
            inbox_fields,
            ["@method", "@target-uri", "content-type", "content-digest"],
            f';created={CREATED};keyid="{KEY_ID}";alg="{alg}"',
            sign,
            ACTIVITY,
        ),
    )
seed(
    "rfc9421",
    "fediverse-get-no-alg",
    rfc9421_request(
        "sig1",
        "GET",
        "/users/alice/outbox?page=true&min_id=0",
        "local.example",
        [("host", "local.example"), ("date", DATE), ("accept", "application/activity+json")],
        ["@method", "@path", "@query", "@authority", "date", ("@query-param", "page"), "accept"],
        f';created={CREATED};expires={CREATED + 300};keyid="{KEY_ID}";nonce="n0";tag="fedi"',
        ed_sign,
    ),
)
seed(
    "rfc9421",
    "request-target-scheme",
    rfc9421_request(
        "a",
        "PUT",
        "/x?y=%20z+w",
        "local.example:8443",
        [("host", "local.example:8443"), ("date", DATE), ("digest", DIGEST)],
        ["@method", "@request-target", "@scheme", "host", "digest", ("@query-param", "y")],
        f';created={CREATED};keyid="{KEY_ID}"',
        rsa_sign,
    ),
)
seed(
    "rfc9421",
    "component-parameters",
    request(
        "POST /inbox local.example",
        inbox_fields
        + [
            (
                "signature-input",
                'sig1=("@method" "content-digest";sf "x";bs "y";key="a" "@status");'
                'created=1.5;keyid=?1;alg="hmac-sha256"',
            ),
            ("signature", "sig1=:AAAA:, sig2=(:AAAA:)"),
        ],
        ACTIVITY,
    ),
)

# ---- digests ------------------------------------------------------------------------------

sha256 = b64(hashlib.sha256(ACTIVITY).digest())
sha512 = b64(hashlib.sha512(ACTIVITY).digest())
seed("digest", "digest-sha256", request("POST /inbox", [("digest", "SHA-256=" + sha256)], ACTIVITY))
seed(
    "digest",
    "digest-two-algorithms",
    request("POST /inbox", [("digest", f"sha-512={sha512}, SHA-256={sha256},md5=AAAA")], ACTIVITY),
)
seed("digest", "digest-two-lines", request("POST /inbox", [("digest", "SHA-256=" + sha256), ("digest", "unixsum=1")], ACTIVITY))
seed(
    "digest",
    "content-digest",
    request("POST /inbox", [("content-digest", f"sha-256=:{sha256}:, sha-512=:{sha512}:")], ACTIVITY),
)
seed(
    "digest",
    "both-fields",
    request(
        "POST /inbox",
        [("digest", "SHA-256=" + sha256), ("content-digest", f"sha-256=:{sha256}:;p=1"), ("content-digest", "md5=:AAAA:")],
        ACTIVITY,
    ),
)
seed("digest", "mismatch-and-garbage", request("POST /inbox", [("digest", "SHA-256=%%%"), ("content-digest", "sha-256=(1 2)")], b"x"))

# ---- keys ---------------------------------------------------------------------------------

for name in [
    "rsa-2048.pub.pem",
    "rsa-2048.pkcs1.pem",
    "rsa-1024.pub.pem",
    "ed25519.pub.pem",
    "p256.pub.pem",
]:
    seed("key", name, read(name))
for name, key in [("rsa", RSA), ("ed25519", ED), ("p256", P256)]:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    seed("key", f"{name}.spki.der", der)
ed_raw = ED.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def b58(data):
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = alphabet[r] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


MULTIBASE = "z" + b58(b"\xed\x01" + ed_raw)
seed("key", "ed25519.multibase", MULTIBASE)
p384 = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
seed("key", "p384.pub.pem", p384)
rsa4096 = rsa.generate_private_key(65537, 4096).public_key()
seed(
    "key",
    "rsa-4096.pkcs1.pem",
    rsa4096.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1),
)
seed("key", "certificate-label", b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")

# ---- actor documents ----------------------------------------------------------------------

RSA_PUB = read("rsa-2048.pub.pem").decode()
ED_PUB = read("ed25519.pub.pem").decode()
mastodon_actor = {
    "@context": [
        "https://www.w3.org/ns/activitystreams",
        "https://w3id.org/security/v1",
        {"manuallyApprovesFollowers": "as:manuallyApprovesFollowers", "toot": "http://joinmastodon.org/ns#"},
    ],
    "id": ACTOR,
    "type": "Person",
    "following": ACTOR + "/following",
    "followers": ACTOR + "/followers",
    "inbox": ACTOR + "/inbox",
    "outbox": ACTOR + "/outbox",
    "preferredUsername": "bob",
    "name": "Bob",
    "summary": "<p>Hello</p>",
    "url": "https://remote.example/@bob",
    "manuallyApprovesFollowers": False,
    "discoverable": True,
    "published": "2024-05-01T00:00:00Z",
    "publicKey": {"id": KEY_ID, "owner": ACTOR, "publicKeyPem": RSA_PUB},
    "endpoints": {"sharedInbox": "https://remote.example/inbox"},
    "icon": {"type": "Image", "mediaType": "image/png", "url": "https://remote.example/a.png"},
}
seed("actor", "mastodon-actor", KEY_ID + "\n" + json.dumps(mastodon_actor, indent=2))
misskey = dict(mastodon_actor)
misskey["publicKey"] = [
    {"id": ACTOR + "#other", "owner": ACTOR, "publicKeyPem": RSA_PUB},
    {"id": KEY_ID, "type": "Key", "owner": {"id": ACTOR}, "publicKeyPem": ED_PUB},
]
seed("actor", "public-key-array", KEY_ID + "\n" + json.dumps(misskey))
gts_key = {
    "@context": "https://w3id.org/security/v1",
    "id": "https://remote.example/users/bob/main-key",
    "owner": ACTOR,
    "publicKeyPem": RSA_PUB,
}
seed("actor", "gotosocial-key-document", gts_key["id"] + "\n" + json.dumps(gts_key))
multikey = {
    "@context": ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/multikey/v1"],
    "id": ACTOR,
    "type": "Person",
    "assertionMethod": [
        {
            "id": ACTOR + "#ed25519-key",
            "type": "Multikey",
            "controller": ACTOR,
            "publicKeyMultibase": MULTIBASE,
        }
    ],
}
seed("actor", "fep-521a-multikey", ACTOR + "#ed25519-key\n" + json.dumps(multikey))
foreign = dict(mastodon_actor)
foreign["publicKey"] = {"id": KEY_ID, "owner": "https://other.example/users/mallory", "publicKeyPem": RSA_PUB}
seed("actor", "foreign-owner", KEY_ID + "\n" + json.dumps(foreign))
seed("actor", "not-an-object", KEY_ID + '\n["a", {"id": 1}, null, 1e400]')

# ---- JWTs ---------------------------------------------------------------------------------


def jwt(header, claims, sign):
    head = b64u(json.dumps(header).encode()) + "." + b64u(json.dumps(claims).encode())
    return head + "." + b64u(sign(head.encode()))


def hs(secret):
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


CLAIMS = {"iss": ISSUER, "aud": AUDIENCE, "sub": "moderation-bot", "exp": 4102444800, "nbf": CREATED}
rsa_numbers = RSA.public_key().public_numbers()
p256_numbers = P256.public_key().public_numbers()
JWKS = {
    "keys": [
        {"kty": "oct", "kid": "fuzz", "alg": "HS256", "k": b64u(HS256_SECRET)},
        {
            "kty": "RSA",
            "kid": "rsa",
            "use": "sig",
            "n": b64u(rsa_numbers.n.to_bytes(256, "big")),
            "e": b64u(rsa_numbers.e.to_bytes(3, "big")),
        },
        {
            "kty": "EC",
            "crv": "P-256",
            "kid": "p256",
            "x": b64u(p256_numbers.x.to_bytes(32, "big")),
            "y": b64u(p256_numbers.y.to_bytes(32, "big")),
        },
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64u(ed_raw)},
        {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"},
        {"kty": "OKP", "crv": "X25519", "x": "AQAB"},
    ]
}
jwks_text = json.dumps(JWKS, indent=1)
seed("jwt", "hs256", jwks_text + "\n" + jwt({"alg": "HS256", "typ": "JWT", "kid": "fuzz"}, CLAIMS, hs(HS256_SECRET)))
seed("jwt", "rs256", jwks_text + "\n" + jwt({"alg": "RS256", "kid": "rsa"}, CLAIMS, rsa_sign))
seed("jwt", "es256", jwks_text + "\n" + jwt({"alg": "ES256", "kid": "p256"}, CLAIMS, p256_raw_sign))
seed("jwt", "eddsa-no-kid", jwks_text + "\n" + jwt({"alg": "EdDSA"}, dict(CLAIMS, aud=[AUDIENCE, "other"]), ed_sign))
seed("jwt", "expired", jwks_text + "\n" + jwt({"alg": "HS256"}, dict(CLAIMS, exp=CREATED), hs(HS256_SECRET)))
seed("jwt", "alg-none", '{"keys": []}\n' + b64u(b'{"alg":"none"}') + "." + b64u(json.dumps(CLAIMS).encode()) + ".")
seed("jwt", "short-secret", '{"keys":[{"kty":"oct","k":"c2hvcnQ"}]}\n' + jwt({"alg": "HS256"}, CLAIMS, hs(b"short")))
seed("jwt", "missing-claims", jwks_text + "\n" + jwt({"alg": "HS256"}, {"sub": 1}, hs(HS256_SECRET)))

# ---- blocklist ----------------------------------------------------------------------------

MASTODON_CSV = """#domain,#severity,#reject_media,#reject_reports,#public_comment,#obfuscate
evil.example,suspend,false,false,Spam and harassment,false
*.bad.example,silence,true,true,"Quoted, comment",true
xn--bcher-kva.example,suspend,false,false,,false
"""
blocked_delivery = request(
    "POST /inbox local.example",
    [
        ("host", "local.example"),
        ("content-type", 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"'),
        ("signature", 'keyId="https://mastodon.evil.example/users/spam#main-key",signature="AAAA"'),
    ],
    json.dumps({"type": "Create", "actor": "https://spam.bad.example/users/x", "object": {"actor": "x"}}),
)
seed("blocklist", "mastodon-domain-blocks-csv", MASTODON_CSV + "%%\n" + blocked_delivery.decode())
seed(
    "blocklist",
    "plain-list",
    """# blocked instances and networks
evil.example
Bad.Example.   # trailing dot, upper case
192.0.2.0/24
2001:db8::/32
198.51.100.7
%%
POST /users/alice/inbox evil.example:443
content-type: application/activity+json
signature-input: sig1=("@method");keyid="https://a.evil.example/k"
signature: sig1=:AAAA:

{"actor": [{"id": "https://ok.example/u"}, "https://x.evil.example/u", 1, [["nested"]]], "id": "a"}
""",
)
seed(
    "blocklist",
    "actor-object",
    'evil.example\n%%\nPOST /inbox\ncontent-type: application/json\n\n{"id":"x","actor":{"type":"Person","id":"https:\\/\\/evil.example\\/u"}}',
)
seed("blocklist", "bad-line", "evil.example\nnot a domain!\n")

# ---- config -------------------------------------------------------------------------------


def read_text(*path):
    with open(os.path.join(ROOT, *path)) as f:
        return f.read()


MINIMAL = """[[listeners]]
name = "public"
address = "0.0.0.0:8080"

[upstreams.mastodon]
endpoints = ["http://127.0.0.1:3000"]

[[routes]]
name = "all"
path_prefix = "/"
upstream = "mastodon"
"""
seed("config", "readme-minimal.toml", MINIMAL)
demo = read_text("gateway", "src", "demo.toml")
demo = demo.replace("{LISTEN}", "127.0.0.1:8080").replace("{UPSTREAM}", "127.0.0.1:8081").replace("{ADMIN}", "127.0.0.1:9901")
seed("config", "demo.toml", demo)
seed("config", "compose.toml", read_text("deploy", "compose", "fedgate.toml"))
bench = read_text("bench", "conf", "fedgate.toml")
for placeholder, value in [("@ADMIN_PORT@", "9901"), ("@PORT@", "8080"), ("@UPSTREAM_PORT@", "8081")]:
    bench = bench.replace(placeholder, value)
seed("config", "bench.toml", bench)
docs = read_text("docs", "configuration.md")
for i, block in enumerate(docs.split("```toml\n")[1:]):
    block = block.split("```")[0]
    if "[[listeners]]" not in block:
        block = MINIMAL.replace('name = "all"\n', "") + block
    seed("config", f"docs-example-{i}.toml", block)
seed(
    "config",
    "everything-inline.toml",
    f"""[server]
workers = 2
shutdown_grace = "30s"
log_format = "json"

[admin]
address = "127.0.0.1:9901"
health_timeout = "2s"

[forwarding]
client_headers = "forwarded"
trusted_proxies = ["10.0.0.0/8", "::1"]

[[listeners]]
name = "public"
address = "[::]:8080"
max_header_bytes = 65536

[upstreams.mastodon]
endpoints = ["http://10.0.0.11:3000", "https://[2001:db8::12]:3000"]
balance = "least_in_flight"
protocol = "http1"
[upstreams.mastodon.health_check]
type = "http"
path = "/health"
expected_statuses = ["200-299", "301"]
interval = "10s"
jitter = "10%"
[upstreams.mastodon.outlier_detection]
consecutive_failures = 5
base_ejection_time = "30s"
max_ejection_percent = 50
[upstreams.mastodon.circuit_breaker]
failure_rate = 0.5
min_requests = 20
window = "10s"
open_duration = "5s"
max_open_duration = "60s"
failure_statuses = [502, 503]
[upstreams.mastodon.retries]
max_retries = 2
methods = ["GET", "HEAD"]
per_try_timeout = "2s"
budget_percent = 20

[rate_limits.per_client]
key = "client"
rate = "100/s"
burst = 200
ipv6_prefix = 56
[rate_limits.per_instance]
key = "instance"
rate = "300/5m"
mode = "observe"
max_keys = 1000

[blocklist]
entries = ["evil.example", "*.bad.example", "192.0.2.0/24", "2001:db8::/32"]

[signatures]
clock_skew = "30m"
max_body = "1MiB"
[[signatures.keys]]
key_id = "{KEY_ID}"
pem = \"\"\"
{RSA_PUB}\"\"\"
[[signatures.keys]]
key_id = "{ACTOR}#ed25519-key"
multibase = "{MULTIBASE}"
[signatures.fetch]
enabled = true
timeout = "5s"
max_document_bytes = "256KiB"

[[routes]]
name = "inbox"
hosts = ["social.example", "*.social.example"]
path_prefix = "/inbox"
methods = ["POST"]
upstream = "mastodon"
signatures = "enforce"
rate_limits = ["per_client", "per_instance"]
timeout = "10s"

[[routes]]
name = "rest"
upstream = "mastodon"
buffer_body = 65536
blocklist = false
upgrades = ["websocket"]
""",
)
seed("config", "unknown-key.toml", '[server]\nworkers = -1\nnonsense = { a = [1, 2.5, 1979-05-27T07:32:00Z] }\n')

# ---- upstream responses (the first byte: HEAD when odd) -----------------------------------

CRLF = "\r\n"


def response(head_request, text):
    return ("1" if head_request else "0") + text.replace("\n", CRLF)


seed("h1_response", "content-length", response(False, "HTTP/1.1 200 OK\nContent-Type: application/activity+json\nContent-Length: 18\nDate: " + DATE + "\n\n") + '{"hello": "world"}')
seed("h1_response", "chunked-with-trailers", response(False, "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n5;ext=1\nhello\n0\nDigest: SHA-256=AAAA\nx-trailer: y\n\n"))
seed("h1_response", "chunked-multi", response(False, "HTTP/1.1 202 Accepted\nTransfer-Encoding: gzip, chunked\nConnection: keep-alive\n\n1a\nabcdefghijklmnopqrstuvwxyz\n10\n0123456789abcdef\n0\n\n"))
seed("h1_response", "head", response(True, "HTTP/1.1 200 OK\nContent-Length: 1234\nETag: \"x\"\n\n"))
seed("h1_response", "no-content", response(False, "HTTP/1.1 204 No Content\nContent-Length: 5\n\n"))
seed("h1_response", "not-modified", response(False, "HTTP/1.1 304 Not Modified\nTransfer-Encoding: chunked\n\n"))
seed("h1_response", "interim-then-final", response(False, "HTTP/1.1 100 Continue\n\nHTTP/1.1 103 Early Hints\nLink: </s.css>; rel=preload\n\nHTTP/1.1 201 Created\nLocation: /x\nContent-Length: 2\n\n") + "ok")
seed("h1_response", "close-delimited", response(False, "HTTP/1.0 200 OK\nConnection: close\n\n") + "until the end")
seed("h1_response", "conflicting-lengths", response(False, "HTTP/1.1 200 OK\nContent-Length: 3\nContent-Length: 4\nTransfer-Encoding: chunked\n\n3\nabc\n0\n\n"))
WEBFINGER = '{"subject":"acct:bob@remote.example","aliases":[],"links":[]}'
seed("h1_response", "mastodon-webfinger", response(False, "HTTP/1.1 200 OK\nServer: Mastodon\nContent-Type: application/jrd+json; charset=utf-8\nVary: Accept, Origin\nCache-Control: max-age=259200, public\nContent-Length: " + str(len(WEBFINGER)) + "\nX-Request-Id: 7a3b\n\n") + WEBFINGER)
seed("h1_response", "switching-protocols", response(False, "HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\nConnection: Upgrade\n\n") + "\x81\x05hello")

# ---- activity bodies -----------------------------------------------------------------------

AS_PUBLIC = "https://www.w3.org/ns/activitystreams#Public"
MASTODON_CONTEXT = [
    "https://www.w3.org/ns/activitystreams",
    {"ostatus": "http://ostatus.org#", "atomUri": "ostatus:atomUri", "sensitive": "as:sensitive"},
]
LD_SIGNATURE = {
    "type": "RsaSignature2017",
    "creator": KEY_ID,
    "created": "2024-05-01T12:00:00Z",
    "signatureValue": "AAAA",
}
with open(os.path.join(ROOT, "bench", "create-activity.json"), "rb") as f:
    seed("activity", "mastodon-create-note", f.read())
seed(
    "activity",
    "gotosocial-create-note",
    json.dumps(
        {
            "@context": ["https://gotosocial.org/ns", "https://www.w3.org/ns/activitystreams"],
            "actor": "https://gts.example/users/carol",
            "cc": "https://gts.example/users/carol/followers",
            "id": "https://gts.example/users/carol/statuses/01HXYZ/activity",
            "object": {
                "attributedTo": "https://gts.example/users/carol",
                "cc": "https://gts.example/users/carol/followers",
                "content": "<p>hi</p>",
                "id": "https://gts.example/users/carol/statuses/01HXYZ",
                "published": "2024-05-01T12:00:00Z",
                "tag": [],
                "to": AS_PUBLIC,
                "type": "Note",
            },
            "to": "https://gts.example/users/carol/followers",
            "type": "Create",
        },
        sort_keys=True,
        separators=(",", ":"),
    ),
)
seed("activity", "mastodon-follow", ACTIVITY)
seed(
    "activity",
    "mastodon-announce",
    json.dumps(
        {
            "@context": "https://www.w3.org/ns/activitystreams",
            "id": ACTOR + "/statuses/2/activity",
            "type": "Announce",
            "actor": ACTOR,
            "published": "2024-05-01T12:05:00Z",
            "to": [AS_PUBLIC],
            "cc": ["https://gts.example/users/carol", ACTOR + "/followers"],
            "object": "https://gts.example/users/carol/statuses/01HXYZ",
        }
    ),
)
seed(
    "activity",
    "mastodon-delete-tombstone",
    json.dumps(
        {
            "@context": MASTODON_CONTEXT,
            "id": ACTOR + "/statuses/1#delete",
            "type": "Delete",
            "actor": ACTOR,
            "to": [AS_PUBLIC],
            "object": {"id": ACTOR + "/statuses/1", "type": "Tombstone", "atomUri": ACTOR + "/statuses/1"},
            "signature": LD_SIGNATURE,
        }
    ),
)
seed(
    "activity",
    "mastodon-like",
    json.dumps(
        {
            "@context": "https://www.w3.org/ns/activitystreams",
            "id": ACTOR + "#likes/4242",
            "type": "Like",
            "actor": ACTOR,
            "object": "https://local.example/users/alice/statuses/1",
        }
    ),
)
seed(
    "activity",
    "mastodon-undo-follow",
    json.dumps(
        {
            "@context": "https://www.w3.org/ns/activitystreams",
            "id": ACTOR + "#follows/1/undo",
            "type": "Undo",
            "actor": ACTOR,
            "object": {
                "id": "https://remote.example/7a1c",
                "type": "Follow",
                "actor": ACTOR,
                "object": "https://local.example/users/alice",
            },
        }
    ),
)
# What the view reads specially: escapes, `type` arrays, actor objects and arrays, a repeated
# `actor`, an object array, `as:Public` in the object's cc, a bracketed IPv6 host.
seed(
    "activity",
    "shapes-and-escapes",
    '{"type":["Cr\\u0065ate","Other"],"\\u0061ctor":[{"type":"Person","id":"https:\\/\\/u:p@[2001:DB8::1]:8443\\/u"},'
    '"https://two.example/u",[["nested"]],null],"id":"x\\"y","actor":"https://EVIL.example/u",'
    '"object":[{"type":["Note"],"id":"https://a.example/1","cc":["as:Public"],"published":"2024-05-01T12:00:00Z"},"b"],'
    '"to":"Public","bcc":[1,true,{"id":"as:Public"}]}',
)

for target, n in sorted(written.items()):
    print(f"{target}: {n} seeds", file=sys.stderr)
