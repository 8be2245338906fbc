//! `fhirseal config check`: what the gateway would run with, or one line naming file and key;
//! and the production example the container image is for loads, with its secrets in files.

use std::process::{Command, Output};

fn fhirseal(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fhirseal"));
    command.args(args);
    // The test's own environment must not leak overrides in.
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("FHIRSEAL_")) {
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

/// The production example (`gateway/config/production.example.toml`), as the container image
/// finds it through `FHIRSEAL_CONFIG`: it loads with its secrets supplied as files and the
/// database URL from the environment, runs none of the embedded defaults, and holds no secret.
#[test]
fn the_production_example_loads_with_its_secrets_from_files_and_no_embedded_defaults() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/production.example.toml"
    );
    let text = std::fs::read_to_string(example).unwrap();
    for inline in [
        "password_hash",
        "[[smart.embedded.users]]",
        "client_secret =",
        "token =",
        "s3cret",
    ] {
        assert!(!text.contains(inline), "the example holds {inline:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let secret = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path.display().to_string()
    };
    let tokens = secret(
        "admin-token",
        "ops-oncall 0123456789abcdef0123456789abcdef0123456789abcdef\n",
    );
    let upstream = secret("upstream-secret", "upstream-s3cret\n");
    let out = fhirseal(
        &["config", "check"],
        &[
            ("FHIRSEAL_CONFIG", example),
            ("FHIRSEAL__SERVER__ADMIN_TOKEN_FILE", &tokens),
            ("FHIRSEAL__UPSTREAM__AUTH__CLIENT_SECRET_FILE", &upstream),
            (
                "FHIRSEAL__AUTHORITY__DATABASE",
                "postgres://fhirseal:db-s3cret@db.internal:5432/fhirseal",
            ),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for line in [
        "listen:           0.0.0.0:8080",
        "admin API:        127.0.0.1:9090",
        "FHIR base:        https://fhir.hospital.example/fhir",
        "upstream:         https://fhir-store.internal/r4",
        "authority:        postgres://fhirseal:***@db.internal:5432/fhirseal",
        "KEK:              /run/secrets/fhirseal-kek",
        "policy:           /etc/fhirseal/policy.toml",
        "trusted issuer:   https://login.hospital.example/realms/clinic",
        "embedded auth:    off",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
    assert!(
        text.contains(&format!("admin tokens:     ops-oncall from {tokens}")),
        "{text}"
    );
    assert!(
        !text.contains("s3cret") && !text.contains("0123456789abcdef"),
        "{text}"
    );

    // Without its secrets it does not start on something else: it names what is missing.
    let out = fhirseal(&["config", "check"], &[("FHIRSEAL_CONFIG", example)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("`server.admin_token_file`")
            && err.contains("/run/secrets/fhirseal-admin-token"),
        "{err}"
    );
}
