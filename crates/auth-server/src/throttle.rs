//! Login throttling: per user name and per source address, an exponential back-off after a few
//! failures and a lockout after more, decided before the password is checked, so that a refused
//! attempt costs no argon2 run.
//!
//! Every user name typed is tracked alike, whether a user has it or not, so the answers never
//! tell one from the other. A source is the client's address (IPv6 by its /64, the block one
//! host usually holds), as the connection shows it or, from a trusted proxy, as its
//! `X-Forwarded-For` says. The tables are bounded: when full, counts that have run out are
//! swept, then the least telling entries go first (fewest failures, oldest), so a lockout
//! outlives a flood of fresh names or addresses.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use serde::Deserialize;

use crate::ServerError;
use crate::state::{Digest, digest};

/// Where the login throttle reads the time. [`SystemClock`] unless
/// [`AuthServer::with_clock`](crate::AuthServer::with_clock) says otherwise; tests use one they
/// can move forward.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// How sign-in failures are throttled (`login_throttle` in the server's configuration).
///
/// Each failure counts against the user name typed (known or not) and against the source
/// address. From `backoff_after` failures on, each further attempt must wait 2^k seconds after
/// the last failure (k = failures − `backoff_after`, at most `backoff_max`); at `lockout_after`
/// failures every attempt, the right password included, is refused for `lockout`, or until an
/// administrator lifts it ([`AuthServer::unlock`](crate::AuthServer::unlock)). Sources have
/// their own, higher, thresholds. A success clears the user's count (not the source's); a count
/// is forgotten `lockout` after its last failure, and when its lockout ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginThrottle {
    /// Failures of one user name before the back-off starts (default 5).
    pub backoff_after: u32,
    /// Failures of one user name that lock it (default 20).
    pub lockout_after: u32,
    /// How long a lockout lasts, and how long a count is kept after its last failure (default
    /// 15 minutes).
    pub lockout: Duration,
    /// The longest back-off wait (default 60 s).
    pub backoff_max: Duration,
    /// Failures from one source before its back-off starts; 0: no back-off per source (default
    /// 20).
    pub source_backoff_after: u32,
    /// Failures from one source that lock it; 0: never (default 200).
    pub source_lockout_after: u32,
    /// The most user names, and the most sources, tracked at once (default 100,000 each).
    pub max_tracked: usize,
    /// Reverse proxies whose `X-Forwarded-For` names the client: a request from one of them
    /// counts against the right-most address of that header that is not itself a trusted proxy
    /// (default none: the connection's address counts).
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self {
            backoff_after: 5,
            lockout_after: 20,
            lockout: Duration::from_secs(900),
            backoff_max: Duration::from_secs(60),
            source_backoff_after: 20,
            source_lockout_after: 200,
            max_tracked: 100_000,
            trusted_proxies: Vec::new(),
        }
    }
}

/// `login_throttle` as written; every key is optional. See [`LoginThrottle`].
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLoginThrottle {
    /// 1 to `lockout_after` (default 5).
    pub backoff_after: Option<u32>,
    /// 1 to 1,000 (default 20).
    pub lockout_after: Option<u32>,
    /// In seconds, 1 to 86,400 (default 900).
    pub lockout_seconds: Option<u64>,
    /// In seconds, 1 to 3,600 (default 60).
    pub backoff_max_seconds: Option<u64>,
    /// 0 (off) to `source_lockout_after` (default 20).
    pub source_backoff_after: Option<u32>,
    /// 0 (never) to 1,000,000 (default 200).
    pub source_lockout_after: Option<u32>,
    /// 10 to 10,000,000 (default 100,000).
    pub max_tracked: Option<usize>,
    /// IP addresses (default none).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

impl RawLoginThrottle {
    /// The settings, with the defaults filled in (checked by [`check`]).
    pub(crate) fn resolve(self) -> Result<LoginThrottle, ServerError> {
        let default = LoginThrottle::default();
        let trusted_proxies = self
            .trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, text)| {
                text.parse::<IpAddr>().map_err(|_| {
                    invalid(
                        &format!("trusted_proxies[{i}]"),
                        "is not an IP address (like 10.0.0.2 or fd00::2)",
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(LoginThrottle {
            backoff_after: self.backoff_after.unwrap_or(default.backoff_after),
            lockout_after: self.lockout_after.unwrap_or(default.lockout_after),
            lockout: self
                .lockout_seconds
                .map_or(default.lockout, Duration::from_secs),
            backoff_max: self
                .backoff_max_seconds
                .map_or(default.backoff_max, Duration::from_secs),
            source_backoff_after: self
                .source_backoff_after
                .unwrap_or(default.source_backoff_after),
            source_lockout_after: self
                .source_lockout_after
                .unwrap_or(default.source_lockout_after),
            max_tracked: self.max_tracked.unwrap_or(default.max_tracked),
            trusted_proxies,
        })
    }
}

/// The settings' invariants; an error names the key under `login_throttle`.
pub(crate) fn check(t: &LoginThrottle) -> Result<(), ServerError> {
    if !(1..=1_000).contains(&t.lockout_after) {
        return Err(invalid("lockout_after", "must be 1 to 1000"));
    }
    if t.backoff_after == 0 || t.backoff_after > t.lockout_after {
        return Err(invalid("backoff_after", "must be 1 to lockout_after"));
    }
    if !(1..=86_400).contains(&t.lockout.as_secs()) {
        return Err(invalid("lockout_seconds", "must be 1 to 86400"));
    }
    if !(1..=3_600).contains(&t.backoff_max.as_secs()) {
        return Err(invalid("backoff_max_seconds", "must be 1 to 3600"));
    }
    if t.source_lockout_after > 1_000_000 {
        return Err(invalid(
            "source_lockout_after",
            "must be 0 (never) to 1000000",
        ));
    }
    if t.source_lockout_after != 0 && t.source_backoff_after > t.source_lockout_after {
        return Err(invalid(
            "source_backoff_after",
            "must be 0 (off) to source_lockout_after",
        ));
    }
    if !(10..=10_000_000).contains(&t.max_tracked) {
        return Err(invalid("max_tracked", "must be 10 to 10000000"));
    }
    Ok(())
}

fn invalid(key: &str, problem: &'static str) -> ServerError {
    ServerError::InvalidConfig {
        key: format!("login_throttle.{key}"),
        problem,
    }
}

// === what the audit line says ===

/// What became of a sign-in attempt, for the audit line: the embedded server puts it in the
/// extensions of each `/login` response that checked (or refused to check) credentials. It
/// carries the user name typed (at most 128 characters), never the password.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoginAudit {
    /// The user name typed, cut to 128 characters (with `…` when cut).
    pub username: String,
    /// What happened.
    pub result: LoginResult,
    /// Which count refused the attempt or was locked by it: for
    /// [`LoginResult::Throttled`], [`LoginResult::Locked`] and [`LoginResult::Lockout`].
    pub by: Option<ThrottledBy>,
    /// The source address the attempt counted against (none when the server did not see it).
    pub source: Option<IpAddr>,
}

/// The result of a sign-in attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoginResult {
    /// The credentials were right.
    Success,
    /// Wrong user name or password.
    Failure,
    /// Wrong user name or password, and this failure locked the user name or the source.
    Lockout,
    /// Refused unchecked: a back-off wait is running.
    Throttled,
    /// Refused unchecked: the user name or the source is locked.
    Locked,
}

/// Which count throttled or locked an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ThrottledBy {
    /// The user name's.
    User,
    /// The source address's.
    Source,
}

impl LoginResult {
    /// `success`, `failure`, `lockout`, `throttled` or `locked`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Lockout => "lockout",
            Self::Throttled => "throttled",
            Self::Locked => "locked",
        }
    }
}

impl ThrottledBy {
    /// `user` or `source`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Source => "source",
        }
    }
}

impl LoginAudit {
    pub(crate) fn new(
        username: &str,
        result: LoginResult,
        by: Option<ThrottledBy>,
        source: Option<IpAddr>,
    ) -> Self {
        const MAX: usize = 128;
        let username = match username.char_indices().nth(MAX) {
            Some((cut, _)) => format!("{}…", &username[..cut]),
            None => username.to_string(),
        };
        Self {
            username,
            result,
            by,
            source,
        }
    }
}

/// How many sign-in counts the server holds, and how much argon2 work it did: for an operator's
/// dashboard ([`AuthServer::login_stats`](crate::AuthServer::login_stats)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoginStats {
    /// User names with a count (failures, a back-off or a lockout), known or not.
    pub tracked_users: usize,
    /// Sources with a count.
    pub tracked_sources: usize,
    /// User names locked now.
    pub locked_users: usize,
    /// Sources locked now.
    pub locked_sources: usize,
    /// Passwords checked with argon2 since the server started.
    pub password_checks: u64,
}

// === the throttle ===

/// The client's address as the connection shows it (`ConnectInfo<SocketAddr>`, which
/// `axum::serve` gives with `into_make_service_with_connect_info`); `None` without it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer(pub(crate) Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip().to_canonical()),
        ))
    }
}

/// Why an attempt is refused unchecked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) by: ThrottledBy,
    /// A lockout, not a back-off.
    pub(crate) locked: bool,
    /// Seconds until an attempt may be made again (at least 1).
    pub(crate) retry_after: u64,
}

/// What a failure did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Failed {
    /// The count this failure locked, if it locked one (the user's first).
    pub(crate) locked: Option<ThrottledBy>,
}

/// The sign-in counts, per user name and per source.
pub(crate) struct Throttle {
    config: LoginThrottle,
    clock: Arc<dyn Clock>,
    tables: Mutex<Tables>,
    password_checks: AtomicU64,
}

struct Tables {
    users: Table<Digest>,
    sources: Table<[u8; 16]>,
}

/// One kind's thresholds; 0 is off.
#[derive(Clone, Copy)]
struct Limits {
    backoff_after: u32,
    lockout_after: u32,
}

/// A bounded map of counts.
struct Table<K> {
    map: HashMap<K, Record>,
    cap: usize,
}

/// One user name's or source's count.
#[derive(Clone, Copy, Debug, Default)]
struct Record {
    failures: u32,
    /// Unix seconds of the last failure.
    last: u64,
    /// No attempt before this (unix seconds): the end of a back-off or a lockout.
    blocked_until: u64,
    /// `blocked_until` ends a lockout.
    locked: bool,
    /// Attempts being checked now.
    in_flight: u32,
}

impl Throttle {
    pub(crate) fn new(config: LoginThrottle) -> Self {
        let cap = config.max_tracked;
        Self {
            config,
            clock: Arc::new(SystemClock),
            tables: Mutex::new(Tables {
                users: Table::new(cap),
                sources: Table::new(cap),
            }),
            password_checks: AtomicU64::new(0),
        }
    }

    pub(crate) fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        self.clock = clock;
    }

    fn now(&self) -> u64 {
        self.clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn user_limits(&self) -> Limits {
        Limits {
            backoff_after: self.config.backoff_after,
            lockout_after: self.config.lockout_after,
        }
    }

    fn source_limits(&self) -> Limits {
        Limits {
            backoff_after: self.config.source_backoff_after,
            lockout_after: self.config.source_lockout_after,
        }
    }

    /// The source a request counts against: its peer, or behind trusted proxies the right-most
    /// `X-Forwarded-For` address that is not one of them.
    pub(crate) fn source(&self, peer: Peer, headers: &HeaderMap) -> Option<IpAddr> {
        let mut address = peer.0?;
        let trusted = &self.config.trusted_proxies;
        if !trusted.contains(&address) {
            return Some(address);
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for hop in hops.iter().rev() {
            // An unreadable hop: the attempt counts against the last proxy trusted.
            let Ok(hop) = hop.trim().parse::<IpAddr>() else {
                break;
            };
            address = hop.to_canonical();
            if !trusted.contains(&address) {
                break;
            }
        }
        Some(address)
    }

    /// Starts an attempt for `username` from `source`, or refuses it. The attempt counts as a
    /// failure unless [`Attempt::succeeded`] is called (a dropped request included).
    pub(crate) fn begin(
        &self,
        username: &str,
        source: Option<IpAddr>,
    ) -> Result<Attempt<'_>, Refusal> {
        let now = self.now();
        let forget = self.config.lockout.as_secs();
        let user = digest(username.as_bytes());
        let source = source.map(source_key);
        let mut tables = self.tables();
        let Tables { users, sources } = &mut *tables;
        let refusal = |by, (locked, until): (bool, u64)| Refusal {
            by,
            locked,
            retry_after: until.saturating_sub(now).max(1),
        };
        if let Some(blocked) = users.check(&user, now, forget, self.user_limits()) {
            return Err(refusal(ThrottledBy::User, blocked));
        }
        if let Some(key) = &source
            && let Some(blocked) = sources.check(key, now, forget, self.source_limits())
        {
            return Err(refusal(ThrottledBy::Source, blocked));
        }
        // A full table of live counts: refused rather than forgotten.
        let busy = Refusal {
            by: ThrottledBy::User,
            locked: false,
            retry_after: 1,
        };
        users.entry(user, now, forget).ok_or(busy)?.in_flight += 1;
        if let Some(key) = source {
            let Some(record) = sources.entry(key, now, forget) else {
                if let Some(record) = users.map.get_mut(&user) {
                    record.in_flight = record.in_flight.saturating_sub(1);
                }
                return Err(Refusal {
                    by: ThrottledBy::Source,
                    ..busy
                });
            };
            record.in_flight += 1;
        }
        Ok(Attempt {
            throttle: self,
            user,
            source,
            done: false,
        })
    }

    /// Counts an argon2 verification.
    pub(crate) fn password_checked(&self) {
        self.password_checks.fetch_add(1, Ordering::Relaxed);
    }

    /// Lifts `username`'s lockout or back-off and forgets its failures; whether it had any.
    pub(crate) fn unlock_user(&self, username: &str) -> bool {
        let key = digest(username.as_bytes());
        self.tables().users.lift(&key)
    }

    /// Lifts a source's lockout or back-off and forgets its failures; whether it had any.
    pub(crate) fn unlock_source(&self, source: IpAddr) -> bool {
        let key = source_key(source.to_canonical());
        self.tables().sources.lift(&key)
    }

    pub(crate) fn stats(&self) -> LoginStats {
        let now = self.now();
        let tables = self.tables();
        LoginStats {
            tracked_users: tables.users.map.len(),
            tracked_sources: tables.sources.map.len(),
            locked_users: tables.users.locked(now),
            locked_sources: tables.sources.locked(now),
            password_checks: self.password_checks.load(Ordering::Relaxed),
        }
    }

    /// Ends an attempt: a success clears the user's count; a failure adds to both.
    fn finish(&self, user: &Digest, source: Option<&[u8; 16]>, success: bool) -> Failed {
        let now = self.now();
        let forget = self.config.lockout.as_secs();
        let backoff_max = self.config.backoff_max.as_secs();
        let lockout = self.config.lockout.as_secs();
        let mut tables = self.tables();
        let Tables { users, sources } = &mut *tables;
        if success {
            if let Some(record) = users.map.get_mut(user) {
                record.in_flight = record.in_flight.saturating_sub(1);
                if record.in_flight == 0 {
                    users.map.remove(user);
                } else {
                    *record = Record {
                        in_flight: record.in_flight,
                        ..Record::default()
                    };
                }
            }
            if let Some(record) = source.and_then(|key| sources.map.get_mut(key)) {
                record.in_flight = record.in_flight.saturating_sub(1);
            }
            return Failed { locked: None };
        }
        let mut locked = None;
        if let Some(record) = users.entry(*user, now, forget)
            && record.fail(now, self.user_limits(), backoff_max, lockout)
        {
            locked = Some(ThrottledBy::User);
        }
        if let Some(key) = source
            && let Some(record) = sources.entry(*key, now, forget)
            && record.fail(now, self.source_limits(), backoff_max, lockout)
        {
            locked = locked.or(Some(ThrottledBy::Source));
        }
        Failed { locked }
    }
}

impl fmt::Debug for Throttle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttle")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A sign-in attempt let through: a failure unless [`Attempt::succeeded`] says otherwise.
pub(crate) struct Attempt<'t> {
    throttle: &'t Throttle,
    user: Digest,
    source: Option<[u8; 16]>,
    done: bool,
}

impl Attempt<'_> {
    /// The credentials were right.
    pub(crate) fn succeeded(mut self) {
        self.done = true;
        self.throttle.finish(&self.user, self.source.as_ref(), true);
    }

    /// The credentials were wrong.
    pub(crate) fn failed(mut self) -> Failed {
        self.done = true;
        self.throttle
            .finish(&self.user, self.source.as_ref(), false)
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.throttle
                .finish(&self.user, self.source.as_ref(), false);
        }
    }
}

/// An address as a source: IPv4 whole, IPv6 by its /64.
fn source_key(address: IpAddr) -> [u8; 16] {
    match address {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            octets
        }
    }
}

impl Record {
    /// Forgets a count whose lockout has ended, or whose last failure is `forget` seconds old.
    fn refresh(&mut self, now: u64, forget: u64) {
        let lockout_over = self.locked && now >= self.blocked_until;
        let stale = now >= self.last.saturating_add(forget) && now >= self.blocked_until;
        if lockout_over || stale {
            *self = Self {
                in_flight: self.in_flight,
                ..Self::default()
            };
        }
    }

    /// Whether the record still says anything (else it can go).
    fn is_live(&self, now: u64, forget: u64) -> bool {
        let mut copy = *self;
        copy.refresh(now, forget);
        copy.failures > 0 || copy.in_flight > 0
    }

    /// Adds a failure at `now`; whether it locked the record.
    fn fail(&mut self, now: u64, limits: Limits, backoff_max: u64, lockout: u64) -> bool {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.failures = self.failures.saturating_add(1);
        self.last = now;
        if limits.lockout_after != 0 && self.failures >= limits.lockout_after {
            let newly = !(self.locked && self.blocked_until > now);
            self.locked = true;
            self.blocked_until = now.saturating_add(lockout);
            return newly;
        }
        if limits.backoff_after != 0 && self.failures >= limits.backoff_after {
            let k = self.failures - limits.backoff_after;
            let wait = 1u64.checked_shl(k).unwrap_or(u64::MAX).min(backoff_max);
            self.blocked_until = self.blocked_until.max(now.saturating_add(wait));
        }
        false
    }
}

impl<K: Copy + Eq + Hash> Table<K> {
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            cap,
        }
    }

    /// Refuses an attempt while a back-off or lockout runs, or while another attempt is being
    /// checked once the count is at a threshold (so that parallel attempts cannot overrun it):
    /// whether it is a lockout, and when it ends.
    fn check(&mut self, key: &K, now: u64, forget: u64, limits: Limits) -> Option<(bool, u64)> {
        let record = self.map.get_mut(key)?;
        record.refresh(now, forget);
        if record.blocked_until > now {
            return Some((record.locked, record.blocked_until));
        }
        let threshold = [limits.backoff_after, limits.lockout_after]
            .into_iter()
            .filter(|t| *t != 0)
            .min()?;
        (record.in_flight > 0 && record.failures.saturating_add(record.in_flight) >= threshold)
            .then_some((false, now + 1))
    }

    /// The record under `key`, made if missing; `None` when the table is full of live records
    /// in flight.
    fn entry(&mut self, key: K, now: u64, forget: u64) -> Option<&mut Record> {
        if !self.map.contains_key(&key) && self.map.len() >= self.cap {
            self.make_room(now, forget);
            if self.map.len() >= self.cap {
                return None;
            }
        }
        let record = self.map.entry(key).or_default();
        record.refresh(now, forget);
        Some(record)
    }

    /// Sweeps the records that say nothing any more; if that is not enough, drops the eighth
    /// that tells least (not in flight; unlocked before locked, fewest failures, oldest).
    fn make_room(&mut self, now: u64, forget: u64) {
        self.map.retain(|_, r| r.is_live(now, forget));
        if self.map.len() < self.cap {
            return;
        }
        let mut candidates: Vec<((bool, u32, u64), K)> = self
            .map
            .iter()
            .filter(|(_, r)| r.in_flight == 0)
            .map(|(k, r)| ((r.locked, r.failures, r.last), *k))
            .collect();
        let drop = (self.cap / 8).max(1).min(candidates.len());
        if drop == 0 {
            return;
        }
        candidates.select_nth_unstable_by_key(drop - 1, |(rank, _)| *rank);
        for (_, key) in &candidates[..drop] {
            self.map.remove(key);
        }
    }

    fn lift(&mut self, key: &K) -> bool {
        match self.map.get_mut(key) {
            None => false,
            Some(record) => {
                let had = record.failures > 0 || record.blocked_until > 0;
                if record.in_flight == 0 {
                    self.map.remove(key);
                } else {
                    *record = Record {
                        in_flight: record.in_flight,
                        ..Record::default()
                    };
                }
                had
            }
        }
    }

    fn locked(&self, now: u64) -> usize {
        self.map
            .values()
            .filter(|r| r.locked && r.blocked_until > now)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_up_to_its_cap_then_locks() {
        let limits = Limits {
            backoff_after: 3,
            lockout_after: 10,
        };
        let mut record = Record::default();
        let mut waits = Vec::new();
        for _ in 0..9 {
            record.in_flight += 1;
            assert!(!record.fail(1_000, limits, 8, 900));
            waits.push(record.blocked_until.saturating_sub(1_000));
            record.blocked_until = 0;
        }
        assert_eq!(waits, [0, 0, 1, 2, 4, 8, 8, 8, 8]);
        record.in_flight += 1;
        assert!(record.fail(1_000, limits, 8, 900), "the tenth locks");
        assert_eq!((record.locked, record.blocked_until), (true, 1_900));
        record.refresh(1_899, 900);
        assert_eq!(record.failures, 10);
        record.refresh(1_900, 900);
        assert_eq!(record.failures, 0, "forgotten when the lockout ends");
    }

    #[test]
    fn sources_are_ipv4_addresses_and_ipv6_blocks() {
        let key = |s: &str| source_key(s.parse::<IpAddr>().unwrap());
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }

    #[test]
    fn audit_user_names_are_cut() {
        let long = "é".repeat(300);
        let audit = LoginAudit::new(&long, LoginResult::Failure, None, None);
        assert_eq!(audit.username.chars().count(), 129);
        assert!(audit.username.ends_with('…'));
    }
}
