//! `fhirseal authority …` run as a real process, as an administrator would.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::json;

use crate::support::{failed, succeeded};

fn fhirseal(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fhirseal"))
        .arg("authority")
        .args(args)
        .env("FHIRSEAL_DATA_DIR", dir)
        .env_remove("FHIRSEAL_DATABASE")
        .env_remove("FHIRSEAL_AUTHORITY_KEK")
        .env_remove("FHIRSEAL_AUTHORITY_KEK_FILE")
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    succeeded(&args, fhirseal(dir, args))
}

fn fails(dir: &Path, args: &[&str]) -> (i32, String) {
    failed(&args, fhirseal(dir, args))
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

#[test]
fn an_administrator_runs_the_authority() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let init = json(&ok(
        d,
        &[
            "init",
            "--user-depth",
            "8",
            "--time-depth",
            "6",
            "--period",
            "12h",
            "--json",
        ],
    ));
    assert_eq!(init["period_seconds"], 43_200);
    assert!(d.join("authority.kek").exists() && d.join("authority.sqlite3").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("authority.kek"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the key-encryption key is readable by its owner only"
        );
    }
    let (code, err) = fails(d, &["init"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: an authority already exists") && err.lines().count() == 1,
        "{err}"
    );

    ok(
        d,
        &[
            "users",
            "add",
            "Practitioner/1",
            "--attributes",
            "role:physician,dept:cardiology",
        ],
    );
    ok(
        d,
        &[
            "authorities",
            "delegate",
            "cardiology",
            "--attributes",
            "dept:cardiology,role:nurse",
        ],
    );
    let nurse = json(&ok(
        d,
        &[
            "users",
            "add",
            "Practitioner/2",
            "--attributes",
            "role:nurse",
            "--authority",
            "cardiology",
            "--json",
        ],
    ));
    assert_eq!(nurse["issued_by"], "cardiology");
    let (_, err) = fails(
        d,
        &[
            "users",
            "add",
            "Practitioner/3",
            "--attributes",
            "role:physician",
            "--authority",
            "cardiology",
        ],
    );
    assert!(
        err.contains("may not issue attribute role:physician"),
        "{err}"
    );

    let users = json(&ok(d, &["users", "list", "--json"]));
    assert_eq!(users.as_array().unwrap().len(), 2);
    let text = ok(d, &["users", "show", "Practitioner/1"]);
    assert!(
        text.contains("active") && text.contains("role:physician"),
        "{text}"
    );

    let revoked = json(&ok(d, &["authorities", "revoke", "cardiology", "--json"]));
    assert_eq!(
        revoked["revoked"].as_array().unwrap().len(),
        2,
        "the sub-authority and its nurse"
    );
    let (_, err) = fails(d, &["users", "revoke", "Practitioner/2"]);
    assert!(err.contains("already revoked at period 0"), "{err}");
    let (_, err) = fails(d, &["users", "show", "Practitioner/9"]);
    assert!(
        err.contains("not registered") && err.contains("users list"),
        "{err}"
    );
    let (_, err) = fails(d, &["authorities", "revoke", "nowhere"]);
    assert!(err.contains("authorities list"), "{err}");

    let period = json(&ok(d, &["period", "advance", "--json"]));
    assert_eq!(period["period"], 1);
    let public = json(&ok(d, &["export-public"]));
    assert_eq!(public["format"], "fhirseal-authority-public/1");
    assert_eq!(public["period"], 1);

    // A wrong key-encryption key: one line, no key material, nothing changed.
    let out = Command::new(env!("CARGO_BIN_EXE_fhirseal"))
        .args(["authority", "users", "list"])
        .env("FHIRSEAL_DATA_DIR", d)
        .env("FHIRSEAL_AUTHORITY_KEK", "11".repeat(32))
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("does not open with this key-encryption key") && !err.contains("1111"),
        "{err}"
    );
    assert_eq!(
        json(&ok(d, &["users", "list", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let (code, _) = fails(d, &["users", "frobnicate"]);
    assert_eq!(code, 64, "usage errors exit with EX_USAGE");
}

#[test]
fn two_processes_issuing_at_once_never_share_a_leaf() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["init", "--user-depth", "8", "--time-depth", "4"]);
    let spawn = |who: &str| {
        let script = (0..6)
            .map(|i| {
                format!(
                    "\"{}\" authority users add Practitioner/{who}-{i} --attributes a || exit 1",
                    env!("CARGO_BIN_EXE_fhirseal")
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("FHIRSEAL_DATA_DIR", d)
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn("a"), spawn("b"));
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    let users = json(&ok(d, &["users", "list", "--json"]));
    let mut leaves: Vec<u64> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["leaf"].as_u64().unwrap())
        .collect();
    leaves.sort_unstable();
    assert_eq!(leaves, (0..12).collect::<Vec<_>>());
}

/// Issue 13: an authority made before schema 4 holds keys in the retired layout. Every command
/// that opens it, the gateway included, refuses with one line naming the store and the command
/// to run; `migrate-keys` re-issues the keys, and running it again does nothing.
#[test]
fn an_authority_in_the_retired_layout_names_its_migration_and_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["init", "--user-depth", "8", "--time-depth", "6"]);
    ok(d, &["users", "add", "Practitioner/1", "--attributes", "a"]);
    ok(d, &["users", "add", "Practitioner/2", "--attributes", "b"]);
    ok(d, &["authorities", "delegate", "ward", "--attributes", "a"]);
    ok(d, &["users", "revoke", "Practitioner/2"]);
    // What a release before schema 4 left: version 3 and no key-layout mark.
    let db = d.join("authority.sqlite3");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "DELETE FROM fhirseal_meta WHERE key = 'key_layout';
             UPDATE fhirseal_meta SET value = 3 WHERE key = 'schema_version';",
        )
        .unwrap();

    let refused = |err: &str| {
        err.contains(&format!(
            "the authority at {} holds keys in the retired layout",
            db.display()
        )) && err.contains("run `fhirseal authority migrate-keys`")
            && err.lines().count() == 1
    };
    for args in [
        &["users", "list"][..],
        &["period", "show"],
        &["export-public"],
    ] {
        let (code, err) = fails(d, args);
        assert_eq!(code, 1, "{args:?}");
        assert!(
            err.starts_with("error: ") && refused(&err),
            "{args:?}: {err}"
        );
    }
    for args in [&["serve"][..], &["ciphertexts", "update"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_fhirseal"))
            .args(args)
            .env_clear()
            .env("FHIRSEAL__SERVER__DATA_DIR", d)
            .env("FHIRSEAL__SERVER__LISTEN", "127.0.0.1:0")
            .env("FHIRSEAL__SERVER__ADMIN_LISTEN", "")
            .output()
            .unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.starts_with("error: the attribute authority: ") && refused(&err),
            "{args:?}: {err}"
        );
    }

    let migrated = json(&ok(d, &["migrate-keys", "--json"]));
    assert_eq!(migrated["migrated"], true, "{migrated}");
    assert_eq!(
        (
            &migrated["users"],
            &migrated["authorities"],
            &migrated["destroyed"],
            &migrated["period"]
        ),
        (&json!(1), &json!(1), &json!(1), &json!(1)),
        "{migrated}"
    );
    assert!(migrated["job"].as_u64().is_some(), "{migrated}");
    let again = ok(d, &["migrate-keys"]);
    assert!(again.contains("nothing to do"), "{again}");
    assert_eq!(json(&ok(d, &["period", "show", "--json"]))["period"], 1);
    let users = json(&ok(d, &["users", "list", "--json"]));
    assert_eq!(users.as_array().unwrap().len(), 2);
    assert!(ok(d, &["users", "show", "Practitioner/2"]).contains("revoked since period 0"));
}

#[test]
fn the_user_depth_says_what_it_costs() {
    let help = ok(Path::new("."), &["init", "--help"]);
    assert!(
        help.contains("--user-depth") && help.contains("node keys") && help.contains("44 KB"),
        "{help}"
    );
}
