# The newest scripts/bench-load run folder under the target directory $1 that holds a recording
# (and, with $2 = with-data, the gateway's data folder it was recorded with); prints nothing when
# there is none. Sourced by scripts/bench-ab, scripts/bench-instructions and scripts/bench-trees.
# shellcheck shell=bash
newest_recorded_run() {
  local dir
  # A target directory with no run yet is not an error: under pipefail the failing ls would end
  # the sourcing script (set -e) before it could say what is missing.
  { ls -1td "$1"/bench-load/2*/ 2>/dev/null || true; } | while read -r dir; do
    [ -s "$dir/recording.jsonl" ] || continue
    [ "${2:-}" != with-data ] || [ -d "$dir/gateway-data" ] || continue
    echo "${dir%/}"
    break
  done
}
