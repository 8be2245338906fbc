//! Transport behaviour against a faulty upstream: retries, timeouts, resets, the body cap, path
//! confinement and header hygiene. wiremock plays the upstream; raw TCP listeners play the
//! faults wiremock cannot (resets, endless bodies).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fhirseal_upstream::{RequestError, Upstream, UpstreamConfig, UpstreamError, UpstreamRequest};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// An upstream client for `base`, with fast backoff and any extra settings.
fn upstream(base: &str, extra: serde_json::Value) -> Upstream {
    let mut raw = json!({ "base_url": base, "backoff_base_ms": 1, "backoff_max_ms": 5 });
    raw.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let config = UpstreamConfig::try_from(
        serde_json::from_value::<fhirseal_upstream::RawUpstreamConfig>(raw).unwrap(),
    );
    Upstream::new(config.unwrap()).unwrap()
}

fn get(path: &str) -> UpstreamRequest {
    UpstreamRequest::new(Method::GET, path)
}

fn post(path: &str) -> UpstreamRequest {
    UpstreamRequest::new(Method::POST, path).with_body(r#"{"resourceType":"Patient"}"#)
}

// --- timeouts ---

#[tokio::test]
async fn get_timeout_is_retried_then_reported() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(2)))
        .expect(3)
        .mount(&server)
        .await;
    let upstream = upstream(&server.uri(), json!({ "request_timeout_ms": 150 }));

    let error = upstream.send(get("Patient/1")).await.unwrap_err();
    assert!(
        matches!(
            error,
            UpstreamError::Timeout {
                idempotent: true,
                attempts: 3
            }
        ),
        "{error:?}"
    );
    assert!(!error.outcome_unknown());
}

#[tokio::test]
async fn post_timeout_is_sent_once_with_outcome_unknown() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_delay(Duration::from_secs(2)))
        .expect(1)
        .mount(&server)
        .await;
    let upstream = upstream(&server.uri(), json!({ "request_timeout_ms": 150 }));

    let error = upstream.send(post("Patient")).await.unwrap_err();
    assert!(
        matches!(
            error,
            UpstreamError::Timeout {
                idempotent: false,
                attempts: 1
            }
        ),
        "{error:?}"
    );
    assert!(error.outcome_unknown());
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

// --- 5xx ---

#[tokio::test]
async fn get_503_then_200_is_retried_and_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(1)
        .mount(&server)
        .await;
    let response = upstream(&server.uri(), json!({}))
        .send(get("metadata"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body().as_ref(), b"ok");
}

#[tokio::test]
async fn get_502_504_exhausting_retries_returns_the_last_response() {
    for status in [502, 504] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(status))
            .expect(2)
            .mount(&server)
            .await;
        let response = upstream(&server.uri(), json!({ "max_retries": 1 }))
            .send(get("Patient"))
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status);
    }
}

#[tokio::test]
async fn post_503_is_a_response_and_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .expect(1)
        .mount(&server)
        .await;
    let response = upstream(&server.uri(), json!({}))
        .send(post("Patient"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn patch_and_500_are_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(503))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500))
        .expect(1)
        .mount(&server)
        .await;
    let upstream = upstream(&server.uri(), json!({}));
    let patch = UpstreamRequest::new(Method::PATCH, "Patient/1").with_body("[]");
    assert_eq!(
        upstream.send(patch).await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        upstream.send(get("Patient/1")).await.unwrap().status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

#[tokio::test]
async fn retry_after_within_the_cap_is_honoured() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let started = Instant::now();
    let response = upstream(&server.uri(), json!({}))
        .send(get("Patient"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn retry_after_beyond_the_cap_returns_the_response_at_once() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503).insert_header("retry-after", "120"))
        .expect(1)
        .mount(&server)
        .await;
    let started = Instant::now();
    let response = upstream(&server.uri(), json!({}))
        .send(get("Patient"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "120");
    assert!(started.elapsed() < Duration::from_secs(2));
}

// --- connection failures ---

/// A listener that reads each request head, then closes the connection without answering
/// (with a TCP reset if `reset`). Returns its base URL and the number of connections seen.
async fn closing_listener(reset: bool) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/fhir", listener.local_addr().unwrap());
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            read_head(&mut stream).await;
            if reset {
                stream.set_zero_linger().unwrap();
            }
            drop(stream);
        }
    });
    (base, seen)
}

async fn read_head(stream: &mut TcpStream) {
    let mut head = Vec::new();
    let mut buffer = [0_u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await.unwrap();
        if read == 0 {
            return;
        }
        head.extend_from_slice(&buffer[..read]);
    }
}

#[tokio::test]
async fn get_reset_before_any_byte_is_retried_then_reported() {
    for reset in [false, true] {
        let (base, seen) = closing_listener(reset).await;
        let error = upstream(&base, json!({}))
            .send(get("Patient/1"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                UpstreamError::Reset {
                    idempotent: true,
                    attempts: 3
                }
            ),
            "{error:?}"
        );
        assert_eq!(seen.load(Ordering::SeqCst), 3);
    }
}

#[tokio::test]
async fn post_reset_is_reported_once_with_outcome_unknown() {
    for reset in [false, true] {
        let (base, seen) = closing_listener(reset).await;
        let error = upstream(&base, json!({}))
            .send(post("Patient"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                UpstreamError::Reset {
                    idempotent: false,
                    attempts: 1
                }
            ),
            "{error:?}"
        );
        assert!(error.outcome_unknown());
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test]
async fn connect_refused_is_retried_for_get_and_known_not_applied_for_post() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let upstream = upstream(&base, json!({}));
    let error = upstream.send(get("Patient")).await.unwrap_err();
    assert!(
        matches!(error, UpstreamError::Connect { attempts: 3 }),
        "{error:?}"
    );
    let error = upstream.send(post("Patient")).await.unwrap_err();
    assert!(
        matches!(error, UpstreamError::Connect { attempts: 1 }),
        "{error:?}"
    );
    assert!(!error.outcome_unknown());
}

// --- body cap ---

#[tokio::test]
async fn body_at_the_cap_is_read_and_one_byte_more_is_refused() {
    let server = MockServer::start().await;
    Mock::given(path("/exact"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![b'a'; 1024]))
        .mount(&server)
        .await;
    Mock::given(path("/over"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![b'a'; 1025]))
        .mount(&server)
        .await;
    let upstream = upstream(&server.uri(), json!({ "max_response_bytes": 1024 }));
    assert_eq!(
        upstream.send(get("exact")).await.unwrap().body().len(),
        1024
    );
    let error = upstream.send(get("over")).await.unwrap_err();
    assert!(
        matches!(error, UpstreamError::BodyTooLarge { limit: 1024 }),
        "{error:?}"
    );
}

#[tokio::test]
async fn huge_declared_body_is_refused_without_reading_it() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![0_u8; 100 << 20]))
        .mount(&server)
        .await;
    let started = Instant::now();
    let error = upstream(&server.uri(), json!({}))
        .send(get("Binary/big"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, UpstreamError::BodyTooLarge { limit } if limit == 32 << 20),
        "{error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// A 100 MiB chunked response without `Content-Length`: the client must stop at the 32 MiB cap
/// and drop the connection, so that the server's writes fail long before 100 MiB.
#[tokio::test]
async fn huge_streamed_body_is_cut_at_the_cap() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let written = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&written);
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_head(&mut stream).await;
        let head = b"HTTP/1.1 200 OK\r\ncontent-type: application/fhir+json\r\ntransfer-encoding: chunked\r\n\r\n";
        stream.write_all(head).await.unwrap();
        let chunk = [b'x'; 64 * 1024];
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        for _ in 0..1600 {
            if stream.write_all(&framed).await.is_err() {
                return;
            }
            counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        }
    });
    let started = Instant::now();
    let error = upstream(&base, json!({}))
        .send(get("Binary/stream"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, UpstreamError::BodyTooLarge { limit } if limit == 32 << 20),
        "{error:?}"
    );
    server.await.unwrap();
    let total = written.load(Ordering::SeqCst);
    assert!(
        total < 48 << 20,
        "the server wrote {total} bytes before the client hung up"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

// --- paths ---

#[tokio::test]
async fn paths_stay_under_the_base() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let upstream = upstream(&format!("{}/fhir/", server.uri()), json!({}));
    assert_eq!(upstream.base(), format!("{}/fhir", server.uri()));

    upstream.send(get("/Patient/1")).await.unwrap();
    upstream
        .send(get("Observation?code=http://loinc.org|1234-5&_count=2"))
        .await
        .unwrap();
    upstream.send(get("")).await.unwrap();
    let odd_query = "Patient?a={x}|^`\"<>'&b=%zz&c=\\[]";
    upstream.send(get(odd_query)).await.unwrap();
    let seen = server.received_requests().await.unwrap();
    assert_eq!(seen[0].url.path(), "/fhir/Patient/1");
    assert_eq!(seen[1].url.path(), "/fhir/Observation");
    assert_eq!(
        seen[1].url.query(),
        Some("code=http://loinc.org|1234-5&_count=2")
    );
    assert_eq!(seen[2].url.path(), "/fhir");
    assert_eq!(seen[3].url.path(), "/fhir/Patient");

    let refused = [
        ("http://evil.example/Patient", RequestError::AbsoluteUrl),
        ("//evil.example/Patient", RequestError::AbsoluteUrl),
        ("../admin", RequestError::DotSegment),
        ("Patient/%2e%2e/%2e%2e/admin", RequestError::DotSegment),
        ("Patient/..%2fadmin", RequestError::ForbiddenCharacter),
        ("Patient//1", RequestError::EmptySegment),
        ("Patient/1#x", RequestError::ForbiddenCharacter),
    ];
    for (path, expected) in refused {
        let error = upstream.send(get(path)).await.unwrap_err();
        assert!(
            matches!(error, UpstreamError::InvalidRequest(e) if e == expected),
            "{path}: {error:?}"
        );
    }
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        4,
        "a refused path reached the upstream"
    );
}

// --- headers ---

#[tokio::test]
async fn hop_by_hop_and_client_credentials_are_not_forwarded() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/Patient/1"))
        .and(query_param("_format", "json"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("etag", "W/\"2\"")
                .insert_header("location", "http://up/Patient/1/_history/2")
                .insert_header("set-cookie", "upstream=1")
                .insert_header("x-hop", "secret")
                .insert_header("connection", "x-hop"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("accept", "application/fhir+json"),
        ("content-type", "application/fhir+json"),
        ("if-match", "W/\"1\""),
        ("prefer", "return=representation"),
        ("x-request-id", "req-42"),
        ("authorization", "Bearer client-token"),
        ("proxy-authorization", "Basic Zm9vOmJhcg=="),
        ("cookie", "session=gateway"),
        ("connection", "x-private, keep-alive"),
        ("x-private", "hop"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
        ("upgrade", "h2c"),
        ("proxy-connection", "keep-alive"),
        ("accept-encoding", "gzip"),
    ] {
        headers.append(name, HeaderValue::from_static(value));
    }
    let request = UpstreamRequest::new(Method::PUT, "Patient/1?_format=json")
        .with_headers(headers)
        .with_body("{}");
    let response = upstream(&server.uri(), json!({}))
        .send(request)
        .await
        .unwrap();

    let seen = &server.received_requests().await.unwrap()[0];
    for forwarded in [
        "accept",
        "content-type",
        "if-match",
        "prefer",
        "x-request-id",
    ] {
        assert!(
            seen.headers.contains_key(forwarded),
            "{forwarded} was dropped"
        );
    }
    for dropped in [
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-private",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-connection",
        "accept-encoding",
    ] {
        assert!(
            !seen.headers.contains_key(dropped),
            "{dropped} was forwarded"
        );
    }
    assert_eq!(seen.headers["x-request-id"], "req-42");

    assert_eq!(response.headers()["etag"], "W/\"2\"");
    assert!(response.headers().contains_key("location"));
    for dropped in ["set-cookie", "x-hop", "connection", "content-length"] {
        assert!(
            !response.headers().contains_key(dropped),
            "{dropped} came back"
        );
    }
}

#[tokio::test]
async fn redirects_are_returned_not_followed() {
    let server = MockServer::start().await;
    Mock::given(path("/Patient/1"))
        .respond_with(
            ResponseTemplate::new(302).insert_header("location", "http://127.0.0.1:1/elsewhere"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let response = upstream(&server.uri(), json!({}))
        .send(get("Patient/1"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
}

#[test]
fn send_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let upstream = upstream("http://127.0.0.1:1", json!({}));
    let future = upstream.send(get("Patient"));
    assert_send(&future);
}
