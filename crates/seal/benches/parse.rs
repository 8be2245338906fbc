//! `parse_for_reader` beside `serde_json::from_slice` (issue 18): a Patient whose `meta.tag` holds
//! 68 blind-index tokens, as the embedded policy's demographics give one (the tokens are most of
//! its bytes), and the 100-entry Observation Bundle of the `bundle` benchmark, which holds none
//! (the cost of the visitor where there is nothing to skip).
//!
//! And, for that Bundle, what a representation other than `serde_json::Value` could save on a
//! search's answer (issue 18): the round trip a search makes of it (parse, serialize, drop) with
//! `Value`, with a borrowed tree (strings borrowed from the input unless escaped, objects as lists
//! of members: no key hashed, no map built), and the scan alone (`IgnoredAny`: what any tree
//! built by serde over `serde_json`'s reader costs at least).
//! `cargo bench -p fhirseal-seal --bench parse`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fhirseal_seal::parse_for_reader;
use fhirseal_seal::shape::BLIND_INDEX_SYSTEM;
use serde::Deserialize as _;
use serde_json::{Value, json};

#[path = "bundle_data.rs"]
mod bundle_data;

/// A Patient with 68 tokens over four indexes, 16-bit codes as the policy's defaults give.
fn patient() -> Value {
    let indexes = [
        "Patient.name.family/prefix",
        "Patient.name.given/prefix",
        "g2/Patient.name.family+Patient.birthDate",
        "Patient.telecom.value",
    ];
    let mut tags: Vec<Value> = (0..68)
        .map(|i| {
            json!({"system": format!("{BLIND_INDEX_SYSTEM}{}", indexes[i % 4]),
                   "code": format!("{:04x}", (i * 7919) % 65_536)})
        })
        .collect();
    tags.push(json!({"system": "urn:ward", "code": "7"}));
    json!({"resourceType": "Patient", "id": "p1",
        "meta": {"versionId": "3", "lastUpdated": "2026-12-01T10:00:00Z", "tag": tags},
        "active": true,
        "identifier": [{"system": "urn:mrn", "value": "MRN-1"}],
        "name": [{"family": "Chalmers", "given": ["Peter", "James"]}],
        "gender": "male", "birthDate": "1974-12-25",
        "address": [{"line": ["534 Erewhon St"], "city": "PleasantVille", "postalCode": "3999"}]})
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for (name, value) in [
        ("patient with 68 tokens", patient()),
        (
            "bundle of 100 observations, no tokens",
            bundle_data::bundle(),
        ),
    ] {
        let bytes = serde_json::to_vec(&value).unwrap();
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(format!("{name}: from_slice"), |b| {
            b.iter(|| serde_json::from_slice::<Value>(black_box(&bytes)).unwrap());
        });
        group.bench_function(format!("{name}: parse_for_reader"), |b| {
            b.iter(|| parse_for_reader(black_box(&bytes)).unwrap());
        });
    }
    group.finish();

    let bytes = serde_json::to_vec(&bundle_data::bundle()).unwrap();
    let mut group = c.benchmark_group("search answer round trip");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("Value: parse, serialize, drop", |b| {
        b.iter(|| {
            let value: Value = serde_json::from_slice(black_box(&bytes)).unwrap();
            serde_json::to_vec(&value).unwrap()
        });
    });
    group.bench_function("borrowed tree: parse, serialize, drop", |b| {
        b.iter(|| {
            let tree: borrowed::Tree<'_> = serde_json::from_slice(black_box(&bytes)).unwrap();
            serde_json::to_vec(&tree).unwrap()
        });
    });
    group.bench_function("scan alone", |b| {
        b.iter(|| {
            let mut deserializer = serde_json::Deserializer::from_slice(black_box(&bytes));
            serde::de::IgnoredAny::deserialize(&mut deserializer).unwrap();
        });
    });
    group.finish();
}

#[path = "borrowed.rs"]
mod borrowed;

criterion_group!(benches, bench);
criterion_main!(benches);
