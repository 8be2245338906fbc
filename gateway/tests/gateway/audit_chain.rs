//! The tamper-evident audit trail (issue 19): the gateway chains one record per request before
//! the response leaves, `fhirseal audit verify` passes on it and names the record after an
//! edit, `fhirseal audit export` writes FHIR AuditEvents with the request's fields, and a record
//! that cannot be chained withholds its response (503, fail closed).

use std::path::Path;
use std::process::{Command, Output};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use fhirseal::app::app;
use fhirseal::audit::AuditSink;
use fhirseal::audit::event::REQUEST_ID_SYSTEM;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{BASE, ISSUER, configured, failed, fhir_base, now, send, sign, succeeded};

fn fhirseal(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fhirseal"))
        .arg("audit")
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("FHIRSEAL_AUTHORITY_KEK")
        .output()
        .unwrap()
}

#[tokio::test]
async fn every_request_is_chained_verified_and_exported_as_audit_events() {
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
    let chain = setup
        .state
        .audit
        .chain()
        .expect("audit_chain is on by default")
        .clone();
    let (lines_sink, lines) = AuditSink::memory();
    let mut state = setup.state.clone();
    state.audit = lines_sink.with_chain(chain);
    let gateway = app(state);
    let config = setup.file();

    let bearer = sign(&json!({
        "iss": ISSUER, "aud": BASE, "sub": "u-77", "exp": now() + 600, "iat": now(),
        "fhirUser": "Practitioner/dr-77", "client_id": "app-77", "scope": "user/*.rs",
        "practitioner_roles": [{"code": ["doctor"], "organization": "Organization/st-mary"}],
    }));
    let read = send(
        &gateway,
        Request::get("/fhir/Patient/p404")
            .header(header::AUTHORIZATION, format!("Bearer {bearer}"))
            .header("x-request-id", "req-read-1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(read.status, StatusCode::NOT_FOUND);
    let anonymous = send(
        &gateway,
        Request::get("/fhir/Patient/p1?name=Canary")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let lines = lines.lock().unwrap().clone();
    assert_eq!(lines.len(), 2);

    // Each response left after its record was committed: both are on the chain, as written.
    let out = succeeded(&"verify", fhirseal(&config, &["verify"]));
    assert!(out.starts_with("audit chain intact: 2 records"), "{out}");
    let public_key = succeeded(&"public-key", fhirseal(&config, &["public-key"]));
    let public_key = public_key.trim();
    assert_eq!(public_key.len(), 64, "{public_key}");
    let verified = succeeded(
        &"verify --public-key",
        fhirseal(&config, &["verify", "--public-key", public_key, "--json"]),
    );
    let verified: Value = serde_json::from_str(&verified).unwrap();
    assert_eq!(verified["records"], 2);
    assert_eq!(
        verified["checkpoints"], 1,
        "the first record is checkpointed"
    );

    // The tail it prints pins the chain: verified against it, and a rewritten one fails.
    let pin = out.rsplit("--expect ").next().unwrap().trim().to_string();
    assert!(pin.starts_with("2:"), "{out}");
    succeeded(
        &"verify --expect",
        fhirseal(&config, &["verify", "--expect", &pin]),
    );
    let other = format!("2:{}", "0".repeat(64));
    let (code, error) = failed(
        &"verify --expect",
        fhirseal(&config, &["verify", "--expect", &other]),
    );
    assert_eq!(code, 1);
    assert!(
        error.contains("record 2: its hash is not the one expected"),
        "{error}"
    );
    let (_, error) = failed(
        &"verify --expect",
        fhirseal(&config, &["verify", "--expect", "2:xyz"]),
    );
    assert!(error.contains("SEQ:HASH"), "{error}");

    // Export: one AuditEvent per record, with the line's fields.
    let export = setup.dir.path().join("audit.ndjson");
    let export_arg = export.to_str().unwrap();
    succeeded(
        &"export",
        fhirseal(&config, &["export", "--out", export_arg]),
    );
    let events: Vec<Value> = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2);
    crate::support::write_audit_events("auditevent", &events);
    let read_event = &events[0];
    assert_eq!(read_event["resourceType"], "AuditEvent");
    assert_eq!(read_event["type"]["code"], "rest");
    assert_eq!(read_event["subtype"][0]["code"], "read");
    assert_eq!(read_event["action"], "R");
    assert_eq!(read_event["outcome"], "4");
    assert!(read_event["recorded"].as_str().unwrap().ends_with('Z'));
    assert_eq!(read_event["agent"][0]["requestor"], true);
    assert_eq!(
        read_event["agent"][0]["who"]["reference"],
        "Practitioner/dr-77"
    );
    assert_eq!(
        read_event["agent"][0]["who"]["identifier"],
        json!({"system": ISSUER, "value": "u-77"})
    );
    assert_eq!(
        read_event["agent"][1]["who"]["identifier"]["value"],
        "app-77"
    );
    assert_eq!(
        read_event["source"]["observer"]["identifier"]["value"],
        BASE
    );
    assert_eq!(read_event["entity"][0]["what"]["reference"], "Patient/p404");
    assert_eq!(
        read_event["entity"][1]["what"]["identifier"],
        json!({"system": REQUEST_ID_SYSTEM, "value": "req-read-1"})
    );
    let anonymous_event = &events[1];
    assert_eq!(anonymous_event["outcome"], "4");
    assert_eq!(
        anonymous_event["agent"][0]["who"]["display"],
        "unauthenticated"
    );
    let text = std::fs::read_to_string(&export).unwrap();
    assert!(
        !text.contains("Canary") && !text.contains(&bearer),
        "{text}"
    );
    for event in &events {
        assert_r4_audit_event(event);
    }

    // An operator edits a record: verify fails, naming it.
    let database = setup
        .state
        .config
        .authority_database
        .trim_start_matches("sqlite:")
        .to_string();
    let db = rusqlite::Connection::open(&database).unwrap();
    db.execute(
        "UPDATE audit_chain SET record = replace(record, 'u-77', 'u-78') WHERE seq = 1",
        [],
    )
    .unwrap();
    let (code, error) = failed(&"verify", fhirseal(&config, &["verify"]));
    assert_eq!(code, 1);
    assert!(error.contains("record 1: edited"), "{error}");

    // The chain cannot be written: the response is withheld, never sent unaudited.
    db.execute_batch("DROP TABLE audit_chain").unwrap();
    let withheld = send(
        &gateway,
        Request::get("/fhir/Patient/p404")
            .header(header::AUTHORIZATION, format!("Bearer {bearer}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(withheld.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(withheld.headers.contains_key("x-request-id"));
}

/// The R4 `AuditEvent`'s required elements and their shapes: `type` a Coding, `recorded` an
/// instant, `agent` (1..*) each with `requestor`, `source.observer` a Reference; `outcome` of the
/// R4 codes; `entity.what` a Reference.
pub(crate) fn assert_r4_audit_event(event: &Value) {
    assert!(event["type"]["system"].is_string() && event["type"]["code"].is_string());
    assert!(event["recorded"].as_str().unwrap().len() >= 20);
    assert!(["0", "4", "8", "12"].contains(&event["outcome"].as_str().unwrap()));
    assert!(["C", "R", "U", "D", "E"].contains(&event["action"].as_str().unwrap()));
    let agents = event["agent"].as_array().unwrap();
    assert!(!agents.is_empty());
    assert!(
        agents
            .iter()
            .all(|a| a["requestor"].is_boolean() && a["who"].is_object())
    );
    assert!(event["source"]["observer"].is_object());
    for entity in event["entity"].as_array().unwrap() {
        assert!(entity["what"].is_object());
    }
    let allowed = [
        "resourceType",
        "id",
        "type",
        "subtype",
        "action",
        "recorded",
        "outcome",
        "outcomeDesc",
        "agent",
        "source",
        "entity",
    ];
    for key in event.as_object().unwrap().keys() {
        assert!(allowed.contains(&key.as_str()), "unexpected {key}");
    }
}

/// With `server.audit_commit = "fast"` the gateway starts (the setting is applied and read back
/// on the writer's connection) and chains every request the same way.
#[tokio::test]
async fn fast_commits_chain_the_same() {
    let upstream = MockServer::start().await;
    let setup = configured(
        &fhir_base(&upstream),
        &[
            ("FHIRSEAL__UPSTREAM__MAX_RETRIES", "0"),
            ("FHIRSEAL__SERVER__AUDIT_COMMIT", "fast"),
        ],
    )
    .await;
    assert!(setup.state.audit.chain().is_some());
    let gateway = app(setup.state.clone());
    for _ in 0..3 {
        let anonymous = send(
            &gateway,
            Request::get("/fhir/Patient/p1")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    }
    let out = succeeded(&"verify", fhirseal(&setup.file(), &["verify"]));
    assert!(out.starts_with("audit chain intact: 3 records"), "{out}");
}
