//! The "seal the request" step of the request flow: what a write sends upstream.
//!
//! [`Sealing`] holds what every write seals with: the book of shared headers this process seals
//! under (one per access structure and period, made on first use), the blind-index keys (the
//! generations of a named secret of the authority, [`crate::index_secret`], read again every
//! [`REFRESH`]) and the sealing key (a named secret too), so every replica writes the same tokens
//! and every replica accepts what another sealed. The sealing key tags and binds every header and
//! envelope (version 2, `docs/authenticity.md`); readers check it before opening anything. [`Sealing::seal`]
//! turns a resource into its upstream form under the sealing rules of the decision that permitted
//! the write (the policy is not looked up a second time: [`Obligations::sealing`]) as an
//! [`Unstored`] write: the resource is only handed out for sending by [`Unstored::store`], which
//! stores every shared header it names on the upstream first (a resource whose header was never
//! stored could never be opened again). A write refused between the two (too large to store)
//! leaves nothing upstream.

use std::borrow::Cow;
use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock, TryLockError};

use fhirseal_authority::Authority;
use fhirseal_envelope::{Header, HeaderId, SealingKey};
use fhirseal_policy::{Label, Obligations, Policy};
use fhirseal_seal::shape::{
    DATA_ABSENT_REASON, NEUTRAL_DIV, forged_placeholder, has_forged_label, remove_forged_labels,
};
use fhirseal_seal::{
    HeaderLookup, RuleSource, Rules, SealError, Sealer, SharedHeaders, shared_header_ids,
};
use rand_core::{OsRng, RngCore};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::headers::{HeaderError, HeaderStore};
pub use crate::index_secret::BLIND_INDEX_SECRET;
use crate::index_secret::{IndexKeys, REFRESH, secret_or_create_32};
/// The authority's named secret the sealing key is derived from: what makes sealed data
/// authentic against the upstream (`docs/authenticity.md`).
pub const SEALING_SECRET: &str = "fhir/sealing-key";

/// What writes seal with; see the module documentation. Cheap to share (`Arc`).
pub struct Sealing {
    authority: Arc<Authority>,
    /// The policy, for the read path's check only: writes seal under their decision's rules.
    policy: Arc<Policy>,
    /// Read by every seal, written only by one that makes a header.
    book: RwLock<SharedHeaders>,
    /// The blind-index secret's generations, as last read from the authority.
    index: RwLock<Arc<IndexKeys>>,
    key: SealingKey,
    /// The policy's rules resolved once, for the read path's check (paths only) and for planning
    /// searches ([`Sealing::policy_rules`]).
    read_rules: Rules,
}

/// Why a write cannot be sealed. The messages are the client's; `error.rs` gives each its status
/// once: 422 for what the client sent, 5xx when the gateway failed (never the resource sent
/// unsealed). Errors about an element name its path, never its value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealingError {
    /// The resource holds what a reader gets in place of an element it cannot open
    /// ([`holds_masked_placeholder`]) where no stored element stands behind it: a create, or a
    /// placeholder the merge with the stored version did not carry across (an update's
    /// placeholders of stored elements are carried across before sealing, see
    /// `docs/gateway-rest.md`, "Writes").
    #[error(
        "the request cannot be processed: the resource holds elements masked for this caller \
         (data-absent-reason `masked`, or the protected narrative) where nothing stored stands \
         behind them; send the element's value, or leave it out"
    )]
    MaskedPlaceholder,
    /// The resource holds, at `path`, an element this gateway withheld as forged (a
    /// data-absent-reason `error` placeholder in a resource labelled forged,
    /// `docs/authenticity.md`): sealed as it is, it would stand as genuine.
    #[error(
        "the resource holds an element withheld as forged at {path}; writing it back would seal \
         the placeholder as genuine. Leave the element out, or write its true value"
    )]
    ForgedPlaceholder {
        /// The element's path (`Patient.birthDate`, `Patient.name[0]`).
        path: String,
    },
    /// A `display` of a reference to a patient is where no rule can seal it (failing closed: it
    /// would reach the upstream in clear).
    #[error(
        "the request cannot be processed: a reference display naming a patient is where no rule \
         can seal it ({0})"
    )]
    DisplayRule(#[source] fhirseal_seal::RuleError),
    /// The resource cannot be sealed as given (an element of the wrong shape, sealed or masked
    /// content), or making a header failed ([`fhirseal_seal::SealError::Crypto`]).
    #[error("the resource cannot be sealed: {0}")]
    Resource(#[source] SealError),
    /// The authority cannot say which period it is.
    #[error("the key authority could not provide the current period")]
    Period(#[source] fhirseal_authority::Error),
    /// The sealing task did not complete: it panicked (`panicked`) or the runtime is shutting
    /// down. (Not the task's own error: a panic's message is not for the log.)
    #[error("sealing the resource did not complete")]
    Task {
        /// Whether it panicked (else it was cancelled).
        panicked: bool,
    },
    /// A shared header the sealed resource names could not be found or stored upstream.
    #[error("the shared headers of the sealed resource could not be stored upstream")]
    Headers(#[from] HeaderError),
}

/// A resource in its upstream form, its shared headers stored: what may be sent.
#[derive(Debug)]
pub struct SealedWrite {
    /// What to send upstream.
    pub resource: Value,
    /// How many elements were sealed.
    pub elements: usize,
}

/// A resource sealed, the shared headers it names not stored yet: it can be looked at and
/// changed (the write merge carries stored envelopes in) but only [`Unstored::store`] hands it
/// out for sending.
#[derive(Debug)]
pub struct Unstored {
    resource: Value,
    elements: usize,
    headers: Vec<Header>,
}

impl Unstored {
    /// The sealed resource.
    pub fn resource(&self) -> &Value {
        &self.resource
    }

    /// How many elements were sealed.
    pub fn elements(&self) -> usize {
        self.elements
    }

    /// The sealed resource changed by `f` (its shared headers stay those it was sealed with).
    ///
    /// # Errors
    /// `f`'s error.
    pub fn try_map<E>(self, f: impl FnOnce(Value) -> Result<Value, E>) -> Result<Self, E> {
        Ok(Self {
            resource: f(self.resource)?,
            ..self
        })
    }

    /// Stores every shared header the resource names that `store` does not hold yet: then the
    /// resource may be sent.
    ///
    /// # Errors
    /// [`SealingError::Headers`]: a header could not be found or stored.
    pub async fn store(self, store: &HeaderStore) -> Result<SealedWrite, SealingError> {
        ensure_stored(store, self.headers).await?;
        Ok(SealedWrite {
            resource: self.resource,
            elements: self.elements,
        })
    }
}

impl Sealing {
    /// Sealing for `authority`, checking what it reads against `policy`; the blind-index keys
    /// and the sealing key are the authority's named secrets ([`BLIND_INDEX_SECRET`] and its
    /// later generations, [`SEALING_SECRET`]), made on first start.
    ///
    /// # Errors
    /// The authority's error when a secret cannot be read or stored, or is not 32 bytes.
    pub fn new(
        authority: Arc<Authority>,
        policy: Arc<Policy>,
    ) -> Result<Self, fhirseal_authority::Error> {
        let index = IndexKeys::load(&authority)?;
        let sealing = secret_or_create_32(&authority, SEALING_SECRET)?;
        let read_rules = policy.rules_for(None);
        Ok(Self {
            authority,
            policy,
            read_rules,
            book: RwLock::new(SharedHeaders::new()),
            index: RwLock::new(Arc::new(index)),
            key: SealingKey::new(&sealing),
        })
    }

    /// The policy's rules for records in no patient's compartment ([`Policy::rules_for`]`(None)`),
    /// resolved once: their paths, search parameters and compound indexes do not depend on the
    /// patient, so searches plan with them rather than resolving them per request.
    pub fn policy_rules(&self) -> &Rules {
        &self.read_rules
    }

    /// The blind-index secret's generations as last read: writes make tokens under the current
    /// one, searches ask for those of every one searched (and paging cursors are signed under
    /// the current one, checked under each).
    pub fn index_keys(&self) -> Arc<IndexKeys> {
        Arc::clone(&self.index.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Reads the blind-index secret's generations from the authority again (a blocking call):
    /// what they are now when they changed, `None` when not.
    ///
    /// # Errors
    /// The authority's error; the generations last read stay in use.
    pub fn refresh_index_keys(&self) -> Result<Option<String>, fhirseal_authority::Error> {
        let fresh = IndexKeys::load(&self.authority)?;
        let generations = |keys: &IndexKeys| -> Vec<u32> {
            keys.searched()
                .iter()
                .map(|i| i.generation().get())
                .collect()
        };
        let mut held = self.index.write().unwrap_or_else(PoisonError::into_inner);
        if generations(&fresh) == generations(held.as_ref()) {
            return Ok(None);
        }
        let text = fresh.describe();
        *held = Arc::new(fresh);
        Ok(Some(text))
    }

    /// Reads the generations again every [`REFRESH`] until `shutdown` completes, logging a
    /// change (the generation numbers only) and a failure (the generations last read stay).
    pub fn spawn_index_refresh(
        self: &Arc<Self>,
        shutdown: impl Future + Send + 'static,
    ) -> JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let rounds = async {
                loop {
                    tokio::time::sleep(REFRESH).await;
                    let sealing = Arc::clone(&this);
                    match tokio::task::spawn_blocking(move || sealing.refresh_index_keys()).await {
                        Ok(Ok(Some(generations))) => tracing::info!(
                            %generations,
                            "blind-index secret: new generations read from the authority"
                        ),
                        Ok(Ok(None)) => {}
                        Ok(Err(error)) => tracing::warn!(
                            %error,
                            "blind-index secret: the generations could not be read again; the last ones read stay in use"
                        ),
                        Err(_) => tracing::warn!(
                            "blind-index secret: reading the generations did not complete"
                        ),
                    }
                }
            };
            tokio::select! {
                _ = shutdown => {}
                () = rounds => {}
            }
        })
    }

    /// The sealing key every header and envelope is tagged with and checked against.
    pub fn key(&self) -> &SealingKey {
        &self.key
    }

    /// Seals `resource` (bound to its `id`, or to `binding` when it has none) at the current
    /// period under the sealing rules and labels of `permit`, the obligations of the decision
    /// that permitted writing it. Nothing is stored yet: [`Unstored::store`].
    ///
    /// Sealing under headers already made is a few AES-GCM encryptions and HMACs per element:
    /// it runs here, on the async thread that parsed the request, when nothing in it can wait
    /// (the period read from a local store no other call holds, the book of headers free to
    /// read, every header needed in it), and counts against the task's cooperative budget.
    /// Sent to the blocking pool, it cost a create about an eighth of its CPU in thread
    /// hand-offs (BENCHMARKS.md, "The hot path, fourteenth round"). Otherwise (a header to make,
    /// an RS-HABE encryption of milliseconds; a period read over the network or behind another
    /// call to the authority) it goes to the blocking pool.
    ///
    /// # Errors
    /// [`SealingError`]: the resource cannot be sealed as given (masked or forged placeholders,
    /// already sealed content, an element of the wrong shape), the period cannot be read, a
    /// header cannot be made.
    pub async fn seal(
        self: &Arc<Self>,
        mut resource: Value,
        binding: Option<String>,
        permit: Obligations,
    ) -> Result<Unstored, SealingError> {
        writable(&mut resource)?;
        // Labels are in `meta.security`, where no rule looks for a patient's display.
        add_labels(&mut resource, &permit.labels);
        let (sealed, headers) = match self.seal_now(&resource, binding.as_deref(), &permit) {
            Some(done) => {
                // One unit of the task's cooperative budget: a transaction sealing thousands of
                // entries one after another gives the thread back to the runtime every 128
                // seals or so, as it did at each hand-off to the pool, rather than holding it
                // for the whole Bundle. A single write never waits here.
                tokio::task::consume_budget().await;
                done?
            }
            None => {
                let this = Arc::clone(self);
                tokio::task::spawn_blocking(move || {
                    this.seal_blocking(&resource, binding.as_deref(), &permit)
                })
                .await
                .map_err(|e| SealingError::Task {
                    panicked: e.is_panic(),
                })??
            }
        };
        Ok(Unstored {
            resource: sealed.resource,
            elements: sealed.elements,
            headers,
        })
    }

    /// [`Sealing::seal`] on the caller's thread, when it cannot wait: the period read without
    /// waiting ([`Authority::try_current_period`]: a local store no other call holds), the
    /// book of headers free for reading, and every header it needs already in it. `None` when
    /// any of them is not so: nothing was changed, [`Sealing::seal_blocking`] does it all.
    fn seal_now(
        &self,
        resource: &Value,
        binding: Option<&str>,
        permit: &Obligations,
    ) -> Option<Result<(SealedWrite, Vec<Header>), SealingError>> {
        let now = fhirseal_authority::unix_now();
        let period = match self.authority.try_current_period(now)? {
            Ok(period) => period,
            Err(e) => return Some(Err(SealingError::Period(e))),
        };
        let book = match self.book.try_read() {
            Ok(book) => book,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        match self.seal_under(resource, binding, permit, period, Book::Known(&book)) {
            Err(SealingError::Resource(SealError::HeaderNeeded)) => None,
            done => Some(done),
        }
    }

    /// [`Sealing::seal`] off the async threads: the period from the authority, then the
    /// headers in the book, and only when one is missing the book for writing, to make it.
    fn seal_blocking(
        &self,
        resource: &Value,
        binding: Option<&str>,
        permit: &Obligations,
    ) -> Result<(SealedWrite, Vec<Header>), SealingError> {
        let now = fhirseal_authority::unix_now();
        let period = self
            .authority
            .current_period(now)
            .map_err(SealingError::Period)?;
        {
            let book = self.book.read().unwrap_or_else(PoisonError::into_inner);
            match self.seal_under(resource, binding, permit, period, Book::Known(&book)) {
                Err(SealingError::Resource(SealError::HeaderNeeded)) => {}
                done => return done,
            }
        }
        let mut book = self.book.write().unwrap_or_else(PoisonError::into_inner);
        self.seal_under(resource, binding, permit, period, Book::Grows(&mut book))
    }

    /// Seals `resource` (checked [`writable`], labelled) for `period` with the headers of
    /// `book`: the sealed resource and the shared headers it names.
    fn seal_under(
        &self,
        resource: &Value,
        binding: Option<&str>,
        permit: &Obligations,
        period: u64,
        book: Book<'_>,
    ) -> Result<(SealedWrite, Vec<Header>), SealingError> {
        // The decision's rules, for the patient it was made for: no second look at the policy.
        let rules = permit
            .sealing
            .for_resource(resource)
            .map_err(SealingError::DisplayRule)?;
        let index = self.index_keys();
        let (pp, mut rng) = (self.authority.public_params(), OsRng);
        let seal = |sealer: Sealer<'_, OsRng>| {
            sealer
                .with_blind_index(index.current())
                .seal_resource(resource, &rules, binding)
                .map_err(SealingError::Resource)
        };
        let (sealed, book): (_, &SharedHeaders) = match book {
            Book::Known(book) => {
                let sealer = Sealer::known_headers_only(pp, &self.key, period, book, &mut rng);
                (seal(sealer)?, book)
            }
            Book::Grows(book) => {
                let sealed = seal(Sealer::new(pp, &self.key, period, book, &mut rng))?;
                // The ones made now are among those named; the list of created ones is only
                // drained.
                book.take_created();
                (sealed, book)
            }
        };
        let needed = shared_header_ids(&sealed.resource)
            .into_iter()
            .filter_map(|id| book.header(id))
            .collect();
        Ok((
            SealedWrite {
                resource: sealed.resource,
                elements: sealed.elements,
            },
            needed,
        ))
    }
}

/// The book of shared headers a seal works with: read alone, or written to make what is missing.
enum Book<'b> {
    Known(&'b SharedHeaders),
    Grows(&'b mut SharedHeaders),
}

/// Checks that `resource` may be sealed as the client sent it, and takes off what only the
/// gateway may write: [`SealingError::MaskedPlaceholder`] for a masked element's placeholder,
/// [`SealingError::ForgedPlaceholder`] for a forged one's in a resource labelled forged, and
/// that label removed from any other.
fn writable(resource: &mut Value) -> Result<(), SealingError> {
    if holds_masked_placeholder(resource) {
        return Err(SealingError::MaskedPlaceholder);
    }
    // Only the gateway says what is forged: a client's label goes, and a forged element's
    // placeholder read from the gateway is not written back as a value.
    if has_forged_label(resource)
        && let Some(path) = forged_placeholder(resource)
    {
        return Err(SealingError::ForgedPlaceholder { path });
    }
    if let Some(object) = resource.as_object_mut() {
        remove_forged_labels(object);
    }
    Ok(())
}

/// What readers check stored resources against: the element the policy's rules seal, in clear,
/// was not sealed by FHIRseal and is withheld as forged (`docs/authenticity.md`). The rules are
/// resolved once; only a resource holding a patient's display in clear costs a resolution.
impl RuleSource for Sealing {
    fn rules_for(&self, resource: &serde_json::Map<String, Value>) -> Cow<'_, Rules> {
        self.policy.rules_to_check(&self.read_rules, resource)
    }
}

impl std::fmt::Debug for Sealing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealing").finish_non_exhaustive()
    }
}

/// Stores those of `headers` the upstream does not hold. A header already there is never
/// written again: the update job may have moved it to a later period since this process made
/// it, and writing this copy back would undo that.
async fn ensure_stored(store: &HeaderStore, headers: Vec<Header>) -> Result<(), HeaderError> {
    if headers.is_empty() {
        return Ok(());
    }
    let ids: Vec<HeaderId> = headers.iter().map(Header::id).collect();
    let found = store.lookup(&ids).await?;
    let missing: Vec<Header> = headers
        .into_iter()
        .filter(|h| found.header(h.id()).is_none())
        .collect();
    store.store(&missing).await
}

/// Whether `value` holds what a reader gets in place of an element it cannot open: the
/// data-absent-reason `masked` extension, or the neutral narrative of a sealed one. Such content
/// stands for a protected value; sealed as it is, it would replace that value for everyone.
pub fn holds_masked_placeholder(value: &Value) -> bool {
    match value {
        Value::Object(object) => {
            let masked_reason = object.get("url").and_then(Value::as_str)
                == Some(DATA_ABSENT_REASON)
                && object.get("valueCode").and_then(Value::as_str) == Some("masked");
            let neutral_div = object.get("div").and_then(Value::as_str) == Some(NEUTRAL_DIV);
            masked_reason || neutral_div || object.values().any(holds_masked_placeholder)
        }
        Value::Array(items) => items.iter().any(holds_masked_placeholder),
        _ => false,
    }
}

/// Adds the policy's security labels to `meta.security`, once each.
fn add_labels(resource: &mut Value, labels: &[Label]) {
    if labels.is_empty() {
        return;
    }
    let Some(object) = resource.as_object_mut() else {
        return;
    };
    let meta = object.entry("meta").or_insert_with(|| json!({}));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    let security = meta.entry("security").or_insert_with(|| json!([]));
    let Some(security) = security.as_array_mut() else {
        return;
    };
    for label in labels {
        let present = security.iter().any(|c| {
            c.get("system").and_then(Value::as_str) == Some(label.system)
                && c.get("code").and_then(Value::as_str) == Some(label.code.as_str())
        });
        if !present {
            security.push(json!({"system": label.system, "code": label.code}));
        }
    }
}

/// A fresh logical id for a created resource: a random UUID (version 4), which FHIR's id syntax
/// accepts. The gateway assigns ids itself because envelopes are bound to them.
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_fhir_ids_and_v4_uuids() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-'));
    }

    #[test]
    fn masked_placeholders_are_found_at_any_depth() {
        let masked = json!({"resourceType": "Patient", "identifier": [{"extension": [
            {"url": DATA_ABSENT_REASON, "valueCode": "masked"}]}]});
        assert!(holds_masked_placeholder(&masked));
        let narrative =
            json!({"resourceType": "Patient", "text": {"status": "generated", "div": NEUTRAL_DIV}});
        assert!(holds_masked_placeholder(&narrative));
        let unknown = json!({"resourceType": "Patient", "_birthDate": {"extension": [
            {"url": DATA_ABSENT_REASON, "valueCode": "unknown"}]}});
        assert!(!holds_masked_placeholder(&unknown));
    }

    #[test]
    fn labels_are_added_once() {
        let mut r = json!({"resourceType": "Patient", "meta": {"security": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]}});
        let label = Label {
            system: "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
            code: "R".into(),
        };
        add_labels(&mut r, &[label.clone(), label]);
        assert_eq!(r["meta"]["security"].as_array().map(Vec::len), Some(1));
    }
}
