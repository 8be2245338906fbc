//! The consent log: the patients' Consents as the trusted zone recorded them, read by every
//! replica (the module above says where they live and what reads them). Below the rest of the
//! gateway: it needs only the authority and the policy's consent types.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use fhirseal_authority::Authority;
use fhirseal_policy::{ConsentBook, ConsentRecord, ConsentView};
use rand_core::OsRng;
use zeroize::Zeroizing;

/// How often every replica reads the log again.
pub const REFRESH: Duration = Duration::from_secs(30);
/// The log's entries' name prefix in the authority.
const LOG: &str = "consent/log/";
/// How many times an append retries past entries other replicas wrote at the same time.
const APPEND_ATTEMPTS: usize = 16;

/// The consents the trusted zone recorded, as this process last read them.
#[derive(Debug, Default)]
pub struct Consents {
    book: RwLock<Arc<ConsentBook>>,
    /// The log entries read so far (the next one to read is `read + 1`).
    read: Mutex<u64>,
    /// The restricted set of the current book, and until when (microseconds; `None`: for
    /// good) it holds: decisions do not walk every consent.
    restricted: RwLock<Option<Restricted>>,
}

/// A cached restricted set ([`ConsentBook::restricted_until`]).
#[derive(Debug)]
struct Restricted {
    /// The book it was computed from: a cache of another book is no cache.
    book: Arc<ConsentBook>,
    set: Arc<BTreeSet<String>>,
    from: i64,
    until: Option<i64>,
}

/// Why the log could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ConsentLogError {
    /// The authority failed.
    #[error(transparent)]
    Authority(#[from] fhirseal_authority::Error),
    /// An entry is not a consent record.
    #[error("the consent log's entry {entry} is not a consent record: {reason}")]
    Corrupt {
        /// Its number.
        entry: u64,
        /// Why.
        reason: String,
    },
    /// Other replicas kept appending at the same time.
    #[error("the consent log is being appended to by other replicas: try again")]
    Contended,
}

impl Consents {
    /// Every consent recorded in `authority`.
    ///
    /// # Errors
    /// The authority failed or an entry does not read.
    pub fn load(authority: &Authority) -> Result<Self, ConsentLogError> {
        let consents = Self::default();
        consents.refresh(authority)?;
        Ok(consents)
    }

    /// The book as last read.
    pub fn book(&self) -> Arc<ConsentBook> {
        Arc::clone(&self.book.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// What a decision on a record of `patient` needs at `now` (seconds since the epoch).
    pub fn view(&self, patient: Option<&str>, now: i64) -> ConsentView {
        let book = self.book();
        if book.is_empty() {
            return ConsentView::default();
        }
        let now = now.saturating_mul(1_000_000);
        book.view_with(patient, now, self.restricted(&book, now))
    }

    /// The restricted set at `now` (microseconds), from the cache while it holds.
    fn restricted(&self, book: &Arc<ConsentBook>, now: i64) -> Arc<BTreeSet<String>> {
        if let Some(cached) = &*self.restricted.read().unwrap_or_else(|e| e.into_inner())
            && Arc::ptr_eq(&cached.book, book)
            && cached.from <= now
            && cached.until.is_none_or(|until| now < until)
        {
            return Arc::clone(&cached.set);
        }
        let (set, until) = book.restricted_until(now);
        let set = Arc::new(set);
        *self.restricted.write().unwrap_or_else(|e| e.into_inner()) = Some(Restricted {
            book: Arc::clone(book),
            set: Arc::clone(&set),
            from: now,
            until,
        });
        set
    }

    /// Reads the entries appended since the last read; how many were new.
    ///
    /// # Errors
    /// The authority failed or an entry does not read (the book keeps what it had).
    pub fn refresh(&self, authority: &Authority) -> Result<usize, ConsentLogError> {
        let mut read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        let mut records = Vec::new();
        let mut next = *read + 1;
        while let Some(bytes) = authority.secret(&format!("{LOG}{next}"))? {
            records.push(parse(next, &bytes)?);
            next += 1;
        }
        if records.is_empty() {
            return Ok(0);
        }
        let count = records.len();
        let mut book = (*self.book()).clone();
        for record in records {
            book.insert(record);
        }
        *self.book.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(book);
        *read = next - 1;
        Ok(count)
    }

    /// Appends `record` to the log (after whatever other replicas appended) and to the book.
    ///
    /// # Errors
    /// The authority failed, or other replicas kept appending ([`ConsentLogError::Contended`]).
    pub fn record(
        &self,
        authority: &Authority,
        record: &ConsentRecord,
    ) -> Result<(), ConsentLogError> {
        let bytes =
            Zeroizing::new(
                serde_json::to_vec(record).map_err(|e| ConsentLogError::Corrupt {
                    entry: 0,
                    reason: e.to_string(),
                })?,
            );
        for _ in 0..APPEND_ATTEMPTS {
            self.refresh(authority)?;
            let entry = *self.read.lock().unwrap_or_else(|e| e.into_inner()) + 1;
            let mine = bytes.clone();
            let stored = authority.secret_or_create(
                &format!("{LOG}{entry}"),
                move || Ok(mine),
                &mut OsRng,
            )?;
            if *stored == *bytes {
                // Ours, or an identical record another replica wrote: either way in the log.
                self.refresh(authority)?;
                return Ok(());
            }
        }
        Err(ConsentLogError::Contended)
    }
}

fn parse(entry: u64, bytes: &[u8]) -> Result<ConsentRecord, ConsentLogError> {
    serde_json::from_slice(bytes).map_err(|e| ConsentLogError::Corrupt {
        entry,
        reason: e.to_string(),
    })
}
