//! The login throttle, through the router: back-off, lockout and its end, an administrator's
//! unlock, per-source counts (and trusted proxies), unknown user names answered alike, parallel
//! attempts, bounded memory, and the settings' checks. Time comes from a clock the tests move.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::ConnectInfo;
use fhirseal_auth_server::{Clock, LoginAudit, LoginResult, LoginThrottle, ThrottledBy};

use super::*;

/// A clock that moves only when told.
#[derive(Debug)]
struct TestClock(AtomicU64);

impl TestClock {
    fn advance(&self, seconds: u64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.0.load(Ordering::SeqCst))
    }
}

/// The test server with `throttle` as its `login_throttle` settings, and its clock.
fn throttled(throttle: Value) -> (Harness, Arc<TestClock>) {
    let mut raw = raw_config(None);
    raw["login_throttle"] = throttle;
    let raw: RawServerConfig = serde_json::from_value(raw).unwrap();
    let config = ServerConfig::try_from(raw).unwrap();
    let clock = Arc::new(TestClock(AtomicU64::new(1_800_000_000)));
    let server = AuthServer::new(config, signing_key(), reqwest::Client::new())
        .unwrap()
        .with_clock(clock.clone());
    let h = Harness {
        server: Arc::new(server),
    };
    (h, clock)
}

/// What a sign-in attempt got: the reply and the audit note on it.
struct Attempt {
    reply: Reply,
    audit: Option<LoginAudit>,
}

impl Attempt {
    fn note(&self) -> &LoginAudit {
        self.audit.as_ref().expect("an audit note")
    }

    fn result(&self) -> LoginResult {
        self.note().result
    }

    fn by(&self) -> Option<ThrottledBy> {
        self.note().by
    }

    fn retry_after(&self) -> u64 {
        self.reply.headers[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    fn signed_in(&self) -> bool {
        self.reply.status == StatusCode::SEE_OTHER
    }
}

/// One sign-in from a fresh authorization request (so the per-request limit never interferes),
/// from `peer` (the connection's address) with `forwarded` as `X-Forwarded-For`.
async fn sign_in_from(
    h: &Harness,
    username: &str,
    password: &str,
    peer: Option<&str>,
    forwarded: Option<&str>,
) -> Attempt {
    let request = login_request(h, username, password, peer, forwarded).await;
    send_login(h, request).await
}

/// A login form submission, from a fresh authorization request.
async fn login_request(
    h: &Harness,
    username: &str,
    password: &str,
    peer: Option<&str>,
    forwarded: Option<&str>,
) -> Request<Body> {
    let (_, challenge) = pkce();
    let page = h.authorize(&challenge, &[("scope", "user/*.rs")]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let token = page.field("request_token");
    let body = form(&[
        ("request_token", &token),
        ("username", username),
        ("password", password),
        ("action", "allow"),
    ]);
    let mut request = Request::post("/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, page.cookie());
    if let Some(forwarded) = forwarded {
        request = request.header("x-forwarded-for", forwarded);
    }
    let mut request = request.body(Body::from(body)).unwrap();
    if let Some(peer) = peer {
        let address = SocketAddr::new(peer.parse().unwrap(), 40_000);
        request.extensions_mut().insert(ConnectInfo(address));
    }
    request
}

async fn send_login(h: &Harness, request: Request<Body>) -> Attempt {
    let response = h.app().oneshot(request).await.unwrap();
    let audit = response.extensions().get::<LoginAudit>().cloned();
    let status = response.status();
    let headers = response.headers().clone();
    let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let reply = Reply {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    };
    Attempt { reply, audit }
}

async fn sign_in(h: &Harness, username: &str, password: &str) -> Attempt {
    sign_in_from(h, username, password, Some("192.0.2.10"), None).await
}

/// `n` wrong passwords for `username`, each from another address, the clock moved past each
/// back-off; the last attempt.
async fn fail(h: &Harness, clock: &TestClock, username: &str, n: usize) -> Attempt {
    let mut last = None;
    for i in 0..n {
        let peer = format!("198.18.0.{i}");
        let attempt = sign_in_from(h, username, "wrong", Some(&peer), None).await;
        assert_eq!(attempt.reply.status, StatusCode::BAD_REQUEST, "attempt {i}");
        last = Some(attempt);
        clock.advance(60);
    }
    last.unwrap()
}

#[tokio::test]
async fn twenty_wrong_passwords_lock_the_user_until_the_lockout_ends() {
    let (h, clock) = throttled(json!({}));
    let last = fail(&h, &clock, "house", 19).await;
    assert_eq!(last.result(), LoginResult::Failure);
    let twentieth = sign_in(&h, "house", "wrong").await;
    assert_eq!(twentieth.reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(twentieth.result(), LoginResult::Lockout);
    assert_eq!(twentieth.by(), Some(ThrottledBy::User));
    assert_eq!(h.server.login_stats().locked_users, 1);
    let checks = h.server.login_stats().password_checks;
    assert_eq!(checks, 20);

    // The right password is refused, unchecked, until the lockout ends (15 minutes).
    clock.advance(899);
    let refused = sign_in(&h, "house", "vicodin").await;
    assert_eq!(refused.reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.result(), LoginResult::Locked);
    assert_eq!(refused.by(), Some(ThrottledBy::User));
    assert_eq!(refused.retry_after(), 1);
    assert!(
        refused.reply.body.contains("Sign-in is locked"),
        "{}",
        refused.reply.body
    );
    assert!(
        refused.reply.body.contains("name=\"password\""),
        "the form is shown again"
    );
    assert_eq!(
        h.server.login_stats().password_checks,
        checks,
        "no argon2 run"
    );
    let audit = refused.audit.as_ref().unwrap();
    assert_eq!(audit.username, "house");
    assert_eq!(audit.source, Some("192.0.2.10".parse().unwrap()));
    assert!(
        !format!("{audit:?}").contains("vicodin"),
        "never the password"
    );

    clock.advance(1);
    let accepted = sign_in(&h, "house", "vicodin").await;
    assert!(accepted.signed_in(), "{}", accepted.reply.body);
    assert_eq!(accepted.result(), LoginResult::Success);
    let stats = h.server.login_stats();
    assert_eq!((stats.locked_users, stats.password_checks), (0, checks + 1));
    // A success clears the user's count: one more mistake is just a mistake.
    let again = sign_in(&h, "house", "wrong").await;
    assert_eq!(again.result(), LoginResult::Failure);
    assert!(sign_in(&h, "house", "vicodin").await.signed_in());
}

#[tokio::test]
async fn the_back_off_doubles_after_five_failures_and_runs_no_argon2() {
    let (h, clock) = throttled(json!({}));
    for _ in 0..5 {
        assert_eq!(
            sign_in(&h, "house", "wrong").await.result(),
            LoginResult::Failure
        );
    }
    let checks = h.server.login_stats().password_checks;
    let waits = [1, 2, 4, 8, 16, 32, 60, 60];
    for wait in waits {
        let refused = sign_in(&h, "house", "vicodin").await;
        assert_eq!(refused.reply.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.result(), LoginResult::Throttled);
        assert_eq!(refused.retry_after(), wait);
        assert!(
            refused
                .reply
                .body
                .contains("Too many failed sign-in attempts. Wait")
        );
        clock.advance(wait);
        assert_eq!(
            sign_in(&h, "house", "wrong").await.result(),
            LoginResult::Failure
        );
    }
    assert_eq!(
        h.server.login_stats().password_checks,
        checks + waits.len() as u64,
        "only the attempts let through ran argon2"
    );
    // Failures are forgotten 15 minutes after the last one.
    clock.advance(900);
    assert!(sign_in(&h, "house", "wrong").await.reply.status == StatusCode::BAD_REQUEST);
    assert!(sign_in(&h, "house", "vicodin").await.signed_in());
}

#[tokio::test]
async fn an_administrator_lifts_a_lockout() {
    let (h, clock) = throttled(json!({}));
    fail(&h, &clock, "house", 20).await;
    assert_eq!(
        sign_in(&h, "house", "vicodin").await.result(),
        LoginResult::Locked
    );
    assert!(!h.server.unlock("alice"), "nothing to lift");
    assert!(h.server.unlock("house"));
    assert_eq!(h.server.login_stats().locked_users, 0);
    let accepted = sign_in(&h, "house", "vicodin").await;
    assert!(accepted.signed_in(), "{}", accepted.reply.body);
    assert!(!h.server.unlock("house"), "already lifted");
}

#[tokio::test]
async fn sources_are_throttled_and_locked_on_their_own() {
    let (h, clock) = throttled(json!({"source_backoff_after": 3, "source_lockout_after": 6}));
    let spray = "198.51.100.7";
    // Password spraying: one guess per user name, all from one address.
    for i in 0..3 {
        let attempt = sign_in_from(&h, &format!("user-{i}"), "guess", Some(spray), None).await;
        assert_eq!(attempt.result(), LoginResult::Failure);
    }
    let refused = sign_in_from(&h, "house", "vicodin", Some(spray), None).await;
    assert_eq!(refused.reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        (refused.result(), refused.by()),
        (LoginResult::Throttled, Some(ThrottledBy::Source))
    );
    // Other addresses are not held back.
    assert!(
        sign_in_from(&h, "house", "vicodin", Some("192.0.2.20"), None)
            .await
            .signed_in()
    );
    for i in 3..6 {
        clock.advance(60);
        let attempt = sign_in_from(&h, &format!("user-{i}"), "guess", Some(spray), None).await;
        assert_eq!(attempt.reply.status, StatusCode::BAD_REQUEST);
        if i == 5 {
            assert_eq!(
                (attempt.result(), attempt.by()),
                (LoginResult::Lockout, Some(ThrottledBy::Source))
            );
        }
    }
    assert_eq!(h.server.login_stats().locked_sources, 1);
    clock.advance(60);
    let refused = sign_in_from(&h, "alice", "wonderland", Some(spray), None).await;
    assert_eq!(
        (refused.result(), refused.by()),
        (LoginResult::Locked, Some(ThrottledBy::Source))
    );
    // An IPv6 source is its /64.
    let (h6, _clock6) = throttled(json!({"source_backoff_after": 2, "source_lockout_after": 2}));
    for (i, peer) in ["2001:db8:1:2::1", "2001:db8:1:2::99"].iter().enumerate() {
        let attempt = sign_in_from(&h6, &format!("u{i}"), "guess", Some(peer), None).await;
        assert_eq!(attempt.reply.status, StatusCode::BAD_REQUEST);
    }
    let refused = sign_in_from(&h6, "house", "vicodin", Some("2001:db8:1:2:abcd::5"), None).await;
    assert_eq!(refused.by(), Some(ThrottledBy::Source));
    assert!(
        sign_in_from(&h6, "house", "vicodin", Some("2001:db8:1:3::1"), None)
            .await
            .signed_in()
    );
    // The administrator lifts a source's lockout too.
    assert!(h.server.unlock_source(spray.parse().unwrap()));
    assert!(
        sign_in_from(&h, "alice", "wonderland", Some(spray), None)
            .await
            .signed_in()
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_counts() {
    let (h, _clock) = throttled(json!({
        "source_backoff_after": 2, "source_lockout_after": 2, "trusted_proxies": ["10.0.0.2"]
    }));
    let proxy = Some("10.0.0.2");
    let source = |a: &Attempt| a.audit.as_ref().unwrap().source;
    let first = sign_in_from(&h, "u1", "x", proxy, Some("203.0.113.9, 10.0.0.2")).await;
    assert_eq!(source(&first), Some("203.0.113.9".parse().unwrap()));
    sign_in_from(&h, "u2", "x", proxy, Some("203.0.113.9")).await;
    let refused = sign_in_from(&h, "house", "vicodin", proxy, Some("203.0.113.9")).await;
    assert_eq!(
        refused.by(),
        Some(ThrottledBy::Source),
        "the client, not the proxy"
    );
    let other = sign_in_from(&h, "house", "vicodin", proxy, Some("203.0.113.10")).await;
    assert!(other.signed_in(), "another client behind the same proxy");
    // A client that is not a trusted proxy cannot pick its source with the header.
    let spoofed = sign_in_from(&h, "u3", "x", Some("192.0.2.50"), Some("203.0.113.77")).await;
    assert_eq!(source(&spoofed), Some("192.0.2.50".parse().unwrap()));
    // Without the connection's address (no ConnectInfo) only the user name counts.
    let unseen = sign_in_from(&h, "u4", "x", None, None).await;
    assert_eq!(source(&unseen), None);
    assert_eq!(unseen.result(), LoginResult::Failure);
}

#[tokio::test]
async fn unknown_user_names_are_throttled_and_locked_alike() {
    // Per-source counts off: both names sign in from one address here.
    let (h, clock) = throttled(json!({"source_backoff_after": 0, "source_lockout_after": 0}));
    let same = |known: &Attempt, unknown: &Attempt| {
        assert_eq!(known.reply.status, unknown.reply.status);
        assert_eq!(
            known.reply.headers.get(header::RETRY_AFTER),
            unknown.reply.headers.get(header::RETRY_AFTER)
        );
        assert_eq!(
            (known.result(), known.by()),
            (unknown.result(), unknown.by())
        );
        let strip = |r: &Reply, name: &str| {
            let body = r.body.replace(name, "USER");
            match r.body.contains("request_token") {
                true => body.replace(&r.field("request_token"), "TOKEN"),
                false => body,
            }
        };
        assert_eq!(
            strip(&known.reply, "house"),
            strip(&unknown.reply, "nobody")
        );
    };
    for step in 0..20 {
        let known = sign_in(&h, "house", "wrong").await;
        let unknown = sign_in(&h, "nobody", "wrong").await;
        same(&known, &unknown);
        // From the fifth failure on, an attempt during the back-off (the right password, for
        // the known name) is refused alike.
        if step >= 4 {
            let known = sign_in(&h, "house", "vicodin").await;
            let unknown = sign_in(&h, "nobody", "vicodin").await;
            assert_eq!(
                known.reply.status,
                StatusCode::TOO_MANY_REQUESTS,
                "step {step}"
            );
            same(&known, &unknown);
        }
        clock.advance(60);
    }
    let known = sign_in(&h, "house", "vicodin").await;
    let unknown = sign_in(&h, "nobody", "vicodin").await;
    assert_eq!(known.result(), LoginResult::Locked);
    same(&known, &unknown);
    assert_eq!(h.server.login_stats().locked_users, 2);
}

#[tokio::test]
async fn parallel_attempts_cannot_overrun_the_back_off() {
    let (h, _clock) = throttled(json!({}));
    let h = Arc::new(h);
    // Twenty forms ready, then sent at once: each is past the throttle before any argon2 ends.
    let mut requests = Vec::new();
    for i in 0..20 {
        let peer = format!("192.0.2.{}", 100 + i);
        requests.push(login_request(&h, "house", "wrong", Some(&peer), None).await);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for request in requests {
        let h = Arc::clone(&h);
        tasks.spawn(async move { send_login(&h, request).await.reply.status });
    }
    let mut statuses = Vec::new();
    while let Some(status) = tasks.join_next().await {
        statuses.push(status.unwrap());
    }
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::BAD_REQUEST)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(checked + refused, 20);
    assert!(checked <= 5, "{checked} attempts were checked in parallel");
    assert!(h.server.login_stats().password_checks <= 5);
}

#[tokio::test]
async fn memory_stays_bounded_while_names_and_addresses_cycle() {
    let (h, clock) = throttled(json!({"max_tracked": 16}));
    fail(&h, &clock, "house", 20).await;
    // 300 fresh user names from 300 fresh addresses, each failing once.
    for i in 0..300u32 {
        let peer = IpAddr::from([10, 1, (i / 256) as u8, (i % 256) as u8]).to_string();
        let attempt = sign_in_from(&h, &format!("junk-{i}"), "x", Some(&peer), None).await;
        assert_eq!(attempt.reply.status, StatusCode::BAD_REQUEST, "attempt {i}");
        let stats = h.server.login_stats();
        assert!(stats.tracked_users <= 16, "{stats:?}");
        assert!(stats.tracked_sources <= 16, "{stats:?}");
    }
    // The lockout outlived the flood: it is what the table keeps last.
    let refused = sign_in(&h, "house", "vicodin").await;
    assert_eq!(refused.result(), LoginResult::Locked);
}

#[test]
fn throttle_settings_have_defaults_and_errors_name_the_key() {
    let config = |throttle: Value| {
        let mut raw = raw_config(None);
        raw["login_throttle"] = throttle;
        match serde_json::from_value::<RawServerConfig>(raw) {
            Err(e) => Err(e.to_string()),
            Ok(raw) => match ServerConfig::try_from(raw) {
                Err(ServerError::InvalidConfig { key, .. }) => Err(key),
                Err(other) => panic!("{other:?}"),
                Ok(config) => Ok(config.login_throttle),
            },
        }
    };
    let defaults = config(json!({})).unwrap();
    assert_eq!(defaults, LoginThrottle::default());
    assert_eq!(
        (
            defaults.backoff_after,
            defaults.lockout_after,
            defaults.lockout.as_secs()
        ),
        (5, 20, 900)
    );
    let raw: RawServerConfig = serde_json::from_value(raw_config(None)).unwrap();
    assert_eq!(
        ServerConfig::try_from(raw).unwrap().login_throttle,
        defaults,
        "key absent"
    );
    let set = config(json!({
        "backoff_after": 3, "lockout_after": 10, "lockout_seconds": 60, "backoff_max_seconds": 30,
        "source_backoff_after": 0, "source_lockout_after": 0, "max_tracked": 1000,
        "trusted_proxies": ["10.0.0.2", "fd00::2"]
    }))
    .unwrap();
    assert_eq!(
        (set.backoff_after, set.lockout_after, set.lockout.as_secs()),
        (3, 10, 60)
    );
    assert_eq!(set.trusted_proxies.len(), 2);
    for (throttle, key) in [
        (json!({"lockout_after": 0}), "login_throttle.lockout_after"),
        (
            json!({"lockout_after": 1001}),
            "login_throttle.lockout_after",
        ),
        (json!({"backoff_after": 0}), "login_throttle.backoff_after"),
        (json!({"backoff_after": 21}), "login_throttle.backoff_after"),
        (
            json!({"lockout_seconds": 0}),
            "login_throttle.lockout_seconds",
        ),
        (
            json!({"backoff_max_seconds": 3601}),
            "login_throttle.backoff_max_seconds",
        ),
        (
            json!({"source_backoff_after": 201}),
            "login_throttle.source_backoff_after",
        ),
        (
            json!({"source_lockout_after": 2_000_000}),
            "login_throttle.source_lockout_after",
        ),
        (json!({"max_tracked": 9}), "login_throttle.max_tracked"),
        (
            json!({"trusted_proxies": ["10.0.0.2", "proxy.internal"]}),
            "login_throttle.trusted_proxies[1]",
        ),
    ] {
        assert_eq!(config(throttle.clone()), Err(key.to_string()), "{throttle}");
    }
    let unknown = config(json!({"lockout_minutes": 5})).unwrap_err();
    assert!(
        unknown.contains("unknown field `lockout_minutes`"),
        "{unknown}"
    );
}
