//! The create guard: one create at a time of a resource a `PUT [type]/[id]` names.
//!
//! A `PUT` of an id the upstream does not hold is a create, and two of them at once would each
//! create (each answered `201 Created`, the second overwriting the first). The upstream cannot be
//! asked to create only if absent: a server that honours `If-None-Match: *` on `PUT` could be, but
//! the reference upstream (sekmet-fhir) does not, and the gateway assumes nothing of its upstream.
//! So the gateway guards the read-then-write itself ([`crate::flow::change`]): the writer that finds
//! the resource absent takes the guard of `[type]/[id]`, reads again, and, still absent, writes the
//! create while holding it; the guard goes only once the upstream has answered that write.
//!
//! The guard is two locks, taken in this order:
//!
//! - in this process, a keyed async lock ([`CreateGuards`]): the writers of one key queue here, in
//!   order, without touching the store; an entry lives only while someone holds or waits for it;
//! - across the replicas sharing the authority's store (PostgreSQL), a lease named after the key
//!   in that store ([`fhirseal_authority::leases`]), held under a name of this acquisition, for
//!   [`LEASE_SECONDS`] and renewed while held: a replica that is killed holding one blocks that
//!   key for at most that long.
//!
//! A writer waits at most [`CreateGuards::wait`] ([`WAIT`] unless set) for both, then is refused
//! with 409 ("another create of Patient/x is in progress"), never left hanging. The store
//! unreachable is a 503, and nothing is written (fail closed).
//!
//! Dropping a [`CreateGuard`] lets it go: a task of its own renews the lease while it is held,
//! then deletes it, and only then releases the in-process lock, so the next writer in this process
//! never races the release.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fhirseal_authority::{Authority, unix_now};
use rand_core::{OsRng, RngCore};
use tokio::sync::{OwnedMutexGuard, oneshot};
use tokio::time::Instant;

/// How long a writer waits for the guard of a create by default, then is refused with 409.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long a lease lasts in the store unless renewed (a third of it between renewals): what a
/// killed replica's lease blocks its key for, at most.
pub const LEASE_SECONDS: u64 = 30;

/// The first pause between two tries of a lease another replica holds (doubled each time, up to
/// [`MAX_PAUSE`]).
const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// The longest pause between two tries of a lease.
const MAX_PAUSE: Duration = Duration::from_millis(250);

/// The create guards of this process: its keyed lock and its name in the store's leases.
pub struct CreateGuards {
    authority: Arc<Authority>,
    /// This process's name among the lease holders (`gw-<pid>-<random>`); each acquisition holds
    /// its lease under this name and a number of its own.
    holder: String,
    taken: AtomicU64,
    wait: Duration,
    /// The keys held or waited for, each with its lock.
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A create guard held: while it lives, no other writer (of this process or of a replica on the
/// same store) holds the guard of its key. Dropping it lets it go.
pub struct CreateGuard {
    key: String,
    /// Dropped with the guard: the task keeping its lease then deletes it and lets the key go.
    _release: oneshot::Sender<()>,
}

/// Why a create guard was not taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuardError {
    /// Another writer held the guard of this key for longer than the wait.
    #[error("another create of {key} is in progress; retry it")]
    Busy {
        /// `[type]/[id]`.
        key: String,
    },
    /// The authority's store failed or refused the lease (the cause is logged, not answered).
    #[error("the authority's store did not answer for the create guard")]
    Store(#[source] fhirseal_authority::Error),
    /// The task asking the store did not complete (the runtime is shutting down).
    #[error("the create guard's lease could not be asked for")]
    Task,
}

// === impl CreateGuards ===

impl CreateGuards {
    /// The guards of this process, its leases in `authority`'s store, writers waiting [`WAIT`].
    pub fn new(authority: Arc<Authority>) -> Self {
        Self {
            authority,
            holder: format!("gw-{}-{:08x}", std::process::id(), OsRng.next_u32()),
            taken: AtomicU64::new(0),
            wait: WAIT,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The same, writers waiting `wait` at most.
    #[must_use]
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// How long a writer waits for a guard before it is refused.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// How many keys are held or waited for in this process now.
    pub fn in_use(&self) -> usize {
        self.slots().len()
    }

    /// Takes the guard of `key` (`[type]/[id]`): first in this process, then the lease in the
    /// store, waiting at most [`CreateGuards::wait`] for both.
    ///
    /// # Errors
    /// [`GuardError::Busy`] when the wait is over, [`GuardError::Store`] when the store fails.
    pub async fn acquire(self: &Arc<Self>, key: &str) -> Result<CreateGuard, GuardError> {
        let deadline = Instant::now() + self.wait;
        let slot = Arc::clone(self.slots().entry(key.to_string()).or_default());
        let local = tokio::time::timeout_at(deadline, Arc::clone(&slot).lock_owned()).await;
        drop(slot);
        let Ok(local) = local else {
            self.forget(key);
            return Err(busy(key));
        };
        let n = self.taken.fetch_add(1, Ordering::Relaxed);
        let holder = format!("{}/{n}", self.holder);
        if let Err(error) = self.take_lease(key, &holder, deadline).await {
            drop(local);
            self.forget(key);
            return Err(error);
        }
        let (release, released) = oneshot::channel();
        let guards = Arc::clone(self);
        let owned_key = key.to_string();
        tokio::spawn(async move { guards.keep(owned_key, holder, local, released).await });
        Ok(CreateGuard {
            key: key.to_string(),
            _release: release,
        })
    }

    /// Tries the lease until `deadline`, pausing longer each time another holder has it.
    async fn take_lease(
        &self,
        key: &str,
        holder: &str,
        deadline: Instant,
    ) -> Result<(), GuardError> {
        let mut pause = FIRST_PAUSE;
        loop {
            if self.lease(key, holder, Lease::Take).await? {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(busy(key));
            }
            // The last try is at the deadline.
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// Holds the lease of `key` until `released` (the guard dropped), renewing it meanwhile;
    /// then deletes it and, after that, lets the in-process lock go.
    async fn keep(
        self: Arc<Self>,
        key: String,
        holder: String,
        local: OwnedMutexGuard<()>,
        mut released: oneshot::Receiver<()>,
    ) {
        let every = Duration::from_secs(LEASE_SECONDS / 3);
        loop {
            tokio::select! {
                _ = &mut released => break,
                () = tokio::time::sleep(every) => {
                    match self.lease(&key, &holder, Lease::Take).await {
                        Ok(true) => {}
                        Ok(false) => tracing::warn!(%key, "a create guard's lease was lost while held"),
                        Err(error) => tracing::warn!(%key, %error, "a create guard's lease was not renewed"),
                    }
                }
            }
        }
        if let Err(error) = self.lease(&key, &holder, Lease::Release).await {
            // It lapses by itself within LEASE_SECONDS.
            tracing::warn!(%key, %error, "a create guard's lease was not released");
        }
        drop(local);
        self.forget(&key);
    }

    /// One call to the store about the lease of `key`: taken (or renewed), or released.
    async fn lease(&self, key: &str, holder: &str, what: Lease) -> Result<bool, GuardError> {
        let authority = Arc::clone(&self.authority);
        let (key, holder) = (key.to_string(), holder.to_string());
        tokio::task::spawn_blocking(move || match what {
            Lease::Take => authority.take_lease(&key, &holder, unix_now(), LEASE_SECONDS),
            Lease::Release => authority
                .release_lease(&key, &holder, unix_now())
                .map(|()| true),
        })
        .await
        .map_err(|_| GuardError::Task)?
        .map_err(GuardError::Store)
    }

    /// Removes the entry of `key` if no one holds or waits for it (only the map refers to it).
    fn forget(&self, key: &str) {
        let mut slots = self.slots();
        if slots
            .get(key)
            .is_some_and(|slot| Arc::strong_count(slot) == 1)
        {
            slots.remove(key);
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        // A panic while the map was locked cannot leave it inconsistent: every change is one call.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for CreateGuards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateGuards")
            .field("holder", &self.holder)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

// === impl CreateGuard ===

impl CreateGuard {
    /// The key it guards, `[type]/[id]`.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl std::fmt::Debug for CreateGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateGuard")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// What [`CreateGuards::lease`] asks of the store.
#[derive(Clone, Copy)]
enum Lease {
    Take,
    Release,
}

fn busy(key: &str) -> GuardError {
    GuardError::Busy {
        key: key.to_string(),
    }
}
