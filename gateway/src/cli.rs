//! Argument parsing and dispatch. Output is for people by default and JSON with `--json`; every
//! error is one line that says what to do, with exit status 1 (64 for a usage error).

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod audit;
mod authority;
mod ciphertexts;
mod config;
mod policy;
mod serve;
mod smart;

/// FHIRseal: a gateway that seals protected FHIR elements under attribute-based encryption.
#[derive(Debug, Parser)]
#[command(name = "fhirseal", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (on the embedded defaults without --config) until SIGTERM or Ctrl-C.
    Serve(serve::Args),
    /// The attribute authority: keys, users, sub-authorities, revocation and periods.
    Authority(authority::Args),
    /// The compliance policy: check it, see a token's attributes, explain a resource.
    Policy(policy::Args),
    /// The embedded SMART authorization server: configuration helpers.
    Smart(smart::Args),
    /// The gateway's configuration: check it.
    Config(config::Args),
    /// Stored sealed headers: move them all to the current period (the ciphertext-update job).
    Ciphertexts(ciphertexts::Args),
    /// The tamper-evident audit trail: verify it, export it as FHIR AuditEvents, its public key.
    Audit(audit::Args),
}

/// Exit status for a usage error (`EX_USAGE`).
const EX_USAGE: u8 = 64;

pub(crate) fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(EX_USAGE);
        }
    };
    let result = match cli.command {
        Command::Serve(args) => return serve::run(args),
        Command::Authority(args) => authority::run(args),
        Command::Policy(args) => policy::run(args),
        Command::Smart(args) => smart::run(args),
        Command::Config(args) => config::run(args),
        Command::Ciphertexts(args) => ciphertexts::run(args),
        Command::Audit(args) => audit::run(args),
    };
    match result {
        Ok(output) => {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{output}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            let _ = writeln!(std::io::stderr().lock(), "error: {message}");
            ExitCode::FAILURE
        }
    }
}
