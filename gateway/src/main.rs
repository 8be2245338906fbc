//! `fhirseal`: the FHIRseal command line. `fhirseal serve` runs the gateway; the attribute
//! authority (`fhirseal authority …`), the policy tools (`fhirseal policy …`), the SMART helpers
//! (`fhirseal smart …`) and the configuration check (`fhirseal config check`) administer it.

use std::process::ExitCode;

mod cli;

/// mimalloc instead of glibc's malloc: a request allocates and frees thousands of small blocks
/// (the JSON trees, the opened elements), often on another thread than the one that allocated
/// them, and glibc's arenas made that about a fifth of the gateway's CPU, with lock contention
/// (BENCHMARKS.md, "The hot path, before and after (issue 18)").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cli::main()
}
