//! The official FHIR R4 examples (npm `hl7.fhir.r4.examples` 4.0.1, `FHIRSEAL_R4_EXAMPLES`) of
//! every type the embedded hospital policy protects, loaded through the gateway into a real FHIR
//! server (sekmet-fhir, strict validation, started by `scripts/test`) as ONE transaction of `PUT`
//! entries, then read back one by one through the gateway by a caller every protected element
//! opens for: each must equal its original, apart from the server's `meta` (`versionId`,
//! `lastUpdated`, the `MASKED` label) and its one known normalisation, decimals read back as
//! binary floats (`1.50` → `1.5`: numbers are compared as numbers). The stored form is checked
//! too: the server holds no plaintext of a Patient's name or birth date, nor of an Observation's
//! value. Then each type is searched by its ids, as a caller who opens everything and as one who
//! opens less: every entry must be exactly what that caller's read of it answers, in the
//! server's order.
//!
//! Ids get a fresh prefix per run, so runs sharing a server do not collide; references between
//! examples are left as they are (the server does not check them, and the policy's decisions
//! here do not depend on them).

use std::path::PathBuf;
use std::time::Instant;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::sekmet::{gateway, unique, without_server_meta};
use crate::support::{BASE, Who};

/// The types the policy protects (and lets the full-access caller write).
const TYPES: [&str; 6] = [
    "Patient",
    "Observation",
    "Condition",
    "Encounter",
    "MedicationRequest",
    "Practitioner",
];

fn examples_dir() -> PathBuf {
    let dir = std::env::var_os("FHIRSEAL_R4_EXAMPLES").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/r4-examples/package"),
        PathBuf::from,
    );
    assert!(
        dir.join("Patient-example.json").exists(),
        "the R4 examples are not at {}: run scripts/fetch-r4-examples (scripts/test does)",
        dir.display()
    );
    dir
}

/// The examples of [`TYPES`], each with its id moved under `prefix`.
fn examples(prefix: &str) -> Vec<Value> {
    let dir = examples_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| {
            name.ends_with(".json")
                && TYPES
                    .iter()
                    .any(|t| name.strip_prefix(t).is_some_and(|r| r.starts_with('-')))
        })
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let mut resource: Value =
            serde_json::from_slice(&std::fs::read(dir.join(&name)).unwrap()).unwrap();
        let resource_type = resource["resourceType"].as_str().unwrap_or_default();
        let Some(id) = resource["id"].as_str() else {
            continue;
        };
        if !TYPES.contains(&resource_type) {
            continue;
        }
        let id = format!("{prefix}{id}");
        assert!(
            id.len() <= 64,
            "{name}: {id} is longer than a FHIR id may be"
        );
        resource["id"] = json!(id);
        out.push(resource);
    }
    out
}

/// Where `actual` differs from `expected` (numbers compared as numbers), as a path; `None` when
/// they are equal.
fn difference(actual: &Value, expected: &Value, at: &str) -> Option<String> {
    match (actual, expected) {
        (Value::Number(a), Value::Number(e)) => {
            (a.as_f64() != e.as_f64()).then(|| format!("{at}: {a} vs {e}"))
        }
        (Value::Object(a), Value::Object(e)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(e.keys()).collect();
            keys.into_iter().find_map(|k| match (a.get(k), e.get(k)) {
                (Some(x), Some(y)) => difference(x, y, &format!("{at}.{k}")),
                (x, y) => Some(format!("{at}.{k}: {x:?} vs {y:?}")),
            })
        }
        (Value::Array(a), Value::Array(e)) if a.len() == e.len() => a
            .iter()
            .zip(e)
            .enumerate()
            .find_map(|(i, (x, y))| difference(x, y, &format!("{at}[{i}]"))),
        _ => (actual != expected).then(|| format!("{at}: {actual} vs {expected}")),
    }
}

/// What the server must not hold in plaintext: a Patient's name and birth date, an
/// Observation's value.
fn plaintext_in_storage(stored: &Value) -> Option<String> {
    let object = stored.as_object()?;
    match object.get("resourceType")?.as_str()? {
        "Patient" => {
            if object.contains_key("birthDate") {
                return Some("birthDate".into());
            }
            let names = object.get("name").and_then(Value::as_array)?;
            names
                .iter()
                .find(|n| {
                    ["family", "given", "text"]
                        .iter()
                        .any(|k| n.get(k).is_some())
                })
                .map(|n| format!("name {n}"))
        }
        "Observation" => object.keys().find(|k| k.starts_with("value")).cloned(),
        _ => None,
    }
}

#[tokio::test]
async fn official_examples_load_as_one_transaction_and_read_back_equal() {
    let gw = gateway().await;
    let prefix = format!("{}-", unique("r4"));
    let originals = examples(&prefix);
    for resource_type in TYPES {
        assert!(
            originals.iter().any(|r| r["resourceType"] == resource_type),
            "no {resource_type} example"
        );
    }
    let entries: Vec<Value> = originals
        .iter()
        .map(|r| {
            let url = format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            );
            json!({"fullUrl": format!("{BASE}/{url}"), "resource": r,
                   "request": {"method": "PUT", "url": url}})
        })
        .collect();
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});

    let started = Instant::now();
    let reply = gw.bundle(&bundle, &Who::FullAccess).await;
    let load = started.elapsed();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["type"], "transaction-response");
    let answers = reply.json["entry"].as_array().unwrap();
    assert_eq!(answers.len(), originals.len());
    for (answer, original) in answers.iter().zip(&originals) {
        let status = answer["response"]["status"].as_str().unwrap_or_default();
        assert!(status.starts_with("201"), "{}: {answer}", original["id"]);
    }

    let started = Instant::now();
    let mut failures = Vec::new();
    for original in &originals {
        let path = format!(
            "{}/{}",
            original["resourceType"].as_str().unwrap(),
            original["id"].as_str().unwrap()
        );
        let read = gw.get(&format!("/fhir/{path}"), &Who::FullAccess).await;
        if read.status != StatusCode::OK {
            failures.push(format!("{path}: {} {}", read.status, read.text));
            continue;
        }
        let expected = without_server_meta(original);
        if let Some(at) = difference(&without_server_meta(&read.json), &expected, &path) {
            failures.push(at);
        }
        let stored = gw.upstream_get(&path).await;
        if let Some(plain) = plaintext_in_storage(&stored.json) {
            failures.push(format!("{path}: stored in plaintext: {plain}"));
        }
    }
    let read_back = started.elapsed();
    assert!(
        failures.is_empty(),
        "{} of {} examples differ:\n{}",
        failures.len(),
        originals.len(),
        failures.join("\n")
    );
    eprintln!(
        "{} examples: transaction {load:?}, read back and checked {read_back:?}",
        originals.len()
    );

    // Alone and inside a search's Bundle, a resource opens the same, and the search keeps the
    // upstream's order, for a caller who opens everything and for one whom the policy lets
    // search but who opens less: 64 Observations, 40 MedicationRequests, 22 Patients (a nurse
    // opens no telecom or address).
    for (resource_type, other) in [
        ("Observation", Who::Nurse),
        ("MedicationRequest", Who::Pharmacist),
        ("Patient", Who::Nurse),
    ] {
        let ids: Vec<&str> = originals
            .iter()
            .filter(|r| r["resourceType"] == resource_type)
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        let query = format!("{resource_type}?_id={}&_count=200", ids.join(","));
        let order = |bundle: &Value| -> Vec<Value> {
            bundle["entry"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["resource"]["id"].clone())
                .collect()
        };
        let stored = order(&gw.upstream_get(&query).await.json);
        for who in [Who::FullAccess, other] {
            let found = gw.get(&format!("/fhir/{query}"), &who).await;
            assert_eq!(found.status, StatusCode::OK, "{}", found.text);
            let entries = found.json["entry"].as_array().unwrap();
            // In the upstream's order.
            assert_eq!(order(&found.json), stored, "{who:?} {resource_type}");
            assert_eq!(entries.len(), ids.len(), "{who:?} {resource_type}");
            for entry in entries {
                let resource = &entry["resource"];
                let path = format!("{resource_type}/{}", resource["id"].as_str().unwrap());
                let read = gw.get(&format!("/fhir/{path}"), &who).await;
                assert_eq!(read.status, StatusCode::OK, "{path}: {}", read.text);
                assert_eq!(resource, &read.json, "{who:?} {path}: searched vs read");
            }
        }
    }
}

/// The comparison itself: decimals as numbers, anything else exactly.
#[test]
fn the_comparison_sees_every_difference_but_decimal_spelling() {
    let stored: Value = serde_json::from_str(r#"{"v": 1.5, "w": [100.0]}"#).unwrap();
    let sent: Value = serde_json::from_str(r#"{"v": 1.50, "w": [1e2]}"#).unwrap();
    assert_eq!(difference(&stored, &sent, "R"), None);
    for other in [
        json!({"v": 1.51, "w": [100]}),
        json!({"v": 1.5, "w": [100, 1]}),
        json!({"v": 1.5, "w": [100], "x": null}),
        json!({"v": "1.5", "w": [100]}),
    ] {
        assert!(difference(&stored, &other, "R").is_some(), "{other}");
    }
}
