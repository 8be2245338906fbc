//! `fhirseal`: the FHIRseal command line. `fhirseal serve` runs the gateway; the attribute
//! authority (`fhirseal authority …`), the policy tools (`fhirseal policy …`), the SMART helpers
//! (`fhirseal smart …`) and the configuration check (`fhirseal config check`) administer it.

use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
    cli::main()
}
