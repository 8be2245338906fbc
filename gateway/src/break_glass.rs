//! Break-glass: a clinician asserts an emergency, and for a bounded time the elements the
//! policy's `[[break-glass]]` rules open for them are opened on their reads, labelled, audited and
//! alerted (`docs/break-glass.md`).
//!
//! - **Assertion** ([`assert()`]): the request header [`REASON_HEADER`] with the reason (1 to
//!   [`MAX_REASON_CHARS`] characters, no control characters), or the token's
//!   [`PURPOSE_CLAIM`] holding the HL7 v3 ActReason `BTG`, which then needs the header's reason
//!   too. A malformed reason, or a `BTG` token without one, is a 400; a caller no rule lets
//!   break the glass gets a 403 (audited and alerted), never a silent read without it.
//! - **Time** ([`grants`]): a grant lasts the policy's `max-minutes` from the first assertion of
//!   the caller's identity, then refuses (403) until an administrator renews it
//!   (`POST /break-glass/renew` on the admin API). Per process.
//! - **Opening** ([`crate::flow::protect::open_for`], with [`Active`]'s identity): a read the caller's own
//!   key leaves partly masked is opened again with the key of the service identity
//!   `service:break-glass <identity>`, registered with the authority like any caller and holding
//!   the caller's attributes plus the rules' grants. Only reads (read, vread, searches,
//!   histories, `$everything`) are opened so: a write, a batch or a transaction under an
//!   assertion is decided, merged and answered with the caller's own key, so an element only
//!   break-glass opens is carried across unchanged, and changing it is refused as any unreadable
//!   element is. Nothing stored upstream changes.
//! - **Marking**: every resource break-glass opened something in carries the security label
//!   v3-ActReason `BTG` in the response's `meta.security`; the audit line gets `break_glass`
//!   (rules, reason, grant, the resources and element paths it opened); an alert goes to the
//!   webhook and the admin API ([`alert`]). Never a value.

pub mod admin;
pub mod alert;
pub mod grants;
pub mod settings;
pub mod shared;

pub use shared::BreakGlass;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use axum::http::{HeaderMap, HeaderName};
use axum::response::Response;
use fhirseal_fhir::Interaction;
use fhirseal_policy::Emergency;
use fhirseal_seal::{OpenReport, unreadable_paths};
use futures_util::future::Either;
use serde_json::{Value, json};

use crate::audit::BreakGlassNote;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::keys::key_identity;
use crate::state::AppState;

/// The request header that asserts an emergency and carries its reason.
pub const REASON_HEADER: HeaderName = HeaderName::from_static("x-break-glass-reason");
/// The longest reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;
/// The access-token claim whose purpose of use `BTG` asserts an emergency: a code or a list of
/// codes, each `BTG` or `http://terminology.hl7.org/CodeSystem/v3-ActReason|BTG`.
pub const PURPOSE_CLAIM: &str = "purpose_of_use";
/// HL7 v3 ActReason, whose `BTG` is "break the glass".
pub const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
/// The prefix of the service identities emergency keys are registered under.
pub const SERVICE_PREFIX: &str = "service:break-glass ";

tokio::task_local! {
    /// The emergency in force for the request being answered (reads only).
    static ACTIVE: Arc<Active>;
}

/// An accepted assertion, for one request.
#[derive(Debug)]
pub struct Active {
    emergency: Emergency,
    service: String,
    applied: bool,
    event: Value,
    opened: Mutex<Vec<Value>>,
}

/// A refused assertion: the error to answer and the event to audit and alert.
#[derive(Debug)]
pub struct Refused {
    /// The error the client gets (400 or 403).
    pub error: ApiError,
    /// The event to audit and alert ([`refused`]).
    pub event: Value,
}

/// Whether the request asserts an emergency, and if so whether it is accepted: `Ok(None)` when
/// it asserts none.
///
/// # Errors
/// [`Refused`]: a malformed or missing reason (400), a caller no rule permits, a grant that
/// ended, a token that names no identity (403).
pub fn assert(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    interaction: &Interaction,
    request_id: &str,
) -> Result<Option<Arc<Active>>, Box<Refused>> {
    let principal = &caller.0.context.principal;
    let by_token = purpose_is_btg(principal.claims.get(PURPOSE_CLAIM));
    let mut values = headers.get_all(REASON_HEADER).iter();
    let (first, second) = (values.next(), values.next());
    if first.is_none() && !by_token {
        return Ok(None);
    }
    let source = if by_token { "token" } else { "header" };
    let mut event = json!({
        "type": "break-glass",
        "time": crate::audit::timestamp(state.break_glass.grants.now()),
        "request_id": request_id,
        "source": source,
        "who": {"sub": principal.subject, "fhir_user": principal.fhir_user,
                "client_id": principal.client_id, "iss": principal.claims.get("iss")},
    });
    let refuse = |error: ApiError, mut event: Value, why: String| {
        event["outcome"] = json!("refused");
        event["refused"] = json!(why);
        Err(Box::new(Refused { error, event }))
    };
    let reason = match (first, second) {
        (_, Some(_)) => Err("the break-glass reason header is given more than once"),
        (None, _) => Err("break-glass needs a reason: send it in the X-Break-Glass-Reason header"),
        (Some(value), None) => reason(value.as_bytes()),
    };
    let reason = match reason {
        Ok(reason) => reason,
        Err(why) => return refuse(ApiError::InvalidRequest(why), event, why.to_string()),
    };
    event["reason"] = json!(reason);
    let emergency = match state.policy.emergency(principal) {
        Ok(emergency) => emergency,
        Err(why) => {
            let error = ApiError::Denied {
                reason: format!("break-glass refused: {why}"),
            };
            return refuse(error, event, why);
        }
    };
    event["rules"] = json!(emergency.rules);
    event["granted"] = json!(emergency.added);
    let Ok(identity) = key_identity(principal) else {
        let why = "break-glass refused: the token names no identity a grant can be bound to";
        let error = ApiError::Denied { reason: why.into() };
        return refuse(error, event, why.into());
    };
    let grant = match state
        .break_glass
        .grants
        .assert(&identity, emergency.max_seconds)
    {
        grants::Found::Began(grant) | grants::Found::InForce(grant) => grant,
        grants::Found::Ended(grant) => {
            let why = format!(
                "break-glass refused: the grant of {identity} began at {} and ended at {}; an administrator may renew it",
                crate::audit::timestamp(grant.started),
                crate::audit::timestamp(grant.ends)
            );
            event["grant"] = grant_json(grant);
            let error = ApiError::Denied {
                reason: why.clone(),
            };
            return refuse(error, event, why);
        }
        grants::Found::Full => {
            let why = "break-glass refused: too many grants in force to remember another";
            let error = ApiError::Denied { reason: why.into() };
            return refuse(error, event, why.into());
        }
    };
    event["outcome"] = json!("granted");
    event["grant"] = grant_json(grant);
    let applied = reads(interaction);
    event["applied"] = json!(applied);
    Ok(Some(Arc::new(Active {
        service: format!("{SERVICE_PREFIX}{identity}"),
        emergency,
        applied,
        event,
        opened: Mutex::new(Vec::new()),
    })))
}

/// Runs `future` (the request's flow) with `active` in force where it applies (reads). A
/// combinator, not an `async fn`, so that it holds `future` once (`audit::note`, "Held once").
pub fn during<F: Future>(
    active: Option<&Arc<Active>>,
    future: F,
) -> impl Future<Output = F::Output> {
    match active {
        Some(active) if active.applied => Either::Left(ACTIVE.scope(Arc::clone(active), future)),
        _ => Either::Right(future),
    }
}

/// After the response: the audit line's `break_glass` (as a response extension) and the alert.
pub fn finish(state: &AppState, active: &Active, response: &mut Response) {
    let mut event = active.event.clone();
    let opened = active
        .opened
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    event["status"] = json!(response.status().as_u16());
    event["opened"] = Value::Array(opened);
    raise(state, event, response);
}

/// After a refusal: the same for a refused assertion.
pub fn refused(state: &AppState, mut event: Value, response: &mut Response) {
    event["status"] = json!(response.status().as_u16());
    raise(state, event, response);
}

fn raise(state: &AppState, event: Value, response: &mut Response) {
    let mut note = event.clone();
    if let Value::Object(object) = &mut note {
        for key in ["type", "time", "request_id", "who"] {
            object.remove(key);
        }
    }
    response.extensions_mut().insert(BreakGlassNote(note));
    let outcome = if event.get("outcome").and_then(Value::as_str) == Some("granted") {
        "granted"
    } else {
        "refused"
    };
    state.break_glass.metrics().break_glass(outcome);
    state.break_glass.alerts.raise(event);
}

/// The emergency in force for this request, if any.
pub(crate) fn active() -> Option<Arc<Active>> {
    ACTIVE.try_with(Arc::clone).ok()
}

impl Active {
    /// The service identity the emergency key is registered under, and the attributes it holds
    /// (the caller's plus the rules' grants): what [`crate::flow::protect::open_for`] opens a
    /// partly masked read again with.
    pub(crate) fn emergency_identity(&self) -> (&str, Vec<String>) {
        let attributes = self
            .emergency
            .attributes
            .names()
            .map(str::to_string)
            .collect();
        (&self.service, attributes)
    }

    /// Of `stored` opened twice, with the caller's own key (`own`, `report`) and with the
    /// emergency key (`opened`, `emergency_report`), the answer: when the emergency key opened
    /// more, `opened`, each resource that opened more labelled `BTG` and recorded; else the
    /// caller's own view.
    pub(crate) fn keep(
        &self,
        stored: &Value,
        own: (Value, OpenReport),
        mut opened: Value,
        emergency_report: OpenReport,
    ) -> (Value, OpenReport) {
        let marked = mark(stored, &own.0, &mut opened, &self.emergency.rules);
        if marked.is_empty() {
            return own;
        }
        self.opened
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(marked);
        (opened, emergency_report)
    }
}

/// Labels each resource of `opened` (a resource, or a Bundle's entries) that opened more than
/// `own`, and says which and what.
fn mark(stored: &Value, own: &Value, opened: &mut Value, rules: &[String]) -> Vec<Value> {
    let mut out = Vec::new();
    if opened.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
        let count = opened
            .get("entry")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        for i in 0..count {
            let at = |v: &Value| v.pointer(&format!("/entry/{i}/resource")).cloned();
            let (Some(stored), Some(own)) = (at(stored), at(own)) else {
                continue;
            };
            if let Some(resource) = opened.pointer_mut(&format!("/entry/{i}/resource")) {
                out.extend(mark_resource(&stored, &own, resource, rules));
            }
        }
    } else {
        out.extend(mark_resource(stored, own, opened, rules));
    }
    out
}

fn mark_resource(
    stored: &Value,
    own: &Value,
    opened: &mut Value,
    rules: &[String],
) -> Option<Value> {
    if own == opened {
        return None;
    }
    let before: BTreeSet<String> = unreadable_paths(stored, own).into_iter().collect();
    let after: BTreeSet<String> = unreadable_paths(stored, opened).into_iter().collect();
    let elements: Vec<&String> = before.difference(&after).collect();
    label(opened);
    let reference = format!(
        "{}/{}",
        opened
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        opened.get("id").and_then(Value::as_str).unwrap_or_default()
    );
    Some(json!({"resource": reference, "elements": elements, "rules": rules}))
}

/// Adds v3-ActReason `BTG` to `resource`'s `meta.security`.
fn label(resource: &mut Value) {
    let Value::Object(object) = resource else {
        return;
    };
    let meta = object.entry("meta").or_insert_with(|| json!({}));
    let Value::Object(meta) = meta else {
        return;
    };
    let security = meta.entry("security").or_insert_with(|| json!([]));
    let Value::Array(security) = security else {
        return;
    };
    let present = security.iter().any(|c| {
        c.get("system").and_then(Value::as_str) == Some(ACT_REASON)
            && c.get("code").and_then(Value::as_str) == Some("BTG")
    });
    if !present {
        security.push(json!({"system": ACT_REASON, "code": "BTG", "display": "break the glass"}));
    }
}

/// Whether a purpose-of-use claim holds `BTG`.
fn purpose_is_btg(claim: Option<&Value>) -> bool {
    let is_btg = |v: &Value| {
        v.as_str()
            .is_some_and(|s| s == "BTG" || s == format!("{ACT_REASON}|BTG"))
    };
    match claim {
        Some(Value::Array(items)) => items.iter().any(is_btg),
        Some(value) => is_btg(value),
        None => false,
    }
}

/// The reason in a header's bytes, trimmed, or what is wrong with it.
fn reason(bytes: &[u8]) -> Result<String, &'static str> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the break-glass reason is not UTF-8")?;
    let text = text.trim();
    if text.is_empty() {
        return Err("the break-glass reason is empty");
    }
    if text.chars().count() > MAX_REASON_CHARS {
        return Err("the break-glass reason is longer than 500 characters");
    }
    if text.chars().any(char::is_control) {
        return Err("the break-glass reason holds control characters");
    }
    Ok(text.to_string())
}

/// Whether break-glass opens what `interaction` returns: reads only.
fn reads(interaction: &Interaction) -> bool {
    use Interaction as I;
    matches!(
        interaction,
        I::Read(..) | I::Vread(..) | I::Search(..) | I::HistoryInstance(..) | I::HistoryType(..)
    ) || matches!(interaction, I::Operation(t, _, name) if t.as_str() == "Patient" && name == "everything")
}

fn grant_json(grant: grants::Grant) -> Value {
    json!({"started": crate::audit::timestamp(grant.started),
           "ends": crate::audit::timestamp(grant.ends)})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons() {
        assert_eq!(
            reason(b"  unconscious, no ID  ").unwrap(),
            "unconscious, no ID"
        );
        assert!(reason(b"   ").is_err());
        assert!(reason("é".repeat(500).as_bytes()).is_ok());
        assert!(reason("é".repeat(501).as_bytes()).is_err());
        assert!(reason(b"a\tb").is_err());
        assert!(reason(&[0xff, 0x41]).is_err());
    }

    #[test]
    fn purposes() {
        assert!(purpose_is_btg(Some(&json!("BTG"))));
        assert!(purpose_is_btg(Some(&json!([
            "TREAT",
            format!("{ACT_REASON}|BTG")
        ]))));
        assert!(!purpose_is_btg(Some(&json!("TREAT"))));
        assert!(!purpose_is_btg(Some(&json!({"code": "BTG"}))));
        assert!(!purpose_is_btg(None));
    }

    #[test]
    fn a_label_is_added_once() {
        let mut resource = json!({"resourceType": "Condition", "id": "c"});
        label(&mut resource);
        label(&mut resource);
        assert_eq!(resource["meta"]["security"].as_array().unwrap().len(), 1);
        assert_eq!(resource["meta"]["security"][0]["code"], "BTG");
    }
}
