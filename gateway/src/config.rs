//! The gateway's configuration: one TOML file, or the embedded defaults, plus environment
//! overrides.
//!
//! `fhirseal serve` with no `--config` runs on [`DEFAULTS`] (`gateway/config/default.toml`): on
//! loopback, state in `./fhirseal-data`, the embedded authorization server with demo users, the
//! example hospital policy. Any key can be overridden from the environment:
//! `FHIRSEAL__UPSTREAM__BASE_URL=https://fhir.internal/r4` sets `[upstream] base_url`; a value
//! is read as a TOML value when it is one (`8080`, `true`, `["a", "b"]`), else as a string.
//!
//! Parse, don't validate (STYLE rule 2): serde reads `Raw*` structs that refuse unknown keys,
//! and one [`Config::load`] builds the validated [`Config`]. Every error names the file (or
//! "the embedded defaults", or the environment variable) and the key.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fhirseal_auth_server::{RawServerConfig, ServerConfig, ServerError};
use fhirseal_authority::CheckpointPolicy;

use crate::admin::access::{ADMIN_TOKEN_ENV, AdminTokenSource, AdminTokens, DEFAULT_TOKEN_FILE};
use crate::keys::DEFAULT_CACHE_SECONDS;
use fhirseal_smart::ClaimNames;
use fhirseal_smart::verify::{IntrospectionConfig, IssuerConfig, KeySource};
use fhirseal_upstream::{RawUpstreamConfig, UpstreamConfig};
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::{Table, Value};

/// The embedded defaults, used when no configuration file is given.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// Environment variables starting with this override configuration keys.
pub const ENV_PREFIX: &str = "FHIRSEAL__";

/// Why the configuration cannot be used. Says where (a file, the embedded defaults or an
/// environment variable) and which key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, `the embedded defaults`, or `environment variable FHIRSEAL__…`.
    pub source: String,
    /// The key, as a dotted path (`upstream.base_url`); empty for the file as a whole.
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.source, self.problem)
        } else {
            write!(f, "{}: `{}`: {}", self.source, self.key, self.problem)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The validated configuration.
#[derive(Debug)]
#[non_exhaustive]
pub struct Config {
    /// Where the gateway listens.
    pub listen: SocketAddr,
    /// Where the admin API listens (a loopback address only); `None`: no admin API.
    pub admin_listen: Option<SocketAddr>,
    /// Where the admin API's tokens come from; `None` when there is no admin API.
    pub admin_tokens: Option<AdminTokenSource>,
    /// The audit log file (one JSON line per request, appended); `None`: standard output.
    pub audit_log: Option<PathBuf>,
    /// Whether every audit line is also appended to the authority's hash chain, and when its
    /// checkpoints are signed (`server.audit_chain`, `server.audit_checkpoint_records`,
    /// `server.audit_checkpoint_seconds`); `None`: off.
    pub audit_chain: Option<CheckpointPolicy>,
    /// How the chain's writer commits (`server.audit_commit`): [`AuditCommit::Durable`] unless
    /// the operator chose speed.
    pub audit_commit: AuditCommit,
    /// The longest `/ready` waits for the warm-up after a start, in seconds (`server.
    /// warm_up_seconds`; 0: no warm-up), and how many recent callers' keys it derives
    /// (`server.warm_up_callers`): `fhirseal::warm`.
    pub warm_up: (u64, usize),
    /// The gateway's public URL, without a trailing slash (`https://fhir.hospital.example`).
    pub public_url: String,
    /// The FHIR base URL clients use: `{public_url}/fhir`. Tokens must name it as `aud`.
    pub fhir_base: String,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Which browser origins may call the gateway (CORS, for browser SMART apps).
    pub cors: Cors,
    /// Where the gateway keeps its state (the SQLite authority, its key-encryption key).
    pub data_dir: PathBuf,
    /// The upstream FHIR server.
    pub upstream: UpstreamConfig,
    /// The attribute authority's store: `sqlite:PATH` or `postgres://…`.
    pub authority_database: String,
    /// The authority's key-encryption key file; `None`: from `FHIRSEAL_AUTHORITY_KEK`.
    pub authority_kek_file: Option<PathBuf>,
    /// How long the keyring trusts an identity's registration (and the current period) without
    /// reading the authority again (`authority.registration_cache_seconds`): the bound within
    /// which a revocation or a period advance made through another replica is honoured here.
    pub registration_cache_seconds: u64,
    /// How the ciphertext-update job runs (`[ciphertext_update]`).
    pub ct_update: JobSettings,
    /// How searches the gateway filters itself are bounded (`[search]`).
    pub search: SearchSettings,
    /// The policy's files; empty: the embedded general-hospital policy.
    pub policy_files: Vec<PathBuf>,
    /// The authorization servers whose tokens are accepted, besides the embedded one.
    pub issuers: Vec<IssuerConfig>,
    /// The introspection endpoint for opaque tokens, if any.
    pub introspection: Option<IntrospectionConfig>,
    /// The embedded authorization server, if on; its issuer is `{public_url}/auth`.
    pub embedded: Option<ServerConfig>,
    /// Where break-glass alerts go (`[break_glass]`).
    pub break_glass: crate::break_glass::settings::Settings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    upstream: RawUpstreamConfig,
    #[serde(default)]
    authority: RawAuthority,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    smart: RawSmart,
    #[serde(default)]
    ciphertext_update: RawCtUpdate,
    #[serde(default)]
    search: RawSearch,
    #[serde(default)]
    break_glass: crate::break_glass::settings::RawBreakGlass,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSearch {
    candidate_cap: Option<u64>,
    cursor_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: String,
    public_url: String,
    max_body_bytes: Option<u64>,
    data_dir: Option<PathBuf>,
    /// `""` turns the admin API off; absent: [`DEFAULT_ADMIN_LISTEN`].
    admin_listen: Option<String>,
    /// The admin tokens' file; absent: `{data_dir}/admin.token`, created on first start.
    admin_token_file: Option<PathBuf>,
    /// `true`: the admin tokens come from `FHIRSEAL_ADMIN_TOKEN`, never a file.
    #[serde(default)]
    admin_token_from_env: bool,
    audit_log: Option<PathBuf>,
    /// Absent: `true`.
    audit_chain: Option<bool>,
    /// Absent: [`CheckpointPolicy::DEFAULT`]'s.
    audit_checkpoint_records: Option<u64>,
    /// Absent: [`CheckpointPolicy::DEFAULT`]'s.
    audit_checkpoint_seconds: Option<u64>,
    /// `"durable"` (absent) or `"fast"`.
    audit_commit: Option<String>,
    /// Origins allowed to call from a browser; `["*"]`: any; absent or empty: none.
    #[serde(default)]
    cors_origins: Vec<String>,
    /// Absent: [`DEFAULT_WARM_UP_SECONDS`]; 0: no warm-up.
    warm_up_seconds: Option<u64>,
    /// Absent: [`DEFAULT_WARM_UP_CALLERS`].
    warm_up_callers: Option<u64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthority {
    database: Option<String>,
    kek_file: Option<PathBuf>,
    /// `true`: the key-encryption key comes from `FHIRSEAL_AUTHORITY_KEK`, never a file.
    #[serde(default)]
    kek_from_env: bool,
    /// Absent: [`DEFAULT_CACHE_SECONDS`].
    registration_cache_seconds: Option<u64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCtUpdate {
    interval_seconds: Option<u64>,
    lease_seconds: Option<u64>,
    page_size: Option<u64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    files: Vec<PathBuf>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmart {
    #[serde(default)]
    issuers: Vec<RawIssuer>,
    introspection: Option<RawIntrospection>,
    /// Read on its own (its keys are the authorization server's), see [`embedded`].
    embedded: Option<Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    issuer: String,
    jwks_uri: String,
    audience: Option<Vec<String>>,
    algorithms: Option<Vec<String>>,
    leeway_seconds: Option<u64>,
    claims: Option<RawClaims>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntrospection {
    endpoint: String,
    client_id: String,
    /// A file holding the client secret (trailing white space trimmed); secrets are not written
    /// in the configuration itself.
    client_secret_file: Option<PathBuf>,
    /// An environment variable holding the client secret.
    client_secret_env: Option<String>,
    issuer: Option<String>,
    #[serde(default)]
    audience: Vec<String>,
    claims: Option<RawClaims>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClaims {
    patient: Option<Vec<String>>,
    encounter: Option<Vec<String>>,
    fhir_user: Option<Vec<String>>,
    scope: Option<Vec<String>>,
}

/// How long `/ready` waits for the warm-up after a start by default, in seconds.
pub const DEFAULT_WARM_UP_SECONDS: u64 = 5;
/// How many recent callers' keys the warm-up derives by default.
pub const DEFAULT_WARM_UP_CALLERS: usize = 32;

/// Where the admin API listens when `server.admin_listen` is not set.
const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";

/// The largest request body accepted by default: 16 MiB.
const DEFAULT_MAX_BODY: u64 = 16 * 1024 * 1024;

/// The longest `authority.registration_cache_seconds` accepted: an hour.
const MAX_REGISTRATION_CACHE_SECONDS: u64 = 3600;

impl Config {
    /// Reads `file` (or the embedded defaults when `None`), applies the `FHIRSEAL__…` variables
    /// of `env`, and validates the result. Relative paths in a file are relative to its folder;
    /// in the defaults, to the current folder.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let (source, text, base) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                    source: path.display().to_string(),
                    key: String::new(),
                    problem: format!("cannot be read: {e}"),
                })?;
                let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
                (path.display().to_string(), text, base)
            }
            None => (
                "the embedded defaults".to_string(),
                DEFAULTS.to_string(),
                PathBuf::new(),
            ),
        };
        let mut table: Table = toml::from_str(&text).map_err(|e| ConfigError {
            source: source.clone(),
            key: String::new(),
            problem: e.message().to_string(),
        })?;
        let mut overridden = Vec::new();
        let mut admin_token_env = None;
        for (name, value) in env {
            if name == ADMIN_TOKEN_ENV {
                admin_token_env = Some(zeroize::Zeroizing::new(value));
                continue;
            }
            if let Some(path) = name.strip_prefix(ENV_PREFIX) {
                let key =
                    override_key(&mut table, path, &value).map_err(|problem| ConfigError {
                        source: format!("environment variable {name}"),
                        key: String::new(),
                        problem,
                    })?;
                overridden.push((key, name));
            }
        }
        // An error in an overridden key is the variable's, not the file's.
        let blame = |key: &str| {
            overridden
                .iter()
                .find(|(k, _)| key == k || key.starts_with(&format!("{k}.")))
                .map_or_else(
                    || source.clone(),
                    |(_, name)| format!("environment variable {name}"),
                )
        };
        let error = |key: &str, problem: String| ConfigError {
            source: blame(key),
            key: key.to_string(),
            problem,
        };
        let raw: RawConfig =
            read(Value::Table(table.clone()), "").map_err(|(k, p)| error(&k, p))?;

        let listen: SocketAddr = raw.server.listen.parse().map_err(|_| {
            error(
                "server.listen",
                "must be an address and port, like 127.0.0.1:8080".into(),
            )
        })?;
        let admin_listen = admin_listen(raw.server.admin_listen.as_deref())
            .map_err(|p| error("server.admin_listen", p))?;
        let audit_log = match raw.server.audit_log {
            Some(path) if path.as_os_str().is_empty() => {
                return Err(error(
                    "server.audit_log",
                    "must be a file path (leave it out for standard output)".into(),
                ));
            }
            path => path.map(|p| base.join(p)),
        };
        let audit_chain = audit_chain(
            raw.server.audit_chain,
            raw.server.audit_checkpoint_records,
            raw.server.audit_checkpoint_seconds,
        )
        .map_err(|(key, p)| error(key, p))?;
        let audit_commit = match raw.server.audit_commit.as_deref() {
            None | Some("durable") => AuditCommit::Durable,
            Some("fast") => AuditCommit::Fast,
            Some(_) => {
                return Err(error(
                    "server.audit_commit",
                    "must be \"durable\" (every chained record on disk before its response) or \
                     \"fast\" (written to the database, synced later: docs/audit.md)"
                        .into(),
                ));
            }
        };
        let warm_up_seconds = match raw.server.warm_up_seconds {
            None => DEFAULT_WARM_UP_SECONDS,
            Some(n @ 0..=300) => n,
            Some(_) => {
                return Err(error(
                    "server.warm_up_seconds",
                    "must be from 0 (no warm-up) to 300".into(),
                ));
            }
        };
        let warm_up_callers = match raw.server.warm_up_callers {
            None => DEFAULT_WARM_UP_CALLERS,
            Some(n @ 0..=1000) => usize::try_from(n).unwrap_or(0),
            Some(_) => {
                return Err(error(
                    "server.warm_up_callers",
                    "must be from 0 to 1000".into(),
                ));
            }
        };
        let public_url =
            absolute_url(&raw.server.public_url).map_err(|p| error("server.public_url", p))?;
        let fhir_base = format!("{public_url}/fhir");
        let max_body_bytes = match raw.server.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY) {
            n @ 1024..=1_073_741_824 => usize::try_from(n).unwrap_or(usize::MAX),
            _ => {
                return Err(error(
                    "server.max_body_bytes",
                    "must be from 1024 to 1073741824".into(),
                ));
            }
        };
        let cors = Cors::from_origins(&raw.server.cors_origins)
            .map_err(|p| error("server.cors_origins", p))?;
        let data_dir = base.join(
            raw.server
                .data_dir
                .unwrap_or_else(|| "fhirseal-data".into()),
        );
        let admin_tokens = match admin_listen {
            None => None,
            Some(_) => Some(
                admin_tokens(
                    raw.server.admin_token_file,
                    raw.server.admin_token_from_env,
                    admin_token_env.as_deref().map(String::as_str),
                    &base,
                    &data_dir,
                )
                .map_err(|(k, p)| error(k, p))?,
            ),
        };
        let upstream = UpstreamConfig::try_from(raw.upstream).map_err(|e| {
            let text = e.to_string();
            error("upstream", text)
        })?;
        let authority_database = match raw.authority.database {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => url,
            Some(url) => match url.strip_prefix("sqlite:") {
                Some(path) if !path.is_empty() => format!("sqlite:{}", base.join(path).display()),
                _ => {
                    return Err(error(
                        "authority.database",
                        "must be sqlite:PATH or postgres://…".into(),
                    ));
                }
            },
            None => format!("sqlite:{}", data_dir.join("authority.sqlite3").display()),
        };
        let authority_kek_file = match (raw.authority.kek_from_env, raw.authority.kek_file) {
            (true, Some(_)) => {
                return Err(error(
                    "authority.kek_file",
                    "cannot be set together with kek_from_env = true".into(),
                ));
            }
            (true, None) => None,
            (false, Some(path)) => Some(base.join(path)),
            (false, None) => Some(data_dir.join("authority.kek")),
        };
        let registration_cache_seconds = match raw.authority.registration_cache_seconds {
            None => DEFAULT_CACHE_SECONDS,
            Some(n @ 0..=MAX_REGISTRATION_CACHE_SECONDS) => n,
            Some(_) => {
                return Err(error(
                    "authority.registration_cache_seconds",
                    format!(
                        "must be from 0 (no cache) to {MAX_REGISTRATION_CACHE_SECONDS}: it is how \
                         long a revocation made through another replica may go unseen here"
                    ),
                ));
            }
        };
        let ct_update = ct_update(&raw.ciphertext_update).map_err(|(k, p)| error(k, p))?;
        let search = search(&raw.search).map_err(|(k, p)| error(k, p))?;
        let break_glass = crate::break_glass::settings::settings(&raw.break_glass)
            .map_err(|(k, p)| error(k, p))?;
        let policy_files = raw.policy.files.iter().map(|p| base.join(p)).collect();
        let issuers = raw
            .smart
            .issuers
            .into_iter()
            .enumerate()
            .map(|(i, raw)| {
                issuer(raw, &fhir_base)
                    .map_err(|(k, p)| error(&format!("smart.issuers[{i}].{k}"), p))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let introspection = match raw.smart.introspection {
            None => None,
            Some(raw) => Some(
                introspection(raw, &base)
                    .map_err(|(k, p)| error(&format!("smart.introspection.{k}"), p))?,
            ),
        };
        let embedded = match raw.smart.embedded {
            None => None,
            Some(table) => embedded(table, &public_url, &fhir_base)
                .map_err(|(k, p)| error(&format!("smart.embedded{k}"), p))?,
        };
        if issuers.is_empty() && introspection.is_none() && embedded.is_none() {
            return Err(error(
                "smart",
                "no authorization server: configure smart.issuers, smart.introspection or turn \
                 smart.embedded on"
                    .into(),
            ));
        }
        Ok(Self {
            listen,
            admin_listen,
            admin_tokens,
            audit_log,
            audit_chain,
            audit_commit,
            warm_up: (warm_up_seconds, warm_up_callers),
            public_url,
            fhir_base,
            max_body_bytes,
            cors,
            data_dir,
            upstream,
            authority_database,
            authority_kek_file,
            registration_cache_seconds,
            ct_update,
            search,
            policy_files,
            issuers,
            introspection,
            embedded,
            break_glass,
        })
    }
}

/// Deserializes `value` into `T`, or the dotted path of the failing key (below `prefix`) and
/// what is wrong.
fn read<T: DeserializeOwned>(value: Value, prefix: &str) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let key = match (prefix.is_empty(), path.as_str()) {
            (_, ".") => prefix.to_string(),
            (true, _) => path,
            (false, _) => format!("{prefix}.{path}"),
        };
        (key, e.into_inner().message().to_string())
    })
}

/// Sets the key named by `path` (`UPSTREAM__BASE_URL`) to `value`; returns the dotted key.
fn override_key(table: &mut Table, path: &str, value: &str) -> Result<String, String> {
    let parts: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
    if parts.iter().any(String::is_empty) {
        return Err("names no key (FHIRSEAL__SECTION__KEY)".into());
    }
    let Some((last, sections)) = parts.split_last() else {
        return Err("names no key (FHIRSEAL__SECTION__KEY)".into());
    };
    let mut here = table;
    for section in sections {
        let next = here
            .entry(section.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        let Value::Table(next) = next else {
            return Err(format!("`{section}` is not a section"));
        };
        here = next;
    }
    // A key that holds a string stays a string; otherwise a TOML literal is taken as one.
    let parsed = match here.get(last) {
        Some(Value::String(_)) => Value::String(value.to_string()),
        _ => toml::from_str::<Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| Value::String(value.to_string())),
    };
    here.insert(last.clone(), parsed);
    Ok(parts.join("."))
}

/// `[ciphertext_update]`, each key absent taking [`JobSettings::default`]'s value. Errors: the
/// key and what is wrong.
fn ct_update(raw: &RawCtUpdate) -> Result<JobSettings, (&'static str, String)> {
    let defaults = JobSettings::default();
    let within = |value: Option<u64>, default: u64, max: u64, key: &'static str| match value {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err((key, format!("must be from 1 to {max}"))),
    };
    let interval = within(
        raw.interval_seconds,
        defaults.interval.as_secs(),
        86_400,
        "ciphertext_update.interval_seconds",
    )?;
    let lease_seconds = within(
        raw.lease_seconds,
        defaults.lease_seconds,
        86_400,
        "ciphertext_update.lease_seconds",
    )?;
    let page_size = within(
        raw.page_size,
        defaults.page_size as u64,
        1000,
        "ciphertext_update.page_size",
    )?;
    Ok(JobSettings {
        interval: Duration::from_secs(interval),
        lease_seconds,
        page_size: usize::try_from(page_size).unwrap_or(defaults.page_size),
    })
}

/// `[search]`, each key absent taking [`SearchSettings::default`]'s value.
fn search(raw: &RawSearch) -> Result<SearchSettings, (&'static str, String)> {
    let defaults = SearchSettings::default();
    let candidate_cap = match raw.candidate_cap {
        None => defaults.candidate_cap,
        Some(n @ 1..=1000) => usize::try_from(n).unwrap_or(defaults.candidate_cap),
        Some(_) => {
            return Err((
                "search.candidate_cap",
                "must be from 1 to 1000 (one upstream page)".into(),
            ));
        }
    };
    let cursor_seconds = match raw.cursor_seconds {
        None => defaults.cursor_seconds,
        Some(n @ 1..=86_400) => n,
        Some(_) => return Err(("search.cursor_seconds", "must be from 1 to 86400".into())),
    };
    Ok(SearchSettings {
        candidate_cap,
        cursor_seconds,
    })
}

/// How the audit chain's writer commits (`server.audit_commit`; docs/audit.md, "Commits").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditCommit {
    /// Every commit is on disk before the responses it holds leave (`"durable"`, the default):
    /// SQLite syncs its write-ahead log, PostgreSQL waits for its WAL flush.
    #[default]
    Durable,
    /// Commits return once the database has them, synced to disk later (`"fast"`): an
    /// operating-system crash or power loss (PostgreSQL: a server crash) may lose the last
    /// records, whose responses have left ([`fhirseal_authority::Store::relax_commits`]).
    Fast,
}

/// The admin API's address: absent is [`DEFAULT_ADMIN_LISTEN`], `""` is off, anything else a
/// loopback address and port (tokens are bearer secrets sent in clear over plain HTTP, so the
/// listener is never exposed beyond the machine).
/// `server.audit_chain` (on unless `false`) and its checkpoint interval, or the key at fault and
/// why.
fn audit_chain(
    on: Option<bool>,
    records: Option<u64>,
    seconds: Option<u64>,
) -> Result<Option<CheckpointPolicy>, (&'static str, String)> {
    if on == Some(false) {
        return Ok(None);
    }
    let records = records.unwrap_or(CheckpointPolicy::DEFAULT.every_records());
    let seconds = seconds.unwrap_or(CheckpointPolicy::DEFAULT.every_seconds());
    let default_seconds = CheckpointPolicy::DEFAULT.every_seconds();
    CheckpointPolicy::new(records, default_seconds).map_err(|_| {
        (
            "server.audit_checkpoint_records",
            "must be 1 to 1000000".to_string(),
        )
    })?;
    CheckpointPolicy::new(records, seconds)
        .map(Some)
        .map_err(|_| {
            (
                "server.audit_checkpoint_seconds",
                "must be 1 to 86400".to_string(),
            )
        })
}

fn admin_listen(text: Option<&str>) -> Result<Option<SocketAddr>, String> {
    let text = match text {
        None => DEFAULT_ADMIN_LISTEN,
        Some("") => return Ok(None),
        Some(text) => text,
    };
    let address: SocketAddr = text.parse().map_err(|_| {
        "must be a loopback address and port, like 127.0.0.1:9090, or \"\" for no admin API"
            .to_string()
    })?;
    if !address.ip().is_loopback() {
        return Err(format!(
            "{address} is not a loopback address: the admin API listens on this machine only \
             (127.0.0.1 or [::1]), or is off with \"\""
        ));
    }
    Ok(Some(address))
}

/// Where the admin tokens come from: `server.admin_token_file` (read now), `FHIRSEAL_ADMIN_TOKEN`
/// with `server.admin_token_from_env = true` (read now, from `env`), else the default file
/// `{data_dir}/admin.token`, read or created at start. Errors: the key and what is wrong.
fn admin_tokens(
    file: Option<PathBuf>,
    from_env: bool,
    env: Option<&str>,
    base: &Path,
    data_dir: &Path,
) -> Result<AdminTokenSource, (&'static str, String)> {
    match (from_env, file) {
        (true, Some(_)) => Err((
            "server.admin_token_file",
            "cannot be set together with admin_token_from_env = true".into(),
        )),
        (true, None) => {
            let text = env.ok_or_else(|| {
                (
                    "server.admin_token_from_env",
                    format!("the variable {ADMIN_TOKEN_ENV} is not set"),
                )
            })?;
            let tokens = AdminTokens::parse(text).map_err(|p| {
                (
                    "server.admin_token_from_env",
                    format!("the variable {ADMIN_TOKEN_ENV}: {p}"),
                )
            })?;
            Ok(AdminTokenSource::Read {
                tokens,
                from: ADMIN_TOKEN_ENV.to_string(),
            })
        }
        (false, Some(path)) if path.as_os_str().is_empty() => Err((
            "server.admin_token_file",
            "must be a file path (leave it out for {data_dir}/admin.token)".into(),
        )),
        (false, Some(path)) => {
            let path = base.join(path);
            let tokens =
                AdminTokens::read_file(&path).map_err(|p| ("server.admin_token_file", p))?;
            Ok(AdminTokenSource::Read {
                tokens,
                from: path.display().to_string(),
            })
        }
        (false, None) => Ok(AdminTokenSource::DefaultFile(
            data_dir.join(DEFAULT_TOKEN_FILE),
        )),
    }
}

/// `text` as an absolute http(s) URL without query, fragment or credentials, without a trailing
/// slash.
/// Which browser origins may call the gateway: the answer to a CORS preflight and the
/// `Access-Control-Allow-Origin` of every response (`server.cors_origins`).
///
/// Browser SMART apps call the FHIR endpoints and the token endpoint from their own origin; the
/// browser lets them read the answers only when the gateway names that origin. Tokens travel in
/// the `Authorization` header, never in cookies, so no origin is ever sent
/// `Access-Control-Allow-Credentials`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cors {
    /// No CORS headers (the default): browsers refuse cross-origin reads, a preflight is a 405.
    Off,
    /// Any origin (`["*"]`): for public data or a development set-up.
    AnyOrigin,
    /// These origins, each exactly `scheme://host[:port]`, in their serialized form.
    Origins(Vec<String>),
}

impl Cors {
    /// The setting for `server.cors_origins`: empty is [`Cors::Off`], `["*"]` is
    /// [`Cors::AnyOrigin`], otherwise every entry must be an origin (`https://app.example`,
    /// `http://localhost:3000`): an http(s) URL with nothing after the host and port.
    ///
    /// # Errors
    /// What is wrong with the first entry that is not an origin, or `*` mixed with origins.
    pub fn from_origins(origins: &[String]) -> Result<Self, String> {
        if origins.is_empty() {
            return Ok(Self::Off);
        }
        if origins.iter().any(|o| o == "*") {
            return if origins.len() == 1 {
                Ok(Self::AnyOrigin)
            } else {
                Err("`*` allows every origin and cannot be listed with others".into())
            };
        }
        let mut allowed = Vec::with_capacity(origins.len());
        for text in origins {
            let origin = url::Url::parse(text)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .map(|u| u.origin().ascii_serialization());
            match origin {
                Some(origin) if origin == *text => allowed.push(origin),
                Some(origin) if origin != "null" => {
                    return Err(format!(
                        "`{text}` is not an origin: write it as `{origin}` (scheme, host and \
                         port only, no path or trailing slash)"
                    ));
                }
                _ => {
                    return Err(format!(
                        "`{text}` is not an origin: it must be like https://app.example or \
                         http://localhost:3000"
                    ));
                }
            }
        }
        Ok(Self::Origins(allowed))
    }

    /// Whether any origin is allowed (what the CapabilityStatement's `security.cors` says).
    #[must_use]
    pub fn is_on(&self) -> bool {
        !matches!(self, Self::Off)
    }
}

fn absolute_url(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text).map_err(|_| "must be an absolute URL".to_string())?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host().is_none()
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err("must be an http(s) URL without query, fragment or credentials".into());
    }
    Ok(text.trim_end_matches('/').to_string())
}

fn claim_names(raw: Option<RawClaims>) -> ClaimNames {
    let defaults = ClaimNames::default();
    match raw {
        None => defaults,
        Some(claims) => ClaimNames {
            patient: claims.patient.unwrap_or(defaults.patient),
            encounter: claims.encounter.unwrap_or(defaults.encounter),
            fhir_user: claims.fhir_user.unwrap_or(defaults.fhir_user),
            scope: claims.scope.unwrap_or(defaults.scope),
        },
    }
}

fn introspection(
    raw: RawIntrospection,
    base: &Path,
) -> Result<IntrospectionConfig, (String, String)> {
    let client_secret = match (raw.client_secret_file, raw.client_secret_env) {
        (Some(_), Some(_)) => {
            return Err((
                "client_secret_file".into(),
                "cannot be set together with client_secret_env".into(),
            ));
        }
        (Some(path), None) => {
            let path = base.join(path);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                (
                    "client_secret_file".to_string(),
                    format!("{} cannot be read: {e}", path.display()),
                )
            })?;
            Some(text.trim_end().to_string())
        }
        (None, Some(name)) => Some(std::env::var(&name).map_err(|_| {
            (
                "client_secret_env".to_string(),
                format!("the variable {name} is not set"),
            )
        })?),
        (None, None) => None,
    };
    if client_secret.as_deref() == Some("") {
        return Err(("client_secret_file".into(), "the secret is empty".into()));
    }
    Ok(IntrospectionConfig {
        endpoint: raw.endpoint,
        client_id: raw.client_id,
        client_secret,
        claims: claim_names(raw.claims),
        issuer: raw.issuer,
        audience: raw.audience,
    })
}

fn issuer(raw: RawIssuer, fhir_base: &str) -> Result<IssuerConfig, (String, String)> {
    let audience = raw.audience.unwrap_or_else(|| vec![fhir_base.to_string()]);
    if audience.is_empty() {
        return Err(("audience".into(), "must name at least one audience".into()));
    }
    let mut config = IssuerConfig::new(raw.issuer, audience, KeySource::Url(raw.jwks_uri));
    if let Some(names) = raw.algorithms {
        config.algorithms = names
            .iter()
            .map(|name| match name.as_str() {
                "RS256" => Ok(Algorithm::RS256),
                "RS384" => Ok(Algorithm::RS384),
                "RS512" => Ok(Algorithm::RS512),
                "PS256" => Ok(Algorithm::PS256),
                "PS384" => Ok(Algorithm::PS384),
                "PS512" => Ok(Algorithm::PS512),
                "ES256" => Ok(Algorithm::ES256),
                "ES384" => Ok(Algorithm::ES384),
                "EdDSA" => Ok(Algorithm::EdDSA),
                _ => Err((
                    "algorithms".to_string(),
                    format!("`{name}` is not an accepted signature algorithm (RS256…512, PS256…512, ES256, ES384, EdDSA)"),
                )),
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(leeway) = raw.leeway_seconds {
        if leeway > 300 {
            return Err(("leeway_seconds".into(), "must be at most 300".into()));
        }
        config.leeway_seconds = leeway;
    }
    config.claims = claim_names(raw.claims);
    Ok(config)
}

/// The embedded authorization server's section: `enabled`, then the server's own keys
/// (`users`, `clients`, lifetimes); its issuer and FHIR base come from `[server]`.
fn embedded(
    mut table: Table,
    public_url: &str,
    fhir_base: &str,
) -> Result<Option<ServerConfig>, (String, String)> {
    let enabled = match table.remove("enabled") {
        None => true,
        Some(Value::Boolean(on)) => on,
        Some(_) => return Err((".enabled".into(), "must be true or false".into())),
    };
    if !enabled {
        return Ok(None);
    }
    for derived in ["issuer", "fhir_base"] {
        if table.contains_key(derived) {
            return Err((
                format!(".{derived}"),
                "is derived from server.public_url and cannot be set".into(),
            ));
        }
    }
    table.insert("issuer".into(), Value::String(format!("{public_url}/auth")));
    table.insert("fhir_base".into(), Value::String(fhir_base.to_string()));
    let raw: RawServerConfig =
        read(Value::Table(table), "").map_err(|(k, p)| (format!(".{k}"), p))?;
    ServerConfig::try_from(raw).map(Some).map_err(|e| match e {
        // The key below `smart.embedded`, so the error names the file or variable that set it.
        ServerError::InvalidConfig { key, problem } => (format!(".{key}"), problem.to_string()),
        other => (String::new(), other.to_string()),
    })
}

// === the ciphertext-update job's settings (used by `crate::ctupdate`) ===

/// How many resources one search page asks for, by default.
pub const PAGE_SIZE: usize = 100;
/// How long a claimed chunk is held before another worker may take it over, in seconds, by
/// default.
pub const LEASE_SECONDS: u64 = 300;
/// How often the background task looks for work, by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

/// How the job runs: `[ciphertext_update]` in the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobSettings {
    /// How often the background task looks for work (default [`DEFAULT_INTERVAL`]).
    pub interval: Duration,
    /// How long a claimed chunk is held before another worker may take it over, in seconds
    /// (default [`LEASE_SECONDS`]): after a replica dies mid-chunk, the others take its chunk
    /// over this long after its last claim or renewal. The lease is renewed after a third of it.
    pub lease_seconds: u64,
    /// How many resources one search page asks for, and so at most how many one chunk holds
    /// (default [`PAGE_SIZE`]).
    pub page_size: usize,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            interval: DEFAULT_INTERVAL,
            lease_seconds: LEASE_SECONDS,
            page_size: PAGE_SIZE,
        }
    }
}

/// How the searches the gateway filters itself (blind-index and filter modes) are bounded:
/// `[search]` in the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SearchSettings {
    /// The most candidates one such search opens (default 1000, the upstream's largest page): a
    /// search with more is refused (422) and must be narrowed.
    pub candidate_cap: usize,
    /// How long the gateway's paging links of such a search stay valid, in seconds (default
    /// 600).
    pub cursor_seconds: u64,
}

impl Default for SearchSettings {
    fn default() -> Self {
        Self {
            candidate_cap: 1000,
            cursor_seconds: 600,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cors;

    fn origins(list: &[&str]) -> Result<Cors, String> {
        let list: Vec<String> = list.iter().map(|s| (*s).to_string()).collect();
        Cors::from_origins(&list)
    }

    #[test]
    fn cors_origins_are_exact_origins_or_a_lone_star() {
        assert_eq!(origins(&[]), Ok(Cors::Off));
        assert_eq!(origins(&["*"]), Ok(Cors::AnyOrigin));
        assert_eq!(
            origins(&["https://app.example", "http://localhost:3000"]),
            Ok(Cors::Origins(vec![
                "https://app.example".into(),
                "http://localhost:3000".into()
            ]))
        );
        assert!(!Cors::Off.is_on());
        assert!(Cors::AnyOrigin.is_on());
    }

    #[test]
    fn cors_origins_refuse_what_a_browser_never_sends_as_origin() {
        let trailing = origins(&["https://app.example/"]).unwrap_err();
        assert!(
            trailing.contains("write it as `https://app.example`"),
            "{trailing}"
        );
        let path = origins(&["https://app.example/launch"]).unwrap_err();
        assert!(path.contains("not an origin"), "{path}");
        let default_port = origins(&["https://app.example:443"]).unwrap_err();
        assert!(
            default_port.contains("`https://app.example`"),
            "{default_port}"
        );
        for bad in [
            "app.example",
            "ftp://app.example",
            "file:///tmp",
            "",
            "null",
        ] {
            let problem = origins(&[bad]).unwrap_err();
            assert!(
                problem.contains("must be like https://"),
                "{bad}: {problem}"
            );
        }
        let mixed = origins(&["*", "https://app.example"]).unwrap_err();
        assert!(mixed.contains("cannot be listed with others"), "{mixed}");
    }
}
