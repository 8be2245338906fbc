//! The audit sink's hash chain (`server.audit_chain`): every audit line appended to the
//! authority's tamper-evident chain ([`fhirseal_authority::audit`]) before its response leaves.
//!
//! **Who commits.** The chain has one writer at a time: whoever holds its lock (its own
//! connection to the authority's store, so appends never wait for the authority's other work).
//! - A request alone (the only one in flight, [`ChainWriter::request`]), with no commit under way
//!   and no line waiting, commits its own line on its own thread. It so skips two hand-overs
//!   between threads, each the wake-up of a sleeping thread, and their CPU. Its runtime thread
//!   waits for the disk meanwhile; nothing else is in flight, and the runtime's other threads
//!   run whatever else comes.
//! - Otherwise the request hands its line to a dedicated writer thread through a bounded queue of
//!   [`QUEUE`] lines and awaits the commit; the thread takes every line waiting (up to [`BATCH`])
//!   and appends them in one transaction, so requests arriving together share one commit. Under
//!   load every line goes this way, so no runtime thread waits for the disk while others wait
//!   for it.
//! - On a runtime of one thread every line goes through the queue: that thread must never wait.
//!   So do the lines of a store whose commits are not made in this process
//!   ([`Store::commits_in_process`]: PostgreSQL's are a round trip, and its synchronous client
//!   cannot run on a runtime thread at all).
//!
//! Why not [`tokio::task::block_in_place`] around the lone commit: it hands the thread's share
//! of the runtime to another thread for every commit, and the request's memory, allocated on
//! one thread and freed on another, cost a 100-entry search more than the hand-overs it saved
//! (BENCHMARKS.md, issue 18, sixteenth round).
//!
//! When no line has come for the checkpoint interval, and when the gateway stops, the thread
//! signs a checkpoint over the tail.
//!
//! **The index behind the chain.** A line's commit writes the record alone; the chain's search
//! index ([`fhirseal_authority::audit::index`]) is written after it by the writer thread, a batch
//! at a time ([`AuditChain::index`], [`INDEX_STEP`] records a transaction, committed without
//! waiting for the disk): when no line has come for [`INDEX_QUIET`], after every [`INDEX_STEP`]
//! lines under a steady stream, and when the gateway stops. A request that commits its own line
//! never indexes: it wakes the thread when its line is the first one left for the index, or the
//! [`INDEX_STEP`]th. The record is what must be on disk before the response leaves; its index rows
//! only point at it and can always be rebuilt from it, and a search brings the index up to the tail
//! before it runs, so nothing chained is ever missing from one. Taken out of the commit a request
//! waits for, the index's pages are no longer written (and, when commits are durable, synced) once
//! per lone request.
//!
//! **Fail closed.** A line that cannot be committed (the store is unreachable, the queue is
//! full, the thread is gone) is not lost silently: the error and the whole line are logged at
//! `error` (the line holds no protected value), and the client gets a 503 instead of its
//! response, so no data leaves the gateway without its access being on the chain. A write the
//! upstream already applied stays applied: its client sees the 503, the log has its line. Once the
//! writer thread is gone no request commits on its own thread either.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fhirseal_authority::audit::AuditEntry;
use fhirseal_authority::{AuditChain, Store};
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::oneshot;

/// How many lines may wait for the writer; beyond, requests fail closed.
pub const QUEUE: usize = 8192;

/// The most lines appended in one transaction.
pub const BATCH: usize = 512;

/// How long without a line before the writer brings the chain's index up to the tail.
pub const INDEX_QUIET: Duration = Duration::from_millis(20);

/// How many records one of the writer's index transactions takes, and after how many lines
/// under a steady stream it takes one: few, since the lines that come meanwhile wait for it.
pub const INDEX_STEP: u32 = 25;

/// The handle of the chain's writer, and a connection of its own for reading the chain
/// (`GET /fhir/AuditEvent`, [`super::search`]). Cheap to clone; the writer thread stops (signing
/// a last checkpoint) once every clone is dropped.
#[derive(Clone)]
pub struct ChainWriter {
    queue: SyncSender<Message>,
    shared: Arc<Shared>,
    reader: Arc<Mutex<Box<dyn Store>>>,
}

impl std::fmt::Debug for ChainWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainWriter").finish_non_exhaustive()
    }
}

/// Why a line is not on the chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// More than [`QUEUE`] lines are waiting: the store is too slow or unreachable.
    #[error("the audit chain's queue is full ({QUEUE} lines waiting)")]
    QueueFull,
    /// The writer thread is gone.
    #[error("the audit chain's writer has stopped")]
    Stopped,
    /// The append failed (the store's error).
    #[error("the audit chain could not be appended to: {0}")]
    Append(String),
}

/// What the writer thread is sent.
enum Message {
    /// A line to append.
    Line(Job),
    /// A request appended a line itself: the chain's index or checkpoint may be due sooner than
    /// the thread's wait.
    Chores,
}

struct Job {
    line: String,
    time: i64,
    done: oneshot::Sender<Result<u64, String>>,
}

/// What the requests and the writer thread share.
struct Shared {
    /// The chain and its chores; whoever holds it is the chain's writer ([`Shared::hold`]).
    tail: Mutex<Tail>,
    /// When the writer thread's next chore is due, in nanoseconds after `epoch` ([`NOTHING_DUE`]
    /// for none): published by whoever lets go of the chain, so that the thread finds out how
    /// long to sleep without taking the chain from a lone request.
    due: AtomicU64,
    epoch: Instant,
    /// Lines sent to the writer thread that it has not taken yet.
    waiting: AtomicUsize,
    /// Requests in flight ([`ChainWriter::request`]).
    in_flight: AtomicUsize,
    /// Whether the writer thread runs (false once it returns, or if it panicked).
    running: AtomicBool,
    /// Whether a request may commit its own line: the store commits in this process
    /// ([`AuditChain::commits_in_process`]).
    in_process: bool,
    /// Lines appended (or failed) on their own request's thread (for the tests).
    #[cfg(test)]
    here: AtomicUsize,
}

/// No chore is due ([`Shared::due`]).
const NOTHING_DUE: u64 = u64::MAX;

/// How long the writer thread sleeps with no chore due (a line or a nudge wakes it sooner).
const NOTHING_DUE_WAIT: Duration = Duration::from_secs(3600);

/// The chain and what is left to do behind its lines.
struct Tail {
    chain: AuditChain,
    /// The checkpoint interval.
    idle: Duration,
    /// Lines appended that the index may not cover yet, and whether its last batch left more.
    unindexed: bool,
    behind: bool,
    /// Lines appended since the index's last batch.
    since_index: usize,
    /// When the last line was appended.
    last_line: Instant,
    /// When to sign a checkpoint over the tail, if it has unsigned records.
    sign_at: Option<Instant>,
}

// === impl ChainWriter ===

impl ChainWriter {
    /// Starts the writer thread on `chain`, signing a checkpoint over an idle tail every
    /// `idle` (the checkpoint interval); `reader` is another connection to the same store, for
    /// searches.
    ///
    /// # Errors
    /// The thread cannot be spawned.
    pub fn start(
        chain: AuditChain,
        reader: Box<dyn Store>,
        idle: Duration,
    ) -> std::io::Result<Self> {
        let (queue, jobs) = sync_channel(QUEUE);
        let shared = Arc::new(Shared::new(chain, idle));
        let thread = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("fhirseal-audit-chain".into())
            .spawn(move || {
                let _stopped = Stopped(&thread.running);
                run(&thread, &jobs);
            })?;
        Ok(Self {
            queue,
            shared,
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    /// The connection for reading the chain: a blocking store, to use off the async threads
    /// (`spawn_blocking`), one search at a time.
    pub fn reader(&self) -> Arc<Mutex<Box<dyn Store>>> {
        Arc::clone(&self.reader)
    }

    /// Counts a request in flight until the guard is dropped: a request commits its own line
    /// only when it is the only one (module docs). The audit middleware holds one for each
    /// request it serves.
    pub fn request(&self) -> InFlight {
        self.shared.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(&self.shared))
    }

    /// Appends `line` and waits until it is committed; its sequence number. A lone request
    /// commits it on its own thread, any other hands it to the writer thread (module docs).
    ///
    /// # Errors
    /// [`ChainError`]: the caller must not let the response go as if audited.
    pub async fn append(&self, line: String) -> Result<u64, ChainError> {
        let time = now_ms();
        let line = match self.commit_here(line, time) {
            Ok(committed) => return committed,
            Err(line) => line,
        };
        let (done, committed) = oneshot::channel();
        let job = Job { line, time, done };
        // Counted before it is sent, so the thread never takes a line it has not counted.
        self.shared.waiting.fetch_add(1, Ordering::AcqRel);
        if let Err(e) = self.queue.try_send(Message::Line(job)) {
            self.shared.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(match e {
                TrySendError::Full(_) => ChainError::QueueFull,
                TrySendError::Disconnected(_) => ChainError::Stopped,
            });
        }
        committed
            .await
            .map_err(|_| ChainError::Stopped)?
            .map_err(ChainError::Append)
    }

    /// Commits `line` on this thread when nothing else is committing or waiting to (module
    /// docs); the line back when it must go to the writer thread instead.
    fn commit_here(&self, line: String, time: i64) -> Result<Result<u64, ChainError>, String> {
        let multi_threaded =
            Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
        if !self.shared.in_process
            || !multi_threaded
            || self.shared.in_flight.load(Ordering::Acquire) > 1
            || self.shared.waiting.load(Ordering::Acquire) != 0
            || !self.shared.running.load(Ordering::Acquire)
        {
            return Err(line);
        }
        // Held by a commit under way (the thread's or another request's), or poisoned: the
        // queue, whose thread fails a poisoned chain's lines closed.
        let Some(mut tail) = self.shared.try_hold() else {
            return Err(line);
        };
        let entry = AuditEntry {
            time,
            record: &line,
        };
        let appended = tail.chain.append(&[entry]);
        let result = match appended {
            Ok(at) => Ok(at.seq),
            Err(error) => Err(ChainError::Append(error.to_string())),
        };
        let wake = result.is_ok() && tail.appended(1);
        drop(tail);
        #[cfg(test)]
        self.shared.here.fetch_add(1, Ordering::Relaxed);
        if wake {
            // A full queue has the thread busy already; a stopped one has nothing to wake.
            let _ = self.queue.try_send(Message::Chores);
        }
        Ok(result)
    }
}

// === impl Shared ===

impl Shared {
    fn new(chain: AuditChain, idle: Duration) -> Self {
        Self {
            in_process: chain.commits_in_process(),
            tail: Mutex::new(Tail {
                chain,
                idle,
                unindexed: false,
                behind: false,
                since_index: 0,
                last_line: Instant::now(),
                sign_at: None,
            }),
            due: AtomicU64::new(NOTHING_DUE),
            epoch: Instant::now(),
            waiting: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            running: AtomicBool::new(true),
            #[cfg(test)]
            here: AtomicUsize::new(0),
        }
    }

    /// The chain, waiting for it; `None` when a commit panicked while holding it: its state is
    /// unknown, so the writer thread stops and every line from then on fails closed.
    fn hold(&self) -> Option<Held<'_>> {
        let tail = self.tail.lock().ok()?;
        Some(Held { tail, shared: self })
    }

    /// The chain if it is free now; `None` when a commit holds it, or it is poisoned.
    fn try_hold(&self) -> Option<Held<'_>> {
        let tail = match self.tail.try_lock() {
            Ok(tail) => tail,
            Err(TryLockError::WouldBlock | TryLockError::Poisoned(_)) => return None,
        };
        Some(Held { tail, shared: self })
    }

    /// How long the writer thread may sleep before its next chore, from `now`.
    fn wait(&self, now: Instant) -> Duration {
        match self.due.load(Ordering::Acquire) {
            NOTHING_DUE => NOTHING_DUE_WAIT,
            nanos => (self.epoch + Duration::from_nanos(nanos)).saturating_duration_since(now),
        }
    }
}

/// The chain, held by a request or the writer thread; letting go of it publishes when the
/// thread's next chore is due ([`Shared::due`]).
struct Held<'a> {
    tail: MutexGuard<'a, Tail>,
    shared: &'a Shared,
}

impl Deref for Held<'_> {
    type Target = Tail;

    fn deref(&self) -> &Tail {
        &self.tail
    }
}

impl DerefMut for Held<'_> {
    fn deref_mut(&mut self) -> &mut Tail {
        &mut self.tail
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let due = self.tail.due().map_or(NOTHING_DUE, |at| {
            let after = at.saturating_duration_since(self.shared.epoch).as_nanos();
            u64::try_from(after).unwrap_or(NOTHING_DUE - 1)
        });
        self.shared.due.store(due, Ordering::Release);
    }
}

/// A request in flight ([`ChainWriter::request`]).
#[must_use = "the request counts as in flight until this is dropped"]
pub struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight").finish_non_exhaustive()
    }
}

/// Marks the writer thread stopped when it returns or unwinds.
struct Stopped<'a>(&'a AtomicBool);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

// === impl Tail ===

impl Tail {
    /// Notes `lines` appended now; whether the writer thread must be woken for what that makes
    /// due (the index's first line since it last caught up, or its [`INDEX_STEP`]th).
    fn appended(&mut self, lines: usize) -> bool {
        let first = !self.unindexed;
        let step = self.since_index < INDEX_STEP as usize
            && self.since_index + lines >= INDEX_STEP as usize;
        self.unindexed = true;
        self.since_index += lines;
        self.last_line = Instant::now();
        self.sign_at = Some(self.last_line + self.idle);
        first || step
    }

    /// When the writer thread's next chore is due, if one is: the index's next batch (at once
    /// under a steady stream or when its last batch left more, else once no line has come for
    /// [`INDEX_QUIET`]), or else a checkpoint over the idle tail.
    fn due(&self) -> Option<Instant> {
        if self.unindexed && (self.behind || self.since_index >= INDEX_STEP as usize) {
            Some(self.last_line)
        } else if self.unindexed {
            Some(self.last_line + INDEX_QUIET)
        } else {
            self.sign_at
        }
    }

    /// The chore due by `now`, if any: one batch of the index, or a checkpoint.
    fn chores(&mut self, now: Instant) {
        if self.due().is_none_or(|at| at > now) {
            return;
        }
        if self.unindexed {
            (self.unindexed, self.behind) = index(&mut self.chain);
            self.since_index = 0;
        } else {
            self.sign_at = (!checkpoint(&mut self.chain)).then(|| now + self.idle);
        }
    }

    /// What the gateway's stop leaves: the index up to the tail, a checkpoint over it.
    fn finish(&mut self) {
        if self.unindexed {
            while index(&mut self.chain).1 {}
        }
        if self.sign_at.is_some() {
            checkpoint(&mut self.chain);
        }
    }
}

/// The writer thread: batches of waiting lines, one transaction each; the index behind them
/// when quiet (module docs); a checkpoint when idle and at the end.
fn run(shared: &Shared, jobs: &Receiver<Message>) {
    loop {
        match jobs.recv_timeout(shared.wait(Instant::now())) {
            Ok(Message::Line(first)) => {
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match jobs.try_recv() {
                        Ok(Message::Line(job)) => batch.push(job),
                        Ok(Message::Chores) => {}
                        Err(_) => break,
                    }
                }
                shared.waiting.fetch_sub(batch.len(), Ordering::AcqRel);
                let Some(mut tail) = shared.hold() else {
                    return fail(jobs, batch);
                };
                let first = append(&mut tail.chain, &batch);
                let due = first.is_ok() && {
                    tail.appended(batch.len());
                    // A steady stream of lines leaves the writer no quiet moment; an index
                    // left behind waits for the lines already waiting.
                    tail.since_index >= INDEX_STEP as usize
                };
                // The chain is free before the waiters wake: the next lone request takes it.
                drop(tail);
                answer(batch, &first);
                if due {
                    let Some(mut tail) = shared.hold() else {
                        return fail(jobs, Vec::new());
                    };
                    tail.chores(Instant::now());
                }
            }
            // Woken by a request's nudge or by the time: the chain is taken only for a chore
            // due now, never from a lone request for nothing.
            Ok(Message::Chores) | Err(RecvTimeoutError::Timeout) => {
                if !shared.wait(Instant::now()).is_zero() {
                    continue;
                }
                let Some(mut tail) = shared.hold() else {
                    return fail(jobs, Vec::new());
                };
                tail.chores(Instant::now());
            }
            Err(RecvTimeoutError::Disconnected) => {
                if let Some(mut tail) = shared.hold() {
                    tail.finish();
                }
                return;
            }
        }
    }
}

/// Fails `batch` and every line still waiting, and lets the thread stop (the queue closes with
/// it: later lines are refused).
fn fail(jobs: &Receiver<Message>, batch: Vec<Job>) {
    tracing::error!("the audit chain's writer stopped after a failed commit; requests fail closed");
    let waiting = jobs.try_iter().filter_map(|message| match message {
        Message::Line(job) => Some(job),
        Message::Chores => None,
    });
    let stopped = Err("the audit chain's writer has stopped".to_string());
    answer(batch.into_iter().chain(waiting), &stopped);
}

/// One batch of the chain's index: (whether lines may be left unindexed, whether more are left
/// right now). A failure is logged and left to the next line's batch or the next search.
fn index(chain: &mut AuditChain) -> (bool, bool) {
    match chain.index(INDEX_STEP) {
        Ok(indexed) if indexed >= INDEX_STEP => (true, true),
        Ok(_) => (false, false),
        Err(error) => {
            tracing::error!(%error, "the audit chain's index could not be written; the next search writes it");
            (false, false)
        }
    }
}

/// Appends `batch` in one transaction: the sequence number of its first line, or why not.
fn append(chain: &mut AuditChain, batch: &[Job]) -> Result<u64, String> {
    let entries: Vec<_> = batch
        .iter()
        .map(|job| AuditEntry {
            time: job.time,
            record: &job.line,
        })
        .collect();
    match chain.append(&entries) {
        Ok(tail) => Ok(tail.seq + 1 - batch.len() as u64),
        Err(error) => Err(error.to_string()),
    }
}

/// Answers each line's waiter in `batch`, appended from `first` on (or not).
fn answer(batch: impl IntoIterator<Item = Job>, first: &Result<u64, String>) {
    for (i, job) in batch.into_iter().enumerate() {
        // A waiter that went away (its request was cancelled) needs no answer; its line, if
        // appended, stays appended.
        let _ = job.done.send(first.clone().map(|seq| seq + i as u64));
    }
}

/// Signs a checkpoint over the tail; whether it is signed.
fn checkpoint(chain: &mut AuditChain) -> bool {
    match chain.checkpoint() {
        Ok(_) => true,
        Err(error) => {
            tracing::error!(%error, "the audit chain's checkpoint could not be signed");
            false
        }
    }
}

/// Unix time in milliseconds.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Instant;

    use fhirseal_authority::audit;
    use fhirseal_authority::{CheckpointPolicy, CheckpointSigner, store};

    use super::*;

    /// A writer on a fresh SQLite chain in `dir`, signing a checkpoint over a tail idle for
    /// `idle`; the store's URL and the checkpoints' public key.
    fn writer(dir: &tempfile::TempDir, idle: Duration) -> (ChainWriter, String, [u8; 32]) {
        let url = format!("sqlite:{}", dir.path().join("a.sqlite3").display());
        let signer = CheckpointSigner::from_seed(&[5; 32]).unwrap();
        let key = signer.public_key();
        let chain = AuditChain::new(
            store::open(&url).unwrap(),
            signer,
            CheckpointPolicy::DEFAULT,
        );
        let writer = ChainWriter::start(chain, store::open(&url).unwrap(), idle).unwrap();
        (writer, url, key)
    }

    /// What `verify` finds on the chain at `url`.
    fn intact(url: &str, key: &[u8; 32]) -> audit::Intact {
        let mut store: Box<dyn Store> = store::open(url).unwrap();
        audit::verify(store.as_mut(), key, &[]).unwrap()
    }

    /// Many requests at once: each gets its own sequence number, the chain is dense and
    /// verifies, and the writer shares commits between them (the rate is printed, with
    /// `--nocapture`). Lines committed by their own request and by the writer thread mix
    /// without a gap or a sequence number given twice. When the writer is gone, an append is
    /// an error, never a silent loss.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_commits_and_each_gets_its_record() {
        const TASKS: u64 = 64;
        const EACH: u64 = 40;
        let dir = tempfile::tempdir().unwrap();
        let (writer, url, key) = writer(&dir, Duration::from_secs(60));
        let writer = Arc::new(writer);
        let started = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let writer = Arc::clone(&writer);
                tokio::spawn(async move {
                    let mut seqs = Vec::new();
                    for i in 0..EACH {
                        let line = format!(r#"{{"task":{t},"i":{i}}}"#);
                        seqs.push(writer.append(line).await.unwrap());
                    }
                    seqs
                })
            })
            .collect();
        let mut seqs = BTreeSet::new();
        for task in tasks {
            seqs.extend(task.await.unwrap());
        }
        let rate = (TASKS * EACH) as f64 / started.elapsed().as_secs_f64();
        let here = writer.shared.here.load(Ordering::Relaxed);
        eprintln!(
            "audit chain writer on SQLite: {rate:.0} requests/s with {TASKS} at once \
             ({here} lines committed by their own request)"
        );
        assert_eq!(seqs, (1..=TASKS * EACH).collect());
        assert_eq!(intact(&url, &key).records, TASKS * EACH);

        // The writer's queue closed and its thread gone: refused, not lost silently, and not
        // committed by the request either.
        let (queue, jobs) = sync_channel(1);
        drop(jobs);
        let chain = AuditChain::new(
            store::open(&url).unwrap(),
            CheckpointSigner::from_seed(&[5; 32]).unwrap(),
            CheckpointPolicy::DEFAULT,
        );
        let shared = Shared::new(chain, Duration::from_secs(60));
        shared.running.store(false, Ordering::Release);
        let gone = ChainWriter {
            queue,
            shared: Arc::new(shared),
            reader: writer.reader(),
        };
        assert!(matches!(
            gone.append("{}".into()).await,
            Err(ChainError::Stopped)
        ));
        assert_eq!(intact(&url, &key).records, TASKS * EACH);
    }

    /// The writer's commits hold the records alone, and once no line has come for a moment the
    /// writer indexes them itself: the index (read without the search's own catch-up) reaches
    /// the tail with no search run. The lines, one at a time on a multi-threaded runtime, were
    /// committed by their own request; the thread indexed them all the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_indexes_its_records_when_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, url, _) = writer(&dir, Duration::from_secs(60));
        let mut last = 0;
        for i in 0..30 {
            last = writer.append(format!(r#"{{"i":{i}}}"#)).await.unwrap();
        }
        // Those the thread's indexing held up, if any, went to the thread.
        assert!(writer.shared.here.load(Ordering::Relaxed) >= 1);
        let newest_indexed = || {
            let query = audit::AuditQuery {
                limit: 1,
                ..audit::AuditQuery::default()
            };
            let found = store::open(&url).unwrap().audit_search(&query).unwrap();
            found
                .first()
                .map_or(0, |record| u64::try_from(record.seq).unwrap_or(0))
        };
        let started = Instant::now();
        while newest_indexed() < last {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the writer left its records unindexed"
            );
            tokio::time::sleep(INDEX_QUIET).await;
        }
        assert_eq!(newest_indexed(), 30);
    }

    /// Lines committed by their own request still get their checkpoint once the tail is idle:
    /// the thread, woken by the first of them, signs one over the last.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lines_committed_by_their_request_get_a_checkpoint_when_idle() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, url, key) = writer(&dir, Duration::from_millis(100));
        for i in 0..3 {
            writer.append(format!(r#"{{"i":{i}}}"#)).await.unwrap();
        }
        assert!(writer.shared.here.load(Ordering::Relaxed) >= 1);
        let started = Instant::now();
        while intact(&url, &key).last_checkpoint != Some(3) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no checkpoint over the idle tail"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A line committed by its own request wakes the writer thread when it is the first the
    /// index does not cover, or the [`INDEX_STEP`]th since the index's last batch, and not for
    /// the lines between; what it makes due is published for the thread to read.
    #[test]
    fn a_lines_commit_wakes_the_writer_for_the_index_only() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("a.sqlite3").display());
        let chain = AuditChain::new(
            store::open(&url).unwrap(),
            CheckpointSigner::from_seed(&[5; 32]).unwrap(),
            CheckpointPolicy::DEFAULT,
        );
        let shared = Shared::new(chain, Duration::from_secs(60));
        assert_eq!(shared.wait(Instant::now()), NOTHING_DUE_WAIT);
        let wakes: Vec<usize> = (1..=60)
            .filter(|_| shared.hold().unwrap().appended(1))
            .collect();
        assert_eq!(wakes, [1, 25]);
        // 60 lines since the index's last batch: its next one is due now.
        assert!(shared.wait(Instant::now()).is_zero());
        let mut tail = shared.hold().unwrap();
        tail.chores(Instant::now());
        assert_eq!(tail.since_index, 0);
        drop(tail);
        // Nothing left to index (the chain has no records): a checkpoint when idle.
        let wait = shared.wait(Instant::now());
        assert!(wait > Duration::from_secs(59) && wait <= Duration::from_secs(60));
    }

    /// A request commits its own line only while it is the only one in flight; with another in
    /// flight its line goes to the writer thread, which commits it all the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_a_lone_request_commits_its_own_line() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, url, key) = writer(&dir, Duration::from_secs(60));
        let here = || writer.shared.here.load(Ordering::Relaxed);
        let alone = writer.request();
        assert_eq!(writer.append("{}".into()).await.unwrap(), 1);
        assert_eq!(here(), 1);
        let other = writer.request();
        assert_eq!(writer.append("{}".into()).await.unwrap(), 2);
        assert_eq!(here(), 1);
        drop(other);
        // Alone again, once the thread has indexed the two lines (20 ms after the last).
        tokio::time::sleep(INDEX_QUIET * 5).await;
        assert_eq!(writer.append("{}".into()).await.unwrap(), 3);
        assert_eq!(here(), 2);
        drop(alone);
        assert_eq!(writer.shared.in_flight.load(Ordering::Acquire), 0);
        assert_eq!(intact(&url, &key).records, 3);
    }

    /// On a runtime of one thread a request cannot block, so every line goes to the writer
    /// thread, and is committed all the same.
    #[tokio::test(flavor = "current_thread")]
    async fn one_threaded_runtimes_hand_every_line_to_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, url, key) = writer(&dir, Duration::from_secs(60));
        for i in 1..=5 {
            assert_eq!(writer.append(format!(r#"{{"i":{i}}}"#)).await.unwrap(), i);
        }
        assert_eq!(writer.shared.here.load(Ordering::Relaxed), 0);
        assert_eq!(intact(&url, &key).records, 5);
    }

    /// A commit that panicked while holding the chain leaves it in an unknown state: every line
    /// from then on fails closed, none is committed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicked_commit_fails_every_later_line_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, url, key) = writer(&dir, Duration::from_secs(60));
        assert_eq!(writer.append("{}".into()).await.unwrap(), 1);
        let shared = Arc::clone(&writer.shared);
        let poisoned = std::thread::spawn(move || {
            let _held = shared.tail.lock().unwrap();
            panic!("a commit panicked");
        })
        .join();
        assert!(poisoned.is_err());
        for _ in 0..3 {
            assert!(writer.append("{}".into()).await.is_err());
        }
        assert!(!writer.shared.running.load(Ordering::Acquire));
        assert_eq!(intact(&url, &key).records, 1);
    }
}
