//! Break-glass end to end, against the real FHIR server (sekmet-fhir), under the shipped HIV and
//! behavioural-health policy, whose `[[break-glass]]` rule lets a physician outside the
//! infectious-disease team read HIV diagnoses for an hour: a permitted physician asserting an
//! emergency opens the diagnosis, the response is labelled `BTG`, a webhook receiver gets the
//! alert, the audit line records it; the same read without the assertion stays masked; a nurse
//! asserting it is refused (403), audited and alerted; a missing, oversized or control-laden
//! reason is refused (400); the grant ends after its time and an administrator renews it; a write
//! under break-glass cannot change what only the emergency opened; and the protected value never
//! reaches the alert, the audit line or the upstream.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use fhirseal::admin::{AdminAccess, AdminTokens, admin_router};
use fhirseal::audit::{AuditSink, audited};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::sekmet::{Gateway, canary, gateway_with, unique};
use crate::support::{BASE, ISSUER, Reply, now, send, sign};

const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
const REASON: &str = "x-break-glass-reason";
const ADMIN_TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const ADMIN_LISTENER: &str = "127.0.0.1:9090";

/// A practitioner's token of the test issuer: `code` at St Mary's, in `specialty` if any, with
/// `extra` claims.
fn token(user: &str, code: &str, specialty: Option<&str>, extra: &Value) -> String {
    let mut role = json!({"code": [code], "organization": "Organization/st-mary"});
    if let Some(specialty) = specialty {
        role["specialty"] = json!([specialty]);
    }
    let mut claims = json!({
        "iss": ISSUER, "aud": BASE, "sub": user, "exp": now() + 600, "iat": now(),
        "fhirUser": user, "scope": "user/*.cruds", "practitioner_roles": [role],
    });
    if let (Value::Object(claims), Value::Object(extra)) = (&mut claims, extra) {
        claims.extend(extra.clone());
    }
    sign(&claims)
}

/// The callers of one test.
struct Callers {
    /// An infectious-disease physician: reads the diagnosis as such.
    id_doctor: String,
    /// An emergency physician, outside the team.
    er_doctor: String,
    /// The same physician's token with purpose of use `BTG`.
    er_doctor_btg: String,
    /// A nurse.
    nurse: String,
    /// The emergency physician's identity.
    er_identity: String,
}

impl Callers {
    fn new() -> Self {
        let er = format!("Practitioner/{}", unique("bg-er"));
        Self {
            id_doctor: token(
                &format!("Practitioner/{}", unique("bg-id")),
                "doctor",
                Some("394807007"),
                &json!({}),
            ),
            er_doctor: token(&er, "doctor", None, &json!({})),
            er_doctor_btg: token(
                &er,
                "doctor",
                None,
                &json!({"purpose_of_use": [format!("{ACT_REASON}|BTG")]}),
            ),
            nurse: token(
                &format!("Practitioner/{}", unique("bg-nurse")),
                "nurse",
                None,
                &json!({}),
            ),
            er_identity: er,
        }
    }
}

/// The gateway under the HIV policy, alerting to `webhook`, its audit lines kept.
async fn gateway(webhook: &str) -> (Gateway, Arc<Mutex<Vec<String>>>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("hiv.toml");
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fhir-profiles/policies/hiv-behavioural-health.toml"),
        &policy,
    )
    .unwrap();
    let files = format!("[\"{}\"]", policy.display());
    let gw = gateway_with(&[
        ("FHIRSEAL__POLICY__FILES", &files),
        ("FHIRSEAL__BREAK_GLASS__WEBHOOK_URL", webhook),
        ("FHIRSEAL__BREAK_GLASS__WEBHOOK_TIMEOUT_MS", "1000"),
    ])
    .await;
    let (gw, lines) = gw.with_audit();
    (gw, lines, dir)
}

/// A webhook receiver answering 200 to `POST /alerts`.
async fn receiver() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/alerts"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

/// The alerts `server` received, waiting up to 5 s for `count` of them.
async fn alerts(server: &MockServer, count: usize) -> Vec<Value> {
    for _ in 0..100 {
        let received = server.received_requests().await.unwrap_or_default();
        if received.len() >= count {
            return received
                .iter()
                .map(|r| serde_json::from_slice(&r.body).unwrap())
                .collect();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("fewer than {count} alerts arrived");
}

/// `method uri` with `token`, the reason header if any, and a JSON body if any.
async fn call(
    gw: &Gateway,
    method: Method,
    uri: &str,
    token: &str,
    reason: Option<&str>,
    body: Option<&Value>,
) -> Reply {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    if let Some(reason) = reason {
        request = request.header(REASON, reason);
    }
    let body = match body {
        Some(body) => {
            request = request.header(header::CONTENT_TYPE, "application/fhir+json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    send(&gw.app, request.body(body).unwrap()).await
}

/// A Patient and an HIV diagnosis of hers, written by the infectious-disease physician: the
/// Condition's id and the diagnosis's canary.
async fn diagnosis(gw: &Gateway, callers: &Callers) -> (String, String, String) {
    let patient = unique("bg-pat");
    let reply = call(
        gw,
        Method::PUT,
        &format!("/fhir/Patient/{patient}"),
        &callers.id_doctor,
        None,
        Some(&json!({"resourceType": "Patient", "id": patient, "gender": "female"})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let (id, secret) = (unique("bg-cond"), canary("hiv"));
    let condition = json!({"resourceType": "Condition", "id": id,
        "subject": {"reference": format!("Patient/{patient}")},
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "code": {"text": secret}});
    let reply = call(
        gw,
        Method::PUT,
        &format!("/fhir/Condition/{id}"),
        &callers.id_doctor,
        None,
        Some(&condition),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    (patient, id, secret)
}

fn labelled_btg(resource: &Value) -> bool {
    resource["meta"]["security"].as_array().is_some_and(|s| {
        s.iter()
            .any(|c| c["system"] == ACT_REASON && c["code"] == "BTG")
    })
}

fn lines_of(lines: &Mutex<Vec<String>>) -> Vec<Value> {
    lines
        .lock()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn a_permitted_physician_opens_is_labelled_alerted_and_audited_and_anyone_else_is_refused() {
    let hook = receiver().await;
    let (gw, lines, _dir) = gateway(&format!("{}/alerts", hook.uri())).await;
    let callers = Callers::new();
    let (patient, id, secret) = diagnosis(&gw, &callers).await;
    let uri = format!("/fhir/Condition/{id}");

    // Without the assertion: masked for the emergency physician, and nothing is alerted.
    let plain = call(&gw, Method::GET, &uri, &callers.er_doctor, None, None).await;
    assert_eq!(plain.status, StatusCode::OK, "{}", plain.text);
    assert!(!plain.text.contains(&secret));
    assert!(!labelled_btg(&plain.json));
    assert!(
        lines_of(&lines)
            .last()
            .unwrap()
            .get("break_glass")
            .is_none()
    );

    // With the header's reason: opened, labelled, audited, alerted.
    let reason = "unconscious patient in the emergency department";
    let opened = call(
        &gw,
        Method::GET,
        &uri,
        &callers.er_doctor,
        Some(reason),
        None,
    )
    .await;
    assert_eq!(opened.status, StatusCode::OK, "{}", opened.text);
    assert_eq!(
        opened.json["code"]["text"],
        secret.as_str(),
        "{}",
        opened.text
    );
    assert!(labelled_btg(&opened.json), "{}", opened.text);
    let line = lines_of(&lines).pop().unwrap();
    let audited = &line["break_glass"];
    assert_eq!(audited["outcome"], "granted", "{line}");
    assert_eq!(audited["reason"], reason);
    assert_eq!(audited["source"], "header");
    assert_eq!(audited["rules"], json!(["emergency physicians"]));
    assert_eq!(audited["opened"][0]["resource"], format!("Condition/{id}"));
    assert!(
        audited["opened"][0]["elements"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "Condition.code"),
        "{audited}"
    );
    let alert = alerts(&hook, 1).await.remove(0);
    assert_eq!(alert["outcome"], "granted", "{alert}");
    assert_eq!(alert["reason"], reason);
    assert_eq!(alert["who"]["fhir_user"], callers.er_identity.as_str());
    assert_eq!(alert["request_id"], line["request_id"]);
    assert_eq!(alert["opened"][0]["resource"], format!("Condition/{id}"));

    // The token's purpose of use BTG, with the header's reason: a search opens too.
    let search = format!("/fhir/Condition?subject=Patient/{patient}");
    let found = call(
        &gw,
        Method::GET,
        &search,
        &callers.er_doctor_btg,
        Some("needlestick injury"),
        None,
    )
    .await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.text);
    let entry = &found.json["entry"][0]["resource"];
    assert_eq!(entry["code"]["text"], secret.as_str(), "{}", found.text);
    assert!(labelled_btg(entry));
    assert_eq!(
        lines_of(&lines).pop().unwrap()["break_glass"]["source"],
        "token"
    );

    // A BTG token without a reason, an empty, oversized or control-laden reason: 400.
    let missing = call(&gw, Method::GET, &uri, &callers.er_doctor_btg, None, None).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST, "{}", missing.text);
    assert!(!missing.text.contains(&secret));
    assert_eq!(
        lines_of(&lines).pop().unwrap()["break_glass"]["outcome"],
        "refused"
    );
    for bad in [" ".to_string(), "x".repeat(501), "two\tlines".to_string()] {
        let reply = call(&gw, Method::GET, &uri, &callers.er_doctor, Some(&bad), None).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{bad:?}: {}",
            reply.text
        );
        assert!(!reply.text.contains(&secret));
    }

    // A nurse asserting it: 403, audited with the policy's words, alerted as refused.
    let nurse = call(
        &gw,
        Method::GET,
        &uri,
        &callers.nurse,
        Some("emergency"),
        None,
    )
    .await;
    assert_eq!(nurse.status, StatusCode::FORBIDDEN, "{}", nurse.text);
    assert!(!nurse.text.contains(&secret));
    let line = lines_of(&lines).pop().unwrap();
    assert_eq!(line["outcome"], "denied");
    assert_eq!(line["break_glass"]["outcome"], "refused");
    assert!(
        line["reason"]
            .as_str()
            .unwrap()
            .contains("`emergency physicians` needs role:physician"),
        "{line}"
    );
    let sent = alerts(&hook, 7).await;
    assert!(sent.iter().any(|a| a["outcome"] == "refused"
        && a["who"]["fhir_user"].as_str().unwrap().contains("bg-nurse")));

    // A write under break-glass is decided with the caller's own key: the diagnosis only the
    // emergency opens cannot be changed.
    let mut changed = opened.json.clone();
    changed["code"] = json!({"text": "something else"});
    changed["meta"] = json!({});
    let write = call(
        &gw,
        Method::PUT,
        &uri,
        &callers.er_doctor,
        Some(reason),
        Some(&changed),
    )
    .await;
    assert_eq!(write.status, StatusCode::FORBIDDEN, "{}", write.text);
    assert_eq!(
        lines_of(&lines).pop().unwrap()["break_glass"]["applied"],
        false
    );
    let still = call(&gw, Method::GET, &uri, &callers.id_doctor, None, None).await;
    assert_eq!(still.json["code"]["text"], secret.as_str());

    // Canary: the protected value is in no alert, no audit line, and not upstream.
    let every_alert = alerts(&hook, 8).await;
    for alert in &every_alert {
        assert!(!alert.to_string().contains(&secret), "{alert}");
    }
    for line in lines.lock().unwrap().iter() {
        assert!(!line.contains(&secret), "{line}");
    }
    assert_eq!(gw.canary_scan(&[&secret]), Vec::<String>::new());
    let stored = gw.upstream_get(&format!("Condition/{id}")).await;
    assert!(!stored.text.contains(&secret));
    assert!(
        !labelled_btg(&stored.json),
        "the label is the response's, never stored"
    );
}

#[tokio::test]
async fn a_grant_ends_after_its_time_and_an_administrator_renews_it() {
    let hook = receiver().await;
    let (gw, lines, _dir) = gateway(&format!("{}/alerts", hook.uri())).await;
    let time = Arc::new(AtomicI64::new(now()));
    let clock = Arc::clone(&time);
    gw.state
        .break_glass
        .grants
        .set_clock(Arc::new(move || clock.load(Ordering::SeqCst)));
    let callers = Callers::new();
    let (_, id, secret) = diagnosis(&gw, &callers).await;
    let uri = format!("/fhir/Condition/{id}");
    let read = |reason| {
        call(
            &gw,
            Method::GET,
            &uri,
            &callers.er_doctor,
            Some(reason),
            None,
        )
    };

    let first = read("cardiac arrest").await;
    assert_eq!(
        first.json["code"]["text"],
        secret.as_str(),
        "{}",
        first.text
    );
    time.fetch_add(3599, Ordering::SeqCst);
    let late = read("cardiac arrest").await;
    assert_eq!(late.json["code"]["text"], secret.as_str(), "{}", late.text);
    // An hour after the first assertion, the grant has ended: refused, whatever the reason.
    time.fetch_add(1, Ordering::SeqCst);
    let ended = read("still resuscitating").await;
    assert_eq!(ended.status, StatusCode::FORBIDDEN, "{}", ended.text);
    assert!(!ended.text.contains(&secret));
    let line = lines_of(&lines).pop().unwrap();
    assert!(
        line["reason"].as_str().unwrap().contains("ended at"),
        "{line}"
    );

    // The admin API lists the events and the grant, and renews it.
    let tokens = AdminTokens::parse(&format!("carol {ADMIN_TOKEN}\n")).unwrap();
    let (sink, _admin_lines) = AuditSink::memory();
    let admin = audited(
        admin_router(
            gw.state.clone(),
            AdminAccess::new(ADMIN_LISTENER.parse().unwrap(), tokens),
        ),
        sink,
    );
    let admin_call = |method: &str, uri: &str, body: Option<Value>| {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, ADMIN_LISTENER)
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"));
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        send(&admin, request.body(body).unwrap())
    };
    let listed = admin_call("GET", "/break-glass", None).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    let events = listed.json["events"].as_array().unwrap();
    assert_eq!(
        events.iter().filter(|e| e["outcome"] == "granted").count(),
        2
    );
    assert_eq!(
        events.iter().filter(|e| e["outcome"] == "refused").count(),
        1
    );
    assert_eq!(
        listed.json["grants"][0]["identity"],
        callers.er_identity.as_str()
    );
    assert_eq!(listed.json["grants"][0]["in_force"], false);
    assert!(!listed.text.contains(&secret));
    let renewed = admin_call(
        "POST",
        "/break-glass/renew",
        Some(json!({"identity": callers.er_identity})),
    )
    .await;
    assert_eq!(renewed.status, StatusCode::OK, "{}", renewed.text);
    assert_eq!(renewed.json["renewed"], true);
    let again = read("second emergency").await;
    assert_eq!(
        again.json["code"]["text"],
        secret.as_str(),
        "{}",
        again.text
    );
    // Every alert reached the webhook: two grants, one refusal, the new grant; and each is
    // counted.
    assert_eq!(alerts(&hook, 4).await.len(), 4);
    let metrics = gw.state.metrics.render().unwrap();
    assert!(
        metrics.contains("fhirseal_break_glass_total{outcome=\"granted\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("fhirseal_break_glass_total{outcome=\"refused\"} 1"),
        "{metrics}"
    );
}
