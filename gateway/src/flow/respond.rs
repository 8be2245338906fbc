//! The "respond" step of the request flow: what an interaction answers, as one [`Answer`] that
//! becomes an HTTP response when the interaction came alone and a Bundle entry when it came
//! inside a batch or transaction, so that both say the same.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fhirseal_seal::OpenReport;
use fhirseal_upstream::rewrite_base;
use serde_json::{Map, Value, json};

use crate::audit::AuditNote;
use fhirseal_fhir::FHIR_JSON;
use fhirseal_fhir::json::{write_json, write_json_string, write_json_with};

use crate::error::ApiError;
use crate::state::AppState;

/// The upstream response headers a client may see.
const PASSED_BACK: [header::HeaderName; 3] =
    [header::ETAG, header::LAST_MODIFIED, header::LOCATION];

/// What an interaction answers: status, body (already opened for the caller), the upstream
/// headers a client may see, and the note for the audit line. `Debug` prints no body.
pub struct Answer {
    /// The HTTP status (a Bundle entry's `response.status`).
    pub status: StatusCode,
    /// The body, if any.
    pub body: Option<Value>,
    /// `ETag`, `Last-Modified` and `Location` as the upstream sent them (moved to the gateway's
    /// base on the way out).
    pub headers: HeaderMap,
    /// What the interaction did, for the audit line.
    pub note: AuditNote,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("note", &self.note)
            .finish_non_exhaustive()
    }
}

impl Answer {
    /// An answer with `body` and no upstream headers.
    pub fn new(status: StatusCode, body: Option<Value>, note: AuditNote) -> Self {
        Self {
            status,
            body,
            headers: HeaderMap::new(),
            note,
        }
    }

    /// With the client-visible headers of `upstream` (the others are dropped).
    pub fn with_headers(mut self, upstream: &HeaderMap) -> Self {
        for name in PASSED_BACK {
            if let Some(value) = upstream.get(&name) {
                self.headers.insert(name, value.clone());
            }
        }
        self
    }

    /// The HTTP response: the body and `Location` moved to the gateway's base, the note in the
    /// response's extensions for the audit layer.
    pub fn into_response(self, state: &AppState) -> Response {
        let (upstream_base, gateway_base) = bases(state);
        let mut out = match self.body {
            Some(body) => {
                // Written once, as bytes, the base moved string by string on the way
                // (`write_moved`).
                let bytes = write_moved(&body, upstream_base, gateway_base);
                let mut out = (self.status, bytes).into_response();
                out.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
                out
            }
            None => self.status.into_response(),
        };
        for (name, value) in &self.headers {
            let value = if name == header::LOCATION {
                match value.to_str().ok().and_then(|text| {
                    HeaderValue::from_str(&rewrite_base(text, upstream_base, gateway_base)).ok()
                }) {
                    Some(value) => value,
                    None => continue,
                }
            } else {
                value.clone()
            };
            out.headers_mut().insert(name.clone(), value);
        }
        out.extensions_mut().insert(self.note);
        out
    }

    /// The Bundle entry that says the same as [`Answer::into_response`]: `resource` (or, for an
    /// OperationOutcome of an error, `response.outcome`) and `response.status`, `etag`,
    /// `lastModified` and `location`. URLs are moved to the gateway's base with the whole Bundle.
    pub fn into_entry(self) -> (Value, AuditNote) {
        let mut response = Map::new();
        response.insert("status".into(), json!(status_line(self.status)));
        for (name, field) in [
            (header::ETAG, "etag"),
            (header::LAST_MODIFIED, "lastModified"),
            (header::LOCATION, "location"),
        ] {
            if let Some(value) = self.headers.get(&name).and_then(|v| v.to_str().ok()) {
                response.insert(field.into(), json!(value));
            }
        }
        let mut entry = Map::new();
        match self.body {
            Some(body) if self.status.is_client_error() || self.status.is_server_error() => {
                response.insert("outcome".into(), body);
            }
            Some(body) => {
                entry.insert("resource".into(), body);
            }
            None => {}
        }
        entry.insert("response".into(), Value::Object(response));
        (Value::Object(entry), self.note)
    }

    /// The answer of a refused interaction: its status and OperationOutcome, as the error
    /// response alone would say (`error.rs` picks both), and the policy's reason for the audit
    /// line. A 5xx is logged here, as the error alone is by its response.
    pub fn refused(error: &ApiError, interaction: &'static str, resources: Vec<String>) -> Self {
        error.log_server_error();
        let (status, _, _) = error.parts();
        let body = error.outcome();
        let note = AuditNote {
            interaction,
            resources,
            reason: error.audit_reason().map(str::to_string),
            ..AuditNote::default()
        };
        Self::new(status, Some(body), note)
    }
}

/// The audit note of an interaction: its name, the resources it touched, what opening did and
/// how many elements were sealed.
pub fn note(
    interaction: &'static str,
    resources: Vec<String>,
    report: OpenReport,
    sealed: usize,
) -> AuditNote {
    AuditNote {
        interaction,
        resources,
        opened: report.opened,
        masked: report.masked,
        forged: report.forged,
        opened_paths: report.opened_paths,
        masked_paths: report.masked_paths,
        sealed,
        ..AuditNote::default()
    }
}

/// `value` as JSON bytes, with every absolute URL under `from` in its string values moved under
/// `to`, as [`rewrite_base`] would move it in each string (object keys are element names, never
/// URLs). The base is moved during the one walk that writes the answer, not in a walk of its own
/// over the tree first (that walk was 4.5 % of a 100-entry search's CPU, issue 18); one searcher
/// for `from` serves every string, and a string without `from` is written as it is. Written by
/// [`write_json_with`], byte for byte what `serde_json` writes, in less time (its module docs).
fn write_moved(value: &Value, from: &str, to: &str) -> Vec<u8> {
    let mut out = String::new();
    if from.is_empty() {
        write_json(&mut out, value);
        return out.into_bytes();
    }
    let finder = memchr::memmem::Finder::new(from);
    write_json_with(&mut out, value, &mut |out, text| {
        if finder.find(text.as_bytes()).is_some() {
            write_json_string(out, &rewrite_base(text, from, to));
        } else {
            write_json_string(out, text);
        }
    });
    out.into_bytes()
}

/// `200 OK`, `404 Not Found`: a Bundle entry's `response.status`.
pub fn status_line(status: StatusCode) -> String {
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default()
    )
}

fn bases(state: &AppState) -> (&str, &str) {
    (state.upstream.base(), state.config.fhir_base.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FROM: &str = "http://up.internal/fhir";
    const TO: &str = "https://gw.example/r4";

    /// Moving the base while writing says what rewriting the serialised text said before it,
    /// on a searchset with links, full URLs, references, a narrative and look-alike URLs that
    /// must stay.
    #[test]
    fn moving_while_writing_says_what_rewriting_the_text_said() {
        let bundle = json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "link": [{"relation": "next", "url": format!("{FROM}?_getpages=abc&_count=2")}],
            "entry": [{
                "fullUrl": format!("{FROM}/Observation/o1"),
                "resource": {
                    "resourceType": "Observation",
                    "id": "o1",
                    "subject": {"reference": format!("{FROM}/Patient/p1"), "display": "x"},
                    "text": {"status": "generated",
                             "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">see <a href=\"{FROM}/Patient/p1\">{FROM}</a></div>")},
                    "note": [{"text": format!("{FROM}2/Patient/p1 {FROM}.old xhttp://up.internal/fhir/P")}],
                    "valueQuantity": {"value": 1.50, "unit": "kg"},
                    "component": [null, true, 3, -0.0, 12345678901234567890u64]
                },
                "search": {"mode": "match"}
            }]
        });
        let text = rewrite_base(&bundle.to_string(), FROM, TO).into_owned();
        let written = String::from_utf8(write_moved(&bundle, FROM, TO)).unwrap();
        assert_eq!(written, text);
        assert!(text.contains(&format!("{TO}/Patient/p1")), "{text}");
        assert!(text.contains(&format!("{FROM}2/Patient/p1")), "{text}");
    }

    #[test]
    fn a_body_without_the_base_is_written_as_it_is() {
        let resource = json!({"resourceType": "Patient", "id": "p1", "link": [{"other": {"reference": "Patient/p2"}}]});
        let written = write_moved(&resource, FROM, TO);
        assert_eq!(written, serde_json::to_vec(&resource).unwrap());
        // No base (a gateway whose upstream base is empty): nothing is moved.
        let with_base = json!({"fullUrl": format!("{FROM}/Patient/p1")});
        assert_eq!(
            write_moved(&with_base, "", TO),
            serde_json::to_vec(&with_base).unwrap()
        );
    }

    /// Each string is rewritten as the text it holds, not as its escaped JSON form: a URL after
    /// a line break moves (a rewrite of the serialised text saw the `n` of `\n` before it, a
    /// letter that could end a scheme, and left it).
    #[test]
    fn a_url_after_an_escaped_character_moves() {
        let note = json!({"text": format!("line\n{FROM}/Patient/p1 \"{FROM}/x\"")});
        let written = String::from_utf8(write_moved(&note, FROM, TO)).unwrap();
        let expected = json!({"text": format!("line\n{TO}/Patient/p1 \"{TO}/x\"")});
        assert_eq!(written, expected.to_string());
    }

    /// An object key is an element name: a key that looks like the base stays as it is.
    #[test]
    fn keys_are_not_moved() {
        let odd = json!({format!("{FROM}/k"): format!("{FROM}/v")});
        let written = String::from_utf8(write_moved(&odd, FROM, TO)).unwrap();
        assert_eq!(written, format!("{{\"{FROM}/k\":\"{TO}/v\"}}"));
    }
}
