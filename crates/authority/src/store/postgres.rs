//! The PostgreSQL backend: one authority shared by several gateway replicas.

use postgres::{Client, NoTls, Transaction};

use super::{
    Counters, Kind, MakePrincipal, MasterRecord, Principal, RawPrincipal, SCHEMA_VERSION, Store,
    attributes_to_text, corrupt, counters_from, subtree,
};
use crate::Error;

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
];

/// An advisory-lock key that serialises registry writers (issuance and revocation).
const REGISTRY_LOCK: i64 = 0x4648_4952_5245_4749; // "FHIRREGI"

/// An advisory-lock key that serialises migrations across processes.
const MIGRATION_LOCK: i64 = 0x4648_4952_5345_414c; // "FHIRSEAL"

/// The authority's state in a PostgreSQL database.
pub struct PostgresStore {
    client: Client,
    location: String,
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
        Ok(Self { client, location })
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
        let mut tx = self.client.transaction().map_err(err)?;
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

impl Store for PostgresStore {
    fn location(&self) -> &str {
        &self.location
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
            .client
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
            Ok(())
        })
    }

    fn principal(&mut self, kind: Kind, name: &str) -> Result<Option<Principal>, Error> {
        let row = self
            .client
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
            .client
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
            .client
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
            .client
            .query("SELECT key, value FROM fhirseal_meta", &[])
            .map_err(|e| self.err(e))?;
        let pairs = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<_>, postgres::Error>>()
            .map_err(pg(&self.location))?;
        counters_from(pairs)
    }

    fn advance_period(&mut self) -> Result<u64, Error> {
        self.write(|tx, location| {
            let v: i64 = tx
                .query_one("UPDATE fhirseal_meta SET value = value + 1 WHERE key = 'period_offset' RETURNING value", &[])
                .and_then(|r| r.try_get(0))
                .map_err(pg(location))?;
            u64::try_from(v).map_err(|_| corrupt("period offset", "negative"))
        })
    }

    fn key_update(&mut self, period: u64) -> Result<Option<(u64, Vec<u8>)>, Error> {
        let row = self
            .client
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
            .client
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
