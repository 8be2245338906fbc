//! Searches the gateway answers itself: a parameter that reads a sealed element in `blind-index`
//! or `filter` mode (`docs/search.md`).
//!
//! The upstream is asked for candidates: the parameters it can answer, the blind-index tokens
//! (`_tag`) of the others, and the scopes' narrowing, in one page of at most
//! `search.candidate_cap` resources (more is a 400 asking to narrow the search: a partial answer
//! would be a wrong one). While a rotation searches two generations of the blind-index secret,
//! the upstream is asked once per generation, oldest first, each query with that generation's
//! tokens alone (an upstream may answer OR-ed generations far more slowly, `super::checked`);
//! each query and their union are held to the cap, and a resource found by both is kept once,
//! where first found (with `_sort`, one OR-ed query as before: merged answers would not be
//! sorted). Every candidate goes through the same checks as a read, is opened for the caller,
//! and is kept only if it matches every blind-index and filter parameter exactly on its opened
//! values (`fhirseal_fhir::matching`): a value the caller cannot open matches nothing,
//! so the answer is the one a server holding the data in clear would give this caller, and the
//! tokens' deliberate collisions never show. The gateway then owns `total` and paging: its links
//! carry a cursor (`_cursor`) that it signs and that expires after `search.cursor_seconds`;
//! each page runs the search again, with every check.

use std::collections::HashSet;

use axum::http::StatusCode;
use fhirseal_envelope::BlindIndex;
use fhirseal_fhir::matching::Criterion;
use fhirseal_fhir::rest::Interaction;
use serde_json::{Value, json};

use super::{Checked, entries, filter_and_open, narrow, reference_of, upstream_bundle, with_query};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::flow::authorize::decide;
use crate::flow::respond::{Answer, note};
use crate::state::AppState;
use fhirseal_authority::unix_now;

/// Now, in seconds since the epoch (0 for a clock before it).
fn now() -> u64 {
    u64::try_from(unix_now()).unwrap_or(0)
}

/// The query key of the gateway's signed paging cursor.
pub(super) const CURSOR: &str = "_cursor";

/// Entries per page when the search gives no `_count` (sekmet-fhir's default, and HAPI's).
const DEFAULT_COUNT: usize = 20;

/// Result parameters a filtered search cannot honour: the included resources would belong to
/// candidates the gateway drops, and an element subset is not made of sealed resources.
const REFUSED: &[&str] = &["_include", "_revinclude", "_contained", "_containedType"];

/// `GET [type]?…` (or `POST [type]/_search`) with a parameter the gateway checks itself.
pub(super) async fn search(
    state: &AppState,
    caller: &Caller,
    resource_type: &str,
    params: &[(String, String)],
    checked: Checked,
) -> Result<Answer, ApiError> {
    let Checked {
        plan,
        per_generation,
    } = checked;
    let criteria = plan
        .checked
        .iter()
        .map(|(name, value)| {
            Criterion::parse(resource_type, name, value)
                .map_err(|e| ApiError::SearchRefused(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let paging = Paging::of(state, resource_type, params)?;
    let mut scope = Vec::new();
    let patient = narrow(caller, resource_type, &mut scope)?;
    decide(state, caller, Interaction::Search, resource_type, patient)?;
    let cap = state.config.search.candidate_cap;
    let mut kept: Vec<Value> = Vec::new();
    let mut references = Vec::new();
    let mut report = fhirseal_seal::OpenReport::default();
    if !plan.nothing {
        let queries = if per_generation.is_empty() {
            vec![plan.upstream]
        } else {
            per_generation
        };
        let bundle = candidates(state, resource_type, params, queries, &scope, cap).await?;
        let (opened, _, opened_report) =
            filter_and_open(state, caller, bundle, Interaction::Search, false).await?;
        report = opened_report;
        for entry in entries(&opened) {
            let Some(resource) = entry.get("resource") else {
                continue;
            };
            if is_match(entry)
                && resource.get("resourceType").and_then(Value::as_str) == Some(resource_type)
                && criteria.iter().all(|c| c.matches(resource))
            {
                kept.push(entry.clone());
            }
        }
    }
    let total = kept.len();
    let page: Vec<Value> = if paging.summary_count {
        Vec::new()
    } else {
        kept.into_iter()
            .skip(paging.offset)
            .take(paging.count)
            .collect()
    };
    for entry in &page {
        if let Some(reference) = entry.get("resource").and_then(reference_of) {
            references.push(reference);
        }
    }
    let mut links = vec![json!({"relation": "self", "url": paging.link(state, paging.offset)})];
    if !paging.summary_count {
        links.push(json!({"relation": "first", "url": paging.link(state, 0)}));
        if paging.offset > 0 {
            let previous = paging.offset.saturating_sub(paging.count);
            links.push(json!({"relation": "previous", "url": paging.link(state, previous)}));
        }
        let next = paging.offset.saturating_add(paging.count);
        if next < total {
            links.push(json!({"relation": "next", "url": paging.link(state, next)}));
        }
    }
    let mut bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
    });
    if !page.is_empty() {
        bundle["entry"] = Value::Array(page);
    }
    Ok(Answer::new(
        StatusCode::OK,
        Some(bundle),
        note("search-type", references, report, 0),
    ))
}

/// Whether a searchset entry is a match (not an included resource or an outcome).
fn is_match(entry: &Value) -> bool {
    entry
        .get("search")
        .and_then(|s| s.get("mode"))
        .and_then(Value::as_str)
        .is_none_or(|m| m == "match")
}

/// The candidates, as one `searchset` Bundle: the upstream asked each of `queries` in turn (one,
/// or one per generation of the blind-index secret searched, oldest first), each with the
/// scopes' narrowing `scope`, the search's `_sort` and `_count` = `cap`; their entries in that
/// order, a resource found by several queries kept once, where first found (a resource
/// re-indexed between two queries is in both). More than `cap` candidates in one query, or in
/// all of them together, is a refusal.
async fn candidates(
    state: &AppState,
    resource_type: &str,
    params: &[(String, String)],
    queries: Vec<Vec<(String, String)>>,
    scope: &[(String, String)],
    cap: usize,
) -> Result<Value, ApiError> {
    let too_many = || {
        ApiError::SearchRefused(format!(
            "the search reads sealed elements and has more than {cap} candidates for the \
             gateway to check: narrow it with more parameters"
        ))
    };
    let mut merged: Vec<Value> = Vec::new();
    let mut seen = HashSet::new();
    // One after the other, in order: see `super::checked` on why the oldest generation first.
    for mut query in queries {
        query.extend_from_slice(scope);
        for (name, value) in params {
            if name == "_sort" {
                query.push((name.clone(), value.clone()));
            }
        }
        query.push(("_count".into(), cap.to_string()));
        let mut bundle =
            upstream_bundle(state, with_query(resource_type, &query), &["searchset"]).await?;
        let more = bundle
            .get("link")
            .and_then(Value::as_array)
            .is_some_and(|links| links.iter().any(|l| l["relation"] == "next"));
        let total = bundle.get("total").and_then(Value::as_u64);
        if more || total.is_some_and(|t| t > cap as u64) {
            return Err(too_many());
        }
        if let Some(Value::Array(list)) = bundle.get_mut("entry") {
            for entry in std::mem::take(list) {
                let first = entry
                    .get("resource")
                    .and_then(reference_of)
                    .is_none_or(|reference| seen.insert(reference));
                if first {
                    merged.push(entry);
                }
            }
        }
    }
    if merged.iter().filter(|e| is_match(e)).count() > cap {
        return Err(too_many());
    }
    Ok(json!({"resourceType": "Bundle", "type": "searchset", "entry": merged}))
}

/// Where a page starts, how long it is, and how to link to another.
struct Paging {
    resource_type: String,
    /// The search's parameters but the paging ones (`_count` kept), as given.
    query: Vec<(String, String)>,
    offset: usize,
    count: usize,
    summary_count: bool,
    expires: u64,
}

impl Paging {
    /// The page asked for: `_offset`, or the offset of a valid `_cursor` (which wins), and
    /// `_count`.
    fn of(
        state: &AppState,
        resource_type: &str,
        params: &[(String, String)],
    ) -> Result<Self, ApiError> {
        for (name, _) in params {
            let base = name.split(':').next().unwrap_or_default();
            if REFUSED.contains(&base) {
                return Err(ApiError::SearchRefused(format!(
                    "{base} is not supported on a search that reads sealed elements: the \
                     gateway checks each candidate itself"
                )));
            }
        }
        let query: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| k != CURSOR && k != "_offset")
            .cloned()
            .collect();
        let number = |key: &str| -> Option<usize> {
            params
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .and_then(|(_, v)| v.parse().ok())
        };
        let count = number("_count").unwrap_or(DEFAULT_COUNT);
        let summary_count =
            params.iter().any(|(k, v)| k == "_summary" && v == "count") || count == 0;
        let mut paging = Self {
            resource_type: resource_type.to_string(),
            query,
            offset: number("_offset").unwrap_or(0),
            count,
            summary_count,
            expires: now().saturating_add(state.config.search.cursor_seconds),
        };
        if let Some((_, cursor)) = params.iter().find(|(k, _)| k == CURSOR) {
            paging.offset = paging.open(state, cursor)?;
        }
        Ok(paging)
    }

    /// The MAC of a cursor for this search, `offset` and `expires`, under `key` (a generation
    /// of the blind-index secret: cursors are signed under the current one and accepted under any
    /// still searched, so that a rotation does not break paging in progress).
    fn mac(&self, key: &BlindIndex, offset: usize, expires: u64) -> String {
        let signed = format!(
            "{}\n{}\n{offset}\n{expires}",
            with_query(&self.resource_type, &self.query),
            self.query.len()
        );
        key.purpose_mac("search cursor v1", signed.as_bytes())
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The offset a cursor holds, if this gateway signed it for this very search and it has
    /// not expired.
    fn open(&self, state: &AppState, cursor: &str) -> Result<usize, ApiError> {
        let invalid = || {
            ApiError::SearchRefused(format!(
                "{CURSOR}: the paging link is not one this gateway made for this search, or it \
                 has expired; run the search again"
            ))
        };
        let mut parts = cursor.split('.');
        let (Some(offset), Some(expires), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let offset: usize = offset.parse().map_err(|_| invalid())?;
        let expires: u64 = expires.parse().map_err(|_| invalid())?;
        let keys = state.sealing.index_keys();
        let same = keys.searched().iter().any(|key| {
            let expected = self.mac(key, offset, expires);
            expected.len() == mac.len()
                && expected
                    .bytes()
                    .zip(mac.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        });
        if !same || expires < now() {
            return Err(invalid());
        }
        Ok(offset)
    }

    /// The upstream-based URL of the page at `offset` (the answer's URLs are moved to the
    /// gateway's base with the rest of it).
    fn link(&self, state: &AppState, offset: usize) -> String {
        let mut query = self.query.clone();
        let cursor = format!(
            "{offset}.{}.{}",
            self.expires,
            self.mac(state.sealing.index_keys().current(), offset, self.expires)
        );
        query.push((CURSOR.into(), cursor));
        format!(
            "{}/{}",
            state.upstream.base().trim_end_matches('/'),
            with_query(&self.resource_type, &query)
        )
    }
}
