//! `explain` agrees with what opening really gives: for every shipped policy and a cast of
//! callers, keys are issued by the attribute authority from the attributes the policy gives
//! each caller, the official R4 examples are sealed with the policy's rules, opened with each
//! key, and every protected element is open exactly when `explain` says so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use std::path::PathBuf;
use std::sync::Arc;

use fhirseal_authority::{Authority, InitOptions, Kek};
use fhirseal_envelope::{BlindIndex, HeaderCache, SealingKey};
use fhirseal_fhir::Principal;
use fhirseal_policy::{Policy, record_patient};
use fhirseal_seal::{Reader, Sealer, SharedHeaders};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rshabe::DecryptionKey;
use serde_json::{Value, json};

#[path = "../../seal/tests/seal/support/examples.rs"]
mod examples;

const DAR: &str = "http://hl7.org/fhir/StructureDefinition/data-absent-reason";

fn examples() -> Vec<(String, Value)> {
    let dir = examples::r4_examples_dir();
    let mut out = Vec::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for path in names {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let Some(kind) = name.split('-').next() else {
            continue;
        };
        if ![
            "Patient",
            "Observation",
            "Condition",
            "Encounter",
            "MedicationRequest",
            "Practitioner",
        ]
        .contains(&kind)
        {
            continue;
        }
        let Ok(value) = serde_json::from_slice::<Value>(&std::fs::read(&path).unwrap()) else {
            continue;
        };
        if value.get("id").is_some() {
            out.push((name, value));
        }
    }
    out
}

fn cast() -> Vec<(&'static str, Principal)> {
    let p = |claims: Value| Principal::from_claims(&claims).unwrap();
    vec![
        (
            "cardiologist",
            p(
                json!({"sub": "c", "fhirUser": "Practitioner/c", "practitioner_roles": [{"code": ["doctor"], "specialty": ["394579002"]}]}),
            ),
        ),
        (
            "nurse",
            p(
                json!({"sub": "n", "fhirUser": "Practitioner/n", "practitioner_roles": [{"code": ["224535009"]}]}),
            ),
        ),
        (
            "registrar",
            p(
                json!({"sub": "r", "fhirUser": "Practitioner/r", "practitioner_roles": [{"code": ["registrar"]}]}),
            ),
        ),
        (
            "pharmacist",
            p(
                json!({"sub": "ph", "fhirUser": "Practitioner/ph", "practitioner_roles": [{"code": ["pharmacist"]}]}),
            ),
        ),
        (
            "hr",
            p(json!({"sub": "h", "department": "human-resources"})),
        ),
        (
            "programme physician",
            p(json!({"sub": "pp", "fhirUser": "Practitioner/pp",
            "practitioner_roles": [{"code": ["doctor"], "organization": "Organization/st-mary-sud-programme"}]})),
        ),
        (
            "infectious disease nurse",
            p(json!({"sub": "idn", "fhirUser": "Practitioner/idn",
            "practitioner_roles": [{"code": ["nurse"], "specialty": ["394807007"]}]})),
        ),
        (
            "researcher",
            p(json!({"sub": "rs", "scope": "user/*.rs", "department": "research"})),
        ),
        (
            "patient example",
            p(json!({"sub": "pe", "fhirUser": "Patient/example"})),
        ),
        ("nobody", p(json!({"sub": "x"}))),
    ]
}

fn has_masked_reason(value: &Value) -> bool {
    value
        .get("extension")
        .and_then(Value::as_array)
        .is_some_and(|e| {
            e.iter().any(|x| {
                x.get("url").and_then(Value::as_str) == Some(DAR)
                    && x.get("valueCode").and_then(Value::as_str) == Some("masked")
            })
        })
}

/// Whether the element at concrete `path` (`Patient.contact[0].telecom[1]`) is masked in `opened`.
fn masked_at(opened: &Value, path: &str) -> bool {
    let mut steps: Vec<(String, Option<usize>)> = path
        .split('.')
        .skip(1)
        .map(|s| match s.split_once('[') {
            Some((name, rest)) if rest != "x]" => {
                (name.to_string(), rest.trim_end_matches(']').parse().ok())
            }
            _ => (s.to_string(), None),
        })
        .collect();
    let (last, index) = steps.pop().unwrap();
    let mut holder = opened;
    for (name, i) in &steps {
        holder = &holder[name];
        if let Some(i) = i {
            holder = &holder[*i];
        }
    }
    if last == "value[x]" {
        let dar = &holder["dataAbsentReason"];
        return dar["coding"][0]["code"] == "masked"
            && !holder
                .as_object()
                .unwrap()
                .keys()
                .any(|k| k.starts_with("value"));
    }
    let companion = format!("_{last}");
    match index {
        Some(i) => match &holder[&last][i] {
            Value::Object(_) => has_masked_reason(&holder[&last][i]),
            _ => has_masked_reason(&holder[&companion][i]),
        },
        None => match &holder[&last] {
            Value::Object(_) => has_masked_reason(&holder[&last]),
            Value::Null => has_masked_reason(&holder[&companion]),
            _ => false,
        },
    }
}

struct Keys {
    authority: Authority,
    rng: ChaCha20Rng,
    _dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(17);
        let store =
            fhirseal_authority::store::open(dir.path().join("authority.sqlite3").to_str().unwrap())
                .unwrap();
        let authority = Authority::init(
            store,
            Kek::generate(&mut rng),
            InitOptions::default(),
            0,
            &mut rng,
        )
        .unwrap();
        Self {
            authority,
            rng,
            _dir: dir,
        }
    }

    /// A real user key for `attributes`, issued and derived for period 0; a caller without
    /// attributes gets no key (the gateway enrols nobody without them).
    fn issue(&mut self, identity: &str, attributes: Vec<String>) -> Option<Arc<DecryptionKey>> {
        if attributes.is_empty() {
            return None;
        }
        self.authority
            .add_user(identity, &attributes, None, 0, &mut self.rng)
            .unwrap();
        Some(
            self.authority
                .decryption_key(identity, 0, &mut self.rng)
                .unwrap(),
        )
    }
}

#[test]
fn explain_agrees_with_what_real_keys_open_over_the_r4_examples() {
    let examples = examples();
    assert!(examples.len() > 100, "{} examples", examples.len());
    let mut keys = Keys::new();
    let index = BlindIndex::new([7; 32]);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fhir-profiles/policies");
    let mut checked = 0;
    let mut opened_count = 0;
    let mut failures = Vec::new();
    for policy_file in [
        "general-hospital.toml",
        "part2-substance-use.toml",
        "hiv-behavioural-health.toml",
        "research-deidentified.toml",
    ] {
        let policy = Policy::from_paths(&[dir.join(policy_file)]).unwrap();
        let cast: Vec<(&str, Principal, Option<Arc<DecryptionKey>>)> = cast()
            .into_iter()
            .map(|(name, who)| {
                let attributes: Vec<String> = policy
                    .attributes(&who)
                    .names()
                    .map(str::to_string)
                    .collect();
                let key = keys.issue(&format!("{policy_file}/{name}"), attributes);
                (name, who, key)
            })
            .collect();
        let mut headers = SharedHeaders::new();
        let pp = keys.authority.public_params().clone();
        let sealing = SealingKey::generate(&mut keys.rng);
        for (file, resource) in &examples {
            let rules = policy.rules_for(record_patient(resource, &[]).as_deref());
            let sealed = Sealer::new(&pp, &sealing, 0, &mut headers, &mut keys.rng)
                .with_blind_index(&index)
                .seal(resource, &rules)
                .unwrap_or_else(|e| panic!("{policy_file}: {file}: {e}"));
            for (name, who, key) in &cast {
                let explanation = policy.explain(who, resource);
                let cache = HeaderCache::new(64, std::time::Duration::from_secs(60));
                let mut opened = sealed.resource.clone();
                Reader::new(name, key.as_deref(), &cache, &headers, &sealing).open(&mut opened);
                for element in &explanation.elements {
                    checked += 1;
                    let masked = masked_at(&opened, &element.path);
                    if masked == element.open {
                        failures.push(format!(
                            "{policy_file}: {file}: {name}: {} explained {} but is {}",
                            element.path,
                            if element.open { "open" } else { "masked" },
                            if masked { "masked" } else { "open" }
                        ));
                    }
                    if element.open {
                        opened_count += 1;
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} disagreements:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        checked > 1000 && opened_count > 100 && opened_count < checked,
        "{checked} elements checked, {opened_count} open"
    );
}
