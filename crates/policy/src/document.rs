//! The TOML documents as written, before validation: every key known, every value typed, with
//! the position of what validation may need to point at.

use std::collections::BTreeMap;

use fhirseal_fhir::rest::Interaction;
use serde::Deserialize;
use toml::Spanned;

/// Where something was written.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Origin {
    /// The file.
    pub file: String,
    /// Its line, from 1.
    pub line: usize,
}

/// One policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawFile {
    pub(crate) policy: Option<Spanned<RawHeader>>,
    #[serde(default)]
    pub(crate) roles: Vec<Spanned<RawRole>>,
    #[serde(default)]
    pub(crate) access: Vec<Spanned<RawAccess>>,
    #[serde(default)]
    pub(crate) protect: Vec<Spanned<RawProtect>>,
    #[serde(default)]
    pub(crate) break_glass: Vec<Spanned<RawBreakGlass>>,
    #[serde(default)]
    pub(crate) consent: Vec<Spanned<RawConsent>>,
}

/// `[[consent]]`: which protection rules a patient's `Consent` may widen or narrow.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawConsent {
    pub(crate) name: Spanned<String>,
    /// The protection rules it governs, by name.
    pub(crate) rules: Vec<Spanned<String>>,
    /// What an actor a permit names must also satisfy; absent: permits do not widen.
    #[serde(default)]
    pub(crate) permit: Option<Spanned<String>>,
    /// Whether deny provisions narrow the rules.
    #[serde(default)]
    pub(crate) deny: Option<Spanned<bool>>,
}

/// `[[break-glass]]`: who may assert an emergency, what it adds to their attributes, for how long.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawBreakGlass {
    pub(crate) name: Spanned<String>,
    /// An access structure over the caller's own attributes.
    pub(crate) who: Spanned<String>,
    /// The attributes added to the caller's for the emergency.
    pub(crate) grants: Vec<Spanned<String>>,
    /// How long a grant lasts from its first assertion.
    pub(crate) max_minutes: Spanned<i64>,
}

/// `[policy]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawHeader {
    pub(crate) name: String,
    pub(crate) version: String,
    #[serde(default)]
    pub(crate) description: Option<String>,
    pub(crate) default: Spanned<RawDefault>,
}

/// `default = "deny"`: the only default there is, written out so that readers see it.
#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum RawDefault {
    Deny,
}

/// `[[roles]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawRole {
    pub(crate) name: Spanned<String>,
    #[serde(default)]
    pub(crate) fhir_user_type: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) role_codes: Vec<String>,
    #[serde(default)]
    pub(crate) specialties: Vec<String>,
    #[serde(default)]
    pub(crate) organizations: Vec<String>,
    #[serde(default)]
    pub(crate) scopes: Vec<String>,
    #[serde(default)]
    pub(crate) claims: BTreeMap<String, String>,
    pub(crate) attributes: Vec<Spanned<String>>,
}

/// `[[access]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawAccess {
    pub(crate) name: Spanned<String>,
    pub(crate) resources: Vec<Spanned<String>>,
    pub(crate) interactions: Vec<Interaction>,
    pub(crate) readers: Spanned<String>,
}

/// `[[protect]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawProtect {
    pub(crate) name: Spanned<String>,
    pub(crate) resource: Spanned<String>,
    pub(crate) elements: Vec<Spanned<String>>,
    pub(crate) readers: Spanned<String>,
    /// Who may set these elements without being able to read them back (a registration desk, a
    /// device); absent: only their readers.
    #[serde(default)]
    pub(crate) writers: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) granularity: Option<RawGranularity>,
    #[serde(default)]
    pub(crate) search: Option<Search>,
    /// How many bits of each blind-index token are kept (`search = "blind-index"` only).
    #[serde(default)]
    pub(crate) index_bits: Option<Spanned<i64>>,
    /// Compound blind indexes: pairs of leaves of these elements (`["Patient.name.family",
    /// "Patient.birthDate"]`), one token per pair of values.
    #[serde(default)]
    pub(crate) compound_indexes: Vec<Spanned<Vec<Spanned<String>>>>,
    /// Elements of few distinct values that are still indexed alone, the leakage accepted.
    #[serde(default)]
    pub(crate) index_alone: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) labels: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) narrative: Option<Spanned<RawNarrative>>,
    #[serde(default)]
    pub(crate) displays: Option<Spanned<RawDisplays>>,
}

/// How a search on a sealed element is answered (DESIGN.md, "Search on sealed elements").
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Search {
    /// 400, naming the parameter.
    #[default]
    Reject,
    /// An equality search on a blind-index token.
    BlindIndex,
    /// Fetch broadly, open, filter in the gateway.
    Filter,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum RawGranularity {
    Shared,
    Resource,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum RawNarrative {
    Seal,
    Neutral,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum RawDisplays {
    Matching,
    All,
    Keep,
}
