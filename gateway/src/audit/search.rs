//! `GET /fhir/AuditEvent?…` and `GET /fhir/AuditEvent/chain-<seq>`: the audit trail as FHIR R4
//! AuditEvents, answered by the gateway itself from the authority's hash chain (through its index,
//! [`fhirseal_authority::audit::index`]), never forwarded upstream. Each event is built from its
//! chain record ([`super::event`]), whose hash is recomputed on the way: what a search shows is
//! what `fhirseal audit verify` covers.
//!
//! **Parameters** (AuditEvent's R4 search parameters; anything else is a 400 naming it):
//!
//! | parameter | matches |
//! |---|---|
//! | `patient` | events concerning the patient (`Patient/123`, `123`, or the gateway's URL of it; a comma is "or"): an entity of the patient, or the patient as the agent |
//! | `agent` | the requestor's `fhirUser` (`Practitioner/dr-grey`); `agent:identifier` its token subject or client id (`value` or `issuer\|value`) |
//! | `date` | `recorded`, with `eq` (the default), `ge`, `gt`, `le`, `lt` at the value's precision; repeat it for a range |
//! | `outcome` | `0` success, `4` refused (client error or denied), `8` server error (`[system\|]code`) |
//! | `_count` | the page size, 1 to 500 (default 50) |
//! | `_before` | the next page: events before `chain-<seq>` (the `next` link carries it) |
//!
//! Several parameters are "and". Events come newest first (the chain's order).
//!
//! **Who may** (failing closed, every refusal a 403): the token's scopes must cover AuditEvent
//! (`search` or `read`), and the compliance policy decides as for any resource type. A caller
//! whose scopes reach every patient (`user/`, `system/`) and whom the policy permits AuditEvent
//! for a record of no patient (the shipped policy: `role:compliance`) searches everything. A
//! caller with a patient of her own (`fhirUser` `Patient/…`, or under `patient/` scopes the
//! patient in context) whom the policy permits on that patient's records (`patient:self`) sees
//! only events concerning that patient: the `patient` parameter is set to her, and asking for
//! another is a 403. Everyone else: 403.
//!
//! The request is audited like any other: its line names the patients it asked about, so a
//! patient sees who looked at her audit trail too. Writes, histories and operations on
//! AuditEvent are refused (405 and 400): the trail is written by the gateway alone.

use std::sync::{Mutex, PoisonError};

use axum::http::StatusCode;
use fhirseal_authority::Store;
use fhirseal_authority::audit::index::{self, AuditQuery};
use fhirseal_authority::audit::{self as chain_audit, AuditRecord};
use fhirseal_fhir::rest::Interaction as Rest;
use fhirseal_fhir::{FhirRequest, Interaction};
use fhirseal_policy::Obligations;
use fhirseal_smart::{Permission, Refusal};
use serde_json::{Value, json};

use crate::audit::AuditNote;
use crate::audit::event::audit_event;
use crate::audit::note::concerns;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::flow::authorize::decide;
use crate::flow::respond::Answer;
use crate::state::AppState;

/// The resource type served here.
pub const AUDIT_EVENT: &str = "AuditEvent";

/// The page size when `_count` is not given.
pub const DEFAULT_COUNT: u32 = 50;

/// The largest page.
pub const MAX_COUNT: u32 = 500;

/// The R4 code system of `AuditEvent.outcome`.
const OUTCOME_SYSTEM: &str = "http://hl7.org/fhir/audit-event-outcome";

/// Whether `interaction` is on AuditEvent, which only this module answers.
pub fn serves(interaction: &Interaction) -> bool {
    interaction
        .resource_type()
        .is_some_and(|t| t.as_str() == AUDIT_EVENT)
}

/// Answers an interaction on AuditEvent for `caller`; see the module documentation.
///
/// # Errors
/// [`ApiError`]: 403 for a caller who may not, 400 for a parameter refused, 404 for an unknown
/// event or when the trail is not chained (`server.audit_chain = false`), 405 for a write; the
/// authority's failures (503 when its store is unreachable, 500 for a tampered record).
pub async fn run(
    state: &AppState,
    caller: &Caller,
    request: FhirRequest,
) -> Result<Answer, ApiError> {
    use Interaction as I;
    match &request.interaction {
        I::Search(_) => search(state, caller, &request).await,
        I::Read(_, id) => read(state, caller, id.as_str()).await,
        I::Vread(..) | I::HistoryInstance(..) | I::HistoryType(..) | I::Operation(..) => {
            Err(ApiError::SearchRefused(
                "AuditEvent is served by the gateway with read and search only".into(),
            ))
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// How far a caller reaches in the audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Reach {
    /// Every event.
    All,
    /// The events concerning this patient (`Patient/123`).
    Patient(String),
}

/// The caller's reach for `interaction` (search or read) on AuditEvent: scopes, then policy.
fn reach(state: &AppState, caller: &Caller, interaction: Rest) -> Result<Reach, ApiError> {
    let context = &caller.0.context;
    let ways = match context.scopes.permits(interaction, AUDIT_EVENT) {
        Permission::Allowed(ways) => ways,
        Permission::Denied => {
            return Err(Refusal::ScopeMissing {
                interaction,
                resource_type: AUDIT_EVENT.into(),
            }
            .into());
        }
    };
    // A granular restriction (`…AuditEvent.rs?outcome=0`) is not applied here: it lets nothing
    // through.
    let ways: Vec<_> = ways.into_iter().filter(|w| w.query.is_empty()).collect();
    if ways.is_empty() {
        return Err(Refusal::GranularOnly.into());
    }
    let free = ways.iter().any(|w| !w.patient_compartment);
    let everything = named(state, decide(state, caller, interaction, AUDIT_EVENT, None));
    if free && everything.is_ok() {
        return Ok(Reach::All);
    }
    let own = if free {
        context.principal.patient()
    } else {
        context.patient_id().map(|id| format!("Patient/{id}"))
    };
    let Some(patient) = own else {
        return Err(match everything {
            Err(denied) if free => denied,
            _ => Refusal::OutsideCompartment {
                resource_type: AUDIT_EVENT.into(),
            }
            .into(),
        });
    };
    named(
        state,
        decide(
            state,
            caller,
            interaction,
            AUDIT_EVENT,
            Some(patient.clone()),
        ),
    )?;
    Ok(Reach::Patient(patient))
}

/// A permit counts for the audit trail only when its access rule names AuditEvent: a rule for
/// every resource type (`resources = ["*"]`) was not written with the audit trail in mind.
fn named(state: &AppState, permit: Result<Obligations, ApiError>) -> Result<(), ApiError> {
    let rule = permit?.access;
    let names = state.policy.access().iter().any(|a| {
        a.name == rule
            && a.resources
                .as_ref()
                .is_some_and(|r| r.contains(AUDIT_EVENT))
    });
    if names {
        return Ok(());
    }
    Err(ApiError::Denied {
        reason: format!(
            "the access rule `{rule}` covers every resource type; reading the audit trail needs \
             a rule that names AuditEvent"
        ),
    })
}

/// The chain's reading connection, or 404 when the trail is not chained.
fn reader(state: &AppState) -> Result<std::sync::Arc<Mutex<Box<dyn Store>>>, ApiError> {
    state
        .audit
        .chain()
        .map(super::chain::ChainWriter::reader)
        .ok_or(ApiError::UnknownPath)
}

/// `f` on the chain's store, off the async threads.
async fn on_store<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&mut dyn Store) -> Result<T, fhirseal_authority::Error> + Send + 'static,
) -> Result<T, ApiError> {
    let reader = reader(state)?;
    tokio::task::spawn_blocking(move || {
        let mut store = reader.lock().unwrap_or_else(PoisonError::into_inner);
        f(store.as_mut())
    })
    .await
    .map_err(|e| ApiError::Task {
        panicked: e.is_panic(),
    })?
    .map_err(ApiError::AuditTrail)
}

/// `GET AuditEvent?…`.
async fn search(
    state: &AppState,
    caller: &Caller,
    request: &FhirRequest,
) -> Result<Answer, ApiError> {
    reader(state)?;
    let reach = reach(state, caller, Rest::Search)?;
    let mut criteria = Criteria::parse(request, &state.config.fhir_base)?;
    if let Reach::Patient(own) = &reach {
        if let Some(other) = criteria.patients.iter().flatten().find(|p| *p != own) {
            return Err(ApiError::Denied {
                reason: format!(
                    "a patient's audit search covers her own record only: {own} asked about {other}"
                ),
            });
        }
        criteria.patients = vec![vec![own.clone()]];
    }
    for patient in criteria.patients.iter().flatten() {
        concerns(Some(patient));
    }
    let query = criteria.query();
    let mut records = on_store(state, move |store| chain_audit::search(store, &query)).await?;
    let more = records.len() > criteria.count as usize;
    records.truncate(criteria.count as usize);
    let base = state.config.fhir_base.as_str();
    let mut links = vec![json!({"relation": "self", "url": criteria.url(base, None)})];
    if more && let Some(last) = records.last() {
        links.push(json!({"relation": "next", "url": criteria.url(base, Some(last.seq))}));
    }
    let mut entries = Vec::with_capacity(records.len());
    let mut references = Vec::with_capacity(records.len());
    for record in &records {
        let event = event_of(record, base)?;
        references.push(format!("{AUDIT_EVENT}/chain-{}", record.seq));
        entries.push(json!({
            "fullUrl": format!("{base}/{AUDIT_EVENT}/chain-{}", record.seq),
            "resource": event,
            "search": {"mode": "match"},
        }));
    }
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": entries,
    });
    let note = AuditNote {
        interaction: "search-type",
        resources: references,
        ..AuditNote::default()
    };
    Ok(Answer::new(StatusCode::OK, Some(bundle), note))
}

/// `GET AuditEvent/chain-<seq>`.
async fn read(state: &AppState, caller: &Caller, id: &str) -> Result<Answer, ApiError> {
    reader(state)?;
    let reach = reach(state, caller, Rest::Read)?;
    let not_found = || ApiError::NotFound {
        resource_type: AUDIT_EVENT.into(),
        id: id.to_string(),
    };
    let seq = id
        .strip_prefix("chain-")
        .filter(|n| !n.is_empty() && n.len() <= 19 && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(not_found)?;
    let record = on_store(state, move |store| chain_audit::record(store, seq))
        .await?
        .ok_or_else(not_found)?;
    let terms = index::index_of(&record.record, record.time).terms;
    let patients: Vec<&str> = terms
        .iter()
        .filter_map(|t| t.strip_prefix("patient:"))
        .collect();
    if let Reach::Patient(own) = &reach
        && !patients.contains(&own.as_str())
    {
        return Err(ApiError::Denied {
            reason: format!("{AUDIT_EVENT}/{id} does not concern {own}, the caller's own record"),
        });
    }
    for patient in &patients {
        concerns(Some(patient));
    }
    let event = event_of(&record, &state.config.fhir_base)?;
    let note = AuditNote {
        interaction: "read",
        resources: vec![format!("{AUDIT_EVENT}/{id}")],
        ..AuditNote::default()
    };
    Ok(Answer::new(StatusCode::OK, Some(event), note))
}

/// The AuditEvent of `record`; a record that is no audit line is a corrupt chain (500).
fn event_of(record: &AuditRecord, base: &str) -> Result<Value, ApiError> {
    audit_event(record.seq, &record.record, base).map_err(|reason| {
        ApiError::AuditTrail(fhirseal_authority::Error::Corrupt {
            what: format!("audit record {}", record.seq),
            reason,
        })
    })
}

/// The parameters of one search, checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Criteria {
    /// `Patient/id`, per `patient` parameter (each a list: "or").
    patients: Vec<Vec<String>>,
    /// Agent terms (`agent:…`, `agent-id:…`), per parameter.
    agents: Vec<Vec<String>>,
    /// Recorded at or after, and before (Unix ms).
    from: Option<i64>,
    to: Option<i64>,
    /// The audit lines' outcomes, per `outcome` parameter.
    outcomes: Vec<Vec<String>>,
    /// The parameters as they go into the links, in order (name with modifier, value).
    echo: Vec<(String, String)>,
    count: u32,
    before: Option<u64>,
}

impl Criteria {
    /// The checked parameters of `request`; a 400 naming the first refused one.
    fn parse(request: &FhirRequest, base: &str) -> Result<Self, ApiError> {
        let mut criteria = Self {
            count: DEFAULT_COUNT,
            ..Self::default()
        };
        let refused = |name: &str, why: &str| ApiError::SearchRefused(format!("{name}: {why}"));
        let mut unknown = Vec::new();
        for param in &request.params {
            let name = param.name.as_str();
            let modifier = param.modifier.as_deref();
            if !param.chain.is_empty() {
                return Err(refused(
                    name,
                    "chained parameters are not supported on AuditEvent",
                ));
            }
            let value = param.value.as_str();
            let values = || value.split(',').map(str::trim).filter(|v| !v.is_empty());
            let mut echo = true;
            match (name, modifier) {
                ("patient", None | Some("Patient")) => {
                    let patients = values()
                        .map(|v| patient_reference(v, base))
                        .collect::<Option<Vec<_>>>()
                        .filter(|p| !p.is_empty())
                        .ok_or_else(|| refused(name, "takes Patient/[id] or [id]"))?;
                    criteria.patients.push(patients);
                }
                ("agent", None) => {
                    let agents = values()
                        .map(|v| agent_reference(v, base).map(|r| format!("agent:{r}")))
                        .collect::<Option<Vec<_>>>()
                        .filter(|a| !a.is_empty())
                        .ok_or_else(|| refused(name, "takes [type]/[id]"))?;
                    criteria.agents.push(agents);
                }
                ("agent", Some("identifier")) => {
                    let ids: Vec<String> = values().map(|v| format!("agent-id:{v}")).collect();
                    if ids.is_empty() || ids.iter().any(|t| t.len() > index::MAX_TERM) {
                        return Err(refused("agent:identifier", "takes [system|]value"));
                    }
                    criteria.agents.push(ids);
                }
                ("date", None) => {
                    let (from, to) = date_bounds(value)
                        .ok_or_else(|| refused(name, "takes one [eq|ge|gt|le|lt]date, such as ge2026-12-01 or lt2026-12-04T05:00:00Z"))?;
                    if let Some(from) = from {
                        criteria.from = Some(criteria.from.map_or(from, |f| f.max(from)));
                    }
                    if let Some(to) = to {
                        criteria.to = Some(criteria.to.map_or(to, |t| t.min(to)));
                    }
                }
                ("outcome", None) => {
                    let mut outcomes = Vec::new();
                    for v in values() {
                        let code = match v.split_once('|') {
                            Some((system, code))
                                if system.is_empty() || system == OUTCOME_SYSTEM =>
                            {
                                code
                            }
                            Some(_) => {
                                return Err(refused(
                                    name,
                                    "takes codes of http://hl7.org/fhir/audit-event-outcome",
                                ));
                            }
                            None => v,
                        };
                        let lines: &[&str] = match code {
                            "0" => &["success"],
                            "4" => &["client-error", "denied"],
                            "8" => &["server-error"],
                            // Serious failures are not told apart: none is recorded as such.
                            "12" => &[],
                            _ => return Err(refused(name, "takes 0, 4, 8 or 12")),
                        };
                        outcomes.extend(lines.iter().map(|o| format!("outcome:{o}")));
                    }
                    if outcomes.is_empty() {
                        // Only `12`: nothing matches.
                        outcomes.push("outcome:none".into());
                    }
                    criteria.outcomes.push(outcomes);
                }
                ("_count", None) => {
                    criteria.count = value
                        .parse::<u32>()
                        .ok()
                        .filter(|c| (1..=MAX_COUNT).contains(c))
                        .ok_or_else(|| refused(name, "takes a number from 1 to 500"))?;
                    echo = false;
                }
                ("_before", None) => {
                    criteria.before = Some(
                        value
                            .parse::<u64>()
                            .ok()
                            .filter(|b| *b > 0)
                            .ok_or_else(|| refused(name, "takes a sequence number"))?,
                    );
                    echo = false;
                }
                ("_format", None)
                    if ["json", "application/json", "application/fhir+json"].contains(&value) =>
                {
                    echo = false;
                }
                _ => {
                    let full = match modifier {
                        Some(m) => format!("{name}:{m}"),
                        None => name.to_string(),
                    };
                    unknown.push(full);
                    echo = false;
                }
            }
            if echo {
                let full = match modifier {
                    Some(m) => format!("{name}:{m}"),
                    None => name.to_string(),
                };
                criteria.echo.push((full, value.to_string()));
            }
        }
        if !unknown.is_empty() {
            return Err(ApiError::SearchRefused(format!(
                "AuditEvent does not support the search parameter{} {} (supported: patient, \
                 agent, agent:identifier, date, outcome, _count)",
                if unknown.len() > 1 { "s" } else { "" },
                unknown.join(", ")
            )));
        }
        Ok(criteria)
    }

    /// The index query: one more record than the page, to know whether there is a next page.
    fn query(&self) -> AuditQuery {
        let patients = self
            .patients
            .iter()
            .map(|g| g.iter().map(|p| format!("patient:{p}")).collect());
        let groups = patients
            .chain(self.agents.iter().cloned())
            .chain(self.outcomes.iter().cloned())
            .collect();
        AuditQuery {
            groups,
            from: self.from,
            to: self.to,
            before: self.before,
            limit: self.count + 1,
        }
    }

    /// The URL of this search at `base`, from before `before` when it is the next page.
    fn url(&self, base: &str, before: Option<u64>) -> String {
        let mut url = format!("{base}/{AUDIT_EVENT}?");
        let mut pairs: Vec<(String, String)> = self.echo.clone();
        if !self.patients.is_empty() && !self.echo.iter().any(|(n, _)| n.starts_with("patient")) {
            // A patient's own search: the patient it was confined to.
            pairs.insert(0, ("patient".into(), self.patients.concat().join(",")));
        }
        pairs.push(("_count".into(), self.count.to_string()));
        if let Some(before) = before.or(self.before) {
            pairs.push(("_before".into(), before.to_string()));
        }
        let encoded: Vec<String> = pairs
            .iter()
            .map(|(n, v)| format!("{}={}", encode(n), encode(v)))
            .collect();
        url.push_str(&encoded.join("&"));
        url
    }
}

/// `Patient/id` of a `patient` value: `Patient/id`, `id`, or the gateway's URL of it.
fn patient_reference(value: &str, base: &str) -> Option<String> {
    let reference = value
        .strip_prefix(base)
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or(value);
    let id = reference.strip_prefix("Patient/").unwrap_or(reference);
    valid_id(id).then(|| format!("Patient/{id}"))
}

/// `Type/id` of an `agent` value: `Type/id` or the gateway's URL of it.
fn agent_reference(value: &str, base: &str) -> Option<String> {
    let reference = value
        .strip_prefix(base)
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or(value);
    let (kind, id) = reference.split_once('/')?;
    let kind_ok = !kind.is_empty()
        && kind.len() <= 64
        && kind.starts_with(|c: char| c.is_ascii_uppercase())
        && kind.bytes().all(|b| b.is_ascii_alphabetic());
    (kind_ok && valid_id(id)).then(|| reference.to_string())
}

/// A FHIR id: 1 to 64 of `A-Z a-z 0-9 - .`.
fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The `[from, to)` bounds a `date` value sets, in Unix ms (`None` for a side it leaves open).
fn date_bounds(value: &str) -> Option<(Option<i64>, Option<i64>)> {
    if value.contains(',') {
        return None;
    }
    let (prefix, date) = match value.get(..2) {
        Some(p @ ("eq" | "ge" | "gt" | "le" | "lt")) => (p, &value[2..]),
        _ => ("eq", value),
    };
    let (start, end) = index::instant_range(date)?;
    Some(match prefix {
        "ge" => (Some(start), None),
        "gt" => (Some(end), None),
        "le" => (None, Some(end)),
        "lt" => (None, Some(start)),
        _ => (Some(start), Some(end)),
    })
}

/// Percent-encodes a query component (everything but unreserved characters).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "http://gw/fhir";

    fn parsed(query: &str) -> Result<Criteria, ApiError> {
        let request = FhirRequest::from_http("GET", "/AuditEvent", Some(query), |_| None, None)?;
        Criteria::parse(&request, BASE)
    }

    fn refusal(query: &str) -> String {
        match parsed(query) {
            Err(ApiError::SearchRefused(why)) => why,
            other => panic!("{query}: {other:?}"),
        }
    }

    #[test]
    fn parameters_become_index_terms() {
        let c = parsed(
            "patient=p1,Patient/p2&patient=http://gw/fhir/Patient/p3&agent=Practitioner/dr\
             &agent:identifier=https://i|u1&outcome=4&_count=10",
        )
        .unwrap();
        let q = c.query();
        assert_eq!(
            q.groups,
            [
                vec!["patient:Patient/p1", "patient:Patient/p2"],
                vec!["patient:Patient/p3"],
                vec!["agent:Practitioner/dr"],
                vec!["agent-id:https://i|u1"],
                vec!["outcome:client-error", "outcome:denied"],
            ]
        );
        assert_eq!(q.limit, 11);
        assert_eq!(
            c.url(BASE, Some(7)),
            "http://gw/fhir/AuditEvent?patient=p1%2CPatient%2Fp2&patient=http%3A%2F%2Fgw%2Ffhir%2FPatient%2Fp3\
             &agent=Practitioner%2Fdr&agent%3Aidentifier=https%3A%2F%2Fi%7Cu1&outcome=4&_count=10&_before=7"
        );
        assert_eq!(
            parsed("outcome=12").unwrap().query().groups,
            [vec!["outcome:none"]]
        );
    }

    #[test]
    fn dates_bound_the_range() {
        let (day_start, day_end) = index::instant_range("2026-12-04").unwrap();
        let c = parsed("date=ge2026-12-04&date=lt2026-12-05").unwrap();
        assert_eq!((c.from, c.to), (Some(day_start), Some(day_end)));
        let c = parsed("date=2026-12-04").unwrap();
        assert_eq!((c.from, c.to), (Some(day_start), Some(day_end)));
        let c = parsed("date=gt2026-12-03&date=le2026-12-04").unwrap();
        assert_eq!((c.from, c.to), (Some(day_start), Some(day_end)));
        for bad in [
            "date=ne2026-12-04",
            "date=2026-12-04,2026-12-05",
            "date=yesterday",
            "date=sa2026",
        ] {
            assert!(refusal(bad).starts_with("date:"), "{bad}");
        }
    }

    #[test]
    fn anything_else_is_refused_by_name() {
        assert_eq!(
            refusal("patient=p1&name=Smith&_sort=-date"),
            "AuditEvent does not support the search parameters name, _sort (supported: patient, \
             agent, agent:identifier, date, outcome, _count)"
        );
        assert!(refusal("patient:missing=true").contains("patient:missing"));
        assert!(refusal("agent=dr").starts_with("agent:"));
        assert!(refusal("patient=a/b/c").starts_with("patient:"));
        assert!(refusal("outcome=5").starts_with("outcome:"));
        assert!(refusal("outcome=http://x|0").starts_with("outcome:"));
        assert!(refusal("_count=0").starts_with("_count:"));
        assert!(refusal("_count=501").starts_with("_count:"));
        assert!(refusal("_before=x").starts_with("_before:"));
        assert!(refusal("patient.name=x").starts_with("patient:"));
        assert!(parsed("_format=json").is_ok());
    }

    #[test]
    fn only_audit_events_are_served_here() {
        let on = |method: &str, path: &str| {
            serves(
                &FhirRequest::from_http(method, path, None, |_| None, None)
                    .map(|r| r.interaction)
                    .unwrap_or(Interaction::Capabilities),
            )
        };
        assert!(on("GET", "/AuditEvent"));
        assert!(on("GET", "/AuditEvent/chain-1"));
        assert!(on("DELETE", "/AuditEvent/chain-1"));
        assert!(on("GET", "/AuditEvent/_history"));
        assert!(!on("GET", "/Patient"));
        assert!(!on("GET", "/metadata"));
    }
}
