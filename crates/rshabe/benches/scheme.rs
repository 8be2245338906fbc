//! RS-HABE against the `rabe` crate's FAME (Agrawal–Chase 2017, `rabe::schemes::ac17`), in one
//! run: `cargo bench -p rshabe --bench scheme`.
//!
//! `rabe` is a timing peer only: it is broken as a scheme (see shared/crypto/RS-HABE.md,
//! "Pitfalls"), runs on BN254 rather than BLS12-381, and has no revocation, so its figures are
//! a floor for what a plain CP-ABE costs in Rust, not a like-for-like security level.
//!
//! rshabe runs with the default parameters (L = 20, ℓ = 10) at period 341, whose cover has 6
//! nodes, the average for ℓ = 10.
//!
//! The `consent` group (issue 19) measures patient consent's cost on its own:
//! `cargo bench -p rshabe --bench scheme -- consent`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rabe::schemes::ac17;
use rabe::utils::policy::pest::PolicyLanguage;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rshabe::{
    AccessStructure, Attribute, DecryptionKey, KeyUpdate, MasterSecret, Params, PublicParams,
    RevocationList, UpdateMode,
};

const PERIOD: u64 = 341;

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("attr{i}")).collect()
}

fn rshabe_policy(n: usize) -> AccessStructure {
    AccessStructure::parse(&names(n).join(" and ")).unwrap()
}

/// rabe's human policy language, nested two at a time (it panics on n-ary gates).
fn rabe_policy(n: usize) -> String {
    let names = names(n);
    let mut policy = format!("\"{}\"", names[n - 1]);
    for name in names[..n - 1].iter().rev() {
        policy = format!("(\"{name}\" and {policy})");
    }
    policy
}

fn scheme(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(42);
    let (pp, msk) = rshabe::setup(Params::DEFAULT, &mut rng);
    let (rabe_pk, rabe_msk) = ac17::setup();
    let ku = rshabe::key_update(&pp, &msk, PERIOD, &RevocationList::new(), &mut rng).unwrap();

    for n in [10usize, 100] {
        let attributes: Vec<Attribute> = names(n)
            .iter()
            .map(|a| Attribute::new(a).unwrap())
            .collect();
        let policy = rshabe_policy(n);
        let sk = rshabe::keygen(&pp, &msk, 7, &attributes, &mut rng).unwrap();
        let dk = rshabe::decrypt_key(&pp, &sk, &ku, &mut rng).unwrap();
        let (ct, key) = rshabe::encrypt(&pp, &policy, PERIOD, &mut rng).unwrap();
        assert_eq!(rshabe::decrypt(&dk, &ct).unwrap(), key);
        eprintln!(
            "rshabe n={n}: ciphertext {} bytes, secret key {} bytes, decryption key {} bytes",
            ct.to_bytes().len(),
            sk.to_bytes().len(),
            dk.to_bytes().len()
        );

        let rabe_names = names(n);
        let rabe_attrs: Vec<&str> = rabe_names.iter().map(String::as_str).collect();
        let rabe_policy = rabe_policy(n);
        let rabe_sk = ac17::cp_keygen(&rabe_msk, &rabe_attrs).unwrap();
        let rabe_ct = ac17::cp_encrypt(
            &rabe_pk,
            &rabe_policy,
            &[0u8; 32],
            PolicyLanguage::HumanPolicy,
        )
        .unwrap();
        assert_eq!(ac17::cp_decrypt(&rabe_sk, &rabe_ct).unwrap(), vec![0u8; 32]);

        let mut g = c.benchmark_group("encrypt");
        g.bench_function(BenchmarkId::new("rshabe", n), |b| {
            b.iter(|| rshabe::encrypt(&pp, black_box(&policy), PERIOD, &mut rng).unwrap())
        });
        g.bench_function(BenchmarkId::new("rabe-fame", n), |b| {
            b.iter(|| {
                ac17::cp_encrypt(
                    &rabe_pk,
                    black_box(&rabe_policy),
                    &[0u8; 32],
                    PolicyLanguage::HumanPolicy,
                )
                .unwrap()
            })
        });
        g.finish();

        let mut g = c.benchmark_group("decrypt");
        g.bench_function(BenchmarkId::new("rshabe", n), |b| {
            b.iter(|| rshabe::decrypt(black_box(&dk), black_box(&ct)).unwrap())
        });
        g.bench_function(BenchmarkId::new("rabe-fame", n), |b| {
            b.iter(|| ac17::cp_decrypt(black_box(&rabe_sk), black_box(&rabe_ct)).unwrap())
        });
        g.finish();
    }

    let attributes: Vec<Attribute> = names(10)
        .iter()
        .map(|a| Attribute::new(a).unwrap())
        .collect();
    let policy = rshabe_policy(10);
    let sk = rshabe::keygen(&pp, &msk, 7, &attributes, &mut rng).unwrap();

    let (mut ct, key) = rshabe::encrypt(&pp, &policy, 0, &mut rng).unwrap();
    for period in 1..=100 {
        ct = rshabe::ct_update(&pp, &ct, period, UpdateMode::Minimal, &mut rng).unwrap();
    }
    let ku100 = rshabe::key_update(&pp, &msk, 100, &RevocationList::new(), &mut rng).unwrap();
    let dk100 = rshabe::decrypt_key(&pp, &sk, &ku100, &mut rng).unwrap();
    assert_eq!(rshabe::decrypt(&dk100, &ct).unwrap(), key);
    eprintln!(
        "rshabe n=10 after 100 updates: {} time rows, longest chain {}, {} bytes",
        ct.time_row_count(),
        ct.longest_chain(),
        ct.to_bytes().len()
    );
    c.benchmark_group("decrypt_after_100_updates")
        .bench_function(BenchmarkId::new("rshabe", 10), |b| {
            b.iter(|| rshabe::decrypt(black_box(&dk100), black_box(&ct)).unwrap())
        });

    let (fresh, _) = rshabe::encrypt(&pp, &policy, PERIOD, &mut rng).unwrap();
    let mut g = c.benchmark_group("ct_update");
    g.bench_function(BenchmarkId::new("rshabe", 10), |b| {
        b.iter(|| {
            rshabe::ct_update(
                &pp,
                black_box(&fresh),
                PERIOD + 1,
                UpdateMode::Minimal,
                &mut rng,
            )
            .unwrap()
        })
    });
    g.bench_function(BenchmarkId::new("rshabe-rerandomize", 10), |b| {
        b.iter(|| {
            rshabe::ct_update(
                &pp,
                black_box(&fresh),
                PERIOD + 1,
                UpdateMode::Rerandomize,
                &mut rng,
            )
            .unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("keygen");
    g.bench_function(BenchmarkId::new("rshabe", 10), |b| {
        b.iter(|| rshabe::keygen(&pp, &msk, 7, black_box(&attributes), &mut rng).unwrap())
    });
    g.bench_function(BenchmarkId::new("rabe-fame", 10), |b| {
        let n = names(10);
        let a: Vec<&str> = n.iter().map(String::as_str).collect();
        b.iter(|| ac17::cp_keygen(&rabe_msk, black_box(&a)).unwrap())
    });
    g.finish();

    // Per-node keys cost (L+1) single-node keys: the user-tree depth is a deployment choice.
    let mut g = c.benchmark_group("keygen_by_user_depth");
    for depth in [12u8, 16, 20] {
        let (pp_d, msk_d) = rshabe::setup(Params::new(depth, 10).unwrap(), &mut rng);
        let sk_d = rshabe::keygen(&pp_d, &msk_d, 3, &attributes, &mut rng).unwrap();
        eprintln!(
            "rshabe L={depth}, m=10: secret key {} G2 elements, {} bytes",
            sk_d.element_count(),
            sk_d.to_bytes().len()
        );
        g.bench_function(BenchmarkId::new("rshabe-m10", depth), |b| {
            b.iter(|| rshabe::keygen(&pp_d, &msk_d, 3, black_box(&attributes), &mut rng).unwrap())
        });
    }
    g.finish();

    c.benchmark_group("decrypt_key")
        .bench_function(BenchmarkId::new("rshabe", 10), |b| {
            b.iter(|| rshabe::decrypt_key(&pp, black_box(&sk), &ku, &mut rng).unwrap())
        });

    let small = Params::new(10, 10).unwrap();
    let (pp_small, msk_small) = rshabe::setup(small, &mut rng);
    let mut rl = RevocationList::new();
    for i in 0..10u64 {
        rl.revoke(small, i * 101 + 3, 0).unwrap();
    }
    let ku_small = rshabe::key_update(&pp_small, &msk_small, PERIOD, &rl, &mut rng).unwrap();
    eprintln!(
        "key update, 1024 users, 10 revoked: {} KUNodes, {} bytes",
        ku_small.node_count(),
        ku_small.to_bytes().len()
    );
    c.benchmark_group("key_update")
        .sample_size(10)
        .bench_function(BenchmarkId::new("rshabe", "1024users-10revoked"), |b| {
            b.iter(|| {
                rshabe::key_update(&pp_small, &msk_small, PERIOD, black_box(&rl), &mut rng).unwrap()
            })
        });
}

/// The structure every consent below widens or narrows: the rule's own, before any consent.
const CONSENT_BASE: &str = "(org:st-mary/programme:sud and role:physician) or patient:Patient/p1";

/// One period's decryption key for a key issued at `leaf` with `names`.
fn consent_key(
    pp: &PublicParams,
    msk: &MasterSecret,
    ku: &KeyUpdate,
    leaf: u64,
    names: &[String],
    rng: &mut ChaCha20Rng,
) -> DecryptionKey {
    let attributes: Vec<Attribute> = names.iter().map(|a| Attribute::new(a).unwrap()).collect();
    let sk = rshabe::keygen(pp, msk, leaf, &attributes, rng).unwrap();
    rshabe::decrypt_key(pp, &sk, ku, rng).unwrap()
}

/// Patient consent (issue 19) against n, the actors named in ONE patient's consent.
///
/// A permit widens that patient's structure to `(base) or (role:clinician and (actor:… or …))`;
/// a deny narrows it to `(base) and (consent:unrestricted or actor:Practitioner/r1 or …)`. A
/// clinician's key holds its identity attributes and `consent:unrestricted` whatever the number
/// of patients who consent to it, so its size cannot depend on n; the ciphertext grows with n.
/// The permit's actors are `actor:Organization/c1 … c(n−1)` and last the clinician's own
/// organisation, so the key satisfies the OR only through its last child (the worst case). The
/// deny form is opened by a SUD-programme physician (who satisfies the base) holding
/// `consent:unrestricted`. n = 64 is well inside the crate's limits (`access::MAX_CHILDREN` 256
/// children per gate, `MAX_LEAVES` 1024 leaves, `MAX_POLICY_BYTES` 16 KiB of formula).
///
/// Also printed: the rejected alternative, one attribute per consenting patient in the
/// clinician's key (`consent:Patient/p1 … pn`), whose key grows with the patients.
fn consent(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(19);
    let (pp, msk) = rshabe::setup(Params::DEFAULT, &mut rng);
    let ku = rshabe::key_update(&pp, &msk, PERIOD, &RevocationList::new(), &mut rng).unwrap();
    let clinician_names: Vec<String> = [
        "role:clinician",
        "org:st-mary",
        "actor:Practitioner/c1",
        "actor:Organization/east-clinic",
        "consent:unrestricted",
    ]
    .map(String::from)
    .to_vec();
    let clinician = consent_key(&pp, &msk, &ku, 7, &clinician_names, &mut rng);
    let physician_names = [
        "org:st-mary/programme:sud",
        "role:physician",
        "actor:Practitioner/d1",
        "actor:Organization/st-mary",
        "consent:unrestricted",
    ]
    .map(String::from);
    let physician = consent_key(&pp, &msk, &ku, 8, &physician_names, &mut rng);
    let key_bytes = clinician.to_bytes().len();

    let mut g = c.benchmark_group("consent");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for n in [1usize, 4, 16, 64] {
        let actors: Vec<String> = (1..n)
            .map(|i| format!("actor:Organization/c{i}"))
            .chain(std::iter::once("actor:Organization/east-clinic".to_owned()))
            .collect();
        let permit = AccessStructure::parse(&format!(
            "({CONSENT_BASE}) or (role:clinician and ({}))",
            actors.join(" or ")
        ))
        .unwrap();
        let restricted: Vec<String> = (1..=n)
            .map(|i| format!("actor:Practitioner/r{i}"))
            .collect();
        let deny = AccessStructure::parse(&format!(
            "({CONSENT_BASE}) and (consent:unrestricted or {})",
            restricted.join(" or ")
        ))
        .unwrap();
        let (permit_ct, permit_key) = rshabe::encrypt(&pp, &permit, PERIOD, &mut rng).unwrap();
        let (deny_ct, deny_key) = rshabe::encrypt(&pp, &deny, PERIOD, &mut rng).unwrap();
        assert_eq!(rshabe::decrypt(&clinician, &permit_ct).unwrap(), permit_key);
        assert_eq!(rshabe::decrypt(&physician, &deny_ct).unwrap(), deny_key);
        assert!(rshabe::decrypt(&clinician, &deny_ct).is_err());

        // The clinician consented to by n patients holds the very same attributes: keygen again
        // to show the bytes do not move. The rejected design adds one attribute per patient.
        let consented = consent_key(&pp, &msk, &ku, 9, &clinician_names, &mut rng);
        let per_patient: Vec<String> = clinician_names
            .iter()
            .cloned()
            .chain((1..=n).map(|i| format!("consent:Patient/p{i}")))
            .collect();
        let rejected = consent_key(&pp, &msk, &ku, 10, &per_patient, &mut rng);
        eprintln!(
            "consent: n={n} key {key_bytes} B (consented by {n} patients: {} B; rejected \
             one attribute per patient: {} B), ciphertext {} B, deny ciphertext {} B",
            consented.to_bytes().len(),
            rejected.to_bytes().len(),
            permit_ct.to_bytes().len(),
            deny_ct.to_bytes().len()
        );

        g.bench_function(BenchmarkId::new("encrypt", n), |b| {
            b.iter(|| rshabe::encrypt(&pp, black_box(&permit), PERIOD, &mut rng).unwrap())
        });
        g.bench_function(BenchmarkId::new("decrypt-permit", n), |b| {
            b.iter(|| rshabe::decrypt(black_box(&clinician), black_box(&permit_ct)).unwrap())
        });
        g.bench_function(BenchmarkId::new("decrypt-deny", n), |b| {
            b.iter(|| rshabe::decrypt(black_box(&physician), black_box(&deny_ct)).unwrap())
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = scheme, consent
}
criterion_main!(benches);
