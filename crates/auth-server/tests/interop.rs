//! Real third-party OAuth 2 software against the embedded authorization server, with the tool
//! `scripts/interop-setup` installs into `.cache/` (`scripts/test` runs it, and so CI): the Python
//! OAuth library `authlib` (`tests/interop/authlib/client.py`) completes a SMART standalone launch
//! (authorization code + PKCE S256 with a practitioner picking the patient, then a refresh) and
//! SMART Backend Services (`private_key_jwt`, RS384) against the [`AuthServer`]; the gateway's
//! [`Verifier`] accepts the tokens it got, with the patient, `fhirUser` and scopes they should
//! carry.
//!
//! Token verification against a third-party provider (`oidc-provider`) is
//! `crates/smart/tests/interop.rs`.
//!
//! A missing tool fails the test, naming `scripts/interop-setup`. Every child process has a
//! timeout and is killed when its handle drops.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHasher, SaltString};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use fhirseal_auth_server::{
    AuthServer, ClientAuth, ClientConfig, LoginThrottle, ServerConfig, SigningKey, UserConfig,
};
use fhirseal_smart::verify::{IssuerConfig, KeySource, Verifier, VerifierConfig};
use fhirseal_smart::{Scopes, TokenContext};
use serde_json::{Value, json};
use tokio::process::Command;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// How long the Python client may take for both of its flows.
const CLIENT_RUN: Duration = Duration::from_secs(90);
/// How long one HTTP exchange may take.
const HTTP: Duration = Duration::from_secs(15);

/// What a SMART standalone launch asks for.
const USER_SCOPE: &str = "openid fhirUser launch/patient patient/Observation.rs offline_access";
/// The confidential and the public client `client.py` plays.
const BACKEND_CLIENT: &str = "fhirseal-interop-backend";
const APP_CLIENT: &str = "fhirseal-interop-app";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authlib_completes_pkce_and_backend_services() {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let backend = BackendKey::generate(dir.path());
    let password = random_text(18);
    let embedded = Embedded::start(&password, &backend).await;
    let tokens = run_authlib(&python, &embedded, &password, &backend.pem_path).await;

    // A resource server trusting the embedded server the way the gateway does.
    let trust = embedded.server.issuer_config();
    assert_eq!(trust.issuer, embedded.issuer);
    assert_eq!(trust.audience, std::slice::from_ref(&embedded.fhir_base));
    let verifier = Verifier::new(VerifierConfig::new(vec![trust]), http_client()).unwrap();

    for flow in ["authorization_code", "refreshed"] {
        let response = &tokens[flow];
        let verified = verifier
            .verify(response["access_token"].as_str().unwrap())
            .await
            .unwrap_or_else(|e| panic!("{flow}: {e}"));
        assert_eq!(verified.subject.as_deref(), Some(USERNAME), "{flow}");
        assert_context(
            &verified.context,
            USER_FHIR,
            Some("Patient/123"),
            USER_SCOPE,
        );
        assert_client(&verified.context, APP_CLIENT);
        assert_eq!(response["patient"], "123", "{flow}: the launch context");
    }
    let first = &tokens["authorization_code"]["refresh_token"];
    assert_ne!(first, &tokens["refreshed"]["refresh_token"], "rotated");

    let id_token = tokens["authorization_code"]["id_token"].as_str();
    let claims = id_token_claims(id_token.expect("openid asked"), &embedded).await;
    // SMART: the id token's `fhirUser` is the user's resource URL, absolute or relative.
    let absolute = format!("{}/{USER_FHIR}", embedded.fhir_base);
    assert!([absolute.as_str(), USER_FHIR].contains(&claims["fhirUser"].as_str().unwrap()));

    let response = &tokens["backend_services"];
    assert!(
        response.get("refresh_token").is_none(),
        "SMART: none for backend services"
    );
    let access_token = response["access_token"].as_str().unwrap();
    let verified = verifier.verify(access_token).await.unwrap();
    assert_eq!(verified.subject.as_deref(), Some(BACKEND_CLIENT));
    assert_eq!(verified.context.scopes.to_string(), "system/Observation.rs");
    assert_eq!(verified.context.patient, None);
    assert_client(&verified.context, BACKEND_CLIENT);
}

// === the embedded server and authlib ===

/// The practitioner who signs in (and picks patient 123 on the login page), and the app.
const USERNAME: &str = "dr-quinn";
const USER_FHIR: &str = "Practitioner/quinn";
const REDIRECT_URI: &str = "http://127.0.0.1:1/callback";
const BACKEND_KID: &str = "interop-backend-1";

/// The embedded server on a loopback port: its router at the issuer's path (`/auth`), and the
/// SMART configuration where the gateway serves it (`/fhir/.well-known/smart-configuration`).
/// Stops serving when dropped.
struct Embedded {
    issuer: String,
    fhir_base: String,
    server: Arc<AuthServer>,
    serving: JoinHandle<()>,
}

impl Embedded {
    async fn start(password: &str, backend: &BackendKey) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let issuer = format!("{origin}/auth");
        let fhir_base = format!("{origin}/fhir");
        let config = server_config(&issuer, &fhir_base, password, backend);
        let server = AuthServer::new(config, SigningKey::generate().unwrap(), http_client());
        let server = Arc::new(server.unwrap());
        let smart_configuration = server.smart_configuration();
        let app = axum::Router::new()
            .nest("/auth", Arc::clone(&server).router())
            .route(
                "/fhir/.well-known/smart-configuration",
                axum::routing::get(move || async move { axum::Json(smart_configuration) }),
            );
        let serving = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            issuer,
            fhir_base,
            server,
            serving,
        }
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

fn server_config(
    issuer: &str,
    fhir_base: &str,
    password: &str,
    backend: &BackendKey,
) -> ServerConfig {
    let user = UserConfig {
        username: USERNAME.into(),
        password_hash: argon2_hash(password),
        fhir_user: USER_FHIR.into(),
        patient: None,
        claims: serde_json::Map::new(),
    };
    let app = ClientConfig {
        client_id: APP_CLIENT.into(),
        name: "authlib interop app".into(),
        redirect_uris: vec![REDIRECT_URI.into()],
        auth: ClientAuth::Public,
        allowed_scopes: Scopes::parse(USER_SCOPE).unwrap(),
    };
    let keys = serde_json::from_value(json!({ "keys": [backend.jwk] })).unwrap();
    let service = ClientConfig {
        client_id: BACKEND_CLIENT.into(),
        name: "authlib interop backend service".into(),
        redirect_uris: Vec::new(),
        auth: ClientAuth::PrivateKeyJwt {
            jwks: Some(keys),
            jwks_uri: None,
        },
        allowed_scopes: Scopes::parse("system/Observation.rs").unwrap(),
    };
    ServerConfig {
        issuer: issuer.to_string(),
        fhir_base: fhir_base.to_string(),
        users: vec![user],
        clients: vec![app, service],
        access_token_lifetime: Duration::from_secs(3600),
        backend_token_lifetime: Duration::from_secs(300),
        refresh_token_lifetime: Duration::from_secs(86_400),
        code_lifetime: Duration::from_secs(60),
        login_throttle: LoginThrottle::default(),
    }
}

/// An argon2id PHC string with low-cost parameters: the test checks the flow, not the hash.
fn argon2_hash(password: &str) -> String {
    let params = argon2::Params::new(1024, 1, 1, None).unwrap();
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(random_text(16).as_bytes()).unwrap();
    argon
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

/// The backend service's RS384 key: the private key as a PKCS#8 PEM file for Python, the public
/// JWK registered by value with the server.
struct BackendKey {
    pem_path: PathBuf,
    jwk: Value,
}

impl BackendKey {
    fn generate(dir: &Path) -> Self {
        let key = KeyPair::generate(KeySize::Rsa2048).unwrap();
        let der = AsDer::<Pkcs8V1Der<'_>>::as_der(&key).unwrap();
        let base64 = STANDARD.encode(der.as_ref());
        let lines: Vec<&str> = base64
            .as_bytes()
            .chunks(64)
            .map(|line| std::str::from_utf8(line).unwrap())
            .collect();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        );
        let pem_path = dir.join("backend.pem");
        std::fs::write(&pem_path, pem).unwrap();
        let public = key.public_key();
        let jwk = json!({
            "kty": "RSA",
            "kid": BACKEND_KID,
            "alg": "RS384",
            "use": "sig",
            "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
            "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
        });
        Self { pem_path, jwk }
    }
}

/// Runs `client.py` against the embedded server; returns what it printed (the token responses
/// of its flows), or fails with its stderr.
async fn run_authlib(python: &Path, embedded: &Embedded, password: &str, key: &Path) -> Value {
    let mut command = Command::new(python);
    command
        .arg(repository().join("tests/interop/authlib/client.py"))
        .args(["--fhir-base", &embedded.fhir_base])
        .args(["--client-id", APP_CLIENT, "--redirect-uri", REDIRECT_URI])
        .args(["--username", USERNAME, "--patient", "123"])
        .args(["--backend-client-id", BACKEND_CLIENT])
        .args(["--backend-kid", BACKEND_KID])
        .arg("--backend-key")
        .arg(key)
        .env("FHIRSEAL_INTEROP_PASSWORD", password)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot run {} ({e}): run scripts/interop-setup",
            python.display()
        )
    });
    let output = timeout(CLIENT_RUN, child.wait_with_output())
        .await
        .expect("client.py did not finish in time")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "client.py: {}\n{stderr}",
        output.status
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The id token's claims: signed with the key the server publishes at `/jwks`, for the app.
async fn id_token_claims(id_token: &str, embedded: &Embedded) -> Value {
    let issuer = &embedded.issuer;
    let verifier = verifier(issuer, APP_CLIENT, KeySource::Url(format!("{issuer}/jwks")));
    let verified = verifier.verify(id_token).await.unwrap();
    assert_eq!(verified.subject.as_deref(), Some(USERNAME));
    verified.claims.clone()
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

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(HTTP)
        .build()
        .unwrap()
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

/// The Python with authlib: `FHIRSEAL_INTEROP_PYTHON`, or the venv `scripts/interop-setup` makes;
/// fails the test, saying what to run, when it is not there.
fn python() -> PathBuf {
    let python = std::env::var_os("FHIRSEAL_INTEROP_PYTHON").map_or_else(
        || repository().join(".cache/interop-venv/bin/python"),
        PathBuf::from,
    );
    assert!(
        python.exists(),
        "authlib's Python is not at {}: run scripts/interop-setup (scripts/test does)",
        python.display()
    );
    python
}
