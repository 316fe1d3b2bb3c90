// Signs one request with an HTTP-signature package from npm, for fedgate's end-to-end tests:
// clients nobody on this project wrote. The packages are installed by the test command in
// the directory named by FEDGATE_NPM (tests/signers/package.json, pinned).
//
// Reads a JSON object on stdin:
//   library: "http-signature" (joyent), "peertube" (@peertube/http-signature, hs2019) or
//            "misskey" (@misskey-dev/node-http-message-signatures, draft signing with
//            both Digest and Content-Digest)
//   key_id, key_file (private key PEM), method, path, host, headers (object), body (text),
//   covered (names, e.g. ["(request-target)", "host", "date", "digest"]),
//   date (optional, an HTTP date; default now),
//   expires_in (optional, seconds: the `(expires)` of joyent's and PeerTube's signers, which
//   set `(created)` to now; their default is 60)
// and prints the headers to send as a JSON object.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { pathToFileURL } from "node:url";

const npm = process.env.FEDGATE_NPM;
if (!npm) throw new Error("FEDGATE_NPM names the directory the signers are installed in");
const require = createRequire(join(npm, "package.json"));

const spec = JSON.parse(readFileSync(0, "utf8"));
const key = readFileSync(spec.key_file, "utf8");
const headers = {
  ...spec.headers,
  host: spec.host,
  date: spec.date ?? new Date().toUTCString(),
};

async function sign() {
  if (spec.library === "misskey") {
    const lib = await import(
      pathToFileURL(require.resolve("@misskey-dev/node-http-message-signatures")).href
    );
    const request = {
      headers,
      method: spec.method,
      url: `http://${spec.host}${spec.path}`,
      body: spec.body,
    };
    await lib.genDigestHeaderBothRFC3230AndRFC9530(request, spec.body, "SHA-256");
    await lib.signAsDraftToRequest(
      request,
      { keyId: spec.key_id, privateKeyPem: key },
      spec.covered,
    );
    return request.headers;
  }
  // joyent's signer and PeerTube's fork sign a Node request object: what they use of it
  // is its method, path and header accessors.
  const lib = require(spec.library === "peertube" ? "@peertube/http-signature" : "http-signature");
  headers.digest = "SHA-256=" + createHash("sha256").update(spec.body).digest("base64");
  const request = {
    method: spec.method,
    path: spec.path,
    getHeader: (n) => headers[n.toLowerCase()],
    setHeader: (n, v) => {
      headers[n.toLowerCase()] = v;
    },
  };
  lib.signRequest(request, {
    key,
    keyId: spec.key_id,
    headers: spec.covered,
    authorizationHeaderName: "signature",
    hideAlgorithm: spec.library === "peertube",
    expiresIn: spec.expires_in,
  });
  return headers;
}

process.stdout.write(JSON.stringify(await sign()));
