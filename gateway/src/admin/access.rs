//! Who may use the admin API, and what a request must look like to be served: the guard in
//! front of every admin endpoint.
//!
//! In order, each failure answered with `{"error": "…"}` and logged (never with a token):
//!
//! 1. **`Host`** must name the admin listener itself: its address (`127.0.0.1:9090`,
//!    `[::1]:9090`) or, the listener being on loopback, `localhost:9090`; anything else is a 421.
//!    A web page that points a name of its own at 127.0.0.1 (DNS rebinding) sends that name.
//! 2. **`Origin`**: a request carrying one is a 403, whatever its value. Browsers send it on
//!    every cross-origin POST, simple requests (no preflight) included; `curl` and scripts never
//!    do.
//! 3. **The bearer token** (`Authorization: Bearer …`), for everything but `GET /live` and
//!    `GET /ready` (probes, which change nothing and show no identity): it must be one of
//!    [`AdminTokens`], else a 401 with `WWW-Authenticate`. Tokens are compared as SHA-256
//!    digests with [`subtle`]'s constant-time equality, against every configured token.
//! 4. **JSON only**: a `POST` must have `Content-Type: application/json`, else 415, a JSON object
//!    as its body (at most 64 KiB), else 400 (413 when larger), and no query string, else 400: a
//!    form-encoded or body-less `POST` is never acted on.
//!
//! A request that passes carries its token's name as an [`AdminCaller`] to the handlers, and the
//! response carries it as the audit line's `who` (`{"sub": NAME, "iss": "fhirseal-admin"}`,
//! [`AUDIT_ISSUER`]): the audit says which token did what, never the token.
//!
//! **Tokens** come from `server.admin_token_file`, or from the variable [`ADMIN_TOKEN_ENV`] with
//! `server.admin_token_from_env = true`, never from the configuration itself. Left out, the file
//! is `{data_dir}/admin.token`, created on first start ([`AdminTokens::load_or_create`]): 256
//! random bits in hex, readable by its owner only, like the authority's key-encryption key. The
//! text holds one token per line, `TOKEN` or `NAME TOKEN` (a lone token is named
//! [`DEFAULT_TOKEN_NAME`]); blank lines and `#` comments are skipped. Each token has at least
//! [`MIN_TOKEN_LEN`] visible ASCII characters (`openssl rand -hex 32` makes one).

use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::uri::Authority;
use axum::http::{HeaderMap, Method, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::AdminError;
use crate::audit::AuditWho;

/// The environment variable that holds the admin tokens with `server.admin_token_from_env`.
pub const ADMIN_TOKEN_ENV: &str = "FHIRSEAL_ADMIN_TOKEN";

/// The default token file's name in `server.data_dir`.
pub const DEFAULT_TOKEN_FILE: &str = "admin.token";

/// The name of a token written alone on its line.
pub const DEFAULT_TOKEN_NAME: &str = "admin";

/// The shortest token accepted: 32 characters (128 bits as hex). Generated tokens have 64.
pub const MIN_TOKEN_LEN: usize = 32;

/// The longest token accepted.
const MAX_TOKEN_LEN: usize = 1024;

/// The longest token name.
const MAX_NAME_LEN: usize = 64;

/// The largest admin request body read, in bytes.
pub const MAX_BODY: usize = 64 * 1024;

/// The `iss` of the audit line's `who` for an admin request: the token's name is its `sub`.
pub const AUDIT_ISSUER: &str = "fhirseal-admin";

/// The admin tokens: each a name and the SHA-256 digest of the token (the token itself is not
/// kept). Cheap to clone. `Debug` shows the names only.
#[derive(Clone)]
pub struct AdminTokens {
    entries: Arc<[(String, [u8; 32])]>,
}

impl AdminTokens {
    /// Reads tokens from `text`, one per line (`TOKEN` or `NAME TOKEN`; blank lines and `#`
    /// comments skipped).
    ///
    /// # Errors
    /// What is wrong and on which line, never the token: no token at all, a token shorter than
    /// [`MIN_TOKEN_LEN`] or not visible ASCII, a name that is not letters, digits, `.`, `_`, `-`
    /// or `@`, a name or a token given twice.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut entries: Vec<(String, [u8; 32])> = Vec::new();
        let mut lines: Vec<usize> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (name, token) = match fields.as_slice() {
                [token] => (DEFAULT_TOKEN_NAME, *token),
                [name, token] => (*name, *token),
                _ => {
                    return Err(format!(
                        "line {number}: expected `TOKEN` or `NAME TOKEN` (no token is shown here)"
                    ));
                }
            };
            if name.is_empty()
                || name.len() > MAX_NAME_LEN
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
            {
                return Err(format!(
                    "line {number}: a token's name is 1 to {MAX_NAME_LEN} letters, digits, `.`, \
                     `_`, `-` or `@`"
                ));
            }
            if token.len() < MIN_TOKEN_LEN {
                return Err(format!(
                    "line {number}: the token `{name}` is shorter than {MIN_TOKEN_LEN} characters \
                     (make one with `openssl rand -hex 32`)"
                ));
            }
            if token.len() > MAX_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "line {number}: the token `{name}` must be at most {MAX_TOKEN_LEN} visible \
                     ASCII characters"
                ));
            }
            let digest = digest(token);
            for ((other, other_digest), other_line) in entries.iter().zip(&lines) {
                if other == name {
                    return Err(format!(
                        "line {number}: the name `{name}` is given twice (line {other_line})"
                    ));
                }
                if *other_digest == digest {
                    return Err(format!(
                        "line {number}: the token `{name}` is the same as `{other}`'s (line \
                         {other_line}); each token names one holder"
                    ));
                }
            }
            entries.push((name.to_string(), digest));
            lines.push(number);
        }
        if entries.is_empty() {
            return Err("holds no token (one per line: `TOKEN` or `NAME TOKEN`)".into());
        }
        Ok(Self {
            entries: entries.into(),
        })
    }

    /// Reads the token file `path`.
    ///
    /// # Errors
    /// The file and what is wrong with it.
    pub fn read_file(path: &Path) -> Result<Self, String> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| format!("{} cannot be read: {e}", path.display()))?,
        );
        Self::parse(&text).map_err(|problem| format!("{}: {problem}", path.display()))
    }

    /// Reads the token file `path`, or creates it with one fresh token (256 random bits in hex,
    /// named [`DEFAULT_TOKEN_NAME`]) when it does not exist: readable by its owner only, its
    /// folder created owner-only if missing. Returns the tokens and whether the file was made.
    /// Of two processes creating it at once, one writes it and both read it.
    ///
    /// # Errors
    /// The file and what is wrong with it, or why it cannot be created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), String> {
        if path.exists() {
            return Self::read_file(path).map(|t| (t, false));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder
                .create(parent)
                .map_err(|e| format!("the folder {} cannot be created: {e}", parent.display()))?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = match options.open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Self::read_file(path).map(|t| (t, false));
            }
            Err(e) => return Err(format!("{} cannot be created: {e}", path.display())),
        };
        let mut bytes = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut *bytes);
        let token = Zeroizing::new(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
        file.write_all(format!("{}\n", token.as_str()).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| format!("{} cannot be written: {e}", path.display()))?;
        Self::parse(&token).map(|t| (t, true))
    }

    /// The name of the token `presented` is, if any. Every configured token's digest is compared
    /// with the presented one's in constant time; the digests have a fixed length whatever the
    /// tokens', so neither the comparison nor its length says how much of a token matched.
    pub fn identify(&self, presented: &str) -> Option<&str> {
        let presented = digest(presented);
        let mut found = None;
        for (name, stored) in self.entries.iter() {
            if bool::from(stored.ct_eq(&presented)) {
                found = Some(name.as_str());
            }
        }
        found
    }

    /// The tokens' names, in the order given.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(name, _)| name.as_str())
    }
}

impl fmt::Debug for AdminTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminTokens")
            .field("names", &self.names().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Where the admin tokens come from (`server.admin_token_file`, `server.admin_token_from_env`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum AdminTokenSource {
    /// Read when the configuration was loaded: from `server.admin_token_file`, or from
    /// [`ADMIN_TOKEN_ENV`].
    Read {
        /// The tokens.
        tokens: AdminTokens,
        /// The file, or the variable's name.
        from: String,
    },
    /// `server.admin_token_file` left out: `{data_dir}/admin.token`, read at start and created
    /// with a fresh token when missing.
    DefaultFile(PathBuf),
}

impl AdminTokenSource {
    /// The tokens: as read, or from the default file, created if missing (see
    /// [`AdminTokens::load_or_create`]); with where they are, for the start line.
    ///
    /// # Errors
    /// The default file and what is wrong with it.
    pub fn load(&self) -> Result<(AdminTokens, String), String> {
        match self {
            Self::Read { tokens, from } => Ok((tokens.clone(), from.clone())),
            Self::DefaultFile(path) => {
                let (tokens, created) = AdminTokens::load_or_create(path).map_err(|problem| {
                    format!("`server.admin_token_file` (default {DEFAULT_TOKEN_FILE}): {problem}")
                })?;
                let made = if created { "created in " } else { "" };
                Ok((tokens, format!("{made}{}", path.display())))
            }
        }
    }
}

/// The name of the token an admin request was made with, in its extensions for the handlers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminCaller(pub String);

/// What the guard checks requests against: the tokens and the `Host` values that name the admin
/// listener. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AdminAccess {
    tokens: AdminTokens,
    hosts: Arc<[String]>,
}

impl AdminAccess {
    /// Access to the admin listener at `address` with `tokens`. The `Host` values accepted are
    /// `address` itself and, for a loopback address, `localhost` with its port (each also
    /// without the port when it is 80).
    pub fn new(address: SocketAddr, tokens: AdminTokens) -> Self {
        let port = address.port();
        let mut names = vec![match address {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        }];
        if address.ip().is_loopback() {
            names.push("localhost".to_string());
        }
        let mut hosts: Vec<String> = names.iter().map(|n| format!("{n}:{port}")).collect();
        if port == 80 {
            hosts.extend(names);
        }
        Self {
            tokens,
            hosts: hosts.into(),
        }
    }

    /// The tokens.
    pub fn tokens(&self) -> &AdminTokens {
        &self.tokens
    }

    /// Whether the request names the admin listener: its `Host` (at most one) and the authority
    /// of its target (HTTP/2's `:authority`, or an absolute-form target), each if present, and
    /// at least one of them.
    fn host_allowed(&self, headers: &HeaderMap, uri: &Uri) -> bool {
        let allowed = |host: &str| self.hosts.iter().any(|a| a.eq_ignore_ascii_case(host));
        let mut values = headers.get_all(header::HOST).iter();
        let host = match (values.next(), values.next()) {
            (None, _) => None,
            (Some(value), None) => match value.to_str() {
                Ok(host) => Some(host),
                Err(_) => return false,
            },
            (Some(_), Some(_)) => return false,
        };
        let authority = uri.authority().map(Authority::as_str);
        (host.is_some() || authority.is_some())
            && host.is_none_or(allowed)
            && authority.is_none_or(allowed)
    }
}

/// Whether `method` and `path` are served without a token: the probes.
fn public(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD) && matches!(path, "/live" | "/ready")
}

/// The token of `Authorization: Bearer …` (exactly one such header).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Whether the request says its body is JSON (`application/json`, parameters allowed).
fn json_content(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// The guard (`axum::middleware::from_fn_with_state(access, guard)`): see the module
/// documentation.
pub async fn guard(State(access): State<AdminAccess>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    if !access.host_allowed(request.headers(), request.uri()) {
        tracing::warn!(%method, %path, "admin request refused: its Host does not name the admin listener");
        return AdminError::ForeignHost.into_response();
    }
    if request.headers().contains_key(header::ORIGIN) {
        tracing::warn!(%method, %path, "admin request refused: it carries an Origin (a browser's)");
        return AdminError::BrowserOrigin.into_response();
    }
    if public(&method, &path) {
        return next.run(request).await;
    }
    let Some(name) = bearer(request.headers())
        .and_then(|token| access.tokens.identify(token))
        .map(str::to_string)
    else {
        tracing::warn!(%method, %path, "admin request refused: no admin token, or not a configured one");
        return AdminError::Unauthorized.into_response();
    };
    let mut request = request;
    if method == Method::POST {
        request = match json_body(request).await {
            Ok(request) => request,
            Err(error) => return with_who(error.into_response(), &name),
        };
    }
    request.extensions_mut().insert(AdminCaller(name.clone()));
    with_who(next.run(request).await, &name)
}

/// A `POST`'s body, checked to be a JSON object sent as `application/json` without a query
/// string, put back for the handler.
async fn json_body(request: Request) -> Result<Request, AdminError> {
    if request.uri().query().is_some() {
        return Err(AdminError::Invalid(
            "an admin POST takes its parameters in its JSON body, not the query string",
        ));
    }
    if !json_content(request.headers()) {
        return Err(AdminError::NotJson);
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| AdminError::TooLarge)?;
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(_)) => Ok(Request::from_parts(parts, Body::from(bytes))),
        _ => Err(AdminError::Invalid(
            "the body must be a JSON object ({} when there is nothing to say)",
        )),
    }
}

/// `response` with the audit line's `who` naming the admin token `name`.
fn with_who(mut response: Response, name: &str) -> Response {
    response.extensions_mut().insert(AuditWho {
        sub: Some(name.to_string()),
        fhir_user: None,
        client_id: None,
        iss: AUDIT_ISSUER.to_string(),
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";

    #[test]
    fn tokens_are_named_and_found_by_digest() {
        let tokens = AdminTokens::parse(&format!("# ops\n\nalice {A}\n  bob {B}  \n")).unwrap();
        assert_eq!(tokens.names().collect::<Vec<_>>(), ["alice", "bob"]);
        assert_eq!(tokens.identify(A), Some("alice"));
        assert_eq!(tokens.identify(B), Some("bob"));
        assert_eq!(tokens.identify(&A[..31]), None);
        assert_eq!(tokens.identify(""), None);
        let lone = AdminTokens::parse(A).unwrap();
        assert_eq!(lone.identify(A), Some(DEFAULT_TOKEN_NAME));
        assert!(!format!("{tokens:?}").contains(A));
    }

    #[test]
    fn bad_token_texts_say_the_line_never_the_token() {
        let short = "x".repeat(MIN_TOKEN_LEN - 1);
        for (text, expected) in [
            (String::new(), "holds no token"),
            ("# only a comment".to_string(), "holds no token"),
            (
                format!("alice {short}"),
                "line 1: the token `alice` is shorter than 32",
            ),
            (
                format!("a b {A}"),
                "line 1: expected `TOKEN` or `NAME TOKEN`",
            ),
            (format!("al/ice {A}"), "line 1: a token's name is"),
            (
                format!("alice {A}\nalice {B}"),
                "line 2: the name `alice` is given twice",
            ),
            (
                format!("alice {A}\nbob {A}"),
                "line 2: the token `bob` is the same as `alice`'s",
            ),
            (format!("alice {A}\u{e9}"), "visible ASCII"),
        ] {
            let problem = AdminTokens::parse(&text).unwrap_err();
            assert!(problem.contains(expected), "{text:?}: {problem}");
            assert!(
                !problem.contains(A) && !problem.contains(&short),
                "{problem}"
            );
        }
    }

    #[test]
    fn hosts_are_the_listener_and_localhost() {
        let tokens = AdminTokens::parse(A).unwrap();
        let access = AdminAccess::new("127.0.0.1:9090".parse().unwrap(), tokens.clone());
        let root = Uri::from_static("/");
        let host = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, value.parse().unwrap());
            access.host_allowed(&headers, &root)
        };
        assert!(host("127.0.0.1:9090"));
        assert!(host("LOCALHOST:9090"));
        for foreign in [
            "127.0.0.1",
            "localhost",
            "evil.example:9090",
            "127.0.0.1:9091",
            "",
        ] {
            assert!(!host(foreign), "{foreign}");
        }
        assert!(!access.host_allowed(&HeaderMap::new(), &root));
        let absolute = |uri: &'static str| Uri::from_static(uri);
        assert!(access.host_allowed(&HeaderMap::new(), &absolute("http://localhost:9090/live")));
        assert!(!access.host_allowed(&HeaderMap::new(), &absolute("http://evil.example:9090/")));
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "127.0.0.1:9090".parse().unwrap());
        assert!(!access.host_allowed(&headers, &absolute("http://evil.example:9090/")));
        headers.append(header::HOST, "127.0.0.1:9090".parse().unwrap());
        assert!(!access.host_allowed(&headers, &root), "two Host headers");
        let v6 = AdminAccess::new("[::1]:80".parse().unwrap(), tokens);
        assert_eq!(
            &*v6.hosts,
            ["[::1]:80", "localhost:80", "[::1]", "localhost"]
        );
    }

    #[test]
    fn bearer_and_json_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, "bearer  abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
        headers.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert!(json_content(&headers));
        headers.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        assert!(!json_content(&headers));
    }
}
