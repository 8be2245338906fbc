-- wrk script for scripts/bench-load: the request from the environment, one JSON line of results.
--   BENCH_METHOD     GET (default) or POST
--   BENCH_BODY_FILE  the request body, for POST
--   BENCH_TOKEN      a bearer token (optional)
--   BENCH_ID_PATH    with BENCH_ID_COUNT: each request goes to BENCH_ID_PATH .. BENCH_ID_PREFIX .. i
--                    for i cycling through 0 .. BENCH_ID_COUNT - 1 (each wrk thread its own residue
--                    class, so no two requests in flight name one id while the count is well above
--                    the connections), and "@ID@" in the body becomes that id (updates of many
--                    resources: writes of one resource in parallel would race on its version)
--   BENCH_PAUSE_MS   each connection waits this long after an answer before its next request
--                    (wrk's `delay`), so that every request finds the server idle; 0 or unset: none
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

local id_path = os.getenv("BENCH_ID_PATH")
local id_count = tonumber(os.getenv("BENCH_ID_COUNT") or "0")
local id_prefix = os.getenv("BENCH_ID_PREFIX") or ""
local next_thread = 0

function setup(thread)
  thread:set("thread_index", next_thread)
  next_thread = next_thread + 1
end

function init(args)
  thread_index = thread_index or 0
  counter = 0
end

if id_path and id_path ~= "" and id_count > 0 then
  local template = wrk.body
  function request()
    local threads = tonumber(os.getenv("BENCH_THREADS_USED") or "1")
    local id = id_prefix .. tostring((thread_index + counter * threads) % id_count)
    counter = counter + 1
    local body = template and template:gsub("@ID@", id) or nil
    return wrk.format(nil, id_path .. id, nil, body)
  end
end

local pause_ms = tonumber(os.getenv("BENCH_PAUSE_MS") or "0") or 0
if pause_ms > 0 then
  function delay()
    return pause_ms
  end
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
