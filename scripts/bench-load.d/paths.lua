-- wrk script for scripts/bench-search: report.lua (BENCH_REPORT_LUA: its request settings and its
-- BENCH line of results), each request to the next target of BENCH_PATHS_FILE (one request
-- target a line, `/fhir/Patient?family=…`), round-robin, each wrk thread from its own offset.

local report = assert(os.getenv("BENCH_REPORT_LUA"), "BENCH_REPORT_LUA is not set")
dofile(report)

local paths = {}
local file = assert(os.getenv("BENCH_PATHS_FILE"), "BENCH_PATHS_FILE is not set")
for line in io.lines(file) do
  if line ~= "" then
    paths[#paths + 1] = line
  end
end
assert(#paths > 0, "BENCH_PATHS_FILE has no request targets")

function request()
  local threads = tonumber(os.getenv("BENCH_THREADS_USED") or "1")
  local path = paths[(thread_index + counter * threads) % #paths + 1]
  counter = counter + 1
  return wrk.format(nil, path)
end
