//! Moving a stored resource's sealed headers to a later period, after a revocation: the public
//! RS-HABE ciphertext update, applied to the `sealed-header` extensions an upstream server
//! stores. No key is needed, so the job that does it (issue 7) holds none.
//!
//! A header of period `t` opens with decryption keys of period `t` or later; moved to `t' > t`,
//! it no longer opens with any key of an earlier period, so a copy of a revoked user's old key
//! stops working, and the revoked user gets no key for `t'`. The element envelopes are not
//! touched: they are bound to the header's id, which the update keeps, under the same key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fhirseal_envelope::Header;
use rand_core::{CryptoRng, RngCore};
use rshabe::{PublicParams, UpdateMode};
use serde_json::Value;

use crate::shape::SEALED_HEADER;

/// What [`update_headers`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeaderUpdate {
    /// Headers moved to the target period.
    pub moved: usize,
    /// Headers already at the target period or later, left as they were.
    pub current: usize,
}

/// Why a resource's headers cannot be moved. Nothing was changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    /// A `sealed-header` extension holds no well-formed header. Skipping it would leave it open
    /// to revoked keys, so the resource is refused as a whole.
    #[error("a sealed-header extension at {location} is not a well-formed header")]
    Malformed {
        /// Where, as a JSON path (`contained[0].extension[2]`).
        location: String,
    },
    /// The scheme refused the update (a period past the time tree, say).
    #[error("a header cannot be moved to period {period}")]
    Scheme {
        /// The target period.
        period: u64,
    },
}

/// Moves every `sealed-header` in `resource` (its own, its contained resources', each entry's of
/// a Bundle, at any depth) whose period is before `period` to `period`, in place. Headers at
/// `period` or later are left alone, so running it again changes nothing: a job can resume
/// anywhere and repeat work safely. On an error nothing is changed.
pub fn update_headers(
    resource: &mut Value,
    pp: &PublicParams,
    period: u64,
    mode: UpdateMode,
    rng: &mut (impl CryptoRng + RngCore),
) -> Result<HeaderUpdate, UpdateError> {
    // First every header is read and moved, then written: a failure leaves the resource whole.
    let mut found = Vec::new();
    collect(resource, &mut String::new(), &mut found);
    let mut report = HeaderUpdate::default();
    let mut writes = Vec::new();
    for (index, (location, text)) in found.iter().enumerate() {
        let malformed = || UpdateError::Malformed {
            location: location.clone(),
        };
        let bytes = STANDARD.decode(text).map_err(|_| malformed())?;
        let header = Header::from_bytes(&bytes).map_err(|_| malformed())?;
        if header.ciphertext().period() >= period {
            report.current += 1;
            continue;
        }
        let moved = header
            .update(pp, period, mode, rng)
            .map_err(|_| UpdateError::Scheme { period })?;
        writes.push((index, STANDARD.encode(moved.to_bytes())));
        report.moved += 1;
    }
    let mut writes = writes.into_iter().peekable();
    let mut index = 0;
    write(resource, &mut index, &mut writes);
    Ok(report)
}

/// Every `sealed-header` value below `value`, with its location, in document order.
fn collect(value: &Value, location: &mut String, found: &mut Vec<(String, String)>) {
    match value {
        Value::Object(object) => {
            if let Some(text) = header_text(value) {
                found.push((location.clone(), text.to_string()));
                return;
            }
            for (name, child) in object {
                let len = location.len();
                if !location.is_empty() {
                    location.push('.');
                }
                location.push_str(name);
                collect(child, location, found);
                location.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = location.len();
                location.push_str(&format!("[{i}]"));
                collect(item, location, found);
                location.truncate(len);
            }
        }
        _ => {}
    }
}

/// Writes the moved headers back, walking in the same order as [`collect`].
fn write(
    value: &mut Value,
    index: &mut usize,
    writes: &mut std::iter::Peekable<std::vec::IntoIter<(usize, String)>>,
) {
    if header_text(value).is_some() {
        if writes.peek().is_some_and(|(i, _)| *i == *index)
            && let (Some((_, text)), Value::Object(object)) = (writes.next(), &mut *value)
        {
            object.insert("valueBase64Binary".into(), Value::String(text));
        }
        *index += 1;
        return;
    }
    match value {
        Value::Object(object) => {
            for child in object.values_mut() {
                write(child, index, writes);
            }
        }
        Value::Array(items) => {
            for item in items {
                write(item, index, writes);
            }
        }
        _ => {}
    }
}

/// The `valueBase64Binary` of a `sealed-header` extension (also a malformed, non-string one,
/// as the empty string, so that it is refused rather than skipped).
fn header_text(value: &Value) -> Option<&str> {
    let object = value.as_object()?;
    if object.get("url").and_then(Value::as_str) != Some(SEALED_HEADER) {
        return None;
    }
    Some(
        object
            .get("valueBase64Binary")
            .and_then(Value::as_str)
            .unwrap_or(""),
    )
}
