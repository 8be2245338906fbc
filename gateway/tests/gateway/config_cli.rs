//! `fhirseal config check`: what the gateway would run with, or one line naming file and key.

use std::process::{Command, Output};

fn fhirseal(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fhirseal"));
    command.args(args);
    // The test's own environment must not leak overrides in.
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("FHIRSEAL__")) {
        command.env_remove(name);
    }
    command.envs(vars.iter().copied());
    command.output().unwrap()
}

#[test]
fn check_summarises_the_defaults_without_secrets() {
    let out = fhirseal(
        &["config", "check"],
        &[(
            "FHIRSEAL__AUTHORITY__DATABASE",
            "postgres://fhirseal:s3cret@db.internal/fhirseal",
        )],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("FHIR base:        http://127.0.0.1:8080/fhir"),
        "{text}"
    );
    assert!(
        text.contains("embedded auth:    http://127.0.0.1:8080/auth (3 users, 1 clients)"),
        "{text}"
    );
    assert!(text.contains("admin API:        127.0.0.1:9090"), "{text}");
    assert!(
        text.contains("admin tokens:     fhirseal-data/admin.token"),
        "{text}"
    );
    assert!(text.contains("audit lines:      standard output"), "{text}");
    assert!(
        text.contains("postgres://fhirseal:***@db.internal/fhirseal"),
        "{text}"
    );
    assert!(
        !text.contains("s3cret") && !text.contains("argon2"),
        "{text}"
    );
}

#[test]
fn a_bad_configuration_is_one_line_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:1\"\npublic_url = \"ftp://x\"\n[upstream]\nbase_url = \"http://u\"\n",
    )
    .unwrap();
    let out = fhirseal(
        &["config", "check", "--config", path.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(path.to_str().unwrap()) && err.contains("`server.public_url`"),
        "{err}"
    );
}
