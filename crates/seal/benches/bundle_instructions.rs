//! The Bundle benchmark's floor and warm `shared` open as instruction counts, which do not move
//! with the other tenants of a shared machine as wall-clock times do. Run under callgrind:
//!
//! ```sh
//! cargo bench -p fhirseal-seal --bench bundle_instructions --no-run
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!     --toggle-collect='bundle_instructions::floor' --toggle-collect='bundle_instructions::open_warm' \
//!     target/release/deps/bundle_instructions-<hash>
//! callgrind_annotate --inclusive=yes /tmp/cg.out | grep bundle_instructions::
//! ```
//!
//! Run directly it just checks that both paths work.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/seal/support/fixture.rs"]
mod fixture;

use std::hint::black_box;

use fhirseal_envelope::{Granularity, HeaderCache, SealingKey};
use fhirseal_seal::{
    Displays, ElementRule, Narrative, Reader, RuleSet, Rules, Sealer, SharedHeaders,
};
use fixture::{ALL, Fixture, cache};
use rshabe::{AccessStructure, DecryptionKey};
use serde_json::{Value, json};

const ROUNDS: usize = 20;

#[path = "bundle_data.rs"]
mod bundle_data;

#[inline(never)]
fn floor(plain: &[u8]) -> usize {
    let value: Value = serde_json::from_slice(plain).unwrap();
    serde_json::to_vec(&value).unwrap().len()
}

#[inline(never)]
fn open_warm(
    sealed: &[u8],
    key: &DecryptionKey,
    cache: &HeaderCache,
    headers: &SharedHeaders,
    sealing: &SealingKey,
) -> usize {
    let mut value: Value = serde_json::from_slice(sealed).unwrap();
    let report = Reader::new("reader", Some(key), cache, headers, sealing).open(&mut value);
    assert_eq!(report.masked, 0);
    serde_json::to_vec(&value).unwrap().len()
}

fn main() {
    let _ = json!(null);
    let plain = serde_json::to_vec(&bundle_data::bundle()).unwrap();
    let mut fx = Fixture::new(5);
    let key = fx.key(ALL, 0);
    let policy = AccessStructure::parse(bundle_data::POLICY).unwrap();
    let rules = Rules::new([RuleSet::new(
        "Observation",
        bundle_data::PATHS
            .iter()
            .map(|p| ElementRule::new(p, policy.clone(), Granularity::Shared).unwrap())
            .collect(),
        Narrative::Seal,
        Displays::Matching,
    )
    .unwrap()])
    .unwrap();
    let mut headers = SharedHeaders::new();
    let value: Value = serde_json::from_slice(&plain).unwrap();
    let sealed = Sealer::new(&fx.pp, &fx.sealing, 0, &mut headers, &mut fx.rng)
        .seal(&value, &rules)
        .unwrap();
    let sealed = serde_json::to_vec(&sealed.resource).unwrap();
    let warm = cache();
    open_warm(&sealed, &key, &warm, &headers, &fx.sealing);
    let mut total = 0;
    for _ in 0..ROUNDS {
        total += floor(black_box(&plain));
        total += open_warm(black_box(&sealed), &key, &warm, &headers, &fx.sealing);
    }
    black_box(total);
}
