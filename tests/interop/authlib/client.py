"""A real OAuth 2 client library (authlib) against FHIRseal's embedded authorization server.

Run by crates/auth-server/tests/interop.rs from the venv scripts/interop-setup installs. Two flows:

1. SMART standalone launch: authorization code + PKCE S256 through authlib's OAuth2Session
   (``create_authorization_url`` with ``aud``), a "browser" (a plain requests session) that opens the
   authorization URL, fills the login form and the consent form it is shown, and stops at the 303
   to the redirect URI; then ``fetch_token`` (authlib checks ``state`` and parses the response) and a
   refresh through authlib.
2. SMART Backend Services: ``client_credentials`` with authlib's RFC 7523 ``PrivateKeyJWT`` client
   authentication, RS384, a ``kid`` header and an assertion that expires within 5 minutes.

Endpoints come from ``{fhir_base}/.well-known/smart-configuration``, as a SMART app finds them.
The user's password is read from the environment variable FHIRSEAL_INTEROP_PASSWORD (not from the
command line, where ``ps`` would show it). On success, prints one JSON object with the token
responses; on any failure, prints ``client.py: <step>: <reason>`` on stderr and exits 1.
"""

import argparse
import json
import os
import re
import secrets
import sys
import time
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign
from joserfc.jwk import RSAKey

TIMEOUT = 15
# SMART Backend Services: the assertion's "exp" is at most five minutes ahead.
ASSERTION_LIFETIME = 240


class Failure(Exception):
    """A step of a flow did not go as SMART says it should."""


class FormParser(HTMLParser):
    """Collects each <form>: its action, method and <input>/<button> fields."""

    def __init__(self):
        super().__init__()
        self.forms = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append(
                {
                    "action": attrs.get("action") or "",
                    "method": (attrs.get("method") or "get").lower(),
                    "fields": [],
                }
            )
        elif tag in ("input", "button") and self.forms:
            kind = (attrs.get("type") or ("submit" if tag == "button" else "text")).lower()
            self.forms[-1]["fields"].append(
                {
                    "type": kind,
                    "name": attrs.get("name"),
                    "value": attrs.get("value") or "",
                    "checked": "checked" in attrs,
                }
            )


class TextParser(HTMLParser):
    """A page's visible text (what a user would read), for error messages."""

    def __init__(self):
        super().__init__()
        self.parts = []
        self.hidden = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("style", "script", "head"):
            self.hidden += 1

    def handle_endtag(self, tag):
        if tag in ("style", "script", "head") and self.hidden:
            self.hidden -= 1

    def handle_data(self, data):
        if not self.hidden and data.strip():
            self.parts.append(data.strip())


def page_text(response):
    """The response body's visible text, shortened: never the whole page in a message."""
    if "html" not in response.headers.get("Content-Type", ""):
        return response.text[:300]
    parser = TextParser()
    parser.feed(response.text)
    return " ".join(parser.parts)[:300]


# Submit buttons (and radio values) that say yes, in the words login and consent pages use.
APPROVE_WORDS = (
    "approve", "allow", "accept", "authorize", "authorise", "grant", "yes", "consent", "continue",
    "confirm", "login", "sign",
)
DENY_WORDS = ("deny", "reject", "cancel", "decline", "no", "abort")


def says(value, words, prefix=True):
    """Whether a word of ``value`` is (or, with ``prefix``, starts with) one of ``words``."""
    tokens = re.findall(r"[a-z]+", value.lower())
    return any(token.startswith(words) if prefix else token in words for token in tokens)


def approves(value):
    """Whether a button or radio value says yes ("Sign-in", "Allow"), and not no ("Deny")."""
    return says(value, APPROVE_WORDS) and not says(value, DENY_WORDS, prefix=False)


def fill_form(form, username, password, patient):
    """The fields a user would send: hidden values, credentials, ticked boxes, the approve button."""
    data = []
    approve = None
    for field in form["fields"]:
        name, kind, value = field["name"], field["type"], field["value"]
        if not name:
            continue
        if kind == "hidden":
            data.append((name, value))
        elif kind == "password":
            data.append((name, password))
        elif kind in ("text", "email") and says(name, ("user", "login", "email")):
            data.append((name, username))
        elif kind == "text" and says(name, ("patient",)):
            # A practitioner picks the patient to open (SMART launch/patient).
            data.append((name, patient or ""))
        elif kind in ("text", "email"):
            data.append((name, value))
        elif kind == "checkbox":
            # Consent pages list the requested scopes as boxes: the user grants them all.
            data.append((name, value or "on"))
        elif kind == "radio":
            if approves(value):
                data.append((name, value))
        elif kind == "submit" and approve is None:
            if approves(f"{name} {value}"):
                approve = (name, value)
    if approve is not None:
        data.append(approve)
    return data


def follow_to_redirect_uri(browser, url, redirect_uri, username, password, patient):
    """Plays the user: submits each form shown until the server answers 303 to the redirect URI."""
    response = browser.get(url, allow_redirects=False, timeout=TIMEOUT)
    for _ in range(10):
        if response.status_code in (302, 303):
            location = urljoin(response.url, response.headers.get("Location", ""))
            if location.startswith(redirect_uri):
                if response.status_code != 303:
                    raise Failure(f"the redirect to the app is a {response.status_code}, not a 303")
                return location
            response = browser.get(location, allow_redirects=False, timeout=TIMEOUT)
            continue
        path = urlsplit(response.url).path
        if response.status_code != 200:
            raise Failure(f"{path} answered {response.status_code}: {page_text(response)!r}")
        if response.request.method == "POST":
            raise Failure(f"the form at {path} came back once submitted: {page_text(response)!r}")
        parser = FormParser()
        parser.feed(response.text)
        forms = [form for form in parser.forms if form["method"] == "post"]
        if not forms:
            raise Failure(f"the page at {path} has no form to submit")
        form = forms[0]
        action = urljoin(response.url, form["action"] or response.url)
        response = browser.post(
            action,
            data=fill_form(form, username, password, patient),
            allow_redirects=False,
            timeout=TIMEOUT,
        )
    raise Failure("no redirect to the app after 10 pages")


def smart_configuration(fhir_base):
    url = fhir_base.rstrip("/") + "/.well-known/smart-configuration"
    response = requests.get(url, headers={"Accept": "application/json"}, timeout=TIMEOUT)
    if response.status_code != 200:
        raise Failure(f"{url} answered {response.status_code}")
    config = response.json()
    for key in ("authorization_endpoint", "token_endpoint"):
        if not isinstance(config.get(key), str):
            raise Failure(f"the SMART configuration has no {key}")
    if "S256" not in config.get("code_challenge_methods_supported", []):
        raise Failure("the SMART configuration does not list S256 among code_challenge_methods_supported")
    return config


def authorization_code(args, config, password):
    """Authorization code + PKCE S256, then a refresh, all token requests made by authlib."""
    app = OAuth2Session(
        client_id=args.client_id,
        redirect_uri=args.redirect_uri,
        scope=args.scope,
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
        default_timeout=TIMEOUT,
    )
    code_verifier = secrets.token_urlsafe(64)
    url, state = app.create_authorization_url(
        config["authorization_endpoint"], code_verifier=code_verifier, aud=args.fhir_base
    )
    with requests.Session() as browser:
        callback = follow_to_redirect_uri(
            browser, url, args.redirect_uri, args.username, password, args.patient
        )
    token = app.fetch_token(
        config["token_endpoint"],
        authorization_response=callback,
        state=state,
        code_verifier=code_verifier,
    )
    if "refresh_token" not in token:
        raise Failure("the token response has no refresh_token (offline_access was asked)")
    refreshed = app.refresh_token(config["token_endpoint"], refresh_token=token["refresh_token"])
    return dict(token), dict(refreshed)


class SmartPrivateKeyJWT(PrivateKeyJWT):
    """authlib's RFC 7523 private_key_jwt, with the assertion lifetime SMART allows (authlib's
    default is an hour; SMART Backend Services says at most five minutes)."""

    def sign(self, auth, token_endpoint):
        return private_key_jwt_sign(
            RSAKey.import_key(auth.client_secret),
            client_id=auth.client_id,
            token_endpoint=token_endpoint,
            claims=self.claims,
            header=dict(self.headers or {}),
            alg=self.alg,
            expires_at=int(time.time()) + ASSERTION_LIFETIME,
        )


def backend_services(args, config):
    """client_credentials with a signed JWT assertion (RS384, kid), through authlib."""
    with open(args.backend_key, encoding="ascii") as pem:
        key = pem.read()
    token_endpoint = config["token_endpoint"]
    service = OAuth2Session(
        client_id=args.backend_client_id,
        client_secret=key,
        scope=args.backend_scope,
        token_endpoint_auth_method=SmartPrivateKeyJWT(
            token_endpoint, headers={"kid": args.backend_kid}, alg="RS384"
        ),
        default_timeout=TIMEOUT,
    )
    return dict(service.fetch_token(token_endpoint, grant_type="client_credentials"))


def arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fhir-base", required=True, help="the FHIR base URL (SMART 'aud')")
    parser.add_argument("--client-id", required=True, help="the public app's client id")
    parser.add_argument("--redirect-uri", required=True)
    parser.add_argument("--username", required=True)
    parser.add_argument("--patient", help="the patient id a practitioner picks when asked")
    parser.add_argument(
        "--scope", default="openid fhirUser launch/patient patient/Observation.rs offline_access"
    )
    parser.add_argument("--backend-client-id", required=True)
    parser.add_argument("--backend-key", required=True, help="the backend's RSA private key (PEM)")
    parser.add_argument("--backend-kid", required=True, help="the kid of that key's registered JWK")
    parser.add_argument("--backend-scope", default="system/Observation.rs")
    return parser.parse_args()


def main():
    args = arguments()
    password = os.environ.get("FHIRSEAL_INTEROP_PASSWORD")
    if not password:
        raise Failure("FHIRSEAL_INTEROP_PASSWORD is not set")
    step = "discovery"
    try:
        config = smart_configuration(args.fhir_base)
        step = "authorization code + PKCE"
        token, refreshed = authorization_code(args, config, password)
        step = "backend services"
        backend = backend_services(args, config)
    except Exception as error:  # noqa: BLE001 - every failure ends the run with its step named
        print(f"client.py: {step}: {type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
    tokens = {"authorization_code": token, "refreshed": refreshed, "backend_services": backend}
    json.dump(tokens, sys.stdout)
    print()


if __name__ == "__main__":
    try:
        main()
    except Failure as failure:
        print(f"client.py: {failure}", file=sys.stderr)
        sys.exit(1)
