//! Configuration: the serde-facing [`RawUpstreamConfig`] and the validated [`UpstreamConfig`].
//!
//! Parse, don't validate (STYLE.md rule 2): serde reads the `Raw…` structs, which refuse unknown
//! keys; one `TryFrom` builds the validated type, reading secrets from their files or environment
//! variables once, at start-up. Every error names the key it is about and never the secret.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::HeaderValue;
use serde::Deserialize;
use url::Url;
use zeroize::Zeroizing;

/// The upstream section of the gateway's configuration file, as read by serde.
///
/// Every key except `base_url` is optional; an absent key takes the default documented on it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamConfig {
    /// Base URL of the FHIR server, absolute `http(s)`, without query or fragment.
    pub base_url: String,
    /// Time allowed to open a connection (TCP and TLS), in milliseconds; default 2000.
    pub connect_timeout_ms: Option<u64>,
    /// Time allowed for one attempt, from sending to the last body byte, in milliseconds;
    /// default 30000.
    pub request_timeout_ms: Option<u64>,
    /// Idle connections kept per host; default 32.
    pub pool_idle_per_host: Option<u32>,
    /// How long an idle pooled connection is kept, in milliseconds; default 90000.
    pub pool_idle_timeout_ms: Option<u64>,
    /// Retries after the first attempt, for idempotent requests only; default 2.
    pub max_retries: Option<u32>,
    /// First backoff delay before a retry, in milliseconds; default 100. Doubles per retry.
    pub backoff_base_ms: Option<u64>,
    /// Largest backoff delay, in milliseconds; default 2000.
    pub backoff_max_ms: Option<u64>,
    /// Longest `Retry-After` honoured, in milliseconds; default 5000. A longer one is not
    /// waited for: the response is returned as it is.
    pub retry_after_max_ms: Option<u64>,
    /// Largest response body read, in bytes; default 32 MiB. The gateway also writes no
    /// resource whose sealed form is larger than 7/8 of it, so that it can read back whatever
    /// it writes (`docs/gateway-rest.md`, "Size").
    pub max_response_bytes: Option<u64>,
    /// How the gateway authenticates to the upstream; default none.
    #[serde(default)]
    pub auth: RawAuth,
}

/// How the gateway authenticates itself to the upstream server, as read by serde.
///
/// Tagged by `kind`: `none`, `bearer` or `client_credentials`. Secrets come from exactly one of
/// an inline value, a file (trailing whitespace trimmed) or an environment variable.
#[derive(Debug, Default, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum RawAuth {
    /// No `Authorization` header is sent.
    #[default]
    None,
    /// A static bearer token.
    Bearer {
        /// The token itself.
        token: Option<SecretString>,
        /// A file holding the token.
        token_file: Option<PathBuf>,
        /// An environment variable holding the token.
        token_env: Option<String>,
    },
    /// OAuth 2.0 client credentials grant (RFC 6749 §4.4) against `token_url`.
    ClientCredentials {
        /// The token endpoint, absolute `http(s)`.
        token_url: String,
        /// The client identifier.
        client_id: String,
        /// The client secret itself.
        client_secret: Option<SecretString>,
        /// A file holding the client secret.
        client_secret_file: Option<PathBuf>,
        /// An environment variable holding the client secret.
        client_secret_env: Option<String>,
        /// Scopes requested; none by default.
        #[serde(default)]
        scopes: Vec<String>,
        /// How the client authenticates to the token endpoint; default `basic`.
        auth_style: Option<AuthStyle>,
    },
}

/// How the client identifier and secret reach the token endpoint (RFC 6749 §2.3.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthStyle {
    /// HTTP Basic authentication (`client_secret_basic`).
    #[default]
    Basic,
    /// Form parameters in the request body (`client_secret_post`).
    Post,
}

/// A secret string from a configuration file: wiped on drop, never printed.
#[derive(Clone, Deserialize)]
#[serde(from = "String")]
pub struct SecretString(Zeroizing<String>);

/// The validated configuration of the upstream client. Built only through `TryFrom`.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    pub(crate) base: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) pool_idle_per_host: usize,
    pub(crate) pool_idle_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) max_response_bytes: u64,
    pub(crate) auth: UpstreamAuth,
}

/// Validated authentication towards the upstream.
#[derive(Clone, Debug)]
pub(crate) enum UpstreamAuth {
    /// No credential.
    None,
    /// A static bearer credential, ready as a sensitive header value.
    Bearer(HeaderValue),
    /// OAuth 2.0 client credentials.
    ClientCredentials(ClientCredentials),
}

/// Validated client-credentials settings.
#[derive(Clone)]
pub(crate) struct ClientCredentials {
    pub(crate) token_url: Url,
    pub(crate) client_id: String,
    pub(crate) client_secret: SecretString,
    pub(crate) scopes: Vec<String>,
    pub(crate) auth_style: AuthStyle,
}

/// When and how long to wait before retrying an idempotent request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RetryPolicy {
    pub(crate) max_retries: u32,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) retry_after_max: Duration,
}

/// Why an upstream configuration was refused. Each variant names the key at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The URL at `key` is not an absolute `http`/`https` URL with a host.
    #[error("upstream setting `{key}` is not an absolute http(s) URL")]
    NotHttpUrl {
        /// The offending key.
        key: &'static str,
    },
    /// The URL at `key` carries user info, or a query or fragment where none is allowed.
    #[error("upstream setting `{key}` must not carry user info, a query or a fragment")]
    UrlHasExtraParts {
        /// The offending key.
        key: &'static str,
    },
    /// The number at `key` lies outside `min..=max`.
    #[error("upstream setting `{key}` must lie between {min} and {max}")]
    OutOfRange {
        /// The offending key.
        key: &'static str,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// Not exactly one of the alternative sources of a secret is set.
    #[error("exactly one of upstream settings `{key}`, `{key}_file`, `{key}_env` must be set")]
    SecretSourceCount {
        /// The secret's key (its `_file` and `_env` variants are implied).
        key: &'static str,
    },
    /// The secret file could not be read, or is larger than 64 KiB.
    #[error("upstream setting `{key}`: cannot read {path:?} ({kind})")]
    SecretFileUnreadable {
        /// The offending key.
        key: &'static str,
        /// The file named there.
        path: PathBuf,
        /// What went wrong.
        kind: std::io::ErrorKind,
    },
    /// The environment variable named for a secret is unset or not Unicode.
    #[error("upstream setting `{key}`: environment variable `{var}` is unset or not Unicode")]
    SecretEnvMissing {
        /// The offending key.
        key: &'static str,
        /// The variable named there.
        var: String,
    },
    /// The secret is empty or holds characters its use does not allow (for a bearer token: the
    /// RFC 6750 `b64token` alphabet; for a client secret: visible ASCII).
    #[error("upstream setting `{key}`: the secret is empty or malformed")]
    SecretMalformed {
        /// The offending key.
        key: &'static str,
    },
    /// The value at `key` is empty or holds characters it must not (spaces, control characters).
    #[error("upstream setting `{key}` is empty or malformed")]
    Malformed {
        /// The offending key.
        key: &'static str,
    },
    /// The HTTP client could not be built (TLS backend or platform verifier unavailable).
    #[error("the upstream HTTP client could not be built")]
    HttpClient,
}

impl UpstreamConfig {
    /// The normalised base URL: no trailing slash, no query, no fragment.
    pub fn base_url(&self) -> &str {
        &self.base
    }
}

impl TryFrom<RawUpstreamConfig> for UpstreamConfig {
    type Error = ConfigError;

    fn try_from(raw: RawUpstreamConfig) -> Result<Self, ConfigError> {
        let backoff_base: u64 = number("backoff_base_ms", raw.backoff_base_ms, BACKOFF_BASE_MS)?;
        let backoff_max_ms = Limits {
            default: BACKOFF_MAX_MS.default.max(backoff_base),
            min: backoff_base,
            ..BACKOFF_MAX_MS
        };
        let retry = RetryPolicy {
            max_retries: number("max_retries", raw.max_retries.map(u64::from), MAX_RETRIES)?,
            backoff_base: Duration::from_millis(backoff_base),
            backoff_max: millis("backoff_max_ms", raw.backoff_max_ms, backoff_max_ms)?,
            retry_after_max: millis(
                "retry_after_max_ms",
                raw.retry_after_max_ms,
                RETRY_AFTER_MAX_MS,
            )?,
        };
        Ok(Self {
            base: base_url(&raw.base_url)?,
            connect_timeout: millis(
                "connect_timeout_ms",
                raw.connect_timeout_ms,
                CONNECT_TIMEOUT_MS,
            )?,
            request_timeout: millis(
                "request_timeout_ms",
                raw.request_timeout_ms,
                REQUEST_TIMEOUT_MS,
            )?,
            pool_idle_per_host: number(
                "pool_idle_per_host",
                raw.pool_idle_per_host.map(u64::from),
                POOL_IDLE_PER_HOST,
            )?,
            pool_idle_timeout: millis(
                "pool_idle_timeout_ms",
                raw.pool_idle_timeout_ms,
                POOL_IDLE_TIMEOUT_MS,
            )?,
            retry,
            max_response_bytes: number(
                "max_response_bytes",
                raw.max_response_bytes,
                MAX_RESPONSE_BYTES,
            )?,
            auth: UpstreamAuth::try_from(raw.auth)?,
        })
    }
}

impl TryFrom<RawAuth> for UpstreamAuth {
    type Error = ConfigError;

    fn try_from(raw: RawAuth) -> Result<Self, ConfigError> {
        match raw {
            RawAuth::None => Ok(Self::None),
            RawAuth::Bearer {
                token,
                token_file,
                token_env,
            } => {
                let token = secret(
                    "auth.token",
                    token,
                    token_file.as_deref(),
                    token_env.as_deref(),
                )?;
                bearer_header(token.expose())
                    .map(Self::Bearer)
                    .ok_or(ConfigError::SecretMalformed { key: "auth.token" })
            }
            RawAuth::ClientCredentials {
                token_url,
                client_id,
                client_secret,
                client_secret_file,
                client_secret_env,
                scopes,
                auth_style,
            } => {
                let key = "auth.client_secret";
                let client_secret = secret(
                    key,
                    client_secret,
                    client_secret_file.as_deref(),
                    client_secret_env.as_deref(),
                )?;
                if !is_visible_ascii(client_secret.expose()) {
                    return Err(ConfigError::SecretMalformed { key });
                }
                if !is_visible_ascii(&client_id) {
                    return Err(ConfigError::Malformed {
                        key: "auth.client_id",
                    });
                }
                if !scopes.iter().all(|scope| is_scope_token(scope)) {
                    return Err(ConfigError::Malformed { key: "auth.scopes" });
                }
                Ok(Self::ClientCredentials(ClientCredentials {
                    token_url: http_url("auth.token_url", &token_url, true)?,
                    client_id,
                    client_secret,
                    scopes,
                    auth_style: auth_style.unwrap_or_default(),
                }))
            }
        }
    }
}

// === impl SecretString ===

impl SecretString {
    /// The secret itself; keep the borrow short and never log it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self(Zeroizing::new(value))
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString([redacted])")
    }
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("token_url", &self.token_url.as_str())
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .field("auth_style", &self.auth_style)
            .finish_non_exhaustive()
    }
}

/// A bearer token as a sensitive `Authorization` value, if it is an RFC 6750 `b64token`.
pub(crate) fn bearer_header(token: &str) -> Option<HeaderValue> {
    let body = token.trim_end_matches('=');
    let valid = !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    if !valid {
        return None;
    }
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Parses the base URL and normalises it: lower-case scheme and host, default port dropped,
/// no trailing slash.
fn base_url(text: &str) -> Result<String, ConfigError> {
    let url = http_url("base_url", text, false)?;
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn http_url(key: &'static str, text: &str, query_allowed: bool) -> Result<Url, ConfigError> {
    let url = Url::parse(text).map_err(|_| ConfigError::NotHttpUrl { key })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::NotHttpUrl { key });
    }
    let extra = !url.username().is_empty()
        || url.password().is_some()
        || url.fragment().is_some()
        || (!query_allowed && url.query().is_some());
    if extra {
        return Err(ConfigError::UrlHasExtraParts { key });
    }
    Ok(url)
}

/// Exactly one of an inline value, a file or an environment variable.
fn secret(
    key: &'static str,
    inline: Option<SecretString>,
    file: Option<&Path>,
    env: Option<&str>,
) -> Result<SecretString, ConfigError> {
    let secret = match (inline, file, env) {
        (Some(secret), None, None) => secret,
        (None, Some(path), None) => secret_file(key, path)?,
        (None, None, Some(var)) => std::env::var(var).map(SecretString::from).map_err(|_| {
            ConfigError::SecretEnvMissing {
                key,
                var: var.to_owned(),
            }
        })?,
        _ => return Err(ConfigError::SecretSourceCount { key }),
    };
    if secret.expose().is_empty() {
        return Err(ConfigError::SecretMalformed { key });
    }
    Ok(secret)
}

fn secret_file(key: &'static str, path: &Path) -> Result<SecretString, ConfigError> {
    let unreadable = |kind| ConfigError::SecretFileUnreadable {
        key,
        path: path.to_owned(),
        kind,
    };
    let metadata = std::fs::metadata(path).map_err(|e| unreadable(e.kind()))?;
    if metadata.len() > MAX_SECRET_FILE {
        return Err(unreadable(std::io::ErrorKind::FileTooLarge));
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| unreadable(e.kind()))?);
    Ok(SecretString::from(text.trim_end().to_owned()))
}

fn millis(key: &'static str, value: Option<u64>, limits: Limits) -> Result<Duration, ConfigError> {
    number(key, value, limits).map(Duration::from_millis)
}

/// The value, or the default if absent, checked against the limits.
fn number<T: TryFrom<u64>>(
    key: &'static str,
    value: Option<u64>,
    limits: Limits,
) -> Result<T, ConfigError> {
    let Limits { default, min, max } = limits;
    let value = value.unwrap_or(default);
    let out_of_range = ConfigError::OutOfRange { key, min, max };
    if !(min..=max).contains(&value) {
        return Err(out_of_range);
    }
    T::try_from(value).map_err(|_| out_of_range)
}

fn is_visible_ascii(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic())
}

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
fn is_scope_token(scope: &str) -> bool {
    is_visible_ascii(scope) && !scope.contains(['"', '\\'])
}

/// Default and bounds of a numeric setting.
#[derive(Clone, Copy)]
struct Limits {
    default: u64,
    min: u64,
    max: u64,
}

const CONNECT_TIMEOUT_MS: Limits = Limits {
    default: 2_000,
    min: 1,
    max: 600_000,
};
const REQUEST_TIMEOUT_MS: Limits = Limits {
    default: 30_000,
    min: 1,
    max: 3_600_000,
};
const POOL_IDLE_PER_HOST: Limits = Limits {
    default: 32,
    min: 0,
    max: 1_024,
};
const POOL_IDLE_TIMEOUT_MS: Limits = Limits {
    default: 90_000,
    min: 0,
    max: 3_600_000,
};
const MAX_RETRIES: Limits = Limits {
    default: 2,
    min: 0,
    max: 10,
};
const BACKOFF_BASE_MS: Limits = Limits {
    default: 100,
    min: 1,
    max: 60_000,
};
/// The minimum is raised to the configured base, and the default to at least the base.
const BACKOFF_MAX_MS: Limits = Limits {
    default: 2_000,
    min: 1,
    max: 60_000,
};
const RETRY_AFTER_MAX_MS: Limits = Limits {
    default: 5_000,
    min: 0,
    max: 60_000,
};
const MAX_RESPONSE_BYTES: Limits = Limits {
    default: 32 << 20,
    min: 1,
    max: 1 << 30,
};

/// Largest secret file read.
const MAX_SECRET_FILE: u64 = 64 * 1024;
