//! Two `fhirseal serve` processes, the built binary, on one PostgreSQL database and one real FHIR
//! server (a sekmet-fhir of the test's own: the update job touches every stored header), sharing
//! one configuration file as replicas behind a load balancer do (each its own listen addresses):
//!
//! 1. the embedded authorization server of replica A issues tokens that replica B accepts (its
//!    signing key is in the shared authority); what is written through either is read back,
//!    opened, through both;
//! 2. a revocation through A's admin API is honoured by B within `registration_cache_seconds`
//!    (set small here): the time from the revoke to B's first refusal is measured and printed;
//! 3. the ciphertext-update job, started on both, is split between them; A is killed (SIGKILL)
//!    while it holds a chunk, B takes that chunk over once its lease ends and finishes the job:
//!    every chunk done once, every stored header at the new period, each written exactly once.
//!
//! Needs `FHIRSEAL_TEST_POSTGRES_URL` (a PostgreSQL server the test may create a database on);
//! `scripts/test` sets it. Without it the test fails saying so, like every PostgreSQL test (they
//! are never skipped). See the measured bound with
//! `cargo nextest run -p fhirseal --test gateway replicas --no-capture`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fhirseal::config::DEFAULTS;
use fhirseal_authority::KEK_ENV;
use rand_core::{OsRng, RngCore};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::header_in;
use crate::support::sekmet::{OwnServer, canary, is_masked, unique};
use crate::support::{Spawned, free_port, postgres_database};

/// `authority.registration_cache_seconds` of both replicas: the revocation bound under test.
const CACHE_SECONDS: u64 = 2;
/// What the bound may be exceeded by in the measurement: the revoke's own round trip, the
/// polling interval, a loaded machine.
const MARGIN: Duration = Duration::from_millis(2500);
/// `ciphertext_update.lease_seconds`: how long a killed replica's chunk stays its own.
const LEASE_SECONDS: u64 = 3;
/// Patients written besides the two read back: with `page_size = 1`, one chunk each.
const PATIENTS: usize = 40;
/// The shared header search, as the update job pages through it.
const HEADERS: &str = "Basic?code=https://fhirseal.dev/fhir/CodeSystem/fhirseal%7Csealed-header";

/// `sql` on `database`, on a blocking thread (the client is synchronous): its rows.
async fn query(database: &str, sql: String) -> Vec<postgres::Row> {
    let database = database.to_string();
    tokio::task::spawn_blocking(move || {
        let mut client = postgres::Client::connect(&database, postgres::NoTls).unwrap();
        client.query(sql.as_str(), &[]).unwrap()
    })
    .await
    .unwrap()
}

/// `count` hex digits of randomness.
fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buffer);
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}

/// The one configuration file of every replica: the embedded defaults (their demo users and
/// client), with the authority in `database`, the key-encryption key and the admin tokens from
/// the environment, the upstream at `upstream`, `public_url` the address clients use (the load
/// balancer's; here replica A's), and the small bounds under test.
fn config_file(dir: &Path, database: &str, upstream: &str, public_url: &str) -> PathBuf {
    let mut config: toml::Table = toml::from_str(DEFAULTS).unwrap();
    let section = |config: &mut toml::Table, name: &str| -> toml::Table {
        config
            .remove(name)
            .and_then(|v| v.as_table().cloned())
            .unwrap_or_default()
    };
    let mut server = section(&mut config, "server");
    server.insert("public_url".into(), public_url.into());
    server.insert("admin_token_from_env".into(), true.into());
    config.insert("server".into(), server.into());
    let mut upstream_section = section(&mut config, "upstream");
    upstream_section.insert("base_url".into(), upstream.into());
    upstream_section.insert("max_retries".into(), 0.into());
    config.insert("upstream".into(), upstream_section.into());
    let mut authority = section(&mut config, "authority");
    authority.insert("database".into(), database.into());
    authority.insert("kek_from_env".into(), true.into());
    authority.insert(
        "registration_cache_seconds".into(),
        i64::try_from(CACHE_SECONDS).unwrap().into(),
    );
    config.insert("authority".into(), authority.into());
    let mut jobs = toml::Table::new();
    jobs.insert("interval_seconds".into(), 1.into());
    jobs.insert(
        "lease_seconds".into(),
        i64::try_from(LEASE_SECONDS).unwrap().into(),
    );
    jobs.insert("page_size".into(), 1.into());
    config.insert("ciphertext_update".into(), jobs.into());
    let file = dir.join("replica.toml");
    std::fs::write(&file, toml::to_string(&config).unwrap()).unwrap();
    file
}

/// A running `fhirseal serve`, killed when dropped.
struct Replica {
    name: &'static str,
    child: Spawned,
    /// `http://127.0.0.1:PORT`, its own address.
    url: String,
    /// Its admin API, `http://127.0.0.1:PORT`.
    admin: String,
    dir: PathBuf,
}

/// What every replica shares: the configuration file, the key-encryption key, the admin token.
struct Shared {
    config: PathBuf,
    kek: String,
    admin_token: String,
}

impl Replica {
    /// Starts replica `name` on `listen` with the shared configuration; its logs and audit lines
    /// go to files in `dir`.
    fn start(name: &'static str, listen: &str, shared: &Shared, dir: &Path) -> Self {
        let admin = format!("127.0.0.1:{}", free_port());
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_fhirseal"))
            .args(["serve", "--config"])
            .arg(&shared.config)
            .env_clear()
            .env("FHIRSEAL__SERVER__LISTEN", listen)
            .env("FHIRSEAL__SERVER__ADMIN_LISTEN", &admin)
            .env("FHIRSEAL__SERVER__DATA_DIR", dir.join("data"))
            .env(KEK_ENV, &shared.kek)
            .env(
                "FHIRSEAL_ADMIN_TOKEN",
                format!("test {}", shared.admin_token),
            )
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(File::create(dir.join("audit.jsonl")).unwrap())
            .stderr(File::create(dir.join("log")).unwrap())
            .spawn()
            .unwrap();
        Self {
            name,
            child: Spawned::new(child),
            url: format!("http://{listen}"),
            admin: format!("http://{admin}"),
            dir,
        }
    }

    /// Its log so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// Waits until it answers (the first one creates the authority).
    async fn wait_ready(&mut self, client: &reqwest::Client) {
        let started = Instant::now();
        loop {
            if let Ok(response) = client.get(format!("{}/ready", self.admin)).send().await
                && response.status() == StatusCode::OK
            {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("replica {} exited ({status}):\n{}", self.name, self.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "replica {} did not get ready:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends it a signal by name (`TERM`, `STOP`, `CONT`).
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} {}", self.pid());
    }

    /// Stops it as an orchestrator does (SIGTERM) and waits: it must drain and exit 0 without a
    /// panic (closing the synchronous PostgreSQL client inside the runtime once panicked).
    async fn stop(mut self) {
        self.signal("TERM");
        let started = Instant::now();
        let exited = loop {
            if let Some(exited) = self.child.try_wait().unwrap() {
                break exited;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "replica {} did not stop on SIGTERM:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let log = self.log();
        assert!(
            exited.success(),
            "replica {} exited {exited}:\n{log}",
            self.name
        );
        assert!(!log.contains("panicked"), "replica {}:\n{log}", self.name);
    }

    /// Its process id (worker names hold it: `host/pid/random`).
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// An access token of the embedded authorization server, through its real login page at
/// `public_url` (scripts/demo-token: authorization code with PKCE).
fn embedded_token(public_url: &str, user: &str, password: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/demo-token");
    let out = Command::new(script)
        .args([user, password, "--base", public_url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/demo-token {user}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A Patient whose name (doctors and nurses open it) and phone (doctors only) are canaries.
fn patient(id: &str, family: &str, phone: &str) -> Value {
    json!({"resourceType": "Patient", "id": id, "active": true,
        "name": [{"family": family, "given": ["Ada"]}],
        "telecom": [{"system": "phone", "value": phone}],
        "gender": "female", "birthDate": "1971-02-03"})
}

/// `PUT` of `resource` through `replica` as the bearer of `token`: its status and body.
async fn put(
    client: &reqwest::Client,
    replica: &str,
    token: &str,
    resource: &Value,
) -> (StatusCode, String) {
    let url = format!(
        "{replica}/fhir/{}/{}",
        resource["resourceType"].as_str().unwrap(),
        resource["id"].as_str().unwrap()
    );
    let response = client
        .put(url)
        .bearer_auth(token)
        .header("content-type", "application/fhir+json")
        .body(resource.to_string())
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

/// `GET {replica}/fhir/{path}` as the bearer of `token`: its status and body.
async fn get(
    client: &reqwest::Client,
    replica: &str,
    token: &str,
    path: &str,
) -> (StatusCode, Value, String) {
    let response = client
        .get(format!("{replica}/fhir/{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    )
}

/// `GET` (no body) or `POST` of `body` to the admin API at `admin`: its status and JSON.
async fn admin(
    client: &reqwest::Client,
    admin: &str,
    token: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let request = match body {
        None => client.get(format!("{admin}{path}")),
        Some(body) => client
            .post(format!("{admin}{path}"))
            .header("content-type", "application/json")
            .body(body.to_string()),
    };
    let response = request.bearer_auth(token).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `GET path` straight from the FHIR server (not through a gateway): the Bundle or resource.
async fn upstream(client: &reqwest::Client, base: &str, path: &str) -> (Value, String) {
    let response = client
        .get(format!("{base}/{path}"))
        .header("accept", "application/fhir+json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    let text = response.text().await.unwrap();
    (serde_json::from_str(&text).unwrap(), text)
}

/// The stored shared headers: `Basic` id → (versionId, the header's period).
async fn stored_headers(
    client: &reqwest::Client,
    base: &str,
) -> std::collections::BTreeMap<String, (String, u64)> {
    let (bundle, _) = upstream(client, base, &format!("{HEADERS}&_count=1000")).await;
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let basic = &e["resource"];
            let header = header_in(basic);
            (
                basic["id"].as_str().unwrap().to_string(),
                (
                    basic["meta"]["versionId"].as_str().unwrap().to_string(),
                    header.ciphertext().period(),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_writes_revocations_and_the_update_job() {
    let database = tokio::task::spawn_blocking(|| postgres_database("replicas"))
        .await
        .unwrap();
    let fhir = OwnServer::start();
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    // Replica A's address is the one clients use (a load balancer's in a deployment): tokens name
    // `{public_url}/fhir` as audience and `{public_url}/auth` as issuer, the same on every replica.
    let listen_a = format!("127.0.0.1:{}", free_port());
    let public_url = format!("http://{listen_a}");
    let shared = Shared {
        config: config_file(dir.path(), &database, &fhir.url, &public_url),
        kek: random_hex(32),
        admin_token: random_hex(24),
    };
    let token = shared.admin_token.clone();
    // A first: it creates the authority (two first starts at once: one would lose the race and
    // exit, and succeed on restart).
    let mut a = Replica::start("a", &listen_a, &shared, dir.path());
    a.wait_ready(&client).await;
    let mut b = Replica::start(
        "b",
        &format!("127.0.0.1:{}", free_port()),
        &shared,
        dir.path(),
    );
    b.wait_ready(&client).await;

    // --- 1. Tokens of A's embedded server work on B; writes through each read through both ----
    let doctor = embedded_token(&public_url, "dr.grey", "demo-doctor");
    let nurse = embedded_token(&public_url, "nurse.joy", "demo-nurse");
    let mut canaries = Vec::new();
    let mut written = Vec::new();
    for (via, name) in [(&a.url, "a"), (&b.url, "b")] {
        let id = unique(&format!("rep-{name}"));
        let (family, phone) = (canary("family"), canary("phone"));
        let resource = patient(&id, &family, &phone);
        let (status, text) = put(&client, via, &doctor, &resource).await;
        assert_eq!(status, StatusCode::CREATED, "PUT through {name}: {text}");
        canaries.extend([family, phone]);
        written.push(resource);
    }
    for resource in &written {
        let path = format!("Patient/{}", resource["id"].as_str().unwrap());
        for replica in [&a, &b] {
            let (status, body, text) = get(&client, &replica.url, &doctor, &path).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "{path} through {}: {text}",
                replica.name
            );
            for element in ["name", "telecom", "birthDate"] {
                assert_eq!(
                    body[element], resource[element],
                    "{path} through {}: {element} opened",
                    replica.name
                );
            }
        }
        let (_, stored) = upstream(&client, &fhir.url, &path).await;
        for canary in &canaries {
            assert!(!stored.contains(canary.as_str()), "{path} stores {canary}");
        }
    }
    // Many more, one update-job chunk each (page_size = 1), through both.
    let mut writes = tokio::task::JoinSet::new();
    for n in 0..PATIENTS {
        let (client, doctor) = (client.clone(), doctor.clone());
        let via = if n % 2 == 0 {
            a.url.clone()
        } else {
            b.url.clone()
        };
        writes.spawn(async move {
            let id = unique("rep-bulk");
            let resource = patient(&id, &canary("family"), &canary("phone"));
            put(&client, &via, &doctor, &resource).await
        });
        if writes.len() >= 4 {
            let (status, text) = writes.join_next().await.unwrap().unwrap();
            assert_eq!(status, StatusCode::CREATED, "{text}");
        }
    }
    while let Some(done) = writes.join_next().await {
        let (status, text) = done.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{text}");
    }

    // --- 2. A revocation through A is honoured by B within the bound --------------------------
    let first = format!("Patient/{}", written[0]["id"].as_str().unwrap());
    // The key identity: the token's `fhirUser`, relative to the FHIR base.
    let identity = "Practitioner/dr-grey";
    // B has just read the doctor's registration: its cache is warm.
    let (status, _, text) = get(&client, &b.url, &doctor, &first).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let revoked_at = Instant::now();
    let (status, body) = admin(
        &client,
        &a.admin,
        &token,
        "/authority/revoke",
        Some(json!({"kind": "user", "name": identity})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A forgets at once.
    let (status, _, text) = get(&client, &a.url, &doctor, &first).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "A after its own revoke: {text}"
    );
    let bound = Duration::from_secs(CACHE_SECONDS) + MARGIN;
    let honoured = loop {
        let (status, body, text) = get(&client, &b.url, &doctor, &first).await;
        let elapsed = revoked_at.elapsed();
        match status {
            StatusCode::FORBIDDEN => {
                assert_eq!(body["resourceType"], "OperationOutcome", "{text}");
                assert!(text.contains("decryption keys are revoked"), "{text}");
                for canary in &canaries {
                    assert!(!text.contains(canary.as_str()), "{text}");
                }
                break elapsed;
            }
            StatusCode::OK => assert!(
                elapsed <= bound,
                "B still opens the revoked doctor's data {elapsed:?} after the revoke \
                 (registration_cache_seconds = {CACHE_SECONDS})"
            ),
            other => panic!("B answered {other}: {text}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "replicas: a revocation through replica A was honoured by replica B after {} ms \
         (registration_cache_seconds = {CACHE_SECONDS})",
        honoured.as_millis()
    );
    assert!(honoured <= bound, "{honoured:?}");

    // --- 3. The update job, started on both, survives the SIGKILL of A mid-job ----------------
    let before = stored_headers(&client, &fhir.url).await;
    assert!(!before.is_empty());
    assert!(before.values().all(|(_, period)| *period == 0));
    let (status, body) = admin(
        &client,
        &a.admin,
        &token,
        "/authority/period/advance",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["period"], 1, "{body}");
    let (on_a, on_b) = tokio::join!(
        admin(
            &client,
            &a.admin,
            &token,
            "/jobs/ct-update",
            Some(json!({}))
        ),
        admin(
            &client,
            &b.admin,
            &token,
            "/jobs/ct-update",
            Some(json!({}))
        ),
    );
    for (status, body) in [&on_a, &on_b] {
        assert_eq!(*status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["target_period"], 1, "{body}");
        assert_eq!(body["finished"], false, "{body}");
    }
    let job = on_a.1["job"].as_i64().unwrap();
    assert_eq!(on_b.1["job"].as_i64(), Some(job), "one job for both");
    let of = |pid: u32| format!("'%/{pid}/%'");
    let (pid_a, pid_b) = (a.pid(), b.pid());
    // Kill A while it holds a chunk of headers to move (not the plan marker), once it has
    // completed some and others are still pending.
    let started = Instant::now();
    let held = loop {
        let rows = query(
            &database,
            format!(
                "SELECT count(*) FILTER (WHERE state = 'done' AND claimed_by LIKE {a}), \
                        count(*) FILTER (WHERE state = 'pending'), \
                        count(*) FILTER (WHERE state = 'claimed' AND claimed_by LIKE {a} \
                                         AND key LIKE 'Basic?%') \
                 FROM update_chunks WHERE job_id = {job}",
                a = of(pid_a)
            ),
        )
        .await;
        let (done_a, pending, held_a): (i64, i64, i64) =
            (rows[0].get(0), rows[0].get(1), rows[0].get(2));
        if done_a >= 1 && pending >= 2 && held_a >= 1 {
            // A may finish that chunk between the count and the kill: freeze it first, read
            // what it holds while it cannot move, and kill it only if that is still a chunk of
            // headers (otherwise let it go on and look again).
            a.signal("STOP");
            let held = query(
                &database,
                format!(
                    "SELECT key FROM update_chunks WHERE job_id = {job} AND state = 'claimed' \
                     AND claimed_by LIKE {}",
                    of(pid_a)
                ),
            )
            .await
            .iter()
            .map(|row| row.get::<_, String>(0))
            .collect::<Vec<_>>();
            if held.iter().any(|key| key.starts_with("Basic?")) {
                a.child.kill().unwrap(); // SIGKILL, which also ends a stopped process
                a.child.wait().unwrap();
                break held;
            }
            a.signal("CONT");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120) && pending + held_a > 0,
            "the job ran out before replica A could be killed mid-chunk (A done {done_a}, \
             pending {pending}): write more patients"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let killed_at = Instant::now();
    assert!(
        held.iter().any(|key| key.starts_with("Basic?")),
        "replica A held no chunk of headers when it was killed: {held:?}"
    );
    // B finishes, A's chunks included once their lease has ended.
    let finished = loop {
        let (status, body) = admin(&client, &b.admin, &token, "/jobs/ct-update", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["finished"] == true {
            break body;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(180),
            "the job did not finish after A was killed: {body}\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "replicas: replica A killed holding {held:?}; replica B finished the job {} ms later \
         (lease_seconds = {LEASE_SECONDS}): {finished}",
        killed_at.elapsed().as_millis()
    );
    // Every chunk done once; both replicas did some; A's held chunks were taken over by B.
    let rows = query(
        &database,
        format!("SELECT key, state, claimed_by, attempts FROM update_chunks WHERE job_id = {job}"),
    )
    .await;
    let chunks: Vec<(String, String, String, i32)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert!(chunks.len() > PATIENTS, "{} chunks", chunks.len());
    assert_eq!(finished["chunks"]["total"], chunks.len());
    assert_eq!(finished["chunks"]["done"], chunks.len(), "{finished}");
    let by = |pid: u32| {
        let needle = format!("/{pid}/");
        chunks
            .iter()
            .filter(|(_, state, worker, _)| state == "done" && worker.contains(&needle))
            .count()
    };
    let (done_a, done_b) = (by(pid_a), by(pid_b));
    eprintln!(
        "replicas: chunks done by A {done_a}, by B {done_b}, of {}",
        chunks.len()
    );
    assert!(
        done_a >= 1 && done_b >= 1,
        "the job was not split: A {done_a}, B {done_b}"
    );
    assert_eq!(
        done_a + done_b,
        chunks.len(),
        "every chunk completed once, by A or B"
    );
    for key in &held {
        let (_, state, worker, attempts) = chunks.iter().find(|c| &c.0 == key).unwrap();
        assert_eq!(state, "done");
        assert!(
            worker.contains(&format!("/{pid_b}/")) && *attempts >= 2,
            "{key}: taken over by B after the lease ({worker}, {attempts} claims)"
        );
    }
    // Every stored header at period 1, none lost, each written exactly once by the job.
    let after = stored_headers(&client, &fhir.url).await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    for (id, (version, period)) in &after {
        assert_eq!(*period, 1, "Basic/{id}");
        let was: u64 = before[id].0.parse().unwrap();
        assert_eq!(
            version.parse::<u64>().unwrap(),
            was + 1,
            "Basic/{id} written once by the job"
        );
    }
    let moved = finished["headers_moved"].as_u64().unwrap();
    assert!(
        moved >= 1 && moved <= u64::try_from(after.len()).unwrap(),
        "{finished}"
    );
    // What was sealed opens under the new period for a reader not revoked, on the survivor; the
    // revoked doctor stays refused.
    let (status, body, text) = get(&client, &b.url, &nurse, &first).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(body["name"], written[0]["name"], "{text}");
    assert!(is_masked(&body["telecom"][0]), "{text}");
    let (status, _, text) = get(&client, &b.url, &doctor, &first).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    b.stop().await;
    drop(fhir);
}
