//! What the gateway runs with, built once at start from a [`Config`]: the attribute authority
//! (created on first start), the policy, the upstream client, the embedded authorization server,
//! the token verifier, the keyring and the shared-header store. Every failure says which file, key or store is at fault.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fhirseal_auth_server::{AuthServer, SigningKey};
use fhirseal_authority::{
    AuditChain, Authority, CheckpointPolicy, CheckpointSigner, InitOptions, KEK_ENV, Kek, store,
};
use fhirseal_policy::Policy;
use fhirseal_smart::discovery::Discovery;
use fhirseal_smart::verify::{Verifier, VerifierConfig};
use fhirseal_upstream::Upstream;
use rand_core::OsRng;

use fhirseal_envelope::HeaderCache;

use crate::audit::chain::ChainWriter;
use crate::audit::{AuditError, AuditSink};
use crate::config::{AuditCommit, Config};
use crate::consent::log::Consents;
use crate::guard::CreateGuards;
use crate::headers::HeaderStore;
use crate::keys::{Keyring, KeyringSettings};
use crate::metrics::Metrics;
use crate::seal::Sealing;

/// The gateway's shared state: its [`Parts`] behind one reference count. Every request clones it
/// (axum hands each extractor and middleware its own copy): one atomic increment, where a clone
/// of the parts themselves was one per shared part, each a cache line the two cores pass back
/// and forth under load (issue 18, BENCHMARKS.md).
#[derive(Clone, Debug)]
pub struct AppState(Arc<Parts>);

impl std::ops::Deref for AppState {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

/// Changing a part of one copy (a test giving its gateway an audit sink of its own) copies the
/// parts first, so the other copies keep theirs, as when each copy held its own.
impl std::ops::DerefMut for AppState {
    fn deref_mut(&mut self) -> &mut Parts {
        Arc::make_mut(&mut self.0)
    }
}

/// What [`AppState`] holds.
#[derive(Clone, Debug)]
pub struct Parts {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// The attribute authority.
    pub authority: Arc<Authority>,
    /// The compliance policy.
    pub policy: Arc<Policy>,
    /// The upstream FHIR server.
    pub upstream: Upstream,
    /// Verifies every request's bearer token.
    pub verifier: Arc<Verifier>,
    /// The embedded authorization server, when on.
    pub auth_server: Option<Arc<AuthServer>>,
    /// Without the embedded server: the first configured issuer's discovery document, from
    /// which the gateway's `smart-configuration` is derived.
    pub discovery: Option<Arc<Discovery>>,
    /// Callers' keys: enrolment on first use, re-keying, per-period decryption keys.
    pub keyring: Keyring,
    /// The shared headers, stored on the upstream.
    pub headers: Arc<HeaderStore>,
    /// What writes seal with: the shared headers this process seals under, the blind index.
    pub sealing: Arc<Sealing>,
    /// Header keys already opened, per key holder (bounded, zeroized, five minutes).
    pub header_cache: Arc<HeaderCache>,
    /// The guards of creates by `PUT`: one create at a time of a resource, in this process and
    /// across the replicas sharing the authority's store.
    pub creates: Arc<CreateGuards>,
    /// Where the audit lines go (`server.audit_log`, or standard output).
    pub audit: AuditSink,
    /// The process's metrics, served at the admin listener's `/metrics`.
    pub metrics: Metrics,
    /// Break-glass grants in force and alerts.
    pub break_glass: Arc<crate::break_glass::shared::BreakGlass>,
    /// Whether the warm-up after a start has ended ([`crate::warm`]), for `/ready`.
    pub warmth: Arc<Warmth>,
    /// The patients' consents in force ([`crate::consent`]).
    pub consents: Arc<Consents>,
}

/// Why the gateway cannot start. Each names what is at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartupError {
    /// The data folder cannot be created.
    #[error("the data folder {path} cannot be created: {source}")]
    DataDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key-encryption key cannot be read or created.
    #[error("the authority's key-encryption key: {0}")]
    Kek(String),
    /// The authority's store exists but its key-encryption key file does not: a new key would
    /// not open it, so none is made.
    #[error(
        "the authority at {location} exists but its key-encryption key {kek} is missing; \
         restore it or set {KEK_ENV}"
    )]
    KekMissing {
        /// The authority's store.
        location: String,
        /// The key file looked for.
        kek: PathBuf,
    },
    /// The audit log cannot be opened.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The authority cannot be opened or created.
    #[error("the attribute authority: {0}")]
    Authority(#[from] fhirseal_authority::Error),
    /// The consent log in the authority does not read.
    #[error("the attribute authority's consent log: {0}")]
    Consent(#[from] crate::consent::log::ConsentLogError),
    /// The policy does not load; each problem names its file, line and key.
    #[error("the policy:\n{0}")]
    Policy(#[from] fhirseal_policy::PolicyErrors),
    /// The upstream client cannot be built.
    #[error("`upstream`: {0}")]
    Upstream(#[from] fhirseal_upstream::ConfigError),
    /// The embedded authorization server cannot start.
    #[error("`smart.embedded`: {0}")]
    AuthServer(#[from] fhirseal_auth_server::ServerError),
    /// The HTTP client for keys and introspection cannot be built (no TLS roots, say).
    #[error("the HTTP client for token keys: {0}")]
    Http(String),
    /// The token verifier refuses the issuers.
    #[error("`smart.issuers`: {0}")]
    Verifier(#[from] fhirseal_smart::verify::ConfigError),
}

/// How many opened header keys are kept (per holder and header).
const HEADER_CACHE_ENTRIES: usize = 65_536;

impl AppState {
    /// Builds the state for `config` at time `now` (seconds since the Unix epoch), creating the
    /// data folder, the key-encryption key and the authority on first start.
    pub fn build(config: Config, now: i64) -> Result<Self, StartupError> {
        let authority = Arc::new(open_authority(&config, now)?);
        let audit = AuditSink::open(config.audit_log.as_deref())?;
        let audit = match config.audit_chain {
            None => audit,
            Some(policy) => audit.with_chain(chain_writer(&config, &authority, policy)?),
        };
        let policy = Arc::new(if config.policy_files.is_empty() {
            Policy::embedded_default()?
        } else {
            Policy::from_paths(&config.policy_files)?
        });
        // The R4 search-parameter table, which the first search would otherwise parse.
        fhirseal_fhir::search::load_now();
        let metrics = Metrics::new();
        let upstream =
            Upstream::new(config.upstream.clone())?.with_observer(Arc::new(metrics.clone()));
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| StartupError::Http(e.to_string()))?;
        let auth_server = match &config.embedded {
            None => None,
            Some(server) => {
                let key = SigningKey::load_or_create(&authority, &mut OsRng)?;
                Some(Arc::new(AuthServer::new(
                    server.clone(),
                    key,
                    http.clone(),
                )?))
            }
        };
        let discovery = match (&auth_server, config.issuers.first()) {
            (None, Some(issuer)) => Some(Arc::new(Discovery::new(
                issuer.issuer.clone(),
                http.clone(),
            ))),
            _ => None,
        };
        let mut issuers = config.issuers.clone();
        if let Some(server) = &auth_server {
            issuers.push(server.issuer_config());
        }
        let verifier = Verifier::new(
            VerifierConfig {
                issuers,
                introspection: config.introspection.clone(),
                ..VerifierConfig::default()
            },
            http,
        )?;
        let sealing = Arc::new(Sealing::new(Arc::clone(&authority), Arc::clone(&policy))?);
        let consents = Arc::new(Consents::load(&authority)?);
        if !policy.break_glass().is_empty() && config.break_glass.webhook_url.is_none() {
            tracing::warn!(
                "the policy has break-glass rules but break_glass.webhook_url is not set: \
                 emergencies are logged and listed by the admin API only"
            );
        }
        let break_glass = Arc::new(crate::break_glass::shared::BreakGlass::new(
            config.break_glass.clone(),
            metrics.clone(),
        ));
        Ok(Self(Arc::new(Parts {
            sealing,
            creates: Arc::new(CreateGuards::new(Arc::clone(&authority))),
            keyring: Keyring::with_settings(
                Arc::clone(&authority),
                Arc::clone(&policy),
                KeyringSettings {
                    cache_seconds: config.registration_cache_seconds,
                    ..KeyringSettings::default()
                },
            )
            .with_metrics(metrics.clone())
            .with_consents(Arc::clone(&consents)),
            headers: Arc::new(HeaderStore::new(upstream.clone()).with_metrics(metrics.clone())),
            header_cache: Arc::new(HeaderCache::new(
                HEADER_CACHE_ENTRIES,
                Duration::from_secs(300),
            )),
            config: Arc::new(config),
            authority,
            policy,
            upstream,
            verifier: Arc::new(verifier),
            auth_server,
            discovery,
            audit,
            metrics,
            break_glass,
            warmth: Arc::default(),
            consents,
        })))
    }
}

/// The audit chain's writer: its own connection to the authority's store (and another for
/// searches), the checkpoint key (made on first start), its thread.
fn chain_writer(
    config: &Config,
    authority: &Authority,
    policy: CheckpointPolicy,
) -> Result<ChainWriter, StartupError> {
    let signer = CheckpointSigner::load_or_create(authority, &mut OsRng)?;
    let mut writer = store::open(&config.authority_database)?;
    if config.audit_commit == AuditCommit::Fast {
        writer.relax_commits()?;
    }
    let chain = AuditChain::new(writer, signer, policy);
    let reader = store::open(&config.authority_database)?;
    ChainWriter::start(chain, reader, Duration::from_secs(policy.every_seconds()))
        .map_err(|e| StartupError::Audit(AuditError::Chain(e)))
}

/// Opens the authority, or creates it (and its key-encryption key file) on first start.
fn open_authority(config: &Config, now: i64) -> Result<Authority, StartupError> {
    if config.authority_database.starts_with("sqlite:") {
        create_dir(&config.data_dir)?;
        if let Some(parent) =
            Path::new(config.authority_database.trim_start_matches("sqlite:")).parent()
        {
            create_dir(parent)?;
        }
    }
    let mut store = store::open(&config.authority_database)?;
    let exists = store.master()?.is_some();
    let kek = match &config.authority_kek_file {
        None => {
            let hex = std::env::var(KEK_ENV).map_err(|_| {
                StartupError::Kek(format!(
                    "{KEK_ENV} is not set (authority.kek_from_env = true)"
                ))
            })?;
            Kek::from_hex(&hex, KEK_ENV).map_err(|e| StartupError::Kek(e.to_string()))?
        }
        Some(path) if path.exists() => {
            Kek::from_file(path).map_err(|e| StartupError::Kek(e.to_string()))?
        }
        Some(path) if exists => {
            return Err(StartupError::KekMissing {
                location: store.location().to_string(),
                kek: path.clone(),
            });
        }
        Some(path) => {
            if let Some(parent) = path.parent() {
                create_dir(parent)?;
            }
            let kek = Kek::generate(&mut OsRng);
            kek.write_new_file(path)
                .map_err(|e| StartupError::Kek(e.to_string()))?;
            kek
        }
    };
    Ok(if exists {
        Authority::open(store, kek)?
    } else {
        Authority::init(store, kek, InitOptions::default(), now, &mut OsRng)?
    })
}

/// Creates `path` (and its parents) readable by the owner only, if missing.
fn create_dir(path: &Path) -> Result<(), StartupError> {
    if path.as_os_str().is_empty() || path.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(path)
        .map_err(|source| StartupError::DataDir {
            path: path.to_path_buf(),
            source,
        })
}

/// Whether the warm-up after a start has ended ([`crate::warm`]), for `/ready`. Its own type
/// here, so that the state imports nothing of the warm-up, which uses the state. A gateway that
/// never starts one (tests, the command-line jobs) counts as warm.
#[derive(Debug)]
pub struct Warmth {
    warm: AtomicBool,
}

impl Default for Warmth {
    fn default() -> Self {
        Self {
            warm: AtomicBool::new(true),
        }
    }
}

impl Warmth {
    /// Whether `/ready` may say ready.
    pub fn is_warm(&self) -> bool {
        self.warm.load(Ordering::Acquire)
    }

    /// A warm-up began: not ready until it ends.
    pub(crate) fn begin(&self) {
        self.warm.store(false, Ordering::Release);
    }

    /// The warm-up ended.
    pub(crate) fn end(&self) {
        self.warm.store(true, Ordering::Release);
    }
}
