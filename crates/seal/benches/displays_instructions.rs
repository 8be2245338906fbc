//! The display benchmark's open with the rules checked, and its seal, as instruction counts,
//! which do not move with the other tenants of a shared machine as wall-clock times do. Run
//! under callgrind:
//!
//! ```sh
//! cargo bench -p fhirseal-seal --bench displays_instructions --no-run
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!     --toggle-collect='displays_instructions::open_checked' \
//!     --toggle-collect='displays_instructions::seal' \
//!     target/release/deps/displays_instructions-<hash>
//! callgrind_annotate --inclusive=yes /tmp/cg.out | grep displays_instructions::
//! ```
//!
//! Run directly it just checks that both paths work.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/seal/support/fixture.rs"]
mod fixture;

use std::hint::black_box;

use fhirseal_envelope::{HeaderCache, SealingKey};
use fhirseal_seal::{Reader, Rules, Sealer, SharedHeaders};
use fixture::{ALL, Fixture, cache};
use rshabe::DecryptionKey;
use serde_json::Value;

const ROUNDS: usize = 10;

#[path = "displays_data.rs"]
mod displays_data;

#[inline(never)]
fn open_checked(
    sealed: &[u8],
    key: &DecryptionKey,
    cache: &HeaderCache,
    headers: &SharedHeaders,
    sealing: &SealingKey,
    rules: &Rules,
) -> usize {
    let mut value: Value = serde_json::from_slice(sealed).unwrap();
    let report = Reader::new("reader", Some(key), cache, headers, sealing)
        .with_rules(rules)
        .open(&mut value);
    assert_eq!((report.masked, report.forged), (0, 0));
    serde_json::to_vec(&value).unwrap().len()
}

#[inline(never)]
fn seal(plain: &[u8], fx: &mut Fixture, headers: &mut SharedHeaders, rules: &Rules) -> usize {
    let value: Value = serde_json::from_slice(plain).unwrap();
    let sealed = Sealer::new(&fx.pp, &fx.sealing, 0, headers, &mut fx.rng)
        .seal(&value, rules)
        .unwrap();
    serde_json::to_vec(&sealed.resource).unwrap().len()
}

fn main() {
    let plain = serde_json::to_vec(&displays_data::bundle()).unwrap();
    let mut fx = Fixture::new(7);
    let key = fx.key(ALL, 0);
    let rules = displays_data::rules();
    let mut headers = SharedHeaders::new();
    let value: Value = serde_json::from_slice(&plain).unwrap();
    let sealed = Sealer::new(&fx.pp, &fx.sealing, 0, &mut headers, &mut fx.rng)
        .seal(&value, &rules)
        .unwrap();
    let sealed = serde_json::to_vec(&sealed.resource).unwrap();
    let warm = cache();
    open_checked(&sealed, &key, &warm, &headers, &fx.sealing, &rules);
    let mut total = 0;
    for _ in 0..ROUNDS {
        total += open_checked(
            black_box(&sealed),
            &key,
            &warm,
            &headers,
            &fx.sealing,
            &rules,
        );
        total += seal(black_box(&plain), &mut fx, &mut headers, &rules);
    }
    black_box(total);
}
