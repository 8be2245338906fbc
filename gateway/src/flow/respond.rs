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
            Some(mut body) => {
                rewrite_strings(&mut body, upstream_base, gateway_base);
                // Written once, as bytes: `to_vec` rather than `Display` into a `String` and a
                // second copy for the base (about a tenth of a 100-entry search's CPU, issue 18).
                // It cannot fail: a `Value`'s keys are strings and writing to a `Vec` does not.
                let bytes = serde_json::to_vec(&body).unwrap_or_default();
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

/// Moves every absolute URL under `from` in the string values of `value` under `to`, in place,
/// as [`rewrite_base`] would in each string (object keys are element names, never URLs). One
/// searcher for `from` serves every string; a string without `from` is neither copied nor
/// rewritten.
fn rewrite_strings(value: &mut Value, from: &str, to: &str) {
    if from.is_empty() {
        return;
    }
    rewrite_found(value, &memchr::memmem::Finder::new(from), from, to);
}

fn rewrite_found(value: &mut Value, finder: &memchr::memmem::Finder<'_>, from: &str, to: &str) {
    match value {
        Value::String(text) => {
            if finder.find(text.as_bytes()).is_some()
                && let std::borrow::Cow::Owned(moved) = rewrite_base(text, from, to)
            {
                *text = moved;
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| rewrite_found(item, finder, from, to)),
        Value::Object(members) => members
            .values_mut()
            .for_each(|member| rewrite_found(member, finder, from, to)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
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

    /// The tree rewrite says what rewriting the serialised text said before it, on a searchset
    /// with links, full URLs, references, a narrative and look-alike URLs that must stay.
    #[test]
    fn rewriting_the_tree_says_what_rewriting_the_text_said() {
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
                    "valueQuantity": {"value": 1.5, "unit": "kg"},
                    "component": [null, true, 3]
                },
                "search": {"mode": "match"}
            }]
        });
        let text = rewrite_base(&bundle.to_string(), FROM, TO).into_owned();
        let mut tree = bundle;
        rewrite_strings(&mut tree, FROM, TO);
        assert_eq!(serde_json::to_string(&tree).unwrap(), text);
        assert!(text.contains(&format!("{TO}/Patient/p1")), "{text}");
        assert!(text.contains(&format!("{FROM}2/Patient/p1")), "{text}");
    }

    #[test]
    fn a_body_without_the_base_is_unchanged() {
        let resource = json!({"resourceType": "Patient", "id": "p1", "link": [{"other": {"reference": "Patient/p2"}}]});
        let mut tree = resource.clone();
        rewrite_strings(&mut tree, FROM, TO);
        assert_eq!(tree, resource);
    }
}
