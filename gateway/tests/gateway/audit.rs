//! The audit line: one JSON line per request with who, what and the outcome, never a query
//! string, a token or a body; and the request id, taken from the client when acceptable and
//! echoed back.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use fhirseal::app::app;
use fhirseal::audit::{AuditNote, AuditSink, AuditWho, RequestId, audited};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{BASE, ISSUER, Reply, configured, fhir_base, now, practitioner, send, sign};

const CANARY_QUERY: &str = "Canary-Family-Name";
const CANARY_BODY: &str = "Canary-Body-Value";
const CANARY_TOKEN: &str = "canary.token.value";

/// A handler that says it read a resource, as a FHIR handler does.
async fn reader(Extension(id): Extension<RequestId>) -> Response {
    let mut response = (StatusCode::OK, "{}").into_response();
    response.extensions_mut().insert(AuditNote {
        interaction: "read",
        resources: vec!["Patient/p1".into()],
        patients: vec!["Patient/p1".into()],
        opened: 4,
        masked: 1,
        forged: 2,
        sealed: 0,
        ..AuditNote::default()
    });
    // What authenticate adds for a verified caller.
    response.extensions_mut().insert(AuditWho {
        sub: Some("u-1".into()),
        fhir_user: Some("Practitioner/dr-1".into()),
        client_id: Some("app-1".into()),
        iss: ISSUER.into(),
    });
    // The handler sees the same id the client gets back.
    response
        .headers_mut()
        .insert("x-seen-request-id", id.0.parse().unwrap());
    response
}

async fn failing() -> StatusCode {
    StatusCode::BAD_GATEWAY
}

fn tiny() -> (Router, Arc<Mutex<Vec<String>>>) {
    let (sink, lines) = AuditSink::memory();
    let router = Router::new()
        .route("/fhir/Patient/{id}", get(reader))
        .route("/fhir/Patient", post(failing));
    (audited(router, sink), lines)
}

/// The one line written since `before` lines, parsed.
fn only_line(lines: &Arc<Mutex<Vec<String>>>, before: usize) -> (String, Value) {
    let lines = lines.lock().unwrap();
    assert_eq!(lines.len(), before + 1, "one line per request: {lines:?}");
    let line = lines[before].clone();
    assert!(!line.contains('\n'));
    let value = serde_json::from_str(&line).unwrap();
    (line, value)
}

fn echoed(response: &Reply) -> String {
    response.headers["x-request-id"]
        .to_str()
        .unwrap()
        .to_string()
}

fn is_fresh_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[tokio::test]
async fn one_line_per_request_with_who_what_and_outcome() {
    let (app, lines) = tiny();
    let response = send(
        &app,
        Request::get(format!("/fhir/Patient/p1?family={CANARY_QUERY}&_count=5"))
            .header(header::AUTHORIZATION, format!("Bearer {CANARY_TOKEN}"))
            .header("x-request-id", "client-req-7")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(echoed(&response), "client-req-7");
    assert_eq!(response.headers["x-seen-request-id"], "client-req-7");

    let (line, value) = only_line(&lines, 0);
    assert!(!line.contains(CANARY_QUERY), "no query string: {line}");
    assert!(!line.contains('?'), "no query string: {line}");
    assert!(!line.contains(CANARY_TOKEN), "no token: {line}");
    assert_eq!(value["request_id"], "client-req-7");
    assert_eq!(value["method"], "GET");
    assert_eq!(value["path"], "/fhir/Patient/p1");
    assert_eq!(value["status"], 200);
    assert_eq!(value["outcome"], "success");
    assert_eq!(
        value["who"],
        json!({"sub": "u-1", "fhir_user": "Practitioner/dr-1", "client_id": "app-1", "iss": ISSUER})
    );
    assert_eq!(value["interaction"], "read");
    assert_eq!(value["resources"], json!(["Patient/p1"]));
    assert_eq!(value["patients"], json!(["Patient/p1"]));
    assert_eq!(
        (
            &value["opened"],
            &value["masked"],
            &value["forged"],
            &value["sealed"]
        ),
        (&json!(4), &json!(1), &json!(2), &json!(0))
    );
    assert!(value["duration_ms"].as_f64().unwrap() >= 0.0);
    let ts = value["ts"].as_str().unwrap();
    assert_eq!(ts.len(), "2026-11-28T05:10:57.123Z".len(), "{ts}");
    assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
    let year: u64 = ts[..4].parse().unwrap();
    let this_year = 1970
        + SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            / 31_556_952;
    assert!(year.abs_diff(this_year) <= 1, "{ts}");
    let keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "ts",
            "request_id",
            "method",
            "path",
            "status",
            "outcome",
            "who",
            "interaction",
            "resources",
            "patients",
            "opened",
            "masked",
            "forged",
            "sealed",
            "duration_ms"
        ]
    );
}

#[tokio::test]
async fn no_body_goes_in_and_failures_and_unknown_paths_are_audited() {
    let (app, lines) = tiny();
    let response = send(
        &app,
        Request::post("/fhir/Patient")
            .header(header::CONTENT_TYPE, "application/fhir+json")
            .body(Body::from(format!(
                r#"{{"resourceType":"Patient","name":[{{"family":"{CANARY_BODY}"}}]}}"#
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status, StatusCode::BAD_GATEWAY);
    let (line, value) = only_line(&lines, 0);
    assert!(!line.contains(CANARY_BODY), "no body: {line}");
    assert_eq!(value["outcome"], "server-error");
    assert_eq!(value["method"], "POST");
    assert_eq!(value["who"], Value::Null);
    assert_eq!(value["interaction"], Value::Null);
    assert_eq!(value["resources"], json!([]));

    // The fallback (no route) is inside the layer too.
    let response = send(
        &app,
        Request::get("/nowhere?x=1").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(response.status, StatusCode::NOT_FOUND);
    assert!(is_fresh_id(&echoed(&response)));
    let (_, value) = only_line(&lines, 1);
    assert_eq!(value["outcome"], "client-error");
    assert_eq!(value["path"], "/nowhere");
    assert_eq!(value["request_id"], echoed(&response));
}

#[tokio::test]
async fn an_unacceptable_request_id_is_replaced() {
    let (app, lines) = tiny();
    let too_long = "x".repeat(65);
    let cases: Vec<Vec<&str>> = vec![
        vec![],
        vec![""],
        vec![too_long.as_str()],
        vec!["has space"],
        vec!["tab\there"],
        vec!["one", "two"],
        vec!["{\"injected\":true}\n"],
    ];
    for (i, ids) in cases.iter().enumerate() {
        let mut request = Request::get("/fhir/Patient/p1");
        for id in ids {
            // Some are not even valid header values: those cannot be sent at all.
            if let Ok(value) = axum::http::HeaderValue::from_str(id) {
                request = request.header("x-request-id", value);
            }
        }
        let response = send(&app, request.body(Body::empty()).unwrap()).await;
        let id = echoed(&response);
        assert!(is_fresh_id(&id), "case {i} {ids:?}: {id}");
        assert_eq!(response.headers["x-seen-request-id"], id.as_str());
        let (_, value) = only_line(&lines, i);
        assert_eq!(value["request_id"], id);
    }
    // 64 visible ASCII characters are kept, as they are.
    let longest = format!("{}~!", "a".repeat(62));
    let response = send(
        &app,
        Request::get("/fhir/Patient/p1")
            .header("x-request-id", &longest)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(echoed(&response), longest);
    // Fresh ids differ.
    let a = echoed(&send(&app, Request::get("/x").body(Body::empty()).unwrap()).await);
    let b = echoed(&send(&app, Request::get("/x").body(Body::empty()).unwrap()).await);
    assert_ne!(a, b);
}

#[tokio::test]
async fn a_file_sink_appends_one_line_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("logs/audit.jsonl");
    for _ in 0..2 {
        // Reopened: appended to, never truncated.
        let sink = AuditSink::open(Some(&file)).unwrap();
        let app = audited(Router::new().route("/a", get(|| async { "ok" })), sink);
        send(
            &app,
            Request::get("/a?q=secret").body(Body::empty()).unwrap(),
        )
        .await;
    }
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines.iter().all(|l| l["path"] == "/a"));
    assert!(!text.contains("secret"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "owner only: {mode:o}");
    }
    // A file that cannot be opened is an error naming it.
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, "").unwrap();
    let error = AuditSink::open(Some(&blocker.join("audit.jsonl"))).unwrap_err();
    assert!(error.to_string().contains("blocker"), "{error}");
}

// === around the gateway's own router ===

#[tokio::test]
async fn the_gateway_names_a_verified_caller_and_nobody_on_a_401() {
    let upstream = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient/p404"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&upstream)
        .await;
    let setup = configured(
        &fhir_base(&upstream),
        &[("FHIRSEAL__UPSTREAM__MAX_RETRIES", "0")],
    )
    .await;
    let (sink, lines) = AuditSink::memory();
    let mut state = setup.state.clone();
    state.audit = sink;
    let gateway = app(state);

    // A token that does not verify: 401, nobody named, the token nowhere.
    let response = send(
        &gateway,
        Request::get("/fhir/Patient/p1?name=x")
            .header(header::AUTHORIZATION, format!("Bearer {CANARY_TOKEN}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    let (line, value) = only_line(&lines, 0);
    assert!(
        !line.contains(CANARY_TOKEN) && !line.contains("name=x"),
        "{line}"
    );
    assert_eq!(value["outcome"], "denied");
    assert_eq!(value["status"], 401);
    assert_eq!(value["who"], Value::Null);
    assert_eq!(value["path"], "/fhir/Patient/p1");

    // A verified token: the caller is named by authenticate, whatever the handler answers.
    let bearer = sign(&json!({
        "iss": ISSUER, "aud": BASE, "sub": "u-77", "exp": now() + 600, "iat": now(),
        "fhirUser": "Practitioner/dr-77", "client_id": "app-77", "scope": "user/*.rs",
        "practitioner_roles": [{"code": ["doctor"], "organization": "Organization/st-mary"}],
    }));
    let response = send(
        &gateway,
        Request::get("/fhir/Patient/p404")
            .header(header::AUTHORIZATION, format!("Bearer {bearer}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status, StatusCode::NOT_FOUND);
    let (line, value) = only_line(&lines, 1);
    assert!(!line.contains(&bearer), "{line}");
    assert_eq!(
        value["who"],
        json!({"sub": "u-77", "fhir_user": "Practitioner/dr-77", "client_id": "app-77", "iss": ISSUER})
    );
    assert_eq!(value["outcome"], "client-error");

    // Unauthenticated endpoints are audited too, with nobody named.
    let response = send(
        &gateway,
        Request::get("/fhir/.well-known/smart-configuration")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status, StatusCode::OK);
    let (_, value) = only_line(&lines, 2);
    assert_eq!(value["who"], Value::Null);
    assert_eq!(value["outcome"], "success");
}

#[tokio::test]
async fn a_denial_says_why_in_the_audit_line_alone_and_in_a_batch_but_not_to_the_client() {
    let upstream = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient/p1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"resourceType": "Patient", "id": "p1", "gender": "female"})),
        )
        .mount(&upstream)
        .await;
    let setup = configured(&fhir_base(&upstream), &[]).await;
    let (sink, lines) = AuditSink::memory();
    let mut state = setup.state.clone();
    state.audit = sink;
    let gateway = app(state);
    // Roles that give no access rule for Patient: the policy denies the read.
    let janitor = practitioner("Practitioner/hr-1", "janitor", "user/*.rs");
    let fixed = "the compliance policy does not permit this request";

    // Alone. Once, the reason was dropped on the way to the answer.
    let response = send(
        &gateway,
        Request::get("/fhir/Patient/p1")
            .header(header::AUTHORIZATION, format!("Bearer {janitor}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status, StatusCode::FORBIDDEN, "{}", response.text);
    let (_, value) = only_line(&lines, 0);
    assert_eq!(value["status"], 403);
    assert_eq!(value["interaction"], "read");
    let reason = value["reason"].as_str().expect("a reason").to_string();
    assert!(reason.contains("read patient"), "{reason}");
    assert_eq!(response.json["issue"][0]["diagnostics"], fixed);
    assert!(!response.text.contains(&reason), "{}", response.text);

    // Inside a batch: the entry's audit says why, the entry's outcome does not.
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient/p1"}}]});
    let response = send(
        &gateway,
        Request::post("/fhir")
            .header(header::AUTHORIZATION, format!("Bearer {janitor}"))
            .header(header::CONTENT_TYPE, "application/fhir+json")
            .body(Body::from(batch.to_string()))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    let entry = &response.json["entry"][0]["response"];
    assert!(
        entry["status"].as_str().unwrap().starts_with("403"),
        "{}",
        response.text
    );
    assert_eq!(entry["outcome"]["issue"][0]["diagnostics"], fixed);
    assert!(!response.text.contains(&reason), "{}", response.text);
    let (_, value) = only_line(&lines, 1);
    assert_eq!(value["interaction"], "batch");
    let entries = value["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{value}");
    assert_eq!(entries[0]["status"], 403);
    assert_eq!(entries[0]["reason"], reason.as_str(), "{value}");
}
