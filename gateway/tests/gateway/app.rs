//! The gateway's router on its embedded defaults with a wiremock upstream: start-up (authority
//! created once, then reopened), discovery, the CapabilityStatement, upstream faults, and
//! OperationOutcomes for every path and method it does not serve.

use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use fhirseal::app::app;
use fhirseal::config::{Config, DEFAULTS};
use fhirseal::state::{AppState, StartupError};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{fhir_base, free_port, send, vars};

const NOW: i64 = 1_800_000_000;

fn config(data: &Path, upstream: &str, extra: &[(&str, &str)]) -> Config {
    let data = data.display().to_string();
    let mut env = vars(&[
        ("FHIRSEAL__SERVER__DATA_DIR", &data),
        ("FHIRSEAL__UPSTREAM__BASE_URL", upstream),
        ("FHIRSEAL__UPSTREAM__REQUEST_TIMEOUT_MS", "300"),
        ("FHIRSEAL__UPSTREAM__MAX_RETRIES", "0"),
    ]);
    env.extend(vars(extra));
    Config::load(None, env).unwrap()
}

async fn call(app: &Router, method: Method, uri: &str) -> (StatusCode, String, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::ACCEPT, "application/fhir+json")
        .body(Body::empty())
        .unwrap();
    let reply = send(app, request).await;
    let content_type = reply.header(header::CONTENT_TYPE);
    (reply.status, content_type, reply.json)
}

fn capability_statement(base: &str) -> Value {
    json!({
        "resourceType": "CapabilityStatement", "status": "active", "date": "2026-11-01",
        "kind": "instance", "fhirVersion": "4.0.1", "format": ["json"],
        "implementation": {"description": "sekmet", "url": base},
        "rest": [{"mode": "server", "resource": [{"type": "Patient",
            "profile": format!("{base}/StructureDefinition/x")}]}]
    })
}

#[tokio::test]
async fn first_start_creates_the_authority_and_the_next_reopens_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let state = AppState::build(config(&data, "http://127.0.0.1:9/fhir", &[]), NOW).unwrap();
    let kid = state.auth_server.as_ref().unwrap().jwks().keys[0]
        .common
        .key_id
        .clone();
    assert!(data.join("authority.sqlite3").exists() && data.join("authority.kek").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the data folder is the owner's only");
    }
    drop(state);
    // Restarted: the same authority, and the same signing key (tokens issued before still verify).
    let again = AppState::build(config(&data, "http://127.0.0.1:9/fhir", &[]), NOW + 60).unwrap();
    assert_eq!(
        again.auth_server.as_ref().unwrap().jwks().keys[0]
            .common
            .key_id,
        kid
    );
    drop(again);

    // The key file lost: no new key is made that would not open the authority.
    std::fs::remove_file(data.join("authority.kek")).unwrap();
    let err = AppState::build(config(&data, "http://127.0.0.1:9/fhir", &[]), NOW).unwrap_err();
    assert!(matches!(err, StartupError::KekMissing { .. }), "{err}");
    assert!(err.to_string().contains("authority.kek"), "{err}");
    assert!(!data.join("authority.kek").exists());
}

#[tokio::test]
async fn discovery_and_the_capability_statement_say_how_to_authenticate() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockServer::start().await;
    let base = fhir_base(&upstream);
    Mock::given(method("GET"))
        .and(path("/fhir/metadata"))
        .respond_with(ResponseTemplate::new(200).set_body_json(capability_statement(&base)))
        .mount(&upstream)
        .await;
    let state = AppState::build(config(dir.path(), &base, &[]), NOW).unwrap();
    let app = app(state);

    // Always JSON, whatever the Accept header.
    let (status, content_type, discovery) =
        call(&app, Method::GET, "/fhir/.well-known/smart-configuration").await;
    assert_eq!(
        (status, content_type.as_str()),
        (StatusCode::OK, "application/json")
    );
    assert_eq!(
        discovery["token_endpoint"],
        "http://127.0.0.1:8080/auth/token"
    );
    assert_eq!(
        discovery["code_challenge_methods_supported"],
        json!(["S256"])
    );

    let (status, content_type, statement) = call(&app, Method::GET, "/fhir/metadata").await;
    assert_eq!(status, StatusCode::OK, "{statement}");
    assert_eq!(content_type, "application/fhir+json; charset=utf-8");
    let security = &statement["rest"][0]["security"];
    assert_eq!(security["service"][0]["coding"][0]["code"], "SMART-on-FHIR");
    let uris = &security["extension"][0];
    assert_eq!(
        uris["url"],
        "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    );
    assert!(uris["extension"].as_array().unwrap().contains(
        &json!({"url": "authorize", "valueUri": "http://127.0.0.1:8080/auth/authorize"})
    ));
    assert_eq!(
        statement["implementation"]["url"],
        "http://127.0.0.1:8080/fhir"
    );
    // No upstream URL survives.
    assert!(
        !statement.to_string().contains(&upstream.uri()),
        "{statement}"
    );
    assert_eq!(
        statement["rest"][0]["resource"][0]["profile"],
        "http://127.0.0.1:8080/fhir/StructureDefinition/x"
    );

    // The embedded authorization server is mounted under /auth.
    let (status, _, jwks) = call(&app, Method::GET, "/auth/jwks").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(jwks["keys"][0]["alg"], "RS256");
}

#[tokio::test]
async fn upstream_faults_are_502_or_504_outcomes_that_leak_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockServer::start().await;
    let base = fhir_base(&upstream);
    let state = AppState::build(config(dir.path(), &base, &[]), NOW).unwrap();
    let app = app(state);
    let cases = [
        (
            ResponseTemplate::new(500).set_body_string("Traceback: secret-canary-1"),
            StatusCode::BAD_GATEWAY,
        ),
        (
            ResponseTemplate::new(200).set_body_string("{not json secret-canary-2"),
            StatusCode::BAD_GATEWAY,
        ),
        (
            ResponseTemplate::new(200)
                .set_body_json(json!({"resourceType": "Patient", "id": "secret-canary-3"})),
            StatusCode::BAD_GATEWAY,
        ),
        (
            ResponseTemplate::new(200)
                .set_body_json(capability_statement(&base))
                .set_delay(Duration::from_millis(1500)),
            StatusCode::GATEWAY_TIMEOUT,
        ),
    ];
    for (template, expected) in cases {
        upstream.reset().await;
        Mock::given(method("GET"))
            .respond_with(template)
            .mount(&upstream)
            .await;
        let (status, content_type, outcome) = call(&app, Method::GET, "/fhir/metadata").await;
        assert_eq!(status, expected, "{outcome}");
        assert_eq!(content_type, "application/fhir+json; charset=utf-8");
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        assert!(!outcome.to_string().contains("canary"), "{outcome}");
    }
    // Nobody listening at all.
    let dir = tempfile::tempdir().unwrap();
    let app = self::app(
        AppState::build(config(dir.path(), "http://127.0.0.1:9/fhir", &[]), NOW).unwrap(),
    );
    let (status, _, outcome) = call(&app, Method::GET, "/fhir/metadata").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{outcome}");
}

#[tokio::test]
async fn unknown_paths_and_methods_are_outcomes_too() {
    let dir = tempfile::tempdir().unwrap();
    let app =
        app(AppState::build(config(dir.path(), "http://127.0.0.1:9/fhir", &[]), NOW).unwrap());
    let (status, content_type, outcome) = call(&app, Method::GET, "/nowhere").await;
    assert_eq!(
        (status, content_type.as_str()),
        (
            StatusCode::NOT_FOUND,
            "application/fhir+json; charset=utf-8"
        )
    );
    assert_eq!(outcome["issue"][0]["code"], "not-found");
    let (status, _, outcome) = call(&app, Method::DELETE, "/fhir/metadata").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(outcome["issue"][0]["code"], "not-supported");
}

#[tokio::test]
async fn with_an_external_server_discovery_comes_from_its_own_document() {
    let dir = tempfile::tempdir().unwrap();
    let login = MockServer::start().await;
    let issuer = format!("{}/realms/clinic", login.uri());
    Mock::given(method("GET"))
        .and(path("/realms/clinic/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/certs"),
        })))
        .mount(&login)
        .await;
    let upstream = MockServer::start().await;
    let file = dir.path().join("gateway.toml");
    std::fs::write(
        &file,
        format!(
            "{DEFAULTS}\n[[smart.issuers]]\nissuer = \"{issuer}\"\njwks_uri = \"{issuer}/certs\"\n"
        ),
    )
    .unwrap();
    let config = Config::load(
        Some(&file),
        [
            (
                "FHIRSEAL__SERVER__DATA_DIR".to_string(),
                dir.path().join("data").display().to_string(),
            ),
            (
                "FHIRSEAL__UPSTREAM__BASE_URL".to_string(),
                fhir_base(&upstream),
            ),
            (
                "FHIRSEAL__SMART__EMBEDDED__ENABLED".to_string(),
                "false".to_string(),
            ),
        ],
    )
    .unwrap();
    let router = app(AppState::build(config, NOW).unwrap());
    let (status, content_type, body) = call(
        &router,
        Method::GET,
        "/fhir/.well-known/smart-configuration",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    assert_eq!(body["issuer"], issuer);
    assert_eq!(body["authorization_endpoint"], format!("{issuer}/auth"));
    assert_eq!(body["code_challenge_methods_supported"], json!(["S256"]));

    // A login server that does not answer: a 502 outcome.
    let issuer = format!("http://127.0.0.1:{}/realms/clinic", free_port());
    let dir2 = tempfile::tempdir().unwrap();
    let file2 = dir2.path().join("gateway.toml");
    std::fs::write(
        &file2,
        format!(
            "{DEFAULTS}\n[[smart.issuers]]\nissuer = \"{issuer}\"\njwks_uri = \"{issuer}/certs\"\n"
        ),
    )
    .unwrap();
    let config = Config::load(
        Some(&file2),
        [
            (
                "FHIRSEAL__SERVER__DATA_DIR".to_string(),
                dir2.path().join("data").display().to_string(),
            ),
            (
                "FHIRSEAL__UPSTREAM__BASE_URL".to_string(),
                fhir_base(&upstream),
            ),
            (
                "FHIRSEAL__SMART__EMBEDDED__ENABLED".to_string(),
                "false".to_string(),
            ),
        ],
    )
    .unwrap();
    let router = app(AppState::build(config, NOW).unwrap());
    let (status, _, body) = call(
        &router,
        Method::GET,
        "/fhir/.well-known/smart-configuration",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["resourceType"], "OperationOutcome");
}
