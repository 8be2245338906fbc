"""Mints a bearer token for scripts/bench-load: RS256, signed with the test issuer key of
gateway/tests/keys (issuer.pem; its public half, issuer.jwks.json, is what the benchmark's
gateway trusts), for a practitioner of St Mary's in ROLE (a role code of the embedded policy:
`doctor` by default, `registrar` for the registration desk), valid one hour.

    python mint_token.py ISSUER AUDIENCE KEY_PEM [ROLE]   -> prints the token

Runs in scripts/fhir-server's venv, which has PyJWT and cryptography. The key is a test key
that protects nothing (gateway/tests/keys/README.md)."""
import sys
import time

import jwt

issuer, audience, key_path = sys.argv[1:4]
role = sys.argv[4] if len(sys.argv) > 4 else "doctor"
now = int(time.time())
claims = {
    "iss": issuer,
    "aud": audience,
    "sub": f"Practitioner/bench-{role}",
    "fhirUser": f"Practitioner/bench-{role}",
    "iat": now,
    "exp": now + 3600,
    "scope": "user/*.cruds",
    "practitioner_roles": [
        {"code": [role], "specialty": ["394579002"], "organization": "Organization/st-mary"}
    ],
}
with open(key_path, "rb") as f:
    key = f.read()
print(jwt.encode(claims, key, algorithm="RS256", headers={"kid": "issuer-1"}))
