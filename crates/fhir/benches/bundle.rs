//! Seal and open of a 100-entry Observation searchset Bundle, `shared` and `resource`
//! granularity, cold and warm header cache, beside plain `serde_json` parse + serialise of the
//! same Bundle (the floor). Every measurement starts from bytes and ends in bytes, as the gateway
//! does. `cargo bench -p fhirseal-fhir --bench bundle`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/support/fixture.rs"]
mod fixture;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fhirseal_envelope::Granularity;
use fhirseal_fhir::{
    Displays, ElementRule, Narrative, Reader, RuleSet, Rules, Sealer, SharedHeaders,
};
use fixture::{ALL, Fixture, cache};
use rshabe::AccessStructure;
use serde_json::{Value, json};

const ENTRIES: usize = 100;

fn observation(i: usize) -> Value {
    json!({
        "resourceType": "Observation",
        "id": format!("bp-{i}"),
        "meta": {"versionId": "1", "lastUpdated": "2026-11-01T10:00:00Z"},
        "text": {"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">Blood pressure {}/{} mmHg</div>", 100 + i % 40, 60 + i % 30)},
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs", "display": "Vital Signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9", "display": "Blood pressure panel with all children optional"}], "text": "Blood pressure systolic & diastolic"},
        "subject": {"reference": format!("Patient/p{}", i % 17)},
        "effectiveDateTime": "2026-11-01T09:30:00+01:00",
        "performer": [{"reference": "Practitioner/example"}],
        "interpretation": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "L", "display": "low"}], "text": "Below low normal"}],
        "bodySite": {"coding": [{"system": "http://snomed.info/sct", "code": "368209003", "display": "Right arm"}]},
        "component": [
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6", "display": "Systolic blood pressure"}]},
             "valueQuantity": {"value": 100 + i % 40, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4", "display": "Diastolic blood pressure"}]},
             "valueQuantity": {"value": 60 + i % 30, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
        ]
    })
}

fn bundle() -> Value {
    let entries: Vec<Value> = (0..ENTRIES)
        .map(|i| {
            json!({"fullUrl": format!("https://fhir.example.org/Observation/bp-{i}"),
                   "resource": observation(i), "search": {"mode": "match"}})
        })
        .collect();
    json!({"resourceType": "Bundle", "id": "search-1", "type": "searchset", "total": ENTRIES,
           "link": [{"relation": "self", "url": "https://fhir.example.org/Observation?code=85354-9"}],
           "entry": entries})
}

fn rules(granularity: Granularity) -> Rules {
    let policy =
        AccessStructure::parse("(role:physician and dept:cardiology) or role:nurse or role:lab")
            .unwrap();
    let set = RuleSet::new(
        "Observation",
        [
            "Observation.component.value[x]",
            "Observation.interpretation",
            "Observation.bodySite",
        ]
        .iter()
        .map(|p| ElementRule::new(p, policy.clone(), granularity).unwrap())
        .collect(),
        Narrative::Seal,
        Displays::Matching,
    )
    .unwrap();
    Rules::new([set]).unwrap()
}

fn bench(c: &mut Criterion) {
    let plain = serde_json::to_vec(&bundle()).unwrap();
    let mut fx = Fixture::new(5);
    let key = fx.key(ALL, 0);

    let mut group = c.benchmark_group("bundle-100-observations");
    group.throughput(Throughput::Bytes(plain.len() as u64));
    group.sample_size(20);

    group.bench_function("serde floor (parse + serialise)", |b| {
        b.iter(|| {
            let value: Value = serde_json::from_slice(black_box(&plain)).unwrap();
            black_box(serde_json::to_vec(&value).unwrap())
        });
    });

    for granularity in [Granularity::Shared, Granularity::Resource] {
        let name = match granularity {
            Granularity::Shared => "shared",
            Granularity::Resource => "resource",
        };
        let rules = rules(granularity);
        let mut headers = SharedHeaders::new();
        let sealed = {
            let value: Value = serde_json::from_slice(&plain).unwrap();
            let sealed = Sealer::new(&fx.pp, 0, &mut headers, &mut fx.rng)
                .seal(&value, &rules)
                .unwrap();
            eprintln!(
                "{name}: {} elements sealed per bundle; plain {} bytes, sealed {} bytes",
                sealed.elements,
                plain.len(),
                serde_json::to_vec(&sealed.resource).unwrap().len()
            );
            serde_json::to_vec(&sealed.resource).unwrap()
        };

        group.bench_function(format!("seal {name}"), |b| {
            b.iter(|| {
                let value: Value = serde_json::from_slice(black_box(&plain)).unwrap();
                let sealed = Sealer::new(&fx.pp, 0, &mut headers, &mut fx.rng)
                    .seal(&value, &rules)
                    .unwrap();
                black_box(serde_json::to_vec(&sealed.resource).unwrap())
            });
        });

        // What the sealed form costs JSON alone: it is larger than the plain one.
        group.bench_function(
            format!("serde of the sealed form, {name} (parse + serialise)"),
            |b| {
                b.iter(|| {
                    let value: Value = serde_json::from_slice(black_box(&sealed)).unwrap();
                    black_box(serde_json::to_vec(&value).unwrap())
                });
            },
        );

        let warm = cache();
        group.bench_function(format!("open {name} warm"), |b| {
            b.iter(|| {
                let mut value: Value = serde_json::from_slice(black_box(&sealed)).unwrap();
                let report = Reader::new("reader", Some(&key), &warm, &headers).open(&mut value);
                assert_eq!(report.masked, 0);
                black_box(serde_json::to_vec(&value).unwrap())
            });
        });

        group.bench_function(format!("open {name} cold"), |b| {
            b.iter(|| {
                let cold = cache();
                let mut value: Value = serde_json::from_slice(black_box(&sealed)).unwrap();
                let report = Reader::new("reader", Some(&key), &cold, &headers).open(&mut value);
                assert_eq!(report.masked, 0);
                black_box(serde_json::to_vec(&value).unwrap())
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
