"""Draws scripts/bench-load's measurements as a chart: throughput at BENCH_CONNECTIONS connections
and p50 latency at one connection, for each scenario, the gateway beside what it is compared
with (sekmet-fhir directly, or nginx and the bare proxy over the static responder). Warm rows
only.

    python3 chart.py RESULTS_JSONL OUT_SVG

It writes OUT_SVG's data beside it (chart.dat) and draws with gnuplot (chart.gp, next to this
file); exits 0 without a chart when gnuplot is missing, so the run's tables still stand."""
import json
import os
import shutil
import subprocess
import sys

results, out = sys.argv[1], sys.argv[2]
rows = [json.loads(line) for line in open(results) if line.strip()]
warm = [r for r in rows if r["state"] == "warm"]
conns = max((r["conns"] for r in warm), default=0)


def find(phase, scenario, target, c):
    for r in warm:
        if (r["phase"], r["scenario"], r["target"], r["conns"]) == (phase, scenario, target, c):
            return r
    return None


lines = []
for phase, base in (("sekmet", "direct"), ("static", "nginx")):
    for scenario in ("read", "search", "create"):
        b, g = find(phase, scenario, base, conns), find(phase, scenario, "gateway", conns)
        b1, g1 = find(phase, scenario, base, 1), find(phase, scenario, "gateway", 1)
        if not (b and g and b1 and g1):
            continue
        label = f"{scenario} ({'static' if phase == 'static' else 'sekmet'})"
        # The bare proxy (static rows only): NaN, no bar, where it was not measured.
        p, p1 = find(phase, scenario, "proxy", conns), find(phase, scenario, "proxy", 1)
        p_rps = f'{p["rps"]:.1f}' if p else "NaN"
        p_p50 = f'{p1["p50_ms"]:.3f}' if p1 else "NaN"
        lines.append(f'"{label}" {b["rps"]:.1f} {g["rps"]:.1f} {b1["p50_ms"]:.3f} {g1["p50_ms"]:.3f}'
                     f' {p_rps} {p_p50}')
if not lines:
    sys.exit("chart: no warm rows to draw")
data = os.path.join(os.path.dirname(os.path.abspath(out)), "chart.dat")
with open(data, "w") as f:
    f.write("# scenario  base_rps  gateway_rps  base_p50_ms  gateway_p50_ms  proxy_rps  proxy_p50_ms"
            "  (base: sekmet-fhir direct, or nginx over the static responder; proxy: the bare"
            " proxy, static rows only)\n")
    f.write("\n".join(lines) + "\n")
if not shutil.which("gnuplot"):
    print("chart: gnuplot is missing (Debian: apt-get install gnuplot-nox); no chart drawn")
    sys.exit(0)
script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chart.gp")
subprocess.run(["gnuplot", "-e", f"data='{data}'; out='{out}'; conns={conns}; n={len(lines)}", script], check=True)
print(f"chart: {out}")
