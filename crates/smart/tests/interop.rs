//! Real third-party OpenID Connect software against FHIRseal's token verification, with the tool
//! `scripts/interop-setup` installs into `.cache/` (`scripts/test` runs it, and so CI): the npm
//! package `oidc-provider` (`tests/interop/oidc-provider/provider.mjs`) issues JWT access tokens
//! with SMART claims (`fhirUser`, `patient`, `scope`) for our FHIR base, by `client_credentials`
//! and by authorization code + PKCE through its own login and consent pages; the [`Verifier`]
//! accepts them through the provider's JWKS, and refuses a token for another resource and a token
//! whose signature was altered.
//!
//! The embedded authorization server's interop test (Python's `authlib` against it) is
//! `crates/auth-server/tests/interop.rs`.
//!
//! A missing tool fails the test, naming `scripts/interop-setup`. Every child process has a
//! timeout and is killed when its handle drops.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fhirseal_smart::verify::{AuthError, IssuerConfig, KeySource, Verifier, VerifierConfig};
use fhirseal_smart::{Scopes, TokenContext};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::time::timeout;
use url::Url;

/// How long oidc-provider may take to say READY.
const STARTUP: Duration = Duration::from_secs(30);
/// How long one HTTP exchange may take.
const HTTP: Duration = Duration::from_secs(15);

/// The resource oidc-provider issues tokens for: the FHIR base the verifier accepts.
const FHIR_BASE: &str = "https://fhirseal.test/fhir";
/// Another resource server of the same provider.
const OTHER_RESOURCE: &str = "https://elsewhere.test/fhir";
/// What a SMART standalone launch asks for.
const USER_SCOPE: &str = "openid fhirUser launch/patient patient/Observation.rs offline_access";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_provider_tokens_are_accepted() {
    let secret = random_text(24);
    let provider = OidcProvider::start(&[FHIR_BASE, OTHER_RESOURCE], &secret).await;
    let http = http_client();
    let discovery_url = format!("{}/.well-known/openid-configuration", provider.issuer);
    let discovery = json_body(http.get(discovery_url).send().await.unwrap()).await;
    let token_endpoint = discovery["token_endpoint"].as_str().unwrap();
    let jwks_uri = discovery["jwks_uri"].as_str().unwrap().to_string();
    let verifier = verifier(&provider.issuer, FHIR_BASE, KeySource::Url(jwks_uri));

    // client_credentials (client_secret_basic) for our FHIR base, with the provider's extra
    // `fhirUser` and `patient` claims.
    let scope = "patient/Observation.rs launch/patient";
    let token = client_credentials(&http, token_endpoint, &secret, scope, FHIR_BASE).await;
    let verified = verifier.verify(&token).await.unwrap();
    assert_eq!(verified.issuer, provider.issuer);
    assert_eq!(verified.subject.as_deref(), Some(BACKEND_CLIENT));
    let fhir_user = format!("Practitioner/{BACKEND_CLIENT}");
    assert_context(&verified.context, &fhir_user, Some("Patient/123"), scope);
    assert_client(&verified.context, BACKEND_CLIENT);

    // The same provider's token for another resource server is not for us.
    let elsewhere = client_credentials(&http, token_endpoint, &secret, scope, OTHER_RESOURCE).await;
    let refused = verifier.verify(&elsewhere).await.unwrap_err();
    assert_eq!(refused, AuthError::WrongAudience);

    // Our token, its signature altered.
    let refused = verifier.verify(&alter_signature(&token)).await.unwrap_err();
    assert_eq!(refused, AuthError::BadSignature);

    // Authorization code + PKCE S256 through the provider's own login and consent pages. The
    // provider grants resource scopes only (`openid` goes to the id token).
    let response = provider
        .authorization_code(&http, &discovery, "alice")
        .await;
    let access_token = response["access_token"].as_str().unwrap();
    let verified = verifier.verify(access_token).await.unwrap();
    assert_eq!(verified.subject.as_deref(), Some("alice"));
    let granted = "fhirUser launch/patient patient/Observation.rs offline_access";
    let patient = Some("Patient/123");
    assert_context(&verified.context, "Practitioner/alice", patient, granted);
    assert_client(&verified.context, APP_CLIENT);
}

// === oidc-provider ===

/// The confidential and the public client `provider.mjs` registers.
const BACKEND_CLIENT: &str = "fhirseal-interop-backend";
const APP_CLIENT: &str = "fhirseal-interop-app";

/// `node provider.mjs`, killed when dropped (and exiting by itself when its stdin closes).
struct OidcProvider {
    issuer: String,
    _stdin: ChildStdin,
    _child: Child,
}

impl OidcProvider {
    async fn start(resources: &[&str], secret: &str) -> Self {
        let mut command = Command::new("node");
        command
            .arg(repository().join("tests/interop/oidc-provider/provider.mjs"))
            .arg("--modules")
            .arg(node_dir());
        for resource in resources {
            command.args(["--resource", resource]);
        }
        command
            .env("FHIRSEAL_INTEROP_CLIENT_SECRET", secret)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot run node ({e}): scripts/interop-setup needs Node.js 20.19 or later")
        });
        let stdin = child.stdin.take().unwrap();
        let stderr = tokio::spawn(read_all(child.stderr.take().unwrap()));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = timeout(STARTUP, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(issuer) = line.strip_prefix("READY ") {
                    return Ok(Some(issuer.to_string()));
                }
            }
            Ok::<_, std::io::Error>(None)
        })
        .await;
        let Ok(Ok(Some(issuer))) = ready else {
            child.kill().await.ok();
            let stderr = stderr.await.unwrap_or_default();
            panic!("oidc-provider did not say READY in {STARTUP:?} ({ready:?}); stderr:\n{stderr}");
        };
        // Whatever it prints later is read, so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            issuer,
            _stdin: stdin,
            _child: child,
        }
    }

    /// Authorization code + PKCE S256 for the public client, signing in as `login`; checks the
    /// redirect's `state` and `iss` (RFC 9207), returns the token response.
    async fn authorization_code(
        &self,
        http: &reqwest::Client,
        discovery: &Value,
        login: &str,
    ) -> Value {
        let redirect_uri = "http://127.0.0.1/callback";
        let verifier = random_text(48);
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let state = random_text(24);
        let mut url = Url::parse(discovery["authorization_endpoint"].as_str().unwrap()).unwrap();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", APP_CLIENT)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", USER_SCOPE)
            .append_pair("state", &state)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("resource", FHIR_BASE)
            .append_pair("prompt", "consent");
        let callback = sign_in(http, url, redirect_uri, login).await;
        let params: BTreeMap<String, String> = callback.query_pairs().into_owned().collect();
        assert_eq!(params.get("state"), Some(&state));
        assert_eq!(params.get("iss"), Some(&self.issuer));
        let form = [
            ("grant_type", "authorization_code"),
            ("client_id", APP_CLIENT),
            ("code", &params["code"]),
            ("redirect_uri", redirect_uri),
            ("code_verifier", &verifier),
            ("resource", FHIR_BASE),
        ];
        let token_endpoint = discovery["token_endpoint"].as_str().unwrap();
        json_body(http.post(token_endpoint).form(&form).send().await.unwrap()).await
    }
}

/// Plays the user on oidc-provider's development pages (login, then consent; any login and
/// password pass) until the redirect to the app, which it returns.
async fn sign_in(http: &reqwest::Client, start: Url, redirect_uri: &str, login: &str) -> Url {
    let mut browser = Browser::default();
    let mut response = browser.send(http.get(start.as_str())).await;
    for _ in 0..10 {
        if response.status().is_redirection() {
            let location = response.headers()["location"].to_str().unwrap();
            let next = start.join(location).unwrap();
            if next.as_str().starts_with(redirect_uri) {
                return next;
            }
            response = browser.send(http.get(next.as_str())).await;
            continue;
        }
        assert_eq!(response.status(), 200, "oidc-provider's interaction pages");
        let page = response.text().await.unwrap();
        let action = attribute_after(&page, "<form", "action").expect("a form");
        let prompt = attribute_after(&page, "name=\"prompt\"", "value").expect("a prompt");
        let form: Vec<(&str, &str)> = match prompt.as_str() {
            "login" => vec![("prompt", "login"), ("login", login), ("password", "any")],
            "consent" => vec![("prompt", "consent")],
            other => panic!("unexpected prompt {other}"),
        };
        let target = start.join(&action).unwrap();
        response = browser.send(http.post(target.as_str()).form(&form)).await;
    }
    panic!("no redirect to the app after 10 pages");
}

/// A `client_credentials` token (client_secret_basic) for `resource`.
async fn client_credentials(
    http: &reqwest::Client,
    token_endpoint: &str,
    secret: &str,
    scope: &str,
    resource: &str,
) -> String {
    let form = [
        ("grant_type", "client_credentials"),
        ("scope", scope),
        ("resource", resource),
    ];
    let request = http
        .post(token_endpoint)
        .basic_auth(BACKEND_CLIENT, Some(secret));
    let body = json_body(request.form(&form).send().await.unwrap()).await;
    assert_eq!(body["token_type"], "Bearer");
    body["access_token"].as_str().unwrap().to_string()
}

/// A user agent's cookie jar: the names and values it was given. oidc-provider scopes its
/// interaction cookies by path; the latest of a name is the one that counts.
#[derive(Default)]
struct Browser {
    cookies: BTreeMap<String, String>,
}

impl Browser {
    async fn send(&mut self, request: reqwest::RequestBuilder) -> reqwest::Response {
        let cookie: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let response = request
            .header("cookie", cookie.join("; "))
            .send()
            .await
            .unwrap();
        for value in response.headers().get_all("set-cookie") {
            let pair = value.to_str().unwrap().split(';').next().unwrap();
            if let Some((name, value)) = pair.split_once('=') {
                self.cookies
                    .insert(name.trim().to_string(), value.trim().to_string());
            }
        }
        response
    }
}

/// The value of the first `attribute="…"` after `marker` in `html`.
fn attribute_after(html: &str, marker: &str, attribute: &str) -> Option<String> {
    let rest = &html[html.find(marker)?..];
    let start = rest.find(&format!("{attribute}=\""))? + attribute.len() + 2;
    let end = rest[start..].find('"')?;
    Some(rest[start..start + end].to_string())
}

// === shared ===

fn verifier(issuer: &str, audience: &str, keys: KeySource) -> Verifier {
    let config = IssuerConfig::new(issuer, vec![audience.to_string()], keys);
    Verifier::new(VerifierConfig::new(vec![config]), http_client()).unwrap()
}

fn assert_context(context: &TokenContext, fhir_user: &str, patient: Option<&str>, scope: &str) {
    assert_eq!(context.principal.fhir_user.as_deref(), Some(fhir_user));
    assert_eq!(context.patient.as_deref(), patient);
    assert_eq!(context.scopes, Scopes::parse(scope).unwrap());
}

fn assert_client(context: &TokenContext, client_id: &str) {
    assert_eq!(context.principal.client_id.as_deref(), Some(client_id));
}

/// The token with one base64url character of its signature changed, in the middle, so that the
/// signature's bytes change (not only unused bits of the last character).
fn alter_signature(token: &str) -> String {
    let at = token.rfind('.').unwrap() + 20;
    let mut bytes = token.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(HTTP)
        .build()
        .unwrap()
}

async fn json_body(response: reqwest::Response) -> Value {
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{status}: {text}");
    serde_json::from_str(&text).unwrap()
}

async fn read_all(mut stream: impl AsyncRead + Unpin) -> String {
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok();
    text
}

/// URL-safe random text from `bytes` random bytes.
fn random_text(bytes: usize) -> String {
    let mut buffer = vec![0; bytes];
    aws_lc_rs::rand::fill(&mut buffer).unwrap();
    URL_SAFE_NO_PAD.encode(buffer)
}

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where oidc-provider is installed: `FHIRSEAL_INTEROP_NODE_DIR`, or what `scripts/interop-setup`
/// fills; fails the test, saying what to run, when it is not there.
fn node_dir() -> PathBuf {
    let dir = std::env::var_os("FHIRSEAL_INTEROP_NODE_DIR")
        .map_or_else(|| repository().join(".cache/interop-node"), PathBuf::from);
    assert!(
        dir.join("node_modules/oidc-provider/package.json").exists(),
        "oidc-provider is not installed under {}: run scripts/interop-setup (scripts/test does)",
        dir.display()
    );
    dir
}
