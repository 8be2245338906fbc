//! Searches on sealed elements (`docs/search.md`): blind-index and filter modes answer exactly
//! what a plain server holding the same data in clear answers. A cohort is written through the
//! gateway to the run's sekmet-fhir (which stores it sealed) and, in clear, straight to a second
//! sekmet-fhir of the test's own; every search is asked of both and the answers compared by a
//! clear twin identifier. The run's server must hold no value of a protected element, and no
//! token of an element that is not in blind-index mode.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{assert_sealed_upstream, diagnostics, expect};
use crate::support::Who;
use crate::support::sekmet::{Gateway, OwnServer, canary, entries, gateway, link, unique};

const SSN: &str = "http://hl7.org/fhir/sid/us-ssn";
const TWIN: &str = "urn:e2e:twin";
const COHORT: &str = "urn:e2e:cohort";
const SNOMED: &str = "http://snomed.info/sct";

/// Birth dates at every precision, some in one year, one month, one day.
const BIRTH: [&str; 10] = [
    "1974-12-25",
    "1974-12-03",
    "1974-06",
    "1974",
    "1975-01-10",
    "1975-02-28",
    "1973-12-31",
    "1980-05-05",
    "1974-12-25",
    "2001-01-01",
];

/// The cohort, written twice: sealed through the gateway, in clear to `clear`.
struct Cohort {
    /// A canary every family name starts with (`CANARY-fam-…Smith`).
    stem: String,
    /// The run's name, in clear (tags, ids).
    run: String,
    ssn: Vec<String>,
    phones: Vec<String>,
    codes: Vec<String>,
    canaries: Vec<String>,
    clear: OwnServer,
    http: reqwest::Client,
}

impl Cohort {
    async fn write(gw: &Gateway) -> Self {
        let stem = canary("fam");
        let http = reqwest::Client::new();
        let clear = OwnServer::start();
        let mut cohort = Self {
            ssn: (0..10).map(|_| canary("ssn")).collect(),
            phones: (0..3).map(|_| canary("phone")).collect(),
            codes: (0..2).map(|_| canary("code")).collect(),
            canaries: Vec::new(),
            run: unique("cohort"),
            stem,
            clear,
            http,
        };
        for (k, birth) in BIRTH.iter().enumerate() {
            let family = match k {
                0..=3 => format!("{}Smith", cohort.stem),
                4 | 5 => format!("{}Smithson", cohort.stem),
                _ => format!("{}Jones", cohort.stem),
            };
            let patient = |tag: &str, id: String| {
                json!({
                    "resourceType": "Patient", "id": id,
                    "meta": {"tag": [{"system": COHORT, "code": tag}]},
                    "identifier": [{"system": SSN, "value": cohort.ssn[k]},
                                   {"system": TWIN, "value": k.to_string()}],
                    "name": [{"family": family, "given": [if k % 2 == 0 { "Anna" } else { "Ben" }]}],
                    "telecom": [{"system": "phone", "value": cohort.phones[k % 3]}],
                    "gender": if k % 3 == 0 { "female" } else { "male" },
                    "birthDate": birth,
                    "address": [{"city": if k % 2 == 0 { "Springfield" } else { "Shelbyville" }}]
                })
            };
            let sealed = patient(&cohort.tag(true), cohort.id(true, "p", k));
            let created = gw.put(&sealed, &Who::FullAccess).await;
            expect(&created, StatusCode::CREATED);
            // The write's answer: the cohort's own tag, none of the tokens the upstream stored.
            assert!(
                !created.text.contains("fhirseal.dev/fhir/blind-index"),
                "a token reached the client: {}",
                created.text
            );
            assert_eq!(
                created.json["meta"]["tag"], sealed["meta"]["tag"],
                "{}",
                created.text
            );
            cohort
                .put_clear(&patient(&cohort.tag(false), cohort.id(false, "p", k)))
                .await;
            let condition = |tag: &str, id: String, subject: String| {
                json!({
                    "resourceType": "Condition", "id": id,
                    "meta": {"tag": [{"system": COHORT, "code": tag}]},
                    "identifier": [{"system": TWIN, "value": k.to_string()}],
                    "code": {"coding": [{"system": SNOMED, "code": cohort.codes[k % 2]}]},
                    "subject": {"reference": format!("Patient/{subject}")}
                })
            };
            let sealed = condition(
                &cohort.tag(true),
                cohort.id(true, "c", k),
                cohort.id(true, "p", k),
            );
            expect(
                &gw.put(&sealed, &Who::FullAccess).await,
                StatusCode::CREATED,
            );
            cohort
                .put_clear(&condition(
                    &cohort.tag(false),
                    cohort.id(false, "c", k),
                    cohort.id(false, "p", k),
                ))
                .await;
            let observation = |tag: &str, id: String| {
                json!({
                    "resourceType": "Observation", "id": id, "status": "final",
                    "meta": {"tag": [{"system": COHORT, "code": tag}]},
                    "identifier": [{"system": TWIN, "value": k.to_string()}],
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                    "valueQuantity": {"value": 60 + 3 * k, "unit": "/min",
                                      "system": "http://unitsofmeasure.org", "code": "/min"}
                })
            };
            let sealed = observation(&cohort.tag(true), cohort.id(true, "o", k));
            expect(
                &gw.put(&sealed, &Who::FullAccess).await,
                StatusCode::CREATED,
            );
            cohort
                .put_clear(&observation(&cohort.tag(false), cohort.id(false, "o", k)))
                .await;
        }
        cohort.canaries = [cohort.stem.clone()]
            .into_iter()
            .chain(cohort.ssn.iter().cloned())
            .chain(cohort.phones.iter().cloned())
            .chain(cohort.codes.iter().cloned())
            .collect();
        cohort
    }

    fn tag(&self, sealed: bool) -> String {
        format!("{}-{}", self.run, if sealed { "gw" } else { "clear" })
    }

    fn id(&self, sealed: bool, kind: &str, k: usize) -> String {
        format!("{}-{}{kind}{k}", self.run, if sealed { "g" } else { "c" })
    }

    async fn put_clear(&self, resource: &Value) {
        let url = format!(
            "{}/{}/{}",
            self.clear.url,
            resource["resourceType"].as_str().unwrap(),
            resource["id"].as_str().unwrap()
        );
        let reply = self
            .http
            .put(url)
            .header("content-type", "application/fhir+json")
            .body(resource.to_string())
            .send()
            .await
            .unwrap();
        assert!(
            reply.status().is_success(),
            "{}",
            reply.text().await.unwrap()
        );
    }

    /// The twins a bundle's matches name.
    fn twins(bundle: &Value) -> BTreeSet<String> {
        entries(bundle, Some("match"))
            .iter()
            .map(|r| {
                r["identifier"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|i| i["system"] == TWIN)
                    .map(|i| i["value"].as_str().unwrap().to_string())
                    .unwrap_or_else(|| panic!("no twin: {r}"))
            })
            .collect()
    }

    /// `type?query` of the clear server, restricted to the cohort: the twins it answers.
    async fn clear_answer(&self, resource_type: &str, query: &str) -> BTreeSet<String> {
        let url = format!(
            "{}/{resource_type}?{query}&_tag={COHORT}%7C{}&_count=1000",
            self.clear.url,
            self.tag(false)
        );
        let reply = self.http.get(url).send().await.unwrap();
        assert_eq!(reply.status(), 200);
        let bundle: Value = reply.json().await.unwrap();
        Self::twins(&bundle)
    }

    /// The same through the gateway, every page followed: the twins and the pages.
    async fn gateway_answer(
        &self,
        gw: &Gateway,
        who: &Who,
        resource_type: &str,
        query: &str,
    ) -> Result<(BTreeSet<String>, usize), String> {
        let mut next = Some(format!(
            "/fhir/{resource_type}?{query}&_tag={COHORT}%7C{}",
            self.tag(true)
        ));
        let mut twins = BTreeSet::new();
        let mut pages = 0;
        while let Some(uri) = next {
            pages += 1;
            assert!(pages <= 20, "paging does not end");
            let reply = gw.get(&uri, who).await;
            if reply.status != StatusCode::OK {
                assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
                for canary in &self.canaries {
                    assert!(!reply.text.contains(canary.as_str()), "{}", reply.text);
                }
                return Err(diagnostics(&reply));
            }
            let page = Self::twins(&reply.json);
            assert!(page.is_disjoint(&twins), "a match twice: {}", reply.text);
            twins.extend(page);
            assert!(
                !reply.text.contains("fhirseal.dev/fhir/blind-index"),
                "a token reached the client: {}",
                reply.text
            );
            next = link(&reply.json, "next").map(|url| {
                let at = url.find("/fhir/").expect("a gateway link");
                url[at..].to_string()
            });
        }
        Ok((twins, pages))
    }

    /// Asks both, as `who`: the gateway's answer must be the clear server's.
    async fn same(&self, gw: &Gateway, who: &Who, resource_type: &str, query: &str) {
        let clear = self.clear_answer(resource_type, query).await;
        let (through, _) = self
            .gateway_answer(gw, who, resource_type, query)
            .await
            .unwrap_or_else(|e| panic!("{resource_type}?{query} refused: {e}"));
        assert_eq!(through, clear, "{resource_type}?{query}");
    }
}

fn enc(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test]
async fn searches_on_sealed_elements_answer_what_a_clear_server_answers() {
    let gw = gateway().await;
    let c = Cohort::write(&gw).await;
    let stem = c.stem.as_str();
    let lower = stem.to_lowercase();
    let all = &Who::FullAccess;
    // Strings: prefix (case- and accent-insensitive), whole, :exact, on each name member.
    for query in [
        format!("family={}", enc(&format!("{lower}smi"))),
        format!("family={}", enc(&format!("{stem}Smith"))),
        format!("family={}", enc(&format!("{stem}SMITHSON"))),
        format!("family:exact={}", enc(&format!("{stem}Smith"))),
        format!("family:exact={}", enc(&format!("{lower}smith"))),
        format!(
            "family={},{}",
            enc(&format!("{stem}Jo")),
            enc(&format!("{stem}Smiths"))
        ),
        format!("family={}&given=ann", enc(stem)),
        format!("family={}&given=Be", enc(stem)),
        format!("name={}", enc(&format!("{stem}jon"))),
        format!("family={}&gender=female", enc(stem)),
        format!("family={}&address-city=spring", enc(stem)),
    ] {
        c.same(&gw, all, "Patient", &query).await;
    }
    // Dates at each precision, and bounded ranges. The policy indexes the birth date only
    // paired with the family name (a compound index): each is asked beside a family search,
    // whole or a prefix, and answered from one pair token.
    for family in [
        stem.to_string(),
        format!("{stem}Smith"),
        format!("{lower}jo"),
    ] {
        for dates in [
            "birthdate=1974",
            "birthdate=1974-12",
            "birthdate=1974-12-25",
            "birthdate=1974-06",
            "birthdate=1975-01-10,2001",
            "birthdate=ge1974-06-01&birthdate=lt1975-02-01",
            "birthdate=gt1974-12-03&birthdate=le1975-02-28",
            "birthdate=ge1970&birthdate=lt1980",
        ] {
            let query = format!("family={}&{dates}", enc(&family));
            c.same(&gw, all, "Patient", &query).await;
        }
    }
    c.same(
        &gw,
        all,
        "Patient",
        &format!(
            "family:exact={}&birthdate=1974-12-25&given=ann",
            enc(&format!("{stem}Smith"))
        ),
    )
    .await;
    // Tokens: the SSN with its system or alone, the phone as telecom and as phone.
    for ssn in c.ssn.iter().take(3) {
        c.same(&gw, all, "Patient", &format!("identifier={SSN}%7C{ssn}"))
            .await;
        c.same(
            &gw,
            all,
            "Patient",
            &format!("identifier={SSN}%7C{ssn}&gender=male"),
        )
        .await;
    }
    for phone in &c.phones {
        c.same(&gw, all, "Patient", &format!("telecom={phone}"))
            .await;
        c.same(&gw, all, "Patient", &format!("phone={phone}")).await;
        c.same(&gw, all, "Patient", &format!("email={phone}")).await;
    }
    // A Condition's sealed code, with and without its system.
    for code in &c.codes {
        c.same(&gw, all, "Condition", &format!("code={SNOMED}%7C{code}"))
            .await;
        c.same(&gw, all, "Condition", &format!("code={code}")).await;
    }
    // Filter mode: an Observation's sealed value.
    for query in [
        "value-quantity=gt70",
        "value-quantity=le66",
        "value-quantity=75||/min",
        "value-quantity=ge63&code=http://loinc.org%7C8867-4",
    ] {
        c.same(&gw, all, "Observation", query).await;
    }

    // Inside a batch, the same search gives the same answer (one flow for both).
    let query = format!(
        "Patient?family={}&birthdate=1974&_tag={COHORT}%7C{}",
        enc(stem),
        c.tag(true)
    );
    let alone = gw.get(&format!("/fhir/{query}"), all).await;
    expect(&alone, StatusCode::OK);
    let batch = json!({"resourceType": "Bundle", "type": "batch",
        "entry": [{"request": {"method": "GET", "url": query}}]});
    let answered = gw.bundle(&batch, all).await;
    expect(&answered, StatusCode::OK);
    let inner = &answered.json["entry"][0];
    assert!(
        inner["response"]["status"]
            .as_str()
            .unwrap()
            .starts_with("200"),
        "{}",
        answered.text
    );
    assert_eq!(
        Cohort::twins(&inner["resource"]),
        Cohort::twins(&alone.json)
    );
    assert_eq!(inner["resource"]["total"], alone.json["total"]);
    assert!(!Cohort::twins(&alone.json).is_empty());

    // Paging through the gateway's signed cursors: every match once, over several pages.
    let (twins, pages) = c
        .gateway_answer(
            &gw,
            all,
            "Patient",
            &format!("family={}&_count=3", enc(stem)),
        )
        .await
        .unwrap();
    assert_eq!(twins.len(), 10);
    assert_eq!(pages, 4);
    let counted = gw
        .get(
            &format!(
                "/fhir/Patient?family={}&_summary=count&_tag={COHORT}%7C{}",
                enc(stem),
                c.tag(true)
            ),
            all,
        )
        .await;
    expect(&counted, StatusCode::OK);
    assert_eq!(counted.json["total"], 6 + 4);
    assert!(counted.json.get("entry").is_none());
    // A cursor edited, or one of another search, is refused.
    let first = gw
        .get(
            &format!(
                "/fhir/Patient?family={}&_count=3&_tag={COHORT}%7C{}",
                enc(stem),
                c.tag(true)
            ),
            all,
        )
        .await;
    let next = link(&first.json, "next").unwrap();
    let next = &next[next.find("/fhir/").unwrap()..];
    let forged = next.replace("_cursor=3.", "_cursor=6.");
    assert_ne!(forged, next);
    let refused = gw.get(&forged, all).await;
    expect(&refused, StatusCode::BAD_REQUEST);
    assert!(
        diagnostics(&refused).contains("_cursor"),
        "{}",
        refused.text
    );
    let elsewhere = next.replace("_count=3", "_count=4");
    expect(&gw.get(&elsewhere, all).await, StatusCode::BAD_REQUEST);

    // A caller who cannot open an element never matches on it: the doctor does not read SSNs.
    let ssn = &c.ssn[0];
    let (twins, _) = c
        .gateway_answer(
            &gw,
            &Who::Doctor,
            "Patient",
            &format!("identifier={SSN}%7C{ssn}"),
        )
        .await
        .unwrap();
    assert!(twins.is_empty());
    c.same(
        &gw,
        &Who::Registrar,
        "Patient",
        &format!("identifier={SSN}%7C{ssn}"),
    )
    .await;

    // Refused, naming the parameter: what neither the index nor the gateway can answer exactly.
    for (query, parameter) in [
        ("family=s".to_string(), "family"),
        (format!("family:contains={}", enc(stem)), "family"),
        (
            format!("family={}&birthdate=ge1970", enc(stem)),
            "birthdate",
        ),
        (
            format!("family={}&birthdate=ge1900&birthdate=lt2000", enc(stem)),
            "birthdate",
        ),
        (
            format!("family={}&birthdate=ne1974", enc(stem)),
            "birthdate",
        ),
        // Indexed only in the compound: alone, or beside a parameter it is not paired with.
        ("birthdate=1974".to_string(), "together with `family`"),
        (
            format!("name={}&birthdate=1974", enc(stem)),
            "together with `family`",
        ),
        (format!("identifier={}", c.ssn[0]), "identifier"),
        (
            "identifier=http://hl7.org/fhir/sid/us-ssn%7C".to_string(),
            "identifier",
        ),
        ("address-use=home".to_string(), "address-use"),
        ("phonetic=smith".to_string(), "phonetic"),
        ("photo:missing=true".to_string(), "photo"),
        (
            "_tag=https://fhirseal.dev/fhir/blind-index/Patient.birthDate/year%7C0".to_string(),
            "_tag",
        ),
        ("_tag=0a1b".to_string(), "_tag"),
        (
            format!("family={}&_include=Patient:organization", enc(stem)),
            "_include",
        ),
    ] {
        let reply = gw.get(&format!("/fhir/Patient?{query}"), all).await;
        expect(&reply, StatusCode::BAD_REQUEST);
        assert!(
            diagnostics(&reply).contains(parameter),
            "{query}: {}",
            reply.text
        );
    }

    // The run's server holds none of the values, and tokens only of blind-index elements.
    let canaries: Vec<&str> = c.canaries.iter().map(String::as_str).collect();
    assert_sealed_upstream(&gw, &canaries);
    let stored = gw
        .upstream_get(&format!("Observation?_tag={COHORT}%7C{}", c.tag(true)))
        .await;
    assert!(
        !stored.text.contains("fhirseal.dev/fhir/blind-index"),
        "a token of a filter-mode element: {}",
        stored.text
    );
    let stored = gw
        .upstream_get(&format!("Patient?_tag={COHORT}%7C{}", c.tag(true)))
        .await;
    let systems: BTreeSet<&str> = entries(&stored.json, None)
        .iter()
        .flat_map(|p| p["meta"]["tag"].as_array().unwrap().iter())
        .filter_map(|t| t["system"].as_str())
        .filter_map(|s| s.strip_prefix("https://fhirseal.dev/fhir/blind-index/"))
        .map(|s| s.split('/').next().unwrap())
        .collect();
    // The birth date only in its pairs with the family name, never alone.
    let indexed = BTreeSet::from([
        "Patient.address.city",
        "Patient.name.family+Patient.birthDate",
        "Patient.identifier",
        "Patient.name.family",
        "Patient.name.given",
        "Patient.telecom",
    ]);
    assert_eq!(systems, indexed);
}
