"""Turns what scripts/bench-search measured, in its run folder, into Markdown on standard output:
the seeding, the wrk table, the goals of issue 16, the candidates, the cold searches and the
gateway's counters.

    python3 summarize_search.py WORK CONNECTIONS

WORK holds results.jsonl (the wrk rows: scenario combined | family, target direct | gateway |
upstream, conns, rps, p50_ms, p99_ms, cpu_us_per_request, sealed_cpu_us_per_request, ...),
seed-gateway.json, seed-direct.json, pairs-summary.json, candidates.json, cold.json,
common-family.json, gateway-statuses.json and metrics-{warm,cold}.txt (the measuring gateway's
/metrics after the wrk runs and after the cold searches)."""
import json
import re
import sys

work, conns = sys.argv[1], int(sys.argv[2])
rows = [json.loads(line) for line in open(f"{work}/results.jsonl") if line.strip()]
seed_gw = json.load(open(f"{work}/seed-gateway.json"))
seed_direct = json.load(open(f"{work}/seed-direct.json"))
pairs = json.load(open(f"{work}/pairs-summary.json"))
found = json.load(open(f"{work}/candidates.json"))["summary"]
cold = json.load(open(f"{work}/cold.json"))
common = json.load(open(f"{work}/common-family.json"))
statuses = json.load(open(f"{work}/gateway-statuses.json"))


def find(scenario, target, c):
    return next((r for r in rows if r["scenario"] == scenario and r["target"] == target
                 and r["conns"] == c), None)


def fmt(x, digits=0):
    return "–" if x is None else f"{x:,.{digits}f}"


print(f"Seeding {seed_gw['patients']:,} Patients ({pairs['family_names']} family names, "
      f"{pairs['least_common_family']}–{pairs['most_common_family']} patients each), in transaction "
      f"Bundles of {seed_gw['batch']}, {seed_gw['workers']} at a time: through the gateway (sealed, as "
      f"the registrar) {seed_gw['seconds']:.0f} s ({seed_gw['per_second']:.0f} Patients/s); directly "
      f"in clear {seed_direct['seconds']:.0f} s ({seed_direct['per_second']:.0f} Patients/s).")
print()
print("| search | target | conns | req/s | of direct | p50 ms | p99 ms | CPU µs/req | sealed server CPU µs/req | errors |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    d = find(r["scenario"], "direct", r["conns"])
    sealed = r.get("sealed_cpu_us_per_request") if r["target"] != "direct" else None
    print(f"| {r['scenario']} | {r['target']} | {r['conns']} | {fmt(r['rps'])} "
          f"| {r['rps'] / d['rps'] if d and d['rps'] else 0:.2f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
          f"| {fmt(r['cpu_us_per_request'])} | {fmt(sealed)} | {r['non2xx'] + r['socket_errors']} |")
print()
print("| goal (issue 16) | search | measured | met |")
print("|---|---|---|---|")
for scenario in ("combined", "family"):
    for base, goal in (("direct", True), ("upstream", False)):
        g, b = find(scenario, "gateway", conns), find(scenario, base, conns)
        g1, b1 = find(scenario, "gateway", 1), find(scenario, base, 1)
        if not (g and b and g1 and b1):
            print(f"| {scenario} over {base} | | not measured | ✘ |")
            continue
        clean = g["non2xx"] + g["socket_errors"] + g1["non2xx"] + g1["socket_errors"] == 0
        ratio = g["rps"] / b["rps"]
        added = g1["p50_ms"] - b1["p50_ms"]
        label = "in clear, directly" if base == "direct" else "its own upstream search (not a goal)"
        print(f"| throughput{' ≥ 0.5' if goal else ''} of {label} | {scenario} | {ratio:.2f} "
              f"({g['rps']:,.0f} / {b['rps']:,.0f} req/s{'' if clean else ', with errors'}) "
              f"| {('✔' if ratio >= 0.5 and clean else '✘') if goal else ''} |")
        print(f"| added p50{' ≤ 5 ms' if goal else ''} over {label}, 1 connection | {scenario} "
              f"| {added:+.2f} ms (p99 {g1['p99_ms'] - b1['p99_ms']:+.2f} ms) "
              f"| {('✔' if added <= 5 and clean else '✘') if goal else ''} |")
print()
print("Candidates: each measured search once, the gateway's upstream search counted on the sealed "
      "server; the matches are the gateway's total, equal to the total in clear for every search.")
print()
print("| search | matches per search | candidates per search | extra per search (8-letter prefix + token collision) | false positives (of candidates) | searches with extras | most extras |")
print("|---|---|---|---|---|---|---|")
for kind, s in found.items():
    print(f"| {kind} | {s['matches_per_search']:.2f} ({s['matches_min']}–{s['matches_max']}) "
          f"| {s['candidates_per_search']:.2f} | {s['extra_per_search']:.2f} "
          f"({s['extra_prefix_per_search']:.2f} + {s['extra_collision_per_search']:.2f}) "
          f"| {100 * s['false_positive_fraction']:.1f} % | {s['searches_with_extra']} of {s['searches']} "
          f"| {s['max_extra']} |")
print()
print("Cold: other family names (Patients this gateway process had not opened), each search once, "
      "one after the other, through the gateway and in clear (same totals).")
print()
print("| search | searches | matches per search | gateway p50 / mean / max ms | in clear p50 / mean / max ms |")
print("|---|---|---|---|---|")
for kind, c in cold.items():
    print(f"| {kind} | {c['searches']} | {c['matches_per_search']:.2f} "
          f"| {c['gateway_p50_ms']:.1f} / {c['gateway_mean_ms']:.1f} / {c['gateway_max_ms']:.1f} "
          f"| {c['direct_p50_ms']:.1f} / {c['direct_mean_ms']:.1f} / {c['direct_max_ms']:.1f} |")
print()
print(f"The commonest family name alone (`family={common['family']}&_count=10`, {common['matches']} "
      f"matches): through the gateway {common['gateway_first_ms']} ms the first time, then "
      f"{common['gateway_ms']} ms (median of 5); in clear {common['direct_first_ms']} ms, then "
      f"{common['direct_ms']} ms.")


def counters(name):
    """The counters of a /metrics text: {(metric, labels): value}."""
    out = {}
    for line in open(f"{work}/metrics-{name}.txt"):
        m = re.match(r"^(fhirseal_[a-z_]+?)(?:_total)?(\{[^}]*\})? ([0-9.e+]+)$", line.strip())
        if m and not m.group(1).endswith(("_bucket", "_sum", "_count", "_created")):
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


warm, after = counters("warm"), counters("cold")
shown = [k for k in sorted(after) if k[0] in (
    "fhirseal_requests", "fhirseal_upstream_requests", "fhirseal_header_cache_lookups",
    "fhirseal_key_cache_lookups", "fhirseal_key_derivations", "fhirseal_elements")]
print()
print("The measuring gateway's counters (`/metrics`): from its start to the end of the wrk runs, "
      "and during the cold searches.")
print()
print("| counter | start to end of wrk | cold searches |")
print("|---|---|---|")
for key in shown:
    print(f"| `{key[0]}{key[1]}` | {warm.get(key, 0):,.0f} | {after[key] - warm.get(key, 0):,.0f} |")
print()
print("Every gateway answer of the run, by status and interaction: "
      + ", ".join(f"{k}: {v:,}" for k, v in statuses.items()) + ".")
