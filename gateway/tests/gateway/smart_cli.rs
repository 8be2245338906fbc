//! `fhirseal smart hash-password`: the hash it prints is one the embedded server accepts.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use argon2::{Argon2, PasswordHash, PasswordVerifier};

fn hash_password(stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fhirseal"))
        .args(["smart", "hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn the_printed_hash_verifies_the_password_and_only_it() {
    let out = hash_password(b"correct horse battery staple\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let hash = PasswordHash::new(printed.trim()).unwrap();
    assert_eq!(hash.algorithm.as_str(), "argon2id");
    assert!(
        Argon2::default()
            .verify_password(b"correct horse battery staple", &hash)
            .is_ok()
    );
    assert!(
        Argon2::default()
            .verify_password(b"correct horse", &hash)
            .is_err()
    );
    // The password itself is never printed.
    assert!(!printed.contains("horse"));
    // Two hashes of one password differ (random salt).
    let again = hash_password(b"correct horse battery staple\n");
    assert_ne!(printed, String::from_utf8(again.stdout).unwrap());
}

#[test]
fn an_empty_or_multi_line_password_is_refused() {
    for input in [&b""[..], b"\n", b"alpha\nbravo\n"] {
        let out = hash_password(input);
        assert_eq!(out.status.code(), Some(1), "{input:?}");
        assert!(out.stdout.is_empty());
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.starts_with("error: "), "{err}");
        assert!(!err.contains("alpha") && !err.contains("bravo"), "{err}");
    }
}
