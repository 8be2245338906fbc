"""Turns scripts/bench-load's measurements (one JSON object a line) into the results table and
the goal checks, as Markdown, printed and written to OUT.

    python3 summarize.py RESULTS_JSONL OUT_MD

Each measurement has `phase` (sekmet | static), `state` (warm | cold | cold-unwarmed | spaced:
each request sent `pause_ms` after the last answer), `scenario` (read |
search | create), `target` (direct | gateway | nginx | proxy: the bare proxy), `conns`, wrk's figures (`rps`, `p50_ms`,
`p99_ms`, `requests`, `non2xx`, `socket_errors`) and, for cold runs, `first_ms` (the first
request after the gateway started), `second_ms` (the same request right after it) and
`direct_ms` (sekmet-fhir's own answer to it, right after)."""
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
out = []


def find(**want):
    for r in rows:
        if all(r.get(k) == v for k, v in want.items()):
            return r
    return None


def then(r):
    """What followed a cold run's first request: the same request again, and sekmet-fhir alone."""
    if "second_ms" not in r or "direct_ms" not in r:
        return ""
    return f", the next {r['second_ms']:.1f} ms, sekmet-fhir alone {r['direct_ms']:.1f} ms"


def fmt(x, digits=2):
    return "–" if x is None else f"{x:,.{digits}f}"


out.append("| upstream | state | scenario | target | conns | req/s | p50 ms | p99 ms | CPU µs/req | requests | errors |")
out.append("|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    errors = r["non2xx"] + r["socket_errors"]
    first = f" (first request {r['first_ms']:.1f} ms)" if "first_ms" in r else ""
    if "ready_after_ms" in r:
        first = f" (ready after {r['ready_after_ms']} ms; first request {r['first_ms']:.1f} ms{then(r)})"
    out.append(
        f"| {r['phase']} | {r['state']}{first} | {r['scenario']} | {r['target']} | {r['conns']} "
        f"| {fmt(r['rps'], 0)} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} "
        f"| {fmt(r.get('cpu_us_per_request'), 0)} | {r['requests']:,} "
        f"| {errors if errors else 0} |")

out.append("")
out.append("| goal | measured | met |")
out.append("|---|---|---|")


def ratio_goal(phase, scenario, base, goal, label, target="gateway"):
    g = find(phase=phase, state="warm", scenario=scenario, target=target, conns=CONNS)
    b = find(phase=phase, state="warm", scenario=scenario, target=base, conns=CONNS)
    bar = "" if goal is None else f" ≥ {goal}"
    if not g or not b or not b["rps"]:
        out.append(f"| {label}{bar} | not measured | {'' if goal is None else '✘'} |")
        return
    ratio = g["rps"] / b["rps"]
    clean = g["non2xx"] + g["socket_errors"] == 0
    met = "" if goal is None else ("✔" if ratio >= goal and clean else "✘")
    note = "" if clean else ", with errors"
    out.append(f"| {label}{bar} | {ratio:.2f} ({g['rps']:,.0f} / {b['rps']:,.0f} req/s{note}) "
               f"| {met} |")


def added_latency(phase, scenario, base, goal_ms, target="gateway"):
    g = find(phase=phase, state="warm", scenario=scenario, target=target, conns=1)
    b = find(phase=phase, state="warm", scenario=scenario, target=base, conns=1)
    who = "" if target == "gateway" else f" ({target})"
    label = f"{phase} {scenario}{who}: added p50, 1 connection, over {base}"
    if not g or not b:
        out.append(f"| {label} ≤ {goal_ms} ms | not measured | ✘ |")
        return
    p50 = g["p50_ms"] - b["p50_ms"]
    p99 = g["p99_ms"] - b["p99_ms"]
    goal = f" ≤ {goal_ms} ms" if goal_ms is not None else ""
    met = "" if goal_ms is None else ("✔" if p50 <= goal_ms else "✘")
    out.append(f"| {label}{goal} | p50 {p50:+.2f} ms, p99 {p99:+.2f} ms | {met} |")


CONNS = max((r["conns"] for r in rows), default=0)
ratio_goal("sekmet", "read", "direct", 0.9, "sekmet read: gateway / direct")
ratio_goal("sekmet", "search", "direct", 0.9, "sekmet search: gateway / direct")
ratio_goal("sekmet", "create", "direct", 0.8, "sekmet create: gateway / direct")
for scenario in ("read", "search", "create"):
    added_latency("sekmet", scenario, "direct", 1.0)
ratio_goal("static", "read", "nginx", 0.5, "static sealed read: gateway / nginx")
ratio_goal("static", "search", "nginx", None, "static search: gateway / nginx")
ratio_goal("static", "create", "nginx", None, "static create: gateway / nginx")
for scenario in ("read", "search", "create"):
    added_latency("static", scenario, "nginx", None)
# The bare proxy (axum and reqwest with nothing in between): the most any gateway on this stack
# could reach, and what the gateway's own work costs on top of it.
for scenario in ("read", "search", "create"):
    ratio_goal("static", scenario, "nginx", None,
               f"static {scenario}: bare proxy / nginx", target="proxy")
for scenario in ("read", "search", "create"):
    ratio_goal("static", scenario, "proxy", None, f"static {scenario}: gateway / bare proxy")
for scenario in ("read", "search", "create"):
    added_latency("static", scenario, "nginx", None, target="proxy")
for scenario in ("read", "search"):
    c = find(phase="sekmet", state="cold", scenario=scenario, target="gateway", conns=CONNS)
    u = find(phase="sekmet", state="cold-unwarmed", scenario=scenario, target="gateway",
             conns=CONNS)
    label = f"sekmet {scenario}: the first request after a restart, once /ready says ready ≤ 10 ms"
    if not c or "first_ms" not in c:
        out.append(f"| {label} | not measured | ✘ |")
    else:
        ready = f", ready {c['ready_after_ms']} ms after start" if "ready_after_ms" in c else ""
        before = f"; without the warm-up {u['first_ms']:.1f} ms" if u and "first_ms" in u else ""
        out.append(f"| {label} | {c['first_ms']:.1f} ms{then(c)}{ready}{before} | "
                   f"{'✔' if c['first_ms'] <= 10 else '✘'} |")
for scenario in ("read", "search", "create"):
    for target, base in (("gateway", "nginx"), ("proxy", "nginx"), ("gateway", "proxy")):
        g = find(phase="static", state="warm", scenario=scenario, target=target, conns=CONNS)
        n = find(phase="static", state="warm", scenario=scenario, target=base, conns=CONNS)
        if g and n and g.get("cpu_us_per_request") and n.get("cpu_us_per_request"):
            name = {"proxy": "bare proxy"}
            out.append(f"| static {scenario}: CPU per request, {name.get(target, target)} / "
                       f"{name.get(base, base)} | "
                       f"{g['cpu_us_per_request']:,.0f} / {n['cpu_us_per_request']:,.0f} µs "
                       f"({g['cpu_us_per_request'] / n['cpu_us_per_request']:.1f}×) |  |")
# The spaced reads: what a request that finds the server idle costs it, against the same request
# at one connection back to back.
for target in ("nginx", "proxy", "gateway"):
    s = find(phase="static", state="spaced", scenario="read", target=target, conns=1)
    b = find(phase="static", state="warm", scenario="read", target=target, conns=1)
    if not s or not b or not s.get("cpu_us_per_request") or not b.get("cpu_us_per_request"):
        continue
    name = {"proxy": "bare proxy"}.get(target, target)
    out.append(f"| static read, 1 connection, {s.get('pause_ms', '?')} ms from each answer to the "
               f"next request: {name} | CPU {s['cpu_us_per_request']:,.0f} µs per request "
               f"({s['cpu_us_per_request'] / b['cpu_us_per_request']:.1f}× back to back's "
               f"{b['cpu_us_per_request']:,.0f}), p50 {s['p50_ms']:.2f} ms (back to back "
               f"{b['p50_ms']:.2f}) |  |")

text = "\n".join(out) + "\n"
with open(sys.argv[2], "w") as f:
    f.write(text)
sys.stdout.write(text)
