//! The end-to-end harness: the gateway's router, built in-process from a TOML configuration in a
//! temporary folder, in front of the one real sekmet-fhir server `scripts/test` starts for the run
//! (strict validation on), with tokens of a static test issuer for each kind of caller, and a scan
//! of sekmet's own SQLite store for plaintext canaries.
//!
//! - `FHIRSEAL_TEST_FHIR_URL`: the server's FHIR base (`http://127.0.0.1:PORT/fhir`).
//! - `FHIRSEAL_TEST_FHIR_DIR`: its folder; the store is `data/sekmet.db` in it.
//!
//! Without them the tests fail, saying what to run (like the PostgreSQL tests: a real server the
//! tests need is never silently skipped). Every test names its resources with [`unique`] ids, so
//! tests sharing the one server never collide.
//!
//! The harness for a test that needs a server of its own (it changes what every stored resource
//! holds) is [`OwnServer`], which starts one with `scripts/fhir-server` for that test alone.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use fhirseal::app::app;
use fhirseal::audit::AuditSink;
use fhirseal::config::Config;
use fhirseal::state::AppState;
use fhirseal_upstream::UpstreamRequest;
use rand_core::{OsRng, RngCore};
use serde_json::Value;
use wiremock::MockServer;

use super::{Configured, Reply, Who, configured, now, send, token, vars};

/// The FHIR data-absent-reason extension the gateway leaves on a masked element.
pub(crate) const DATA_ABSENT_REASON: &str =
    "http://hl7.org/fhir/StructureDefinition/data-absent-reason";
/// The sealed-element extension (the envelope) of the stored form.
pub(crate) const SEALED_ELEMENT: &str =
    "https://fhirseal.dev/fhir/StructureDefinition/sealed-element";
/// The system of the `MASKED` security label.
pub(crate) const OBSERVATION_VALUE: &str =
    "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";

/// The sekmet-fhir server of this run: its FHIR base and its folder.
pub(crate) struct Server {
    /// `http://127.0.0.1:PORT/fhir`.
    pub(crate) url: String,
    /// The folder `scripts/fhir-server start` ran it in.
    pub(crate) dir: PathBuf,
}

/// The server `scripts/test` started; fails the test, saying what to run, when there is none.
pub(crate) fn server() -> Server {
    let url = std::env::var("FHIRSEAL_TEST_FHIR_URL");
    let dir = std::env::var_os("FHIRSEAL_TEST_FHIR_DIR");
    let (Ok(url), Some(dir)) = (url, dir) else {
        panic!(
            "FHIRSEAL_TEST_FHIR_URL and FHIRSEAL_TEST_FHIR_DIR are not set: run the tests with \
             scripts/test, which starts a real FHIR server (sekmet-fhir) for them, or start one \
             with `scripts/fhir-server start DIR` and export both (the URL it prints, and DIR); \
             these tests are never skipped"
        )
    };
    let dir = PathBuf::from(dir);
    assert!(
        dir.join("data/sekmet.db").exists(),
        "FHIRSEAL_TEST_FHIR_DIR={} holds no data/sekmet.db",
        dir.display()
    );
    Server {
        url: url.trim_end_matches('/').to_string(),
        dir,
    }
}

/// A sekmet-fhir of its own for one test, in a temporary folder, stopped when dropped (also
/// when the test fails): for a test that changes what every stored resource holds, which the
/// run's shared [`server`] must not see. `scripts/fhir-server` installs and starts it, or the
/// test fails saying why.
pub(crate) struct OwnServer {
    script: PathBuf,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT/fhir`.
    pub(crate) url: String,
}

impl OwnServer {
    /// Installs (once) and starts a server.
    pub(crate) fn start() -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fhir-server");
        let status = Command::new(&script).arg("install").status().unwrap();
        assert!(status.success(), "scripts/fhir-server install failed");
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(&script)
            .arg("start")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scripts/fhir-server start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .trim_end_matches('/')
            .to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        Self { script, dir, url }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = Command::new(&self.script)
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// The gateway in front of the run's sekmet-fhir.
pub(crate) struct Gateway {
    /// The router, driven without a socket.
    pub(crate) app: Router,
    /// Its state (for reading the upstream directly, as the gateway's own client).
    pub(crate) state: AppState,
    /// The FHIR server.
    pub(crate) server: Server,
    /// Its configuration file, and the overrides it was configured with.
    config: (PathBuf, Vec<(String, String)>),
    /// The test issuer's key set and the data folder, owned by the first of a restarted pair
    /// (which must outlive the other).
    _keys: Option<MockServer>,
    _dir: Option<tempfile::TempDir>,
}

/// A request to the gateway.
pub(crate) struct Call<'a> {
    method: Method,
    uri: String,
    who: Option<&'a Who>,
    headers: Vec<(header::HeaderName, String)>,
    body: Option<String>,
}

impl<'a> Call<'a> {
    /// A request of `method` to `uri` (a path under the gateway, `/fhir/…`, or its absolute
    /// URL), as `who`.
    pub(crate) fn new(method: Method, uri: &str, who: &'a Who) -> Self {
        Self {
            method,
            uri: uri
                .strip_prefix("http://127.0.0.1:8080")
                .unwrap_or(uri)
                .to_string(),
            who: Some(who),
            headers: Vec::new(),
            body: None,
        }
    }

    /// With a header.
    pub(crate) fn header(mut self, name: header::HeaderName, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }

    /// With a FHIR JSON body.
    pub(crate) fn json(mut self, body: &Value) -> Self {
        self.headers
            .push((header::CONTENT_TYPE, "application/fhir+json".to_string()));
        self.body = Some(body.to_string());
        self
    }

    /// With a raw body of `content_type`.
    pub(crate) fn body(mut self, content_type: &str, body: &str) -> Self {
        self.headers
            .push((header::CONTENT_TYPE, content_type.to_string()));
        self.body = Some(body.to_string());
        self
    }
}

/// Builds the gateway: a configuration file (the embedded defaults, with the embedded hospital
/// policy, plus the test issuer), a data folder of its own, and the upstream at the run's
/// sekmet-fhir.
pub(crate) async fn gateway() -> Gateway {
    gateway_with(&[]).await
}

/// The same, with `overrides` as environment variables (`FHIRSEAL__SECTION__KEY`).
pub(crate) async fn gateway_with(overrides: &[(&str, &str)]) -> Gateway {
    gateway_on(server(), overrides).await
}

/// The gateway in front of `own`, a sekmet-fhir of the test's own (which must outlive it), for
/// a test that changes what every stored resource holds.
pub(crate) async fn gateway_over(own: &OwnServer, overrides: &[(&str, &str)]) -> Gateway {
    let server = Server {
        url: own.url.clone(),
        dir: own.dir.path().to_path_buf(),
    };
    gateway_on(server, overrides).await
}

/// The gateway in front of `server`, with `overrides`.
async fn gateway_on(server: Server, overrides: &[(&str, &str)]) -> Gateway {
    let Configured { state, keys, dir } = configured(&server.url, overrides).await;
    Gateway {
        app: app(state.clone()),
        state,
        server,
        config: (dir.path().join("gateway.toml"), vars(overrides)),
        _keys: Some(keys),
        _dir: Some(dir),
    }
}

/// Every gateway of the end-to-end tests leaves its audit trail's records, as FHIR AuditEvents,
/// in `$FHIRSEAL_AUDIT_EVENTS_OUT`, which scripts/test validates with the real R4 validator: every
/// interaction of the suite, refused ones and Bundle entries included, must map to a conformant
/// AuditEvent. (Only the gateway owning the data folder exports; a restarted one shares its trail.)
impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking()
            || self._dir.is_none()
            || std::env::var_os("FHIRSEAL_AUDIT_EVENTS_OUT").is_none()
        {
            return;
        }
        // On a thread of its own: the PostgreSQL store's synchronous client starts a runtime,
        // which it may not do on one of the test's.
        let (database, base) = (
            self.state.config.authority_database.clone(),
            self.state.config.fhir_base.clone(),
        );
        let exported = std::thread::spawn(move || {
            let mut store =
                fhirseal_authority::store::open(&database).map_err(|e| e.to_string())?;
            let mut events = Vec::new();
            fhirseal_authority::audit::for_each_record(store.as_mut(), |record| {
                let event = fhirseal::audit::event::audit_event(record.seq, &record.record, &base)
                    .map_err(fhirseal_authority::Error::Invalid)?;
                events.push(event);
                Ok(())
            })
            .map_err(|e| e.to_string())?;
            Ok::<_, String>(events)
        })
        .join();
        // A record that does not map is a failure of the suite, not a skip.
        let events = match exported {
            Ok(Ok(events)) => events,
            Ok(Err(error)) => {
                panic!("the audit trail of an end-to-end gateway does not export: {error}")
            }
            Err(_) => panic!("exporting the audit trail of an end-to-end gateway panicked"),
        };
        let mut tag = [0u8; 6];
        OsRng.fill_bytes(&mut tag);
        let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        super::write_audit_events(&format!("auditevent-e2e-{tag}"), &events);
    }
}

impl Gateway {
    /// The same gateway after a restart: its state built again from the same configuration
    /// file and data folder (so the same authority and audit trail), every cache empty. It must
    /// not outlive `self`, which owns the folder.
    pub(crate) async fn restarted(&self) -> Self {
        let (file, overrides) = &self.config;
        let mut env = vars(&[("FHIRSEAL__UPSTREAM__BASE_URL", &self.server.url)]);
        env.extend(overrides.iter().cloned());
        let config = Config::load(Some(file), env).unwrap();
        let state = tokio::task::spawn_blocking(move || AppState::build(config, now()))
            .await
            .unwrap()
            .unwrap();
        Self {
            app: app(state.clone()),
            state,
            server: Server {
                url: self.server.url.clone(),
                dir: self.server.dir.clone(),
            },
            config: self.config.clone(),
            _keys: None,
            _dir: None,
        }
    }

    /// Sends `call` through the router.
    pub(crate) async fn send(&self, call: Call<'_>) -> Reply {
        let mut request = Request::builder().method(call.method).uri(&call.uri);
        if let Some(who) = call.who {
            request = request.header(header::AUTHORIZATION, format!("Bearer {}", token(who)));
        }
        for (name, value) in call.headers {
            request = request.header(name, value);
        }
        let body = call.body.map_or_else(Body::empty, Body::from);
        send(&self.app, request.body(body).unwrap()).await
    }

    /// `GET uri` as `who`.
    pub(crate) async fn get(&self, uri: &str, who: &Who) -> Reply {
        self.send(Call::new(Method::GET, uri, who)).await
    }

    /// `PUT /fhir/{type}/{id}` of `resource` as `who`.
    pub(crate) async fn put(&self, resource: &Value, who: &Who) -> Reply {
        let uri = format!(
            "/fhir/{}/{}",
            resource["resourceType"].as_str().unwrap(),
            resource["id"].as_str().unwrap()
        );
        self.send(Call::new(Method::PUT, &uri, who).json(resource))
            .await
    }

    /// `POST /fhir/{type}` of `resource` as `who`.
    pub(crate) async fn post(&self, resource: &Value, who: &Who) -> Reply {
        let uri = format!("/fhir/{}", resource["resourceType"].as_str().unwrap());
        self.send(Call::new(Method::POST, &uri, who).json(resource))
            .await
    }

    /// `POST /fhir` of a batch or transaction `bundle` as `who`.
    pub(crate) async fn bundle(&self, bundle: &Value, who: &Who) -> Reply {
        self.send(Call::new(Method::POST, "/fhir", who).json(bundle))
            .await
    }

    /// `GET path` straight from the upstream (not through the gateway): what it stores.
    pub(crate) async fn upstream_get(&self, path: &str) -> Reply {
        upstream_get(&self.state, path).await
    }

    /// The same gateway with the audit layer outermost, as `fhirseal serve` runs it, its lines
    /// kept in memory: the gateway and the lines written so far.
    pub(crate) fn with_audit(mut self) -> (Self, Arc<Mutex<Vec<String>>>) {
        let (sink, lines) = AuditSink::memory();
        self.state.audit = sink;
        self.app = app(self.state.clone());
        (self, lines)
    }

    /// `PUT` of `resource` straight to the upstream, around the gateway, as the upstream's
    /// operator could: its status.
    pub(crate) async fn upstream_put(&self, resource: &Value) -> StatusCode {
        upstream_put(&self.state, resource).await.status
    }

    /// Every canary of `canaries` found anywhere in the run's sekmet-fhir storage, as
    /// `"<canary> in <where>"`: in any text of any row of any table of its SQLite store (stored
    /// resources, their versions, the search index, the traffic log, …), and in the raw bytes of
    /// every file of its folder (the database, its write-ahead log, freed pages, the server's
    /// log). Also fails the test if the traffic table holds anything (it must be off: it would
    /// hold request bodies).
    pub(crate) fn canary_scan(&self, canaries: &[&str]) -> Vec<String> {
        canary_scan_in(&self.server.dir, canaries)
    }
}

/// `GET path` straight from the upstream of `state`, as the gateway's own client but not
/// through the gateway: what it stores.
pub(crate) async fn upstream_get(state: &AppState, path: &str) -> Reply {
    let request = UpstreamRequest::new(Method::GET, path).with_header(
        header::ACCEPT,
        header::HeaderValue::from_static("application/fhir+json"),
    );
    let (status, headers, body) = state.upstream.send(request).await.unwrap().into_parts();
    Reply::new(status, headers, &body)
}

/// `PUT` of `resource` straight to the upstream of `state`, around the gateway, as the
/// upstream's operator (or a test storing what it sealed itself) could.
pub(crate) async fn upstream_put(state: &AppState, resource: &Value) -> Reply {
    let path = format!(
        "{}/{}",
        resource["resourceType"].as_str().unwrap(),
        resource["id"].as_str().unwrap()
    );
    let request = UpstreamRequest::new(Method::PUT, path)
        .with_header(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/fhir+json"),
        )
        .with_body(resource.to_string());
    let (status, headers, body) = state.upstream.send(request).await.unwrap().into_parts();
    Reply::new(status, headers, &body)
}

fn canary_scan_in(dir: &Path, canaries: &[&str]) -> Vec<String> {
    assert!(
        canaries.iter().all(|c| c.len() >= 8),
        "canaries too short to be unique"
    );
    let mut found = Vec::new();
    let db = dir.join("data/sekmet.db");
    let connection =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    connection
        .busy_timeout(std::time::Duration::from_secs(30))
        .unwrap();
    let traffic: i64 = connection
        .query_row("SELECT COUNT(*) FROM traffic", [], |row| row.get(0))
        .unwrap();
    assert_eq!(
        traffic, 0,
        "sekmet's traffic log is on: it stores request bodies; start it without FHIR_SERVER_TRAFFIC_LOG"
    );
    let tables: Vec<String> = connection
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for table in &tables {
        let mut statement = connection
            .prepare(&format!("SELECT * FROM \"{table}\""))
            .unwrap();
        let columns = statement.column_count();
        let mut rows = statement.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for column in 0..columns {
                let text = match row.get_ref(column).unwrap() {
                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                        String::from_utf8_lossy(t).into_owned()
                    }
                    _ => continue,
                };
                for canary in canaries {
                    if text.contains(canary) {
                        found.push(format!(
                            "{canary} in table {table}: {}",
                            excerpt(&text, canary)
                        ));
                    }
                }
            }
        }
    }
    for file in files(dir) {
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        for canary in canaries {
            if text.contains(canary) {
                found.push(format!("{canary} in file {}", file.display()));
            }
        }
    }
    found
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn excerpt(text: &str, canary: &str) -> String {
    let at = text.find(canary).unwrap_or(0);
    let before: String = text[..at].chars().rev().take(80).collect();
    let after: String = text[at..].chars().take(canary.len() + 80).collect();
    format!("…{}{after}…", before.chars().rev().collect::<String>())
}

/// A fresh id: `prefix-` and 12 random hex digits.
pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", hex(6))
}

/// A fresh canary string for `label`: `CANARY-<label>-<16 hex>`.
pub(crate) fn canary(label: &str) -> String {
    format!("CANARY-{label}-{}", hex(8))
}

/// A fresh date no test data holds: a random day of a year between 1100 and 1699.
pub(crate) fn canary_date() -> String {
    let mut bytes = [0u8; 4];
    OsRng.fill_bytes(&mut bytes);
    let year = 1100 + u32::from(u16::from_le_bytes([bytes[0], bytes[1]])) % 600;
    let month = 1 + u32::from(bytes[2]) % 12;
    let day = 1 + u32::from(bytes[3]) % 28;
    format!("{year}-{month:02}-{day:02}")
}

fn hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buffer);
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}

/// `resource` without what the server sets in `meta` (`versionId`, `lastUpdated`) and without
/// the `MASKED` label the seal adds; `meta` goes when nothing else is left in it.
pub(crate) fn without_server_meta(resource: &Value) -> Value {
    let mut resource = resource.clone();
    let Some(object) = resource.as_object_mut() else {
        return resource;
    };
    if let Some(Value::Object(meta)) = object.get_mut("meta") {
        meta.shift_remove("versionId");
        meta.shift_remove("lastUpdated");
        if let Some(Value::Array(labels)) = meta.get_mut("security") {
            labels.retain(|l| !(l["system"] == OBSERVATION_VALUE && l["code"] == "MASKED"));
            if labels.is_empty() {
                meta.shift_remove("security");
            }
        }
        if meta.is_empty() {
            object.shift_remove("meta");
        }
    }
    resource
}

/// Whether `resource` carries the `MASKED` security label.
pub(crate) fn is_labelled_masked(resource: &Value) -> bool {
    resource["meta"]["security"]
        .as_array()
        .is_some_and(|labels| {
            labels
                .iter()
                .any(|l| l["system"] == OBSERVATION_VALUE && l["code"] == "MASKED")
        })
}

/// Whether `element` (an element's object, or a primitive's `_name` companion) is masked as the
/// gateway masks for a reader: a data-absent-reason `masked` extension, and no envelope left.
pub(crate) fn is_masked(element: &Value) -> bool {
    let Some(extensions) = element["extension"].as_array() else {
        return false;
    };
    extensions
        .iter()
        .any(|e| e["url"] == DATA_ABSENT_REASON && e["valueCode"] == "masked")
        && !extensions.iter().any(|e| e["url"] == SEALED_ELEMENT)
}

/// Every link URL and `fullUrl` of a Bundle.
pub(crate) fn bundle_urls(bundle: &Value) -> Vec<String> {
    let mut urls: Vec<String> = bundle["link"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["url"].as_str().map(str::to_string))
        .collect();
    urls.extend(
        bundle["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["fullUrl"].as_str().map(str::to_string)),
    );
    urls
}

/// The `relation` link of a Bundle, if any.
pub(crate) fn link(bundle: &Value, relation: &str) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == relation)
        .and_then(|l| l["url"].as_str())
        .map(str::to_string)
}

/// The resources of a Bundle's entries whose `search.mode` is `mode` (any mode when `None`).
pub(crate) fn entries<'b>(bundle: &'b Value, mode: Option<&str>) -> Vec<&'b Value> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| mode.is_none_or(|m| e["search"]["mode"] == m))
        .filter_map(|e| e.get("resource"))
        .collect()
}
