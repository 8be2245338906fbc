//! `fhirseal authority …`: the attribute authority's command line.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use clap::Subcommand;
use fhirseal::ctupdate::PLAN_CHUNK;
use fhirseal_authority::unix_now as now;
use fhirseal_authority::{
    Authority, Error, InitOptions, KEK_ENV, KEY_LAYOUT, Kek, KeyMigration, Kind, Principal, store,
};
use rand_core::OsRng;
use rshabe::Params;
use serde_json::{Value, json};

/// Where the authority's state and key-encryption key are.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Folder for the embedded state (SQLite database, generated key-encryption key).
    #[arg(
        long,
        env = "FHIRSEAL_DATA_DIR",
        default_value = "fhirseal-data",
        global = true
    )]
    data_dir: PathBuf,
    /// The database: `sqlite:PATH` or `postgres://user@host/db` [default: sqlite:DATA_DIR/authority.sqlite3].
    #[arg(long, env = "FHIRSEAL_DATABASE", global = true)]
    database: Option<String>,
    /// File holding the key-encryption key (64 hex digits); `FHIRSEAL_AUTHORITY_KEK` takes precedence
    /// [default: DATA_DIR/authority.kek].
    #[arg(long, env = "FHIRSEAL_AUTHORITY_KEK_FILE", global = true)]
    kek_file: Option<PathBuf>,
    /// Print JSON for scripts instead of text for people.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the authority: master secret (sealed), public parameters, period 0 from now.
    Init {
        /// Depth of the user tree: 2^depth keys can be issued. Every key holds an independent
        /// key for each of the depth + 1 nodes of its path, so its size and the time to issue it
        /// grow with depth + 1 (at 20: 21 node keys, about 44 KB for 10 attributes; at 16: 17);
        /// decryption costs the same at any depth. Fixed for the authority's life.
        #[arg(long, default_value_t = Params::DEFAULT.user_depth())]
        user_depth: u8,
        /// Depth of the time tree: 2^depth periods.
        #[arg(long, default_value_t = Params::DEFAULT.time_depth())]
        time_depth: u8,
        /// Length of a period: a number with s, m, h or d (`1d`, `12h`).
        #[arg(long, default_value = "1d")]
        period: String,
    },
    /// Users: medical workers and backend-service clients.
    #[command(subcommand)]
    Users(Users),
    /// Sub-authorities: hospitals and departments that issue within their attributes.
    #[command(subcommand)]
    Authorities(Authorities),
    /// Periods: which one is current, and moving to the next.
    #[command(subcommand)]
    Period(Period),
    /// Re-issue every key in the per-node layout (RS-HABE.md §4 correction) after stopping every
    /// gateway: fresh node secrets, a new key for each active user and sub-authority, revoked
    /// ones' keys destroyed, stored key updates deleted, the period advanced by one and the
    /// ciphertext-update job started. Atomic; running it again does nothing.
    MigrateKeys,
    /// Print the public parameters and the current key update, for end-to-end clients.
    ExportPublic {
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum Users {
    /// Register a user and issue its key.
    Add {
        /// The identity: a `fhirUser` reference (`Practitioner/123`) or a client id.
        identity: String,
        /// Its attributes, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        attributes: Vec<String>,
        /// The sub-authority that issues it (default: the root authority).
        #[arg(long)]
        authority: Option<String>,
    },
    /// List the users.
    List,
    /// Show one user.
    Show {
        /// The identity.
        identity: String,
    },
    /// Revoke a user from the current period on.
    Revoke {
        /// The identity.
        identity: String,
    },
}

#[derive(Debug, Subcommand)]
enum Authorities {
    /// Register a sub-authority holding a subset of its parent's attributes.
    Delegate {
        /// Its name (`st-mary`, `st-mary/cardiology`).
        name: String,
        /// Its attributes, comma-separated, within the parent's.
        #[arg(long, value_delimiter = ',', required = true)]
        attributes: Vec<String>,
        /// The parent sub-authority (default: the root authority).
        #[arg(long)]
        parent: Option<String>,
    },
    /// List the sub-authorities.
    List,
    /// Revoke a sub-authority and everything issued below it.
    Revoke {
        /// Its name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum Period {
    /// Show the current period.
    Show,
    /// Move to the next period now (for a revocation to take full effect at once).
    Advance,
}

pub(crate) fn run(args: Args) -> Result<String, String> {
    let now = now();
    match &args.command {
        Command::Init {
            user_depth,
            time_depth,
            period,
        } => init(&args, *user_depth, *time_depth, period, now),
        Command::Users(cmd) => users(&args, cmd, now),
        Command::Authorities(cmd) => authorities(&args, cmd, now),
        Command::Period(cmd) => period(&args, cmd, now),
        Command::MigrateKeys => migrate_keys(&args, now),
        Command::ExportPublic { out } => export_public(&args, out.as_deref(), now),
    }
}

fn init(
    args: &Args,
    user_depth: u8,
    time_depth: u8,
    period: &str,
    now: i64,
) -> Result<String, String> {
    let params = Params::new(user_depth, time_depth)
        .map_err(|e| format!("{e} (--user-depth, --time-depth)"))?;
    let period_seconds = parse_period(period)?;
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| format!("{}: {e}", args.data_dir.display()))?;
    let mut store = store::open(&database(args)).map_err(message)?;
    if store.master().map_err(message)?.is_some() {
        return Err(message(Error::AlreadyInitialised {
            location: store.location().to_string(),
        }));
    }
    let (kek, created) = kek(args, true)?;
    let options = InitOptions {
        params,
        period_seconds,
    };
    let authority = Authority::init(store, kek, options, now, &mut OsRng).map_err(message)?;
    let mut out = json!({
        "database": authority.location(),
        "user_depth": user_depth,
        "time_depth": time_depth,
        "period_seconds": period_seconds,
        "period": authority.current_period(now).map_err(message)?,
    });
    if let Some(path) = &created {
        out["created_kek_file"] = json!(path.display().to_string());
    }
    Ok(render(args, &out, || {
        let mut text = format!(
            "created an authority in {} ({} users, {} periods of {period})",
            authority.location(),
            params.users(),
            params.periods()
        );
        if let Some(path) = &created {
            text.push_str(&format!(
                "\ncreated the key-encryption key {}: keep it apart from the database and back it up",
                path.display()
            ));
        }
        text
    }))
}

fn users(args: &Args, cmd: &Users, now: i64) -> Result<String, String> {
    let a = open(args)?;
    match cmd {
        Users::Add {
            identity,
            attributes,
            authority,
        } => {
            let p = a
                .add_user(identity, attributes, authority.as_deref(), now, &mut OsRng)
                .map_err(message)?;
            Ok(render(args, &principal_json(&p), || {
                format!(
                    "registered user {} at leaf {} with {}",
                    p.name,
                    p.leaf,
                    p.attributes.join(", ")
                )
            }))
        }
        Users::List => list(args, &a, Kind::User),
        Users::Show { identity } => {
            let p = a.principal(Kind::User, identity).map_err(message)?;
            Ok(render(args, &principal_json(&p), || describe(&p)))
        }
        Users::Revoke { identity } => revoke(args, &a, Kind::User, identity, now),
    }
}

fn authorities(args: &Args, cmd: &Authorities, now: i64) -> Result<String, String> {
    let a = open(args)?;
    match cmd {
        Authorities::Delegate {
            name,
            attributes,
            parent,
        } => {
            let p = a
                .delegate(name, parent.as_deref(), attributes, now, &mut OsRng)
                .map_err(message)?;
            Ok(render(args, &principal_json(&p), || {
                format!(
                    "registered sub-authority {} under {} with {}",
                    p.name,
                    p.parent.as_deref().unwrap_or("the root authority"),
                    p.attributes.join(", ")
                )
            }))
        }
        Authorities::List => list(args, &a, Kind::Authority),
        Authorities::Revoke { name } => revoke(args, &a, Kind::Authority, name, now),
    }
}

fn period(args: &Args, cmd: &Period, now: i64) -> Result<String, String> {
    let a = open(args)?;
    if matches!(cmd, Period::Advance) {
        a.advance_period(now).map_err(message)?;
    }
    let info = a.period_info(now).map_err(message)?;
    let out = json!({
        "period": info.period,
        "starts_at": info.starts_at,
        "ends_at": info.ends_at,
        "last_period": info.last,
        "period_seconds": info.seconds,
    });
    Ok(render(args, &out, || {
        format!(
            "period {} of {} (started {}s ago, next in {}s)",
            info.period,
            info.last,
            now.saturating_sub(info.starts_at),
            info.ends_at.saturating_sub(now)
        )
    }))
}

fn migrate_keys(args: &Args, now: i64) -> Result<String, String> {
    let store = store::open(&database(args)).map_err(message)?;
    let (kek, _) = kek(args, false)?;
    let plan = [PLAN_CHUNK.to_string()];
    let (a, migrated) =
        Authority::migrate_keys(store, kek, now, &plan, &mut OsRng).map_err(message)?;
    let location = a.location();
    let Some(m) = migrated else {
        let period = a.current_period(now).map_err(message)?;
        let out = json!({
            "database": location,
            "migrated": false,
            "key_layout": KEY_LAYOUT,
            "period": period,
        });
        return Ok(render(args, &out, || {
            format!(
                "the authority at {location} holds its keys in the per-node layout already: nothing to do"
            )
        }));
    };
    let out = json!({
        "database": location,
        "migrated": true,
        "key_layout": KEY_LAYOUT,
        "users": m.users,
        "authorities": m.authorities,
        "destroyed": m.destroyed,
        "key_updates_deleted": m.key_updates_deleted,
        "period": m.period,
        "job": m.job.map(|j| j.get()),
    });
    Ok(render(args, &out, || migrated_text(&location, &m)))
}

fn migrated_text(location: &str, m: &KeyMigration) -> String {
    let job = m
        .job
        .map_or_else(String::new, |j| format!(" (job {j} is started)"));
    format!(
        "re-issued the keys of {} users and {} sub-authorities of {location} in the per-node layout, \
         destroyed the keys of {} revoked ones and deleted {} key updates; the period is now {}\n\
         next: move every stored header to period {}{job} with `fhirseal ciphertexts update`, or \
         start `fhirseal serve`, which runs it in the background; sub-authorities that delegate \
         offline must delegate again from their new keys",
        m.users, m.authorities, m.destroyed, m.key_updates_deleted, m.period, m.period
    )
}

fn export_public(args: &Args, out: Option<&Path>, now: i64) -> Result<String, String> {
    let a = open(args)?;
    let period = a.current_period(now).map_err(message)?;
    let ku = a.key_update(period, &mut OsRng).map_err(message)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let doc = json!({
        "format": "fhirseal-authority-public/1",
        "user_depth": a.params().user_depth(),
        "time_depth": a.params().time_depth(),
        "period": period,
        "public_params": b64.encode(a.public_params().to_bytes()),
        "key_update": b64.encode(ku.to_bytes()),
    });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    match out {
        Some(path) => {
            std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(render(
                args,
                &json!({ "written": path.display().to_string(), "period": period }),
                || {
                    format!(
                        "wrote the public parameters and the key update of period {period} to {}",
                        path.display()
                    )
                },
            ))
        }
        None => Ok(text),
    }
}

fn list(args: &Args, a: &Authority, kind: Kind) -> Result<String, String> {
    let all = a.principals(kind).map_err(message)?;
    let out = Value::Array(all.iter().map(principal_json).collect());
    Ok(render(args, &out, || {
        if all.is_empty() {
            return format!("no {}s registered", kind.as_str());
        }
        all.iter().map(describe).collect::<Vec<_>>().join("\n")
    }))
}

fn revoke(args: &Args, a: &Authority, kind: Kind, name: &str, now: i64) -> Result<String, String> {
    let revoked = a.revoke(kind, name, now).map_err(message)?;
    let period = a.current_period(now).map_err(message)?;
    let out = json!({
        "period": period,
        "revoked": revoked.iter().map(|(k, n)| json!({"kind": k.as_str(), "name": n})).collect::<Vec<_>>(),
    });
    Ok(render(args, &out, || {
        let names: Vec<&str> = revoked.iter().map(|(_, n)| n.as_str()).collect();
        format!(
            "revoked {} from period {period}: no key update covers them from now on; run \
             `fhirseal authority period advance` for their current decryption keys to expire at once",
            names.join(", ")
        )
    }))
}

// === helpers ===

fn open(args: &Args) -> Result<Authority, String> {
    let store = store::open(&database(args)).map_err(message)?;
    let (kek, _) = kek(args, false)?;
    Authority::open(store, kek).map_err(message)
}

fn database(args: &Args) -> String {
    args.database.clone().unwrap_or_else(|| {
        format!(
            "sqlite:{}",
            args.data_dir.join("authority.sqlite3").display()
        )
    })
}

/// The KEK from `FHIRSEAL_AUTHORITY_KEK`, else from the KEK file; with `create`, a missing file is
/// generated (and its path returned).
fn kek(args: &Args, create: bool) -> Result<(Kek, Option<PathBuf>), String> {
    if let Ok(hex) = std::env::var(KEK_ENV) {
        return Ok((Kek::from_hex(&hex, KEK_ENV).map_err(message)?, None));
    }
    let path = args
        .kek_file
        .clone()
        .unwrap_or_else(|| args.data_dir.join("authority.kek"));
    if create && !path.exists() {
        let kek = Kek::generate(&mut OsRng);
        kek.write_new_file(&path).map_err(message)?;
        return Ok((kek, Some(path)));
    }
    Kek::from_file(&path)
        .map(|k| (k, None))
        .map_err(|e| format!("{} (set {KEK_ENV} or --kek-file)", message(e)))
}

fn render(args: &Args, value: &Value, text: impl FnOnce() -> String) -> String {
    if args.json {
        serde_json::to_string_pretty(value).unwrap_or_default()
    } else {
        text()
    }
}

fn principal_json(p: &Principal) -> Value {
    json!({
        "kind": p.kind.as_str(),
        "name": p.name,
        "leaf": p.leaf,
        "attributes": p.attributes,
        "issued_by": p.parent,
        "revoked_at": p.revoked_at,
        "created_at": p.created_at,
    })
}

fn describe(p: &Principal) -> String {
    let status = match p.revoked_at {
        Some(period) => format!("revoked since period {period}"),
        None => "active".to_string(),
    };
    format!(
        "{} {} — leaf {}, {}, issued by {}: {}",
        p.kind.as_str(),
        p.name,
        p.leaf,
        status,
        p.parent.as_deref().unwrap_or("root"),
        p.attributes.join(", ")
    )
}

fn message(e: Error) -> String {
    e.to_string()
}

fn parse_period(text: &str) -> Result<u64, String> {
    let bad =
        || format!("--period {text:?}: expected a number with s, m, h or d, such as 1d or 12h");
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let scale = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    match n.checked_mul(scale) {
        Some(0) | None => Err(bad()),
        Some(s) => Ok(s),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn periods_parse() {
        assert_eq!(super::parse_period("1d"), Ok(86_400));
        assert_eq!(super::parse_period("12h"), Ok(43_200));
        assert_eq!(super::parse_period("90"), Ok(90));
        for bad in ["", "0d", "1w", "d", "-1d", "99999999999999999999d"] {
            assert!(super::parse_period(bad).is_err(), "{bad}");
        }
    }
}
