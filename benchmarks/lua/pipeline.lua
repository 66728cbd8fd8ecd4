-- HTTP/1.1 pipelining for wrk: each write carries DEPTH requests (default 16).
--   wrk -t1 -c64 -d10s -s benchmarks/lua/pipeline.lua http://127.0.0.1:8000/plaintext -- 16
-- `fasterapi-asgi bench --pipeline N` generates the same thing. wrk records one latency sample per
-- batch, so its latency percentiles are not meaningful here: read requests/s only.
local depth = 16
local batch = nil

init = function(args)
  if args[1] ~= nil then depth = tonumber(args[1]) end
  local r = {}
  for i = 1, depth do r[i] = wrk.format() end
  batch = table.concat(r)
end

request = function()
  return batch
end
