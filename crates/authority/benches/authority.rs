//! The authority's costs: `cargo bench -p fhirseal-authority --bench authority`.
//!
//! - `issue/sqlite`: registering a user and issuing its key end to end (keygen, sealing, one
//!   SQLite transaction), 10 attributes, user tree of 2^16 leaves.
//! - `key_update/65536users-100revoked`: one period's key update for 2^16 users with 100
//!   revoked leaves spread over the tree (the scheme's work; storing it is one row).
//! - `decryption_key/derive`: one user's decryption key for one period through the authority
//!   (registry lookup, unsealing and decoding the user's key, DKGen), the period's key update
//!   already made.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use fhirseal_authority::{Authority, InitOptions, Kek, Kind, store};
use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, SeedableRng};
use rshabe::{Params, RevocationList};

const NOW: i64 = 1_800_000_000;

fn authority(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("bench.sqlite3").display());
    let params = Params::new(16, 10).unwrap();
    let options = InitOptions {
        params,
        period_seconds: 86_400,
    };
    let a = Authority::init(
        store::open(&url).unwrap(),
        Kek::generate(&mut OsRng),
        options,
        NOW,
        &mut OsRng,
    )
    .unwrap();
    let attributes: Vec<String> = (0..10).map(|i| format!("attr{i}")).collect();
    let mut n = 0u64;
    c.benchmark_group("issue").bench_function("sqlite", |b| {
        b.iter(|| {
            n += 1;
            a.add_user(
                &format!("Practitioner/{n}"),
                &attributes,
                None,
                NOW,
                &mut OsRng,
            )
            .unwrap()
        })
    });

    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let (pp, msk) = rshabe::setup(params, &mut rng);
    let mut rl = RevocationList::new();
    for i in 0..100u64 {
        rl.revoke(params, (i * 655 + 17) % params.users(), 0)
            .unwrap();
    }
    let ku = rshabe::key_update(&pp, &msk, 5, &rl, &mut rng).unwrap();
    eprintln!(
        "key update, 2^16 users, 100 revoked: {} KUNodes, {} bytes",
        ku.node_count(),
        ku.to_bytes().len()
    );
    c.benchmark_group("key_update")
        .sample_size(10)
        .bench_function("65536users-100revoked", |b| {
            b.iter(|| rshabe::key_update(&pp, &msk, 5, &rl, &mut rng).unwrap())
        });

    let mut users: Vec<String> = a
        .principals(Kind::User)
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    while users.len() < 300 {
        let name = format!("Practitioner/extra-{}", users.len());
        a.add_user(&name, &attributes, None, NOW, &mut OsRng)
            .unwrap();
        users.push(name);
    }
    let periods: Vec<u64> = (0..8).collect();
    for &p in &periods {
        a.key_update(p, &mut OsRng).unwrap();
    }
    let mut next = 0usize;
    c.benchmark_group("decryption_key")
        .bench_function("derive", |b| {
            b.iter(|| {
                // A user and period not asked before, so the cache misses every time.
                let (user, period) = (
                    &users[next % users.len()],
                    periods[(next / users.len()) % periods.len()],
                );
                next += 1;
                a.decryption_key(user, period, &mut OsRng).unwrap()
            })
        });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4));
    targets = authority
}
criterion_main!(benches);
