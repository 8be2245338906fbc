//! `fhirseal`: the FHIRseal command line. Today it runs the attribute authority
//! (`fhirseal authority …`), the policy tools (`fhirseal policy …`) and the SMART helpers
//! (`fhirseal smart …`); the gateway's `serve` arrives with the proxy.

use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
    cli::main()
}
