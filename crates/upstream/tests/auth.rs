//! The gateway's credential towards the upstream: static bearer and OAuth 2.0 client
//! credentials (caching, single-flight refresh, expiry, 401 handling, token endpoint failures).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fhirseal_upstream::{
    AuthError, RawUpstreamConfig, TokenRefusal, Upstream, UpstreamConfig, UpstreamError,
    UpstreamRequest,
};
use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use serde_json::json;
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SECRET: &str = "s3cr3t-client-value";

fn upstream(base: &str, auth: serde_json::Value) -> Upstream {
    let raw: RawUpstreamConfig =
        serde_json::from_value(json!({ "base_url": base, "backoff_base_ms": 1, "auth": auth }))
            .unwrap();
    Upstream::new(UpstreamConfig::try_from(raw).unwrap()).unwrap()
}

fn client_credentials(server: &MockServer) -> serde_json::Value {
    json!({
        "kind": "client_credentials",
        "token_url": format!("{}/token", server.uri()),
        "client_id": "fhirseal-gateway",
        "client_secret": SECRET,
        "scopes": ["system/*.cruds", "system/Patient.r"],
    })
}

fn token(access_token: &str, expires_in: u64) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": expires_in,
    }))
}

fn get() -> UpstreamRequest {
    UpstreamRequest::new(Method::GET, "Patient/1").with_header(
        reqwest::header::AUTHORIZATION,
        HeaderValue::from_static("Bearer end-user-token"),
    )
}

#[tokio::test]
async fn static_bearer_replaces_the_clients_authorization() {
    let server = MockServer::start().await;
    Mock::given(header("authorization", "Bearer static-upstream-token"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let upstream = upstream(
        &server.uri(),
        json!({ "kind": "bearer", "token": "static-upstream-token" }),
    );
    assert_eq!(upstream.send(get()).await.unwrap().status(), StatusCode::OK);
    let seen = &server.received_requests().await.unwrap()[0];
    assert_eq!(seen.headers.get_all("authorization").iter().count(), 1);
}

#[tokio::test]
async fn static_bearer_401_is_returned_without_retry() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&server)
        .await;
    let upstream = upstream(
        &server.uri(),
        json!({ "kind": "bearer", "token": "revoked" }),
    );
    assert_eq!(
        upstream.send(get()).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn no_auth_sends_no_authorization() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    upstream(&server.uri(), json!({ "kind": "none" }))
        .send(get())
        .await
        .unwrap();
    assert!(
        !server.received_requests().await.unwrap()[0]
            .headers
            .contains_key("authorization")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_is_fetched_once_for_many_concurrent_requests() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(header(
            "authorization",
            "Basic ZmhpcnNlYWwtZ2F0ZXdheTpzM2NyM3QtY2xpZW50LXZhbHVl",
        ))
        .and(body_string_contains("grant_type=client_credentials"))
        .and(body_string_contains(
            "scope=system%2F*.cruds+system%2FPatient.r",
        ))
        .respond_with(token("tok-1", 3600).set_delay(Duration::from_millis(200)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(header("authorization", "Bearer tok-1"))
        .respond_with(ResponseTemplate::new(200))
        .expect(50)
        .mount(&server)
        .await;
    let upstream = upstream(&server.uri(), client_credentials(&server));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let upstream = upstream.clone();
            tokio::spawn(async move { upstream.send(get()).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn post_auth_style_sends_the_secret_in_the_body() {
    let server = MockServer::start().await;
    Mock::given(path("/token"))
        .and(body_string_contains("client_id=fhirseal-gateway"))
        .and(body_string_contains(format!("client_secret={SECRET}")))
        .respond_with(token("tok-post", 3600))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(header("authorization", "Bearer tok-post"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let mut auth = client_credentials(&server);
    auth["auth_style"] = json!("post");
    upstream(&server.uri(), auth).send(get()).await.unwrap();
    let token_request = &server.received_requests().await.unwrap()[0];
    assert!(!token_request.headers.contains_key("authorization"));
}

#[tokio::test]
async fn token_is_refreshed_after_expiry() {
    let server = MockServer::start().await;
    Mock::given(path("/token"))
        .respond_with(token("tok-1", 1))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/token"))
        .respond_with(token("tok-2", 3600))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(header("authorization", "Bearer tok-1"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(header("authorization", "Bearer tok-2"))
        .respond_with(ResponseTemplate::new(200))
        .expect(2)
        .mount(&server)
        .await;
    let upstream = upstream(&server.uri(), client_credentials(&server));
    upstream.send(get()).await.unwrap();
    // A 1 s token is refreshed after half its lifetime.
    tokio::time::sleep(Duration::from_millis(600)).await;
    upstream.send(get()).await.unwrap();
    upstream.send(get()).await.unwrap();
}

#[tokio::test]
async fn a_401_triggers_one_refresh_and_one_retry_even_for_post() {
    let server = MockServer::start().await;
    Mock::given(path("/token"))
        .respond_with(token("tok-stale", 3600))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(path("/token"))
        .respond_with(token("tok-fresh", 3600))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/Patient"))
        .and(header("authorization", "Bearer tok-stale"))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/Patient"))
        .and(header("authorization", "Bearer tok-fresh"))
        .and(body_string_contains("Patient"))
        .respond_with(ResponseTemplate::new(201))
        .expect(1)
        .mount(&server)
        .await;
    let upstream = upstream(&server.uri(), client_credentials(&server));
    let request =
        UpstreamRequest::new(Method::POST, "Patient").with_body(r#"{"resourceType":"Patient"}"#);
    assert_eq!(
        upstream.send(request).await.unwrap().status(),
        StatusCode::CREATED
    );
    let tokens = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/token")
        .count();
    assert_eq!(tokens, 2);
}

#[tokio::test]
async fn a_second_401_is_returned_after_one_refresh() {
    let server = MockServer::start().await;
    Mock::given(path("/token"))
        .respond_with(token("tok", 3600))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(path("/Patient/1"))
        .respond_with(ResponseTemplate::new(401))
        .expect(2)
        .mount(&server)
        .await;
    let upstream = upstream(&server.uri(), client_credentials(&server));
    assert_eq!(
        upstream.send(get()).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn token_endpoint_failures_are_typed_and_nothing_reaches_the_upstream() {
    let cases = [
        (
            ResponseTemplate::new(401).set_body_json(json!({ "error": "invalid_client" })),
            AuthError::Refused(TokenRefusal::InvalidClient),
        ),
        (
            ResponseTemplate::new(400).set_body_json(json!({ "error": "invalid_scope" })),
            AuthError::Refused(TokenRefusal::InvalidScope),
        ),
        (
            ResponseTemplate::new(500).set_body_string("<html>oops</html>"),
            AuthError::MalformedResponse,
        ),
        (
            ResponseTemplate::new(200).set_body_json(
                json!({ "access_token": "x".repeat(70_000), "token_type": "Bearer" }),
            ),
            AuthError::MalformedResponse,
        ),
        (
            ResponseTemplate::new(200)
                .set_body_json(json!({ "access_token": "mac-token", "token_type": "mac" })),
            AuthError::NotBearer,
        ),
        (
            ResponseTemplate::new(200).set_body_json(
                json!({ "access_token": "a b\r\nX-Injected: 1", "token_type": "Bearer" }),
            ),
            AuthError::MalformedToken,
        ),
    ];
    for (response, expected) in cases {
        let server = MockServer::start().await;
        Mock::given(path("/token"))
            .respond_with(response)
            .mount(&server)
            .await;
        let upstream = upstream(&server.uri(), client_credentials(&server));
        let error = upstream.send(get()).await.unwrap_err();
        assert!(
            matches!(error, UpstreamError::Auth(e) if e == expected),
            "{expected:?}: {error:?}"
        );
        assert!(!error.to_string().contains(SECRET));
        let paths: Vec<_> = server
            .received_requests()
            .await
            .unwrap()
            .iter()
            .map(|r| r.url.path().to_owned())
            .collect();
        assert_eq!(paths, ["/token"]);
    }
}

#[tokio::test]
async fn unreachable_token_endpoint() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let auth = json!({
        "kind": "client_credentials",
        "token_url": format!("{closed}/token"),
        "client_id": "gw",
        "client_secret": SECRET,
    });
    let error = upstream("http://127.0.0.1:1", auth)
        .send(get())
        .await
        .unwrap_err();
    assert!(
        matches!(error, UpstreamError::Auth(AuthError::Unreachable)),
        "{error:?}"
    );
}

#[tokio::test]
async fn debug_output_holds_no_secret() {
    let server = MockServer::start().await;
    Mock::given(path("/token"))
        .respond_with(token("fetched-access-token", 3600))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;

    let raw: RawUpstreamConfig = serde_json::from_value(json!({
        "base_url": server.uri(),
        "auth": client_credentials(&server),
    }))
    .unwrap();
    let raw_debug = format!("{raw:?}");
    let config = UpstreamConfig::try_from(raw).unwrap();
    let config_debug = format!("{config:?}");
    let upstream = Upstream::new(config).unwrap();
    upstream.send(get()).await.unwrap();
    let upstream_debug = format!("{upstream:?}");
    for debug in [&raw_debug, &config_debug, &upstream_debug] {
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(!debug.contains("fetched-access-token"), "{debug}");
    }
    assert!(config_debug.contains("fhirseal-gateway"), "{config_debug}");

    let raw: RawUpstreamConfig = serde_json::from_value(json!({
        "base_url": server.uri(),
        "auth": { "kind": "bearer", "token": "static-secret-token" },
    }))
    .unwrap();
    let raw_debug = format!("{raw:?}");
    let config = UpstreamConfig::try_from(raw).unwrap();
    let config_debug = format!("{config:?}");
    let upstream_debug = format!("{:?}", Upstream::new(config).unwrap());
    for debug in [&raw_debug, &config_debug, &upstream_debug] {
        assert!(!debug.contains("static-secret-token"), "{debug}");
    }
}
