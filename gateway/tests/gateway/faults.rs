//! Upstream faults on the write and search paths, with wiremock (and a raw socket for a reset)
//! as the upstream: each is an `OperationOutcome` (502 or 504), nothing in clear reaches the
//! upstream, the outcome or the audit trail, and no write the upstream acknowledged is reported
//! as failed.
use std::ops::RangeInclusive;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{Mocked, Reply, Who, mocked, searchset, send, token};

const NAME: &str = "Canary-Faults-Name-3X";
const SSN: &str = "999-CANARY-FAULT";

/// A physician who is also the registration desk: she may read, so set, every element of the
/// Patient these tests write (a caller may set only what it may read, its social security
/// number included).
fn doctor() -> String {
    token(&Who::FullAccess)
}

fn patient() -> Value {
    json!({"resourceType": "Patient", "active": true,
        "identifier": [{"system": "http://hl7.org/fhir/sid/us-ssn", "value": SSN}],
        "name": [{"family": NAME, "given": ["Ada"]}],
        "gender": "female", "birthDate": "1971-02-03"})
}

/// The gateway in front of `upstream_url` (a wiremock server unless given), with short timeouts.
async fn harness_with(upstream_url: Option<String>) -> Mocked {
    mocked(
        upstream_url,
        &[
            ("FHIRSEAL__UPSTREAM__REQUEST_TIMEOUT_MS", "400"),
            ("FHIRSEAL__UPSTREAM__MAX_RETRIES", "1"),
            ("FHIRSEAL__UPSTREAM__MAX_RESPONSE_BYTES", "65536"),
        ],
    )
    .await
}

async fn harness() -> Mocked {
    harness_with(None).await
}

/// Headers are stored and found: `GET Basic?_id=…` answers nothing, `PUT Basic/…` succeeds.
async fn header_store_works(upstream: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/fhir/Basic"))
        .respond_with(ResponseTemplate::new(200).set_body_json(searchset(vec![])))
        .mount(upstream)
        .await;
    Mock::given(method("PUT"))
        .and(path_regex("^/fhir/Basic/fhirseal-header-[0-9a-f]{32}$"))
        .respond_with(ResponseTemplate::new(201))
        .mount(upstream)
        .await;
}

fn create(body: &Value) -> Request<Body> {
    Request::post("/fhir/Patient")
        .header(header::AUTHORIZATION, format!("Bearer {}", doctor()))
        .header(header::CONTENT_TYPE, "application/fhir+json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// Every body the upstream received holds no canary.
async fn upstream_saw_no_canary(upstream: &MockServer) {
    for request in upstream.received_requests().await.unwrap_or_default() {
        let body = String::from_utf8_lossy(&request.body);
        assert!(
            !body.contains(NAME) && !body.contains(SSN),
            "{} {} carried a canary",
            request.method,
            request.url
        );
    }
}

fn assert_outcome(reply: &Reply, want: StatusCode) {
    let Reply {
        status, json, text, ..
    } = reply;
    assert_eq!(*status, want, "{text}");
    assert_eq!(json["resourceType"], "OperationOutcome", "{text}");
    assert!(!text.contains(NAME) && !text.contains(SSN), "{text}");
}

#[tokio::test]
async fn a_create_is_sealed_and_acknowledged_with_its_location() {
    let h = harness().await;
    header_store_works(&h.upstream).await;
    Mock::given(method("PUT"))
        .and(path_regex("^/fhir/Patient/[0-9a-f-]{36}$"))
        .respond_with(|request: &wiremock::Request| {
            let mut stored: Value = serde_json::from_slice(&request.body).unwrap();
            stored["meta"]["versionId"] = json!("1");
            ResponseTemplate::new(201).set_body_json(stored)
        })
        .mount(&h.upstream)
        .await;
    let reply = send(&h.app, create(&patient())).await;
    let (status, body, text) = (reply.status, &reply.json, &reply.text);
    assert_eq!(status, StatusCode::CREATED, "{text}");
    // The doctor sees what it wrote, opened; the upstream saw none of it.
    assert_eq!(body["name"][0]["family"], NAME, "{text}");
    upstream_saw_no_canary(&h.upstream).await;
    let puts: Vec<_> = h
        .upstream
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path().starts_with("/fhir/Patient/"))
        .collect();
    assert_eq!(puts.len(), 1);
    let id = puts[0].url.path().trim_start_matches("/fhir/Patient/");
    assert_eq!(body["id"], id);
    // Headers are stored before the resource that needs them.
    let order: Vec<String> = h
        .upstream
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "PUT")
        .map(|r| r.url.path().to_string())
        .collect();
    assert!(order.first().unwrap().contains("/Basic/"), "{order:?}");
}

#[tokio::test]
async fn an_acknowledged_create_with_a_malformed_answer_is_still_a_201() {
    let h = harness().await;
    header_store_works(&h.upstream).await;
    Mock::given(method("PUT"))
        .and(path_regex("^/fhir/Patient/"))
        .respond_with(ResponseTemplate::new(201).set_body_raw("{not json", "application/fhir+json"))
        .mount(&h.upstream)
        .await;
    let reply = send(&h.app, create(&patient())).await;
    let (status, text) = (reply.status, &reply.text);
    // The upstream stored it: the client must not be told otherwise (it would create again).
    assert_eq!(status, StatusCode::CREATED, "{text}");
    upstream_saw_no_canary(&h.upstream).await;
}

#[tokio::test]
async fn a_create_the_upstream_refuses_with_5xx_is_a_502_with_nothing_echoed() {
    let h = harness().await;
    header_store_works(&h.upstream).await;
    Mock::given(method("PUT"))
        .and(path_regex("^/fhir/Patient/"))
        .respond_with(
            ResponseTemplate::new(500)
                .set_body_raw(format!("Traceback: {NAME} {SSN}"), "text/plain"),
        )
        .mount(&h.upstream)
        .await;
    let reply = send(&h.app, create(&patient())).await;
    assert_outcome(&reply, StatusCode::BAD_GATEWAY);
    upstream_saw_no_canary(&h.upstream).await;
}

#[tokio::test]
async fn a_create_that_times_out_is_a_504() {
    let h = harness().await;
    header_store_works(&h.upstream).await;
    Mock::given(method("PUT"))
        .and(path_regex("^/fhir/Patient/"))
        .respond_with(ResponseTemplate::new(201).set_delay(Duration::from_secs(3)))
        .mount(&h.upstream)
        .await;
    let reply = send(&h.app, create(&patient())).await;
    assert_outcome(&reply, StatusCode::GATEWAY_TIMEOUT);
    upstream_saw_no_canary(&h.upstream).await;
}

#[tokio::test]
async fn a_header_that_cannot_be_stored_stops_the_write_before_the_resource() {
    let h = harness().await;
    Mock::given(method("GET"))
        .and(path("/fhir/Basic"))
        .respond_with(ResponseTemplate::new(200).set_body_json(searchset(vec![])))
        .mount(&h.upstream)
        .await;
    Mock::given(method("PUT"))
        .and(path_regex("^/fhir/Basic/"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&h.upstream)
        .await;
    Mock::given(method("PUT"))
        .and(path_regex("^/fhir/Patient/"))
        .respond_with(ResponseTemplate::new(201))
        .expect(0)
        .mount(&h.upstream)
        .await;
    let reply = send(&h.app, create(&patient())).await;
    // The upstream is unavailable: a passing condition, not a broken gateway.
    assert_outcome(&reply, StatusCode::SERVICE_UNAVAILABLE);
}

/// A write too large to store once sealed (the read cap here is 64 KiB, so writes stop at 56 KiB)
/// is refused before anything reaches the upstream: not the resource, and not the shared headers
/// it would name either (they were once stored first and left behind).
#[tokio::test]
async fn a_write_too_large_once_sealed_sends_nothing_upstream_not_even_its_headers() {
    let h = harness().await;
    header_store_works(&h.upstream).await;
    let mut huge = patient();
    huge["identifier"] = (0..700)
        .map(|i| json!({"system": "http://hl7.org/fhir/sid/us-ssn", "value": format!("9{i:08}")}))
        .collect();
    assert!(
        huge.to_string().len() < 56 * 1024,
        "under the limit as sent"
    );
    let reply = send(&h.app, create(&huge)).await;
    assert_outcome(&reply, StatusCode::PAYLOAD_TOO_LARGE);
    let sent = h.upstream.received_requests().await.unwrap_or_default();
    let writes: Vec<String> = sent
        .iter()
        .filter(|r| r.method.as_str() != "GET")
        .map(|r| format!("{} {}", r.method, r.url.path()))
        .collect();
    assert!(writes.is_empty(), "written upstream: {writes:?}");
}

#[tokio::test]
async fn a_connection_reset_on_create_is_a_502() {
    // An upstream that reads the request and closes the connection without answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut buffer = [0u8; 4096];
            let _ = socket.read(&mut buffer).await;
            drop(socket);
        }
    });
    let h = harness_with(Some(format!("http://{address}/fhir"))).await;
    let reply = send(&h.app, create(&patient())).await;
    assert_outcome(&reply, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn a_huge_or_malformed_search_answer_is_a_502() {
    let h = harness().await;
    Mock::given(method("GET"))
        .and(path("/fhir/Observation"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            format!(
                "{{\"resourceType\":\"Bundle\",\"pad\":\"{}\"}}",
                "x".repeat(1 << 20)
            ),
            "application/fhir+json",
        ))
        .mount(&h.upstream)
        .await;
    Mock::given(method("GET"))
        .and(path("/fhir/Condition"))
        .respond_with(ResponseTemplate::new(200).set_body_raw("[1,2", "application/fhir+json"))
        .mount(&h.upstream)
        .await;
    for path in [
        "/fhir/Observation?status=final",
        "/fhir/Condition?clinical-status=active",
    ] {
        let request = Request::get(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", doctor()))
            .body(Body::empty())
            .unwrap();
        let reply = send(&h.app, request).await;
        assert_outcome(&reply, StatusCode::BAD_GATEWAY);
    }
}

#[tokio::test]
async fn a_search_on_a_sealed_element_never_sends_its_value() {
    let h = harness().await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"resourceType": "Bundle", "type": "searchset", "total": 0})),
        )
        .mount(&h.upstream)
        .await;
    let ask = |query: String| {
        Request::get(format!("/fhir/Patient?{query}"))
            .header(header::AUTHORIZATION, format!("Bearer {}", doctor()))
            .body(Body::empty())
            .unwrap()
    };
    // Blind-index searches: the upstream is asked for tokens (`_tag`), never the value.
    for query in [
        "family=Canary-Faults-Name-3X&birthdate=1971-02-03",
        "family=Canary-Faults-Name-3X",
        "name:exact=Canary-Faults-Name-3X",
    ] {
        let reply = send(&h.app, ask(query.into())).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(reply.json["total"], 0);
    }
    // What the index cannot answer is refused naming the parameter, and never sent.
    for (query, name) in [
        ("birthdate=ne1971-02-03", "birthdate"),
        ("family:contains=Canary-Faults-Name-3X", "family"),
        ("name=C", "name"),
    ] {
        let reply = send(&h.app, ask(query.into())).await;
        assert_outcome(&reply, StatusCode::BAD_REQUEST);
        assert!(reply.text.contains(name), "{}", reply.text);
    }
    let sent = h.upstream.received_requests().await.unwrap_or_default();
    let searches: Vec<_> = sent
        .iter()
        .filter(|r| r.url.path() == "/fhir/Patient")
        .collect();
    assert_eq!(searches.len(), 3);
    for request in searches {
        let url = request.url.to_string();
        assert!(url.contains("_tag="), "{url}");
        for value in ["Canary-Faults-Name-3X", "canary-faults", "1971-02-03"] {
            assert!(!url.to_lowercase().contains(&value.to_lowercase()), "{url}");
        }
    }
}

#[tokio::test]
async fn bodies_that_are_not_fhir_json_or_too_large_are_refused() {
    let h = harness().await;
    let request = Request::post("/fhir/Patient")
        .header(header::AUTHORIZATION, format!("Bearer {}", doctor()))
        .header(header::CONTENT_TYPE, "application/fhir+xml")
        .body(Body::from("<Patient/>"))
        .unwrap();
    let reply = send(&h.app, request).await;
    assert_outcome(&reply, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let big = json!({"resourceType": "Patient", "text": {"status": "generated",
        "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{}</div>", "x".repeat(17 << 20))}});
    let reply = send(&h.app, create(&big)).await;
    assert_outcome(&reply, StatusCode::PAYLOAD_TOO_LARGE);

    let request = Request::post("/fhir/Patient")
        .header(header::AUTHORIZATION, format!("Bearer {}", doctor()))
        .header(header::CONTENT_TYPE, "application/fhir+json")
        .body(Body::from("{\"resourceType\": \"Patient\""))
        .unwrap();
    let reply = send(&h.app, request).await;
    assert_outcome(&reply, StatusCode::BAD_REQUEST);

    let reply = send(
        &h.app,
        create(&json!({"resourceType": "Observation", "status": "final"})),
    )
    .await;
    assert_outcome(&reply, StatusCode::BAD_REQUEST);
}

/// The upstream's own words in a refusal: they must never reach the client.
const UPSTREAM_WORDS: &str = "Upstream-Diagnostics-Words-9Q";

fn refusal(status: u16) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({"resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "invalid", "diagnostics": UPSTREAM_WORDS}]}))
}

#[tokio::test]
async fn an_upstream_refusal_of_a_write_keeps_its_status_in_fixed_words() {
    for (upstream, want) in [
        (400, StatusCode::BAD_REQUEST),
        (422, StatusCode::UNPROCESSABLE_ENTITY),
        (409, StatusCode::CONFLICT),
        (405, StatusCode::NOT_IMPLEMENTED),
        (501, StatusCode::NOT_IMPLEMENTED),
        (503, StatusCode::SERVICE_UNAVAILABLE),
        (429, StatusCode::SERVICE_UNAVAILABLE),
    ] {
        let h = harness().await;
        header_store_works(&h.upstream).await;
        Mock::given(method("PUT"))
            .and(path_regex("^/fhir/Patient/"))
            .respond_with(refusal(upstream))
            .mount(&h.upstream)
            .await;
        let reply = send(&h.app, create(&patient())).await;
        assert_outcome(&reply, want);
        assert!(
            !reply.text.contains(UPSTREAM_WORDS),
            "{upstream}: {}",
            reply.text
        );
        upstream_saw_no_canary(&h.upstream).await;
    }
}

#[tokio::test]
async fn an_operation_the_upstream_does_not_have_is_a_404_or_501_not_a_502() {
    for (upstream, want) in [
        (404, StatusCode::NOT_FOUND),
        (405, StatusCode::NOT_IMPLEMENTED),
        (501, StatusCode::NOT_IMPLEMENTED),
        (400, StatusCode::BAD_REQUEST),
    ] {
        let h = harness().await;
        Mock::given(method("GET"))
            .and(path("/fhir/Patient/p1"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "resourceType": "Patient", "id": "p1", "gender": "female"})))
            .mount(&h.upstream)
            .await;
        Mock::given(method("GET"))
            .and(path("/fhir/Patient/p1/$everything"))
            .respond_with(refusal(upstream))
            .mount(&h.upstream)
            .await;
        let request = Request::get("/fhir/Patient/p1/$everything")
            .header(header::AUTHORIZATION, format!("Bearer {}", doctor()))
            .body(Body::empty())
            .unwrap();
        let reply = send(&h.app, request).await;
        assert_outcome(&reply, want);
        assert!(
            !reply.text.contains(UPSTREAM_WORDS),
            "{upstream}: {}",
            reply.text
        );
    }
}

#[tokio::test]
async fn metadata_the_upstream_refuses_keeps_404_and_501_in_fixed_words() {
    // Once, every refusal of `metadata` was a 502: a server without it is not a broken one.
    for (upstream, want) in [
        (404, StatusCode::NOT_FOUND),
        (405, StatusCode::NOT_IMPLEMENTED),
        (500, StatusCode::BAD_GATEWAY),
    ] {
        let h = harness().await;
        Mock::given(method("GET"))
            .and(path("/fhir/metadata"))
            .respond_with(refusal(upstream))
            .mount(&h.upstream)
            .await;
        let reply = send(
            &h.app,
            Request::get("/fhir/metadata").body(Body::empty()).unwrap(),
        )
        .await;
        assert_outcome(&reply, want);
        assert!(
            !reply.text.contains(UPSTREAM_WORDS),
            "{upstream}: {}",
            reply.text
        );
    }
}

/// A transaction of `count` Organization creates, from the doctor.
fn organizations(count: usize) -> Request<Body> {
    let entries: Vec<Value> = (0..count)
        .map(|i| {
            json!({"fullUrl": format!("urn:uuid:00000000-0000-4000-8000-00000000000{i}"),
                "resource": {"resourceType": "Organization", "name": format!("Ward {i}")},
                "request": {"method": "POST", "url": "Organization"}})
        })
        .collect();
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    Request::post("/fhir")
        .header(header::AUTHORIZATION, format!("Bearer {}", doctor()))
        .header(header::CONTENT_TYPE, "application/fhir+json")
        .body(Body::from(bundle.to_string()))
        .unwrap()
}

#[tokio::test]
async fn a_transaction_the_upstream_refuses_with_404_names_its_one_write_and_only_it() {
    // Once, it said "Bundle/- is not known" however many writes it held.
    for count in [1, 2] {
        let h = harness().await;
        header_store_works(&h.upstream).await;
        Mock::given(method("POST"))
            .and(path_regex("^/fhir/?$"))
            .respond_with(refusal(404))
            .expect(1)
            .mount(&h.upstream)
            .await;
        let reply = send(&h.app, organizations(count)).await;
        assert_outcome(&reply, StatusCode::NOT_FOUND);
        let text = &reply.text;
        assert!(!text.contains(UPSTREAM_WORDS), "{count}: {text}");
        assert!(!text.contains("Bundle/-"), "{count}: {text}");
        let issue = &reply.json["issue"][0];
        if count == 1 {
            // The id the gateway gave the create, as it sent it upstream.
            let sent = h
                .upstream
                .received_requests()
                .await
                .unwrap()
                .into_iter()
                .find(|r| r.method.as_str() == "POST")
                .unwrap();
            let sent: Value = serde_json::from_slice(&sent.body).unwrap();
            let url = sent["entry"][0]["request"]["url"].as_str().unwrap();
            assert!(url.starts_with("Organization/"), "{url}");
            assert_eq!(
                issue["diagnostics"],
                format!("{url} is not known"),
                "{text}"
            );
            assert_eq!(issue["expression"], json!(["Bundle.entry[0]"]), "{text}");
        } else {
            assert!(!text.contains("Organization/"), "{text}");
            assert!(issue.get("expression").is_none(), "{text}");
        }
    }
}

// --- An upstream unavailable (503) or throttling (429): 503 and its Retry-After (issue 17) ---

/// A junk `Retry-After`, as an upstream (or something in front of it) might send.
const JUNK_RETRY: &str = "soon<script>Retry-Junk-7Q</script>";

/// A case of an upstream 503: what, its `Retry-After` if any, the range of the one passed on.
type RetryCase<'a> = (&'a str, Option<&'a str>, Option<RangeInclusive<u64>>);

/// `GET path` from the doctor.
fn get(path: &str) -> Request<Body> {
    Request::get(path)
        .header(header::AUTHORIZATION, format!("Bearer {}", doctor()))
        .body(Body::empty())
        .unwrap()
}

/// `status` with the upstream's own words and, when given, `Retry-After: retry`.
fn unavailable(status: u16, retry: Option<&str>) -> ResponseTemplate {
    let answer = refusal(status);
    match retry {
        Some(value) => answer.insert_header("retry-after", value),
        None => answer,
    }
}

/// The answer is a 503 OperationOutcome with `code` and, as `retry_after` says, a
/// `Retry-After` of seconds in that range, or none; the upstream's words and header are not in it.
fn assert_unavailable(
    what: &str,
    reply: &Reply,
    code: &str,
    retry_after: Option<RangeInclusive<u64>>,
) {
    assert_outcome(reply, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        reply.json["issue"][0]["code"], code,
        "{what}: {}",
        reply.text
    );
    assert!(
        !reply.text.contains(UPSTREAM_WORDS),
        "{what}: {}",
        reply.text
    );
    assert!(!reply.text.contains("Retry-Junk"), "{what}: {}", reply.text);
    let header = reply.headers.get(header::RETRY_AFTER);
    match retry_after {
        None => assert!(header.is_none(), "{what}: {header:?}"),
        Some(range) => {
            let text = header.unwrap_or_else(|| panic!("{what}: no Retry-After"));
            let seconds: u64 = text.to_str().unwrap().parse().unwrap();
            assert!(
                range.contains(&seconds),
                "{what}: {seconds} not in {range:?}"
            );
        }
    }
}

#[tokio::test]
async fn an_upstream_503_is_a_503_with_its_retry_after_when_valid_and_bounded() {
    // (The date arithmetic itself is fhirseal-upstream's `retry_after`, tested there.)
    let cases: [RetryCase<'_>; 9] = [
        ("no Retry-After", None, None),
        // Past the client's own wait cap (5 s), so it answers at once.
        ("seconds", Some("120"), Some(120..=120)),
        ("a day, bounded", Some("86400"), Some(3600..=3600)),
        (
            "a date far ahead, bounded",
            Some("Fri, 01 Jan 2100 00:00:00 GMT"),
            Some(3600..=3600),
        ),
        (
            "a date gone by",
            Some("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(0..=0),
        ),
        ("junk", Some(JUNK_RETRY), None),
        ("negative", Some("-30"), None),
        ("a fraction", Some("1.5"), None),
        (
            "a date that is none",
            Some("Fri, 32 Oct 2025 25:61:00 GMT"),
            None,
        ),
    ];
    for (what, retry, expected) in cases {
        let h = harness().await;
        Mock::given(method("GET"))
            .and(path("/fhir/Patient/p1"))
            .respond_with(unavailable(503, retry))
            .mount(&h.upstream)
            .await;
        let reply = send(&h.app, get("/fhir/Patient/p1")).await;
        assert_unavailable(what, &reply, "transient", expected);
    }
}

#[tokio::test]
async fn an_upstream_429_is_a_503_throttled_on_reads_searches_writes_and_transactions() {
    let h = harness().await;
    header_store_works(&h.upstream).await;
    for (verb, route) in [
        ("GET", "^/fhir/Patient/p1$"),
        ("GET", "^/fhir/Observation$"),
        ("GET", "^/fhir/metadata$"),
        ("PUT", "^/fhir/Patient/[0-9a-f-]{36}$"),
        ("POST", "^/fhir/?$"),
    ] {
        Mock::given(method(verb))
            .and(path_regex(route))
            .respond_with(unavailable(429, Some("7")))
            .mount(&h.upstream)
            .await;
    }
    let requests = [
        ("read", get("/fhir/Patient/p1")),
        ("search", get("/fhir/Observation?patient=p1")),
        ("metadata", get("/fhir/metadata")),
        ("create", create(&patient())),
        ("transaction of one", organizations(1)),
        ("transaction of two", organizations(2)),
    ];
    for (what, request) in requests {
        let reply = send(&h.app, request).await;
        assert_unavailable(what, &reply, "throttled", Some(7..=7));
        assert!(
            reply.json["issue"][0]["diagnostics"]
                .as_str()
                .unwrap()
                .contains("throttling"),
            "{what}: {}",
            reply.text
        );
        // The upstream's state, no entry's doing: no entry is named.
        assert!(
            reply.json["issue"][0].get("expression").is_none(),
            "{what}: {}",
            reply.text
        );
    }
    // Throttled, the gateway did not hammer: a 429 is not retried.
    let reads = h
        .upstream
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == "/fhir/Patient/p1")
        .count();
    assert_eq!(reads, 1);
    upstream_saw_no_canary(&h.upstream).await;
}
