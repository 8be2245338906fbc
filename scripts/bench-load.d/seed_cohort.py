"""The cohort of scripts/bench-search: N Patients with made-up but realistically spread names and
birth dates, written concurrently, and the searches on them.

    python seed_cohort.py generate OUT_JSONL [N]
        N Patients (10,000 by default), one JSON resource a line, each with an MRN in clear.
        Deterministic (seeded): 1,000 family names made of syllables and endings, one in five on
        a root already used with another ending of its group (…berg / …berger, …son / …sons:
        names whose first 8 letters are the same, which a longer query's 8-letter prefix token
        cannot tell apart), drawn with Zipf-like weights (rank^-0.6: among 10,000, the commonest
        name has 259 patients, the median 7, the rarest 1); 200 given names; birth dates uniform
        over 1930-01-01..2020-12-31.
    python seed_cohort.py seed BASE COHORT_JSONL [TOKEN]
        Writes every Patient of COHORT to BASE in transaction Bundles of SEED_BATCH (100) entries,
        SEED_WORKERS (4) at a time, each worker on its own keep-alive connection; prints
        {"patients", "seconds", "per_second"} as one JSON line. Any failure is loud.
    python seed_cohort.py pairs COHORT_JSONL OUT_DIR [COUNT]
        COUNT (50) searches drawn from the cohort: the COUNT family names held by closest to 10
        patients each (8-12 in 10,000), and for each one of its patients' birth date. Writes
        OUT_DIR/pairs.json and the wrk paths (one request target a line): combined.paths
        (/fhir/Patient?family=F&birthdate=D) and family.paths (/fhir/Patient?family=F); and the
        same for two more sets of COUNT family names, for searches of Patients the gateway has
        not opened before: cold-combined.paths and cold-family.paths.
    python seed_cohort.py cold GATEWAY TOKEN DIRECT OUT_DIR
        Each search of OUT_DIR/cold-*.paths once, one after the other, through GATEWAY and in
        clear on DIRECT; prints and writes to OUT_DIR/cold.json their times (p50, mean, max).
        Different totals fail.
    python seed_cohort.py candidates GATEWAY TOKEN DIRECT SEALED RECORDING OUT_DIR COHORT_JSONL
        Each search of OUT_DIR/{combined,family}.paths once through GATEWAY (whose upstream is a recording proxy
        in front of SEALED, writing RECORDING) and once in clear on DIRECT. From the recording,
        the upstream search the gateway sent (its _tag tokens), asked again of SEALED with
        _summary=count: the candidates; each one found in COHORT by its MRN (in clear) says why it
        came (a match, a family name with the query's first 8 letters, a token collision). Writes
        OUT_DIR/candidates.json (per search: the gateway's total, the direct total, the
        candidates) and OUT_DIR/upstream-{combined,family}.paths (the upstream searches, for
        wrk); prints a summary line per kind. A gateway answer that is not 200, or
        a gateway total that differs from the direct one, fails.

Runs in scripts/fhir-server's venv (standard library only)."""
import concurrent.futures
import datetime
import http.client
import json
import os
import random
import sys
import threading
import time
import urllib.parse

MRN_SYSTEM = "urn:oid:2.16.840.1.113883.19.5"

ONSETS = ["b", "br", "c", "ch", "cr", "d", "dr", "f", "g", "gr", "h", "j", "k", "kl", "l", "m",
          "n", "p", "pr", "r", "s", "sch", "sh", "st", "t", "tr", "v", "w", "wh", "z"]
NUCLEI = ["a", "e", "i", "o", "u", "ai", "au", "ea", "ei", "ie", "oo", "ou"]
CODAS = ["", "", "l", "ll", "n", "nd", "r", "rd", "rt", "s", "ck", "m", "nt", "th"]
# Endings of family names. Those in one group go on one root (Richards, Richardson; Rosenberg,
# Rosenberger), which makes names that start alike: a query for the longer one asks for the token
# of its first 8 letters, which the shorter one has too.
ENDING_GROUPS = [["son", "sons", "sen", "sson"], ["berg", "berger", "burg"], ["stein", "steiner"],
                 ["man", "mann", "mans"], ["field", "fields"], ["well", "wells"], ["ley", "leys"],
                 ["ington", "ingham"], ["ard", "ards", "ardson"], ["ton", "tons"], ["er", "ers"]]
ENDINGS = ["", "", "", "", "s", "ski", "ska", "ez", "ini", "etti", "ow", "ova", "ic", "by", "more",
           "ridge", "wood", "ford"] + [e for group in ENDING_GROUPS for e in group]
GIVEN_ENDINGS = ["", "a", "o", "ie", "en", "el", "an", "ine", "us", "y", "ia", "on"]


def syllable(rng):
    return rng.choice(ONSETS) + rng.choice(NUCLEI) + rng.choice(CODAS)


def family_names(rng, count):
    """count family names: a new root and any ending, or (one in five) a root already used with
    an ending of a group and another ending of that group."""
    out, seen, grouped = [], set(), []
    while len(out) < count:
        if grouped and rng.random() < 0.2:
            root, group = rng.choice(grouped)
            name = root + rng.choice(group)
        else:
            root = "".join(syllable(rng) for _ in range(rng.choice([1, 1, 2])))
            ending = rng.choice(ENDINGS)
            name = root + ending
            for group in ENDING_GROUPS:
                if ending in group:
                    grouped.append((root, group))
        if len(name) >= 3 and name not in seen:
            seen.add(name)
            out.append(name.capitalize())
    return out


def given_names(rng, count):
    out, seen = [], set()
    while len(out) < count:
        name = "".join(syllable(rng) for _ in range(rng.choice([1, 2]))) + rng.choice(GIVEN_ENDINGS)
        if len(name) >= 3 and name not in seen:
            seen.add(name)
            out.append(name.capitalize())
    return out


def generate(out_path, count):
    rng = random.Random(16)
    families = family_names(rng, 1000)
    givens = given_names(rng, 200)
    weights = [rank ** -0.6 for rank in range(1, len(families) + 1)]
    first = datetime.date(1930, 1, 1).toordinal()
    last = datetime.date(2020, 12, 31).toordinal()
    with open(out_path, "w") as out:
        for i, family in enumerate(rng.choices(families, weights, k=count)):
            patient = {
                "resourceType": "Patient",
                "active": True,
                "identifier": [{"system": MRN_SYSTEM, "value": f"MRN-S{i:05d}"}],
                "name": [{"use": "official", "family": family, "given": [rng.choice(givens)]}],
                "gender": rng.choice(["female", "male"]),
                "birthDate": datetime.date.fromordinal(rng.randint(first, last)).isoformat(),
            }
            out.write(json.dumps(patient) + "\n")


class Client:
    """One keep-alive connection per thread to a FHIR base."""

    def __init__(self, base, token=""):
        self.url = urllib.parse.urlsplit(base)
        self.headers = {"Accept": "application/fhir+json", "Content-Type": "application/fhir+json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.local = threading.local()

    def request(self, method, target, body=None):
        """target: a path under the server (starting with /). Returns (status, parsed body)."""
        for attempt in (1, 2):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection(
                    self.url.hostname, self.url.port, timeout=300)
            try:
                conn.request(method, target, body, self.headers)
                answer = conn.getresponse()
                data = answer.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # A keep-alive connection the server closed: a read once more on a new one (a
                # write might have been done: never sent twice).
                conn.close()
                self.local.conn = None
                if attempt == 2 or method != "GET":
                    raise
        try:
            return answer.status, json.loads(data) if data else None
        except json.JSONDecodeError:
            return answer.status, data[:500]

    def get(self, path_and_query):
        """path_and_query: below the FHIR base (/fhir/Patient?... or Patient?...)."""
        if not path_and_query.startswith("/"):
            path_and_query = f"{self.url.path}/{path_and_query}"
        return self.request("GET", path_and_query)


def seed(base, cohort_path, token):
    batch = int(os.environ.get("SEED_BATCH", "100"))
    workers = int(os.environ.get("SEED_WORKERS", "4"))
    patients = [line for line in open(cohort_path).read().splitlines() if line]
    client = Client(base, token)

    def send(start):
        chunk = patients[start:start + batch]
        entries = ",".join(
            '{"fullUrl":"urn:uuid:%08x-0000-4000-8000-%012x","resource":%s,'
            '"request":{"method":"POST","url":"Patient"}}' % (start, start + i, p)
            for i, p in enumerate(chunk))
        body = '{"resourceType":"Bundle","type":"transaction","entry":[%s]}' % entries
        status, answer = client.request("POST", client.url.path or "/", body)
        if status != 200 or not isinstance(answer, dict):
            raise SystemExit(f"seed_cohort: transaction of Patients {start}..: {status} {str(answer)[:500]}")
        statuses = [e.get("response", {}).get("status", "") for e in answer.get("entry", [])]
        if len(statuses) != len(chunk) or not all(s.startswith("201") for s in statuses):
            raise SystemExit(f"seed_cohort: transaction of Patients {start}..: entries {statuses[:5]}…")
        return len(chunk)

    began = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        written = sum(pool.map(send, range(0, len(patients), batch)))
    seconds = time.monotonic() - began
    print(json.dumps({"patients": written, "seconds": round(seconds, 1),
                      "per_second": round(written / seconds, 1), "batch": batch, "workers": workers}))


def family_counts(patients):
    counts = {}
    for p in patients:
        family = p["name"][0]["family"]
        counts[family] = counts.get(family, 0) + 1
    return counts


def pairs(cohort_path, out_dir, count):
    patients = [json.loads(line) for line in open(cohort_path) if line.strip()]
    counts = family_counts(patients)
    rng = random.Random(1616)
    # The family names held by closest to 10 patients (8-12 among 10,000), in random order.
    families = sorted(counts)
    rng.shuffle(families)
    families.sort(key=lambda f: abs(counts[f] - 10))
    if len(families) < 3 * count:
        raise SystemExit(f"seed_cohort: only {len(families)} family names")
    q = urllib.parse.quote
    summary = {"searches": count, "family_names": len(counts),
               "most_common_family": max(counts.values()), "least_common_family": min(counts.values())}
    # Three sets of family names: the measured searches, and two more for cold searches.
    sets = (("measured", families[:count], "combined.paths", "family.paths", "pairs.json"),
            ("cold combined", families[count:2 * count], "cold-combined.paths", None, "cold-pairs.json"),
            ("cold family", families[2 * count:3 * count], None, "cold-family.paths", None))
    for label, chosen, combined_file, family_file, pairs_file in sets:
        found = []
        for family in chosen:
            holders = [p for p in patients if p["name"][0]["family"] == family]
            p = rng.choice(holders)
            found.append({"family": family, "birthDate": p["birthDate"],
                          "patients_of_family": counts[family]})
        if pairs_file:
            json.dump(found, open(f"{out_dir}/{pairs_file}", "w"), indent=1)
        if combined_file:
            with open(f"{out_dir}/{combined_file}", "w") as out:
                for p in found:
                    out.write(f"/fhir/Patient?family={q(p['family'])}&birthdate={p['birthDate']}\n")
        if family_file:
            with open(f"{out_dir}/{family_file}", "w") as out:
                for p in found:
                    out.write(f"/fhir/Patient?family={q(p['family'])}\n")
        n = [p["patients_of_family"] for p in found]
        summary[f"patients per family, {label}"] = f"{min(n)}-{max(n)}"
    print(json.dumps(summary))


def cold(gateway, token, direct, out_dir):
    """Each search of OUT_DIR/cold-{combined,family}.paths once, one after the other, through
    GATEWAY and in clear on DIRECT: their times (the gateway has opened none of these Patients
    before), and the totals, which must be equal."""
    gw, clear = Client(gateway, token), Client(direct)
    out = {}
    for kind in ("combined", "family"):
        targets = [t for t in open(f"{out_dir}/cold-{kind}.paths").read().splitlines() if t]
        times = {"gateway": [], "direct": []}
        matches = 0
        for target in targets:
            totals = []
            for name, client in (("gateway", gw), ("direct", clear)):
                began = time.perf_counter()
                status, answer = client.get(target)
                times[name].append(1000 * (time.perf_counter() - began))
                if status != 200:
                    raise SystemExit(f"seed_cohort: {name} GET {target}: {status} {str(answer)[:400]}")
                totals.append(answer["total"])
            if totals[0] != totals[1]:
                raise SystemExit(f"seed_cohort: {target}: {totals[0]} matches through the gateway, "
                                 f"{totals[1]} in clear")
            matches += totals[0]
        row = {"kind": kind, "searches": len(targets), "matches_per_search": matches / len(targets)}
        for name, values in times.items():
            values.sort()
            row[f"{name}_p50_ms"] = round(values[len(values) // 2], 2)
            row[f"{name}_mean_ms"] = round(sum(values) / len(values), 2)
            row[f"{name}_max_ms"] = round(values[-1], 2)
        out[kind] = row
        print(json.dumps(row))
    json.dump(out, open(f"{out_dir}/cold.json", "w"), indent=1)


def candidates(gateway, token, direct, sealed, recording, out_dir, cohort_path):
    gw, clear, upstream = Client(gateway, token), Client(direct), Client(sealed)
    rows, summary = [], {}
    # By MRN (in clear in the sealed Patients too): the family name and birth date.
    cohort = {}
    for line in open(cohort_path):
        if line.strip():
            p = json.loads(line)
            cohort[p["identifier"][0]["value"]] = (p["name"][0]["family"], p["birthDate"])
    with open(recording) as rec:
        rec.read()  # what was recorded before: not these searches
        for kind in ("combined", "family"):
            targets = [t for t in open(f"{out_dir}/{kind}.paths").read().splitlines() if t]
            upstream_paths = []
            for target in targets:
                status, answer = gw.get(target)
                if status != 200:
                    raise SystemExit(f"seed_cohort: gateway GET {target}: {status} {str(answer)[:400]}")
                matches = answer["total"]
                sent = [json.loads(line) for line in rec.read().splitlines() if line.strip()]
                searches = [s for s in sent if s["method"] == "GET"
                            and s["target"].startswith("/fhir/Patient?") and "_tag=" in s["target"]]
                if len(searches) != 1:
                    raise SystemExit(f"seed_cohort: GET {target}: the gateway sent {len(searches)} "
                                     f"blind-index searches upstream: {[s['target'] for s in sent]}")
                sent_target = searches[0]["target"]
                sent_body = json.loads(searches[0]["body"])
                found = [e["resource"] for e in sent_body.get("entry", [])
                         if e.get("search", {}).get("mode", "match") == "match"]
                returned = len(found)
                # Why each candidate came: a match; a family sharing the query's first 8 letters
                # (a longer query asks for the token of those only); a token collision (16 bits).
                asked = dict(urllib.parse.parse_qsl(target.split("?", 1)[1]))
                why = {"match": 0, "prefix": 0, "collision": 0}
                for resource in found:
                    mrn = next(i["value"] for i in resource.get("identifier", [])
                               if i.get("system") == MRN_SYSTEM)
                    family, day = cohort[mrn]
                    family_ok = family.lower().startswith(asked["family"].lower())
                    day_ok = asked.get("birthdate") in (None, day)
                    if family_ok and day_ok:
                        why["match"] += 1
                    elif day_ok and family.lower()[:8] == asked["family"].lower()[:8]:
                        why["prefix"] += 1
                    else:
                        why["collision"] += 1
                query = [(k, v) for k, v in urllib.parse.parse_qsl(sent_target.split("?", 1)[1])
                         if k != "_count"]
                status, counted = upstream.get("/fhir/Patient?" + urllib.parse.urlencode(
                    query + [("_summary", "count")]))
                if status != 200:
                    raise SystemExit(f"seed_cohort: sealed upstream count: {status} {str(counted)[:400]}")
                status, clear_answer = clear.get(f"{target}&_summary=count" if "?" in target
                                                 else f"{target}?_summary=count")
                if status != 200:
                    raise SystemExit(f"seed_cohort: direct GET {target}: {status} {str(clear_answer)[:400]}")
                row = {"kind": kind, "search": target, "upstream": sent_target,
                       "tags": sum(1 for k, _ in query if k == "_tag"),
                       "candidates": counted["total"], "candidates_returned": returned,
                       "matches": matches, "direct_matches": clear_answer["total"],
                       "extra_prefix": why["prefix"], "extra_collision": why["collision"]}
                if why["match"] != matches:
                    raise SystemExit(f"seed_cohort: {target}: {matches} matches through the gateway, "
                                     f"{why['match']} among the candidates by the cohort")
                if row["candidates_returned"] != row["candidates"]:
                    raise SystemExit(f"seed_cohort: {target}: the upstream answered the gateway "
                                     f"{returned} candidates, and {counted['total']} when counted")
                if row["matches"] != row["direct_matches"]:
                    raise SystemExit(f"seed_cohort: {target}: {matches} matches through the gateway, "
                                     f"{clear_answer['total']} in clear")
                rows.append(row)
                upstream_paths.append(sent_target)
            with open(f"{out_dir}/upstream-{kind}.paths", "w") as out:
                out.write("\n".join(upstream_paths) + "\n")
            mine = [r for r in rows if r["kind"] == kind]
            cands = sum(r["candidates"] for r in mine)
            matches = sum(r["matches"] for r in mine)
            summary[kind] = {
                "searches": len(mine),
                "matches_per_search": matches / len(mine),
                "candidates_per_search": cands / len(mine),
                "extra_per_search": (cands - matches) / len(mine),
                "false_positive_fraction": (cands - matches) / cands if cands else 0.0,
                "searches_with_extra": sum(1 for r in mine if r["candidates"] > r["matches"]),
                "max_extra": max(r["candidates"] - r["matches"] for r in mine),
                "extra_prefix_per_search": sum(r["extra_prefix"] for r in mine) / len(mine),
                "extra_collision_per_search": sum(r["extra_collision"] for r in mine) / len(mine),
                "matches_min": min(r["matches"] for r in mine),
                "matches_max": max(r["matches"] for r in mine),
            }
            print(json.dumps(dict(kind=kind, **summary[kind])))
    json.dump({"summary": summary, "searches": rows}, open(f"{out_dir}/candidates.json", "w"), indent=1)


def main(argv):
    command = argv[1] if len(argv) > 1 else ""
    if command == "generate" and len(argv) in (3, 4):
        generate(argv[2], int(argv[3]) if len(argv) == 4 else 10000)
    elif command == "seed" and len(argv) in (4, 5):
        seed(argv[2], argv[3], argv[4] if len(argv) == 5 else "")
    elif command == "pairs" and len(argv) in (4, 5):
        pairs(argv[2], argv[3], int(argv[4]) if len(argv) == 5 else 50)
    elif command == "cold" and len(argv) == 6:
        cold(*argv[2:6])
    elif command == "candidates" and len(argv) == 9:
        candidates(*argv[2:9])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
