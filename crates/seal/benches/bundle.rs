//! Seal and open of a 100-entry Observation searchset Bundle, `shared` and `resource`
//! granularity, cold and warm header cache (warm also with the read path's check against the
//! rules), beside plain `serde_json` parse + serialise of the
//! same Bundle (the floor). Every measurement starts from bytes and ends in bytes, as the gateway
//! does. `cargo bench -p fhirseal-seal --bench bundle`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/seal/support/fixture.rs"]
mod fixture;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fhirseal_envelope::Granularity;
use fhirseal_seal::{
    Displays, ElementRule, Narrative, Reader, RuleSet, Rules, Sealer, SharedHeaders,
};
use fixture::{ALL, Fixture, cache};
use rshabe::AccessStructure;
use serde_json::Value;

#[path = "bundle_data.rs"]
mod bundle_data;

use bundle_data::bundle;

fn rules(granularity: Granularity) -> Rules {
    let policy = AccessStructure::parse(bundle_data::POLICY).unwrap();
    let set = RuleSet::new(
        "Observation",
        bundle_data::PATHS
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
            let sealed = Sealer::new(&fx.pp, &fx.sealing, 0, &mut headers, &mut fx.rng)
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
                let sealed = Sealer::new(&fx.pp, &fx.sealing, 0, &mut headers, &mut fx.rng)
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
                let report = Reader::new("reader", Some(&key), &warm, &headers, &fx.sealing)
                    .open(&mut value);
                assert_eq!(report.masked, 0);
                black_box(serde_json::to_vec(&value).unwrap())
            });
        });

        // The same, checking every entry against the rules as the gateway does: an element they
        // seal in clear would be forged (`docs/authenticity.md`).
        group.bench_function(format!("open {name} warm, rules checked"), |b| {
            b.iter(|| {
                let mut value: Value = serde_json::from_slice(black_box(&sealed)).unwrap();
                let report = Reader::new("reader", Some(&key), &warm, &headers, &fx.sealing)
                    .with_rules(&rules)
                    .open(&mut value);
                assert_eq!((report.masked, report.forged), (0, 0));
                black_box(serde_json::to_vec(&value).unwrap())
            });
        });

        group.bench_function(format!("open {name} cold"), |b| {
            b.iter(|| {
                let cold = cache();
                let mut value: Value = serde_json::from_slice(black_box(&sealed)).unwrap();
                let report = Reader::new("reader", Some(&key), &cold, &headers, &fx.sealing)
                    .open(&mut value);
                assert_eq!(report.masked, 0);
                black_box(serde_json::to_vec(&value).unwrap())
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
