//! The gateway's configuration: embedded defaults, files, environment overrides, and errors that
//! name the file (or variable) and the key.

use std::path::Path;

use std::time::Duration;

use fhirseal::config::JobSettings;
use fhirseal::config::{Config, ConfigError};

use crate::support::vars;

fn write(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("fhirseal.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const MINIMAL: &str = r#"
[server]
listen = "0.0.0.0:9000"
public_url = "https://fhir.hospital.example/"

[upstream]
base_url = "https://upstream.internal/r4"

[[smart.issuers]]
issuer = "https://login.hospital.example"
jwks_uri = "https://login.hospital.example/jwks"
claims = { patient = ["context.patient"] }
"#;

fn fails(file: Option<&Path>, pairs: &[(&str, &str)]) -> ConfigError {
    Config::load(file, vars(pairs)).expect_err("the configuration must be refused")
}

#[test]
fn the_embedded_defaults_run_the_demo() {
    let config = Config::load(None, vars(&[])).unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.fhir_base, "http://127.0.0.1:8080/fhir");
    assert_eq!(config.upstream.base_url(), "http://127.0.0.1:18090/fhir");
    assert_eq!(
        config.authority_database,
        format!(
            "sqlite:{}",
            Path::new("fhirseal-data")
                .join("authority.sqlite3")
                .display()
        )
    );
    assert!(config.policy_files.is_empty());
    assert!(config.issuers.is_empty());
    let embedded = config.embedded.as_ref().unwrap();
    assert_eq!(embedded.issuer, "http://127.0.0.1:8080/auth");
    assert_eq!(embedded.fhir_base, config.fhir_base);
    let names: Vec<&str> = embedded.users.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["dr.grey", "nurse.joy", "pat.smith"]);
    // Debug output carries no password hash.
    assert!(!format!("{config:?}").contains("argon2id"));
}

#[test]
fn a_file_with_an_external_issuer_and_paths_relative_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{MINIMAL}\n[policy]\nfiles = [\"policies/h.toml\"]\n[authority]\ndatabase = \"sqlite:state/a.db\"\n"
    );
    let config = Config::load(Some(&write(dir.path(), &text)), vars(&[])).unwrap();
    assert_eq!(config.public_url, "https://fhir.hospital.example");
    assert_eq!(config.fhir_base, "https://fhir.hospital.example/fhir");
    assert!(config.embedded.is_none());
    assert_eq!(config.issuers.len(), 1);
    assert_eq!(
        config.issuers[0].audience,
        ["https://fhir.hospital.example/fhir"]
    );
    assert_eq!(config.issuers[0].claims.patient, ["context.patient"]);
    assert_eq!(config.policy_files, [dir.path().join("policies/h.toml")]);
    assert_eq!(
        config.authority_database,
        format!("sqlite:{}", dir.path().join("state/a.db").display())
    );
    assert_eq!(
        config.authority_kek_file,
        Some(dir.path().join("fhirseal-data/authority.kek"))
    );
}

#[test]
fn opaque_tokens_can_be_introspected_with_a_secret_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "s3cret-value\n").unwrap();
    let text = format!(
        "{MINIMAL}\n[smart.introspection]\nendpoint = \"https://login.hospital.example/introspect\"\n\
         client_id = \"fhirseal\"\nclient_secret_file = \"secret\"\nclaims = {{ patient = [\"patient_id\"] }}\n"
    );
    let config = Config::load(Some(&write(dir.path(), &text)), vars(&[])).unwrap();
    let introspection = config.introspection.as_ref().unwrap();
    assert_eq!(introspection.client_secret.as_deref(), Some("s3cret-value"));
    assert_eq!(introspection.claims.patient, ["patient_id"]);
    assert!(!format!("{config:?}").contains("s3cret"));

    let text = text.replace(
        "client_secret_file = \"secret\"",
        "client_secret_file = \"nope\"",
    );
    let e = fails(Some(&write(dir.path(), &text)), &[]);
    assert_eq!(e.key, "smart.introspection.client_secret_file");
}

#[test]
fn environment_variables_override_any_key() {
    let config = Config::load(
        None,
        vars(&[
            ("FHIRSEAL__UPSTREAM__BASE_URL", "https://fhir.internal/r4"),
            ("FHIRSEAL__SERVER__MAX_BODY_BYTES", "2048"),
            (
                "FHIRSEAL__AUTHORITY__DATABASE",
                "postgres://fhirseal@db/fhirseal",
            ),
            ("FHIRSEAL__AUTHORITY__KEK_FROM_ENV", "true"),
            ("UNRELATED", "x"),
        ]),
    )
    .unwrap();
    assert_eq!(config.upstream.base_url(), "https://fhir.internal/r4");
    assert_eq!(config.max_body_bytes, 2048);
    assert_eq!(config.authority_database, "postgres://fhirseal@db/fhirseal");
    assert_eq!(config.authority_kek_file, None);
    // A string key stays a string even when the value looks like a number.
    let config = Config::load(None, vars(&[("FHIRSEAL__SERVER__DATA_DIR", "2026")])).unwrap();
    assert_eq!(config.data_dir, Path::new("2026"));
}

/// The embedded authorization server checks its own keys; its errors still name the key below
/// `smart.embedded` and the variable that set it, not "the embedded defaults".
#[test]
fn an_embedded_server_key_set_from_the_environment_is_named_with_its_variable() {
    let e = fails(
        None,
        &[(
            "FHIRSEAL__SMART__EMBEDDED__LOGIN_THROTTLE__LOCKOUT_AFTER",
            "0",
        )],
    );
    assert_eq!(e.key, "smart.embedded.login_throttle.lockout_after", "{e}");
    assert!(
        e.source
            .contains("FHIRSEAL__SMART__EMBEDDED__LOGIN_THROTTLE__LOCKOUT_AFTER"),
        "{e}"
    );
}

#[test]
fn every_error_names_where_and_which_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), &MINIMAL.replace("listen =", "lisen ="));
    let e = fails(Some(&file), &[]);
    assert_eq!(e.source, file.display().to_string());
    assert_eq!(e.key, "server.lisen");
    assert!(e.problem.contains("unknown field"), "{e}");

    let file = write(dir.path(), &MINIMAL.replace("0.0.0.0:9000", "everywhere"));
    let e = fails(Some(&file), &[]);
    assert_eq!(
        (e.key.as_str(), e.source.as_str()),
        ("server.listen", file.display().to_string().as_str())
    );

    let file = write(
        dir.path(),
        &MINIMAL
            .replace("leeway", "x")
            .replace("claims = {", "leeway_seconds = 9999\nclaims = {"),
    );
    assert_eq!(
        fails(Some(&file), &[]).key,
        "smart.issuers[0].leeway_seconds"
    );

    let file = write(
        dir.path(),
        &MINIMAL.replace("https://upstream.internal/r4", "upstream.internal"),
    );
    let e = fails(Some(&file), &[]);
    assert!(e.key.starts_with("upstream"), "{e}");

    let e = fails(Some(&dir.path().join("missing.toml")), &[]);
    assert!(
        e.to_string().contains("missing.toml") && e.to_string().contains("cannot be read"),
        "{e}"
    );

    let file = write(dir.path(), "[server\nlisten = 1");
    let e = fails(Some(&file), &[]);
    assert_eq!(e.key, "");
    assert!(
        e.to_string().starts_with(&file.display().to_string()),
        "{e}"
    );

    // The embedded server's own keys, with their full path.
    let e = fails(
        None,
        &[("FHIRSEAL__SMART__EMBEDDED__ISSUER", "https://elsewhere")],
    );
    assert_eq!(e.key, "smart.embedded.issuer");
    assert!(
        e.source.contains("FHIRSEAL__SMART__EMBEDDED__ISSUER"),
        "{e}"
    );

    // An error in an overridden key is blamed on the variable, not on the file.
    let e = fails(None, &[("FHIRSEAL__SERVER__LISTEN", "nowhere")]);
    assert_eq!(e.source, "environment variable FHIRSEAL__SERVER__LISTEN");
    assert_eq!(e.key, "server.listen");
    let e = fails(None, &[("FHIRSEAL__SERVER__LISTEN__PORT", "1")]);
    assert!(e.source.contains("FHIRSEAL__SERVER__LISTEN__PORT"), "{e}");
    let e = fails(None, &[("FHIRSEAL__", "1")]);
    assert!(e.problem.contains("names no key"), "{e}");

    // No authorization server at all: nothing could ever be authenticated.
    let e = fails(None, &[("FHIRSEAL__SMART__EMBEDDED__ENABLED", "false")]);
    assert_eq!(e.key, "smart");
    let e = fails(
        None,
        &[
            ("FHIRSEAL__AUTHORITY__KEK_FROM_ENV", "true"),
            ("FHIRSEAL__AUTHORITY__KEK_FILE", "k"),
        ],
    );
    assert_eq!(e.key, "authority.kek_file");
}

#[test]
fn replicas_bounds_are_small_by_default_set_in_a_file_and_checked() {
    // The revocation bound across replicas, and the update job's pace, lease and chunk size.
    let config = Config::load(None, vars(&[])).unwrap();
    assert_eq!(config.registration_cache_seconds, 5);
    assert_eq!(config.ct_update, JobSettings::default());
    assert_eq!(config.ct_update.interval, Duration::from_secs(30));
    assert_eq!(config.ct_update.lease_seconds, 300);
    assert_eq!(config.ct_update.page_size, 100);

    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{MINIMAL}\n[authority]\nregistration_cache_seconds = 0\n\
         [ciphertext_update]\ninterval_seconds = 1\nlease_seconds = 3\npage_size = 1\n\
         [search]\ncandidate_cap = 50\ncursor_seconds = 30\n"
    );
    let file = write(dir.path(), &text);
    let config = Config::load(Some(&file), vars(&[])).unwrap();
    assert_eq!(config.search.candidate_cap, 50);
    assert_eq!(config.search.cursor_seconds, 30);
    assert_eq!(config.registration_cache_seconds, 0, "0: no cache");
    assert_eq!(config.ct_update.interval, Duration::from_secs(1));
    assert_eq!(config.ct_update.lease_seconds, 3);
    assert_eq!(config.ct_update.page_size, 1);

    for (key, value) in [
        ("authority.registration_cache_seconds", "3601"),
        ("ciphertext_update.interval_seconds", "0"),
        ("ciphertext_update.lease_seconds", "0"),
        ("ciphertext_update.lease_seconds", "86401"),
        ("ciphertext_update.page_size", "0"),
        ("ciphertext_update.page_size", "1001"),
        ("search.candidate_cap", "0"),
        ("search.candidate_cap", "1001"),
        ("search.cursor_seconds", "0"),
    ] {
        let (section, name) = key.split_once('.').unwrap();
        let file = write(
            dir.path(),
            &format!("{MINIMAL}\n[{section}]\n{name} = {value}\n"),
        );
        let e = fails(Some(&file), &[]);
        assert_eq!(e.key, key, "{e}");
        assert_eq!(e.source, file.display().to_string(), "{e}");
        assert!(e.problem.starts_with("must be from"), "{e}");
    }
    let e = fails(
        None,
        &[("FHIRSEAL__CIPHERTEXT_UPDATE__LEASE_SECONDS", "-1")],
    );
    assert_eq!(
        e.source,
        "environment variable FHIRSEAL__CIPHERTEXT_UPDATE__LEASE_SECONDS"
    );
    assert_eq!(e.key, "ciphertext_update.lease_seconds", "{e}");
    let file = write(
        dir.path(),
        &format!("{MINIMAL}\n[ciphertext_update]\nlease = 3\n"),
    );
    let e = fails(Some(&file), &[]);
    assert_eq!(e.key, "ciphertext_update.lease", "an unknown key: {e}");
}

/// The warm-up after a start: on for 5 s and 32 callers by default, 0 turns it (or its caller
/// step) off, and a value out of range names its key.
#[test]
fn the_warm_up_is_bounded_and_can_be_turned_off() {
    let config = Config::load(None, vars(&[])).unwrap();
    assert_eq!(config.warm_up, (5, 32));
    let config = Config::load(
        None,
        vars(&[
            ("FHIRSEAL__SERVER__WARM_UP_SECONDS", "0"),
            ("FHIRSEAL__SERVER__WARM_UP_CALLERS", "0"),
        ]),
    )
    .unwrap();
    assert_eq!(config.warm_up, (0, 0));
    for (key, value) in [("warm_up_seconds", "301"), ("warm_up_callers", "1001")] {
        let var = format!("FHIRSEAL__SERVER__{}", key.to_uppercase());
        let e = fails(None, &[(var.as_str(), value)]);
        assert_eq!(e.key, format!("server.{key}"), "{e}");
        assert!(e.problem.starts_with("must be from 0"), "{e}");
    }
}

#[test]
fn the_defaults_as_a_file_resolve_paths_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    // Loaded as a file, the defaults' relative paths move under the file's folder.
    let copy = write(dir.path(), fhirseal::config::DEFAULTS);
    let config = Config::load(Some(&copy), vars(&[])).unwrap();
    assert_eq!(config.data_dir, dir.path().join("fhirseal-data"));
}

#[test]
fn the_admin_api_listens_on_loopback_only_or_not_at_all() {
    // Absent from a file: the default port, on loopback.
    let dir = tempfile::tempdir().unwrap();
    let config = Config::load(Some(&write(dir.path(), MINIMAL)), vars(&[])).unwrap();
    assert_eq!(
        config.admin_listen.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:9090")
    );
    let config = Config::load(None, vars(&[])).unwrap();
    assert_eq!(
        config.admin_listen.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:9090")
    );
    for loopback in ["127.0.0.1:9191", "[::1]:9191", "127.0.0.2:9191"] {
        let config =
            Config::load(None, vars(&[("FHIRSEAL__SERVER__ADMIN_LISTEN", loopback)])).unwrap();
        assert_eq!(config.admin_listen.unwrap().port(), 9191, "{loopback}");
    }
    // "" turns it off, from the environment or a file.
    let config = Config::load(None, vars(&[("FHIRSEAL__SERVER__ADMIN_LISTEN", "")])).unwrap();
    assert_eq!(config.admin_listen, None);
    let text = MINIMAL.replace("[upstream]", "admin_listen = \"\"\n\n[upstream]");
    let config = Config::load(Some(&write(dir.path(), &text)), vars(&[])).unwrap();
    assert_eq!(config.admin_listen, None);

    // Anything reachable from another machine is refused, naming the key.
    for exposed in [
        "0.0.0.0:9090",
        "[::]:9090",
        "10.1.2.3:9090",
        "192.168.0.5:9090",
    ] {
        let e = fails(None, &[("FHIRSEAL__SERVER__ADMIN_LISTEN", exposed)]);
        assert_eq!(e.key, "server.admin_listen", "{exposed}");
        assert!(e.problem.contains("not a loopback address"), "{e}");
        assert_eq!(
            e.source,
            "environment variable FHIRSEAL__SERVER__ADMIN_LISTEN"
        );
    }
    let text = MINIMAL.replace(
        "[upstream]",
        "admin_listen = \"0.0.0.0:9090\"\n\n[upstream]",
    );
    let file = write(dir.path(), &text);
    let e = fails(Some(&file), &[]);
    assert_eq!(
        (e.key.as_str(), e.source.as_str()),
        ("server.admin_listen", file.display().to_string().as_str())
    );
    for malformed in ["localhost:9090", "9090", "127.0.0.1"] {
        let e = fails(None, &[("FHIRSEAL__SERVER__ADMIN_LISTEN", malformed)]);
        assert_eq!(e.key, "server.admin_listen", "{malformed}");
    }
}

#[test]
fn the_audit_log_goes_to_stdout_or_a_file_beside_the_configuration() {
    let config = Config::load(None, vars(&[])).unwrap();
    assert_eq!(config.audit_log, None);
    let dir = tempfile::tempdir().unwrap();
    let text = MINIMAL.replace(
        "[upstream]",
        "audit_log = \"logs/audit.jsonl\"\n\n[upstream]",
    );
    let config = Config::load(Some(&write(dir.path(), &text)), vars(&[])).unwrap();
    assert_eq!(config.audit_log, Some(dir.path().join("logs/audit.jsonl")));
    let e = fails(None, &[("FHIRSEAL__SERVER__AUDIT_LOG", "")]);
    assert_eq!(e.key, "server.audit_log");
}

/// The chain's commits are durable unless `server.audit_commit = "fast"`; anything else is a
/// start-up error naming the key.
#[test]
fn audit_commits_are_durable_unless_the_operator_chooses_fast() {
    use fhirseal::config::AuditCommit;

    let config = Config::load(None, vars(&[])).unwrap();
    assert_eq!(config.audit_commit, AuditCommit::Durable);
    for (value, expected) in [
        ("durable", AuditCommit::Durable),
        ("fast", AuditCommit::Fast),
    ] {
        let config =
            Config::load(None, vars(&[("FHIRSEAL__SERVER__AUDIT_COMMIT", value)])).unwrap();
        assert_eq!(config.audit_commit, expected, "{value}");
    }
    for value in ["Fast", "off", ""] {
        let e = fails(None, &[("FHIRSEAL__SERVER__AUDIT_COMMIT", value)]);
        assert_eq!(e.key, "server.audit_commit", "{value}: {e}");
        assert!(e.to_string().contains("docs/audit.md"), "{e}");
    }
}

/// The audit chain is on by default (docs/audit.md says why), with checkpoints every 1000
/// records or 60 seconds; both bounds are checked, each error naming its key.
#[test]
fn the_audit_chain_is_on_by_default_and_its_checkpoints_bounded() {
    use fhirseal_authority::CheckpointPolicy;

    let config = Config::load(None, vars(&[])).unwrap();
    assert_eq!(config.audit_chain, Some(CheckpointPolicy::DEFAULT));
    let config = Config::load(None, vars(&[("FHIRSEAL__SERVER__AUDIT_CHAIN", "false")])).unwrap();
    assert_eq!(config.audit_chain, None);
    let config = Config::load(
        None,
        vars(&[
            ("FHIRSEAL__SERVER__AUDIT_CHECKPOINT_RECORDS", "10"),
            ("FHIRSEAL__SERVER__AUDIT_CHECKPOINT_SECONDS", "5"),
        ]),
    )
    .unwrap();
    assert_eq!(
        config.audit_chain,
        Some(CheckpointPolicy::new(10, 5).unwrap())
    );
    for (variable, value, key) in [
        (
            "FHIRSEAL__SERVER__AUDIT_CHECKPOINT_RECORDS",
            "0",
            "server.audit_checkpoint_records",
        ),
        (
            "FHIRSEAL__SERVER__AUDIT_CHECKPOINT_RECORDS",
            "1000001",
            "server.audit_checkpoint_records",
        ),
        (
            "FHIRSEAL__SERVER__AUDIT_CHECKPOINT_SECONDS",
            "0",
            "server.audit_checkpoint_seconds",
        ),
        (
            "FHIRSEAL__SERVER__AUDIT_CHECKPOINT_SECONDS",
            "86401",
            "server.audit_checkpoint_seconds",
        ),
    ] {
        let e = fails(None, &[(variable, value)]);
        assert_eq!(e.key, key, "{variable}={value}: {e}");
    }
}
