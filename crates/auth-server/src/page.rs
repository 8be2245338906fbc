//! The login and consent page and the error page: plain server-rendered HTML, no script, every
//! echoed value escaped.

use std::fmt::Write as _;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fhirseal_smart::scope::{Level, Permissions, Scope, Scopes};

use crate::oauth::no_store;

/// What the login page shows.
#[derive(Debug)]
pub(super) struct Login<'a> {
    pub(super) client_name: &'a str,
    pub(super) scopes: &'a Scopes,
    /// Ask practitioners for the patient to open.
    pub(super) patient_picker: bool,
    /// The per-request token bound to the pending authorization.
    pub(super) request_token: &'a str,
    /// The user name typed before, to fill in again.
    pub(super) username: &'a str,
    /// Why the last attempt failed.
    pub(super) error: Option<&'a str>,
}

/// The login and consent page.
pub(super) fn login(status: StatusCode, page: &Login<'_>, cookie: Option<&str>) -> Response {
    let client = escape(page.client_name);
    let mut body = format!(
        "{HEAD}<title>Sign in: {client}</title></head><body><main>\
         <h1>Sign in</h1><p><strong>{client}</strong> asks to:</p><ul>"
    );
    for scope in page.scopes.iter() {
        let _ = write!(
            body,
            "<li>{} <code>{}</code></li>",
            escape(&describe(scope)),
            escape(&scope.to_string())
        );
    }
    body.push_str("</ul>");
    if let Some(error) = page.error {
        let _ = write!(
            body,
            "<p class=\"error\" role=\"alert\">{}</p>",
            escape(error)
        );
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"login\">\
         <input type=\"hidden\" name=\"request_token\" value=\"{}\">\
         <label>User name <input name=\"username\" autocomplete=\"username\" value=\"{}\"></label>\
         <label>Password <input type=\"password\" name=\"password\" autocomplete=\"current-password\"></label>",
        escape(page.request_token),
        escape(page.username),
    );
    if page.patient_picker {
        body.push_str(
            "<label>Patient id (practitioners: the patient to open) \
             <input name=\"patient\" pattern=\"[A-Za-z0-9.\\-]{1,64}\"></label>",
        );
    }
    body.push_str(
        "<button name=\"action\" value=\"allow\">Sign in and allow</button> \
         <button name=\"action\" value=\"deny\">Deny</button></form></main></body></html>",
    );
    let mut response = html(status, body);
    if let Some(cookie) = cookie
        && let Ok(value) = HeaderValue::from_str(cookie)
    {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// An error page, for what cannot be sent back to the app (its identity or redirect URI is not
/// established, or the sign-in request expired).
pub(super) fn error(status: StatusCode, message: &str) -> Response {
    html(
        status,
        format!(
            "{HEAD}<title>Authorization error</title></head><body><main>\
             <h1>Authorization error</h1><p>{}</p></main></body></html>",
            escape(message)
        ),
    )
}

/// HTML-escapes text for element content and quoted attribute values.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What a scope lets the app do, in words.
fn describe(scope: &Scope) -> String {
    match scope {
        Scope::Resource {
            level,
            resource_type,
            permissions,
            query,
        } => {
            let what = resource_type.as_deref().unwrap_or("all");
            let whose = match level {
                Level::Patient => "of the patient in context",
                Level::User => "that you may see",
                Level::System => "of the whole system",
            };
            let verbs = verbs(*permissions);
            let narrowed = if query.is_empty() { "" } else { ", restricted" };
            format!("{verbs} {what} records {whose}{narrowed}")
        }
        Scope::LaunchContext { context, .. } => format!("Know which {context} is open"),
        Scope::OpenId | Scope::Profile => "Know who you are".to_string(),
        Scope::FhirUser => "Know your FHIR user record".to_string(),
        Scope::OfflineAccess => "Keep access while you are offline".to_string(),
        Scope::OnlineAccess => "Keep access while you are signed in".to_string(),
        Scope::Launch | Scope::Other(_) => "Other access".to_string(),
    }
}

fn verbs(permissions: Permissions) -> String {
    let bits = permissions.bits();
    let names = [
        (1, "create"),
        (2, "read"),
        (4, "update"),
        (8, "delete"),
        (16, "search"),
    ];
    let list: Vec<&str> = names
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect();
    let mut text = list.join(", ");
    if let Some(first) = text.get(..1) {
        text = first.to_uppercase() + text.get(1..).unwrap_or("");
    }
    text
}

fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    no_store(headers);
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

const HEAD: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem}\
label{display:block;margin:.75rem 0}input{display:block;width:100%;padding:.4rem}\
.error{color:#a00}button{padding:.5rem 1rem;margin-top:1rem}</style>";
