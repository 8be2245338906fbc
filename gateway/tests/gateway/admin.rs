//! The admin API's guard and its paced period advances (issue 17): requests without the token,
//! with a wrong one, to a foreign `Host`, with an `Origin`, form-encoded or body-less are refused
//! and change nothing; a loop of period advances advances once, `{"force": true}` once more;
//! `/ready` warns when few periods are left; the default token file is made owner-only; token
//! settings that cannot be used name their key; `fhirseal serve` itself, over TCP, does all of it
//! with the token file it made; and a sign-in lockout (twenty wrong passwords, or a source's) is
//! lifted by an administrator, audited, and by nothing else.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use fhirseal::admin::access::ADMIN_TOKEN_ENV;
use fhirseal::admin::{AdminAccess, AdminTokenSource, AdminTokens, admin_router};
use fhirseal::audit::{AuditSink, audited};
use fhirseal::config::{Config, DEFAULTS};
use fhirseal::state::AppState;
use fhirseal_authority::{Authority, InitOptions, Kek, store};
use rand_core::OsRng;
use rshabe::Params;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{
    Configured, Logged, Reply, Spawned, configured, fhir_base, free_port, now, send, vars,
};

/// The admin listener the router is mounted for.
const LISTENER: &str = "127.0.0.1:9090";
const ALICE: &str = "alice-token-0123456789abcdef0123456789";
const BOB: &str = "bob-token-fedcba9876543210fedcba987654";
const ADVANCE: &str = "/authority/period/advance";
const DAY: i64 = 86_400;

/// The admin API over a gateway configured in a folder of its own, with the tokens `alice` and
/// `bob`, its audit lines kept, and a wiremock upstream whose `metadata` answers.
struct Admin {
    router: Router,
    lines: Arc<Mutex<Vec<String>>>,
    setup: Configured,
    _upstream: MockServer,
}

async fn upstream() -> MockServer {
    let upstream = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/fhir/metadata"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"resourceType": "CapabilityStatement", "status": "active", "kind": "instance",
                   "fhirVersion": "4.0.1", "format": ["json"], "date": "2026-12-01"}),
        ))
        .mount(&upstream)
        .await;
    upstream
}

fn router_over(state: &AppState) -> (Router, Arc<Mutex<Vec<String>>>) {
    let tokens = AdminTokens::parse(&format!("alice {ALICE}\nbob {BOB}\n")).unwrap();
    let access = AdminAccess::new(LISTENER.parse().unwrap(), tokens);
    let (sink, lines) = AuditSink::memory();
    (audited(admin_router(state.clone(), access), sink), lines)
}

async fn admin() -> Admin {
    let upstream = upstream().await;
    let setup = configured(&fhir_base(&upstream), &[]).await;
    let (router, lines) = router_over(&setup.state);
    Admin {
        router,
        lines,
        setup,
        _upstream: upstream,
    }
}

/// `method uri` with exactly `headers` and `body`.
fn request(method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> Request<Body> {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::from(body.to_string())).unwrap()
}

/// What a well-formed admin request carries: the listener as `Host`, alice's token, JSON.
fn good(token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("host", LISTENER.to_string()),
        ("authorization", format!("Bearer {token}")),
        ("content-type", "application/json".to_string()),
    ]
}

async fn call(
    admin: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, String)],
    body: &str,
) -> Reply {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    send(admin, request(method, uri, &headers, body)).await
}

/// `headers` without `name`, then with `name: value` when given.
fn with(
    headers: &[(&'static str, String)],
    name: &'static str,
    value: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut out: Vec<_> = headers
        .iter()
        .filter(|(n, _)| *n != name)
        .cloned()
        .collect();
    if let Some(value) = value {
        out.push((name, value.to_string()));
    }
    out
}

/// A refused request: what it is, its method, headers, path and body, and the status.
type Refused<'a> = (
    &'a str,
    &'a str,
    Vec<(&'a str, String)>,
    &'a str,
    &'a str,
    StatusCode,
);

/// A token setting: `[server]` lines, the environment, the key named and the problem.
type Setting<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, &'a str);

fn audit_lines(lines: &Mutex<Vec<String>>) -> Vec<Value> {
    lines
        .lock()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_requests_without_the_token_the_listener_as_host_or_a_json_body_are_refused() {
    let admin = admin().await;
    let ok = good(ALICE);
    let wrong = format!("Bearer {}", "x".repeat(ALICE.len()));
    let truncated = format!("Bearer {}", &ALICE[..ALICE.len() - 1]);
    let basic = format!("Basic {ALICE}");
    let refused: Vec<Refused<'_>> = vec![
        (
            "no token",
            "POST",
            with(&ok, "authorization", None),
            ADVANCE,
            "{}",
            StatusCode::UNAUTHORIZED,
        ),
        (
            "a wrong token",
            "POST",
            with(&ok, "authorization", Some(&wrong)),
            ADVANCE,
            "{}",
            StatusCode::UNAUTHORIZED,
        ),
        (
            "a token cut short",
            "POST",
            with(&ok, "authorization", Some(&truncated)),
            ADVANCE,
            "{}",
            StatusCode::UNAUTHORIZED,
        ),
        (
            "not a bearer token",
            "POST",
            with(&ok, "authorization", Some(&basic)),
            ADVANCE,
            "{}",
            StatusCode::UNAUTHORIZED,
        ),
        (
            "a foreign host",
            "POST",
            with(&ok, "host", Some("evil.example:9090")),
            ADVANCE,
            "{}",
            StatusCode::MISDIRECTED_REQUEST,
        ),
        (
            "another port",
            "POST",
            with(&ok, "host", Some("127.0.0.1:9091")),
            ADVANCE,
            "{}",
            StatusCode::MISDIRECTED_REQUEST,
        ),
        (
            "no host",
            "POST",
            with(&ok, "host", None),
            ADVANCE,
            "{}",
            StatusCode::MISDIRECTED_REQUEST,
        ),
        (
            "a foreign host, GET",
            "GET",
            with(&ok, "host", Some("rebind.evil.example:9090")),
            "/live",
            "",
            StatusCode::MISDIRECTED_REQUEST,
        ),
        (
            "a cross-site origin",
            "POST",
            with(&ok, "origin", Some("https://evil.example")),
            ADVANCE,
            "{}",
            StatusCode::FORBIDDEN,
        ),
        (
            "an opaque origin",
            "POST",
            with(&ok, "origin", Some("null")),
            ADVANCE,
            "{}",
            StatusCode::FORBIDDEN,
        ),
        (
            "its own origin",
            "POST",
            with(&ok, "origin", Some("http://127.0.0.1:9090")),
            ADVANCE,
            "{}",
            StatusCode::FORBIDDEN,
        ),
        (
            "an origin, GET",
            "GET",
            with(&ok, "origin", Some("https://evil.example")),
            "/ready",
            "",
            StatusCode::FORBIDDEN,
        ),
        (
            "form-encoded",
            "POST",
            with(
                &ok,
                "content-type",
                Some("application/x-www-form-urlencoded"),
            ),
            ADVANCE,
            "force=true",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "text/plain JSON",
            "POST",
            with(&ok, "content-type", Some("text/plain")),
            ADVANCE,
            "{}",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "body-less",
            "POST",
            with(&ok, "content-type", None),
            ADVANCE,
            "",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "empty JSON",
            "POST",
            ok.clone(),
            ADVANCE,
            "",
            StatusCode::BAD_REQUEST,
        ),
        (
            "a JSON array",
            "POST",
            ok.clone(),
            ADVANCE,
            "[]",
            StatusCode::BAD_REQUEST,
        ),
        (
            "a JSON string",
            "POST",
            ok.clone(),
            ADVANCE,
            "\"force\"",
            StatusCode::BAD_REQUEST,
        ),
        (
            "a misspelt key",
            "POST",
            ok.clone(),
            ADVANCE,
            r#"{"forse": true}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            "a wrong type",
            "POST",
            ok.clone(),
            ADVANCE,
            r#"{"force": "yes"}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            "a query string",
            "POST",
            ok.clone(),
            "/authority/period/advance?force=true",
            "{}",
            StatusCode::BAD_REQUEST,
        ),
        (
            "the old ?wait=true",
            "POST",
            ok.clone(),
            "/jobs/ct-update?wait=true",
            "{}",
            StatusCode::BAD_REQUEST,
        ),
        (
            "revoke, no token",
            "POST",
            with(&ok, "authorization", None),
            "/authority/revoke",
            r#"{"kind": "user", "name": "Practitioner/dr-grey"}"#,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "job status, no token",
            "GET",
            with(&ok, "authorization", None),
            "/jobs/ct-update",
            "",
            StatusCode::UNAUTHORIZED,
        ),
        (
            "an unknown path, no token",
            "GET",
            with(&ok, "authorization", None),
            "/authority",
            "",
            StatusCode::UNAUTHORIZED,
        ),
    ];
    for (what, method, headers, uri, body, expected) in &refused {
        let reply = call(&admin.router, method, uri, headers, body).await;
        assert_eq!(reply.status, *expected, "{what}: {}", reply.text);
        assert!(reply.json["error"].is_string(), "{what}: {}", reply.text);
        if *expected == StatusCode::UNAUTHORIZED {
            assert_eq!(
                reply.header(header::WWW_AUTHENTICATE),
                "Bearer realm=\"fhirseal-admin\"",
                "{what}"
            );
        }
    }
    // Nothing of it advanced the period; every refusal is audited, and only a request made with
    // a token names who, by the token's name, never the token.
    let state = &admin.setup.state;
    assert_eq!(state.authority.current_period(now()).unwrap(), 0);
    let lines = audit_lines(&admin.lines);
    assert_eq!(lines.len(), refused.len());
    for (line, (what, _, _, _, _, status)) in lines.iter().zip(&refused) {
        assert_eq!(line["status"], status.as_u16(), "{what}: {line}");
        let with_token = matches!(
            *status,
            StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        if with_token {
            assert_eq!(
                line["who"],
                json!({"sub": "alice", "fhir_user": null, "client_id": null, "iss": "fhirseal-admin"}),
                "{what}"
            );
        } else {
            assert_eq!(line["who"], Value::Null, "{what}: {line}");
        }
    }
    let all = admin.lines.lock().unwrap().join("\n");
    assert!(!all.contains(ALICE) && !all.contains(&ALICE[..20]), "{all}");

    // The probes need no token; everything else answers with one, from either name of the host.
    let bare = [("host", LISTENER.to_string())];
    let live = call(&admin.router, "GET", "/live", &bare, "").await;
    assert_eq!(live.status, StatusCode::OK, "{}", live.text);
    let ready = call(&admin.router, "GET", "/ready", &bare, "").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    assert_eq!(ready.json["periods_left"], 1023, "{}", ready.text);
    assert!(ready.json.get("warning").is_none(), "{}", ready.text);
    let localhost = with(&good(BOB), "host", Some("localhost:9090"));
    let none = call(&admin.router, "GET", "/jobs/ct-update", &localhost, "").await;
    assert_eq!(
        none.status,
        StatusCode::NOT_FOUND,
        "no job ran yet: {}",
        none.text
    );
    let advanced = call(&admin.router, "POST", ADVANCE, &good(ALICE), "{}").await;
    assert_eq!(advanced.status, StatusCode::OK, "{}", advanced.text);
    assert_eq!(advanced.json["period"], 1);
    assert_eq!(advanced.json["forced"], false);
    let line = audit_lines(&admin.lines).pop().unwrap();
    assert_eq!(line["who"]["sub"], "alice");
    assert_eq!(line["interaction"], "period-advance");
    assert_eq!(line["outcome"], "success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_period_advance_loop_is_refused_after_the_first_and_force_advances_once_more() {
    let admin = admin().await;
    let state = &admin.setup.state;
    // Eight at once (as from two replicas, or a script's parallel loop): one advances.
    let racing: Vec<_> = (0..8)
        .map(|_| {
            let router = admin.router.clone();
            tokio::spawn(async move { call(&router, "POST", ADVANCE, &good(ALICE), "{}").await })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in racing {
        statuses.push(task.await.unwrap().status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // Then a loop: every one refused, with when to come back.
    for _ in 0..50 {
        let reply = call(&admin.router, "POST", ADVANCE, &good(ALICE), "{}").await;
        assert_eq!(
            reply.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            reply.text
        );
        let retry: i64 = reply.header(header::RETRY_AFTER).parse().unwrap();
        assert!((DAY - 60..=DAY).contains(&retry), "{retry}");
        let next = reply.json["next_advance_at"].as_i64().unwrap();
        assert!(
            (now() + DAY - 60..=now() + DAY).contains(&next),
            "{}",
            reply.text
        );
        assert!(
            reply.json["error"]
                .as_str()
                .unwrap()
                .contains("\"force\": true"),
            "{}",
            reply.text
        );
    }
    assert_eq!(state.authority.current_period(now()).unwrap(), 1);

    // Forced, it advances, and says so in the audit; the next unforced one is refused again.
    let forced = call(
        &admin.router,
        "POST",
        ADVANCE,
        &good(BOB),
        r#"{"force": true}"#,
    )
    .await;
    assert_eq!(forced.status, StatusCode::OK, "{}", forced.text);
    assert_eq!(
        (forced.json["period"].clone(), forced.json["forced"].clone()),
        (json!(2), json!(true))
    );
    assert_eq!(forced.json["periods_left"], 1021);
    let line = audit_lines(&admin.lines).pop().unwrap();
    assert_eq!(
        (line["who"]["sub"].clone(), line["interaction"].clone()),
        (json!("bob"), json!("period-advance-forced"))
    );
    let again = call(&admin.router, "POST", ADVANCE, &good(ALICE), "{}").await;
    assert_eq!(
        again.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        again.text
    );
    assert_eq!(state.authority.current_period(now()).unwrap(), 2);
    let refused = audit_lines(&admin.lines)
        .iter()
        .filter(|l| l["status"] == 429 && l["who"]["sub"] == "alice")
        .count();
    assert_eq!(refused, 7 + 50 + 1);

    // A period length after the last advance by hand, the guard lets one through again.
    let info = state.authority.period_info(now()).unwrap();
    let at = info.advanced_at.unwrap();
    assert!(
        state
            .authority
            .advance_period_unless_recent(at + DAY - 1)
            .is_err()
    );
    assert!(
        state
            .authority
            .advance_period_unless_recent(at + DAY)
            .is_ok()
    );
}

/// A gateway whose authority has a time tree of 64 periods (made before the gateway starts).
async fn small_tree(upstream: &MockServer) -> (AppState, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fhirseal-data");
    std::fs::create_dir(&data).unwrap();
    let kek = Kek::generate(&mut OsRng);
    kek.write_new_file(&data.join("authority.kek")).unwrap();
    let store = store::open(&format!(
        "sqlite:{}",
        data.join("authority.sqlite3").display()
    ))
    .unwrap();
    let options = InitOptions {
        params: Params::new(8, 6).unwrap(),
        period_seconds: DAY as u64,
    };
    Authority::init(store, kek, options, now(), &mut OsRng).unwrap();
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, DEFAULTS).unwrap();
    let config = Config::load(
        Some(&file),
        vars(&[("FHIRSEAL__UPSTREAM__BASE_URL", &fhir_base(upstream))]),
    )
    .unwrap();
    (AppState::build(config, now()).unwrap(), dir)
}

/// "Every 5xx logs its cause once": `/ready` over an upstream whose metadata fails is a 503 that
/// names the upstream's answer, and it is logged once, as an error, with that cause.
#[tokio::test(flavor = "current_thread")]
async fn a_failed_ready_is_a_503_logged_once_with_its_cause() {
    let upstream = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/fhir/metadata"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&upstream)
        .await;
    let setup = configured(&fhir_base(&upstream), &[]).await;
    let (router, _) = router_over(&setup.state);
    let bare = good(ALICE);
    let logged = Logged::default();
    let ready = {
        let _default = tracing::subscriber::set_default(logged.subscriber(tracing::Level::WARN));
        call(&router, "GET", "/ready", &bare, "").await
    };
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.text
    );
    assert!(ready.text.contains("500"), "{}", ready.text);
    let log = logged.text();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("ERROR"), "{log}");
    assert!(lines[0].contains("status=503"), "{log}");
    assert!(lines[0].contains("metadata with 500"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_warns_when_few_periods_are_left_and_the_last_one_is_not_passed() {
    let upstream = upstream().await;
    let (state, _dir) = small_tree(&upstream).await;
    let (router, _) = router_over(&state);
    let bare = [("host", LISTENER.to_string())];
    let ready = call(&router, "GET", "/ready", &bare, "").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    assert_eq!(
        (
            ready.json["period"].clone(),
            ready.json["last_period"].clone(),
            ready.json["periods_left"].clone()
        ),
        (json!(0), json!(63), json!(63))
    );
    let warning = ready.json["warning"].as_str().unwrap();
    assert!(
        warning.contains("63 of the time tree's 64 periods left"),
        "{warning}"
    );
    assert!(warning.contains("When the periods run out"), "{warning}");
    // Forced to the last period: each answer warns; past it, refused, and nothing breaks.
    for period in 1..=63 {
        let reply = call(&router, "POST", ADVANCE, &good(ALICE), r#"{"force": true}"#).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(reply.json["period"], period);
        assert!(reply.json["warning"].is_string(), "{}", reply.text);
    }
    let past = call(&router, "POST", ADVANCE, &good(ALICE), r#"{"force": true}"#).await;
    assert_eq!(past.status, StatusCode::CONFLICT, "{}", past.text);
    assert!(past.text.contains("exhausted"), "{}", past.text);
    let ready = call(&router, "GET", "/ready", &bare, "").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    assert_eq!(ready.json["periods_left"], 0);
    assert_eq!(state.authority.current_period(now()).unwrap(), 63);
}

#[tokio::test]
async fn the_default_token_file_is_made_owner_only_and_read_again() {
    let upstream = upstream().await;
    let setup = configured(&fhir_base(&upstream), &[]).await;
    let expected = setup.dir.path().join("fhirseal-data/admin.token");
    let source = setup.state.config.admin_tokens.clone().unwrap();
    assert!(
        matches!(&source, AdminTokenSource::DefaultFile(p) if *p == expected),
        "{source:?}"
    );
    let (tokens, from) = source.load().unwrap();
    assert_eq!(from, format!("created in {}", expected.display()));
    let mode = std::fs::metadata(&expected).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let text = std::fs::read_to_string(&expected).unwrap();
    let token = text.strip_suffix('\n').unwrap();
    assert_eq!(token.len(), 64, "256 bits in hex");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
    assert_eq!(tokens.identify(token), Some("admin"));
    assert!(!format!("{source:?}{tokens:?}").contains(token));
    // Read, not made again, at the next start.
    let (again, from) = source.load().unwrap();
    assert_eq!(from, expected.display().to_string());
    assert_eq!(again.identify(token), Some("admin"));
    assert_eq!(std::fs::read_to_string(&expected).unwrap(), text);
    // In a folder that does not exist yet: the folder is made owner-only too.
    let nested = setup.dir.path().join("new/admin.token");
    let (_, made) = AdminTokens::load_or_create(&nested).unwrap();
    assert!(made);
    let folder = std::fs::metadata(nested.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(folder & 0o777, 0o700, "{folder:o}");
    assert_eq!(
        std::fs::metadata(&nested).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// The embedded defaults as a file in `dir`, with `server` lines added to `[server]`.
fn config_with(dir: &Path, server: &str) -> std::path::PathBuf {
    let file = dir.join("gateway.toml");
    std::fs::write(
        &file,
        DEFAULTS.replacen("[server]\n", &format!("[server]\n{server}\n"), 1),
    )
    .unwrap();
    file
}

#[test]
fn admin_token_settings_that_cannot_be_used_name_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let short = "s".repeat(31);
    std::fs::write(dir.path().join("short.tokens"), format!("ops {short}\n")).unwrap();
    std::fs::write(
        dir.path().join("good.tokens"),
        format!("# the on-call team\nalice {ALICE}\nbob {BOB}\n"),
    )
    .unwrap();
    let cases: [Setting<'_>; 5] = [
        (
            "admin_token_file = \"missing.tokens\"",
            &[],
            "server.admin_token_file",
            "missing.tokens cannot be read",
        ),
        (
            "admin_token_file = \"short.tokens\"",
            &[],
            "server.admin_token_file",
            "line 1: the token `ops` is shorter than 32",
        ),
        (
            "admin_token_file = \"\"",
            &[],
            "server.admin_token_file",
            "must be a file path",
        ),
        (
            "admin_token_file = \"good.tokens\"\nadmin_token_from_env = true",
            &[(ADMIN_TOKEN_ENV, ALICE)],
            "server.admin_token_file",
            "cannot be set together",
        ),
        (
            "admin_token_from_env = true",
            &[],
            "server.admin_token_from_env",
            "FHIRSEAL_ADMIN_TOKEN is not set",
        ),
    ];
    for (lines, env, key, problem) in cases {
        let file = config_with(dir.path(), lines);
        let error = Config::load(Some(&file), vars(env)).unwrap_err();
        assert_eq!(error.key, key, "{lines}: {error}");
        assert_eq!(error.source, file.display().to_string(), "{lines}: {error}");
        assert!(error.problem.contains(problem), "{lines}: {error}");
        assert!(!error.to_string().contains(&short), "{error}");
    }
    // A token too short in the variable: the variable's key, never the token.
    let file = config_with(dir.path(), "admin_token_from_env = true");
    let error = Config::load(Some(&file), vars(&[(ADMIN_TOKEN_ENV, &short)])).unwrap_err();
    assert_eq!(error.key, "server.admin_token_from_env", "{error}");
    assert!(
        error.problem.contains("FHIRSEAL_ADMIN_TOKEN: line 1") && !error.problem.contains(&short),
        "{error}"
    );

    // What works: a file of named tokens, the variable, and no admin API needing none.
    let names = |config: &Config| match config.admin_tokens.as_ref().unwrap() {
        AdminTokenSource::Read { tokens, from } => (
            tokens.names().map(str::to_string).collect::<Vec<_>>(),
            from.clone(),
        ),
        other => panic!("{other:?}"),
    };
    let file = config_with(dir.path(), "admin_token_file = \"good.tokens\"");
    let config = Config::load(Some(&file), vars(&[])).unwrap();
    let tokens_file = dir.path().join("good.tokens").display().to_string();
    assert_eq!(
        names(&config),
        (vec!["alice".to_string(), "bob".to_string()], tokens_file)
    );
    assert!(!format!("{config:?}").contains(ALICE));
    let file = config_with(dir.path(), "admin_token_from_env = true");
    let config = Config::load(
        Some(&file),
        vars(&[(ADMIN_TOKEN_ENV, &format!("ops-1 {BOB}"))]),
    )
    .unwrap();
    assert_eq!(
        names(&config),
        (vec!["ops-1".to_string()], ADMIN_TOKEN_ENV.to_string())
    );
    let config =
        Config::load(Some(&file), vars(&[("FHIRSEAL__SERVER__ADMIN_LISTEN", "")])).unwrap();
    assert!(config.admin_tokens.is_none());
}

/// `fhirseal serve` on the embedded defaults as a file in `dir`, with a free FHIR port, the admin
/// API on `admin` and `upstream` as the FHIR server.
fn serve(dir: &Path, admin: &str, upstream: &str) -> (Spawned, String) {
    let file = dir.join("gateway.toml");
    std::fs::write(&file, DEFAULTS).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_fhirseal"))
        .args(["serve", "--config"])
        .arg(&file)
        .env_clear()
        .env("FHIRSEAL__SERVER__LISTEN", &listen)
        .env("FHIRSEAL__SERVER__PUBLIC_URL", format!("http://{listen}"))
        .env("FHIRSEAL__SERVER__ADMIN_LISTEN", admin)
        .env("FHIRSEAL__UPSTREAM__BASE_URL", format!("{upstream}/fhir"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (Spawned::new(child), listen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhirseal_serve_makes_its_token_and_refuses_what_a_browser_or_a_loop_sends() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = upstream().await;
    let address = format!("127.0.0.1:{}", free_port());
    let (mut child, _) = serve(dir.path(), &address, &upstream.uri());
    let base = format!("http://{address}");
    let client = reqwest::Client::new();
    let started = Instant::now();
    while client.get(format!("{base}/live")).send().await.is_err() {
        assert!(child.try_wait().unwrap().is_none(), "fhirseal serve exited");
        assert!(started.elapsed() < Duration::from_secs(90), "no answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let file = dir.path().join("fhirseal-data/admin.token");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let token = std::fs::read_to_string(&file).unwrap().trim().to_string();
    let url = format!("{base}{ADVANCE}");

    // What a web page can make a browser send (a simple, preflight-free POST), what a local
    // process without the token sends, and a DNS-rebound name: refused.
    let form = client
        .post(&url)
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("force=true")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 403);
    let rebound = client
        .post(&url)
        .header(
            "host",
            format!("evil.example:{}", address.rsplit(':').next().unwrap()),
        )
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 421);
    let bare = client.post(&url).send().await.unwrap();
    assert_eq!(bare.status(), 401);
    let bodyless = client.post(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(bodyless.status(), 415);

    // A loop of 100 advances with the token: one advances.
    let started = Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..100 {
        let reply = client
            .post(&url)
            .bearer_auth(&token)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        statuses.push(reply.status().as_u16());
    }
    let took = started.elapsed();
    assert_eq!(statuses[0], 200, "{statuses:?}");
    assert!(statuses[1..].iter().all(|s| *s == 429), "{statuses:?}");
    // `/ready` answers 503 while the warm-up runs (at most its budget of seconds): on a busy
    // machine it may outlast the loop above.
    let started = Instant::now();
    let ready: Value = loop {
        let reply = client.get(format!("{base}/ready")).send().await.unwrap();
        let status = reply.status();
        let body: Value = reply.json().await.unwrap();
        if status == 200 {
            break body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not ready: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ready["period"], 1, "{ready}");
    eprintln!("100 advances with the token over TCP: 1 advanced, 99 refused in {took:?}");

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let output = child.wait_with_output();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "admin API {base} (bearer token created in {})",
            file.display()
        )),
        "the start line says where the token is: {stderr}"
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(!stdout.contains(&token) && !stderr.contains(&token));
    let advanced: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["path"] == ADVANCE && l["status"] == 200)
        .collect();
    assert_eq!(advanced.len(), 1, "{stdout}");
    assert_eq!(advanced[0]["who"]["sub"], "admin");
    assert_eq!(advanced[0]["interaction"], "period-advance");
}

// --- Sign-in lockouts lifted through the admin API (issue 17) --------------------------------

const UNLOCK: &str = "/authorization/unlock";

/// The demo app's authorization request, as a browser sends it (PKCE, the gateway as `aud`).
const AUTHORIZE: &str = "/auth/authorize?response_type=code&client_id=demo-app\
    &redirect_uri=http%3A%2F%2F127.0.0.1%3A8000%2Fcallback&scope=openid&state=s\
    &aud=http%3A%2F%2F127.0.0.1%3A8080%2Ffhir&code_challenge_method=S256\
    &code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// A sign-in at the embedded authorization server through the gateway's router, from `peer`,
/// on a login page of its own: 303 when it succeeds, 400 for a wrong password, 429 refused by
/// the throttle.
async fn sign_in(app: &Router, username: &str, password: &str, peer: &str) -> StatusCode {
    let page = send(app, Request::get(AUTHORIZE).body(Body::empty()).unwrap()).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let cookie = page.header(header::SET_COOKIE);
    let cookie = cookie.split(';').next().unwrap().to_string();
    let marker = "name=\"request_token\" value=\"";
    let start = page.text.find(marker).unwrap() + marker.len();
    let token = &page.text[start..start + 43];
    let mut login = Request::post("/auth/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, cookie)
        .body(Body::from(format!(
            "request_token={token}&username={username}&password={password}&action=allow"
        )))
        .unwrap();
    let peer: std::net::SocketAddr = peer.parse().unwrap();
    login
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    send(app, login).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_wrong_passwords_lock_the_user_and_an_administrator_lifts_it() {
    let upstream = upstream().await;
    // No back-off before the lockout (the test would wait it out); the source locks at 30.
    let setup = configured(
        &fhir_base(&upstream),
        &[
            (
                "FHIRSEAL__SMART__EMBEDDED__LOGIN_THROTTLE__BACKOFF_AFTER",
                "20",
            ),
            (
                "FHIRSEAL__SMART__EMBEDDED__LOGIN_THROTTLE__SOURCE_BACKOFF_AFTER",
                "0",
            ),
            (
                "FHIRSEAL__SMART__EMBEDDED__LOGIN_THROTTLE__SOURCE_LOCKOUT_AFTER",
                "30",
            ),
        ],
    )
    .await;
    let app = fhirseal::app::app(setup.state.clone());
    let (admin, lines) = router_over(&setup.state);
    let ward = "192.0.2.7:50000";
    let stats = |reply: &Reply, key: &str| reply.json[key].as_u64().unwrap();

    // Twenty wrong passwords lock the user name; then the right one is refused too.
    for attempt in 1..=20 {
        let status = sign_in(&app, "dr.grey", "wrong-guess", ward).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "attempt {attempt}");
    }
    assert_eq!(
        sign_in(&app, "dr.grey", "demo-doctor", ward).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    let before = call(
        &admin,
        "GET",
        "/authorization/login-stats",
        &good(ALICE),
        "",
    )
    .await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.text);
    assert_eq!(stats(&before, "locked_users"), 1, "{}", before.text);
    assert_eq!(stats(&before, "password_checks"), 20, "{}", before.text);

    // Without the token, or form-encoded as a web page could send it: refused, nothing lifted.
    let body = r#"{"username": "dr.grey"}"#;
    let bare = call(
        &admin,
        "POST",
        UNLOCK,
        &with(&good(ALICE), "authorization", None),
        body,
    )
    .await;
    assert_eq!(bare.status, StatusCode::UNAUTHORIZED, "{}", bare.text);
    let form = with(
        &good(ALICE),
        "content-type",
        Some("application/x-www-form-urlencoded"),
    );
    let form = call(&admin, "POST", UNLOCK, &form, "username=dr.grey").await;
    assert_eq!(
        form.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "{}",
        form.text
    );
    for (what, body) in [
        ("both", r#"{"username": "dr.grey", "source": "192.0.2.7"}"#),
        ("neither", "{}"),
        ("a misspelt key", r#"{"user": "dr.grey"}"#),
        ("an empty name", r#"{"username": ""}"#),
        ("a control character", r#"{"username": "dr.grey\n"}"#),
        ("not an address", r#"{"source": "ward-7"}"#),
    ] {
        let reply = call(&admin, "POST", UNLOCK, &good(ALICE), body).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{what}: {}",
            reply.text
        );
    }
    assert_eq!(
        sign_in(&app, "dr.grey", "demo-doctor", ward).await,
        StatusCode::TOO_MANY_REQUESTS,
        "still locked"
    );

    // The administrator lifts it: audited by the token's name; the right password then works.
    let lifted = call(&admin, "POST", UNLOCK, &good(ALICE), body).await;
    assert_eq!(lifted.status, StatusCode::OK, "{}", lifted.text);
    assert_eq!(lifted.json, json!({"username": "dr.grey", "lifted": true}));
    let line = audit_lines(&lines).pop().unwrap();
    assert_eq!(line["who"]["sub"], "alice", "{line}");
    assert_eq!(line["interaction"], "login-unlock", "{line}");
    assert_eq!(line["resources"], json!(["username:dr.grey"]), "{line}");
    assert_eq!(line["outcome"], "success", "{line}");
    assert_eq!(
        sign_in(&app, "dr.grey", "demo-doctor", ward).await,
        StatusCode::SEE_OTHER
    );
    // Nothing left to lift: said so.
    let again = call(&admin, "POST", UNLOCK, &good(BOB), body).await;
    assert_eq!(again.json, json!({"username": "dr.grey", "lifted": false}));

    // A source locked (30 failures from the ward's address, whoever's name): the right password
    // of another user is refused from there, until its lockout is lifted.
    for _ in 0..10 {
        sign_in(&app, "nurse.joy", "wrong-guess", ward).await;
    }
    assert_eq!(
        sign_in(&app, "pat.smith", "demo-patient", ward).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    let source = r#"{"source": "192.0.2.7"}"#;
    let lifted = call(&admin, "POST", UNLOCK, &good(BOB), source).await;
    assert_eq!(lifted.status, StatusCode::OK, "{}", lifted.text);
    assert_eq!(lifted.json, json!({"source": "192.0.2.7", "lifted": true}));
    assert_eq!(
        sign_in(&app, "pat.smith", "demo-patient", ward).await,
        StatusCode::SEE_OTHER
    );
    let after = call(&admin, "GET", "/authorization/login-stats", &good(BOB), "").await;
    assert_eq!(
        (
            stats(&after, "locked_users"),
            stats(&after, "locked_sources")
        ),
        (0, 0),
        "{}",
        after.text
    );
    let all = lines.lock().unwrap().join("\n");
    assert!(
        !all.contains("demo-") && !all.contains("wrong-guess"),
        "{all}"
    );
}

#[tokio::test]
async fn without_the_embedded_server_there_is_nothing_to_unlock() {
    let upstream = upstream().await;
    let setup = configured(
        &fhir_base(&upstream),
        &[("FHIRSEAL__SMART__EMBEDDED__ENABLED", "false")],
    )
    .await;
    let (admin, _) = router_over(&setup.state);
    let reply = call(
        &admin,
        "POST",
        UNLOCK,
        &good(ALICE),
        r#"{"username": "dr.grey"}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text);
    assert!(
        reply.json["error"]
            .as_str()
            .unwrap()
            .contains("smart.embedded")
    );
    let stats = call(
        &admin,
        "GET",
        "/authorization/login-stats",
        &good(ALICE),
        "",
    )
    .await;
    assert_eq!(stats.status, StatusCode::NOT_FOUND, "{}", stats.text);
}
