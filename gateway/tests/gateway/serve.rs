//! `fhirseal serve`, the built binary: it serves on the configured address, writes one audit line
//! per request to standard output, drains requests in flight on SIGTERM and exits 0; a taken
//! address or a bad configuration is one line naming it, and exit status 1.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use fhirseal::config::DEFAULTS;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{Spawned, free_port};

/// The drain bound of `fhirseal serve`, plus start-up slack.
const EXIT_BOUND: Duration = Duration::from_secs(15);

/// `fhirseal serve --config {dir}/gateway.toml` (the embedded defaults as a file, so the state
/// goes under `dir`) on `listen` and `admin` (`""`: no admin API), with `upstream` as the FHIR
/// server.
fn spawn(dir: &Path, listen: &str, admin: &str, upstream: &str) -> Spawned {
    let file = dir.join("gateway.toml");
    std::fs::write(&file, DEFAULTS).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_fhirseal"))
        .args(["serve", "--config"])
        .arg(&file)
        .env_clear()
        .env("FHIRSEAL__SERVER__LISTEN", listen)
        .env("FHIRSEAL__SERVER__PUBLIC_URL", format!("http://{listen}"))
        .env("FHIRSEAL__SERVER__ADMIN_LISTEN", admin)
        .env("FHIRSEAL__UPSTREAM__BASE_URL", format!("{upstream}/fhir"))
        .env("FHIRSEAL__UPSTREAM__MAX_RETRIES", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Spawned::new(child)
}

/// Waits up to `bound` for `child` to exit, then collects its output; kills it if it does not.
fn exit_within(mut child: Spawned, bound: Duration) -> (Output, Duration) {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > bound {
            let _ = child.kill();
            let output = child.wait_with_output();
            panic!(
                "still running after {bound:?}; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = started.elapsed();
    (child.wait_with_output(), elapsed)
}

fn terminate(child: &Spawned) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Polls the discovery document until it answers (the authority is created on first start).
async fn wait_ready(client: &reqwest::Client, base: &str, child: &mut Spawned) -> Value {
    let started = Instant::now();
    loop {
        if let Ok(response) = client
            .get(format!("{base}/fhir/.well-known/smart-configuration"))
            .send()
            .await
        {
            assert_eq!(response.status(), 200);
            return response.json().await.unwrap();
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "fhirseal serve exited before answering"
        );
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "fhirseal serve did not answer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn capability_statement() -> Value {
    json!({"resourceType": "CapabilityStatement", "status": "active", "date": "2026-11-01",
           "kind": "instance", "fhirVersion": "4.0.1", "format": ["json"],
           "rest": [{"mode": "server"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_audits_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockServer::start().await;
    // A slow upstream, so that a request is still in flight when the stop comes.
    Mock::given(method("GET"))
        .and(path("/fhir/metadata"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(capability_statement())
                .set_delay(Duration::from_millis(1500)),
        )
        .mount(&upstream)
        .await;
    let listen = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{listen}");
    let mut child = spawn(dir.path(), &listen, &admin, &upstream.uri());
    let client = reqwest::Client::new();

    let discovery = wait_ready(&client, &base, &mut child).await;
    assert_eq!(discovery["issuer"], format!("{base}/auth"));
    // Transparent huge pages are off for the process (`huge_pages_off`): kernels since 5.0 say
    // so in its status.
    #[cfg(target_os = "linux")]
    {
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        let thp = status
            .lines()
            .find_map(|line| line.strip_prefix("THP_enabled:"))
            .map(str::trim);
        assert_eq!(thp, Some("0"), "{status}");
    }
    assert!(dir.path().join("fhirseal-data/authority.kek").exists());
    // The admin API answers on its own address, and not on the FHIR one.
    let live = client
        .get(format!("http://{admin}/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let not_here = client.get(format!("{base}/live")).send().await.unwrap();
    assert_eq!(not_here.status(), 404);

    let in_flight = tokio::spawn({
        let client = client.clone();
        let url = format!("{base}/fhir/metadata?_summary=true");
        async move { client.get(url).send().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    terminate(&child);
    // The request in flight completes during the drain.
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let statement: Value = response.json().await.unwrap();
    assert_eq!(statement["resourceType"], "CapabilityStatement");

    let (output, took) = exit_within(child, EXIT_BOUND);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}\n{stderr}", output.status);
    assert!(took < EXIT_BOUND);
    assert!(
        stderr.contains(&format!("{base}/fhir"))
            && stderr.contains(&format!("{base}/fhir/.well-known/smart-configuration")),
        "the start-up line names the FHIR base and discovery: {stderr}"
    );
    // After the stop, nothing listens.
    assert!(std::net::TcpStream::connect(&listen).is_err());
    assert!(std::net::TcpStream::connect(&admin).is_err());

    // Standard output holds audit lines only, one per request.
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let discovery: Vec<&Value> = lines
        .iter()
        .filter(|l| l["path"] == "/fhir/.well-known/smart-configuration")
        .collect();
    assert!(!discovery.is_empty(), "{stdout}");
    assert!(
        discovery
            .iter()
            .all(|l| l["status"] == 200 && l["method"] == "GET")
    );
    let metadata: Vec<&Value> = lines
        .iter()
        .filter(|l| l["path"] == "/fhir/metadata")
        .collect();
    assert_eq!(metadata.len(), 1, "{stdout}");
    assert_eq!(metadata[0]["outcome"], "success");
    assert!(
        lines
            .iter()
            .any(|l| l["path"] == "/live" && l["status"] == 200),
        "admin requests are audited: {stdout}"
    );
    assert!(!stdout.contains("_summary"), "no query string: {stdout}");
}

#[test]
fn a_taken_address_is_named_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let free = format!("127.0.0.1:{}", free_port());
    for (listen, admin, key) in [
        (listen.as_str(), "", "server.listen"),
        (free.as_str(), listen.as_str(), "server.admin_listen"),
    ] {
        let child = spawn(dir.path(), listen, admin, "http://127.0.0.1:9");
        let (output, _) = exit_within(child, Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        let taken = taken.local_addr().unwrap();
        assert!(
            stderr.contains(&format!("cannot listen on {taken}")) && stderr.contains(key),
            "{stderr}"
        );
        assert!(output.stdout.is_empty());
    }
    drop(taken);
}

#[test]
fn a_bad_configuration_is_named_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let output = Command::new(env!("CARGO_BIN_EXE_fhirseal"))
        .args(["serve", "--config"])
        .arg(&missing)
        .env_clear()
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains("missing.toml"),
        "{stderr}"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_fhirseal"))
        .arg("serve")
        .env_clear()
        .env("FHIRSEAL__SERVER__ADMIN_LISTEN", "0.0.0.0:9090")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("server.admin_listen") && stderr.contains("FHIRSEAL__SERVER__ADMIN_LISTEN"),
        "{stderr}"
    );
}
