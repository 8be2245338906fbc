//! Where the official R4 examples are: `FHIRSEAL_R4_EXAMPLES`, or the folder
//! `scripts/fetch-r4-examples` fills. Shared by the seal crate's corpus test and the policy
//! crate's explain test (included there with `#[path]`; both crates sit in `crates/`).

use std::path::PathBuf;

/// The examples' folder; fails the test, saying what to run, when they are not there.
pub(crate) fn r4_examples_dir() -> PathBuf {
    let dir = std::env::var_os("FHIRSEAL_R4_EXAMPLES").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/r4-examples/package"),
        PathBuf::from,
    );
    assert!(
        dir.join("Patient-example.json").exists(),
        "the R4 examples are not at {}: run scripts/fetch-r4-examples (scripts/test does)",
        dir.display()
    );
    dir
}
