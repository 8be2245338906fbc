//! CORS for browser SMART apps (`server.cors_origins`): preflights answered before the token is
//! asked for, the allowed origin named on every answer (a 401 too, so the app can read it), other
//! origins never named, and the CapabilityStatement's `security.cors` saying which it is.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use fhirseal::app::app;
use fhirseal::config::Config;
use fhirseal::state::AppState;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{Reply, fhir_base, send, vars};

const NOW: i64 = 1_800_000_000;
const APP: &str = "https://app.example";

/// The router on the embedded defaults with `origins` as `server.cors_origins` (`None`: unset),
/// the upstream answering `metadata`; the folder lives as long as the router.
async fn router(origins: Option<&str>) -> (Router, MockServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockServer::start().await;
    let base = fhir_base(&upstream);
    Mock::given(method("GET"))
        .and(path("/fhir/metadata"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "resourceType": "CapabilityStatement", "status": "active", "date": "2026-11-01",
            "kind": "instance", "fhirVersion": "4.0.1", "format": ["json"],
            "rest": [{"mode": "server"}]
        })))
        .mount(&upstream)
        .await;
    let data = dir.path().display().to_string();
    let mut env = vars(&[
        ("FHIRSEAL__SERVER__DATA_DIR", &data),
        ("FHIRSEAL__UPSTREAM__BASE_URL", &base),
    ]);
    if let Some(origins) = origins {
        env.extend(vars(&[("FHIRSEAL__SERVER__CORS_ORIGINS", origins)]));
    }
    let state = AppState::build(Config::load(None, env).unwrap(), NOW).unwrap();
    (app(state), upstream, dir)
}

async fn preflight(router: &Router, uri: &str, origin: &str) -> Reply {
    let request = Request::builder()
        .method(Method::OPTIONS)
        .uri(uri)
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "PUT")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization, content-type, if-match",
        )
        .body(Body::empty())
        .unwrap();
    send(router, request).await
}

async fn get(router: &Router, uri: &str, origin: &str) -> Reply {
    let request = Request::builder()
        .uri(uri)
        .header(header::ORIGIN, origin)
        .header(header::ACCEPT, "application/fhir+json")
        .body(Body::empty())
        .unwrap();
    send(router, request).await
}

#[tokio::test]
async fn an_allowed_origin_is_answered_before_the_token_and_named_on_every_answer() {
    let (router, upstream, _dir) = router(Some(r#"["https://app.example"]"#)).await;

    // The preflight needs no token and never reaches the upstream.
    let reply = preflight(&router, "/fhir/Patient/pat-1", APP).await;
    assert!(reply.status.is_success(), "{}", reply.status);
    assert_eq!(reply.header(header::ACCESS_CONTROL_ALLOW_ORIGIN), APP);
    let methods = reply.header(header::ACCESS_CONTROL_ALLOW_METHODS);
    assert!(
        methods.contains("PUT") && methods.contains("PATCH"),
        "{methods}"
    );
    let allowed = reply
        .header(header::ACCESS_CONTROL_ALLOW_HEADERS)
        .to_ascii_lowercase();
    for name in ["authorization", "content-type", "if-match", "if-none-exist"] {
        assert!(allowed.contains(name), "{name} in {allowed}");
    }
    assert_eq!(reply.header(header::ACCESS_CONTROL_ALLOW_CREDENTIALS), "");
    // The token endpoint of the embedded server too: browser apps exchange their code there.
    let reply = preflight(&router, "/auth/token", APP).await;
    assert_eq!(reply.header(header::ACCESS_CONTROL_ALLOW_ORIGIN), APP);
    assert!(
        upstream.received_requests().await.unwrap().is_empty(),
        "a preflight went upstream"
    );

    // A refusal carries the origin, so the app can read its OperationOutcome.
    let reply = get(&router, "/fhir/Patient/pat-1", APP).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.header(header::ACCESS_CONTROL_ALLOW_ORIGIN), APP);
    assert_eq!(reply.json["resourceType"], "OperationOutcome");

    // The headers a FHIR client reads are exposed; metadata says CORS is on.
    let reply = get(&router, "/fhir/metadata", APP).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.header(header::ACCESS_CONTROL_ALLOW_ORIGIN), APP);
    let exposed = reply
        .header(header::ACCESS_CONTROL_EXPOSE_HEADERS)
        .to_ascii_lowercase();
    for name in ["location", "etag", "last-modified", "x-request-id"] {
        assert!(exposed.contains(name), "{name} in {exposed}");
    }
    assert_eq!(reply.json["rest"][0]["security"]["cors"], true);
}

#[tokio::test]
async fn another_origin_is_never_named() {
    let (router, _upstream, _dir) = router(Some(r#"["https://app.example"]"#)).await;
    for origin in ["https://evil.example", "https://app.example.evil", "null"] {
        let reply = preflight(&router, "/fhir/Patient/pat-1", origin).await;
        assert_eq!(
            reply.header(header::ACCESS_CONTROL_ALLOW_ORIGIN),
            "",
            "{origin}"
        );
        let reply = get(&router, "/fhir/metadata", origin).await;
        assert_eq!(
            reply.header(header::ACCESS_CONTROL_ALLOW_ORIGIN),
            "",
            "{origin}"
        );
    }
}

#[tokio::test]
async fn any_origin_when_configured_so() {
    let (router, _upstream, _dir) = router(Some(r#"["*"]"#)).await;
    let reply = preflight(&router, "/fhir/Observation", "http://localhost:3000").await;
    assert_eq!(reply.header(header::ACCESS_CONTROL_ALLOW_ORIGIN), "*");
    assert_eq!(reply.header(header::ACCESS_CONTROL_ALLOW_CREDENTIALS), "");
}

#[tokio::test]
async fn off_by_default_a_preflight_is_refused_and_nothing_is_claimed() {
    let (router, _upstream, _dir) = router(None).await;
    let reply = preflight(&router, "/fhir/Patient/pat-1", APP).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
    assert_eq!(reply.header(header::ACCESS_CONTROL_ALLOW_ORIGIN), "");
    let reply = preflight(&router, "/fhir/metadata", APP).await;
    assert_eq!(
        reply.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "{}",
        reply.text
    );
    assert_eq!(reply.json["resourceType"], "OperationOutcome");
    let reply = get(&router, "/fhir/metadata", APP).await;
    assert_eq!(reply.header(header::ACCESS_CONTROL_ALLOW_ORIGIN), "");
    assert_eq!(reply.json["rest"][0]["security"]["cors"], false);
}

#[tokio::test]
async fn an_origin_with_a_path_is_a_startup_error_naming_the_key() {
    let env = vars(&[(
        "FHIRSEAL__SERVER__CORS_ORIGINS",
        r#"["https://app.example/launch"]"#,
    )]);
    let error = Config::load(None, env).unwrap_err();
    assert_eq!(error.key, "server.cors_origins", "{error}");
    assert!(error.problem.contains("not an origin"), "{error}");
}
