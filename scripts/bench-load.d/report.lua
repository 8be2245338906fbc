-- wrk script for scripts/bench-load: the request from the environment, one JSON line of results.
--   BENCH_METHOD     GET (default) or POST
--   BENCH_BODY_FILE  the request body, for POST
--   BENCH_TOKEN      a bearer token (optional)
-- At the end it prints `BENCH {"requests":…,"seconds":…,"rps":…,"p50_ms":…,"p90_ms":…,
-- "p99_ms":…,"max_ms":…,"non2xx":…,"socket_errors":…}`; non2xx counts statuses outside 200-399
-- (wrk's own rule), socket_errors connect/read/write errors and timeouts.

local method = os.getenv("BENCH_METHOD") or "GET"
wrk.method = method
wrk.headers["Accept"] = "application/fhir+json"
local token = os.getenv("BENCH_TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
local body_file = os.getenv("BENCH_BODY_FILE")
if body_file and body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = "application/fhir+json"
end

function done(summary, latency, requests)
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    'BENCH {"requests":%d,"seconds":%.3f,"rps":%.1f,"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,' ..
    '"max_ms":%.3f,"non2xx":%d,"socket_errors":%d}\n',
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, e.status, e.connect + e.read + e.write + e.timeout))
end
