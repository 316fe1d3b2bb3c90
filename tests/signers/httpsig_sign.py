"""Signs one request with the `httpsig` package from PyPI (draft-cavage), for fedgate's
end-to-end tests: an HTTP-signature client nobody on this project wrote.

Reads a JSON object on stdin:
  key_id, key_file (private key PEM), algorithm ("rsa-sha256"; httpsig 1.3 signs RSA and
  HMAC only, and names its algorithm: no hs2019, no (created) or (expires)),
  method, path (with query), host, headers (object, sent as given), body (text),
  covered (list of names, e.g. ["(request-target)", "host", "date", "digest"]),
  date (optional HTTP date; default: now), digest (bool: add a SHA-256 Digest of the body)
and prints the headers to send as a JSON object.
"""

import base64
import email.utils
import hashlib
import json
import sys

from httpsig.sign import HeaderSigner


def main() -> None:
    spec = json.load(sys.stdin)
    headers = dict(spec.get("headers", {}))
    headers["host"] = spec["host"]
    headers["date"] = spec.get("date") or email.utils.formatdate(usegmt=True)
    body = spec.get("body", "").encode()
    if spec.get("digest"):
        headers["digest"] = "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()
    with open(spec["key_file"], "rb") as f:
        secret = f.read()
    signer = HeaderSigner(
        spec["key_id"],
        secret,
        algorithm=spec.get("algorithm", "rsa-sha256"),
        headers=spec["covered"],
        sign_header="signature",
    )
    signed = signer.sign(headers, host=spec["host"], method=spec["method"], path=spec["path"])
    json.dump(signed, sys.stdout)


if __name__ == "__main__":
    main()
