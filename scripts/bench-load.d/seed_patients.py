"""Seeds N Patients under known ids for the update benchmark of scripts/bench-writes:
PUT BASE/Patient/PREFIX{i} for i in 0 .. N-1, each BODY_FILE with "@ID@" replaced by its id.

    python seed_patients.py BASE PREFIX N BODY_FILE [TOKEN]

Standard library only; one keep-alive connection; an answer other than 200/201 fails loudly."""
import http.client
import sys
import urllib.parse

base, prefix, count, body_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
token = sys.argv[5] if len(sys.argv) > 5 else ""
template = open(body_file).read()
url = urllib.parse.urlsplit(base)
conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
if token:
    headers["Authorization"] = f"Bearer {token}"
for i in range(count):
    rid = f"{prefix}{i}"
    conn.request("PUT", f"{url.path}/Patient/{rid}", template.replace("@ID@", rid), headers)
    answer = conn.getresponse()
    body = answer.read()
    if answer.status not in (200, 201):
        sys.exit(f"seed_patients: PUT Patient/{rid}: {answer.status} {body[:300]!r}")
