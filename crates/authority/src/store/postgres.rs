//! The PostgreSQL backend: one authority shared by several gateway replicas.

use postgres::types::ToSql;
use postgres::{Client, GenericClient, NoTls, Transaction};

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
        period_seconds BIGINT NOT NULL,
        epoch BIGINT NOT NULL,
        public_params BYTEA NOT NULL,
        sealed_secret BYTEA NOT NULL
    );
    CREATE TABLE principals (
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        leaf BIGINT NOT NULL UNIQUE,
        attributes TEXT NOT NULL,
        parent TEXT,
        revoked_at BIGINT,
        sealed_key BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (kind, name)
    );
    CREATE TABLE key_updates (
        period BIGINT PRIMARY KEY,
        version BIGINT NOT NULL,
        bytes BYTEA NOT NULL
    );
    INSERT INTO fhirseal_meta (key, value) VALUES
        ('next_leaf', 0), ('period_offset', 0), ('revocation_version', 0);
",
    "
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        bytes BYTEA NOT NULL
    );
",
    "
    CREATE TABLE update_jobs (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        target_period BIGINT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL,
        finished_at BIGINT
    );
    CREATE TABLE update_chunks (
        job_id BIGINT NOT NULL REFERENCES update_jobs (id),
        key TEXT NOT NULL,
        seq BIGINT GENERATED ALWAYS AS IDENTITY,
        state TEXT NOT NULL CHECK (state IN ('pending', 'claimed', 'done')),
        claimed_by TEXT,
        lease_until BIGINT,
        attempts INTEGER NOT NULL DEFAULT 0,
        moved BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (job_id, key),
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
        lease_until BIGINT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS leases_until ON leases (lease_until);
",
    // The audit trail (see `crate::audit`): append-only, `seq` dense from 1. `IF NOT EXISTS`, as
    // above.
    "
    CREATE TABLE IF NOT EXISTS audit_chain (
        seq BIGINT PRIMARY KEY CHECK (seq > 0),
        time BIGINT NOT NULL,
        record TEXT NOT NULL,
        prev BYTEA NOT NULL,
        hash BYTEA NOT NULL
    );
    CREATE TABLE IF NOT EXISTS audit_checkpoints (
        seq BIGINT PRIMARY KEY,
        hash BYTEA NOT NULL,
        time BIGINT NOT NULL,
        signature BYTEA NOT NULL
    );
",
    // The audit chain's search index (see `crate::audit::index`); the records chained before
    // are indexed by `migrate` in the same transaction.
    "
    CREATE TABLE IF NOT EXISTS audit_index (
        term TEXT NOT NULL,
        seq BIGINT NOT NULL,
        recorded BIGINT NOT NULL,
        PRIMARY KEY (term, seq)
    );
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

/// An advisory-lock key that serialises registry writers (issuance and revocation).
const REGISTRY_LOCK: i64 = 0x4648_4952_5245_4749; // "FHIRREGI"

/// An advisory-lock key that serialises appenders to the audit chain.
const AUDIT_LOCK: i64 = 0x4648_4952_4155_4454; // "FHIRAUDT"

/// An advisory-lock key that serialises the audit index's writers (not its appenders).
const AUDIT_INDEX_LOCK: i64 = 0x4648_4952_4149_4458; // "FHIRAIDX"

/// How many times an append that met a duplicate sequence number is tried again.
const AUDIT_RETRIES: usize = 3;

/// An advisory-lock key that serialises migrations across processes.
const MIGRATION_LOCK: i64 = 0x4648_4952_5345_414c; // "FHIRSEAL"

/// The authority's state in a PostgreSQL database.
pub struct PostgresStore {
    /// `None` only once dropped (see the `Drop` impl).
    client: Option<Client>,
    location: String,
}

/// The synchronous client runs a runtime of its own, and closing it inside an async runtime (a
/// gateway dropping its state on a worker thread at shutdown) panics: it is closed on a thread
/// of its own, waited for.
impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = std::thread::spawn(move || drop(client)).join();
        }
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db`; TLS is not used: run it on a trusted
    /// network or a unix socket).
    pub fn connect(url: &str) -> Result<Self, Error> {
        let location = redact(url);
        let client = Client::connect(url, NoTls).map_err(|source| Error::Postgres {
            location: location.clone(),
            source,
        })?;
        Ok(Self {
            client: Some(client),
            location,
        })
    }

    /// The connection (always there until dropped).
    fn client(&mut self) -> Result<&mut Client, Error> {
        self.client
            .as_mut()
            .ok_or_else(|| Error::Invalid("the PostgreSQL connection is closed".into()))
    }

    fn write<T>(
        &mut self,
        f: impl FnOnce(&mut Transaction<'_>, &str) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let location = self.location.clone();
        let err = |source| Error::Postgres {
            location: location.clone(),
            source,
        };
        let mut tx = self.client()?.transaction().map_err(err)?;
        let out = f(&mut tx, &location)?;
        tx.commit().map_err(err)?;
        Ok(out)
    }

    fn err(&self, source: postgres::Error) -> Error {
        Error::Postgres {
            location: self.location.clone(),
            source,
        }
    }
}

fn pg(location: &str) -> impl Fn(postgres::Error) -> Error + '_ {
    move |source| Error::Postgres {
        location: location.to_string(),
        source,
    }
}

/// A row of `seq, time, record, prev, hash` of the audit chain, as both its reads select it.
fn audit_row(
    r: &postgres::Row,
    err: &impl Fn(postgres::Error) -> Error,
) -> Result<RawAuditRecord, Error> {
    Ok(RawAuditRecord {
        seq: r.try_get(0).map_err(err)?,
        time: r.try_get(1).map_err(err)?,
        record: r.try_get::<_, String>(2).map_err(err)?.into_bytes(),
        prev: r.try_get(3).map_err(err)?,
        hash: r.try_get(4).map_err(err)?,
    })
}

impl Store for PostgresStore {
    fn location(&self) -> &str {
        &self.location
    }

    fn reads_without_waiting(&self) -> bool {
        false
    }

    fn commits_in_process(&self) -> bool {
        false
    }

    fn relax_commits(&mut self) -> Result<(), Error> {
        let client = self.client()?;
        let now: Result<String, postgres::Error> = client
            .batch_execute("SET synchronous_commit = off")
            .and_then(|()| client.query_one("SHOW synchronous_commit", &[]))
            .map(|row| row.get(0));
        let now = now.map_err(|e| self.err(e))?;
        if now != "off" {
            return Err(Error::Invalid(format!(
                "{}: synchronous_commit stayed {now} after it was set to off",
                self.location
            )));
        }
        Ok(())
    }

    fn migrate(&mut self) -> Result<(), Error> {
        self.write(|tx, location| {
            let err = pg(location);
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).map_err(&err)?;
            tx.batch_execute("CREATE TABLE IF NOT EXISTS fhirseal_meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL)")
                .map_err(&err)?;
            let found: i64 = tx
                .query_opt("SELECT value FROM fhirseal_meta WHERE key = 'schema_version'", &[])
                .map_err(&err)?
                .map(|r| r.try_get(0))
                .transpose()
                .map_err(&err)?
                .unwrap_or(0);
            if found > SCHEMA_VERSION {
                return Err(Error::SchemaTooNew {
                    location: location.to_string(),
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            for migration in MIGRATIONS.iter().skip(usize::try_from(found).unwrap_or(0)) {
                tx.batch_execute(migration).map_err(&err)?;
            }
            if found < AUDIT_INDEX_VERSION {
                index_chain(tx, location)?;
            }
            tx.execute(
                "INSERT INTO fhirseal_meta (key, value) VALUES ('schema_version', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&SCHEMA_VERSION],
            )
            .map_err(&err)?;
            Ok(())
        })
    }

    fn master(&mut self) -> Result<Option<MasterRecord>, Error> {
        let row = self
            .client()?
            .query_opt(
                "SELECT user_depth, time_depth, period_seconds, epoch, public_params, sealed_secret FROM master",
                &[],
            )
            .map_err(|e| self.err(e))?;
        let err = pg(&self.location);
        row.map(|r| {
            Ok(MasterRecord {
                user_depth: u8::try_from(r.try_get::<_, i32>(0).map_err(&err)?)
                    .map_err(|_| corrupt("master record", "user depth"))?,
                time_depth: u8::try_from(r.try_get::<_, i32>(1).map_err(&err)?)
                    .map_err(|_| corrupt("master record", "time depth"))?,
                period_seconds: u64::try_from(r.try_get::<_, i64>(2).map_err(&err)?)
                    .map_err(|_| corrupt("master record", "period length"))?,
                epoch: r.try_get(3).map_err(&err)?,
                public_params: r.try_get(4).map_err(&err)?,
                sealed_secret: r.try_get(5).map_err(&err)?,
            })
        })
        .transpose()
    }

    fn create_master(&mut self, m: &MasterRecord) -> Result<(), Error> {
        self.write(|tx, location| {
            let err = pg(location);
            tx.execute("LOCK TABLE master IN EXCLUSIVE MODE", &[]).map_err(&err)?;
            if tx.query_opt("SELECT id FROM master", &[]).map_err(&err)?.is_some() {
                return Err(Error::AlreadyInitialised {
                    location: location.to_string(),
                });
            }
            tx.execute(
                "INSERT INTO master (id, user_depth, time_depth, period_seconds, epoch, public_params, sealed_secret)
                 VALUES (1, $1, $2, $3, $4, $5, $6)",
                &[
                    &i32::from(m.user_depth),
                    &i32::from(m.time_depth),
                    &(m.period_seconds as i64),
                    &m.epoch,
                    &m.public_params,
                    &m.sealed_secret,
                ],
            )
            .map_err(&err)?;
            set_key_layout(tx, &err)
        })
    }

    fn key_layout(&mut self) -> Result<Option<u64>, Error> {
        let location = self.location.clone();
        let err = pg(&location);
        layout_of(self.client()?, &err)
    }

    fn reissue_keys(&mut self, plan: KeyReissue<'_>) -> Result<Option<KeyMigration>, Error> {
        self.write(|tx, location| reissue_in(tx, plan, location))
    }

    fn principal(&mut self, kind: Kind, name: &str) -> Result<Option<Principal>, Error> {
        let row = self
            .client()?
            .query_opt(
                &format!("{SELECT} WHERE kind = $1 AND name = $2"),
                &[&kind.as_str(), &name],
            )
            .map_err(|e| self.err(e))?;
        row.map(|r| raw(&r).map_err(pg(&self.location))?.check())
            .transpose()
    }

    fn principals(&mut self, kind: Kind) -> Result<Vec<Principal>, Error> {
        let rows = self
            .client()?
            .query(
                &format!("{SELECT} WHERE kind = $1 ORDER BY leaf"),
                &[&kind.as_str()],
            )
            .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| raw(r).map_err(pg(&self.location))?.check())
            .collect()
    }

    fn insert_principal(
        &mut self,
        kind: Kind,
        name: &str,
        issuer: Option<&str>,
        max_leaves: u64,
        make: &mut MakePrincipal<'_>,
    ) -> Result<Principal, Error> {
        self.write(|tx, location| {
            let err = pg(location);
            // Registry writers (issuance, revocation) run one at a time, across processes and
            // replicas; the counter row's lock guards the leaf counter as well.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&REGISTRY_LOCK]).map_err(&err)?;
            let leaf: i64 = tx
                .query_one("SELECT value FROM fhirseal_meta WHERE key = 'next_leaf' FOR UPDATE", &[])
                .and_then(|r| r.try_get(0))
                .map_err(&err)?;
            if tx
                .query_opt("SELECT leaf FROM principals WHERE kind = $1 AND name = $2", &[&kind.as_str(), &name])
                .map_err(&err)?
                .is_some()
            {
                return Err(Error::AlreadyRegistered {
                    kind: kind.as_str(),
                    name: name.to_string(),
                });
            }
            let leaf = u64::try_from(leaf).map_err(|_| corrupt("leaf counter", "negative"))?;
            if leaf >= max_leaves {
                return Err(Error::LeavesExhausted(max_leaves));
            }
            let issuer = match issuer {
                None => None,
                Some(i) => {
                    let row = tx
                        .query_opt(&format!("{SELECT} WHERE kind = 'authority' AND name = $1"), &[&i])
                        .map_err(&err)?
                        .ok_or_else(|| Error::UnknownPrincipal {
                            kind: Kind::Authority.as_str(),
                            name: i.to_string(),
                        })?;
                    Some(raw(&row).map_err(&err)?.check()?)
                }
            };
            let new = make(leaf, issuer.as_ref())?;
            tx.execute(
                "INSERT INTO principals (kind, name, leaf, attributes, parent, revoked_at, sealed_key, created_at)
                 VALUES ($1, $2, $3, $4, $5, NULL, $6, $7)",
                &[
                    &kind.as_str(),
                    &name,
                    &(leaf as i64),
                    &attributes_to_text(&new.attributes),
                    &new.parent,
                    &new.sealed_key,
                    &new.created_at,
                ],
            )
            .map_err(&err)?;
            tx.execute("UPDATE fhirseal_meta SET value = value + 1 WHERE key = 'next_leaf'", &[]).map_err(&err)?;
            Ok(new.into_principal(kind, name, leaf))
        })
    }

    fn revoke_subtree(
        &mut self,
        kind: Kind,
        name: &str,
        period: u64,
    ) -> Result<Vec<(Kind, String)>, Error> {
        self.write(|tx, location| {
            let err = pg(location);
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&REGISTRY_LOCK]).map_err(&err)?;
            let all = tx
                .query(SELECT, &[])
                .map_err(&err)?
                .iter()
                .map(|r| raw(r).map_err(&err)?.check())
                .collect::<Result<Vec<_>, _>>()?;
            let targets = subtree(kind, name, &all)?;
            for (kind, name) in &targets {
                tx.execute(
                    "UPDATE principals SET revoked_at = $1 WHERE kind = $2 AND name = $3 AND revoked_at IS NULL",
                    &[&(period as i64), &kind.as_str(), name],
                )
                .map_err(&err)?;
            }
            tx.execute("UPDATE fhirseal_meta SET value = value + 1 WHERE key = 'revocation_version'", &[])
                .map_err(&err)?;
            Ok(targets)
        })
    }

    fn revoked_leaves(&mut self) -> Result<Vec<(u64, u64)>, Error> {
        let rows = self
            .client()?
            .query("SELECT leaf, revoked_at FROM principals WHERE revoked_at IS NOT NULL ORDER BY leaf", &[])
            .map_err(|e| self.err(e))?;
        let err = pg(&self.location);
        rows.iter()
            .map(|r| {
                let leaf = u64::try_from(r.try_get::<_, i64>(0).map_err(&err)?)
                    .map_err(|_| corrupt("leaf", "negative"))?;
                let period = u64::try_from(r.try_get::<_, i64>(1).map_err(&err)?)
                    .map_err(|_| corrupt("period", "negative"))?;
                Ok((leaf, period))
            })
            .collect()
    }

    fn counters(&mut self) -> Result<Counters, Error> {
        let rows = self
            .client()?
            .query("SELECT key, value FROM fhirseal_meta", &[])
            .map_err(|e| self.err(e))?;
        let pairs = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<_>, postgres::Error>>()
            .map_err(pg(&self.location))?;
        counters_from(pairs)
    }

    fn advance_period(&mut self, now: i64, not_after: Option<i64>) -> Result<u64, Error> {
        self.write(|tx, location| advance_offset(tx, now, not_after, &pg(location)))
    }

    fn key_update(&mut self, period: u64) -> Result<Option<(u64, Vec<u8>)>, Error> {
        let row = self
            .client()?
            .query_opt(
                "SELECT version, bytes FROM key_updates WHERE period = $1",
                &[&(period as i64)],
            )
            .map_err(|e| self.err(e))?;
        let err = pg(&self.location);
        row.map(|r| {
            let v = u64::try_from(r.try_get::<_, i64>(0).map_err(&err)?)
                .map_err(|_| corrupt("key update", "version"))?;
            Ok((v, r.try_get(1).map_err(&err)?))
        })
        .transpose()
    }

    fn put_key_update(&mut self, period: u64, version: u64, bytes: &[u8]) -> Result<(), Error> {
        self.write(|tx, location| {
            tx.execute(
                "INSERT INTO key_updates (period, version, bytes) VALUES ($1, $2, $3)
                 ON CONFLICT (period) DO UPDATE SET version = excluded.version, bytes = excluded.bytes",
                &[&(period as i64), &(version as i64), &bytes],
            )
            .map_err(pg(location))?;
            Ok(())
        })
    }

    fn secret(&mut self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        let row = self
            .client()?
            .query_opt("SELECT bytes FROM secrets WHERE name = $1", &[&name])
            .map_err(|e| self.err(e))?;
        row.map(|r| r.try_get(0))
            .transpose()
            .map_err(pg(&self.location))
    }

    fn insert_secret_if_absent(&mut self, name: &str, bytes: &[u8]) -> Result<Vec<u8>, Error> {
        self.write(|tx, location| {
            let err = pg(location);
            // Concurrent inserts of one name: the loser's INSERT waits for the winner's commit,
            // then does nothing, and its SELECT (a new snapshot under READ COMMITTED) sees the
            // winner's row.
            tx.execute(
                "INSERT INTO secrets (name, bytes) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &bytes],
            )
            .map_err(&err)?;
            tx.query_one("SELECT bytes FROM secrets WHERE name = $1", &[&name])
                .and_then(|r| r.try_get(0))
                .map_err(&err)
        })
    }

    fn start_update_job(&mut self, target_period: u64, now: i64) -> Result<JobId, Error> {
        self.write(|tx, location| start_job_in(tx, target_period, now, &pg(location)))
    }

    fn add_chunks(&mut self, job: JobId, keys: &[String]) -> Result<u64, Error> {
        jobs::check_keys(keys)?;
        self.write(|tx, location| add_chunks_in(tx, job, keys, &pg(location)))
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
        self.write(|tx, location| {
            let err = pg(location);
            job_finished_at(tx, job, "", &err)?;
            // A chunk another claimer has locked is skipped; one it claimed and committed since
            // this statement's snapshot is re-checked against the condition and skipped too.
            let row = tx
                .query_opt(
                    "SELECT key FROM update_chunks
                     WHERE job_id = $1 AND state <> 'done'
                       AND (state = 'pending' OR (state = 'claimed' AND lease_until <= $2))
                     ORDER BY attempts, seq LIMIT 1
                     FOR UPDATE SKIP LOCKED",
                    &[&id, &now],
                )
                .map_err(&err)?;
            let Some(row) = row else {
                return Ok(None);
            };
            let key: String = row.try_get(0).map_err(&err)?;
            let attempts: i32 = tx
                .query_one(
                    "UPDATE update_chunks
                     SET state = 'claimed', claimed_by = $3, lease_until = $4, attempts = attempts + 1
                     WHERE job_id = $1 AND key = $2 RETURNING attempts",
                    &[&id, &key, &worker, &until],
                )
                .and_then(|r| r.try_get(0))
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
            "UPDATE update_chunks SET state = 'done', lease_until = NULL, moved = $4
             WHERE job_id = $1 AND key = $2 AND state = 'claimed' AND claimed_by = $3",
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
             WHERE job_id = $1 AND key = $2 AND state = 'claimed' AND claimed_by = $3",
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
            "UPDATE update_chunks SET lease_until = $4
             WHERE job_id = $1 AND key = $2 AND state = 'claimed' AND claimed_by = $3",
            Some(until),
        )
    }

    fn job_progress(&mut self, job: JobId) -> Result<Progress, Error> {
        let id = job.to_db()?;
        let row = self
            .client()?
            .query_opt(PROGRESS, &[&id])
            .map_err(|e| self.err(e))?
            .ok_or(Error::UnknownJob { job: job.get() })?;
        raw_progress(&row).map_err(pg(&self.location))?.check()
    }

    fn finish_job_if_done(&mut self, job: JobId, now: i64) -> Result<bool, Error> {
        let id = job.to_db()?;
        self.write(|tx, location| {
            let err = pg(location);
            if job_finished_at(tx, job, "FOR UPDATE", &err)?.is_some() {
                return Ok(true);
            }
            let (total, open): (i64, i64) = tx
                .query_one(
                    "SELECT COUNT(*), COUNT(CASE WHEN state <> 'done' THEN 1 END)
                     FROM update_chunks WHERE job_id = $1",
                    &[&id],
                )
                .and_then(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .map_err(&err)?;
            if total == 0 || open > 0 {
                return Ok(false);
            }
            tx.execute(
                "UPDATE update_jobs SET finished_at = $2 WHERE id = $1",
                &[&id, &now],
            )
            .map_err(&err)?;
            Ok(true)
        })
    }

    fn latest_update_job(&mut self) -> Result<Option<(JobId, Progress)>, Error> {
        let row = self
            .client()?
            .query_opt("SELECT id FROM update_jobs ORDER BY id DESC LIMIT 1", &[])
            .map_err(|e| self.err(e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let id: i64 = row.try_get(0).map_err(|e| self.err(e))?;
        let job = JobId::from_db(id)?;
        Ok(Some((job, self.job_progress(job)?)))
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
        // A concurrent taker's insert of the same key is waited for, and its row re-checked.
        let taken = self
            .client()?
            .execute(leases::TAKE, &[&key, &holder, &until, &now])
            .map_err(|e| self.err(e))?;
        Ok(taken == 1)
    }

    fn release_lease(&mut self, key: &str, holder: &str, now: i64) -> Result<(), Error> {
        leases::check(key, holder)?;
        self.client()?
            .execute(leases::RELEASE, &[&key, &holder, &now])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn append_audit(
        &mut self,
        entries: &[AuditEntry<'_>],
        checkpoint: &mut SignCheckpoint<'_>,
    ) -> Result<ChainTail, Error> {
        // The advisory lock makes appenders take turns; the `seq` primary key stands behind it,
        // and an append that still meets a taken sequence number (a writer that does not take
        // the lock) is tried again on the new tail.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.write(|tx, location| append_audit_in(tx, location, entries, checkpoint)) {
                Err(Error::Postgres { source, .. })
                    if attempt < AUDIT_RETRIES
                        && source.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION) => {}
                other => return other,
            }
        }
    }

    fn index_audit(&mut self, limit: u32) -> Result<u32, Error> {
        self.write(|tx, location| {
            // Indexers take turns (each reads the mark the last one left); appenders do not
            // wait for them, and commit in sequence order under their own lock, so what an
            // indexer reads of the chain is a prefix of it.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_INDEX_LOCK])
                .map_err(pg(location))?;
            tx.batch_execute("SET LOCAL synchronous_commit = off")
                .map_err(pg(location))?;
            index_next(tx, limit, location)
        })
    }

    fn audit_records(&mut self, after: u64, limit: u32) -> Result<Vec<RawAuditRecord>, Error> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = self
            .client()?
            .query(
                "SELECT seq, time, record, prev, hash FROM audit_chain WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after, &i64::from(limit)],
            )
            .map_err(|e| self.err(e))?;
        let err = pg(&self.location);
        rows.iter().map(|r| audit_row(r, &err)).collect()
    }

    fn audit_search(&mut self, query: &AuditQuery) -> Result<Vec<RawAuditRecord>, Error> {
        let (sql, values) = index::search_sql(query, |i| format!("${i}"));
        let values: Vec<Box<dyn ToSql + Sync>> = values
            .into_iter()
            .map(|v| -> Box<dyn ToSql + Sync> {
                match v {
                    Bound::Text(t) => Box::new(t),
                    Bound::Int(i) => Box::new(i),
                }
            })
            .collect();
        let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| &**v).collect();
        let rows = self
            .client()?
            .query(&sql, &params)
            .map_err(|e| self.err(e))?;
        let err = pg(&self.location);
        rows.iter().map(|r| audit_row(r, &err)).collect()
    }

    fn audit_checkpoints(&mut self) -> Result<Vec<RawCheckpoint>, Error> {
        let rows = self
            .client()?
            .query(
                "SELECT seq, hash, time, signature FROM audit_checkpoints ORDER BY seq",
                &[],
            )
            .map_err(|e| self.err(e))?;
        let err = pg(&self.location);
        rows.iter()
            .map(|r| {
                Ok(RawCheckpoint {
                    seq: r.try_get(0).map_err(&err)?,
                    hash: r.try_get(1).map_err(&err)?,
                    time: r.try_get(2).map_err(&err)?,
                    signature: r.try_get(3).map_err(&err)?,
                })
            })
            .collect()
    }
}

/// [`Store::append_audit`] inside its transaction, under [`AUDIT_LOCK`].
fn append_audit_in(
    tx: &mut Transaction<'_>,
    location: &str,
    entries: &[AuditEntry<'_>],
    checkpoint: &mut SignCheckpoint<'_>,
) -> Result<ChainTail, Error> {
    let err = pg(location);
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])
        .map_err(&err)?;
    let tail = tx
        .query_opt(
            "SELECT seq, hash, time FROM audit_chain ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .map_err(&err)?
        .map(|r| Ok::<_, postgres::Error>((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .transpose()
        .map_err(&err)?;
    let (tail, records) = link::link(tail, entries)?;
    let full = || Error::Invalid("the audit chain is full".into());
    if !records.is_empty() {
        let insert = tx
            .prepare("INSERT INTO audit_chain (seq, time, record, prev, hash) VALUES ($1, $2, $3, $4, $5)")
            .map_err(&err)?;
        for r in &records {
            let seq = i64::try_from(r.seq).map_err(|_| full())?;
            tx.execute(
                &insert,
                &[&seq, &r.time, &r.record, &&r.prev[..], &&r.hash[..]],
            )
            .map_err(&err)?;
        }
    }
    let last = tx
        .query_opt(
            "SELECT seq, hash, time FROM audit_checkpoints ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .map_err(&err)?
        .map(|r| Ok::<_, postgres::Error>((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .transpose()
        .map_err(&err)?;
    let last = link::last_checkpoint(last)?;
    if let Some(signature) = checkpoint(&tail, last.as_ref())? {
        let seq = i64::try_from(tail.seq).map_err(|_| full())?;
        tx.execute(
            "INSERT INTO audit_checkpoints (seq, hash, time, signature) VALUES ($1, $2, $3, $4)
             ON CONFLICT (seq) DO NOTHING",
            &[&seq, &&tail.hash[..], &tail.time, &signature],
        )
        .map_err(&err)?;
    }
    Ok(tail)
}

/// Writes the index rows of `records` (`(seq, time, line)`, [`index::index_of`]) in one
/// statement: one round trip per page of records, however many terms.
fn index_records<'a>(
    tx: &mut Transaction<'_>,
    records: impl IntoIterator<Item = (i64, i64, &'a str)>,
    location: &str,
) -> Result<(), Error> {
    let (mut terms, mut seqs, mut recorded) = (Vec::new(), Vec::new(), Vec::new());
    for (seq, time, record) in records {
        let entry = index::index_of(record, time);
        for term in entry.terms {
            terms.push(term);
            seqs.push(seq);
            recorded.push(entry.recorded);
        }
    }
    if terms.is_empty() {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO audit_index (term, seq, recorded)
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) ON CONFLICT DO NOTHING",
        &[&terms, &seqs, &recorded],
    )
    .map_err(pg(location))?;
    Ok(())
}

/// Indexes every record of the chain (the upgrade to [`AUDIT_INDEX_VERSION`]), a page at a time,
/// whatever the mark says (the upgrade to version 8 has set it to the tail already).
fn index_chain(tx: &mut Transaction<'_>, location: &str) -> Result<(), Error> {
    let mut after = 0;
    while let (_, Some(last)) = index_page(tx, after, 1000, location)? {
        after = last;
    }
    Ok(())
}

/// Indexes up to `limit` records after the index's mark (`audit_indexed` in `fhirseal_meta`), in
/// order, inside `tx`, and moves the mark past them; how many.
fn index_next(tx: &mut Transaction<'_>, limit: u32, location: &str) -> Result<u32, Error> {
    let err = pg(location);
    let mark: i64 = tx
        .query_opt(
            "SELECT value FROM fhirseal_meta WHERE key = 'audit_indexed'",
            &[],
        )
        .map_err(&err)?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(&err)?
        .unwrap_or(0);
    let (indexed, Some(last)) = index_page(tx, mark, limit, location)? else {
        return Ok(0);
    };
    tx.execute(
        "INSERT INTO fhirseal_meta (key, value) VALUES ('audit_indexed', $1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[&last],
    )
    .map_err(&err)?;
    Ok(indexed)
}

/// Indexes up to `limit` records with a sequence number above `after`, in order, inside `tx`:
/// how many, and the last one's sequence number (`None` when there was none).
fn index_page(
    tx: &mut Transaction<'_>,
    after: i64,
    limit: u32,
    location: &str,
) -> Result<(u32, Option<i64>), Error> {
    let rows = tx
        .query(
            "SELECT seq, time, record FROM audit_chain WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[&after, &i64::from(limit)],
        )
        .map_err(pg(location))?;
    let page = rows
        .iter()
        .map(|r| {
            Ok((
                r.try_get::<_, i64>(0)?,
                r.try_get::<_, i64>(1)?,
                r.try_get::<_, String>(2)?,
            ))
        })
        .collect::<Result<Vec<_>, postgres::Error>>()
        .map_err(pg(location))?;
    index_records(
        tx,
        page.iter()
            .map(|(seq, time, record)| (*seq, *time, record.as_str())),
        location,
    )?;
    let indexed = u32::try_from(page.len()).unwrap_or(u32::MAX);
    Ok((indexed, page.last().map(|(seq, _, _)| *seq)))
}

impl PostgresStore {
    /// Runs `sql` (a write on the chunk `$2` of job `$1` guarded by `claimed_by = $3`, with `$4`
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
        self.write(|tx, location| {
            let err = pg(location);
            let params: Vec<&(dyn ToSql + Sync)> = match &extra {
                Some(v) => vec![&id, &key, &worker, v],
                None => vec![&id, &key, &worker],
            };
            // A concurrent claim of the chunk by another worker (its lease having expired) is
            // waited for, and the row it left is re-checked: this write then matches nothing.
            if tx.execute(sql, &params).map_err(&err)? == 1 {
                return Ok(());
            }
            job_finished_at(tx, job, "", &err)?;
            let holder = tx
                .query_opt(
                    "SELECT state, claimed_by FROM update_chunks WHERE job_id = $1 AND key = $2",
                    &[&id, &key],
                )
                .map_err(&err)?
                .map(|r| {
                    Ok(ChunkHolder {
                        state: r.try_get(0)?,
                        claimed_by: r.try_get(1)?,
                    })
                })
                .transpose()
                .map_err(&err)?;
            jobs::refused(job, key, worker, holder, done_is_ok)
        })
    }
}

/// [`Store::reissue_keys`] inside its transaction, under the registry lock.
fn reissue_in(
    tx: &mut Transaction<'_>,
    plan: KeyReissue<'_>,
    location: &str,
) -> Result<Option<KeyMigration>, Error> {
    jobs::check_keys(plan.job_chunks)?;
    let err = &pg(location);
    // Registry writers wait; a second migration waits here, then finds the layout current.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&REGISTRY_LOCK])
        .map_err(err)?;
    if layout_of(tx, err)? == Some(KEY_LAYOUT) {
        return Ok(None);
    }
    let changed = tx
        .execute(
            "UPDATE master SET sealed_secret = $1",
            &[&plan.sealed_secret],
        )
        .map_err(err)?;
    if changed != 1 {
        return Err(Error::NotInitialised {
            location: location.to_string(),
        });
    }
    let mut done = reissue_principals(tx, plan.reissue, err)?;
    done.key_updates_deleted = tx.execute("DELETE FROM key_updates", &[]).map_err(err)?;
    done.period = (plan.period_at)(advance_offset(tx, plan.now, None, err)?)?;
    if !plan.job_chunks.is_empty() {
        let job = start_job_in(tx, done.period, plan.now, err)?;
        // A job for that period finished already is left as it is.
        if job_finished_at(tx, job, "FOR UPDATE", err)?.is_none() {
            add_chunks_in(tx, job, plan.job_chunks, err)?;
        }
        done.job = Some(job);
    }
    set_key_layout(tx, err)?;
    Ok(Some(done))
}

/// Gives every principal the key `reissue` makes for it, or destroys its key (an empty record).
fn reissue_principals(
    tx: &mut Transaction<'_>,
    reissue: &mut ReissueKey<'_>,
    err: &impl Fn(postgres::Error) -> Error,
) -> Result<KeyMigration, Error> {
    let mut done = KeyMigration::empty();
    let all = tx
        .query(&format!("{SELECT} ORDER BY leaf"), &[])
        .map_err(err)?
        .iter()
        .map(|r| raw(r).map_err(err)?.check())
        .collect::<Result<Vec<_>, _>>()?;
    for p in all {
        let key = reissue(&p)?;
        done.count(p.kind, key.is_some());
        tx.execute(
            "UPDATE principals SET sealed_key = $1 WHERE kind = $2 AND name = $3",
            &[&key.unwrap_or_default(), &p.kind.as_str(), &p.name],
        )
        .map_err(err)?;
    }
    Ok(done)
}

/// Adds one to the period offset and records `now` as the last advance by hand, unless
/// `not_after` is given and the last one was recorded after it; the new offset. The offset's row
/// is updated first: it stays locked until the transaction ends, so a concurrent advance waits
/// and then reads (a new statement, a new snapshot) the time this one recorded.
fn advance_offset(
    tx: &mut Transaction<'_>,
    now: i64,
    not_after: Option<i64>,
    err: &impl Fn(postgres::Error) -> Error,
) -> Result<u64, Error> {
    let offset: i64 = tx
        .query_one(
            "UPDATE fhirseal_meta SET value = value + 1 WHERE key = 'period_offset' RETURNING value",
            &[],
        )
        .and_then(|r| r.try_get(0))
        .map_err(err)?;
    let last: Option<i64> = tx
        .query_opt(
            "SELECT value FROM fhirseal_meta WHERE key = 'period_advanced_at'",
            &[],
        )
        .and_then(|row| row.map(|r| r.try_get(0)).transpose())
        .map_err(err)?;
    // Returning the error rolls the transaction back, the offset's increment with it.
    check_advance_pace(last, not_after, now)?;
    tx.execute(
        "INSERT INTO fhirseal_meta (key, value) VALUES ('period_advanced_at', $1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[&now],
    )
    .map_err(err)?;
    u64::try_from(offset).map_err(|_| corrupt("period offset", "negative"))
}

/// The recorded key layout.
fn layout_of(
    client: &mut impl GenericClient,
    err: &impl Fn(postgres::Error) -> Error,
) -> Result<Option<u64>, Error> {
    let layout: Option<i64> = client
        .query_opt(
            "SELECT value FROM fhirseal_meta WHERE key = 'key_layout'",
            &[],
        )
        .map_err(err)?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(err)?;
    layout
        .map(|l| u64::try_from(l).map_err(|_| corrupt("key layout", "negative")))
        .transpose()
}

/// Marks the stored keys [`KEY_LAYOUT`].
fn set_key_layout(
    tx: &mut Transaction<'_>,
    err: &impl Fn(postgres::Error) -> Error,
) -> Result<(), Error> {
    tx.execute(
        "INSERT INTO fhirseal_meta (key, value) VALUES ('key_layout', $1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[&(KEY_LAYOUT as i64)],
    )
    .map_err(err)?;
    Ok(())
}

/// [`Store::start_update_job`] inside a transaction.
fn start_job_in(
    tx: &mut Transaction<'_>,
    target_period: u64,
    now: i64,
    err: &impl Fn(postgres::Error) -> Error,
) -> Result<JobId, Error> {
    let period = jobs::to_db(target_period, "period")?;
    // Concurrent starts of one period: the loser's INSERT waits for the winner's commit, then
    // does nothing, and its SELECT sees the winner's row (as for secrets).
    tx.execute(
        "INSERT INTO update_jobs (target_period, created_at) VALUES ($1, $2)
         ON CONFLICT (target_period) DO NOTHING",
        &[&period, &now],
    )
    .map_err(err)?;
    let id: i64 = tx
        .query_one(
            "SELECT id FROM update_jobs WHERE target_period = $1",
            &[&period],
        )
        .and_then(|r| r.try_get(0))
        .map_err(err)?;
    JobId::from_db(id)
}

/// [`Store::add_chunks`] inside a transaction (its keys checked); on [`Error::JobFinished`] the
/// caller must not commit.
fn add_chunks_in(
    tx: &mut Transaction<'_>,
    job: JobId,
    keys: &[String],
    err: &impl Fn(postgres::Error) -> Error,
) -> Result<u64, Error> {
    let id = job.to_db()?;
    // FOR SHARE: adders run together, but not beside `finish_job_if_done` (FOR UPDATE), so a
    // job is never marked finished while chunks are being added to it.
    let finished = job_finished_at(tx, job, "FOR SHARE", err)?.is_some();
    let added = tx
        .execute(
            "INSERT INTO update_chunks (job_id, key, state)
             SELECT $1, k, 'pending' FROM unnest($2::text[]) WITH ORDINALITY AS t (k, n)
             ORDER BY n
             ON CONFLICT (job_id, key) DO NOTHING",
            &[&id, &keys],
        )
        .map_err(err)?;
    if finished && added > 0 {
        // The caller drops the transaction uncommitted: nothing is added.
        return Err(Error::JobFinished { job: job.get() });
    }
    Ok(added)
}

/// The job's `finished_at` (its row locked by `lock`, if not empty), or [`Error::UnknownJob`].
fn job_finished_at(
    tx: &mut Transaction<'_>,
    job: JobId,
    lock: &str,
    err: &impl Fn(postgres::Error) -> Error,
) -> Result<Option<i64>, Error> {
    tx.query_opt(
        &format!("SELECT finished_at FROM update_jobs WHERE id = $1 {lock}"),
        &[&job.to_db()?],
    )
    .map_err(err)?
    .ok_or(Error::UnknownJob { job: job.get() })?
    .try_get(0)
    .map_err(err)
}

const PROGRESS: &str = "SELECT j.target_period, j.created_at, j.finished_at, COUNT(c.key),
        COUNT(CASE WHEN c.state = 'done' THEN 1 END),
        COUNT(CASE WHEN c.state = 'claimed' THEN 1 END),
        COALESCE(SUM(CASE WHEN c.state = 'done' THEN c.moved ELSE 0 END), 0)::BIGINT
    FROM update_jobs j LEFT JOIN update_chunks c ON c.job_id = j.id
    WHERE j.id = $1 GROUP BY j.id";

fn raw_progress(r: &postgres::Row) -> Result<RawProgress, postgres::Error> {
    Ok(RawProgress {
        target_period: r.try_get(0)?,
        created_at: r.try_get(1)?,
        finished_at: r.try_get(2)?,
        total: r.try_get(3)?,
        done: r.try_get(4)?,
        claimed: r.try_get(5)?,
        moved: r.try_get(6)?,
    })
}

const SELECT: &str = "SELECT kind, name, leaf, attributes, parent, revoked_at, sealed_key, created_at FROM principals";

fn raw(r: &postgres::Row) -> Result<RawPrincipal, postgres::Error> {
    Ok(RawPrincipal {
        kind: r.try_get(0)?,
        name: r.try_get(1)?,
        leaf: r.try_get(2)?,
        attributes: r.try_get(3)?,
        parent: r.try_get(4)?,
        revoked_at: r.try_get(5)?,
        sealed_key: r.try_get(6)?,
        created_at: r.try_get(7)?,
    })
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}@{}", &url[..scheme + 3], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            super::redact("postgres://fhir:s3cret@db:5432/a"),
            "postgres://fhir@db:5432/a"
        );
        assert_eq!(super::redact("postgres://db/a"), "postgres://db/a");
    }
}
