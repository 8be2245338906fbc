//! `fhirseal smart …`: helpers for the embedded SMART authorization server's configuration.

use std::io::Read;

use clap::Subcommand;

/// The SMART commands.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the argon2id hash of a password read from standard input (one line), for a user's
    /// `password_hash`. The password is never taken from the command line, where `ps` and the
    /// shell's history would see it; standard input from a terminal echoes, so pipe it in.
    HashPassword,
}

pub(crate) fn run(args: Args) -> Result<String, String> {
    match args.command {
        Command::HashPassword => {
            let mut input = String::new();
            std::io::stdin()
                .take(4096)
                .read_to_string(&mut input)
                .map_err(|e| format!("reading the password from standard input: {e}"))?;
            let password = input.strip_suffix('\n').unwrap_or(&input);
            let password = password.strip_suffix('\r').unwrap_or(password);
            if password.contains('\n') {
                return Err("standard input must hold one line, the password".into());
            }
            fhirseal_auth_server::hash_password(password).map_err(|e| e.to_string())
        }
    }
}
