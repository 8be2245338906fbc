//! The blind-index secret's generations, and rotating it (`docs/search.md`, "Rotating the
//! secret").
//!
//! Blind-index tokens are keyed by a secret the authority holds, so that every replica on one
//! authority writes and asks for the same tokens. Rotating it gives a new *generation*: writes
//! then make the new generation's tokens (under systems of their own,
//! [`fhirseal_seal::index::index_system`]), searches ask for the tokens of both generations
//! (one upstream query per generation, merged; OR-ed in each `_tag` only under `_sort`), the
//! re-index job moves every sealed resource to the new generation,
//! and retiring the old generation ends the searches for its tokens. A copy of a retired secret
//! then computes tokens the upstream no longer holds for anything the job could open.
//!
//! Everything lives in the authority's named secrets, which are insert-only and sealed under
//! its key-encryption key, each bound to its name (so no record can be passed off as another):
//!
//! | secret | holds |
//! |---|---|
//! | `fhir/blind-index` | generation 1 (what every gateway before rotation existed made) |
//! | `fhir/blind-index/<n>` | generation `n` ≥ 2: 32 random bytes |
//! | `fhir/blind-index/<n>/since` | when generation `n` was made (Unix seconds, 8 bytes big-endian) |
//! | `fhir/blind-index/<n>/retired` | generation `n` is no longer searched (when, as above) |
//!
//! The current generation is the highest one stored; the generations searched are the current
//! one and every older one not retired. A rotation is refused while an older generation is still
//! searched, so at most two are. Each gateway reads this at start and again every [`REFRESH`];
//! retiring waits until [`SWITCH`] has passed since the rotation, by which time every running
//! replica writes the new generation, and then walks every sealed resource before retiring
//! (`fhirseal ciphertexts index-secret retire`). A replica that cannot read the authority keeps
//! the generations it last read, and says so in its log.
//!
//! Retired secrets stay in the authority's store (it is insert-only); nothing uses them.

use std::num::NonZeroU32;
use std::time::Duration;

use fhirseal_authority::{Authority, Error};
use fhirseal_envelope::BlindIndex;
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

/// The authority's named secret generation 1 of the blind-index key is derived from.
pub const BLIND_INDEX_SECRET: &str = "fhir/blind-index";

/// How often a running gateway reads the generations again.
pub const REFRESH: Duration = Duration::from_secs(30);

/// How long after a rotation the old generation may be retired: twice [`REFRESH`], so that every
/// running gateway has read the new generation and writes its tokens before the walk starts.
pub const SWITCH: Duration = Duration::from_secs(2 * REFRESH.as_secs());

/// The most generations looked for: a bound on a corrupt store, far beyond any real use.
const MAX_GENERATIONS: u32 = 10_000;

/// The generations of the blind-index secret a gateway writes and searches under.
#[derive(Debug)]
pub struct IndexKeys {
    /// The current generation first, then every older one still searched, newest first.
    searched: Vec<BlindIndex>,
    /// When the current generation was made (none for generation 1).
    since: Option<i64>,
}

impl IndexKeys {
    /// Reads the generations from `authority`, making generation 1 on first start.
    ///
    /// # Errors
    /// The authority's error: a secret cannot be read, stored or opened, or is not 32 bytes.
    pub fn load(authority: &Authority) -> Result<Self, Error> {
        let first = secret_or_create_32(authority, BLIND_INDEX_SECRET)?;
        let mut generations = vec![(NonZeroU32::MIN, first)];
        for n in 2..=MAX_GENERATIONS {
            let Some(secret) = stored_32(authority, &generation_name(n))? else {
                break;
            };
            let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
            generations.push((n, secret));
        }
        let (current, _) = generations[generations.len() - 1];
        let since = match current.get() {
            1 => None,
            n => authority
                .secret(&since_name(n))?
                .map(|bytes| time_of(&bytes, &since_name(n)))
                .transpose()?,
        };
        let mut searched = Vec::new();
        for (n, secret) in generations.into_iter().rev() {
            if n == current || authority.secret(&retired_name(n.get()))?.is_none() {
                searched.push(BlindIndex::of_generation(*secret, n));
            }
        }
        Ok(Self { searched, since })
    }

    /// The generation every write makes tokens under.
    pub fn current(&self) -> &BlindIndex {
        &self.searched[0]
    }

    /// Every generation a search asks for tokens of, the current one first.
    pub fn searched(&self) -> &[BlindIndex] {
        &self.searched
    }

    /// The generations still searched beside the current one (a rotation not yet retired).
    pub fn older(&self) -> impl Iterator<Item = NonZeroU32> {
        self.searched[1..].iter().map(BlindIndex::generation)
    }

    /// When the current generation was made, if it is not generation 1 and the time is known.
    pub fn since(&self) -> Option<i64> {
        self.since
    }

    /// The generations as a short text for logs and the command line: `2 (searching 1 too)`.
    pub fn describe(&self) -> String {
        let older: Vec<String> = self.older().map(|n| n.to_string()).collect();
        if older.is_empty() {
            self.current().generation().to_string()
        } else {
            format!(
                "{} (searching {} too)",
                self.current().generation(),
                older.join(", ")
            )
        }
    }
}

/// Why a rotation or a retirement cannot be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RotationError {
    /// A rotation is still in progress: its old generation is still searched.
    #[error(
        "generation {older} of the blind-index secret is still searched: finish that rotation \
         with `fhirseal ciphertexts index-secret retire` first"
    )]
    InProgress {
        /// The older generation.
        older: NonZeroU32,
    },
    /// No older generation is searched: there is nothing to retire.
    #[error(
        "no older generation of the blind-index secret is searched (current: {current}): \
         nothing to retire; `fhirseal ciphertexts index-secret rotate` starts a rotation"
    )]
    NothingToRetire {
        /// The current generation.
        current: NonZeroU32,
    },
    /// The rotation is too recent: a gateway may still write the old generation's tokens.
    #[error(
        "generation {current} was made {age} s ago: wait {wait} s more, until every running \
         gateway writes its tokens (they read the generations every {refresh} s), then retire"
    )]
    TooSoon {
        /// The current generation.
        current: NonZeroU32,
        /// Seconds since it was made.
        age: i64,
        /// Seconds left to wait.
        wait: i64,
        /// [`REFRESH`], in seconds.
        refresh: u64,
    },
    /// The authority failed.
    #[error("the key authority failed: {0}")]
    Authority(#[from] Error),
}

/// Makes the next generation of the blind-index secret at `now`: gateways write its tokens
/// within [`REFRESH`], and search both generations until the old one is retired ([`retire`]).
///
/// # Errors
/// [`RotationError::InProgress`] while an older generation is still searched; the authority's
/// error.
pub fn rotate(authority: &Authority, now: i64) -> Result<NonZeroU32, RotationError> {
    let keys = IndexKeys::load(authority)?;
    if let Some(older) = keys.older().next() {
        return Err(RotationError::InProgress { older });
    }
    let next = keys.current().generation().saturating_add(1);
    // The secret first, then its time: a run cut off between the two leaves a generation without
    // a time, which [`ready_to_retire`] then stamps (the wait starts later, never earlier).
    secret_or_create_32(authority, &generation_name(next.get()))?;
    stamp(authority, &since_name(next.get()), now)?;
    Ok(next)
}

/// Whether the older generations of `keys` may be retired at `now`: [`SWITCH`] has passed since
/// the current one was made. A current generation without a recorded time is stamped `now` (and
/// so must wait).
///
/// # Errors
/// [`RotationError::NothingToRetire`], [`RotationError::TooSoon`], the authority's error.
pub fn ready_to_retire(
    authority: &Authority,
    keys: &IndexKeys,
    now: i64,
) -> Result<(), RotationError> {
    let current = keys.current().generation();
    if keys.older().next().is_none() {
        return Err(RotationError::NothingToRetire { current });
    }
    let since = match keys.since() {
        Some(since) => since,
        None => stamp(authority, &since_name(current.get()), now)?,
    };
    let age = now.saturating_sub(since);
    let switch = i64::try_from(SWITCH.as_secs()).unwrap_or(i64::MAX);
    if age < switch {
        return Err(RotationError::TooSoon {
            current,
            age,
            wait: switch - age,
            refresh: REFRESH.as_secs(),
        });
    }
    Ok(())
}

/// Retires every generation of `keys` older than the current one, at `now`: searches stop asking
/// for their tokens (each gateway within [`REFRESH`]). The caller has checked
/// [`ready_to_retire`] and re-indexed every sealed resource to the current generation.
///
/// # Errors
/// The authority's error.
pub fn retire(authority: &Authority, keys: &IndexKeys, now: i64) -> Result<Vec<NonZeroU32>, Error> {
    let older: Vec<NonZeroU32> = keys.older().collect();
    for n in &older {
        stamp(authority, &retired_name(n.get()), now)?;
    }
    Ok(older)
}

fn generation_name(n: u32) -> String {
    if n == 1 {
        BLIND_INDEX_SECRET.to_string()
    } else {
        format!("{BLIND_INDEX_SECRET}/{n}")
    }
}

fn since_name(n: u32) -> String {
    format!("{BLIND_INDEX_SECRET}/{n}/since")
}

fn retired_name(n: u32) -> String {
    format!("{BLIND_INDEX_SECRET}/{n}/retired")
}

/// Stores `now` under `name` unless a time is stored there already: the stored time.
fn stamp(authority: &Authority, name: &str, now: i64) -> Result<i64, Error> {
    let stored = authority.secret_or_create(
        name,
        || Ok(Zeroizing::new(now.to_be_bytes().to_vec())),
        &mut OsRng,
    )?;
    time_of(&stored, name)
}

fn time_of(bytes: &[u8], name: &str) -> Result<i64, Error> {
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| Error::Corrupt {
        what: format!("the authority's secret `{name}`"),
        reason: "it is not an 8-byte time".into(),
    })?;
    Ok(i64::from_be_bytes(bytes))
}

/// The 32-byte named secret `name`: the stored one, or 32 random bytes stored now.
///
/// # Errors
/// The authority's error; a stored secret that is not 32 bytes is [`Error::Corrupt`].
pub(crate) fn secret_or_create_32(
    authority: &Authority,
    name: &str,
) -> Result<Zeroizing<[u8; 32]>, Error> {
    let secret = authority.secret_or_create(
        name,
        || {
            let mut bytes = Zeroizing::new(vec![0u8; 32]);
            OsRng.fill_bytes(&mut bytes);
            Ok(bytes)
        },
        &mut OsRng,
    )?;
    exactly_32(&secret, name)
}

fn stored_32(authority: &Authority, name: &str) -> Result<Option<Zeroizing<[u8; 32]>>, Error> {
    authority
        .secret(name)?
        .map(|secret| exactly_32(&secret, name))
        .transpose()
}

fn exactly_32(secret: &[u8], name: &str) -> Result<Zeroizing<[u8; 32]>, Error> {
    let mut key = Zeroizing::new([0u8; 32]);
    if secret.len() != key.len() {
        return Err(Error::Corrupt {
            what: format!("the authority's secret `{name}`"),
            reason: "it is not 32 bytes".into(),
        });
    }
    key.copy_from_slice(secret);
    Ok(key)
}
