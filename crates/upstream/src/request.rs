//! What goes to the upstream and what comes back: [`UpstreamRequest`], [`UpstreamResponse`], and
//! the hygiene applied to both (path confinement, hop-by-hop headers).

use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};

use crate::error::RequestError;

/// A request for the upstream: a method, a path and query relative to the base URL, end-to-end
/// headers and an optional body.
///
/// The path is relative to the base (`Patient/1`, `/Patient/1`, `Patient?name=x`, or the empty
/// string for the base itself, as for a transaction or a system search `?_type=…`). Absolute
/// URLs, dot segments and malformed paths are refused by [`Upstream::send`](crate::Upstream::send).
/// Hop-by-hop headers, `Authorization`, `Cookie`, `Host`, `Content-Length` and
/// `Accept-Encoding` are dropped before sending; the client's own credential never reaches the
/// upstream.
#[derive(Clone)]
pub struct UpstreamRequest {
    pub(crate) method: Method,
    pub(crate) path_and_query: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Option<Bytes>,
}

/// A complete response from the upstream: status, end-to-end headers, and the whole body (at
/// most the configured cap). Any status, including 4xx and 5xx, is a response, not an error.
#[derive(Clone)]
pub struct UpstreamResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

// === impl UpstreamRequest ===

impl UpstreamRequest {
    /// A request without headers or body.
    pub fn new(method: Method, path_and_query: impl Into<String>) -> Self {
        Self {
            method,
            path_and_query: path_and_query.into(),
            headers: HeaderMap::new(),
            body: None,
        }
    }

    /// Replaces the headers; those that must not be forwarded are dropped when sending.
    #[must_use]
    pub fn with_headers(mut self, headers: HeaderMap) -> Self {
        self.headers = headers;
        self
    }

    /// Appends one header.
    #[must_use]
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Sets the body.
    #[must_use]
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path and query, relative to the base URL, as given.
    pub fn path_and_query(&self) -> &str {
        &self.path_and_query
    }

    /// The headers as given (before hygiene).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Whether retrying this request is safe: `GET`, `HEAD`, `PUT`, `DELETE`, `OPTIONS`
    /// (RFC 9110 §9.2.2; `TRACE` is never sent by the gateway).
    pub fn is_idempotent(&self) -> bool {
        matches!(
            self.method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
        )
    }
}

/// Prints the method, the path without its query (search parameters may carry patient data),
/// header names and body length only.
impl fmt::Debug for UpstreamRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path_and_query.split('?').next().unwrap_or_default();
        f.debug_struct("UpstreamRequest")
            .field("method", &self.method)
            .field("path", &path)
            .field("headers", &HeaderNames(&self.headers))
            .field("body_len", &self.body.as_ref().map(Bytes::len))
            .finish_non_exhaustive()
    }
}

// === impl UpstreamResponse ===

impl UpstreamResponse {
    /// Builds a response from its parts, dropping the headers that are not end-to-end.
    pub(crate) fn new(status: StatusCode, mut headers: HeaderMap, body: Bytes) -> Self {
        strip_hop_by_hop(&mut headers);
        for name in RESPONSE_DROPPED {
            headers.remove(name);
        }
        Self {
            status,
            headers,
            body,
        }
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The end-to-end headers (hop-by-hop ones, `Content-Length` and `Set-Cookie` removed).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Status, headers and body.
    pub fn into_parts(self) -> (StatusCode, HeaderMap, Bytes) {
        (self.status, self.headers, self.body)
    }

    /// How long the upstream asks to wait before the next request (its `Retry-After`, read by
    /// [`retry_after`] at `now`).
    pub fn retry_after(&self, now: SystemTime) -> Option<Duration> {
        retry_after(&self.headers, now)
    }
}

/// The delay a `Retry-After` in `headers` asks for at `now` (RFC 9110 §10.2.3): a number of
/// seconds (ASCII digits only; one too large for a `u64` is `u64::MAX` seconds), or an HTTP date
/// (IMF-fixdate, or the obsolete RFC 850 and asctime forms), a date already past being no delay.
/// `None` when there is none, or more than one, or it is anything else: a sign, a fraction,
/// words, a date that does not parse. The value itself is never kept: a caller passing a delay
/// on writes its own number.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let mut values = headers.get_all(header::RETRY_AFTER).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    let text = value.to_str().ok()?.trim_matches([' ', '\t']);
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(text.parse().unwrap_or(u64::MAX)));
    }
    let date = httpdate::parse_http_date(text).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Prints the status, header names and body length only: bodies hold patient data.
impl fmt::Debug for UpstreamResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamResponse")
            .field("status", &self.status)
            .field("headers", &HeaderNames(&self.headers))
            .field("body_len", &self.body.len())
            .finish()
    }
}

// === hygiene ===

/// The headers of a request that may be forwarded: hop-by-hop headers (RFC 9110 §7.6.1),
/// those named in `Connection`, and the ones this client owns or must not pass on removed.
pub(crate) fn forwardable(mut headers: HeaderMap) -> HeaderMap {
    strip_hop_by_hop(&mut headers);
    for name in REQUEST_DROPPED {
        headers.remove(name);
    }
    headers
}

/// Removes the hop-by-hop headers of RFC 9110 §7.6.1 and every header named in `Connection`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in &named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Joins the base and a relative path and query, refusing anything that could leave the base
/// or be read differently by the upstream than by the gateway.
///
/// Path rules: one optional leading `/`; segments of RFC 3986 `pchar` without `:`; no empty,
/// `.` or `..` segment, literal or percent-encoded; no percent-encoded `/`, `\` or control
/// character. Query rules: visible ASCII without `#`.
pub(crate) fn join(base: &str, path_and_query: &str) -> Result<String, RequestError> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    if path.starts_with("//")
        || path
            .split('/')
            .next()
            .is_some_and(|first| first.contains(':'))
    {
        return Err(RequestError::AbsoluteUrl);
    }
    let path = path.strip_prefix('/').unwrap_or(path);
    if !path.is_empty() {
        path.split('/').try_for_each(check_segment)?;
    }
    if let Some(query) = query
        && !query.bytes().all(|b| b.is_ascii_graphic() && b != b'#')
    {
        return Err(RequestError::ForbiddenCharacter);
    }
    let mut url = String::with_capacity(base.len() + path_and_query.len() + 1);
    url.push_str(base);
    if !path.is_empty() {
        url.push('/');
        url.push_str(path);
    }
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    Ok(url)
}

fn check_segment(segment: &str) -> Result<(), RequestError> {
    if segment.is_empty() {
        return Err(RequestError::EmptySegment);
    }
    let mut decoded = Vec::with_capacity(segment.len());
    let mut bytes = segment.bytes();
    while let Some(b) = bytes.next() {
        let byte = if b == b'%' {
            let high = bytes
                .next()
                .and_then(hex)
                .ok_or(RequestError::ForbiddenCharacter)?;
            let low = bytes
                .next()
                .and_then(hex)
                .ok_or(RequestError::ForbiddenCharacter)?;
            let byte = high << 4 | low;
            if byte == b'/' || byte == b'\\' || byte.is_ascii_control() {
                return Err(RequestError::ForbiddenCharacter);
            }
            byte
        } else if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=@".contains(&b) {
            b
        } else {
            return Err(RequestError::ForbiddenCharacter);
        };
        decoded.push(byte);
    }
    if decoded == b"." || decoded == b".." {
        return Err(RequestError::DotSegment);
    }
    Ok(())
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Header names only, for `Debug`.
struct HeaderNames<'a>(&'a HeaderMap);

impl fmt::Debug for HeaderNames<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// RFC 9110 §7.6.1 (Connection, Proxy-Connection, Keep-Alive, TE, Transfer-Encoding, Upgrade),
/// plus the proxy authentication fields (§11.7) and `Trailer`, which only make sense per hop.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "transfer-encoding",
    "upgrade",
    "trailer",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Request headers this client owns or must not pass on: the client's credential and cookies
/// (the upstream gets the gateway's own credential), `Host` and `Content-Length` (set by the
/// HTTP client), `Accept-Encoding` (bodies must arrive uncompressed for the gateway to open
/// them) and `Expect`.
const REQUEST_DROPPED: [&str; 6] = [
    "authorization",
    "cookie",
    "host",
    "content-length",
    "accept-encoding",
    "expect",
];

/// Response headers dropped: `Content-Length` (the gateway may rewrite the body) and
/// `Set-Cookie` (the untrusted upstream must not set cookies on the gateway's origin).
const RESPONSE_DROPPED: [&str; 2] = ["content-length", "set-cookie"];

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "http://up.example/fhir";

    #[test]
    fn retry_after_is_seconds_or_a_date_and_nothing_else() {
        // 2015-10-21T07:28:00Z, as IMF-fixdate says it.
        let date = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let now = date - Duration::from_secs(90);
        let read = |values: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(header::RETRY_AFTER, HeaderValue::from_static(value));
            }
            retry_after(&headers, now)
        };
        let secs = |n| Some(Duration::from_secs(n));
        assert_eq!(read(&[]), None);
        assert_eq!(read(&["3"]), secs(3));
        assert_eq!(read(&[" 120 "]), secs(120));
        assert_eq!(read(&["0"]), secs(0));
        assert_eq!(read(&["99999999999999999999999"]), secs(u64::MAX));
        assert_eq!(read(&["Wed, 21 Oct 2015 07:28:00 GMT"]), secs(90));
        assert_eq!(read(&["Wednesday, 21-Oct-15 07:28:00 GMT"]), secs(90));
        assert_eq!(read(&["Wed Oct 21 07:28:00 2015"]), secs(90));
        assert_eq!(read(&["Wed, 21 Oct 2015 07:26:00 GMT"]), secs(0), "past");
        for junk in [
            "",
            "-1",
            "+5",
            "1.5",
            "5s",
            "1 2",
            "soon",
            "0x10",
            "Wed, 32 Oct 2015 07:28:00 GMT",
            "<script>",
            "Wed, 21 Oct 2015 07:28:00 CET",
        ] {
            assert_eq!(read(&[junk]), None, "{junk:?}");
        }
        assert_eq!(read(&["3", "4"]), None, "two values");
    }

    #[test]
    fn joins_relative_paths() {
        assert_eq!(join(BASE, "Patient/1"), Ok(format!("{BASE}/Patient/1")));
        assert_eq!(join(BASE, "/Patient/1"), Ok(format!("{BASE}/Patient/1")));
        assert_eq!(join(BASE, ""), Ok(BASE.to_owned()));
        assert_eq!(
            join(BASE, "?_type=Patient"),
            Ok(format!("{BASE}?_type=Patient"))
        );
        assert_eq!(
            join(BASE, "Observation?code=http://loinc.org|1234-5&_count=10"),
            Ok(format!(
                "{BASE}/Observation?code=http://loinc.org|1234-5&_count=10"
            ))
        );
        assert_eq!(
            join(BASE, "Patient/$everything"),
            Ok(format!("{BASE}/Patient/$everything"))
        );
        assert_eq!(
            join(BASE, "Patient/a%20b"),
            Ok(format!("{BASE}/Patient/a%20b"))
        );
    }

    #[test]
    fn refuses_escapes() {
        let cases = [
            ("http://evil.example/x", RequestError::AbsoluteUrl),
            ("https:evil", RequestError::AbsoluteUrl),
            ("//evil.example/x", RequestError::AbsoluteUrl),
            ("../admin", RequestError::DotSegment),
            ("Patient/../../admin", RequestError::DotSegment),
            ("./Patient", RequestError::DotSegment),
            ("Patient/%2e%2e/x", RequestError::DotSegment),
            ("Patient/%2E.", RequestError::DotSegment),
            ("Patient/%2fx", RequestError::ForbiddenCharacter),
            ("Patient\\..\\x", RequestError::ForbiddenCharacter),
            ("Patient/1#frag", RequestError::ForbiddenCharacter),
            ("Patient/1?x=1#frag", RequestError::ForbiddenCharacter),
            ("Patient/ 1", RequestError::ForbiddenCharacter),
            ("Patient/\u{e9}", RequestError::ForbiddenCharacter),
            ("Patient/%0a", RequestError::ForbiddenCharacter),
            ("Patient/%zz", RequestError::ForbiddenCharacter),
            ("Patient/%2", RequestError::ForbiddenCharacter),
            ("Patient//1", RequestError::EmptySegment),
            ("Patient/", RequestError::EmptySegment),
            ("Patient/1?a=\n", RequestError::ForbiddenCharacter),
        ];
        for (path, expected) in cases {
            assert_eq!(join(BASE, path), Err(expected), "{path}");
        }
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, X-Secret-Hop"),
        );
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer client"),
        );
        headers.insert(header::IF_MATCH, HeaderValue::from_static("W/\"1\""));
        let kept = forwardable(headers);
        assert_eq!(kept.len(), 1);
        assert!(kept.contains_key(header::IF_MATCH));
    }
}
