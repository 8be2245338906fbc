//! A fast static FHIR responder for the load benchmark (`scripts/bench-load`): it replays
//! recorded upstream responses, so the gateway's own cost shows instead of a Python server's.
//!
//! ```text
//! static_upstream record UPSTREAM_BASE OUT   # a recording reverse proxy in front of UPSTREAM_BASE
//! static_upstream serve RECORDING            # replays RECORDING
//! static_upstream forward UPSTREAM_BASE       # a bare reverse proxy in front of UPSTREAM_BASE
//! ```
//!
//! Both listen on `127.0.0.1` on a free port (or `STATIC_UPSTREAM_LISTEN`), print
//! `listening on http://127.0.0.1:PORT/fhir` as their first line, and serve the FHIR base at
//! `/fhir`, like the upstream they stand for.
//!
//! - `record` forwards every request to the upstream (same method, path, query, headers and
//!   body) and answers with the upstream's answer. Each exchange is appended to `OUT` as one JSON
//!   line `{"method", "target", "request_body", "status", "headers", "body"}`; the file's first
//!   line is `{"upstream": UPSTREAM_BASE}`.
//! - `forward` is `record` without the recording: the floor of the gateway's own stack (axum and
//!   hyper serving, reqwest asking upstream, tokio's runtime) with nothing done in between, for
//!   `scripts/bench-load` to measure beside nginx and the gateway.
//! - `serve` loads `RECORDING` and answers each request with the last recorded response for the
//!   same method, path and query, whatever the request's headers and body. The recorded
//!   upstream base is replaced by its own in every body and header, as if the responses had been
//!   made by it. Two kinds of request that cannot repeat are answered from templates, because
//!   the gateway makes new ids: a `PUT [type]/[id]` of an id never recorded gets the last recorded
//!   `PUT` answer for that type with its id replaced by the new one and, when that answer holds
//!   the resource, the resource the request sent in its place (with the recorded `meta.versionId`
//!   and `meta.lastUpdated`), as a FHIR server answers with what it stored; so the elements in
//!   it are sealed under the gateway's own headers, as against the real upstream, and a search
//!   `GET [type]?…` never recorded gets a recorded search of that type that found nothing (the
//!   gateway looks up a shared header it has just made that way before it stores it). Any other
//!   request with no recorded response gets a 404 `OperationOutcome`, and the first few such
//!   requests are named on standard error.
//!
//! The runtime is tokio's multi-thread one, one worker per core. It is a benchmark tool: it holds
//! the whole recording in memory and trusts it.

use std::collections::HashMap;
use std::error::Error;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

type BoxError = Box<dyn Error + Send + Sync>;

/// The largest body either mode takes, request or response: 64 MiB.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// How many unrecorded requests `serve` names on standard error.
const MISSES_SHOWN: u64 = 20;

/// Headers that belong to one connection, or that the server sets itself: never recorded,
/// forwarded or replayed.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::HOST,
    header::DATE,
    header::SERVER,
    header::UPGRADE,
];

/// One recorded response.
#[derive(Clone)]
struct Recorded {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

/// What `serve` answers from.
struct Replay {
    /// By `METHOD target`.
    responses: HashMap<String, Recorded>,
    /// By resource type: the last recorded `PUT [type]/[id]` answer and its id.
    puts: HashMap<String, (String, Recorded)>,
    /// By resource type: a recorded search that found nothing.
    empty_searches: HashMap<String, Recorded>,
    misses: AtomicU64,
}

/// What `record` forwards to and writes into.
struct Recorder {
    client: reqwest::Client,
    /// The upstream's origin (`http://127.0.0.1:18090`): request paths are appended as they are.
    origin: String,
    /// Where exchanges are written; `None` in `forward` mode.
    out: Option<Mutex<std::fs::File>>,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["record", upstream, out] => record(upstream, Some(out)).await,
        ["forward", upstream] => record(upstream, None).await,
        ["serve", recording] => serve(recording).await,
        _ => Err(
            "usage: static_upstream record UPSTREAM_BASE OUT | forward UPSTREAM_BASE | serve RECORDING"
                .into(),
        ),
    }
}

/// Binds the listener and prints its FHIR base.
async fn bind() -> Result<(tokio::net::TcpListener, String), BoxError> {
    let listen = std::env::var("STATIC_UPSTREAM_LISTEN").unwrap_or_else(|_| "127.0.0.1:0".into());
    let addr: SocketAddr = listen
        .parse()
        .map_err(|_| format!("STATIC_UPSTREAM_LISTEN is not an address: {listen}"))?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let base = format!("http://{}/fhir", listener.local_addr()?);
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {base}")?;
    stdout.flush()?;
    Ok((listener, base))
}

// === record ===

/// `record` (into `out`) or, without `out`, `forward`.
async fn record(upstream: &str, out: Option<&str>) -> Result<(), BoxError> {
    let url = url::Url::parse(upstream).map_err(|e| format!("{upstream}: {e}"))?;
    let origin = url.origin().ascii_serialization();
    let out = match out {
        Some(out) => {
            let mut file = std::fs::File::create(out).map_err(|e| format!("{out}: {e}"))?;
            writeln!(
                file,
                "{}",
                json!({"upstream": upstream.trim_end_matches('/')})
            )?;
            Some(Mutex::new(file))
        }
        None => None,
    };
    let client = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(64)
        .build()?;
    let recorder = Arc::new(Recorder {
        client,
        origin,
        out,
    });
    let (listener, _) = bind().await?;
    let app = Router::new()
        .fallback(forward)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(recorder);
    axum::serve(listener, app).await?;
    Ok(())
}

/// Forwards one request upstream, records the exchange (in `record` mode) and answers with the
/// upstream's answer (502 when the upstream cannot be reached).
async fn forward(
    State(recorder): State<Arc<Recorder>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_string(), ToString::to_string);
    let request_body = recorder
        .out
        .as_ref()
        .and_then(|_| std::str::from_utf8(&body).ok().map(str::to_string));
    let mut request = recorder
        .client
        .request(method.clone(), format!("{}{target}", recorder.origin))
        .body(body);
    for (name, value) in &headers {
        if !HOP_BY_HOP.contains(name) {
            request = request.header(name, value);
        }
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "static_upstream: {method} {target}: {e}");
            return StatusCode::BAD_GATEWAY.into_response();
        }
    };
    let status = answer.status();
    let kept: Vec<(HeaderName, HeaderValue)> = answer
        .headers()
        .iter()
        .filter(|(name, _)| !HOP_BY_HOP.contains(name))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    let body = match answer.bytes().await {
        Ok(body) => body,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "static_upstream: {method} {target}: {e}");
            return StatusCode::BAD_GATEWAY.into_response();
        }
    };
    match recorder
        .out
        .as_ref()
        .map(|out| (out, std::str::from_utf8(&body)))
    {
        None => {}
        Some((out, Ok(text))) => {
            let line = json!({
                "method": method.as_str(),
                "target": target,
                "request_body": request_body,
                "status": status.as_u16(),
                "headers": kept
                    .iter()
                    .filter_map(|(n, v)| v.to_str().ok().map(|v| json!([n.as_str(), v])))
                    .collect::<Vec<_>>(),
                "body": text,
            });
            let mut out = out.lock().unwrap_or_else(PoisonError::into_inner);
            if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                let _ = writeln!(std::io::stderr(), "static_upstream: recording: {e}");
            }
        }
        Some((_, Err(_))) => {
            let _ = writeln!(
                std::io::stderr(),
                "static_upstream: {method} {target}: the body is not UTF-8, not recorded"
            );
        }
    }
    let mut response = (status, body).into_response();
    for (name, value) in kept {
        response.headers_mut().append(name, value);
    }
    response
}

// === serve ===

async fn serve(recording: &str) -> Result<(), BoxError> {
    let text = std::fs::read_to_string(recording).map_err(|e| format!("{recording}: {e}"))?;
    let mut lines = text.lines();
    let first: Value = serde_json::from_str(lines.next().unwrap_or_default())
        .map_err(|e| format!("{recording}: line 1: {e}"))?;
    let recorded_base = first
        .get("upstream")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{recording}: line 1 names no upstream"))?
        .to_string();
    let (listener, base) = bind().await?;
    let mut responses = HashMap::new();
    let mut puts = HashMap::new();
    let mut empty_searches = HashMap::new();
    for (n, line) in lines.enumerate() {
        let at = |e: &dyn std::fmt::Display| format!("{recording}: line {}: {e}", n + 2);
        let exchange: Value = serde_json::from_str(line).map_err(|e| at(&e))?;
        let (method, target, recorded) =
            parse_exchange(&exchange, &recorded_base, &base).map_err(|e| at(&e))?;
        match (method.as_str(), template_of(&target)) {
            ("PUT", Some(Template::Instance(resource_type, id))) => {
                puts.insert(resource_type, (id, recorded.clone()));
            }
            ("GET", Some(Template::Search(resource_type))) if found_nothing(&recorded) => {
                empty_searches.insert(resource_type, recorded.clone());
            }
            _ => {}
        }
        responses.insert(format!("{method} {target}"), recorded);
    }
    let mut stderr = std::io::stderr().lock();
    writeln!(
        stderr,
        "static_upstream: {} responses from {recording}; templates: PUT of {:?}, empty search of {:?}",
        responses.len(),
        puts.keys().collect::<Vec<_>>(),
        empty_searches.keys().collect::<Vec<_>>(),
    )?;
    drop(stderr);
    let replay = Arc::new(Replay {
        responses,
        puts,
        empty_searches,
        misses: AtomicU64::new(0),
    });
    let app = Router::new()
        .fallback(replay_one)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(replay);
    axum::serve(listener, app).await?;
    Ok(())
}

/// What a target may be answered from when it was not recorded.
enum Template {
    /// `/fhir/[type]/[id]`: the type and the id.
    Instance(String, String),
    /// `/fhir/[type]?…`: the type.
    Search(String),
}

/// The template kind of `target`, if any.
fn template_of(target: &str) -> Option<Template> {
    let rest = target.strip_prefix("/fhir/")?;
    if let Some((resource_type, _query)) = rest.split_once('?') {
        return (!resource_type.contains('/')).then(|| Template::Search(resource_type.to_string()));
    }
    let (resource_type, id) = rest.split_once('/')?;
    (!id.is_empty() && !id.contains('/'))
        .then(|| Template::Instance(resource_type.to_string(), id.to_string()))
}

/// Whether a recorded answer is a successful search Bundle without entries.
fn found_nothing(recorded: &Recorded) -> bool {
    recorded.status == StatusCode::OK
        && serde_json::from_slice::<Value>(&recorded.body).is_ok_and(|bundle| {
            bundle.get("resourceType").and_then(Value::as_str) == Some("Bundle")
                && bundle
                    .get("entry")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty)
        })
}

/// `recorded` with every `from` replaced by `to`, in the body and the headers.
fn replace_in(recorded: &Recorded, from: &str, to: &str) -> Option<Recorded> {
    let body = std::str::from_utf8(&recorded.body).ok()?.replace(from, to);
    let headers = recorded
        .headers
        .iter()
        .map(|(name, value)| {
            let value = value.to_str().ok()?.replace(from, to);
            Some((name.clone(), HeaderValue::try_from(value).ok()?))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Recorded {
        status: recorded.status,
        headers,
        body: Bytes::from(body),
    })
}

/// A templated `PUT` answer whose body is a `resource_type` resource, with the resource the
/// request sent (`sent`, of that type and `id`) as its body instead, under the recorded
/// `meta.versionId` and `meta.lastUpdated`: what the upstream would have stored. The recording's
/// own resource was sealed by the gateway that recorded it, under shared headers this gateway
/// never made, so it would open as nothing (and cost a header search per write) where the real
/// upstream's answer opens. Anything else (no body, a body of another kind, a request that is not
/// that resource) keeps the recorded answer.
fn stored_answer(mut answer: Recorded, sent: &[u8], resource_type: &str, id: &str) -> Recorded {
    let is_the = |value: &Value| {
        value.get("resourceType").and_then(Value::as_str) == Some(resource_type)
            && value.get("id").and_then(Value::as_str) == Some(id)
    };
    let (Ok(recorded), Ok(mut resource)) = (
        serde_json::from_slice::<Value>(&answer.body),
        serde_json::from_slice::<Value>(sent),
    ) else {
        return answer;
    };
    if !is_the(&recorded) || !is_the(&resource) {
        return answer;
    }
    if let (Some(object), Some(Value::Object(stored))) =
        (resource.as_object_mut(), recorded.get("meta"))
    {
        let meta = object
            .entry("meta")
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        if let Value::Object(meta) = meta {
            for key in ["versionId", "lastUpdated"] {
                if let Some(value) = stored.get(key) {
                    meta.insert(key.to_string(), value.clone());
                }
            }
        }
    }
    answer.body = Bytes::from(resource.to_string());
    answer
}

/// One recorded exchange as its method, its target and its response, with `from` (the recorded
/// upstream base) replaced by `to` in the body and the headers.
fn parse_exchange(
    exchange: &Value,
    from: &str,
    to: &str,
) -> Result<(String, String, Recorded), String> {
    let field = |name: &str| exchange.get(name).ok_or_else(|| format!("no `{name}`"));
    let method = field("method")?
        .as_str()
        .ok_or("`method` is not a string")?;
    let target = field("target")?
        .as_str()
        .ok_or("`target` is not a string")?;
    let status = field("status")?
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or("`status` is not an HTTP status")?;
    let body = field("body")?.as_str().ok_or("`body` is not a string")?;
    let mut headers = Vec::new();
    for pair in field("headers")?
        .as_array()
        .ok_or("`headers` is not a list")?
    {
        let (Some(name), Some(value)) = (
            pair.get(0).and_then(Value::as_str),
            pair.get(1).and_then(Value::as_str),
        ) else {
            return Err("a header is not a [name, value] pair".into());
        };
        let name = HeaderName::try_from(name).map_err(|e| e.to_string())?;
        let value = HeaderValue::try_from(value.replace(from, to)).map_err(|e| e.to_string())?;
        headers.push((name, value));
    }
    let recorded = Recorded {
        status,
        headers,
        body: Bytes::from(body.replace(from, to)),
    };
    Ok((method.to_string(), target.to_string(), recorded))
}

/// Answers with the recorded response for the request's method and target.
async fn replay_one(
    State(replay): State<Arc<Replay>>,
    method: Method,
    uri: Uri,
    // Read so that the connection is kept alive for the next request, and echoed by a templated
    // `PUT`.
    body: Bytes,
) -> Response {
    let target = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_string(), ToString::to_string);
    let key = format!("{method} {target}");
    let templated;
    let found = match replay.responses.get(&key) {
        Some(recorded) => Some(recorded),
        None => match (&method, template_of(&target)) {
            (&Method::PUT, Some(Template::Instance(resource_type, id))) => {
                templated = replay
                    .puts
                    .get(&resource_type)
                    .and_then(|(recorded_id, recorded)| replace_in(recorded, recorded_id, &id))
                    .map(|answer| stored_answer(answer, &body, &resource_type, &id));
                templated.as_ref()
            }
            (&Method::GET, Some(Template::Search(resource_type))) => {
                replay.empty_searches.get(&resource_type)
            }
            _ => None,
        },
    };
    let Some(recorded) = found else {
        if replay.misses.fetch_add(1, Ordering::Relaxed) < MISSES_SHOWN {
            let _ = writeln!(std::io::stderr(), "static_upstream: not recorded: {key}");
        }
        let outcome = json!({"resourceType": "OperationOutcome", "issue": [{
            "severity": "error", "code": "not-found",
            "diagnostics": "static_upstream has no recorded response for this request"}]});
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/fhir+json")],
            outcome.to_string(),
        )
            .into_response();
    };
    let mut response = (recorded.status, recorded.body.clone()).into_response();
    for (name, value) in &recorded.headers {
        response.headers_mut().append(name.clone(), value.clone());
    }
    response
}
