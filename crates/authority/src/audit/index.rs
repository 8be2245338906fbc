//! The audit chain's search index (schema version 7): table `audit_index`, one row per term of
//! each record, `(term, seq, recorded)`. Since schema version 8 it is written behind the chain,
//! not in the record's transaction ([`crate::store::Store::index_audit`]): a record's commit,
//! which a request waits for, writes the record alone, and the index catches up in batches,
//! whenever the gateway's chain writer has nothing to append and before every search
//! ([`crate::audit::search`] indexes what is left first), so a search finds every record
//! chained before it began. The index covers the chain up to a mark kept beside it
//! (`audit_indexed` in `fhirseal_meta`), moved in the same transaction as the rows it covers; a
//! crash between a record's commit and its indexing loses nothing, the next indexer takes it.
//! Rows written above the mark by a release before version 8 (still running during an upgrade
//! of several replicas, indexing its records with them) hide nothing: indexers take every record
//! after the mark, and a row already there is left as it is.
//!
//! The index only points at records: a search ([`crate::audit::search`]) reads the records
//! themselves from `audit_chain` and checks each one's hash, so what it shows is what
//! `fhirseal audit verify` covers. The index can be rebuilt from the chain at any time
//! ([`index_of`] is a function of the record alone); the upgrade to version 7 does so for the
//! records already chained.
//!
//! The terms of a record ([`index_of`]) are read from the audit line's JSON:
//!
//! | term | from |
//! |---|---|
//! | [`ALL`] | every record (a search with no other criterion) |
//! | `outcome:<outcome>` | `outcome` (`success`, `client-error`, `denied`, `server-error`) |
//! | `patient:Patient/<id>` | `patients`, each entry's `patients`, every `Patient/<id>` of `resources` (the request's and its entries'), and `who.fhir_user` when it is a Patient |
//! | `agent:<reference>` | `who.fhir_user` |
//! | `agent-id:<value>`, `agent-id:<issuer>\|<value>` | `who.sub` and `who.client_id`, alone and with `who.iss` |
//!
//! Ids and references are not protected values (the line holds none); no term holds anything
//! the line does not. A term over [`MAX_TERM`] bytes is left out.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

/// The term every record has.
pub const ALL: &str = "*";

/// The longest term indexed, in bytes.
pub const MAX_TERM: usize = 512;

/// The most records one search returns.
pub const MAX_LIMIT: u32 = 1000;

/// The index rows of one record: when it was recorded and the terms it is found by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// The line's `ts` in Unix milliseconds (the chain's time when the line has none).
    pub recorded: i64,
    /// The terms, without duplicates, [`ALL`] first.
    pub terms: Vec<String>,
}

/// A search of the index: records matching every group (a group matches a record that has any
/// of its terms), recorded in `[from, to)`, with a sequence number below `before`, newest (the
/// highest sequence number) first, at most `limit` (at most [`MAX_LIMIT`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// The groups of terms; none: every record.
    pub groups: Vec<Vec<String>>,
    /// Recorded at or after, Unix milliseconds.
    pub from: Option<i64>,
    /// Recorded before, Unix milliseconds.
    pub to: Option<i64>,
    /// Only records with a sequence number below this one (the next page).
    pub before: Option<u64>,
    /// How many records at most.
    pub limit: u32,
}

/// A value bound into the search's SQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Bound {
    Text(String),
    Int(i64),
}

/// The terms of the audit line `line`, chained at `time`; see the module documentation. A
/// record that is not a JSON object is indexed under [`ALL`] alone, at `time`.
///
/// The line is read for its six members that give terms (`ts`, `outcome`, `who`, `patients`,
/// `resources`, `entries`); the others are checked as JSON and skipped, not built into a tree:
/// parsing the whole line was two fifths of what indexing a sealed read's record cost (issue 18,
/// BENCHMARKS.md). It reads what `serde_json::Value` would: a repeated member's last value,
/// escapes decoded, a member of another type than the one used ignored.
pub fn index_of(line: &str, time: i64) -> IndexEntry {
    match serde_json::from_str::<Line>(line) {
        Ok(line) => line.index(time),
        Err(_) => IndexEntry {
            recorded: time,
            terms: vec![ALL.to_string()],
        },
    }
}

impl Line {
    /// The line's entry in the index; `time` when it has no `ts` that reads as a time.
    fn index(&self, time: i64) -> IndexEntry {
        let mut terms = vec![ALL.to_string()];
        let recorded = self
            .ts
            .as_ref()
            .and_then(Value::as_str)
            .and_then(instant_range)
            .map_or(time, |(start, _)| start);
        let mut add = |term: String| {
            if term.len() <= MAX_TERM && !terms.contains(&term) {
                terms.push(term);
            }
        };
        if let Some(outcome) = self.outcome.as_ref().and_then(Value::as_str) {
            add(format!("outcome:{outcome}"));
        }
        let who = self.who.as_ref().filter(|w| w.is_object());
        let field = |key: &str| who.and_then(|w| w.get(key)).and_then(Value::as_str);
        let entries = self.entries.as_ref().and_then(Value::as_array);
        let notes = std::iter::once((self.patients.as_ref(), self.resources.as_ref())).chain(
            entries
                .into_iter()
                .flatten()
                .filter_map(Value::as_object)
                .map(|entry| (entry.get("patients"), entry.get("resources"))),
        );
        for (patients, resources) in notes {
            for patient in strings(patients) {
                add(format!("patient:{patient}"));
            }
            for resource in strings(resources) {
                if is_patient(resource) {
                    add(format!("patient:{resource}"));
                }
            }
        }
        if let Some(user) = field("fhir_user") {
            if is_patient(user) {
                add(format!("patient:{user}"));
            }
            add(format!("agent:{user}"));
        }
        let issuer = field("iss");
        for id in [field("sub"), field("client_id")].into_iter().flatten() {
            add(format!("agent-id:{id}"));
            if let Some(issuer) = issuer {
                add(format!("agent-id:{issuer}|{id}"));
            }
        }
        IndexEntry { recorded, terms }
    }
}

/// The members of an audit line that give its terms, each as `serde_json::Value` reads it (the
/// last of a repeated member); `None` when absent. Only a JSON object is a [`Line`].
#[derive(Debug, Default, PartialEq)]
struct Line {
    ts: Option<Value>,
    outcome: Option<Value>,
    who: Option<Value>,
    patients: Option<Value>,
    resources: Option<Value>,
    entries: Option<Value>,
}

impl<'de> Deserialize<'de> for Line {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(LineVisitor)
    }
}

struct LineVisitor;

impl<'de> Visitor<'de> for LineVisitor {
    type Value = Line;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an audit line (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Line, A::Error> {
        let mut line = Line::default();
        while let Some(member) = map.next_key::<Member>()? {
            let slot = match member {
                Member::Ts => &mut line.ts,
                Member::Outcome => &mut line.outcome,
                Member::Who => &mut line.who,
                Member::Patients => &mut line.patients,
                Member::Resources => &mut line.resources,
                Member::Entries => &mut line.entries,
                Member::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value()?);
        }
        Ok(line)
    }
}

/// A member name of an audit line, as far as its terms go.
enum Member {
    Ts,
    Outcome,
    Who,
    Patients,
    Resources,
    Entries,
    Other,
}

impl<'de> Deserialize<'de> for Member {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_identifier(MemberVisitor)
    }
}

struct MemberVisitor;

impl Visitor<'_> for MemberVisitor {
    type Value = Member;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Member, E> {
        Ok(match name {
            "ts" => Member::Ts,
            "outcome" => Member::Outcome,
            "who" => Member::Who,
            "patients" => Member::Patients,
            "resources" => Member::Resources,
            "entries" => Member::Entries,
            _ => Member::Other,
        })
    }
}

/// The strings of `value` when it is an array (its other items left out).
fn strings(value: Option<&Value>) -> impl Iterator<Item = &str> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// `Patient/<id>`, an id of FHIR's characters.
fn is_patient(reference: &str) -> bool {
    reference.strip_prefix("Patient/").is_some_and(|id| {
        !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    })
}

/// The span `[start, end)` in Unix milliseconds that a FHIR date, dateTime or instant covers
/// at its precision: `2026` the year, `2026-12` the month, `2026-12-04` the day (in UTC),
/// `2026-12-04T05:10Z` the minute, `…:07` the second, `…:07.5` the tenth of a second and so on
/// down to the millisecond. A time must have a zone (`Z` or `±hh:mm`). `None` for anything
/// else, or a date before 1970 or after 9999.
pub fn instant_range(text: &str) -> Option<(i64, i64)> {
    let (date, time) = match text.split_once('T') {
        Some((date, time)) => (date, Some(time)),
        None => (text, None),
    };
    let parts: Vec<&str> = date.split('-').collect();
    let number = |s: &str, len: usize| -> Option<i64> {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let year = number(parts.first()?, 4)?;
    let month = match parts.get(1) {
        Some(m) => Some(number(m, 2)?),
        None => None,
    };
    let day = match parts.get(2) {
        Some(d) => Some(number(d, 2)?),
        None => None,
    };
    if parts.len() > 3 || !(1970..=9999).contains(&year) {
        return None;
    }
    if month.is_some_and(|m| !(1..=12).contains(&m)) {
        return None;
    }
    if let (Some(m), Some(d)) = (month, day)
        && !(1..=days_in_month(year, m)).contains(&d)
    {
        return None;
    }
    const DAY: i64 = 86_400_000;
    let Some(time) = time else {
        return Some(match (month, day) {
            (None, _) => (days(year, 1, 1) * DAY, days(year + 1, 1, 1) * DAY),
            (Some(m), None) => {
                let (ny, nm) = if m == 12 {
                    (year + 1, 1)
                } else {
                    (year, m + 1)
                };
                (days(year, m, 1) * DAY, days(ny, nm, 1) * DAY)
            }
            (Some(m), Some(d)) => {
                let start = days(year, m, d) * DAY;
                (start, start + DAY)
            }
        });
    };
    let (Some(month), Some(day)) = (month, day) else {
        return None;
    };
    // The zone: `Z`, or `+hh:mm` / `-hh:mm`.
    let (clock, offset) = if let Some(clock) = time.strip_suffix('Z') {
        (clock, 0)
    } else {
        let at = time.rfind(['+', '-'])?;
        let (clock, zone) = time.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (h, m) = zone[1..].split_once(':')?;
        let (h, m) = (number(h, 2)?, number(m, 2)?);
        if h > 14 || m > 59 {
            return None;
        }
        (clock, sign * (h * 60 + m) * 60_000)
    };
    let fields: Vec<&str> = clock.split(':').collect();
    let hour = number(fields.first()?, 2)?;
    let minute = number(fields.get(1)?, 2)?;
    if fields.len() > 3 || hour > 23 || minute > 59 {
        return None;
    }
    let mut start = days(year, month, day) * DAY + (hour * 60 + minute) * 60_000 - offset;
    let span = match fields.get(2) {
        None => 60_000,
        Some(seconds) => {
            let (whole, fraction) = match seconds.split_once('.') {
                Some((whole, fraction)) => (whole, Some(fraction)),
                None => (*seconds, None),
            };
            let second = number(whole, 2)?;
            if second > 59 {
                return None;
            }
            start += second * 1000;
            match fraction {
                None => 1000,
                Some(f) if (1..=9).contains(&f.len()) && f.bytes().all(|b| b.is_ascii_digit()) => {
                    // Milliseconds are the index's unit: finer digits count as the millisecond
                    // they fall in.
                    let digits = f.len().min(3);
                    let value: i64 = f[..digits].parse().ok()?;
                    let unit = 10i64.pow(3 - digits as u32);
                    start += value * unit;
                    unit
                }
                Some(_) => return None,
            }
        }
    };
    Some((start, start + span))
}

/// Days from 1970-01-01 to the civil date (proleptic Gregorian).
fn days(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// The SQL of `query` over `audit_chain` and `audit_index`, with placeholders written by
/// `placeholder` (1-based), and the values to bind, in order.
pub(crate) fn search_sql(
    query: &AuditQuery,
    placeholder: impl Fn(usize) -> String,
) -> (String, Vec<Bound>) {
    let mut values: Vec<Bound> = Vec::new();
    let mut bind = |value: Bound, values: &mut Vec<Bound>| {
        values.push(value);
        placeholder(values.len())
    };
    let all = vec![ALL.to_string()];
    let mut groups = query.groups.iter().filter(|g| !g.is_empty());
    let first = groups.next().unwrap_or(&all);
    let list = |terms: &[String],
                values: &mut Vec<Bound>,
                bind: &mut dyn FnMut(Bound, &mut Vec<Bound>) -> String| {
        terms
            .iter()
            .map(|t| bind(Bound::Text(t.clone()), values))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // A record is found once per term of the first group it has: DISTINCT only when there are
    // several (it costs PostgreSQL a sort of every row the group holds).
    let distinct = if first.len() > 1 { "DISTINCT " } else { "" };
    let mut sql = format!(
        "SELECT {distinct}i.seq FROM audit_index i WHERE i.term IN ({})",
        list(first, &mut values, &mut bind)
    );
    if let Some(before) = query.before {
        let before = i64::try_from(before).unwrap_or(i64::MAX);
        sql += &format!(" AND i.seq < {}", bind(Bound::Int(before), &mut values));
    }
    if let Some(from) = query.from {
        sql += &format!(" AND i.recorded >= {}", bind(Bound::Int(from), &mut values));
    }
    if let Some(to) = query.to {
        sql += &format!(" AND i.recorded < {}", bind(Bound::Int(to), &mut values));
    }
    for group in groups {
        sql += &format!(
            " AND EXISTS (SELECT 1 FROM audit_index j WHERE j.seq = i.seq AND j.term IN ({}))",
            list(group, &mut values, &mut bind)
        );
    }
    let limit = i64::from(query.limit.min(MAX_LIMIT));
    sql += &format!(
        " ORDER BY i.seq DESC LIMIT {}",
        bind(Bound::Int(limit), &mut values)
    );
    let sql = format!(
        "SELECT seq, time, record, prev, hash FROM audit_chain WHERE seq IN ({sql}) ORDER BY seq DESC"
    );
    (sql, values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_found_by_its_patients_agents_and_outcome() {
        let line = r#"{"ts":"2026-11-28T05:33:49.139Z","outcome":"success",
            "who":{"sub":"dr.grey","fhir_user":"Practitioner/dr-grey","client_id":"app","iss":"http://i"},
            "resources":["Observation/o1","Patient/p2"],"patients":["Patient/p1"],
            "entries":[{"resources":["Patient/p3"],"patients":["Patient/p4"]}]}"#;
        let entry = index_of(line, 5);
        assert_eq!(
            entry.recorded,
            instant_range("2026-11-28T05:33:49.139Z").unwrap().0
        );
        assert_eq!(
            entry.terms,
            [
                "*",
                "outcome:success",
                "patient:Patient/p1",
                "patient:Patient/p2",
                "patient:Patient/p4",
                "patient:Patient/p3",
                "agent:Practitioner/dr-grey",
                "agent-id:dr.grey",
                "agent-id:http://i|dr.grey",
                "agent-id:app",
                "agent-id:http://i|app",
            ]
        );
        // A patient reading her own record is an access concerning her.
        let own = r#"{"ts":"2026-11-28T05:33:49.139Z","who":{"fhir_user":"Patient/p9","iss":"i"}}"#;
        assert!(
            index_of(own, 0)
                .terms
                .contains(&"patient:Patient/p9".to_string())
        );
        // Anything else is found by time alone.
        assert_eq!(
            index_of("[1]", 7),
            IndexEntry {
                recorded: 7,
                terms: vec!["*".into()]
            }
        );
        let long = format!(r#"{{"who":{{"sub":"{}","iss":"i"}}}}"#, "x".repeat(600));
        assert_eq!(index_of(&long, 0).terms, ["*"]);
    }

    /// The six members as `serde_json::Value` reads them from the whole line (how [`index_of`]
    /// read them before it skipped the others): `None` when the line is not a JSON object.
    fn line_from_tree(line: &str) -> Option<Line> {
        let Ok(Value::Object(object)) = serde_json::from_str::<Value>(line) else {
            return None;
        };
        let member = |key: &str| object.get(key).cloned();
        Some(Line {
            ts: member("ts"),
            outcome: member("outcome"),
            who: member("who"),
            patients: member("patients"),
            resources: member("resources"),
            entries: member("entries"),
        })
    }

    #[test]
    fn six_members_read_as_the_whole_tree_reads_them() {
        let lines = [
            // A sealed read's line as the gateway writes it.
            r#"{"ts":"2026-12-06T13:39:00.423Z","request_id":"9d2e","method":"GET","path":"/fhir/Patient/p1","status":200,"outcome":"success","who":{"sub":"Practitioner/d","fhir_user":"Practitioner/d","client_id":null,"iss":"https://i"},"interaction":"read","resources":["Patient/p1"],"patients":["Patient/p1"],"opened":2,"masked":0,"forged":0,"sealed":0,"duration_ms":0.336,"opened_paths":["Patient.birthDate"]}"#,
            // A batch's line, its entries each like a request alone.
            r#"{"outcome":"success","who":{"fhir_user":"Patient/p9","iss":"i","sub":"s"},"entries":[{"resources":["Patient/p3","Observation/o"],"patients":["Patient/p4"]},7,{"patients":"Patient/p5"}]}"#,
            // A repeated member: its last value counts, at any depth.
            r#"{"outcome":"denied","outcome":"success","who":{"sub":"a"},"who":{"sub":"b","sub":"c"},"patients":["Patient/x"],"patients":["Patient/y"]}"#,
            // Members of other types than the ones used, and escaped names and values.
            r#"{"ts":5,"outcome":["success"],"who":"dr","patients":{"a":"Patient/p"},"resources":[1,null,"Patient/q",{"x":1}],"entries":{}}"#,
            r#"{"t\u0073":"2026-11-28","outc\u006fme":"succ\u0065ss","who":{"fhir_\u0075ser":"Patient/\u0070"}}"#,
            // Deep and odd values elsewhere are skipped but still checked as JSON.
            r#"{"consents":[{"a":[[[[{"b":1.50e10}]]]]}],"duration_ms":-0.0,"outcome":"success"}"#,
            r#"{"consents":[1,],"outcome":"success"}"#,
            r#"{"outcome":"success"} trailing"#,
            r#"{"outcome":"success""#,
            // Not an object.
            "[1]",
            "null",
            "\"text\"",
            "",
        ];
        for line in lines {
            assert_eq!(
                serde_json::from_str::<Line>(line).ok(),
                line_from_tree(line),
                "{line}"
            );
        }
    }

    #[test]
    fn dates_cover_their_precision() {
        let day = 86_400_000;
        assert_eq!(instant_range("1970"), Some((0, 365 * day)));
        assert_eq!(instant_range("1970-02"), Some((31 * day, 59 * day)));
        assert_eq!(instant_range("1970-01-02"), Some((day, 2 * day)));
        assert_eq!(instant_range("1970-01-01T00:01Z"), Some((60_000, 120_000)));
        assert_eq!(instant_range("1970-01-01T00:00:01Z"), Some((1000, 2000)));
        assert_eq!(instant_range("1970-01-01T00:00:01.5Z"), Some((1500, 1600)));
        assert_eq!(
            instant_range("1970-01-01T00:00:01.250Z"),
            Some((1250, 1251))
        );
        assert_eq!(instant_range("1970-01-01T01:00:00+01:00"), Some((0, 1000)));
        assert_eq!(
            instant_range("2026-12-04T05:10:00Z"),
            Some((1_796_361_000_000, 1_796_361_001_000))
        );
        assert_eq!(
            instant_range("2024-02-29"),
            Some((19_782 * day, 19_783 * day))
        );
        for bad in [
            "",
            "2026-13",
            "2023-02-29",
            "26-01-01",
            "2026-01-01T10:00",
            "2026-01-01T25:00Z",
            "2026-01-01T10:00:00.Z",
            "1969-12-31",
            "2026-01-01T10Z",
            "2026-01-01-01",
            "x",
            "2026-01-01T10:00:00+1:00",
            "２０２６",
        ] {
            assert_eq!(instant_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_search_binds_every_value() {
        let query = AuditQuery {
            groups: vec![
                vec!["patient:Patient/a".into()],
                vec!["outcome:success".into(), "outcome:denied".into()],
            ],
            from: Some(1),
            to: Some(2),
            before: Some(9),
            limit: 5000,
        };
        let (sql, values) = search_sql(&query, |i| format!("${i}"));
        assert_eq!(values.len(), 7);
        assert_eq!(values[6], Bound::Int(i64::from(MAX_LIMIT)));
        assert!(
            sql.contains("i.term IN ($1)") && sql.contains("j.term IN ($5, $6)"),
            "{sql}"
        );
        let (sql, values) = search_sql(
            &AuditQuery {
                limit: 1,
                ..AuditQuery::default()
            },
            |_| "?".into(),
        );
        assert_eq!(values, [Bound::Text("*".into()), Bound::Int(1)]);
        assert!(!sql.contains("EXISTS"), "{sql}");
    }
}
