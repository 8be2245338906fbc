//! What the authority's tests share, each once: a fresh database on each backend, raw SQL on it
//! around the store (to take it back to an older schema, or to corrupt a record), and a small
//! authority in it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use fhirseal_authority::{Authority, InitOptions, Kek, Store, store};
use rand_core::OsRng;
use rshabe::Params;

/// The tests' clock: seconds since the Unix epoch.
pub(crate) const NOW: i64 = 1_800_000_000;
/// A period's length.
pub(crate) const DAY: i64 = 86_400;
/// The key-encryption key of the tests' authorities, as hex.
pub(crate) const KEK: &str = "0101010101010101010101010101010101010101010101010101010101010101";
/// Another key-encryption key, which opens none of them.
pub(crate) const OTHER_KEK: &str =
    "0202020202020202020202020202020202020202020202020202020202020202";

/// A fresh, empty database on one backend.
pub(crate) struct Db {
    /// `"sqlite"` or `"postgres"`.
    pub(crate) backend: &'static str,
    /// What [`store::open`] takes.
    pub(crate) url: String,
    _dir: Option<tempfile::TempDir>,
}

/// A fresh database on each backend.
pub(crate) fn backends() -> [Db; 2] {
    [sqlite(), postgres()]
}

/// A fresh SQLite database in a temporary folder.
pub(crate) fn sqlite() -> Db {
    let dir = tempfile::tempdir().unwrap();
    Db {
        backend: "sqlite",
        url: format!("sqlite:{}", dir.path().join("authority.sqlite3").display()),
        _dir: Some(dir),
    }
}

/// A fresh database of its own on the PostgreSQL server of `FHIRSEAL_TEST_POSTGRES_URL`.
pub(crate) fn postgres() -> Db {
    static N: AtomicU32 = AtomicU32::new(0);
    let base = std::env::var("FHIRSEAL_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "FHIRSEAL_TEST_POSTGRES_URL is not set: run the tests with scripts/test, which starts a real \
             PostgreSQL server (PostgreSQL tests are never skipped)"
        )
    });
    let name = format!(
        "authority_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let mut admin = postgres::Client::connect(&base, postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    Db {
        backend: "postgres",
        url: format!("{prefix}/{name}"),
        _dir: None,
    }
}

impl Db {
    /// The store on this database.
    pub(crate) fn open(&self) -> Box<dyn Store> {
        store::open(&self.url).unwrap()
    }

    fn sqlite(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.url.strip_prefix("sqlite:").unwrap()).unwrap()
    }

    fn postgres(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).unwrap()
    }

    /// Runs raw SQL statements on the database, outside the store.
    pub(crate) fn execute(&self, sql: &str) {
        match self.backend {
            "sqlite" => self.sqlite().execute_batch(sql).unwrap(),
            _ => self.postgres().batch_execute(sql).unwrap(),
        }
    }

    /// The one integer `sql` returns.
    pub(crate) fn number(&self, sql: &str) -> i64 {
        match self.backend {
            "sqlite" => self.sqlite().query_row(sql, [], |r| r.get(0)).unwrap(),
            _ => self.postgres().query_one(sql, &[]).unwrap().get(0),
        }
    }

    /// The schema version the database records.
    pub(crate) fn schema_version(&self) -> i64 {
        self.number("SELECT value FROM fhirseal_meta WHERE key = 'schema_version'")
    }

    /// The master secret's record, sealed.
    pub(crate) fn sealed_secret(&self) -> Vec<u8> {
        let sql = "SELECT sealed_secret FROM master";
        match self.backend {
            "sqlite" => self.sqlite().query_row(sql, [], |r| r.get(0)).unwrap(),
            _ => self.postgres().query_one(sql, &[]).unwrap().get(0),
        }
    }

    /// Replaces the master secret's record with `bytes`.
    pub(crate) fn set_sealed_secret(&self, bytes: &[u8]) {
        match self.backend {
            "sqlite" => {
                self.sqlite()
                    .execute("UPDATE master SET sealed_secret = ?1", [bytes])
                    .unwrap();
            }
            _ => {
                self.postgres()
                    .execute("UPDATE master SET sealed_secret = $1", &[&bytes])
                    .unwrap();
            }
        }
    }

    /// The named secret `name` as stored, sealed.
    pub(crate) fn stored_secret(&self, name: &str) -> Vec<u8> {
        match self.backend {
            "sqlite" => self
                .sqlite()
                .query_row("SELECT bytes FROM secrets WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .unwrap(),
            _ => self
                .postgres()
                .query_one("SELECT bytes FROM secrets WHERE name = $1", &[&name])
                .unwrap()
                .get(0),
        }
    }

    /// Every principal's sealed key, by name.
    pub(crate) fn sealed_keys(&self) -> BTreeMap<String, Vec<u8>> {
        let sql = "SELECT name, sealed_key FROM principals";
        match self.backend {
            "sqlite" => {
                let conn = self.sqlite();
                let mut stmt = conn.prepare(sql).unwrap();
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap()
            }
            _ => self
                .postgres()
                .query(sql, &[])
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
        }
    }

    /// Every principal's name and kind.
    pub(crate) fn kinds(&self) -> Vec<(String, String)> {
        let sql = "SELECT name, kind FROM principals";
        match self.backend {
            "sqlite" => {
                let conn = self.sqlite();
                let mut stmt = conn.prepare(sql).unwrap();
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap()
            }
            _ => self
                .postgres()
                .query(sql, &[])
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
        }
    }

    /// Replaces the principal `name`'s sealed key with `sealed`.
    pub(crate) fn set_sealed_key(&self, name: &str, sealed: &[u8]) {
        match self.backend {
            "sqlite" => {
                self.sqlite()
                    .execute(
                        "UPDATE principals SET sealed_key = ?1 WHERE name = ?2",
                        rusqlite::params![sealed, name],
                    )
                    .unwrap();
            }
            _ => {
                self.postgres()
                    .execute(
                        "UPDATE principals SET sealed_key = $1 WHERE name = $2",
                        &[&sealed, &name],
                    )
                    .unwrap();
            }
        }
    }
}

/// The tests' authority parameters: small trees (256 users, 64 periods of a day).
pub(crate) fn small() -> InitOptions {
    InitOptions {
        params: Params::new(8, 6).unwrap(),
        period_seconds: DAY as u64,
    }
}

/// The key-encryption key [`KEK`].
pub(crate) fn kek() -> Kek {
    Kek::from_hex(KEK, "test").unwrap()
}

/// A new authority in `db`, with the [`small`] parameters, its secrets sealed under `kek` (hex).
pub(crate) fn init(db: &Db, kek: &str) -> Authority {
    Authority::init(
        db.open(),
        Kek::from_hex(kek, "test").unwrap(),
        small(),
        NOW,
        &mut OsRng,
    )
    .unwrap()
}

/// The authority in `db`, opened with `kek` (hex).
pub(crate) fn open(db: &Db, kek: &str) -> Authority {
    Authority::open(db.open(), Kek::from_hex(kek, "test").unwrap()).unwrap()
}

/// `names` as owned strings.
pub(crate) fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Whether `dk` yields `key` from `ct`. RS-HABE decryption with a key that satisfies the policy
/// but does not match the ciphertext's algebra yields *a* data key, just not the right one (the
/// envelope's AES-GCM tag then refuses it): comparing is the only honest test.
pub(crate) fn opens(
    dk: &rshabe::DecryptionKey,
    ct: &rshabe::Ciphertext,
    key: &rshabe::DataKey,
) -> bool {
    rshabe::decrypt(dk, ct).is_ok_and(|k| k == *key)
}
