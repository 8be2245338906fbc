//! The walk for `Reference.display` strings that sealing (`displays: all`) and the read path's
//! check against the rules both make over every element of every resource: a 100-entry
//! searchset of Observations and Encounters whose references carry displays, with arrays, nested
//! backbones and a contained resource. Sealing with `displays: all` seals them all, so opening
//! with the rules checked walks every element and finds no display in clear, as the gateway does
//! on every read and search. `cargo bench -p fhirseal-seal --bench displays`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/seal/support/fixture.rs"]
mod fixture;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fhirseal_seal::{Reader, Sealer, SharedHeaders};
use fixture::{ALL, Fixture, cache};
use serde_json::Value;

#[path = "displays_data.rs"]
mod displays_data;

use displays_data::{bundle, rules};

fn bench(c: &mut Criterion) {
    let plain = serde_json::to_vec(&bundle()).unwrap();
    let mut fx = Fixture::new(7);
    let key = fx.key(ALL, 0);
    let rules = rules();
    let mut headers = SharedHeaders::new();
    let sealed = {
        let value: Value = serde_json::from_slice(&plain).unwrap();
        let sealed = Sealer::new(&fx.pp, &fx.sealing, 0, &mut headers, &mut fx.rng)
            .seal(&value, &rules)
            .unwrap();
        serde_json::to_vec(&sealed.resource).unwrap()
    };

    let mut group = c.benchmark_group("displays-100-entries");
    group.throughput(Throughput::Bytes(plain.len() as u64));
    group.sample_size(30);

    let warm = cache();
    // The read path: every resource walked for displays in clear (there are none).
    group.bench_function("open warm, rules checked", |b| {
        b.iter(|| {
            let mut value: Value = serde_json::from_slice(black_box(&sealed)).unwrap();
            let report = Reader::new("reader", Some(&key), &warm, &headers, &fx.sealing)
                .with_rules(&rules)
                .open(&mut value);
            assert_eq!((report.masked, report.forged), (0, 0));
            black_box(serde_json::to_vec(&value).unwrap())
        });
    });

    // The same without the check: the difference is the check.
    group.bench_function("open warm", |b| {
        b.iter(|| {
            let mut value: Value = serde_json::from_slice(black_box(&sealed)).unwrap();
            let report =
                Reader::new("reader", Some(&key), &warm, &headers, &fx.sealing).open(&mut value);
            assert_eq!(report.masked, 0);
            black_box(serde_json::to_vec(&value).unwrap())
        });
    });

    // Sealing: every display found and sealed.
    group.bench_function("seal", |b| {
        b.iter(|| {
            let value: Value = serde_json::from_slice(black_box(&plain)).unwrap();
            let sealed = Sealer::new(&fx.pp, &fx.sealing, 0, &mut headers, &mut fx.rng)
                .seal(&value, &rules)
                .unwrap();
            black_box(serde_json::to_vec(&sealed.resource).unwrap())
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
