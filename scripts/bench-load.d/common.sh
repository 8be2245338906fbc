# Shared by scripts/bench-load, scripts/bench-writes and scripts/bench-replicas (sourced, not
# run): processes, tools, the upstream (sekmet-fhir), the test issuer, gateways, wrk runs and
# their result rows.
#
# The sourcing script sets before it sources this file: bench (its name, for messages), root,
# here (this folder), work (its run folder), results (the JSONL file of rows), venv_python,
# fhirseal (the gateway binary), threads, conns, warmup, issuer; then calls bench_init.
# shellcheck shell=bash

log() { echo "$bench: [$(printf '%3d' "$SECONDS") s] $*" >&2; }
die() { echo "$bench: $*" >&2; exit 1; }

# --- processes ----------------------------------------------------------------------------------

pids=()
sekmet_started=0
# Commands cleanup runs after stopping the processes (e.g. a throwaway PostgreSQL's stop).
cleanup_hooks=()

stop_pid() {
  local pid=$1 i kept=()
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  for i in "${pids[@]}"; do
    [ "$i" = "$pid" ] || kept+=("$i")
  done
  pids=("${kept[@]}")
}

cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do
    stop_pid "$pid"
  done
  if [ "$sekmet_started" = 1 ]; then
    "$root/scripts/fhir-server" stop "$work/sekmet" || true
  fi
  for hook in "${cleanup_hooks[@]}"; do
    eval "$hook" || true
  done
  # A gateway under load logs a line per request: 262 MB for one bench-load run's static rows.
  # Kept for reading (zless), compressed (that log to 10 MB), so runs do not fill the disk.
  local file
  for file in "$work"/gateway-*.log; do
    if [ -f "$file" ]; then gzip -f "$file" || true; fi
  done
  [ "$rc" = 0 ] || log "failed; logs are in $work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_ok URL PID: until URL answers 200, as long as PID runs.
wait_ok() {
  local url=$1 pid=$2
  for _ in $(seq 1 600); do
    kill -0 "$pid" 2>/dev/null || return 1
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$url")" = 200 ] && return 0
    sleep 0.1
  done
  return 1
}

# --- tools and builds ---------------------------------------------------------------------------

install_tools() {
  local missing=()
  command -v wrk >/dev/null || missing+=(wrk)
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
  command -v curl >/dev/null || missing+=(curl)
  command -v python3 >/dev/null || missing+=(python3)
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "missing ${missing[*]}: install them (Debian: apt-get install ${missing[*]})"
  log "installing ${missing[*]} with apt-get"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" \
    >"$work/apt.log" 2>&1; then
    apt-get update >>"$work/apt.log" 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" \
      >>"$work/apt.log" 2>&1 || die "apt-get install ${missing[*]} failed: $work/apt.log"
  fi
}

# --- the upstream, the test issuer, the gateway -------------------------------------------------

# start_sekmet: sekmet-fhir in $work/sekmet; sets sekmet (its FHIR base).
start_sekmet() {
  "$root/scripts/fhir-server" install
  mkdir -p "$work/sekmet"
  sekmet=$("$root/scripts/fhir-server" start "$work/sekmet")
  sekmet_started=1
  log "sekmet-fhir at $sekmet (log $work/sekmet/log)"
}

# start_issuer: the test issuer's JWKS (gateway/tests/keys/issuer.jwks.json) on a python
# http.server (sets jwks_url), and $work/gateway.toml: this checkout's embedded defaults plus that
# issuer (gateway_config).
start_issuer() {
  local jwks_port jwks_pid
  mkdir -p "$work/jwks"
  cp "$root/gateway/tests/keys/issuer.jwks.json" "$work/jwks/jwks.json"
  jwks_port=$(free_port)
  python3 -m http.server "$jwks_port" --bind 127.0.0.1 --directory "$work/jwks" \
    >"$work/jwks.log" 2>&1 &
  jwks_pid=$!
  pids+=("$jwks_pid")
  jwks_url=http://127.0.0.1:$jwks_port/jwks.json
  wait_ok "$jwks_url" "$jwks_pid" || die "the JWKS server did not start"
  gateway_config "$root" "$work/gateway.toml"
}

# gateway_config CHECKOUT FILE: FILE is CHECKOUT's embedded defaults (gateway/config/default.toml)
# plus the test issuer.
gateway_config() {
  {
    cat "$1/gateway/config/default.toml"
    cat <<TOML

# $bench: tokens of a test issuer (gateway/tests/keys/issuer.*)
[[smart.issuers]]
issuer = "$issuer"
jwks_uri = "$jwks_url"
TOML
  } >"$2"
}

gw_count=0
gw_pid=
gw=
gw_log=
token=
# Optional, read by start_gateway (replicas behind a load balancer): gw_public_url, the address
# clients use (server.public_url and the tokens' audience; empty: the gateway's own), and gw_env,
# more VAR=VALUE words for the gateway's environment (its admin listener, say).
gw_public_url=
gw_env=()

# start_gateway UPSTREAM_BASE [BINARY] [DATA_DIR] [CONFIG]: a fresh gateway process (empty caches)
# on a new port, BINARY ($fhirseal by default) over DATA_DIR ($work/gateway-data) with CONFIG
# ($work/gateway.toml); sets gw (its FHIR base), gw_pid, gw_log and token (a doctor's, for
# ${gw_public_url:-that base}). Several may run at once: keep each one's gw and gw_pid.
start_gateway() {
  local upstream=$1 binary=${2:-$fhirseal} data=${3:-$work/gateway-data}
  local config=${4:-$work/gateway.toml} port public
  gw_count=$((gw_count + 1))
  port=$(free_port)
  public=${gw_public_url:-http://127.0.0.1:$port}
  gw_log=$work/gateway-$gw_count.log
  (cd "$work" && exec env RUST_LOG="${RUST_LOG:-warn}" \
    FHIRSEAL__SERVER__LISTEN="127.0.0.1:$port" \
    FHIRSEAL__SERVER__PUBLIC_URL="$public" \
    FHIRSEAL__UPSTREAM__BASE_URL="$upstream" \
    FHIRSEAL__SERVER__DATA_DIR="$data" \
    "${gw_env[@]}" \
    "$binary" serve --config "$config" >"$gw_log" 2>&1) &
  gw_pid=$!
  pids+=("$gw_pid")
  gw=http://127.0.0.1:$port/fhir
  if ! wait_ok "$gw/metadata" "$gw_pid"; then
    tail -n 20 "$work/gateway-$gw_count.log" >&2 || true
    die "the gateway did not answer $gw/metadata (log $work/gateway-$gw_count.log)"
  fi
  token=$("$venv_python" "$here/mint_token.py" "$issuer" "$public/fhir" "$root/gateway/tests/keys/issuer.pem")
  log "gateway #$gw_count at $gw -> $upstream (log $gw_log)"
}

stop_gateway() { stop_pid "$gw_pid"; }

# expect STATUS METHOD URL [BODY_FILE] [TOKEN]: fails unless the answer has STATUS; prints the body.
expect() {
  local want=$1 method=$2 url=$3 body=${4:-} auth=${5:-} args=() status
  [ -n "$body" ] && args+=(--data-binary "@$body" -H 'Content-Type: application/fhir+json')
  [ -n "$auth" ] && args+=(-H "Authorization: Bearer $auth")
  status=$(curl -s -X "$method" -H 'Accept: application/fhir+json' "${args[@]}" --max-time 60 \
    -o "$work/answer" -w '%{http_code}' "$url") || status="no answer"
  [ "$status" = "$want" ] || die "$method $url: expected $want, got $status: $(head -c 400 "$work/answer")"
  cat "$work/answer"
}

# --- measuring ----------------------------------------------------------------------------------

# cpu_ticks PID...: the CPU time (user + system, in clock ticks) the processes have used so far.
cpu_ticks() {
  local total=0 pid ticks
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] || continue
    ticks=$(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')
    total=$((total + ticks))
  done
  echo "$total"
}
clock_ticks=$(getconf CLK_TCK)

# The processes of the server wrk talks to (the gateway, nginx's workers, sekmet-fhir): their
# CPU time per request is recorded with each run.
front_pids=()

# wrk_row PHASE STATE SCENARIO TARGET CONNS SECONDS URL METHOD BODY_FILE [TOKEN] [EXTRA_JSON]: one
# wrk run (report.lua; BENCH_ID_* in the environment pass through to it), appended to $results as
# one JSON row and printed as one line.
wrk_row() {
  local phase=$1 state=$2 scenario=$3 target=$4 c=$5 secs=$6 url=$7 method=$8 body=$9
  local auth=${10:-} extra=${11:-"{}"} t=$threads out line cpu_before cpu_after
  [ "$c" -lt "$t" ] && t=$c
  out=$work/wrk-$phase-$state-$scenario-$target-c$c.txt
  cpu_before=$(cpu_ticks "${front_pids[@]}")
  # BENCH_PERF (bench-load): a call-graph profile of the gateway while the static responder's
  # rows run at full concurrency; perf's sampling costs the gateway a few per cent of its CPU.
  local perf_pid=''
  if [ -n "${BENCH_PERF:-}" ] && [ "$phase" = static ] && [ "$target" = gateway ] && [ "$c" -gt 1 ]; then
    perf record -q -F 997 --call-graph dwarf,16384 -p "${front_pids[0]}" -o "$work/perf-$scenario.data" -- sleep "$secs" \
      >"$work/perf-$scenario.log" 2>&1 &
    perf_pid=$!
  fi
  BENCH_METHOD=$method BENCH_BODY_FILE=$body BENCH_TOKEN=$auth BENCH_THREADS_USED=$t \
    wrk -t"$t" -c"$c" -d"${secs}s" --timeout 30s -s "$here/report.lua" "$url" >"$out" 2>&1 \
    || die "wrk failed: $out"
  cpu_after=$(cpu_ticks "${front_pids[@]}")
  [ -z "$perf_pid" ] || wait "$perf_pid" || log "perf record failed: $work/perf-$scenario.log"
  line=$(sed -n 's/^BENCH //p' "$out")
  [ -n "$line" ] || die "no figures in $out"
  python3 -c '
import json, sys
row = {"phase": sys.argv[1], "state": sys.argv[2], "scenario": sys.argv[3], "target": sys.argv[4],
       "conns": int(sys.argv[5])}
row.update(json.loads(sys.argv[7])); row.update(json.loads(sys.argv[6]))
ticks, per_second = int(sys.argv[8]), int(sys.argv[9])
row["cpu_us_per_request"] = ticks / per_second * 1e6 / row["requests"] if row["requests"] else None
print(json.dumps(row))
sys.stderr.write("%s:   %-6s %-4s %-6s %-7s c=%-3d %8.0f req/s  p50 %7.2f ms  p99 %7.2f ms  "
                 "CPU %6.0f us/req  errors %d\n"
                 % (sys.argv[10], row["phase"], row["state"], row["scenario"], row["target"], row["conns"],
                    row["rps"], row["p50_ms"], row["p99_ms"], row["cpu_us_per_request"] or 0,
                    row["non2xx"] + row["socket_errors"]))
' "$phase" "$state" "$scenario" "$target" "$c" "$line" "$extra" "$((cpu_after - cpu_before))" \
    "$clock_ticks" "$bench" >>"$results"
}
