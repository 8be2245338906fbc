//! Short named leases, shared by every process on one store: the gateway's create guard.
//!
//! A `PUT [type]/[id]` of an id the upstream does not hold is a create, and the upstream FHIR
//! server cannot be asked to create only if absent (`If-None-Match: *`), so the gateway excludes
//! concurrent creates of one resource itself: in one process with a keyed lock, across replicas
//! sharing a PostgreSQL store with a lease named after the resource (`Patient/x`) here.
//!
//! - [`Store::take_lease`](crate::Store::take_lease) gives the lease to a holder if no other
//!   holder has it past `now`, in one statement (`TAKE`) that both backends run as it is: an
//!   insert that, on a key already there, takes the row over only if it is the same holder's (it
//!   is extended) or its lease ended (a holder that was killed, or hung past its lease). Two
//!   takers never both get a live lease: the row's unique key makes the second wait for the first
//!   and then see its row.
//! - [`Store::release_lease`](crate::Store::release_lease) deletes the holder's row (`RELEASE`),
//!   and every row whose lease has ended with it, so the table holds only the leases in use (and
//!   a killed holder's until the next release by anyone).
//!
//! This is the precedent of the ciphertext-update job's chunk leases ([`crate::jobs`]): a holder
//! name, an expiry, and a holder that outlives its lease has lost it. Keys and holder names appear
//! in error messages: a resource type and id, a process's random name.

use crate::Error;

/// The longest lease key accepted, in bytes (a resource type, `/`, a FHIR id of at most 64).
pub const MAX_LEASE_KEY: usize = 256;

/// Takes lease `$1` for holder `$2` until `$3`, unless another holder has it past `$4` (now). It
/// changes one row when the lease is the holder's, none when it is another's. The same text on
/// PostgreSQL and SQLite (which numbers `$N` parameters by first use, here in order).
pub(crate) const TAKE: &str = "INSERT INTO leases (key, holder, lease_until) VALUES ($1, $2, $3)
     ON CONFLICT (key) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until
     WHERE leases.holder = excluded.holder OR leases.lease_until <= $4";

/// Deletes lease `$1` if holder `$2` has it, and every lease that ended at or before `$3` (now).
pub(crate) const RELEASE: &str =
    "DELETE FROM leases WHERE (key = $1 AND holder = $2) OR lease_until <= $3";

/// Checks a lease key and holder name.
pub(crate) fn check(key: &str, holder: &str) -> Result<(), Error> {
    if key.is_empty() || key.len() > MAX_LEASE_KEY {
        return Err(Error::Invalid(format!(
            "a lease key must have 1 to {MAX_LEASE_KEY} bytes, not {}",
            key.len()
        )));
    }
    crate::jobs::check_worker(holder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_holders_are_bounded() {
        assert!(check("Patient/x", "gw-1").is_ok());
        assert!(check("", "gw-1").is_err());
        assert!(check(&"k".repeat(MAX_LEASE_KEY + 1), "gw-1").is_err());
        assert!(check("Patient/x", "").is_err());
    }
}
