-- POST the 1 KB pydantic body of the FastAPI scenario:
--   wrk -t1 -c64 -d10s --latency -s benchmarks/lua/post_1k.lua http://127.0.0.1:8000/items
-- (run from the repository root so the body file is found).
local f = assert(io.open("benchmarks/apps/item_1k.json", "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
