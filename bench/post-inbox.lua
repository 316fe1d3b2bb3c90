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
-- The activity itself is bench/create-activity.json, next to this script (the plugin
-- micro-benchmark posts the same bytes).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local file = assert(io.open(here .. "create-activity.json", "rb"))
wrk.body = file:read("*a")
file:close()

-- A truncated or edited body would silently change what is measured.
assert(#wrk.body == 2048, "post-inbox.lua: body is " .. #wrk.body .. " bytes, expected 2048")
