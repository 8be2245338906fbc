"""Seeds the benchmark's data through the gateway, so it is stored sealed: one Patient and
N Observations of hers (heart rate, a value and an interpretation each, the elements the
policy protects). Writes the Observation that the create benchmark POSTs to OUT_DIR/observation.json
and prints the Patient's id. The Patient is created with REGISTRAR_TOKEN when given (the
registration desk may set the SSN; a doctor may not set what she may not read), the Observations
with TOKEN.

    python seed.py GATEWAY_BASE TOKEN OUT_DIR [N] [REGISTRAR_TOKEN]

Standard library only; one keep-alive connection; any answer other than 201 fails loudly."""
import http.client
import json
import sys
import urllib.parse

base, token, out_dir = sys.argv[1:4]
count = int(sys.argv[4]) if len(sys.argv) > 4 else 100
registrar = sys.argv[5] if len(sys.argv) > 5 else token
url = urllib.parse.urlsplit(base)
conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
headers = {
    "Authorization": f"Bearer {token}",
    "Content-Type": "application/fhir+json",
    "Accept": "application/fhir+json",
}


def create(resource, token=token):
    conn.request("POST", f"{url.path}/{resource['resourceType']}", json.dumps(resource),
                 dict(headers, Authorization=f"Bearer {token}"))
    answer = conn.getresponse()
    body = answer.read()
    if answer.status != 201:
        sys.exit(f"seed: POST {resource['resourceType']}: {answer.status} {body[:500]!r}")
    return json.loads(body)["id"]


patient = create({
    "resourceType": "Patient",
    "active": True,
    "identifier": [{"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-00-1234"},
                   {"system": "urn:oid:2.16.840.1.113883.19.5", "value": "MRN-BENCH-1"}],
    "name": [{"family": "Benchmark", "given": ["Ada", "Lovelace"]}],
    "gender": "female",
    "birthDate": "1971-02-03",
    "address": [{"line": ["1 Load Street"], "city": "Springfield", "postalCode": "12345"}],
    "telecom": [{"system": "phone", "value": "555-0100", "use": "home"}],
}, registrar)


def observation(i):
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4",
                             "display": "Heart rate"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": f"2026-01-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
        "valueQuantity": {"value": 60 + i % 40, "unit": "beats/minute",
                          "system": "http://unitsofmeasure.org", "code": "/min"},
        "interpretation": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
            "code": "N"}]}],
    }


for i in range(count):
    create(observation(i))
with open(f"{out_dir}/observation.json", "w") as f:
    json.dump(observation(count), f)
print(patient)
