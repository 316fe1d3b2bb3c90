-- wrk script: POST a 2 KiB ActivityPub Create activity to an inbox, as a remote
-- instance delivering a post would.
--
--   wrk -s bench/post-inbox.lua http://127.0.0.1:PORT/users/alice/inbox
--
-- The body is exactly 2048 bytes (checked below). The Digest header is the real
-- SHA-256 of the body, so a later "signatures on" scenario can reuse it; no Signature
-- header is sent, since nothing on this path verifies one yet.

wrk.method = "POST"
wrk.path = "/users/alice/inbox"
wrk.headers["Content-Type"] = "application/activity+json"
wrk.headers["Accept"] = "application/activity+json"
wrk.headers["Date"] = "Wed, 01 May 2024 12:00:00 GMT"
wrk.headers["Digest"] = "SHA-256=yIagDgT6kbHgBZJ9vu//py00QNiL2OSVnSVipRZQF4g="
wrk.body = [==[
{
  "@context": [
    "https://www.w3.org/ns/activitystreams",
    "https://w3id.org/security/v1"
  ],
  "id": "https://remote.example/users/bob/statuses/109876543210/activity",
  "type": "Create",
  "actor": "https://remote.example/users/bob",
  "published": "2024-05-01T12:00:00Z",
  "to": [
    "https://www.w3.org/ns/activitystreams#Public"
  ],
  "cc": [
    "https://remote.example/users/bob/followers",
    "https://local.example/users/alice"
  ],
  "object": {
    "id": "https://remote.example/users/bob/statuses/109876543210",
    "type": "Note",
    "published": "2024-05-01T12:00:00Z",
    "attributedTo": "https://remote.example/users/bob",
    "to": [
      "https://www.w3.org/ns/activitystreams#Public"
    ],
    "cc": [
      "https://remote.example/users/bob/followers",
      "https://local.example/users/alice"
    ],
    "inReplyTo": null,
    "sensitive": false,
    "url": "https://remote.example/@bob/109876543210",
    "tag": [
      {
        "type": "Mention",
        "href": "https://local.example/users/alice",
        "name": "@alice@local.example"
      }
    ],
    "content": "<p><span class=\"h-card\"><a href=\"https://local.example/@alice\" class=\"u-url mention\">@<span>alice</span></a></span> Benchmark post for the inbox path: a short note with a mention, the kind of Create activity that a busy instance receives thousands of times a minute from its peers. It carries enough text to be a realistic size without any attachment. Benchmark post for the inbox path: a short note with a mention, the kind of Create activity that a busy instance receives thousands of times a minute from its peers. It carries enough text to be a realistic size without any attachment. Benchmark post for the inbox path: a short note with a mention, the kind of Create activity that a busy instance receives thousands of times a minute from its peers. It carries enough text to be a realistic size without any attachment. Benchmark post for the inbox path: a short note with a mention, the kind of Create activity...</p>"
  }
}
]==]

-- A truncated or edited body would silently change what is measured.
assert(#wrk.body == 2048, "post-inbox.lua: body is " .. #wrk.body .. " bytes, expected 2048")
