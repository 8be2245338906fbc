//! The audit sink's hash chain (`server.audit_chain`): every audit line appended to the
//! authority's tamper-evident chain ([`fhirseal_authority::audit`]) before its response leaves.
//!
//! A dedicated writer thread owns the chain (its own connection to the authority's store, so
//! appends never wait for the authority's other work and never block the async runtime). The
//! middleware hands it the line through a bounded queue of [`QUEUE`] lines and awaits the commit;
//! the thread takes every line waiting (up to [`BATCH`]) and appends them in one transaction, so
//! requests arriving together share one commit. When no line has come for the checkpoint
//! interval, and when the gateway stops, the thread signs a checkpoint over the tail.
//!
//! **The index behind the chain.** A line's commit writes the record alone; the chain's search
//! index ([`fhirseal_authority::audit::index`]) is written after it, a batch at a time
//! ([`AuditChain::index`], [`INDEX_STEP`] records a transaction, committed without waiting for the
//! disk): when no line has come for [`INDEX_QUIET`], after every [`INDEX_STEP`] lines under a
//! steady stream, and when the gateway stops. The record is what must be on disk before the
//! response leaves; its index rows only point at it and can always be rebuilt from it, and a search
//! brings the index up to the tail before it runs, so nothing chained is ever missing from one.
//! Taken out of the commit a request waits for, the index's pages are no longer written (and, when
//! commits are durable, synced) once per lone request.
//!
//! **Fail closed.** A line that cannot be committed (the store is unreachable, the queue is
//! full, the thread is gone) is not lost silently: the error and the whole line are logged at
//! `error` (the line holds no protected value), and the client gets a 503 instead of its
//! response, so no data leaves the gateway without its access being on the chain. A write the
//! upstream already applied stays applied: its client sees the 503, the log has its line.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::sync::{Arc, Mutex};

use fhirseal_authority::audit::AuditEntry;
use fhirseal_authority::{AuditChain, Store};
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

/// The handle of the chain's writer thread, and a connection of its own for reading the chain
/// (`GET /fhir/AuditEvent`, [`super::search`]). Cheap to clone; the thread stops (signing a last
/// checkpoint) once every clone is dropped.
#[derive(Clone)]
pub struct ChainWriter {
    queue: SyncSender<Job>,
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

struct Job {
    line: String,
    time: i64,
    done: oneshot::Sender<Result<u64, String>>,
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
        std::thread::Builder::new()
            .name("fhirseal-audit-chain".into())
            .spawn(move || run(chain, &jobs, idle))?;
        Ok(Self {
            queue,
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    /// The connection for reading the chain: a blocking store, to use off the async threads
    /// (`spawn_blocking`), one search at a time.
    pub fn reader(&self) -> Arc<Mutex<Box<dyn Store>>> {
        Arc::clone(&self.reader)
    }

    /// Appends `line` and waits (without blocking the runtime) until it is committed; its
    /// sequence number.
    ///
    /// # Errors
    /// [`ChainError`]: the caller must not let the response go as if audited.
    pub async fn append(&self, line: String) -> Result<u64, ChainError> {
        let (done, committed) = oneshot::channel();
        let job = Job {
            line,
            time: now_ms(),
            done,
        };
        self.queue.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => ChainError::QueueFull,
            TrySendError::Disconnected(_) => ChainError::Stopped,
        })?;
        committed
            .await
            .map_err(|_| ChainError::Stopped)?
            .map_err(ChainError::Append)
    }
}

/// The writer thread: batches of waiting lines, one transaction each; the index behind them
/// when quiet (module docs); a checkpoint when idle and at the end.
fn run(mut chain: AuditChain, jobs: &Receiver<Job>, idle: Duration) {
    // Lines appended that the index may not cover yet, and whether its last batch left more.
    let (mut unindexed, mut behind) = (false, false);
    // Lines appended since the index's last batch.
    let mut since_index = 0usize;
    // When to sign a checkpoint over the tail, if it has unsigned records.
    let mut sign_at: Option<Instant> = None;
    loop {
        let wait = if behind {
            Duration::ZERO
        } else if unindexed {
            INDEX_QUIET
        } else {
            sign_at.map_or(idle, |at| at.saturating_duration_since(Instant::now()))
        };
        match jobs.recv_timeout(wait) {
            Ok(first) => {
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match jobs.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                since_index += batch.len();
                append(&mut chain, batch);
                unindexed = true;
                sign_at = Some(Instant::now() + idle);
                // A steady stream of lines leaves the writer no quiet moment.
                if since_index >= INDEX_STEP as usize {
                    (unindexed, behind) = index(&mut chain);
                    since_index = 0;
                }
            }
            Err(RecvTimeoutError::Timeout) if unindexed => {
                (unindexed, behind) = index(&mut chain);
                since_index = 0;
            }
            Err(RecvTimeoutError::Timeout) => {
                if sign_at.is_some_and(|at| Instant::now() >= at) {
                    sign_at = (!checkpoint(&mut chain)).then(|| Instant::now() + idle);
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                if unindexed {
                    while index(&mut chain).1 {}
                }
                if sign_at.is_some() {
                    checkpoint(&mut chain);
                }
                return;
            }
        }
    }
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

/// Appends `batch` in one transaction and answers each line's waiter.
fn append(chain: &mut AuditChain, batch: Vec<Job>) {
    let entries: Vec<_> = batch
        .iter()
        .map(|job| AuditEntry {
            time: job.time,
            record: &job.line,
        })
        .collect();
    let result = chain.append(&entries).map_err(|e| e.to_string());
    let first = match &result {
        Ok(tail) => Ok(tail.seq + 1 - batch.len() as u64),
        Err(error) => Err(error.clone()),
    };
    for (i, job) in batch.into_iter().enumerate() {
        // A waiter that went away (its request was cancelled) still had its line appended.
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

    /// Many requests at once: each gets its own sequence number, the chain is dense and
    /// verifies, and the writer shares commits between them (the rate is printed, with
    /// `--nocapture`). When the writer is gone, an append is an error, never a silent loss.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_commits_and_each_gets_its_record() {
        const TASKS: u64 = 64;
        const EACH: u64 = 40;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("a.sqlite3").display());
        let signer = CheckpointSigner::from_seed(&[5; 32]).unwrap();
        let key = signer.public_key();
        let chain = AuditChain::new(
            store::open(&url).unwrap(),
            signer,
            CheckpointPolicy::DEFAULT,
        );
        let reader = store::open(&url).unwrap();
        let writer = Arc::new(ChainWriter::start(chain, reader, Duration::from_secs(60)).unwrap());
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
        eprintln!("audit chain writer on SQLite: {rate:.0} requests/s with {TASKS} at once");
        assert_eq!(seqs, (1..=TASKS * EACH).collect());
        let mut store: Box<dyn Store> = store::open(&url).unwrap();
        let intact = audit::verify(store.as_mut(), &key, &[]).unwrap();
        assert_eq!(intact.records, TASKS * EACH);

        // The writer's queue closed: refused, not lost silently.
        let (queue, jobs) = sync_channel(1);
        drop(jobs);
        let gone = ChainWriter {
            queue,
            reader: writer.reader(),
        };
        assert!(matches!(
            gone.append("{}".into()).await,
            Err(ChainError::Stopped)
        ));
    }

    /// The writer's commits hold the records alone, and once no line has come for a moment the
    /// writer indexes them itself: the index (read without the search's own catch-up) reaches
    /// the tail with no search run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_indexes_its_records_when_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("a.sqlite3").display());
        let chain = AuditChain::new(
            store::open(&url).unwrap(),
            CheckpointSigner::from_seed(&[5; 32]).unwrap(),
            CheckpointPolicy::DEFAULT,
        );
        let writer =
            ChainWriter::start(chain, store::open(&url).unwrap(), Duration::from_secs(60)).unwrap();
        let mut last = 0;
        for i in 0..30 {
            last = writer.append(format!(r#"{{"i":{i}}}"#)).await.unwrap();
        }
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
}
