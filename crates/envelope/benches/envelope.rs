//! `cargo bench -p fhirseal-envelope --bench envelope`
//!
//! - `aes_gcm/…`: AES-256-GCM throughput at 1 KiB and 64 KiB. aes-gcm picks AES-NI and
//!   PCLMULQDQ at run time; its software fallback is 16–24× slower, so GB/s here means hardware.
//! - `element/seal`, `element/open`: one 64-byte element with a warm header key.
//! - `header/open-cold`: the RS-HABE decryption of a header (10-attribute AND), which the header
//!   cache saves on every later read; `header/open-warm`: the cache hit.
//! - `blind_index/token`: one blind-index token (a Patient has about 68 under the embedded
//!   policy, each computed on every write of it).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fhirseal_envelope::{
    BlindIndex, ElementContext, Granularity, Header, HeaderCache, ResourceKey, SealingKey,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rshabe::{AccessStructure, Attribute, Params, RevocationList};

fn envelope(c: &mut Criterion) {
    let cipher = Aes256Gcm::new(&[7u8; 32].into());
    let mut g = c.benchmark_group("aes_gcm");
    for size in [1024usize, 65536] {
        let data = vec![0x5au8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("{}KiB", size / 1024), |b| {
            b.iter(|| {
                cipher
                    .encrypt(&Nonce::from([1u8; 12]), black_box(&data[..]))
                    .unwrap()
            })
        });
    }
    g.finish();

    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let (pp, msk) = rshabe::setup(Params::DEFAULT, &mut rng);
    let names: Vec<String> = (0..10).map(|i| format!("attr{i}")).collect();
    let policy = AccessStructure::parse(&names.join(" and ")).unwrap();
    let sealing = SealingKey::generate(&mut rng);
    let (header, key) =
        Header::new(&pp, &policy, 3, Granularity::Shared, &sealing, &mut rng).unwrap();
    let resource_key = ResourceKey::generate(&mut rng);
    let wrapped = resource_key.wrap(&key, header.id(), "Observation", "o1", &mut rng);
    let ctx = ElementContext::new("Observation", "o1", "Observation.value[x]", &policy);
    let element =
        br#"{"valueQuantity":{"value":120,"unit":"mmHg","system":"http://unitsofmeasure.org"}}"#;
    let envelope = fhirseal_envelope::seal(
        &ctx,
        header.id(),
        &wrapped,
        &resource_key,
        element,
        &sealing,
        &mut rng,
    );
    let mut g = c.benchmark_group("element");
    g.bench_function("seal", |b| {
        b.iter(|| {
            fhirseal_envelope::seal(
                &ctx,
                header.id(),
                &wrapped,
                &resource_key,
                black_box(element),
                &sealing,
                &mut rng,
            )
        })
    });
    g.bench_function("open", |b| {
        b.iter(|| fhirseal_envelope::open(&ctx, black_box(&envelope), &key, &sealing).unwrap())
    });
    g.finish();

    let attributes: Vec<Attribute> = names.iter().map(|n| Attribute::new(n).unwrap()).collect();
    let sk = rshabe::keygen(&pp, &msk, 1, &attributes, &mut rng).unwrap();
    let ku = rshabe::key_update(&pp, &msk, 3, &RevocationList::new(), &mut rng).unwrap();
    let dk = rshabe::decrypt_key(&pp, &sk, &ku, &mut rng).unwrap();
    let cache = HeaderCache::new(1024, Duration::from_secs(300));
    cache.insert(
        "Practitioner/1",
        header.id(),
        header.open(&dk, &sealing).unwrap(),
        Instant::now(),
    );
    let mut g = c.benchmark_group("header");
    g.bench_function("open-cold", |b| {
        b.iter(|| header.open(black_box(&dk), &sealing).unwrap())
    });
    g.bench_function("open-warm", |b| {
        b.iter(|| {
            cache
                .get("Practitioner/1", black_box(header.id()), Instant::now())
                .unwrap()
        })
    });
    g.finish();

    let index = BlindIndex::new([7u8; 32]);
    let mut g = c.benchmark_group("blind_index");
    g.bench_function("token", |b| {
        b.iter(|| index.token("Patient.name.family/prefix", black_box("smith"), 16))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = envelope
}
criterion_main!(benches);
