//! FHIRseal's seal/open transforms: the sealing rules, checked against R4, and the transforms
//! that turn a resource or Bundle into the form an unmodified FHIR server stores, and back. The
//! FHIR vocabulary they are written in (structure facts, element paths, search parameters) is
//! `fhirseal-fhir`.
//!
//! # How a sealed element looks upstream
//!
//! (DESIGN.md, "How a sealed element looks on the upstream server".) For each element a rule
//! selects, the members that carry it are taken out of the object that holds them, serialised as
//! a JSON object (`{"birthDate": "1974-12-25", "_birthDate": {…}}`) and sealed into one AES-256-GCM
//! [`fhirseal_envelope::Envelope`] bound to the resource type, the logical id, the element's
//! concrete path (`Patient.name[1]`, `Observation.value[x]`, `Patient.contact[0].telecom[2]`) and
//! the access structure. In their place:
//!
//! | element | upstream form |
//! |---|---|
//! | single primitive (`birthDate`) | `_birthDate: {extension: [data-absent-reason masked, sealed-element]}` |
//! | repeating primitive item (`given[1]`) | `given[1]: null`, `_given[1]: {extension: […]}` (the value array goes if all null) |
//! | complex element or item (`maritalStatus`, `name[0]`) | `{extension: […]}` (an Extension keeps its `url`) |
//! | `value[x]` where R4 has `dataAbsentReason` | `dataAbsentReason: {coding: [masked], extension: [sealed-element]}` |
//! | a choice elsewhere (`deceased[x]`) | as above, under the chosen type's name: the type is kept |
//! | narrative `text` | sealed under the conjunction of the resource's structures, a neutral `div` in its place ([`Narrative`]) |
//! | `Reference.display` repeating a sealed value | sealed as a primitive ([`Displays`]) |
//!
//! The resource gets `meta.security` `MASKED`; with [`fhirseal_envelope::Granularity::Resource`]
//! its RS-HABE headers travel in `sealed-header` extensions on the resource itself, with
//! `Shared` they live once elsewhere and are found through a [`HeaderLookup`]. Contained
//! resources are sealed by the rules of their own type, bound to the containing resource.
//!
//! Opening ([`Reader::open`]) needs no rules: the upstream form describes itself. Each element
//! opens to exactly what was sealed, or, when the reader's attributes do not satisfy its
//! structure, stays masked: the data-absent-reason stays, the envelope goes. Nothing is silently
//! dropped. Every header and envelope is checked first under the trusted zone's sealing key
//! ([`fhirseal_envelope::SealingKey`]): one that is not what FHIRseal sealed there (made from the
//! public parameters, modified, moved from another element or resource, version 1) is **forged**
//! for every reader: masked too, flagged with data-absent-reason `error` and the resource's
//! `meta.security` label [`shape::FORGED_CODE`], and counted apart in the [`OpenReport`]
//! (`docs/authenticity.md`).
//!
//! After a revocation, [`update_headers`] moves the `sealed-header`s a stored resource (or a
//! Bundle of them) carries to the new period with the public ciphertext update: no key needed,
//! idempotent, nothing changed on an error. Old-period keys then open nothing of it.
//!
//! # Search
//!
//! Whether a query key reads an element the rules seal, so that the server could not answer it,
//! is [`search::sealed_search_param`], over R4's search parameters ([`fhirseal_fhir::search`]).
//!
//! # Ids
//!
//! An envelope is bound to the resource's `id`, or, for a Bundle entry without one, to its
//! `fullUrl` (the `urn:uuid:` of a transaction entry). A resource the server gives a new id
//! must be sealed again under that id (the gateway assigns ids itself before sealing creates).
#![warn(missing_docs)]

mod headers;
pub mod index;
pub mod merge;
mod open;
mod parse;
mod plaintext;
pub mod rules;
mod seal;
pub mod search;
pub mod shape;
mod update;

pub use headers::{NeededHeaders, needed_headers, shared_header_ids};
pub use merge::{MergeError, Merged, merge, unreadable_paths};
pub use open::{MAX_FORGED_LISTED, MAX_PATHS_LISTED, OpenReport, Reader};
pub use parse::parse_for_reader;
pub use rules::{
    Compound, DEFAULT_INDEX_BITS, Displays, ElementRule, Narrative, RuleError, RuleSet, Rules,
    SearchMode,
};
pub use seal::{Sealed, Sealer, SharedHeaders, locate, reindex_tags, resource_tags};
pub use update::{HeaderUpdate, UpdateError, update_headers};

use std::borrow::Cow;

use fhirseal_envelope::{Header, HeaderId};
use serde_json::{Map, Value};

/// Where readers find shared headers (`shared` granularity) by id: the gateway's store of them.
pub trait HeaderLookup {
    /// The header with id `id`, if known.
    fn header(&self, id: HeaderId) -> Option<Header>;
}

/// Where a [`Reader`] finds the sealing rules it checks each resource against
/// ([`Reader::with_rules`]): an element they seal that stands in clear was not sealed by FHIRseal
/// and is withheld as forged (`docs/authenticity.md`). Only paths matter to the check, so rules
/// resolved for any patient do.
pub trait RuleSource {
    /// The rules sealing would apply to `resource`, a resource in its upstream form.
    fn rules_for(&self, resource: &Map<String, Value>) -> Cow<'_, Rules>;
}

impl RuleSource for Rules {
    fn rules_for(&self, _resource: &Map<String, Value>) -> Cow<'_, Rules> {
        Cow::Borrowed(self)
    }
}

/// Why a resource cannot be sealed. No variant carries a protected value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The input is not a JSON object with a `resourceType`.
    #[error("not a FHIR resource: a JSON object with a resourceType is expected")]
    NotAResource,
    /// A resource with something to seal has no id and no transaction binding.
    #[error(
        "{resource_type} has no id: an id (or a transaction entry's fullUrl) is needed to bind its sealed elements"
    )]
    NoId {
        /// Its type.
        resource_type: String,
    },
    /// The resource already holds sealed elements or the `MASKED` label: masked content read
    /// from the gateway cannot be written back as it is.
    #[error("{resource_type} already holds sealed or masked elements; it cannot be sealed again")]
    AlreadySealed {
        /// Its type.
        resource_type: String,
    },
    /// An element does not have the shape R4 defines, so it could not be sealed.
    #[error("{path} {reason}")]
    Invalid {
        /// The element's concrete path.
        path: String,
        /// What is wrong (never its value).
        reason: String,
    },
    /// Making a header failed.
    #[error("sealing failed: {0}")]
    Crypto(#[from] fhirseal_envelope::Error),
    /// A sealer that makes no header ([`Sealer::known_headers_only`]) needed one: nothing was
    /// made or changed; seal again with a sealer that may make it ([`Sealer::new`]).
    #[error("sealing needs a header that is not made yet")]
    HeaderNeeded,
}
