//! The audit step of the request flow: one structured JSON line per request (who, what, which
//! elements were opened, masked or withheld as forged, the outcome), never a protected value.
//!
//! Handlers describe what they did in an [`AuditNote`] put in the response's extensions; the
//! authentication step puts the verified caller there as an [`AuditWho`]; the [`audit`]
//! middleware (the outermost layer) gives the request its id, and once the response is ready
//! joins both with the method, the path, the status and the time taken into one line:
//!
//! ```json
//! {"ts":"2026-11-28T05:10:57.123Z","request_id":"5f0c…","method":"GET",
//!  "path":"/fhir/Patient/pat-smith","status":200,"outcome":"success",
//!  "who":{"sub":"dr.grey","fhir_user":"Practitioner/dr-grey","client_id":"demo-app",
//!         "iss":"http://127.0.0.1:8080/auth"},
//!  "interaction":"read","resources":["Patient/pat-smith"],"patients":["Patient/pat-smith"],
//!  "opened":4,"masked":1,"forged":0,"sealed":0,"duration_ms":12.408}
//! ```
//!
//! (on one line). `patients` names the patients whose records the request concerns
//! ([`note`]: every record read, written or deleted, refused ones included, and every entry a
//! search returned), for `GET /fhir/AuditEvent?patient=…` ([`search`]). A request the compliance policy denied also has `reason`: the policy's words
//! (which rules, which attributes were needed and held), which the client does not get. A
//! batch's or transaction's line also has `entries`, one object per entry with the same
//! `interaction`, `resources`, `patients`, `opened`, `masked`, `forged`, `sealed` and `reason` as the
//! request alone would have, and the entry's `status`; its own counts are their sums. What
//! never goes in: the query string (search parameters may hold the very
//! values the gateway protects), any header (tokens), any body, any claim beyond the four
//! identifiers. `who` is `null` when no token was verified (a 401, the discovery documents, the
//! authorization server's own pages). A sign-in at the embedded authorization server (`POST
//! /auth/login` that checked credentials or was refused by the login throttle) also has
//! `login`: `{"username":"dr.grey","result":"failure","by":null,"source":"192.0.2.7"}`, with
//! `result` one of `success`, `failure`, `lockout` (a failure that locked the user name or the
//! source), `throttled` (refused during a back-off) or `locked` (refused during a lockout), and
//! `by` `user` or `source` for the last three; the user name as typed (at most 128 characters),
//! never the password. The line goes to an [`AuditSink`]: standard output by default, or a file
//! (`server.audit_log`), appended and flushed line by line; and, with `server.audit_chain` (on by
//! default), also to the authority's tamper-evident hash chain ([`chain`]), committed before the
//! response leaves: a line that cannot be chained withholds its response (503, fail closed).

use std::cell::RefCell;
use std::fmt;
use std::fs::File;
use std::hash::{BuildHasher, RandomState};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use fhirseal_auth_server::LoginAudit;
use fhirseal_smart::verify::Verified;
use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, RngCore, SeedableRng};
use serde_json::{Value, json};
use tracing::Instrument;

use crate::error::ApiError;

pub mod chain;
pub mod event;
pub mod note;
pub mod search;

pub use note::{AuditNote, BreakGlassNote};

use self::chain::ChainWriter;

/// The header that carries the request id, in and out.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Who made a request, as the audit line names them: identifiers only, never the token or its
/// other claims. Put in the response's extensions by [`crate::auth::authenticate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditWho {
    /// The token's subject (`sub`), if it has one.
    pub sub: Option<String>,
    /// The token's `fhirUser` (`Practitioner/123`), if any.
    pub fhir_user: Option<String>,
    /// The OAuth client the token was issued to, if named.
    pub client_id: Option<String>,
    /// The token's issuer.
    pub iss: String,
}

impl AuditWho {
    /// The identifiers of a verified token.
    pub fn of(verified: &Verified) -> Self {
        let principal = &verified.context.principal;
        Self {
            sub: verified.subject.clone(),
            fhir_user: principal.fhir_user.clone(),
            client_id: principal.client_id.clone(),
            iss: verified.issuer.clone(),
        }
    }
}

/// The id of a request, in its extensions (for handlers and logs) and echoed as `X-Request-Id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

/// Where audit lines go. Cheap to clone: clones share the destination.
#[derive(Clone)]
#[non_exhaustive]
pub enum AuditSink {
    /// Standard output, one line per request, flushed after each.
    Stdout,
    /// A file, appended to and flushed after each line.
    File(Arc<Mutex<File>>),
    /// Memory, for tests: each line (without its newline) pushed to the vector.
    Memory(Arc<Mutex<Vec<String>>>),
    /// `lines`, and the authority's hash chain (`server.audit_chain`): each line is written to
    /// `lines`, then appended to the chain before its response leaves ([`chain`]).
    Chained {
        /// Where the lines go too.
        lines: Box<Self>,
        /// The chain's writer.
        chain: ChainWriter,
    },
}

/// Why the audit sink cannot be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The audit log file (or its folder) cannot be created or opened for appending.
    #[error("the audit log {path} cannot be opened for appending: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The audit chain's writer thread cannot be started.
    #[error("the audit chain's writer cannot start: {0}")]
    Chain(std::io::Error),
}

// === impl AuditSink ===

impl AuditSink {
    /// The sink for `server.audit_log`: standard output for `None`, else the file, created
    /// (readable by its owner only) with its folder if missing, and appended to.
    pub fn open(path: Option<&Path>) -> Result<Self, AuditError> {
        let Some(path) = path else {
            return Ok(Self::Stdout);
        };
        let failed = |source| AuditError::Open {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(failed)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(path).map_err(failed)?;
        Ok(Self::File(Arc::new(Mutex::new(file))))
    }

    /// This sink, with every line also appended to the audit chain by `chain`.
    pub fn with_chain(self, chain: ChainWriter) -> Self {
        Self::Chained {
            lines: Box::new(self),
            chain,
        }
    }

    /// The chain's writer, if lines are chained.
    pub fn chain(&self) -> Option<&ChainWriter> {
        match self {
            Self::Chained { chain, .. } => Some(chain),
            _ => None,
        }
    }

    /// A sink that keeps its lines in memory, and the lines, for tests.
    pub fn memory() -> (Self, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        (Self::Memory(Arc::clone(&lines)), lines)
    }

    /// Writes one line (`line` holds no newline: it is compact JSON).
    fn write(&self, line: &str) -> std::io::Result<()> {
        match self {
            Self::Stdout => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{line}")?;
                out.flush()
            }
            Self::File(file) => {
                let mut file = file.lock().unwrap_or_else(PoisonError::into_inner);
                // One write per line, so concurrent appenders never interleave within a line.
                file.write_all(format!("{line}\n").as_bytes())?;
                file.flush()
            }
            Self::Memory(lines) => {
                lines
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line.to_string());
                Ok(())
            }
            Self::Chained { lines, .. } => lines.write(line),
        }
    }
}

impl fmt::Debug for AuditSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Self::Stdout => "stdout",
            Self::File(_) => "file",
            Self::Memory(_) => "memory",
            Self::Chained { .. } => "chained",
        };
        f.debug_struct("AuditSink")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

// === the middleware ===

/// `router` with the [`audit`] middleware around everything it serves, its fallbacks included.
/// Add it last, so it is the outermost layer.
pub fn audited(router: Router, sink: AuditSink) -> Router {
    router.layer(middleware::from_fn_with_state(sink, audit))
}

/// The audit middleware (`axum::middleware::from_fn_with_state(sink, audit)`): gives the
/// request its id, runs it inside a `request` tracing span carrying that id, echoes the id as
/// `X-Request-Id`, and writes the request's audit line to `sink`; see the module documentation.
///
/// The id is the request's own `X-Request-Id` when it has exactly one that is 1 to 64 visible
/// ASCII characters, else 128 random bits in hex. `duration_ms` runs until the response's head
/// is ready (a streamed body may take longer).
pub async fn audit(State(sink): State<AuditSink>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    // Until its line is on the chain: a lone request commits it itself (`chain`).
    let _in_flight = sink.chain().map(ChainWriter::request);
    let ts = rfc3339(SystemTime::now());
    let id = request_id(request.headers());
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    // Valid by construction (visible ASCII or hex); a failure would only drop the echo.
    let header = HeaderValue::from_str(&id).ok();
    if let Some(value) = &header {
        request.headers_mut().insert(REQUEST_ID, value.clone());
    }
    request.extensions_mut().insert(RequestId(id.clone()));

    let span = tracing::info_span!("request", request_id = %id, %method, %path);
    let mut response = next.run(request).instrument(span).await;

    if let Some(value) = header {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let status = response.status();
    let who = response.extensions().get::<AuditWho>().map(|who| {
        json!({"sub": who.sub, "fhir_user": who.fhir_user, "client_id": who.client_id,
               "iss": who.iss})
    });
    let note = response.extensions().get::<AuditNote>();
    let login = response.extensions().get::<LoginAudit>().map(login_json);
    let break_glass = response
        .extensions()
        .get::<BreakGlassNote>()
        .map(|n| n.0.clone());
    let elapsed = started.elapsed();
    let mut line = json!({
        "ts": ts,
        "request_id": id,
        "method": method,
        "path": path,
        "status": status.as_u16(),
        "outcome": outcome(status),
        "who": who,
        "interaction": note.map(|n| n.interaction).filter(|i| !i.is_empty()),
        "resources": note.map(|n| n.resources.as_slice()).unwrap_or_default(),
        "patients": note.map(|n| n.patients.as_slice()).unwrap_or_default(),
        "opened": note.map_or(0, |n| n.opened),
        "masked": note.map_or(0, |n| n.masked),
        "forged": note.map_or(0, |n| n.forged),
        "sealed": note.map_or(0, |n| n.sealed),
        // Whole microseconds, so the number prints short (12.408, not 12.408000000000001).
        "duration_ms": elapsed.as_micros() as f64 / 1000.0,
    });
    // A denial says why; a batch's or transaction's line lists its entries, each like a
    // request alone.
    if let (Some(note), Value::Object(object)) = (note, &mut line) {
        if let Some(reason) = &note.reason {
            object.insert("reason".into(), json!(reason));
        }
        if !note.consents.is_empty() {
            object.insert("consents".into(), json!(note.consents));
        }
        paths_json(note, object);
        if !note.entries.is_empty() {
            let entries = note.entries.iter().map(entry_json).collect();
            object.insert("entries".into(), Value::Array(entries));
        }
    }
    if let (Some(login), Value::Object(object)) = (login, &mut line) {
        object.insert("login".into(), login);
    }
    if let (Some(break_glass), Value::Object(object)) = (break_glass, &mut line) {
        object.insert("break_glass".into(), break_glass);
    }
    let line = fhirseal_fhir::json_text(&line);
    if let Err(error) = sink.write(&line) {
        tracing::error!(request_id = %id, %error, "the audit line could not be written");
    }
    let Some(chain) = sink.chain() else {
        return response;
    };
    let Err(error) = chain.append(line.clone()).await else {
        return response;
    };
    // Fail closed: the response is withheld, and its line is kept in the log.
    tracing::error!(request_id = %id, %error, audit_line = %line,
        "the audit record could not be chained: the response is withheld");
    let mut withheld = ApiError::AuditUnavailable.into_response();
    if let Some(value) = response.headers().get(REQUEST_ID).cloned() {
        withheld.headers_mut().insert(REQUEST_ID, value);
    }
    withheld
}

/// A sign-in at the embedded authorization server, in the audit line: the user name typed, the
/// result, which count throttled or locked it, and the source address; never the password.
fn login_json(login: &LoginAudit) -> Value {
    json!({
        "username": login.username,
        "result": login.result.as_str(),
        "by": login.by.map(|by| by.as_str()),
        "source": login.source.map(|ip| ip.to_string()),
    })
}

/// One entry of a Bundle in the audit line: the same fields as a request alone.
fn entry_json(note: &AuditNote) -> Value {
    let mut entry = json!({
        "interaction": Some(note.interaction).filter(|i| !i.is_empty()),
        "resources": note.resources,
        "patients": note.patients,
        "status": note.status,
        "opened": note.opened,
        "masked": note.masked,
        "forged": note.forged,
        "sealed": note.sealed,
    });
    if let Value::Object(object) = &mut entry {
        if let Some(reason) = &note.reason {
            object.insert("reason".into(), json!(reason));
        }
        paths_json(note, object);
    }
    entry
}

/// The element paths opened and masked, when there are any (`opened_paths`, `masked_paths`).
fn paths_json(note: &AuditNote, object: &mut serde_json::Map<String, Value>) {
    for (key, paths) in [
        ("opened_paths", &note.opened_paths),
        ("masked_paths", &note.masked_paths),
    ] {
        if !paths.is_empty() {
            object.insert(key.into(), json!(paths));
        }
    }
}

/// The audit line's `outcome` for `status`.
fn outcome(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 | 403 => "denied",
        400..=499 => "client-error",
        500.. => "server-error",
        _ => "success",
    }
}

/// The request's own id if it sent exactly one acceptable `X-Request-Id`, else a fresh one.
fn request_id(headers: &HeaderMap) -> String {
    let mut values = headers.get_all(REQUEST_ID).iter();
    match (values.next(), values.next()) {
        (Some(value), None) if acceptable_id(value.as_bytes()) => {
            // Visible ASCII, checked just above, is UTF-8.
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        }
        _ => fresh_id(),
    }
}

/// The digits of a fresh id.
const HEX: &[u8; 16] = b"0123456789abcdef";

/// 1 to [`MAX_REQUEST_ID`] visible ASCII characters (`!` to `~`).
fn acceptable_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len()) && id.iter().all(|b| (b'!'..=b'~').contains(b))
}

/// 128 random bits, in lower-case hex: from a ChaCha20 stream of the thread's, seeded from the
/// operating system once, rather than a system call and sixteen `format!`s per request. An id
/// only tells requests apart: nothing rests on its being secret.
fn fresh_id() -> String {
    thread_local! {
        static IDS: RefCell<ChaCha20Rng> = RefCell::new(
            ChaCha20Rng::from_rng(OsRng).unwrap_or_else(|_| {
                // No randomness from the system: ids stay distinct by the time and the thread.
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
                let seed = RandomState::new().hash_one((now, std::thread::current().id()));
                ChaCha20Rng::seed_from_u64(seed)
            }),
        );
    }
    let mut bytes = [0u8; 16];
    IDS.with(|ids| ids.borrow_mut().fill_bytes(&mut bytes));
    let mut id = String::with_capacity(32);
    for b in bytes {
        id.push(char::from(HEX[usize::from(b >> 4)]));
        id.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    id
}

/// `time` as an RFC 3339 UTC timestamp with milliseconds (`2026-11-28T05:10:57.123Z`).
/// `secs` since the Unix epoch as the audit line writes times (RFC 3339, UTC, milliseconds).
pub fn timestamp(secs: i64) -> String {
    let secs = u64::try_from(secs).unwrap_or(0);
    rfc3339(UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`,
/// <https://howardhinnant.github.io/date_algorithms.html#civil_from_days>, for days ≥ 0).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The longest `X-Request-Id` taken from a client.
const MAX_REQUEST_ID: usize = 64;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let at = |s: u64, ms: u64| rfc3339(UNIX_EPOCH + Duration::from_millis(s * 1000 + ms));
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_800_000_000, 999), "2027-01-15T08:00:00.999Z");
        assert_eq!(at(4_107_542_399, 0), "2100-02-28T23:59:59.000Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000Z");
        assert_eq!(at(1_798_761_599, 0), "2026-12-31T23:59:59.000Z");
    }

    #[test]
    fn request_ids_are_visible_ascii_up_to_64() {
        assert!(acceptable_id(b"abc-123"));
        assert!(acceptable_id(&[b'x'; 64]));
        assert!(!acceptable_id(&[b'x'; 65]));
        assert!(!acceptable_id(b""));
        assert!(!acceptable_id(b"a b"));
        assert!(!acceptable_id(b"a\tb"));
        assert!(!acceptable_id("caf\u{e9}".as_bytes()));
        let id = fresh_id();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(id, fresh_id());
    }

    #[test]
    fn outcomes_follow_the_status() {
        assert_eq!(outcome(StatusCode::OK), "success");
        assert_eq!(outcome(StatusCode::SEE_OTHER), "success");
        assert_eq!(outcome(StatusCode::UNAUTHORIZED), "denied");
        assert_eq!(outcome(StatusCode::FORBIDDEN), "denied");
        assert_eq!(outcome(StatusCode::NOT_FOUND), "client-error");
        assert_eq!(outcome(StatusCode::BAD_GATEWAY), "server-error");
    }

    /// A sign-in at the embedded authorization server: the line names the user name typed, the
    /// result and the source, never the password.
    #[tokio::test]
    async fn a_sign_in_names_the_user_and_never_the_password() {
        use std::net::SocketAddr;

        use axum::body::{Body, to_bytes};
        use axum::extract::ConnectInfo;
        use axum::http::header;
        use fhirseal_auth_server::{
            AuthServer, RawServerConfig, ServerConfig, SigningKey, hash_password,
        };
        use tower::ServiceExt as _;

        let raw: RawServerConfig = serde_json::from_value(json!({
            "issuer": "http://127.0.0.1:8080/auth",
            "fhir_base": "http://127.0.0.1:8080/fhir",
            "users": [{"username": "dr.grey", "password_hash": hash_password("right").unwrap(),
                       "fhir_user": "Practitioner/dr-grey"}],
            "clients": [{"client_id": "app", "client_name": "App",
                         "redirect_uris": ["http://127.0.0.1:9000/cb"],
                         "token_endpoint_auth_method": "none", "scope": "openid user/*.rs"}]
        }))
        .unwrap();
        let server = AuthServer::new(
            ServerConfig::try_from(raw).unwrap(),
            SigningKey::generate().unwrap(),
            reqwest::Client::new(),
        )
        .unwrap();
        let (sink, lines) = AuditSink::memory();
        let app = audited(Router::new().nest("/auth", Arc::new(server).router()), sink);
        let authorize = "/auth/authorize?response_type=code&client_id=app\
            &redirect_uri=http%3A%2F%2F127.0.0.1%3A9000%2Fcb&scope=openid&state=s\
            &aud=http%3A%2F%2F127.0.0.1%3A8080%2Ffhir&code_challenge_method=S256\
            &code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        let page = app
            .clone()
            .oneshot(Request::get(authorize).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let cookie = page.headers()[header::SET_COOKIE].to_str().unwrap();
        let cookie = cookie.split(';').next().unwrap().to_string();
        let html = to_bytes(page.into_body(), 1 << 20).await.unwrap();
        let html = String::from_utf8_lossy(&html);
        let marker = "name=\"request_token\" value=\"";
        let start = html.find(marker).unwrap() + marker.len();
        let token = &html[start..start + 43];
        let mut login = Request::post("/auth/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::COOKIE, cookie)
            .body(Body::from(format!(
                "request_token={token}&username=dr.grey&password=s3cret-guess&action=allow"
            )))
            .unwrap();
        let peer: SocketAddr = "192.0.2.7:50000".parse().unwrap();
        login.extensions_mut().insert(ConnectInfo(peer));
        let reply = app.oneshot(login).await.unwrap();
        assert_eq!(reply.status(), StatusCode::BAD_REQUEST);

        let lines = lines.lock().unwrap().clone();
        assert_eq!(lines.len(), 2);
        let first: Value = serde_json::from_str(&lines[0]).unwrap();
        assert!(first.get("login").is_none(), "the login page is no sign-in");
        let line: Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(
            line["login"],
            json!({"username": "dr.grey", "result": "failure", "by": null, "source": "192.0.2.7"})
        );
        assert!(!lines[1].contains("s3cret-guess"), "{}", lines[1]);
    }
}
