//! The re-index job: recomputes the blind-index tokens (`docs/search.md`) of every sealed resource
//! stored on the upstream, so that what the policy's indexes say now holds for data written
//! before: after `index-bits` changed, an element became `blind-index`, a compound index was
//! added, or data was written by a build that stored its tokens elsewhere. Without it, such
//! resources are simply not found by the index until rewritten.
//!
//! A token is computed from a value in clear, and the ciphertext-update job never opens one: the
//! re-index job needs a key. It runs under the gateway's own service identity
//! [`REINDEX_IDENTITY`], registered with the authority like any caller and holding every
//! attribute a role of the policy gives ([`fhirseal_policy::Policy::role_attributes`]), never
//! `patient:self`. That is a key that opens most of what is protected: it lives only in the
//! gateway's process (the trust zone with the authority, `DESIGN.md`), is derived for the current
//! period when the job runs, and can be revoked like any registration. A resource whose
//! blind-index elements it cannot open (one only `patient:self` may read) keeps its tokens and is
//! reported, never guessed at.
//!
//! For each resource type with a blind-index rule it pages through the resources labelled
//! `MASKED` (sorted by `_id`, as the ciphertext-update job does), opens each with that key, and
//! recomputes its tags exactly as sealing makes them ([`fhirseal_seal::reindex_tags`]); a
//! resource whose stored tags differ is written back with only its `meta.tag` tokens changed,
//! with `If-Match` on the version read (a concurrent write is re-read and redone). Envelopes and
//! headers are carried byte for byte. Running it twice changes nothing the second time; an
//! interrupted run is finished by running it again.
//!
//! The same walk finishes a rotation of the blind-index secret ([`retire_older_generations`],
//! [`crate::index_secret`]): under a new generation every resource's tokens differ, so the walk
//! rewrites them all, and only then are the older generations' tokens no longer searched.
//!
//! Nothing here logs or reports resource content: only types, ids and counts.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Arc;

use fhirseal_seal::index::{index_generation, replace_index_tags};
use fhirseal_seal::shape::OBSERVATION_VALUE_SYSTEM;
use fhirseal_seal::{RuleSet, reindex_tags, unreadable_paths};
use serde_json::Value;

use crate::ctupdate::{
    JobError, MAX_PAGES, WRITE_ATTEMPTS, Written, matches, next_link, put_if_match, read, search,
};
use crate::flow::protect::open_with;
use crate::index_secret::{self, RotationError};
use crate::keys::{KeyGrant, REINDEX_IDENTITY};
use crate::state::AppState;

/// What a re-index run did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ReindexSummary {
    /// Sealed resources read.
    pub checked: u64,
    /// Written back with new tokens.
    pub rewritten: u64,
    /// Already holding the tokens the policy asks for.
    pub unchanged: u64,
    /// `type/id` of each resource left as it was because a blind-index element of it does not
    /// open with the re-index key (only `patient:self` may read it).
    pub unreadable: Vec<String>,
    /// Resources that failed on their content (no version to write back with, kept changing),
    /// with why; the run goes on with the others.
    pub failed: Vec<(String, JobError)>,
    /// `type/id` of each resource (among `unreadable` and `failed`) left holding tokens of a
    /// generation of the blind-index secret older than the current one.
    pub older: Vec<String>,
}

/// Re-indexes every sealed resource of a type with a blind-index rule; `progress` is called
/// after each page.
///
/// # Errors
/// The re-index key cannot be had ([`JobError::ServiceKey`]), or the upstream failed (a search,
/// a read, a write with an unexpected status): the run stops; running it again resumes (what
/// was done is then unchanged).
pub async fn reindex(
    state: &AppState,
    now: i64,
    mut progress: impl FnMut(&ReindexSummary),
) -> Result<ReindexSummary, JobError> {
    let rules = state.policy.rules_for(None);
    let attributes = state.policy.role_attributes();
    let grant = state
        .keyring
        .grant_for_service(REINDEX_IDENTITY, &attributes, now)
        .await
        .map_err(|e| JobError::ServiceKey(e.to_string()))?;
    let label = url::form_urlencoded::byte_serialize(
        format!("{OBSERVATION_VALUE_SYSTEM}|MASKED").as_bytes(),
    )
    .collect::<String>();
    let page_size = state.config.ct_update.page_size;
    let current = state.sealing.index_keys().current().generation();
    let mut summary = ReindexSummary::default();
    for set in rules
        .sets()
        .filter(|set| set.elements().iter().any(|r| r.blind_index()))
    {
        let resource_type = set.resource_type();
        let mut next = Some(format!(
            "{resource_type}?_security={label}&_sort=_id&_count={page_size}"
        ));
        let mut seen = HashSet::new();
        while let Some(path) = next.take() {
            if !seen.insert(path.clone()) || seen.len() > MAX_PAGES {
                return Err(JobError::PagingLoop);
            }
            let bundle = search(state, &path).await?;
            let resources: Vec<Value> = matches(&bundle, resource_type).cloned().collect();
            for resource in resources {
                summary.checked += 1;
                let name = format!(
                    "{resource_type}/{}",
                    resource
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                );
                let older = holds_older_tokens(&resource, current);
                match reindex_resource(state, &grant, set, &name, resource).await {
                    Ok(Outcome::Rewritten) => summary.rewritten += 1,
                    Ok(Outcome::Unchanged) => summary.unchanged += 1,
                    Ok(Outcome::Unreadable) => {
                        if older {
                            summary.older.push(name.clone());
                        }
                        summary.unreadable.push(name);
                    }
                    Err(error @ (JobError::NoVersion { .. } | JobError::Contended { .. })) => {
                        tracing::warn!(resource = %name, %error, "re-index of a resource failed");
                        if older {
                            summary.older.push(name.clone());
                        }
                        summary.failed.push((name, error));
                    }
                    Err(error) => return Err(error),
                }
            }
            progress(&summary);
            next = next_link(state, &bundle)?;
        }
    }
    Ok(summary)
}

/// Whether a stored resource holds a blind-index token of a generation other than `current`.
fn holds_older_tokens(resource: &Value, current: NonZeroU32) -> bool {
    resource
        .pointer("/meta/tag")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|tag| tag.get("system").and_then(Value::as_str))
        .filter_map(index_generation)
        .any(|(generation, _)| generation != current)
}

/// What finishing a rotation did ([`retire_older_generations`]).
#[derive(Debug)]
#[non_exhaustive]
pub struct RetireSummary {
    /// The walk that moved every resource it could open to the current generation.
    pub reindex: ReindexSummary,
    /// The generation every write now uses, and searches alone ask for.
    pub current: NonZeroU32,
    /// The generations retired.
    pub retired: Vec<NonZeroU32>,
}

/// Why a rotation could not be finished. Nothing was retired.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetireError {
    /// Not now: no rotation, or one too recent ([`index_secret::ready_to_retire`]).
    #[error(transparent)]
    Rotation(#[from] RotationError),
    /// The walk stopped ([`reindex`]'s error).
    #[error("the re-index walk stopped: {0}")]
    Job(#[from] JobError),
    /// Resources the walk could not move hold older tokens: they would drop out of searches on
    /// their blind-index elements.
    #[error(
        "{} sealed resource(s) still hold tokens of an older generation (the re-index key cannot \
         open their blind-index elements, or writing them back failed): {}. Run again; for those \
         only patient:self may read, `--force` retires anyway, and they drop out of searches on \
         those elements until they are next written",
        .resources.len(),
        listed(.resources)
    )]
    HeldBack {
        /// `type/id` of each.
        resources: Vec<String>,
        /// The walk's summary.
        summary: ReindexSummary,
    },
}

/// The first few of `names`, and how many more.
fn listed(names: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut text = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

/// Finishes a rotation of the blind-index secret at `now`: checks that the current generation
/// is old enough that every running gateway writes it ([`index_secret::ready_to_retire`]), walks
/// every sealed resource as [`reindex`] does (moving each to the current generation), and then,
/// when no resource is left holding older tokens (or `force`, for those the re-index key cannot
/// open), retires every older generation: searches stop asking for their tokens.
///
/// # Errors
/// [`RetireError`]; nothing is retired.
pub async fn retire_older_generations(
    state: &AppState,
    now: i64,
    force: bool,
    progress: impl FnMut(&ReindexSummary),
) -> Result<RetireSummary, RetireError> {
    // The generations as the authority holds them now (not as this process last read them).
    let sealing = Arc::clone(&state.sealing);
    let keys = blocking(state, move |a| {
        sealing.refresh_index_keys()?;
        let keys = sealing.index_keys();
        index_secret::ready_to_retire(a, &keys, now)?;
        Ok(keys)
    })
    .await?;
    let current = keys.current().generation();
    let reindex = reindex(state, now, progress).await?;
    if !reindex.failed.is_empty() || (!force && !reindex.older.is_empty()) {
        let mut resources = reindex.older.clone();
        for (name, _) in &reindex.failed {
            if !resources.contains(name) {
                resources.push(name.clone());
            }
        }
        return Err(RetireError::HeldBack {
            resources,
            summary: reindex,
        });
    }
    let sealing = Arc::clone(&state.sealing);
    let retired = blocking(state, move |a| {
        let retired = index_secret::retire(a, &keys, now)?;
        sealing.refresh_index_keys()?;
        Ok(retired)
    })
    .await?;
    Ok(RetireSummary {
        reindex,
        current,
        retired,
    })
}

/// Runs `call` with the authority on a blocking thread (its PostgreSQL client is synchronous).
async fn blocking<T: Send + 'static>(
    state: &AppState,
    call: impl FnOnce(&fhirseal_authority::Authority) -> Result<T, RotationError> + Send + 'static,
) -> Result<T, RetireError> {
    let authority = Arc::clone(&state.authority);
    tokio::task::spawn_blocking(move || call(&authority))
        .await
        .map_err(|_| RetireError::Job(JobError::Task))?
        .map_err(RetireError::Rotation)
}

enum Outcome {
    Rewritten,
    Unchanged,
    Unreadable,
}

/// Recomputes one resource's tokens and writes it back if they changed.
async fn reindex_resource(
    state: &AppState,
    grant: &KeyGrant,
    set: &RuleSet,
    name: &str,
    mut stored: Value,
) -> Result<Outcome, JobError> {
    for _ in 0..WRITE_ATTEMPTS {
        let (opened, _) = open_with(state, Some(grant.clone()), stored.clone())
            .await
            .map_err(|e| JobError::ServiceKey(e.to_string()))?;
        // Every blind-index element must have opened: a masked one would give no token, and the
        // resource would drop out of the searches on it.
        let masked = unreadable_paths(&stored, &opened);
        let indexed: Vec<String> = set
            .elements()
            .iter()
            .filter(|r| r.blind_index())
            .map(|r| r.path().plain())
            .collect();
        if masked.iter().any(|path| {
            let plain = without_indices(path);
            indexed.iter().any(|p| {
                plain
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
                    || p.strip_prefix(plain.as_str())
                        .is_some_and(|rest| rest.starts_with('.'))
            })
        }) {
            return Ok(Outcome::Unreadable);
        }
        let tags = reindex_tags(state.sealing.index_keys().current(), set, &opened);
        let mut updated = stored.clone();
        if !replace_index_tags(&mut updated, tags) {
            return Ok(Outcome::Unchanged);
        }
        match put_if_match(state, name, &updated).await? {
            Written::Stored => return Ok(Outcome::Rewritten),
            Written::Gone => return Ok(Outcome::Unchanged),
            Written::Conflict => match read(state, name).await? {
                Some(fresh) => stored = fresh,
                None => return Ok(Outcome::Unchanged),
            },
        }
    }
    Err(JobError::Contended {
        resource: name.to_string(),
    })
}

/// `Patient.name[0].given[1]` → `Patient.name.given`.
fn without_indices(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut depth = 0usize;
    for c in path.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::without_indices;

    #[test]
    fn indices_go() {
        assert_eq!(
            without_indices("Patient.name[0].given[1]"),
            "Patient.name.given"
        );
        assert_eq!(without_indices("Patient.birthDate"), "Patient.birthDate");
    }
}
