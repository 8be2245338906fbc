//! The SQLite backend: one file, the embedded default.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{
    Counters, KEY_LAYOUT, KeyMigration, KeyReissue, Kind, MakePrincipal, MasterRecord, Principal,
    RawAuditRecord, RawCheckpoint, RawPrincipal, ReissueKey, SCHEMA_VERSION, SignCheckpoint, Store,
    attributes_to_text, check_advance_pace, corrupt, counters_from, subtree,
};
use crate::Error;
use crate::audit::index::{self, AuditQuery, Bound};
use crate::audit::link::{self, AuditEntry, ChainTail};
use crate::jobs::{self, Chunk, ChunkHolder, JobId, Progress, RawProgress};
use crate::leases;

/// Migrations, in order: migration `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE master (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        user_depth INTEGER NOT NULL,
        time_depth INTEGER NOT NULL,
        period_seconds INTEGER NOT NULL,
        epoch INTEGER NOT NULL,
        public_params BLOB NOT NULL,
        sealed_secret BLOB NOT NULL
    );
    CREATE TABLE principals (
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        leaf INTEGER NOT NULL UNIQUE,
        attributes TEXT NOT NULL,
        parent TEXT,
        revoked_at INTEGER,
        sealed_key BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (kind, name)
    );
    CREATE TABLE key_updates (
        period INTEGER PRIMARY KEY,
        version INTEGER NOT NULL,
        bytes BLOB NOT NULL
    );
    INSERT INTO fhirseal_meta (key, value) VALUES
        ('next_leaf', 0), ('period_offset', 0), ('revocation_version', 0);
",
    "
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        bytes BLOB NOT NULL
    );
",
    "
    CREATE TABLE update_jobs (
        id INTEGER PRIMARY KEY,
        target_period INTEGER NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        finished_at INTEGER
    );
    CREATE TABLE update_chunks (
        job_id INTEGER NOT NULL REFERENCES update_jobs (id),
        key TEXT NOT NULL,
        seq INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'claimed', 'done')),
        claimed_by TEXT,
        lease_until INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        moved INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (job_id, key),
        UNIQUE (job_id, seq),
        CHECK (state <> 'claimed' OR (claimed_by IS NOT NULL AND lease_until IS NOT NULL))
    );
    CREATE INDEX update_chunks_open ON update_chunks (job_id, attempts, seq) WHERE state <> 'done';
",
    // An authority that exists already holds keys in the retired layout 1; `create_master` marks a
    // new one with the current layout.
    "
    INSERT INTO fhirseal_meta (key, value) SELECT 'key_layout', 1 FROM master;
",
    // `IF NOT EXISTS`: a store taken back to an older version by hand (the tests do) keeps it.
    "
    CREATE TABLE IF NOT EXISTS leases (
        key TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        lease_until INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS leases_until ON leases (lease_until);
",
    // The audit trail (see `crate::audit`): append-only, `seq` dense from 1. `IF NOT EXISTS`, as
    // above.
    "
    CREATE TABLE IF NOT EXISTS audit_chain (
        seq INTEGER PRIMARY KEY CHECK (seq > 0),
        time INTEGER NOT NULL,
        record TEXT NOT NULL,
        prev BLOB NOT NULL,
        hash BLOB NOT NULL
    );
    CREATE TABLE IF NOT EXISTS audit_checkpoints (
        seq INTEGER PRIMARY KEY,
        hash BLOB NOT NULL,
        time INTEGER NOT NULL,
        signature BLOB NOT NULL
    );
",
    // The audit chain's search index (see `crate::audit::index`); the records chained before
    // are indexed by `migrate` in the same transaction.
    "
    CREATE TABLE IF NOT EXISTS audit_index (
        term TEXT NOT NULL,
        seq INTEGER NOT NULL,
        recorded INTEGER NOT NULL,
        PRIMARY KEY (term, seq)
    ) WITHOUT ROWID;
",
    // Version 8 writes the index after the record, not with it (`Store::index_audit`), up to
    // the record `audit_indexed` names; a version 7 store has every record indexed.
    "
    INSERT INTO fhirseal_meta (key, value)
        SELECT 'audit_indexed', COALESCE(MAX(seq), 0) FROM audit_chain WHERE true
        ON CONFLICT (key) DO NOTHING;
",
];

/// The schema version that brought the audit index: a store upgraded past it from below has its
/// chained records indexed.
const AUDIT_INDEX_VERSION: i64 = 7;

/// The authority's state in one SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    location: String,
    /// Set when an index transaction could not put the connection's `synchronous` back: its
    /// commits might no longer wait for the disk, so it writes nothing more.
    sync_lost: bool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`; its folder must exist.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let location = path.display().to_string();
        let conn = Connection::open(path).map_err(|source| Error::Sqlite {
            location: location.clone(),
            source,
        })?;
        let store = Self {
            conn,
            location,
            sync_lost: false,
        };
        store
            .conn
            .busy_timeout(Duration::from_secs(30))
            .and_then(|()| store.conn.pragma_update(None, "journal_mode", "WAL"))
            .map_err(|e| store.err(e))?;
        Ok(store)
    }

    fn err(&self, source: rusqlite::Error) -> Error {
        Error::Sqlite {
            location: self.location.clone(),
            source,
        }
    }

    /// Every row of a read-only query, mapped by `f`. The statement is kept in the connection's
    /// cache (rusqlite's, least recently used first out): some of these run on every write
    /// (`counters`, for the current period), where preparing again was half their cost.
    fn query_all<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, Error> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        stmt.query_map(params, f)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|e| self.err(e))
    }

    fn write<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let location = self.location.clone();
        let err = |source| Error::Sqlite {
            location: location.clone(),
            source,
        };
        if self.sync_lost {
            return Err(Error::Invalid(format!(
                "{location}: this connection's commits were left not waiting for the disk; it \
                 writes nothing more (reopen the store)"
            )));
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let out = f(&tx)?;
        tx.commit().map_err(err)?;
        Ok(out)
    }
}

impl Store for SqliteStore {
    fn location(&self) -> &str {
        &self.location
    }

    fn reads_without_waiting(&self) -> bool {
        // `open` puts every store in WAL mode, or fails.
        true
    }

    fn commits_in_process(&self) -> bool {
        true
    }

    fn relax_commits(&mut self) -> Result<(), Error> {
        self.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| self.err(e))?;
        // 1 is NORMAL.
        let now: i64 = self
            .conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if now != 1 {
            return Err(Error::Invalid(format!(
                "{}: synchronous stayed {now} after it was set to NORMAL",
                self.location
            )));
        }
        Ok(())
    }

    fn migrate(&mut self) -> Result<(), Error> {
        let location = self.location.clone();
        self.write(|tx| {
            let err = |source| Error::Sqlite {
                location: location.clone(),
                source,
            };
            tx.execute_batch("CREATE TABLE IF NOT EXISTS fhirseal_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
                .map_err(err)?;
            let found: i64 = tx
                .query_row("SELECT value FROM fhirseal_meta WHERE key = 'schema_version'", [], |r| r.get(0))
                .optional()
                .map_err(err)?
                .unwrap_or(0);
            if found > SCHEMA_VERSION {
                return Err(Error::SchemaTooNew {
                    location: location.clone(),
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            for migration in MIGRATIONS.iter().skip(usize::try_from(found).unwrap_or(0)) {
                tx.execute_batch(migration).map_err(err)?;
            }
            if found < AUDIT_INDEX_VERSION {
                index_chain(tx, &location)?;
            }
            tx.execute(
                "INSERT INTO fhirseal_meta (key, value) VALUES ('schema_version', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![SCHEMA_VERSION],
            )
            .map_err(err)?;
            Ok(())
        })
    }

    fn master(&mut self) -> Result<Option<MasterRecord>, Error> {
        self.conn
            .query_row(
                "SELECT user_depth, time_depth, period_seconds, epoch, public_params, sealed_secret FROM master",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Vec<u8>>(4)?,
                        r.get::<_, Vec<u8>>(5)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| self.err(e))?
            .map(|(l, t, p, epoch, public_params, sealed_secret)| {
                Ok(MasterRecord {
                    user_depth: u8::try_from(l).map_err(|_| corrupt("master record", "user depth"))?,
                    time_depth: u8::try_from(t).map_err(|_| corrupt("master record", "time depth"))?,
                    period_seconds: u64::try_from(p).map_err(|_| corrupt("master record", "period length"))?,
                    epoch,
                    public_params,
                    sealed_secret,
                })
            })
            .transpose()
    }

    fn create_master(&mut self, m: &MasterRecord) -> Result<(), Error> {
        let location = self.location.clone();
        self.write(|tx| {
            let err = |source| Error::Sqlite {
                location: location.clone(),
                source,
            };
            let exists: Option<i64> = tx.query_row("SELECT id FROM master", [], |r| r.get(0)).optional().map_err(err)?;
            if exists.is_some() {
                return Err(Error::AlreadyInitialised {
                    location: location.clone(),
                });
            }
            tx.execute(
                "INSERT INTO master (id, user_depth, time_depth, period_seconds, epoch, public_params, sealed_secret)
                 VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)",
                params![m.user_depth, m.time_depth, m.period_seconds as i64, m.epoch, m.public_params, m.sealed_secret],
            )
            .map_err(err)?;
            set_key_layout(tx, &err)
        })
    }

    fn key_layout(&mut self) -> Result<Option<u64>, Error> {
        layout_of(&self.conn, &sq(&self.location))
    }

    fn reissue_keys(&mut self, plan: KeyReissue<'_>) -> Result<Option<KeyMigration>, Error> {
        // Freed pages and cells are zeroed, so the old sealed keys and master secret do not linger
        // in the file; the checkpoint below copies the new pages over the old ones.
        self.conn
            .pragma_update(None, "secure_delete", "ON")
            .map_err(|e| self.err(e))?;
        let location = self.location.clone();
        let migrated = self.write(|tx| reissue_in(tx, plan, &location))?;
        if migrated.is_some() {
            // Best effort: a reader holding an old snapshot makes it partial, and the next
            // automatic checkpoint finishes it.
            let _ = self
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
        Ok(migrated)
    }

    fn principal(&mut self, kind: Kind, name: &str) -> Result<Option<Principal>, Error> {
        let row = self
            .conn
            .query_row(
                &format!("{SELECT} WHERE kind = ?1 AND name = ?2"),
                params![kind.as_str(), name],
                raw_principal,
            )
            .optional()
            .map_err(|e| self.err(e))?;
        row.map(RawPrincipal::check).transpose()
    }

    fn principals(&mut self, kind: Kind) -> Result<Vec<Principal>, Error> {
        let sql = format!("{SELECT} WHERE kind = ?1 ORDER BY leaf");
        let rows = self.query_all(&sql, params![kind.as_str()], raw_principal)?;
        rows.into_iter().map(RawPrincipal::check).collect()
    }

    fn insert_principal(
        &mut self,
        kind: Kind,
        name: &str,
        issuer: Option<&str>,
        max_leaves: u64,
        make: &mut MakePrincipal<'_>,
    ) -> Result<Principal, Error> {
        let location = self.location.clone();
        self.write(|tx| {
            let err = |source| Error::Sqlite {
                location: location.clone(),
                source,
            };
            let taken: Option<i64> = tx
                .query_row(
                    "SELECT leaf FROM principals WHERE kind = ?1 AND name = ?2",
                    params![kind.as_str(), name],
                    |r| r.get(0),
                )
                .optional()
                .map_err(err)?;
            if taken.is_some() {
                return Err(Error::AlreadyRegistered {
                    kind: kind.as_str(),
                    name: name.to_string(),
                });
            }
            let leaf: i64 = tx
                .query_row("SELECT value FROM fhirseal_meta WHERE key = 'next_leaf'", [], |r| r.get(0))
                .map_err(err)?;
            let leaf = u64::try_from(leaf).map_err(|_| corrupt("leaf counter", "negative"))?;
            if leaf >= max_leaves {
                return Err(Error::LeavesExhausted(max_leaves));
            }
            let issuer = issuer
                .map(|i| {
                    tx.query_row(
                        &format!("{SELECT} WHERE kind = 'authority' AND name = ?1"),
                        params![i],
                        raw_principal,
                    )
                    .optional()
                    .map_err(err)?
                    .map(RawPrincipal::check)
                    .transpose()?
                    .ok_or_else(|| Error::UnknownPrincipal {
                        kind: Kind::Authority.as_str(),
                        name: i.to_string(),
                    })
                })
                .transpose()?;
            let new = make(leaf, issuer.as_ref())?;
            tx.execute(
                "INSERT INTO principals (kind, name, leaf, attributes, parent, revoked_at, sealed_key, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, ?7)",
                params![
                    kind.as_str(),
                    name,
                    leaf as i64,
                    attributes_to_text(&new.attributes),
                    new.parent,
                    new.sealed_key,
                    new.created_at
                ],
            )
            .map_err(err)?;
            tx.execute("UPDATE fhirseal_meta SET value = value + 1 WHERE key = 'next_leaf'", []).map_err(err)?;
            Ok(new.into_principal(kind, name, leaf))
        })
    }

    fn revoke_subtree(
        &mut self,
        kind: Kind,
        name: &str,
        period: u64,
    ) -> Result<Vec<(Kind, String)>, Error> {
        let location = self.location.clone();
        self.write(|tx| {
            let err = |source| Error::Sqlite {
                location: location.clone(),
                source,
            };
            let all = tx
                .prepare(SELECT)
                .and_then(|mut stmt| stmt.query_map([], raw_principal)?.collect::<Result<Vec<_>, _>>())
                .map_err(err)?
                .into_iter()
                .map(RawPrincipal::check)
                .collect::<Result<Vec<_>, _>>()?;
            let targets = subtree(kind, name, &all)?;
            for (kind, name) in &targets {
                tx.execute(
                    "UPDATE principals SET revoked_at = ?1 WHERE kind = ?2 AND name = ?3 AND revoked_at IS NULL",
                    params![period as i64, kind.as_str(), name],
                )
                .map_err(err)?;
            }
            tx.execute("UPDATE fhirseal_meta SET value = value + 1 WHERE key = 'revocation_version'", [])
                .map_err(err)?;
            Ok(targets)
        })
    }

    fn revoked_leaves(&mut self) -> Result<Vec<(u64, u64)>, Error> {
        let rows = self.query_all(
            "SELECT leaf, revoked_at FROM principals WHERE revoked_at IS NOT NULL ORDER BY leaf",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
        )?;
        rows.into_iter()
            .map(|(l, p)| {
                Ok((
                    u64::try_from(l).map_err(|_| corrupt("leaf", "negative"))?,
                    u64::try_from(p).map_err(|_| corrupt("period", "negative"))?,
                ))
            })
            .collect()
    }

    fn counters(&mut self) -> Result<Counters, Error> {
        let rows = self.query_all("SELECT key, value FROM fhirseal_meta", [], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?;
        counters_from(rows)
    }

    fn advance_period(&mut self, now: i64, not_after: Option<i64>) -> Result<u64, Error> {
        let location = self.location.clone();
        self.write(|tx| advance_offset(tx, now, not_after, &sq(&location)))
    }

    fn key_update(&mut self, period: u64) -> Result<Option<(u64, Vec<u8>)>, Error> {
        let row = self
            .conn
            .query_row(
                "SELECT version, bytes FROM key_updates WHERE period = ?1",
                params![period as i64],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        row.map(|(v, b)| {
            Ok((
                u64::try_from(v).map_err(|_| corrupt("key update", "version"))?,
                b,
            ))
        })
        .transpose()
    }

    fn put_key_update(&mut self, period: u64, version: u64, bytes: &[u8]) -> Result<(), Error> {
        let location = self.location.clone();
        self.write(|tx| {
            tx.execute(
                "INSERT INTO key_updates (period, version, bytes) VALUES (?1, ?2, ?3)
                 ON CONFLICT (period) DO UPDATE SET version = excluded.version, bytes = excluded.bytes",
                params![period as i64, version as i64, bytes],
            )
            .map_err(|source| Error::Sqlite { location, source })?;
            Ok(())
        })
    }

    fn secret(&mut self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        self.conn
            .query_row(
                "SELECT bytes FROM secrets WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    fn insert_secret_if_absent(&mut self, name: &str, bytes: &[u8]) -> Result<Vec<u8>, Error> {
        let location = self.location.clone();
        self.write(|tx| {
            let err = |source| Error::Sqlite {
                location: location.clone(),
                source,
            };
            tx.execute(
                "INSERT INTO secrets (name, bytes) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
                params![name, bytes],
            )
            .map_err(err)?;
            tx.query_row(
                "SELECT bytes FROM secrets WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .map_err(err)
        })
    }

    fn start_update_job(&mut self, target_period: u64, now: i64) -> Result<JobId, Error> {
        let location = self.location.clone();
        self.write(|tx| start_job_in(tx, target_period, now, &sq(&location)))
    }

    fn add_chunks(&mut self, job: JobId, keys: &[String]) -> Result<u64, Error> {
        jobs::check_keys(keys)?;
        let location = self.location.clone();
        self.write(|tx| add_chunks_in(tx, job, keys, &sq(&location)))
    }

    fn claim_chunk(
        &mut self,
        job: JobId,
        worker: &str,
        now: i64,
        lease_seconds: u64,
    ) -> Result<Option<Chunk>, Error> {
        jobs::check_worker(worker)?;
        let until = jobs::lease_until(now, lease_seconds)?;
        let id = job.to_db()?;
        let location = self.location.clone();
        // `BEGIN IMMEDIATE`: claimers (in this process or another) run one at a time.
        self.write(|tx| {
            let err = sq(&location);
            job_finished_at(tx, job, &err)?;
            let key: Option<String> = tx
                .query_row(
                    "SELECT key FROM update_chunks
                     WHERE job_id = ?1 AND state <> 'done'
                       AND (state = 'pending' OR (state = 'claimed' AND lease_until <= ?2))
                     ORDER BY attempts, seq LIMIT 1",
                    params![id, now],
                    |r| r.get(0),
                )
                .optional()
                .map_err(&err)?;
            let Some(key) = key else {
                return Ok(None);
            };
            let attempts: i64 = tx
                .query_row(
                    "UPDATE update_chunks
                     SET state = 'claimed', claimed_by = ?3, lease_until = ?4, attempts = attempts + 1
                     WHERE job_id = ?1 AND key = ?2 RETURNING attempts",
                    params![id, key, worker, until],
                    |r| r.get(0),
                )
                .map_err(&err)?;
            let attempts =
                u32::try_from(attempts).map_err(|_| corrupt("update chunk", "attempt count"))?;
            Ok(Some(Chunk { key, attempts }))
        })
    }

    fn complete_chunk(
        &mut self,
        job: JobId,
        key: &str,
        worker: &str,
        moved: u64,
    ) -> Result<(), Error> {
        let moved = jobs::to_db(moved, "header count")?;
        self.holder_write(
            job,
            key,
            worker,
            true,
            "UPDATE update_chunks SET state = 'done', lease_until = NULL, moved = ?4
             WHERE job_id = ?1 AND key = ?2 AND state = 'claimed' AND claimed_by = ?3",
            Some(moved),
        )
    }

    fn release_chunk(&mut self, job: JobId, key: &str, worker: &str) -> Result<(), Error> {
        self.holder_write(
            job,
            key,
            worker,
            false,
            "UPDATE update_chunks SET state = 'pending', claimed_by = NULL, lease_until = NULL
             WHERE job_id = ?1 AND key = ?2 AND state = 'claimed' AND claimed_by = ?3",
            None,
        )
    }

    fn renew_lease(
        &mut self,
        job: JobId,
        key: &str,
        worker: &str,
        now: i64,
        lease_seconds: u64,
    ) -> Result<(), Error> {
        let until = jobs::lease_until(now, lease_seconds)?;
        self.holder_write(
            job,
            key,
            worker,
            false,
            "UPDATE update_chunks SET lease_until = ?4
             WHERE job_id = ?1 AND key = ?2 AND state = 'claimed' AND claimed_by = ?3",
            Some(until),
        )
    }

    fn job_progress(&mut self, job: JobId) -> Result<Progress, Error> {
        let id = job.to_db()?;
        let raw = self
            .conn
            .query_row(PROGRESS, params![id], raw_progress)
            .optional()
            .map_err(|e| self.err(e))?;
        raw.ok_or(Error::UnknownJob { job: job.get() })?.check()
    }

    fn finish_job_if_done(&mut self, job: JobId, now: i64) -> Result<bool, Error> {
        let id = job.to_db()?;
        let location = self.location.clone();
        self.write(|tx| {
            let err = sq(&location);
            if job_finished_at(tx, job, &err)?.is_some() {
                return Ok(true);
            }
            let (total, open): (i64, i64) = tx
                .query_row(
                    "SELECT COUNT(*), COUNT(CASE WHEN state <> 'done' THEN 1 END)
                     FROM update_chunks WHERE job_id = ?1",
                    params![id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(&err)?;
            if total == 0 || open > 0 {
                return Ok(false);
            }
            tx.execute(
                "UPDATE update_jobs SET finished_at = ?2 WHERE id = ?1",
                params![id, now],
            )
            .map_err(&err)?;
            Ok(true)
        })
    }

    fn latest_update_job(&mut self) -> Result<Option<(JobId, Progress)>, Error> {
        let id: Option<i64> = self
            .conn
            .query_row(
                "SELECT id FROM update_jobs ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        id.map(|id| {
            let job = JobId::from_db(id)?;
            Ok((job, self.job_progress(job)?))
        })
        .transpose()
    }

    fn take_lease(
        &mut self,
        key: &str,
        holder: &str,
        now: i64,
        lease_seconds: u64,
    ) -> Result<bool, Error> {
        leases::check(key, holder)?;
        let until = jobs::lease_until(now, lease_seconds)?;
        // One statement, so its own transaction: takers (in this process or another) run one at
        // a time under the database's write lock.
        let taken = self
            .conn
            .execute(leases::TAKE, params![key, holder, until, now])
            .map_err(|e| self.err(e))?;
        Ok(taken == 1)
    }

    fn release_lease(&mut self, key: &str, holder: &str, now: i64) -> Result<(), Error> {
        leases::check(key, holder)?;
        self.conn
            .execute(leases::RELEASE, params![key, holder, now])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn append_audit(
        &mut self,
        entries: &[AuditEntry<'_>],
        checkpoint: &mut SignCheckpoint<'_>,
    ) -> Result<ChainTail, Error> {
        let location = self.location.clone();
        // `BEGIN IMMEDIATE`: the tail is read and extended under the database's write lock.
        self.write(|tx| {
            let err = sq(&location);
            // Cached statements: the chain's writer runs this once per batch, and preparing
            // them again was 2 % of a sealed read's CPU (issue 18).
            let tail = tx
                .prepare_cached("SELECT seq, hash, time FROM audit_chain ORDER BY seq DESC LIMIT 1")
                .and_then(|mut tail| {
                    tail.query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                        .optional()
                })
                .map_err(&err)?;
            let (tail, records) = link::link(tail, entries)?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO audit_chain (seq, time, record, prev, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(&err)?;
            for r in &records {
                let seq = i64::try_from(r.seq).map_err(|_| Error::Invalid("the audit chain is full".into()))?;
                insert
                    .execute(params![seq, r.time, r.record, &r.prev[..], &r.hash[..]])
                    .map_err(&err)?;
            }
            let last = tx
                .prepare_cached(
                    "SELECT seq, hash, time FROM audit_checkpoints ORDER BY seq DESC LIMIT 1",
                )
                .and_then(|mut last| {
                    last.query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                        .optional()
                })
                .map_err(&err)?;
            let last = link::last_checkpoint(last)?;
            if let Some(signature) = checkpoint(&tail, last.as_ref())? {
                let seq = i64::try_from(tail.seq).map_err(|_| Error::Invalid("the audit chain is full".into()))?;
                tx.execute(
                    "INSERT INTO audit_checkpoints (seq, hash, time, signature) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (seq) DO NOTHING",
                    params![seq, &tail.hash[..], tail.time, signature],
                )
                .map_err(&err)?;
            }
            Ok(tail)
        })
    }

    fn index_audit(&mut self, limit: u32) -> Result<u32, Error> {
        let location = self.location.clone();
        // Without waiting for the disk (1 is NORMAL): the next durable commit syncs it.
        let level: i64 = self
            .conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if level != 1 {
            self.conn
                .pragma_update(None, "synchronous", 1)
                .map_err(|e| self.err(e))?;
        }
        // `BEGIN IMMEDIATE`: one indexer at a time, and it sees a prefix of the chain.
        let indexed = self.write(|tx| index_next(tx, limit, &location));
        if level != 1
            && let Err(e) = self.conn.pragma_update(None, "synchronous", level)
        {
            // Fail closed: no durable append may go through a relaxed connection unnoticed.
            self.sync_lost = true;
            return Err(self.err(e));
        }
        indexed
    }

    fn audit_records(&mut self, after: u64, limit: u32) -> Result<Vec<RawAuditRecord>, Error> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        self.query_all(
            "SELECT seq, time, record, prev, hash FROM audit_chain WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            params![after, limit],
            audit_row,
        )
    }

    fn audit_search(&mut self, query: &AuditQuery) -> Result<Vec<RawAuditRecord>, Error> {
        let (sql, values) = index::search_sql(query, |i| format!("?{i}"));
        let values = values.into_iter().map(|v| match v {
            Bound::Text(t) => rusqlite::types::Value::Text(t),
            Bound::Int(i) => rusqlite::types::Value::Integer(i),
        });
        self.query_all(&sql, rusqlite::params_from_iter(values), audit_row)
    }

    fn audit_checkpoints(&mut self) -> Result<Vec<RawCheckpoint>, Error> {
        self.query_all(
            "SELECT seq, hash, time, signature FROM audit_checkpoints ORDER BY seq",
            [],
            |r| {
                Ok(RawCheckpoint {
                    seq: r.get(0)?,
                    hash: bytes(r, 1)?,
                    time: r.get(2)?,
                    signature: bytes(r, 3)?,
                })
            },
        )
    }
}

/// Writes the index rows of record `seq` ([`index::index_of`]).
fn index_record(
    tx: &rusqlite::Transaction<'_>,
    seq: i64,
    time: i64,
    record: &str,
    location: &str,
) -> Result<(), Error> {
    let entry = index::index_of(record, time);
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO audit_index (term, seq, recorded) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        )
        .map_err(sq(location))?;
    for term in &entry.terms {
        insert
            .execute(params![term, seq, entry.recorded])
            .map_err(sq(location))?;
    }
    Ok(())
}

/// Indexes every record of the chain (the upgrade to [`AUDIT_INDEX_VERSION`]), a page at a time,
/// whatever the mark says (the upgrade to version 8 has set it to the tail already).
fn index_chain(tx: &rusqlite::Transaction<'_>, location: &str) -> Result<(), Error> {
    let mut after = 0;
    while let (_, Some(last)) = index_page(tx, after, 1000, location)? {
        after = last;
    }
    Ok(())
}

/// Indexes up to `limit` records after the index's mark (`audit_indexed` in `fhirseal_meta`), in
/// order, inside `tx`, and moves the mark past them; how many.
fn index_next(tx: &rusqlite::Transaction<'_>, limit: u32, location: &str) -> Result<u32, Error> {
    let err = sq(location);
    let mark: i64 = tx
        .prepare_cached("SELECT value FROM fhirseal_meta WHERE key = 'audit_indexed'")
        .and_then(|mut mark| mark.query_row([], |r| r.get(0)).optional())
        .map_err(&err)?
        .unwrap_or(0);
    let (indexed, Some(last)) = index_page(tx, mark, limit, location)? else {
        return Ok(0);
    };
    tx.prepare_cached(
        "INSERT INTO fhirseal_meta (key, value) VALUES ('audit_indexed', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .and_then(|mut set| set.execute(params![last]))
    .map_err(&err)?;
    Ok(indexed)
}

/// Indexes up to `limit` records with a sequence number above `after`, in order, inside `tx`:
/// how many, and the last one's sequence number (`None` when there was none).
fn index_page(
    tx: &rusqlite::Transaction<'_>,
    after: i64,
    limit: u32,
    location: &str,
) -> Result<(u32, Option<i64>), Error> {
    let page: Vec<(i64, i64, Vec<u8>)> = tx
        .prepare_cached(
            "SELECT seq, time, record FROM audit_chain WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )
        .and_then(|mut stmt| {
            stmt.query_map(params![after, limit], |r| {
                Ok((r.get(0)?, r.get(1)?, bytes(r, 2)?))
            })?
            .collect::<Result<Vec<_>, _>>()
        })
        .map_err(sq(location))?;
    for (seq, time, record) in &page {
        index_record(tx, *seq, *time, &String::from_utf8_lossy(record), location)?;
    }
    let indexed = u32::try_from(page.len()).unwrap_or(u32::MAX);
    Ok((indexed, page.last().map(|(seq, _, _)| *seq)))
}

/// Column `i` as bytes, whether SQLite stored it as text or a blob (a tampered row may be
/// either); anything else is empty, which the chain's checks refuse by sequence number.
/// A row of `seq, time, record, prev, hash` of the audit chain, as both its reads select it.
fn audit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawAuditRecord> {
    Ok(RawAuditRecord {
        seq: r.get(0)?,
        time: r.get(1)?,
        record: bytes(r, 2)?,
        prev: bytes(r, 3)?,
        hash: bytes(r, 4)?,
    })
}

fn bytes(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Vec<u8>> {
    Ok(match r.get_ref(i)? {
        rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => b.to_vec(),
        _ => Vec::new(),
    })
}

impl SqliteStore {
    /// Runs `sql` (a write on the chunk `?2` of job `?1` guarded by `claimed_by = ?3`, with `?4`
    /// bound to `extra` if there is one) and, when it matched no row, says why
    /// ([`jobs::refused`]).
    fn holder_write(
        &mut self,
        job: JobId,
        key: &str,
        worker: &str,
        done_is_ok: bool,
        sql: &str,
        extra: Option<i64>,
    ) -> Result<(), Error> {
        jobs::check_worker(worker)?;
        jobs::check_key(key)?;
        let id = job.to_db()?;
        let location = self.location.clone();
        self.write(|tx| {
            let err = sq(&location);
            let changed = match extra {
                Some(v) => tx.execute(sql, params![id, key, worker, v]),
                None => tx.execute(sql, params![id, key, worker]),
            }
            .map_err(&err)?;
            if changed == 1 {
                return Ok(());
            }
            job_finished_at(tx, job, &err)?;
            let holder = tx
                .query_row(
                    "SELECT state, claimed_by FROM update_chunks WHERE job_id = ?1 AND key = ?2",
                    params![id, key],
                    |r| {
                        Ok(ChunkHolder {
                            state: r.get(0)?,
                            claimed_by: r.get(1)?,
                        })
                    },
                )
                .optional()
                .map_err(&err)?;
            jobs::refused(job, key, worker, holder, done_is_ok)
        })
    }
}

/// [`Store::reissue_keys`] inside its transaction (`BEGIN IMMEDIATE`: no other writer runs).
fn reissue_in(
    tx: &rusqlite::Transaction<'_>,
    plan: KeyReissue<'_>,
    location: &str,
) -> Result<Option<KeyMigration>, Error> {
    jobs::check_keys(plan.job_chunks)?;
    let err = &sq(location);
    if layout_of(tx, err)? == Some(KEY_LAYOUT) {
        return Ok(None);
    }
    let changed = tx
        .execute(
            "UPDATE master SET sealed_secret = ?1",
            params![plan.sealed_secret],
        )
        .map_err(err)?;
    if changed != 1 {
        return Err(Error::NotInitialised {
            location: location.to_string(),
        });
    }
    let mut done = reissue_principals(tx, plan.reissue, err)?;
    done.key_updates_deleted = tx.execute("DELETE FROM key_updates", []).map_err(err)? as u64;
    done.period = (plan.period_at)(advance_offset(tx, plan.now, None, err)?)?;
    if !plan.job_chunks.is_empty() {
        let job = start_job_in(tx, done.period, plan.now, err)?;
        // A job for that period finished already is left as it is.
        if job_finished_at(tx, job, err)?.is_none() {
            add_chunks_in(tx, job, plan.job_chunks, err)?;
        }
        done.job = Some(job);
    }
    set_key_layout(tx, err)?;
    Ok(Some(done))
}

/// Gives every principal the key `reissue` makes for it, or destroys its key (an empty record).
fn reissue_principals(
    tx: &rusqlite::Transaction<'_>,
    reissue: &mut ReissueKey<'_>,
    err: &impl Fn(rusqlite::Error) -> Error,
) -> Result<KeyMigration, Error> {
    let mut done = KeyMigration::empty();
    let all = tx
        .prepare(&format!("{SELECT} ORDER BY leaf"))
        .and_then(|mut stmt| {
            stmt.query_map([], raw_principal)?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(err)?;
    for raw in all {
        let p = raw.check()?;
        let key = reissue(&p)?;
        done.count(p.kind, key.is_some());
        tx.execute(
            "UPDATE principals SET sealed_key = ?1 WHERE kind = ?2 AND name = ?3",
            params![key.unwrap_or_default(), p.kind.as_str(), p.name],
        )
        .map_err(err)?;
    }
    Ok(done)
}

/// Adds one to the period offset and records `now` as the last advance by hand, unless
/// `not_after` is given and the last one was recorded after it; the new offset. The caller's
/// transaction is `BEGIN IMMEDIATE`: no other writer runs between the check and the write.
fn advance_offset(
    conn: &Connection,
    now: i64,
    not_after: Option<i64>,
    err: &impl Fn(rusqlite::Error) -> Error,
) -> Result<u64, Error> {
    let last: Option<i64> = conn
        .query_row(
            "SELECT value FROM fhirseal_meta WHERE key = 'period_advanced_at'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(err)?;
    check_advance_pace(last, not_after, now)?;
    let offset: i64 = conn
        .query_row(
            "UPDATE fhirseal_meta SET value = value + 1 WHERE key = 'period_offset' RETURNING value",
            [],
            |r| r.get(0),
        )
        .map_err(err)?;
    conn.execute(
        "INSERT INTO fhirseal_meta (key, value) VALUES ('period_advanced_at', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![now],
    )
    .map_err(err)?;
    u64::try_from(offset).map_err(|_| corrupt("period offset", "negative"))
}

/// The recorded key layout.
fn layout_of(
    conn: &Connection,
    err: &impl Fn(rusqlite::Error) -> Error,
) -> Result<Option<u64>, Error> {
    let layout: Option<i64> = conn
        .query_row(
            "SELECT value FROM fhirseal_meta WHERE key = 'key_layout'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(err)?;
    layout
        .map(|l| u64::try_from(l).map_err(|_| corrupt("key layout", "negative")))
        .transpose()
}

/// Marks the stored keys [`KEY_LAYOUT`].
fn set_key_layout(
    tx: &rusqlite::Transaction<'_>,
    err: &impl Fn(rusqlite::Error) -> Error,
) -> Result<(), Error> {
    tx.execute(
        "INSERT INTO fhirseal_meta (key, value) VALUES ('key_layout', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![KEY_LAYOUT as i64],
    )
    .map_err(err)?;
    Ok(())
}

/// [`Store::start_update_job`] inside a transaction.
fn start_job_in(
    tx: &rusqlite::Transaction<'_>,
    target_period: u64,
    now: i64,
    err: &impl Fn(rusqlite::Error) -> Error,
) -> Result<JobId, Error> {
    let period = jobs::to_db(target_period, "period")?;
    tx.execute(
        "INSERT INTO update_jobs (target_period, created_at) VALUES (?1, ?2)
         ON CONFLICT (target_period) DO NOTHING",
        params![period, now],
    )
    .map_err(err)?;
    let id: i64 = tx
        .query_row(
            "SELECT id FROM update_jobs WHERE target_period = ?1",
            params![period],
            |r| r.get(0),
        )
        .map_err(err)?;
    JobId::from_db(id)
}

/// [`Store::add_chunks`] inside a transaction (its keys checked); on [`Error::JobFinished`] the
/// caller must not commit.
fn add_chunks_in(
    tx: &rusqlite::Transaction<'_>,
    job: JobId,
    keys: &[String],
    err: &impl Fn(rusqlite::Error) -> Error,
) -> Result<u64, Error> {
    let id = job.to_db()?;
    let finished = job_finished_at(tx, job, err)?.is_some();
    let mut seq: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM update_chunks WHERE job_id = ?1",
            params![id],
            |r| r.get(0),
        )
        .map_err(err)?;
    let mut insert = tx
        .prepare(
            "INSERT INTO update_chunks (job_id, key, seq, state, attempts, moved)
             VALUES (?1, ?2, ?3, 'pending', 0, 0)
             ON CONFLICT (job_id, key) DO NOTHING",
        )
        .map_err(err)?;
    let mut added = 0u64;
    for key in keys {
        if insert.execute(params![id, key, seq]).map_err(err)? == 1 {
            added += 1;
            seq += 1;
        }
    }
    if finished && added > 0 {
        // The caller drops the transaction uncommitted: nothing is added.
        return Err(Error::JobFinished { job: job.get() });
    }
    Ok(added)
}

/// The job's `finished_at`, or [`Error::UnknownJob`].
fn job_finished_at(
    tx: &rusqlite::Transaction<'_>,
    job: JobId,
    err: &impl Fn(rusqlite::Error) -> Error,
) -> Result<Option<i64>, Error> {
    tx.query_row(
        "SELECT finished_at FROM update_jobs WHERE id = ?1",
        params![job.to_db()?],
        |r| r.get::<_, Option<i64>>(0),
    )
    .optional()
    .map_err(err)?
    .ok_or(Error::UnknownJob { job: job.get() })
}

fn sq(location: &str) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |source| Error::Sqlite {
        location: location.to_string(),
        source,
    }
}

const PROGRESS: &str = "SELECT j.target_period, j.created_at, j.finished_at, COUNT(c.key),
        COUNT(CASE WHEN c.state = 'done' THEN 1 END),
        COUNT(CASE WHEN c.state = 'claimed' THEN 1 END),
        COALESCE(SUM(CASE WHEN c.state = 'done' THEN c.moved ELSE 0 END), 0)
    FROM update_jobs j LEFT JOIN update_chunks c ON c.job_id = j.id
    WHERE j.id = ?1 GROUP BY j.id";

fn raw_progress(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawProgress> {
    Ok(RawProgress {
        target_period: r.get(0)?,
        created_at: r.get(1)?,
        finished_at: r.get(2)?,
        total: r.get(3)?,
        done: r.get(4)?,
        claimed: r.get(5)?,
        moved: r.get(6)?,
    })
}

const SELECT: &str = "SELECT kind, name, leaf, attributes, parent, revoked_at, sealed_key, created_at FROM principals";

fn raw_principal(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawPrincipal> {
    Ok(RawPrincipal {
        kind: r.get(0)?,
        name: r.get(1)?,
        leaf: r.get(2)?,
        attributes: r.get(3)?,
        parent: r.get(4)?,
        revoked_at: r.get(5)?,
        sealed_key: r.get(6)?,
        created_at: r.get(7)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The level of `synchronous` on the store's own connection (1 NORMAL, 2 FULL).
    fn level(store: &SqliteStore) -> i64 {
        store
            .conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap()
    }

    /// An index transaction commits without waiting for the disk, and leaves the connection's
    /// own commits as they were: durable on a durable writer, relaxed on a relaxed one.
    #[test]
    fn indexing_leaves_the_connections_commits_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("a.sqlite3")).unwrap();
        store.migrate().unwrap();
        let line = AuditEntry {
            time: 1,
            record: r#"{"outcome":"success"}"#,
        };
        store.append_audit(&[line], &mut |_, _| Ok(None)).unwrap();
        assert_eq!(level(&store), 2);
        assert_eq!(store.index_audit(10).unwrap(), 1);
        assert_eq!(level(&store), 2);
        store.relax_commits().unwrap();
        store.append_audit(&[line], &mut |_, _| Ok(None)).unwrap();
        assert_eq!(store.index_audit(10).unwrap(), 1);
        assert_eq!(level(&store), 1);
    }
}
