//! `fhirseal audit …`: the tamper-evident audit trail in the authority's store (see
//! [`fhirseal_authority::audit`] and `docs/audit.md`). The store and the key-encryption key are
//! found as `fhirseal serve` finds them: from `--config`, or the embedded defaults.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use fhirseal::audit::event::audit_event;
use fhirseal::config::Config;
use fhirseal_authority::audit::{self, Intact};
use fhirseal_authority::{Authority, CheckpointSigner, KEK_ENV, Kek, Store, store};
use rand_core::OsRng;
use serde_json::json;

/// The audit commands.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The configuration file [default: the embedded defaults].
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Recompute the chain and check every checkpoint's signature: exit 0 and a summary when it
    /// is intact, else exit 1 naming the first bad record and what is wrong with it.
    Verify {
        /// The checkpoint public key (64 hex digits, from `fhirseal audit public-key`); without
        /// it, the authority's own (which needs its key-encryption key).
        #[arg(long)]
        public_key: Option<String>,
        /// A checkpoint copied out of the database, `SEQ:HASH` (as `verify` prints): the chain
        /// must hold that record with that hash. Repeatable.
        #[arg(long)]
        expect: Vec<String>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write every record as a FHIR R4 AuditEvent, one JSON object a line (NDJSON).
    Export {
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the checkpoint public key (Ed25519, 64 hex digits), for auditors.
    PublicKey,
}

pub(crate) fn run(args: Args) -> Result<String, String> {
    let config =
        Config::load(args.config.as_deref(), std::env::vars()).map_err(|e| e.to_string())?;
    match args.command {
        Command::Verify {
            public_key,
            expect,
            json,
        } => verify(&config, public_key.as_deref(), &expect, json),
        Command::Export { out } => export(&config, out.as_deref()),
        Command::PublicKey => Ok(audit::hex(&signer(&config)?.public_key())),
    }
}

fn verify(
    config: &Config,
    public_key: Option<&str>,
    expect: &[String],
    json: bool,
) -> Result<String, String> {
    let key = match public_key {
        Some(hex) => audit::from_hex(hex).ok_or("--public-key must be 64 hex digits")?,
        None => signer(config)?.public_key(),
    };
    let expect = expect
        .iter()
        .map(|e| expected(e))
        .collect::<Result<Vec<_>, _>>()?;
    let mut store = open_store(config)?;
    let intact = audit::verify(store.as_mut(), &key, &expect).map_err(|e| e.to_string())?;
    let tail = last_hash(store.as_mut(), &intact)?;
    Ok(if json {
        json!({
            "intact": true,
            "records": intact.records,
            "checkpoints": intact.checkpoints,
            "last_checkpoint": intact.last_checkpoint,
            "tail": tail,
        })
        .to_string()
    } else {
        let pin = tail.map_or_else(String::new, |t| format!("; to pin it: --expect {t}"));
        format!(
            "audit chain intact: {} records, {} signed checkpoints (last at record {}){pin}",
            intact.records,
            intact.checkpoints,
            intact
                .last_checkpoint
                .map_or_else(|| "none".into(), |s| s.to_string()),
        )
    })
}

/// `SEQ:HASH` of the chain's last record, if any.
fn last_hash(store: &mut dyn Store, intact: &Intact) -> Result<Option<String>, String> {
    let after = intact.records.saturating_sub(1);
    let last = audit::records(store, after, 1).map_err(|e| e.to_string())?;
    Ok(last
        .first()
        .map(|r| format!("{}:{}", r.seq, audit::hex(&r.hash))))
}

fn expected(text: &str) -> Result<(u64, [u8; 32]), String> {
    let bad = || format!("--expect {text:?}: must be SEQ:HASH (a number, a colon, 64 hex digits)");
    let (seq, hash) = text.split_once(':').ok_or_else(bad)?;
    Ok((
        seq.parse().map_err(|_| bad())?,
        audit::from_hex(hash).ok_or_else(bad)?,
    ))
}

fn export(config: &Config, out: Option<&Path>) -> Result<String, String> {
    let mut store = open_store(config)?;
    // Standard output gets the text as the command's output (kept in memory: for a long trail,
    // use --out, which streams).
    let mut text = Vec::new();
    let mut sink: Box<dyn Write + '_> = match out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?,
        )),
        None => Box::new(&mut text),
    };
    let mut failed = None;
    let mut count = 0u64;
    audit::for_each_record(store.as_mut(), |record| {
        let event = audit_event(record.seq, &record.record, &config.fhir_base).map_err(|e| {
            fhirseal_authority::Error::Invalid(format!("audit record {}: {e}", record.seq))
        })?;
        if let Err(e) = writeln!(sink, "{event}") {
            failed = Some(e);
            return Err(fhirseal_authority::Error::Invalid("write failed".into()));
        }
        count += 1;
        Ok(())
    })
    .map_err(|e| match failed.take() {
        Some(io) => format!("the export could not be written: {io}"),
        None => e.to_string(),
    })?;
    sink.flush()
        .map_err(|e| format!("the export could not be written: {e}"))?;
    drop(sink);
    Ok(match out {
        Some(path) => format!("{count} AuditEvents written to {}", path.display()),
        None => String::from_utf8_lossy(&text).trim_end().to_string(),
    })
}

fn open_store(config: &Config) -> Result<Box<dyn Store>, String> {
    store::open(&config.authority_database).map_err(|e| e.to_string())
}

/// The authority's checkpoint key (made if it has none yet, as the gateway would).
fn signer(config: &Config) -> Result<CheckpointSigner, String> {
    let kek = match &config.authority_kek_file {
        None => {
            let hex = std::env::var(KEK_ENV).map_err(|_| format!("{KEK_ENV} is not set"))?;
            Kek::from_hex(&hex, KEK_ENV)
        }
        Some(path) => Kek::from_file(path),
    }
    .map_err(|e| e.to_string())?;
    let authority = Authority::open(open_store(config)?, kek).map_err(|e| e.to_string())?;
    CheckpointSigner::load_or_create(&authority, &mut OsRng).map_err(|e| e.to_string())
}
