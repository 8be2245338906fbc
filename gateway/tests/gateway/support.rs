//! What the gateway's tests share, each once: the static test issuer (its keys in `tests/keys`,
//! a wiremock JWKS endpoint serving them, the tokens it signs), a gateway state configured from a
//! file in a temporary folder of its own, a request sent through a router and its answer read
//! whole, the wiremock upstream's FHIR base, and the built binary's outcome. The real FHIR
//! server's harness is [`sekmet`].

pub(crate) mod sekmet;

use std::fmt::Debug;
use std::net::TcpListener;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::process::{Child, Output};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fhirseal::admin::{AdminAccess, AdminTokens, admin_router};
use fhirseal::config::{Config, DEFAULTS};
use fhirseal::state::AppState;
pub(crate) use fhirseal_authority::unix_now as now;
use fhirseal_envelope::Header;
use fhirseal_seal::shape::SEALED_HEADER;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use tower::ServiceExt;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The gateway's FHIR base on the embedded defaults, as clients (and tokens' `aud`) name it.
pub(crate) const BASE: &str = "http://127.0.0.1:8080/fhir";
/// The static test issuer.
pub(crate) const ISSUER: &str = "https://login.hospital.example";
/// Its signing key (RSA, `kid` `issuer-1` in its key set).
pub(crate) const ISSUER_KEY: &[u8] = include_bytes!("../keys/issuer.pem");
/// Its public key, as PEM.
pub(crate) const ISSUER_PUBLIC: &[u8] = include_bytes!("../keys/issuer.pub.pem");
/// Its key set, as its JWKS endpoint serves it.
pub(crate) const JWKS: &str = include_str!("../keys/issuer.jwks.json");
/// An RSA key in no trusted key set.
pub(crate) const ATTACKER_KEY: &[u8] = include_bytes!("../keys/attacker.pem");

// --- The test issuer and its tokens ---------------------------------------------------------

/// A wiremock server answering `GET /jwks` with the test issuer's key set.
pub(crate) async fn jwks_server() -> MockServer {
    let keys = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/jwks"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(JWKS, "application/json"))
        .mount(&keys)
        .await;
    keys
}

/// The JWT header of the test issuer's tokens: RS256, `kid` `issuer-1`.
pub(crate) fn issuer_header() -> jsonwebtoken::Header {
    let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
    header.kid = Some("issuer-1".into());
    header
}

/// `claims` signed with the RSA key `pem` under `header`.
pub(crate) fn sign_with(header: &jsonwebtoken::Header, claims: &Value, pem: &[u8]) -> String {
    jsonwebtoken::encode(header, claims, &EncodingKey::from_rsa_pem(pem).unwrap()).unwrap()
}

/// `claims` signed by the test issuer.
pub(crate) fn sign(claims: &Value) -> String {
    sign_with(&issuer_header(), claims, ISSUER_KEY)
}

/// A token of the test issuer for the practitioner `fhir_user` in `role` at St Mary's, with
/// `scope` and the patient `p1` in context, valid for ten minutes.
pub(crate) fn practitioner(fhir_user: &str, role: &str, scope: &str) -> String {
    sign(&json!({
        "iss": ISSUER, "aud": BASE, "sub": fhir_user, "exp": now() + 600, "iat": now(),
        "fhirUser": fhir_user, "scope": scope, "patient": "p1",
        "practitioner_roles": [{"code": [role], "organization": "Organization/st-mary"}],
    }))
}

/// Who is calling. Each is a token of the test issuer with the claims the policy's roles read.
#[derive(Clone, Debug)]
pub(crate) enum Who {
    /// A physician (`doctor`), `user/*.cruds`.
    Doctor,
    /// A nurse (`nurse`), `user/*.cruds`.
    Nurse,
    /// The registration desk (`registrar`), `user/*.cruds`.
    Registrar,
    /// A pharmacist, `user/*.cruds`.
    Pharmacist,
    /// A physician who is also a registrar and in human resources: every protected element of
    /// the policy opens for it. `user/*.cruds`.
    FullAccess,
    /// The patient with this id, `patient/*.rs` and the `patient` claim.
    Patient(String),
}

/// A signed access token for `who`, valid for ten minutes.
pub(crate) fn token(who: &Who) -> String {
    let (user, roles, scope, extra): (String, Value, &str, Value) = match who {
        Who::Doctor => (
            "Practitioner/e2e-dr".into(),
            json!([{"code": ["doctor"], "organization": "Organization/st-mary"}]),
            "user/*.cruds",
            json!({}),
        ),
        Who::Nurse => (
            "Practitioner/e2e-nurse".into(),
            json!([{"code": ["nurse"], "organization": "Organization/st-mary"}]),
            "user/*.cruds",
            json!({}),
        ),
        Who::Registrar => (
            "Practitioner/e2e-registrar".into(),
            json!([{"code": ["registrar"], "organization": "Organization/st-mary"}]),
            "user/*.cruds",
            json!({}),
        ),
        Who::Pharmacist => (
            "Practitioner/e2e-pharmacist".into(),
            json!([{"code": ["pharmacist"], "organization": "Organization/st-mary"}]),
            "user/*.cruds",
            json!({}),
        ),
        Who::FullAccess => (
            "Practitioner/e2e-full".into(),
            json!([{"code": ["doctor", "registrar"], "organization": "Organization/st-mary"}]),
            "user/*.cruds",
            json!({"department": "human-resources"}),
        ),
        Who::Patient(id) => (
            format!("Patient/{id}"),
            json!([]),
            "patient/*.rs",
            json!({"patient": id}),
        ),
    };
    let mut claims = json!({
        "iss": ISSUER, "aud": BASE, "sub": user, "exp": now() + 600, "iat": now(),
        "fhirUser": user, "scope": scope, "client_id": "e2e-tests",
        "practitioner_roles": roles,
    });
    if let (Value::Object(claims), Value::Object(extra)) = (&mut claims, extra) {
        claims.extend(extra);
    }
    sign(&claims)
}

// --- A configured gateway -------------------------------------------------------------------

/// `pairs` as the environment [`Config::load`] reads.
pub(crate) fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// A gateway's state, configured from `gateway.toml` in a temporary folder of its own: the
/// embedded defaults (as a file, so that the data folder, and the authority in it, are in that
/// folder too) and the test issuer. The folder and the issuer's JWKS endpoint live as long as it.
#[derive(Debug)]
pub(crate) struct Configured {
    /// The state.
    pub(crate) state: AppState,
    /// The test issuer's JWKS endpoint.
    pub(crate) keys: MockServer,
    /// The folder.
    pub(crate) dir: tempfile::TempDir,
}

impl Configured {
    /// The configuration file.
    pub(crate) fn file(&self) -> PathBuf {
        self.dir.path().join("gateway.toml")
    }
}

/// A gateway's state with the upstream FHIR server at `upstream` (its FHIR base) and `overrides`
/// as environment variables: see [`Configured`].
pub(crate) async fn configured(upstream: &str, overrides: &[(&str, &str)]) -> Configured {
    let dir = tempfile::tempdir().unwrap();
    let keys = jwks_server().await;
    let file = dir.path().join("gateway.toml");
    std::fs::write(
        &file,
        format!(
            "{DEFAULTS}\n[[smart.issuers]]\nissuer = \"{ISSUER}\"\njwks_uri = \"{}/jwks\"\n",
            keys.uri()
        ),
    )
    .unwrap();
    let mut env = vars(&[("FHIRSEAL__UPSTREAM__BASE_URL", upstream)]);
    env.extend(vars(overrides));
    let config = Config::load(Some(&file), env).unwrap();
    assert_eq!(config.fhir_base, BASE);
    // On a blocking thread, as `fhirseal serve` builds it: a PostgreSQL authority's client is
    // synchronous and may not run on the runtime's threads.
    let state = tokio::task::spawn_blocking(move || AppState::build(config, now()))
        .await
        .unwrap()
        .unwrap();
    Configured { state, keys, dir }
}

/// A gateway ([`configured`] with `overrides`) in front of a wiremock upstream of its own, and
/// its router: the harness of the tests that script the upstream's answers.
pub(crate) struct Mocked {
    /// The gateway's routes.
    pub(crate) app: Router,
    /// The upstream's mock (unused by the gateway when another base was given).
    pub(crate) upstream: MockServer,
    /// The gateway's state and folder (they live as long as the harness).
    pub(crate) gateway: Configured,
}

/// [`Mocked`] in front of its wiremock upstream, or of `base` when given (an address that
/// refuses or stalls, say).
pub(crate) async fn mocked(base: Option<String>, overrides: &[(&str, &str)]) -> Mocked {
    let upstream = MockServer::start().await;
    let base = base.unwrap_or_else(|| fhir_base(&upstream));
    let gateway = configured(&base, overrides).await;
    Mocked {
        app: fhirseal::app::app(gateway.state.clone()),
        upstream,
        gateway,
    }
}

/// A fresh database of its own, named after `prefix`, on the PostgreSQL server of
/// `FHIRSEAL_TEST_POSTGRES_URL`, for an authority several gateways share: its URL. Without the
/// variable the test fails saying what to run (PostgreSQL tests are never skipped). Synchronous:
/// call it before the runtime's work, or from a blocking thread.
pub(crate) fn postgres_database(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let base = std::env::var("FHIRSEAL_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "FHIRSEAL_TEST_POSTGRES_URL is not set: run the tests with scripts/test, which starts \
             a PostgreSQL server, or start one with `scripts/pg-throwaway start DIR` and export \
             the URL it prints (PostgreSQL tests are never skipped)"
        )
    });
    let name = format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let mut admin = postgres::Client::connect(&base, postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    format!("{prefix}/{name}")
}

/// The FHIR base of a wiremock server standing in for the upstream: its `/fhir`.
pub(crate) fn fhir_base(server: &MockServer) -> String {
    format!("{}/fhir", server.uri())
}

/// A `searchset` Bundle of `entries`, as a FHIR server answers a search.
pub(crate) fn searchset(entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": "searchset", "total": entries.len(), "entry": entries})
}

/// The shared header a header `Basic` (as the gateway stores one upstream) holds.
pub(crate) fn header_in(basic: &Value) -> Header {
    let text = basic["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == SEALED_HEADER)
        .unwrap()["valueBase64Binary"]
        .as_str()
        .unwrap();
    Header::from_bytes(&STANDARD.decode(text).unwrap()).unwrap()
}

/// A port of 127.0.0.1 that nothing listens on (bound, and let go, just now).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A process of the built binary a test started (`fhirseal serve`): killed and reaped when
/// dropped, so a test that fails half-way leaves no gateway running on its ports and over its
/// deleted data folder.
pub(crate) struct Spawned(Option<Child>);

impl Spawned {
    pub(crate) fn new(child: Child) -> Self {
        Self(Some(child))
    }

    /// Waits for the process to exit and collects its output (no kill on drop after this).
    pub(crate) fn wait_with_output(mut self) -> Output {
        let child = self.0.take().expect("a spawned process is taken once");
        child.wait_with_output().unwrap()
    }
}

impl Deref for Spawned {
    type Target = Child;

    fn deref(&self) -> &Child {
        self.0.as_ref().expect("a spawned process is taken once")
    }
}

impl DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("a spawned process is taken once")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// --- Requests -------------------------------------------------------------------------------

/// An answer of the gateway (or of the upstream, read directly).
#[derive(Debug)]
pub(crate) struct Reply {
    /// The status.
    pub(crate) status: StatusCode,
    /// The headers.
    pub(crate) headers: HeaderMap,
    /// The body as text.
    pub(crate) text: String,
    /// The body as JSON (`Null` when empty or not JSON).
    pub(crate) json: Value,
}

impl Reply {
    /// The answer of `status` with `headers` and `body` (UTF-8, or the test fails).
    pub(crate) fn new(status: StatusCode, headers: HeaderMap, body: &[u8]) -> Self {
        let text = String::from_utf8(body.to_vec()).unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            headers,
            text,
            json,
        }
    }

    /// A response header, as text ("" when absent).
    pub(crate) fn header(&self, name: header::HeaderName) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
}

/// Sends `request` through `router`, without a socket, and reads the whole answer.
pub(crate) async fn send(router: &Router, request: Request<Body>) -> Reply {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 256 << 20)
        .await
        .unwrap();
    Reply::new(status, headers, &bytes)
}

/// The last line of audit lines kept in memory, parsed.
pub(crate) fn last_audit_line(lines: &Mutex<Vec<String>>) -> Value {
    let lines = lines.lock().unwrap();
    serde_json::from_str(lines.last().expect("an audit line")).unwrap()
}

// --- The built binary -----------------------------------------------------------------------

/// The standard output of `out`, a run of `what` that must have succeeded (its standard error
/// says why when it did not).
pub(crate) fn succeeded(what: &impl Debug, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The exit code and standard error of `out`, a run of `what` that must have failed.
pub(crate) fn failed(what: &impl Debug, out: Output) -> (i32, String) {
    assert!(!out.status.success(), "{what:?} succeeded");
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// What a tracing subscriber wrote, shared with the test: [`Logged::subscriber`] writes here
/// (plain text, no colours), [`Logged::text`] reads it. Install the subscriber with
/// `tracing::subscriber::set_default` on a current-thread runtime, so the whole flow runs where
/// it sees it.
#[derive(Clone, Default)]
pub(crate) struct Logged(std::sync::Arc<Mutex<Vec<u8>>>);

impl Logged {
    /// A subscriber of events at `level` and above, writing here.
    pub(crate) fn subscriber(
        &self,
        level: tracing::Level,
    ) -> impl tracing::Subscriber + Send + Sync {
        let writer = self.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(level)
            .with_writer(move || writer.clone())
            .finish()
    }

    /// Everything written so far.
    pub(crate) fn text(&self) -> String {
        let bytes = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        String::from_utf8(bytes).unwrap()
    }
}

impl std::io::Write for Logged {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut buffer = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The admin API as `fhirseal serve` mounts it on 127.0.0.1:9090, each request sent to that host
/// with its one token (the admin API's own refusals: tests/gateway/admin.rs).
pub(crate) fn admin_api(state: &AppState) -> Router {
    const TOKEN: &str = "support-test-admin-token-0123456789";
    let access = AdminAccess::new(
        "127.0.0.1:9090".parse().unwrap(),
        AdminTokens::parse(&format!("support-test {TOKEN}")).unwrap(),
    );
    admin_router(state.clone(), access).layer(axum::middleware::map_request(
        |mut request: Request<Body>| async move {
            let headers = request.headers_mut();
            headers.insert(header::HOST, "127.0.0.1:9090".parse().unwrap());
            headers.insert(
                header::AUTHORIZATION,
                format!("Bearer {TOKEN}").parse().unwrap(),
            );
            request
        },
    ))
}

/// Writes `events` (AuditEvents) as `<prefix>-<i>.json` into `$FHIRSEAL_AUDIT_EVENTS_OUT`, which
/// scripts/test validates with the real R4 validator (scripts/fhir-validate); nothing without it.
pub(crate) fn write_audit_events(prefix: &str, events: &[Value]) {
    let Some(dir) = std::env::var_os("FHIRSEAL_AUDIT_EVENTS_OUT") else {
        return;
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (i, event) in events.iter().enumerate() {
        std::fs::write(
            dir.join(format!("{prefix}-{i}.json")),
            serde_json::to_vec_pretty(event).unwrap(),
        )
        .unwrap();
    }
}
