-- wrk script for benches/run.sh: POST a 2,048-byte JSON-RPC body, as the
-- Odoo web client does for /web/dataset/call_kw.
--
-- The body is read from the file named by $POST_BODY (run.sh writes it), so
-- that the curl sanity check and wrk send the very same bytes.

local path = os.getenv("POST_BODY")
assert(path and path ~= "", "POST_BODY must name the request body file")
local file = assert(io.open(path, "rb"))
local body = file:read("*a")
file:close()
assert(#body == 2048, "the request body must be 2048 bytes, got " .. #body)

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
