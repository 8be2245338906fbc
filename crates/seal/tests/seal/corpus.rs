//! The official FHIR R4 examples (npm `hl7.fhir.r4.examples` 4.0.1, fetched by
//! `scripts/fetch-r4-examples`): every example of a type with rules, and every Bundle, is sealed
//! with a canary placed in each element the rules select, then opened.
//!
//! - a full-access reader gets exactly the (canaried) input back, JSON-equal;
//! - no canary appears anywhere in the sealed JSON, nor in what a partial reader gets;
//! - the sealed JSON is written out for `scripts/fhir-validate`, which `scripts/test` runs next.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::support::examples;
use crate::support::fixture::{self, ALL, Fixture, cache};
use fhirseal_fhir::path::Step;
use fhirseal_seal::shape::{SEALED_ELEMENT, SEALED_HEADER};
use fhirseal_seal::{Reader, Rules, Sealer, SharedHeaders};
use serde_json::{Map, Value, json};

const CANARY: &str = "CANARY-7f3a";

fn out_dir() -> PathBuf {
    let dir = std::env::var_os("FHIRSEAL_SEALED_OUT").map_or_else(
        || PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fhir-corpus/sealed"),
        PathBuf::from,
    );
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An independent walk of the rules' paths (the test's own oracle, not the crate's): puts a
/// canary into every element a rule selects. Strings are replaced by the canary; other values
/// get a canary extension (primitives in their `_name` companion).
fn plant(resource: &mut Value, rules: &Rules, counter: &mut usize) {
    let Some(object) = resource.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(items)) = object.get_mut("contained") {
        for item in items {
            plant(item, rules, counter);
        }
    }
    let rtype = object
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if rtype == "Bundle" {
        if let Some(Value::Array(entries)) = object.get_mut("entry") {
            for entry in entries {
                if let Some(inner) = entry.get_mut("resource") {
                    plant(inner, rules, counter);
                }
            }
        }
        return;
    }
    if let Some(set) = rules.for_type(&rtype) {
        for rule in set.elements() {
            plant_steps(object, rule.path().steps(), counter);
        }
    }
}

fn canary_extension(counter: &mut usize) -> Value {
    *counter += 1;
    json!({"url": "https://canary.invalid/StructureDefinition/canary", "valueString": format!("{CANARY}-{counter}")})
}

fn matching_keys(object: &Map<String, Value>, step: &Step) -> Vec<String> {
    let mut keys: Vec<String> = object
        .keys()
        .map(|k| k.strip_prefix('_').unwrap_or(k).to_string())
        .filter(|k| {
            if step.choice {
                k.strip_prefix(&step.name)
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase()))
            } else {
                *k == step.name
            }
        })
        .collect();
    keys.dedup();
    keys
}

fn filter_ok(step: &Step, item: &Value) -> bool {
    step.filter
        .as_ref()
        .is_none_or(|f| item.get(&f.member).and_then(Value::as_str) == Some(f.value.as_str()))
}

fn plant_steps(object: &mut Map<String, Value>, steps: &[Step], counter: &mut usize) {
    let Some((step, rest)) = steps.split_first() else {
        return;
    };
    for key in matching_keys(object, step) {
        if !rest.is_empty() {
            match object.get_mut(&key) {
                Some(Value::Array(items)) => {
                    for item in items.iter_mut().filter(|i| filter_ok(step, i)) {
                        if let Some(inner) = item.as_object_mut() {
                            plant_steps(inner, rest, counter);
                        }
                    }
                }
                Some(Value::Object(inner)) => plant_steps(inner, rest, counter),
                _ => {}
            }
            continue;
        }
        let companion = format!("_{key}");
        let len = object.get(&key).and_then(Value::as_array).map(Vec::len);
        match len {
            Some(len) => {
                for i in 0..len {
                    if !filter_ok(step, &object[&key][i]) {
                        continue;
                    }
                    plant_value(object, &key, &companion, Some(i), counter);
                }
            }
            None => plant_value(object, &key, &companion, None, counter),
        }
    }
}

fn plant_value(
    object: &mut Map<String, Value>,
    key: &str,
    companion: &str,
    index: Option<usize>,
    counter: &mut usize,
) {
    let value = match index {
        Some(i) => object.get_mut(key).and_then(|v| v.get_mut(i)),
        None => object.get_mut(key),
    };
    match value {
        Some(Value::String(s)) => {
            *counter += 1;
            *s = format!("{CANARY}-{counter}");
        }
        Some(Value::Object(inner)) => {
            let ext = canary_extension(counter);
            match inner.get_mut("extension") {
                Some(Value::Array(list)) => list.push(ext),
                _ => {
                    inner.insert("extension".into(), json!([ext]));
                }
            }
        }
        _ => {
            // A boolean or number (or only a companion): the canary goes into the companion.
            let ext = canary_extension(counter);
            let slot = match index {
                None => object
                    .entry(companion.to_string())
                    .or_insert_with(|| json!({})),
                Some(i) => {
                    let len = object
                        .get(key)
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len);
                    let list = object
                        .entry(companion.to_string())
                        .or_insert_with(|| Value::Array(vec![Value::Null; len]));
                    let Some(list) = list.as_array_mut() else {
                        return;
                    };
                    if list.len() <= i {
                        list.resize(i + 1, Value::Null);
                    }
                    if list[i].is_null() {
                        list[i] = json!({});
                    }
                    &mut list[i]
                }
            };
            if let Some(slot) = slot.as_object_mut() {
                match slot.get_mut("extension") {
                    Some(Value::Array(list)) => list.push(ext),
                    _ => {
                        slot.insert("extension".into(), json!([ext]));
                    }
                }
            }
        }
    }
}

#[test]
fn the_official_r4_examples_round_trip_and_never_leak_a_canary() {
    let dir = examples::r4_examples_dir();
    let out = out_dir();
    let rules = fixture::rules();
    let mut fx = Fixture::new(11);
    let full = fx.key(ALL, 0);
    let nurse = fx.key(&["role:nurse"], 0);
    let mut headers = SharedHeaders::new();
    let full_cache = cache();
    let nurse_cache = cache();

    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    // resource type → (examples seen, examples with sealed elements, elements sealed)
    let mut seen: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let Ok(original) = serde_json::from_slice::<Value>(&std::fs::read(path).unwrap()) else {
            continue;
        };
        let rtype = original["resourceType"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if rtype != "Bundle" && rules.for_type(&rtype).is_none() {
            continue;
        }
        let mut canaried = original.clone();
        let mut planted = 0;
        plant(&mut canaried, &rules, &mut planted);

        let sealed = match Sealer::new(&fx.pp, &fx.sealing, 0, &mut headers, &mut fx.rng)
            .seal(&canaried, &rules)
        {
            Ok(sealed) => sealed,
            Err(e) => {
                failures.push(format!("{name}: seal: {e}"));
                continue;
            }
        };
        let stats = seen.entry(rtype.clone()).or_default();
        stats.0 += 1;
        if sealed.elements > 0 {
            stats.1 += 1;
            stats.2 += sealed.elements;
        }
        let sealed_text = serde_json::to_string(&sealed.resource).unwrap();
        if sealed_text.contains(CANARY) {
            failures.push(format!("{name}: a canary is in the sealed JSON"));
        }
        if planted > 0 && sealed.elements == 0 {
            failures.push(format!(
                "{name}: {planted} canaries planted but nothing sealed"
            ));
        }
        std::fs::write(out.join(&name), &sealed_text).unwrap();

        let mut opened = sealed.resource.clone();
        let report =
            Reader::new("full", Some(&full), &full_cache, &headers, &fx.sealing).open(&mut opened);
        if opened != canaried || report.masked != 0 {
            failures.push(format!(
                "{name}: the full reader did not get the input back ({report:?})"
            ));
        }

        let mut partial = sealed.resource.clone();
        Reader::new("nurse", Some(&nurse), &nurse_cache, &headers, &fx.sealing).open(&mut partial);
        let partial_text = serde_json::to_string(&partial).unwrap();
        if partial_text.contains(SEALED_ELEMENT) || partial_text.contains(SEALED_HEADER) {
            failures.push(format!("{name}: an envelope reached the partial reader"));
        }
        // The nurse may read Observation values and demographics, but not Condition codes,
        // MedicationRequests or Practitioners' details; what stays masked keeps its canary hidden.
        if rtype == "Condition" && sealed.elements > 0 && partial_text.contains(CANARY) {
            failures.push(format!("{name}: a Condition canary reached the nurse"));
        }
    }
    eprintln!(
        "{:<20} {:>8} {:>8} {:>9}",
        "type", "examples", "sealed", "elements"
    );
    for (rtype, (n, sealed, elements)) in &seen {
        eprintln!("{rtype:<20} {n:>8} {sealed:>8} {elements:>9}");
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    for (rtype, least) in [
        ("Patient", 10),
        ("Observation", 40),
        ("Condition", 8),
        ("Encounter", 5),
        ("MedicationRequest", 30),
        ("Practitioner", 8),
        ("Bundle", 10),
    ] {
        let sealed = seen.get(rtype).map_or(0, |s| s.1);
        assert!(
            sealed >= least,
            "only {sealed} {rtype} examples had something sealed (expected {least})"
        );
    }
}
