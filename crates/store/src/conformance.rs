//! The conformance suite: one set of behaviours every backend must show. Backends run it with
//! [`conformance_suite!`](crate::conformance_suite), passing an async constructor of a fresh store.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::missing_panics_doc)] // test code: a failure is a panic

use crate::{
    AccessEntry, AccessQuery, AuthRecord, Expect, HistoryQuery, Method, OutboxMessage, PatientKey, ScanQuery, SearchPlan, Store,
    StoreError, Stored, SubmissionStatus, Visibility, Write,
};
use fascicolo_fhir::params::index_resource;
use fascicolo_fhir::search::{parse_search, SortKey};
use serde_json::{json, Value};

/// Build a write the way the app layer does (id, meta and index from the JSON).
pub fn write(mut v: Value, key: PatientKey, version: i64, at: i64, expect: Expect) -> Write {
    let rt = v["resourceType"].as_str().unwrap_or_default().to_string();
    let id = v["id"].as_str().unwrap_or_default().to_string();
    v["meta"] = json!({"versionId": version.to_string(), "lastUpdated": fascicolo_fhir::datetime::format_instant(at)});
    Write {
        resource_type: rt,
        id,
        patient_key: key,
        previous_key: None,
        version,
        last_updated: at,
        method: if version == 1 { Method::Create } else { Method::Update },
        json: v.to_string(),
        index: index_resource(&v),
        expect,
        restrict: 0,
    }
}

fn pk(id: &str) -> PatientKey {
    PatientKey::for_patient_id(id)
}

fn plan(rt: &str, q: &str) -> SearchPlan {
    let pairs: Vec<(String, String)> =
        q.split('&').filter(|s| !s.is_empty()).filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect();
    let req = parse_search(Some(rt), &pairs).expect("valid search");
    SearchPlan { resource_type: Some(rt.into()), clauses: req.clauses, sort: req.sort, limit: 100, ..Default::default() }
}

async fn ids(s: &dyn Store, p: &SearchPlan) -> Vec<String> {
    let mut v: Vec<String> = s.search(p).await.expect("search").into_iter().map(|h| h.stored.id).collect();
    v.sort();
    v
}

fn patient(id: &str, family: &str, birth: &str) -> Value {
    json!({"resourceType":"Patient","id":id,"name":[{"family":family,"given":["Anna"]}],"gender":"female","birthDate":birth,
        "identifier":[{"system":"http://hl7.it/sid/codiceFiscale","value":format!("CF{id}")}]})
}

fn obs(id: &str, patient: &str, code: &str, value: f64, when: &str) -> Value {
    json!({"resourceType":"Observation","id":id,"status":"final",
        "code":{"coding":[{"system":"http://loinc.org","code":code}],"text":"Glucosio nel sangue"},
        "subject":{"reference":format!("Patient/{patient}")},"effectiveDateTime":when,
        "valueQuantity":{"value":value,"unit":"mg/dL","system":"http://unitsofmeasure.org","code":"mg/dL"}})
}

/// Two patients with observations.
pub async fn seed(s: &dyn Store) {
    let mut w = vec![
        write(patient("p1", "Rossi", "1980-05-01"), pk("p1"), 1, 1_000, Expect::Absent),
        write(patient("p2", "Bianchi", "2010-01-20"), pk("p2"), 1, 1_000, Expect::Absent),
        write(
            json!({"resourceType":"Organization","id":"org1","name":"ASST Santi Paolo e Carlo"}),
            PatientKey::SHARED,
            1,
            1_000,
            Expect::Absent,
        ),
    ];
    w.push(write(obs("o1", "p1", "2345-7", 90.0, "2020-01-10T08:00:00Z"), pk("p1"), 1, 2_000, Expect::Absent));
    w.push(write(obs("o2", "p1", "2345-7", 130.0, "2021-06-10T08:00:00Z"), pk("p1"), 1, 3_000, Expect::Absent));
    w.push(write(obs("o3", "p1", "4548-4", 6.1, "2021-06-10T08:00:00Z"), pk("p1"), 1, 4_000, Expect::Absent));
    w.push(write(obs("o4", "p2", "2345-7", 101.0, "2022-03-01T08:00:00Z"), pk("p2"), 1, 5_000, Expect::Absent));
    s.commit(w).await.expect("seed");
}

pub async fn create_read_vread_history(s: &dyn Store) {
    seed(s).await;
    let r = s.read("Patient", "p1").await.unwrap().expect("p1 exists");
    assert_eq!(r.version, 1);
    assert_eq!(r.patient_key, pk("p1"));
    let v: Value = serde_json::from_str(&r.json).unwrap();
    assert_eq!(v["name"][0]["family"], "Rossi");
    let mut p = patient("p1", "Rossi-Verdi", "1980-05-01");
    p["extension"] = json!([{"url":"http://example.org/unknown-but-valid","valueString":"kept"}]);
    s.commit(vec![write(p, pk("p1"), 2, 9_000, Expect::Version(1))]).await.unwrap();
    let r = s.read("Patient", "p1").await.unwrap().unwrap();
    assert_eq!(r.version, 2);
    let v: Value = serde_json::from_str(&r.json).unwrap();
    assert_eq!(v["extension"][0]["valueString"], "kept");
    let old = s.vread("Patient", "p1", 1).await.unwrap().expect("version 1 kept");
    assert!(old.json.contains("\"Rossi\""));
    assert!(s.vread("Patient", "p1", 3).await.unwrap().is_none());
    let h = s
        .history(&HistoryQuery {
            resource_type: Some("Patient".into()),
            id: Some("p1".into()),
            patient: Some(pk("p1")),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(h.iter().map(|x| x.version).collect::<Vec<_>>(), vec![2, 1]);
    assert_eq!(h[1].method, Method::Create);
    // old index rows are gone, new ones searchable
    assert!(ids(s, &plan("Patient", "family=Rossi-")).await == vec!["p1".to_string()]);
    assert!(ids(s, &plan("Patient", "family:exact=Rossi")).await.is_empty());
    assert!(s.read("Patient", "nope").await.unwrap().is_none());
    // every version keeps its own content, the current one included, in every kind of history
    s.commit(vec![write(patient("p1", "Rossi-Bianchi", "1980-05-01"), pk("p1"), 3, 9_100, Expect::Version(2))]).await.unwrap();
    let family = |x: &Stored| serde_json::from_str::<Value>(&x.json).unwrap()["name"][0]["family"].as_str().unwrap_or_default().to_string();
    for q in [
        HistoryQuery { resource_type: Some("Patient".into()), id: Some("p1".into()), limit: 10, ..Default::default() },
        HistoryQuery { patient: Some(pk("p1")), limit: 100, ..Default::default() },
        HistoryQuery { limit: 1000, ..Default::default() },
    ] {
        let h: Vec<Stored> = s.history(&q).await.unwrap().into_iter().filter(|x| x.resource_type == "Patient" && x.id == "p1").collect();
        assert_eq!(
            h.iter().map(|x| (x.version, family(x))).collect::<Vec<_>>(),
            [(3, "Rossi-Bianchi".to_string()), (2, "Rossi-Verdi".into()), (1, "Rossi".into())],
            "{q:?}"
        );
    }
    for (v, name) in [(1, "Rossi"), (2, "Rossi-Verdi"), (3, "Rossi-Bianchi")] {
        assert_eq!(family(&s.vread("Patient", "p1", v).await.unwrap().unwrap()), name);
    }
    assert!(ids(s, &plan("Patient", "family=Rossi-Bianchi")).await == vec!["p1".to_string()]);
    assert!(ids(s, &plan("Patient", "family=Rossi-Verdi")).await.is_empty());
}

pub async fn conflicts_leave_store_unchanged(s: &dyn Store) {
    seed(s).await;
    let err = s.commit(vec![write(patient("p1", "X", "1980-05-01"), pk("p1"), 2, 9_000, Expect::Version(7))]).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }));
    let err = s.commit(vec![write(patient("p1", "X", "1980-05-01"), pk("p1"), 1, 9_000, Expect::Absent)]).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }));
    // an all-or-nothing commit: the first write must not survive the second's conflict
    let err = s
        .commit(vec![
            write(patient("p9", "Nuovo", "1990-01-01"), pk("p9"), 1, 9_000, Expect::Absent),
            write(patient("p2", "Y", "2010-01-20"), pk("p2"), 2, 9_000, Expect::Version(5)),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }));
    assert!(s.read("Patient", "p9").await.unwrap().is_none());
    assert!(ids(s, &plan("Patient", "family=nuovo")).await.is_empty());
    assert_eq!(s.read("Patient", "p1").await.unwrap().unwrap().version, 1);
    let h = s.history(&HistoryQuery { limit: 100, ..Default::default() }).await.unwrap();
    assert_eq!(h.len(), 7);
}

/// Change sets committed at the same time (a backend may apply them in one transaction): the
/// one that conflicts fails alone, with none of its writes kept, and every other one commits
/// whole.
pub async fn concurrent_commits_fail_alone(s: &dyn Store) {
    seed(s).await;
    let set = |i: i64| {
        let id = format!("c{i}");
        let mut writes = vec![write(patient(&id, "Concorrente", "1990-01-01"), pk(&id), 1, 10_000 + i, Expect::Absent)];
        writes.push(write(obs(&format!("{id}-o"), &id, "2345-7", 100.0, "2023-01-01T08:00:00Z"), pk(&id), 1, 10_000 + i, Expect::Absent));
        if i % 4 == 2 {
            // p1 exists: this change set must fail, taking its first two writes with it
            writes.push(write(patient("p1", "Doppione", "1980-05-01"), pk("p1"), 1, 10_000 + i, Expect::Absent));
        }
        writes
    };
    let outcomes = futures_util::future::join_all((0..12).map(|i| s.commit(set(i)))).await;
    for (i, outcome) in (0_i64..).zip(&outcomes) {
        let id = format!("c{i}");
        if i % 4 == 2 {
            assert!(matches!(outcome, Err(StoreError::Conflict { .. })), "set {i}: {outcome:?}");
            assert!(s.read("Patient", &id).await.unwrap().is_none(), "set {i} left its patient behind");
            assert!(s.read("Observation", &format!("{id}-o")).await.unwrap().is_none());
        } else {
            assert!(outcome.is_ok(), "set {i}: {outcome:?}");
            assert_eq!(s.read("Observation", &format!("{id}-o")).await.unwrap().expect("committed").version, 1);
        }
    }
    let found = ids(s, &plan("Patient", "family=concorrente")).await;
    assert_eq!(found.len(), 9, "{found:?}");
    assert!(ids(s, &plan("Patient", "family=doppione")).await.is_empty());
    assert_eq!(s.read("Patient", "p1").await.unwrap().unwrap().version, 1);
}

/// Many commits guarded by the same version of one resource (the guarded update scarce places
/// rely on, e.g. a doctor's list): exactly one lands, the others fail with a conflict and
/// change nothing.
pub async fn concurrent_guarded_updates_admit_one(s: &dyn Store) {
    seed(s).await;
    let cur = s.read("Patient", "p1").await.unwrap().unwrap();
    let outcomes = futures_util::future::join_all((0..20_i64).map(|i| {
        let w = write(
            patient("p1", &format!("Guardato{i}"), "1980-05-01"),
            pk("p1"),
            cur.version + 1,
            20_000 + i,
            Expect::Version(cur.version),
        );
        s.commit(vec![w])
    }))
    .await;
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1, "{outcomes:?}");
    assert!(outcomes.iter().filter(|o| o.is_err()).all(|o| matches!(o, Err(StoreError::Conflict { .. }))), "{outcomes:?}");
    assert_eq!(s.read("Patient", "p1").await.unwrap().unwrap().version, cur.version + 1);
    assert_eq!(ids(s, &plan("Patient", "family=guardato")).await.len(), 1);
}

pub async fn delete_is_logical(s: &dyn Store) {
    seed(s).await;
    let cur = s.read("Observation", "o1").await.unwrap().unwrap();
    let mut d = write(serde_json::from_str(&cur.json).unwrap(), pk("p1"), 2, 9_000, Expect::Version(1));
    d.method = Method::Delete;
    d.index.clear();
    s.commit(vec![d]).await.unwrap();
    let r = s.read("Observation", "o1").await.unwrap().unwrap();
    assert!(r.deleted);
    assert_eq!(ids(s, &plan("Observation", "code=2345-7")).await, vec!["o2", "o4"]);
    assert_eq!(s.count(&plan("Observation", "")).await.unwrap(), 3);
    let h = s
        .history(&HistoryQuery { resource_type: Some("Observation".into()), id: Some("o1".into()), limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(h[0].method, Method::Delete);
    assert!(h[0].deleted);
    assert!(s.vread("Observation", "o1", 1).await.unwrap().is_some_and(|v| v.json.contains("2345-7") && !v.deleted));
    // the deletion's own version holds no content; the version it replaced keeps its own
    let gone = s.vread("Observation", "o1", 2).await.unwrap().expect("the deletion is a version");
    assert!(gone.deleted && gone.json.is_empty(), "{gone:?}");
    assert_eq!(h.len(), 2);
    assert!(h[1].json.contains("2345-7") && !h[1].deleted && h[1].version == 1, "{:?}", h[1]);
    // created again after the deletion: the deleted version stays empty, the new one is current
    let mut again = write(serde_json::from_str(&h[1].json).unwrap(), pk("p1"), 3, 9_500, Expect::Version(2));
    again.method = Method::Update;
    s.commit(vec![again]).await.unwrap();
    assert!(s.vread("Observation", "o1", 2).await.unwrap().is_some_and(|v| v.deleted && v.json.is_empty()));
    assert!(s.vread("Observation", "o1", 3).await.unwrap().is_some_and(|v| !v.deleted && v.json.contains("\"versionId\":\"3\"")));
    let h = s
        .history(&HistoryQuery { resource_type: Some("Observation".into()), id: Some("o1".into()), limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(
        h.iter().map(|x| (x.version, x.deleted, x.json.is_empty())).collect::<Vec<_>>(),
        [(3, false, false), (2, true, true), (1, false, false)]
    );
    let mut d = write(serde_json::from_str(&h[0].json).unwrap(), pk("p1"), 4, 9_600, Expect::Version(3));
    d.method = Method::Delete;
    d.index.clear();
    s.commit(vec![d]).await.unwrap();
    assert!(s.read_many(&[("Observation".into(), "o1".into()), ("Observation".into(), "o2".into())]).await.unwrap().len() == 1);
    // a transaction's read: deletions included, as `read` returns them; missing ones skipped
    let cur = s.read_current_many(&[("Observation".into(), "o1".into()), ("Observation".into(), "nope".into())]).await.unwrap();
    assert_eq!(cur.len(), 1);
    assert!(cur[0].deleted && cur[0].id == "o1");
    assert_eq!(cur[0].version, s.read("Observation", "o1").await.unwrap().unwrap().version);
}

pub async fn search_parameter_types(s: &dyn Store) {
    seed(s).await;
    // token with and without system, :not, :text, identifier
    assert_eq!(ids(s, &plan("Observation", "code=http://loinc.org|2345-7")).await, vec!["o1", "o2", "o4"]);
    assert_eq!(ids(s, &plan("Observation", "code=http://snomed.info/sct|2345-7")).await, Vec::<String>::new());
    assert_eq!(ids(s, &plan("Observation", "code:not=2345-7")).await, vec!["o3"]);
    assert_eq!(ids(s, &plan("Observation", "code:text=glucosio")).await.len(), 4);
    assert_eq!(ids(s, &plan("Patient", "identifier=http://hl7.it/sid/codiceFiscale|CFp2")).await, vec!["p2"]);
    // string: prefix, accent/case-insensitive, exact, contains
    assert_eq!(ids(s, &plan("Patient", "name=ross")).await, vec!["p1"]);
    assert_eq!(ids(s, &plan("Patient", "family:exact=rossi")).await, Vec::<String>::new());
    assert_eq!(ids(s, &plan("Patient", "family:contains=anch")).await, vec!["p2"]);
    assert_eq!(ids(s, &plan("Organization", "name=asst santi")).await, vec!["org1"]);
    assert!(ids(s, &plan("Organization", "name=santi")).await.is_empty());
    // date prefixes and precision
    assert_eq!(ids(s, &plan("Observation", "date=2021")).await, vec!["o2", "o3"]);
    assert_eq!(ids(s, &plan("Observation", "date=ge2021-06-10")).await, vec!["o2", "o3", "o4"]);
    assert_eq!(ids(s, &plan("Observation", "date=lt2021")).await, vec!["o1"]);
    assert_eq!(ids(s, &plan("Observation", "date=sa2021-12-31")).await, vec!["o4"]);
    assert_eq!(ids(s, &plan("Patient", "birthdate=eb2000")).await, vec!["p1"]);
    // quantity with prefixes and units
    assert_eq!(ids(s, &plan("Observation", "value-quantity=gt100")).await, vec!["o2", "o4"]);
    assert_eq!(ids(s, &plan("Observation", "value-quantity=130|http://unitsofmeasure.org|mg/dL")).await, vec!["o2"]);
    assert_eq!(ids(s, &plan("Observation", "value-quantity=le6.1||mg/dL")).await, vec!["o3"]);
    // reference forms
    assert_eq!(ids(s, &plan("Observation", "subject=Patient/p2")).await, vec!["o4"]);
    assert_eq!(ids(s, &plan("Observation", "patient=p1&code=4548-4")).await, vec!["o3"]);
    // composite: code and value of the same observation
    assert_eq!(ids(s, &plan("Observation", "code-value-quantity=http://loinc.org|2345-7$gt100")).await, vec!["o2", "o4"]);
    assert_eq!(ids(s, &plan("Observation", "code-value-quantity=4548-4$gt100")).await, Vec::<String>::new());
    // :missing
    assert_eq!(ids(s, &plan("Patient", "deceased:missing=false")).await.len(), 2);
    assert_eq!(ids(s, &plan("Patient", "address:missing=true")).await, vec!["p1", "p2"]);
    // chain and _has
    assert_eq!(ids(s, &plan("Observation", "subject:Patient.name=bianchi")).await, vec!["o4"]);
    assert_eq!(ids(s, &plan("Patient", "_has:Observation:patient:code=4548-4")).await, vec!["p1"]);
    // _id and OR values
    assert_eq!(ids(s, &plan("Observation", "_id=o1,o4")).await, vec!["o1", "o4"]);
    assert_eq!(s.count(&plan("Observation", "code=2345-7")).await.unwrap(), 3);
}

pub async fn sort_and_keyset_paging(s: &dyn Store) {
    seed(s).await;
    let mut p = plan("Observation", "_sort=-date");
    assert!(matches!(p.sort.as_slice(), [SortKey { descending: true, .. }]));
    p.limit = 2;
    let page1 = s.search(&p).await.unwrap();
    assert_eq!(page1.iter().map(|h| h.stored.id.as_str()).collect::<Vec<_>>(), vec!["o4", "o2"]);
    let last = page1.last().unwrap();
    let mut after = last.keys.clone();
    after.push(json!(last.stored.resource_type));
    after.push(json!(last.stored.id));
    p.after = Some(after);
    let page2 = s.search(&p).await.unwrap();
    assert_eq!(page2.iter().map(|h| h.stored.id.as_str()).collect::<Vec<_>>(), vec!["o3", "o1"]);
    // a write between pages does not shift the next page
    s.commit(vec![write(obs("o0", "p2", "2345-7", 1.0, "2023-01-01T00:00:00Z"), pk("p2"), 1, 9_000, Expect::Absent)]).await.unwrap();
    let again = s.search(&p).await.unwrap();
    assert_eq!(again.iter().map(|h| h.stored.id.as_str()).collect::<Vec<_>>(), vec!["o3", "o1"]);
    // ascending by number then id
    let p = plan("Observation", "_sort=value-quantity");
    let all: Vec<String> = s.search(&p).await.unwrap().into_iter().map(|h| h.stored.id).collect();
    assert_eq!(all, vec!["o0", "o3", "o1", "o4", "o2"]);
}

pub async fn patient_partitions(s: &dyn Store) {
    seed(s).await;
    let mut p = plan("Observation", "");
    p.patient = Some(pk("p1"));
    assert_eq!(ids(s, &p).await, vec!["o1", "o2", "o3"]);
    // everything in one compartment, any type
    let every = SearchPlan { patient: Some(pk("p2")), limit: 100, ..Default::default() };
    assert_eq!(ids(s, &every).await, vec!["o4", "p2"]);
    // moving an observation to another patient moves its rows
    let mut w = write(obs("o3", "p2", "4548-4", 6.1, "2021-06-10T08:00:00Z"), pk("p2"), 2, 9_000, Expect::Version(1));
    w.previous_key = Some(pk("p1"));
    s.commit(vec![w]).await.unwrap();
    assert_eq!(ids(s, &p).await, vec!["o1", "o2"]);
    assert_eq!(ids(s, &every).await, vec!["o3", "o4", "p2"]);
    assert_eq!(s.read("Observation", "o3").await.unwrap().unwrap().patient_key, pk("p2"));
    assert_eq!(ids(s, &plan("Observation", "patient=p2")).await, vec!["o3", "o4"]);
}

fn message(patient: &str, kind: &str, available_at: i64) -> OutboxMessage {
    OutboxMessage {
        id: uuid::Uuid::now_v7(),
        patient_key: pk(patient),
        kind: kind.into(),
        payload: json!({"resource": "Observation/o9"}).to_string(),
        available_at,
    }
}

pub async fn outbox_commits_with_the_change(s: &dyn Store) {
    seed(s).await;
    let m = message("p1", "notify.new-document", 1_000);
    s.commit_with(vec![write(obs("o9", "p1", "2345-7", 88.0, "2024-01-01"), pk("p1"), 1, 9_000, Expect::Absent)], vec![m.clone()])
        .await
        .unwrap();
    // the same change again conflicts: neither the write nor its message is kept
    let lost = message("p1", "notify.new-document", 1_000);
    let err = s
        .commit_with(vec![write(obs("o9", "p1", "2345-7", 88.0, "2024-01-01"), pk("p1"), 1, 9_500, Expect::Absent)], vec![lost])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }));
    let claimed = s.outbox_claim(2_000, 60_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].message.id, m.id);
    assert_eq!(claimed[0].message.patient_key, pk("p1"));
    assert_eq!(claimed[0].message.kind, "notify.new-document");
    assert_eq!(claimed[0].message.payload, m.payload);
    assert_eq!(claimed[0].attempts, 1);
}

pub async fn outbox_leases_retries_and_completes(s: &dyn Store) {
    let a = message("p1", "notify.access", 1_000);
    let b = message("p2", "notify.access", 5_000);
    s.commit_with(Vec::new(), vec![a.clone(), b.clone()]).await.unwrap();
    let ids = |c: Vec<crate::Claimed>| c.into_iter().map(|x| (x.message.id, x.attempts)).collect::<Vec<_>>();
    assert_eq!(ids(s.outbox_claim(2_000, 10_000, 10).await.unwrap()), vec![(a.id, 1)]);
    // leased until 12_000, and b is not due before 5_000
    assert!(s.outbox_claim(3_000, 10_000, 10).await.unwrap().is_empty());
    assert_eq!(ids(s.outbox_claim(6_000, 10_000, 10).await.unwrap()), vec![(b.id, 1)]);
    s.outbox_retry(pk("p1"), a.id, 20_000, "smtp: connection refused").await.unwrap();
    assert!(s.outbox_claim(13_000, 10_000, 10).await.unwrap().is_empty());
    // both due again: a by its retry time, b because its lease (until 16_000) ran out
    assert_eq!(ids(s.outbox_claim(20_000, 10_000, 10).await.unwrap()), vec![(a.id, 2), (b.id, 2)]);
    s.outbox_done(pk("p1"), a.id, 21_000).await.unwrap();
    s.outbox_done(pk("p2"), b.id, 21_000).await.unwrap();
    // done is final, also for a late retry
    s.outbox_retry(pk("p1"), a.id, 0, "late").await.unwrap();
    assert!(s.outbox_claim(99_000, 10_000, 10).await.unwrap().is_empty());
}

pub async fn outbox_claims_are_disjoint(s: &dyn Store) {
    let msgs: Vec<OutboxMessage> = (0..40).map(|i| message(if i % 2 == 0 { "p1" } else { "p2" }, "webhook", 1_000)).collect();
    s.commit_with(Vec::new(), msgs.clone()).await.unwrap();
    let (a, b, c, d) = tokio::join!(
        s.outbox_claim(2_000, 60_000, 10),
        s.outbox_claim(2_000, 60_000, 10),
        s.outbox_claim(2_000, 60_000, 10),
        s.outbox_claim(2_000, 60_000, 10)
    );
    let mut all: Vec<uuid::Uuid> = [a, b, c, d].into_iter().flat_map(|r| r.unwrap()).map(|x| x.message.id).collect();
    assert_eq!(all.len(), 40);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 40, "a message was claimed twice");
    assert!(s.outbox_claim(2_000, 60_000, 10).await.unwrap().is_empty());
}

/// Expand to one test per behaviour, for a backend.
/// `$make` is an async block returning `Option<impl Store>` (None skips, e.g. no PostgreSQL).
/// A labelled row disappears from results, counts, chained targets and `_has` sources; the
/// viewer's own rows stay visible.
pub async fn visibility_filters_results_counts_chains_and_has(s: &dyn Store) {
    let k = pk("v1");
    const NOT_CLIN: i64 = 8;
    let mut w = vec![write(patient("v1", "Verdi", "1970-01-01"), k, 1, 1000, Expect::Absent)];
    for (id, bits, tag) in [("o-open", 0, None), ("o-hidden", NOT_CLIN, None), ("o-mine", NOT_CLIN, Some("me")), ("o-other", 2, None)] {
        let mut wr = write(obs(id, "v1", "2345-7", 90.0, "2024-01-01"), k, 1, 1000, Expect::Absent);
        if let Some(t) = tag {
            // write() sets meta; add the producer tag afterwards, as the app does
            let mut v: Value = serde_json::from_str(&wr.json).unwrap();
            v["meta"]["tag"] = json!([{"system": "urn:test:by", "code": t}]);
            wr.index = index_resource(&v);
            wr.json = v.to_string();
        }
        wr.restrict = bits;
        w.push(wr);
    }
    let dr = json!({"resourceType": "DiagnosticReport", "id": "dr1", "status": "final", "code": {"text": "lab"},
        "subject": {"reference": "Patient/v1"}, "result": [{"reference": "Observation/o-hidden"}]});
    w.push(write(dr, k, 1, 1000, Expect::Absent));
    s.commit(w).await.expect("seed");
    let vis = Visibility { deny_bits: NOT_CLIN, ..Default::default() };
    let mut p = plan("Observation", "subject=Patient/v1");
    p.patient = Some(k);
    assert_eq!(ids(s, &p).await, ["o-hidden", "o-mine", "o-open", "o-other"]);
    p.visibility = Some(vis.clone());
    assert_eq!(ids(s, &p).await, ["o-open", "o-other"]);
    assert_eq!(s.count(&p).await.unwrap(), 2);
    p.visibility = Some(Visibility { allow_tags: vec![("urn:test:by".into(), "me".into())], ..vis.clone() });
    assert_eq!(ids(s, &p).await, ["o-mine", "o-open", "o-other"]);
    p.visibility = Some(Visibility { deny_all: true, allow_tags: vec![("urn:test:by".into(), "me".into())], ..Default::default() });
    assert_eq!(ids(s, &p).await, ["o-mine"]);
    // a chain through a hidden Observation finds nothing
    let mut c = plan("DiagnosticReport", "result.code=2345-7");
    assert_eq!(ids(s, &c).await, ["dr1"]);
    c.visibility = Some(vis.clone());
    assert!(ids(s, &c).await.is_empty(), "the report's only result is hidden");
    // `_has` on a hidden source finds nothing
    let mut h = plan("Patient", "_has:Observation:subject:_id=o-hidden");
    assert_eq!(ids(s, &h).await, ["v1"]);
    h.visibility = Some(vis);
    assert!(ids(s, &h).await.is_empty());
}

/// Parameters answered from other parameters' rows (decision 0010) find exactly what their own
/// expressions would, and no more, wherever a search names them: a plain clause, a modifier, a
/// composite, a chain, `_has`, a count, under a viewer's visibility.
pub async fn aliased_parameters_answer_from_their_sources(s: &dyn Store) {
    const NOT_CLIN: i64 = 8;
    let k = pk("a1");
    let loinc = |code: &str| json!({"coding":[{"system":"http://loinc.org","code":code}]});
    let mmhg = |v: f64| json!({"value":v,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"});
    let pressure = json!({"resourceType":"Observation","id":"a-bp","status":"final","code":loinc("85354-9"),
        "subject":{"reference":"Patient/a1","identifier":{"system":"http://hl7.it/sid/codiceFiscale","value":"CFa1"}},"effectiveDateTime":"2024-03-01T08:00:00Z",
        "component":[{"code":loinc("8480-6"),"valueQuantity":mmhg(131.0)},{"code":loinc("8462-4"),"valueQuantity":mmhg(84.0)}]});
    let systolic = json!({"resourceType":"Observation","id":"a-hidden","status":"final","code":loinc("8480-6"),
        "subject":{"reference":"Patient/a1"},"valueQuantity":mmhg(150.0)});
    // a Group with the patient's id, and a subject named only by identifier: neither is a Patient reference
    let group = json!({"resourceType":"Observation","id":"a-group","status":"final","code":loinc("85354-9"),
        "subject":{"reference":"Group/a1"},"component":[{"code":loinc("8480-6"),"valueQuantity":mmhg(160.0)}]});
    let by_identifier = json!({"resourceType":"Observation","id":"a-ident","status":"final","code":loinc("85354-9"),
        "subject":{"identifier":{"system":"http://hl7.it/sid/codiceFiscale","value":"CFa1"}}});
    let mut hidden = write(systolic, k, 1, 1000, Expect::Absent);
    hidden.restrict = NOT_CLIN;
    let w = vec![
        write(patient("a1", "Neri", "1960-02-02"), k, 1, 1000, Expect::Absent),
        write(pressure, k, 1, 1000, Expect::Absent),
        hidden,
        write(group, k, 1, 1000, Expect::Absent),
        write(by_identifier, k, 1, 1000, Expect::Absent),
    ];
    s.commit(w).await.expect("seed");
    // `patient` is `subject` to a Patient
    assert_eq!(ids(s, &plan("Observation", "patient=a1")).await, ["a-bp", "a-hidden"]);
    assert_eq!(ids(s, &plan("Observation", "patient=Patient/a1")).await, ["a-bp", "a-hidden"]);
    assert_eq!(ids(s, &plan("Observation", "subject=a1")).await, ["a-bp", "a-group", "a-hidden"]);
    // `:identifier` rows are the parameter's own: a reference by identifier alone resolves to
    // nothing, so it is `subject`'s and not `patient`'s
    assert_eq!(ids(s, &plan("Observation", "patient:identifier=http://hl7.it/sid/codiceFiscale|CFa1")).await, ["a-bp"]);
    assert_eq!(ids(s, &plan("Observation", "subject:identifier=http://hl7.it/sid/codiceFiscale|CFa1")).await, ["a-bp", "a-ident"]);
    assert_eq!(ids(s, &plan("Observation", "patient.name=neri")).await, ["a-bp", "a-hidden"]);
    assert_eq!(ids(s, &plan("Patient", "_has:Observation:patient:code=85354-9")).await, ["a1"]);
    assert!(ids(s, &plan("Patient", "_has:Observation:patient:_id=a-group,a-ident")).await.is_empty());
    assert_eq!(s.count(&plan("Observation", "patient=a1")).await.expect("count"), 2);
    // `combo-*` are the observation's own code and value and its components'
    assert_eq!(ids(s, &plan("Observation", "combo-code=http://loinc.org|8480-6")).await, ["a-bp", "a-group", "a-hidden"]);
    assert_eq!(ids(s, &plan("Observation", "combo-code=8462-4")).await, ["a-bp"]);
    assert_eq!(ids(s, &plan("Observation", "combo-value-quantity=gt140")).await, ["a-group", "a-hidden"]);
    assert_eq!(ids(s, &plan("Observation", "combo-code-value-quantity=8480-6$gt140")).await, ["a-group", "a-hidden"]);
    assert_eq!(ids(s, &plan("Observation", "combo-code-value-quantity=8480-6$131")).await, ["a-bp"]);
    // a component's code with another component's value is not a match
    assert!(ids(s, &plan("Observation", "combo-code-value-quantity=8462-4$131")).await.is_empty());
    assert_eq!(ids(s, &plan("Observation", "patient=a1&combo-code=8462-4")).await, ["a-bp"]);
    // under a viewer who may not see the restricted one: nothing of it, in results or counts
    let vis = Visibility { deny_bits: NOT_CLIN, ..Default::default() };
    for (q, expected) in
        [("patient=a1", vec!["a-bp"]), ("combo-code=8480-6&patient=a1", vec!["a-bp"]), ("combo-value-quantity=gt140&patient=a1", vec![])]
    {
        let mut p = plan("Observation", q);
        p.visibility = Some(vis.clone());
        assert_eq!(ids(s, &p).await, expected, "{q}");
        assert_eq!(s.count(&p).await.expect("count"), expected.len() as u64, "{q}");
    }
    let mut h = plan("Patient", "_has:Observation:patient:code=8480-6");
    assert_eq!(ids(s, &h).await, ["a1"]);
    h.visibility = Some(vis);
    assert!(ids(s, &h).await.is_empty(), "the only match is restricted");
}

/// The store reports what it takes on disk, and what a commit stores shows in it (after a
/// clean stop, as it is measured).
pub async fn disk_bytes_count_what_is_stored(s: &dyn Store) {
    s.close().await.expect("close");
    let before = s.disk_bytes().await.expect("size");
    // text that does not compress: 200 resources of 2,000 pseudo-random hex digits
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut noise = || {
        (0..250)
            .map(|_| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                format!("{:08x}", x >> 32)
            })
            .collect::<String>()
    };
    let writes: Vec<Write> = (0..200)
        .map(|i| {
            let r = json!({"resourceType":"Basic","id":format!("size-{i}"),"code":{"text":noise()}});
            write(r, PatientKey::SHARED, 1, 1000, Expect::Absent)
        })
        .collect();
    s.commit(writes).await.expect("commit");
    s.close().await.expect("close");
    let after = s.disk_bytes().await.expect("size");
    assert!(before > 0, "an empty store still has its schema");
    assert!(after >= before + 150_000, "200 resources of about 1 kB of compressed content each: {before} -> {after}");
}

/// Reading many resources at once takes any number of them (a transaction of a whole NDJSON
/// file checks tens of thousands of references): all that exist come back, once each.
pub async fn read_many_takes_long_lists(s: &dyn Store) {
    let writes: Vec<Write> = (0..450)
        .map(|i| write(json!({"resourceType":"Basic","id":format!("many-{i}")}), PatientKey::SHARED, 1, 1000, Expect::Absent))
        .collect();
    s.commit(writes).await.expect("commit");
    // 5,000 names: every stored one, and missing ones around them
    let refs: Vec<(String, String)> = (0..5000).map(|i| ("Basic".to_string(), format!("many-{}", i % 900))).collect();
    let mut got: Vec<String> = s.read_many(&refs).await.expect("read_many").into_iter().map(|r| r.id).collect();
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 450);
    let current = s.read_current_many(&refs[..900]).await.expect("read_current_many");
    assert_eq!(current.len(), 450);
}

/// A scan walks current rows in primary-key order, one record's rows together, and pages by its
/// cursor without losing or repeating a row; it filters by type, record, the shared partition,
/// time and restriction bits, and never returns a deleted resource.
pub async fn scans_walk_the_key_order_with_filters(s: &dyn Store) {
    let mut w = Vec::new();
    for p in ["s1", "s2", "s3"] {
        w.push(write(patient(p, "Scan", "1970-01-01"), pk(p), 1, 1000, Expect::Absent));
        for i in 0..5 {
            let mut o = write(obs(&format!("{p}-o{i}"), p, "2345-7", 90.0, "2024-01-01"), pk(p), 1, 1000 + i, Expect::Absent);
            if i == 4 {
                o.restrict = 8;
            }
            w.push(o);
        }
    }
    w.push(write(json!({"resourceType":"Organization","id":"scan-org","name":"ASST"}), PatientKey::SHARED, 1, 1000, Expect::Absent));
    s.commit(w).await.expect("seed");
    let gone = s.read("Observation", "s2-o0").await.unwrap().unwrap();
    let mut d = write(serde_json::from_str(&gone.json).unwrap(), pk("s2"), 2, 2000, Expect::Version(1));
    d.method = Method::Delete;
    s.commit(vec![d]).await.expect("delete");
    let walk = |q: ScanQuery| async move {
        let mut out = Vec::new();
        let mut q = ScanQuery { limit: 4, ..q };
        loop {
            let page = s.scan(&q).await.expect("scan");
            assert!(page.len() <= 4);
            let Some(last) = page.last() else { break };
            q.after = Some((last.patient_key, last.resource_type.clone(), last.id.clone()));
            out.extend(page.into_iter().map(|r| (r.patient_key, r.resource_type, r.id)));
        }
        out
    };
    let all = walk(ScanQuery::default()).await;
    assert_eq!(all.len(), 3 + 15 - 1 + 1, "every current row once: {all:?}");
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "primary-key order");
    sorted.dedup();
    assert_eq!(sorted.len(), all.len(), "no row twice");
    assert!(!all.iter().any(|(_, _, id)| id == "s2-o0"), "a deleted resource is not current");
    let patients = walk(ScanQuery { patients_only: true, types: vec!["Observation".into()], deny_bits: 8, ..Default::default() }).await;
    assert_eq!(patients.len(), 3 * 4 - 1);
    assert!(patients.iter().all(|(k, t, id)| !k.is_shared() && t == "Observation" && !id.ends_with("-o4")));
    let one = walk(ScanQuery { patients: vec![pk("s3"), pk("s1")], since: Some(1002), ..Default::default() }).await;
    let mut ids: Vec<String> = one.into_iter().map(|(_, _, id)| id).collect();
    ids.sort();
    assert_eq!(ids, ["s1-o3", "s1-o4", "s3-o3", "s3-o4"]);
}

pub async fn auth_records_expire_and_are_single_use(s: &dyn Store) {
    let rec = |id: &str, subject: &str, exp: i64| AuthRecord {
        kind: "session".into(),
        id: id.into(),
        subject: subject.into(),
        data: format!("{{\"n\":\"{id}\"}}"),
        expires_at: exp,
    };
    assert!(s.auth_put(&rec("a", "alice", 2000), false).await.unwrap());
    assert!(!s.auth_put(&rec("a", "mallory", 9000), false).await.unwrap(), "an existing record wins without replace");
    assert_eq!(s.auth_get("session", "a", 1000).await.unwrap().unwrap().subject, "alice");
    assert!(s.auth_get("session", "a", 2000).await.unwrap().is_none(), "expired");
    assert!(s.auth_get("token", "a", 1000).await.unwrap().is_none(), "kinds are separate");
    assert!(s.auth_put(&rec("a", "alice", 5000), true).await.unwrap());
    assert!(s.auth_get("session", "a", 3000).await.unwrap().is_some());
    // single use
    assert!(s.auth_take("session", "a", 3000).await.unwrap().is_some());
    assert!(s.auth_take("session", "a", 3000).await.unwrap().is_none());
    // sign out everywhere
    for id in ["b1", "b2", "c1"] {
        s.auth_put(&rec(id, if id.starts_with('b') { "bob" } else { "carol" }, 9000), true).await.unwrap();
    }
    assert_eq!(s.auth_delete_subject("session", "bob").await.unwrap(), 2);
    assert!(s.auth_get("session", "c1", 1000).await.unwrap().is_some());
    assert!(s.auth_delete("session", "c1").await.unwrap());
    assert!(!s.auth_delete("session", "c1").await.unwrap());
    s.auth_put(&rec("old", "dan", 100), true).await.unwrap();
    assert_eq!(s.auth_purge(1000).await.unwrap(), 1);
}

pub async fn operational_state_is_typed_and_expires(s: &dyn Store) {
    // job marks: absent, set, replaced
    assert_eq!(s.job_mark("seed/region").await.unwrap(), None);
    s.set_job_mark("seed/region", r#"{"seed":1}"#, 10).await.unwrap();
    s.set_job_mark("seed/region", r#"{"seed":2}"#, 20).await.unwrap();
    assert_eq!(s.job_mark("seed/region").await.unwrap().as_deref(), Some(r#"{"seed":2}"#));
    assert_eq!(s.job_mark("demo/everything").await.unwrap(), None, "jobs are separate");
    assert!(!s.first_job_mark("seed/region", "{}", 30).await.unwrap(), "an existing mark wins");
    assert!(s.first_job_mark("demo/everything", "", 30).await.unwrap());
    assert_eq!(s.job_mark("seed/region").await.unwrap().as_deref(), Some(r#"{"seed":2}"#));
    // seen marks expire
    s.set_seen_mark("k1", 1500, 3000).await.unwrap();
    assert_eq!(s.seen_mark("k1", 2000).await.unwrap(), Some(1500));
    assert_eq!(s.seen_mark("k1", 3000).await.unwrap(), None, "expired");
    s.set_seen_mark("k1", 2500, 9000).await.unwrap();
    assert_eq!(s.seen_mark("k1", 3000).await.unwrap(), Some(2500), "replaced");
    // submission statuses carry their producer and expire
    let sub = SubmissionStatus { workflow: "wf-1".into(), producer: "asst-a".into(), body: r#"{"status":"ok"}"#.into(), expires_at: 5000 };
    s.put_submission(&sub).await.unwrap();
    assert_eq!(s.submission("wf-1", 4000).await.unwrap(), Some(sub.clone()));
    assert_eq!(s.submission("wf-2", 4000).await.unwrap(), None);
    assert_eq!(s.submission("wf-1", 5000).await.unwrap(), None, "expired");
    // notification claims: the first message holds it, its own retry still does, others never
    let (a, b) = tokio::join!(s.claim_notification("hour-1", "m-a", 9000), s.claim_notification("hour-1", "m-b", 9000));
    assert!(a.unwrap() ^ b.unwrap(), "exactly one of two concurrent claimers holds the claim");
    let holder = if s.claim_notification("hour-1", "m-a", 9000).await.unwrap() { "m-a" } else { "m-b" };
    let other = if holder == "m-a" { "m-b" } else { "m-a" };
    assert!(s.claim_notification("hour-1", holder, 9000).await.unwrap(), "a retry of the holder keeps it");
    assert!(!s.claim_notification("hour-1", other, 9000).await.unwrap());
    assert!(s.claim_notification("hour-2", other, 9000).await.unwrap(), "another hour is another claim");
    // the readiness probe leaves nothing behind and works twice
    s.probe_write(64 * 1024).await.unwrap();
    s.probe_write(10).await.unwrap();
    // purge removes what expired, in every table, and keeps the rest
    s.set_seen_mark("k-old", 1, 100).await.unwrap();
    s.put_submission(&SubmissionStatus { expires_at: 100, workflow: "wf-old".into(), ..sub }).await.unwrap();
    s.claim_notification("hour-old", "m-x", 100).await.unwrap();
    assert_eq!(s.auth_purge(1000).await.unwrap(), 3);
    assert_eq!(s.seen_mark("k1", 1000).await.unwrap(), Some(2500));
    assert!(s.job_mark("seed/region").await.unwrap().is_some(), "job marks do not expire");
}

/// What migration 1's catch-all table held: seed progress, a demo step, a seen mark, a
/// submission status, a notification claim, and a session that must stay.
pub const MIGRATION_1_STATE_ROWS: &str = "INSERT INTO auth_records (kind, id, subject, data, expires_at) VALUES \
    ('seed-progress', 'region', 'seed', '{\"seed\":7,\"citizens\":200,\"years\":5}', 9223372036854775807), \
    ('demo-seeded', 'everything', 'demo', '', 9223372036854775807), \
    ('portal-seen', 'k1', 'portal', '1700000000000', 4102444800000), \
    ('portal-seen', 'k-bad', 'portal', 'not a time', 4102444800000), \
    ('ingest-status', 'wf-1', 'asst-a', '{\"status\":\"ok\"}', 4102444800000), \
    ('notified', 'hour-1', 'notify', 'm-1', 4102444800000), \
    ('session', 's1', 'alice', '{}', 4102444800000);";

/// Checks a store migrated from [`MIGRATION_1_STATE_ROWS`].
pub async fn state_moved_by_migration_2(store: &dyn Store) {
    assert_eq!(store.job_mark("seed/region").await.unwrap().as_deref(), Some(r#"{"seed":7,"citizens":200,"years":5}"#));
    assert!(store.job_mark("demo/everything").await.unwrap().is_some());
    assert_eq!(store.seen_mark("k1", 0).await.unwrap(), Some(1_700_000_000_000));
    assert_eq!(store.seen_mark("k-bad", 0).await.unwrap(), None, "a malformed mark is dropped, not a failed start");
    let s = store.submission("wf-1", 0).await.unwrap().unwrap();
    assert_eq!((s.producer.as_str(), s.body.as_str()), ("asst-a", r#"{"status":"ok"}"#));
    assert!(store.claim_notification("hour-1", "m-1", 4_102_444_800_000).await.unwrap(), "the claim keeps its holder");
    assert!(!store.claim_notification("hour-1", "m-2", 4_102_444_800_000).await.unwrap());
    assert!(store.auth_get("session", "s1", 0).await.unwrap().is_some());
}

fn entry(patient: &str, recorded: i64, id: &str, agent: &str, flags: i64) -> AccessEntry {
    AccessEntry {
        patient_key: pk(patient),
        recorded,
        id: id.into(),
        agent: agent.into(),
        flags,
        content: json!({"i": "read", "e": [format!("Observation/{id}")]}).to_string(),
        changes_facts: flags & 1 != 0,
    }
}

async fn log_ids(s: &dyn Store, q: &AccessQuery) -> Vec<String> {
    s.access_log(q).await.unwrap().into_iter().map(|e| e.id).collect()
}

/// The access log: appended with the change it belongs to or alone, read back by record, time,
/// agent and flags in both orders with a keyset cursor, never across records; an entry that
/// changes facts (and every resource write) moves the record's facts version on, others do not.
pub async fn access_log_ranges_and_facts_versions(s: &dyn Store) {
    assert_eq!(s.facts_version(pk("p1")).await.unwrap(), 0, "a record never written");
    seed(s).await;
    let v1 = s.facts_version(pk("p1")).await.unwrap();
    assert!(v1 > 0, "the seed wrote p1");
    let v2 = s.facts_version(pk("p2")).await.unwrap();
    s.commit_all(
        Vec::new(),
        vec![
            entry("p1", 10, "a", "Practitioner/x", 0),
            entry("p1", 20, "b", "Practitioner/y", 2),
            entry("p1", 20, "c", "Practitioner/x", 0),
            entry("p2", 15, "d", "Practitioner/x", 0),
        ],
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(s.facts_version(pk("p1")).await.unwrap(), v1, "plain accesses change no fact");
    s.commit_all(Vec::new(), vec![entry("p1", 30, "e", "Practitioner/x", 1)], Vec::new()).await.unwrap();
    let v1b = s.facts_version(pk("p1")).await.unwrap();
    assert!(v1b > v1, "an emergency opening changes what the gate decides");
    assert_eq!(s.facts_version(pk("p2")).await.unwrap(), v2);
    let (o1, v) = s.read_with_facts("Observation", "o1").await.unwrap().expect("o1");
    assert_eq!((o1.id.as_str(), o1.patient_key, v), ("o1", pk("p1"), v1b), "a resource with its record's facts version");
    assert!(s.read_with_facts("Observation", "nothing").await.unwrap().is_none());

    let p1 = AccessQuery { patient: Some(pk("p1")), limit: 100, ..Default::default() };
    assert_eq!(log_ids(s, &p1).await, ["e", "c", "b", "a"], "newest first, ties by id");
    assert_eq!(log_ids(s, &AccessQuery { oldest_first: true, ..p1.clone() }).await, ["a", "b", "c", "e"]);
    assert_eq!(log_ids(s, &AccessQuery { from: Some(15), to: Some(20), ..p1.clone() }).await, ["c", "b"]);
    assert_eq!(log_ids(s, &AccessQuery { agents: vec!["Practitioner/x".into()], ..p1.clone() }).await, ["e", "c", "a"]);
    assert_eq!(log_ids(s, &AccessQuery { flags: 2, ..p1.clone() }).await, ["b"]);
    assert_eq!(log_ids(s, &AccessQuery { flags: 1, ..p1.clone() }).await, ["e"]);
    // keyset paging in both orders
    let page = AccessQuery { limit: 2, ..p1.clone() };
    assert_eq!(log_ids(s, &page).await, ["e", "c"]);
    assert_eq!(log_ids(s, &AccessQuery { after: Some((20, "c".into())), ..page.clone() }).await, ["b", "a"]);
    assert_eq!(log_ids(s, &AccessQuery { after: Some((20, "b".into())), oldest_first: true, ..page.clone() }).await, ["c", "e"]);
    assert_eq!(s.access_count(&p1).await.unwrap(), 4);
    assert_eq!(s.access_count(&AccessQuery { agents: vec!["Practitioner/x".into()], ..p1.clone() }).await.unwrap(), 3);
    // every record (the platform's view) and one record only
    assert_eq!(log_ids(s, &AccessQuery { limit: 100, ..Default::default() }).await, ["e", "c", "b", "d", "a"]);
    assert_eq!(log_ids(s, &AccessQuery { patient: Some(pk("p2")), limit: 100, ..Default::default() }).await, ["d"]);
    // by id, in its record only
    let got = s.access_entry(Some(pk("p1")), "b").await.unwrap().unwrap();
    assert_eq!((got.recorded, got.agent.as_str(), got.flags), (20, "Practitioner/y", 2));
    assert_eq!(got.content, entry("p1", 20, "b", "", 0).content);
    assert!(s.access_entry(Some(pk("p2")), "b").await.unwrap().is_none());
    assert!(s.access_entry(None, "b").await.unwrap().is_none(), "no locator row for a new entry");

    // the entry of a write that fails is not kept, nor its message
    let before = s.access_count(&p1).await.unwrap();
    let err = s
        .commit_all(
            vec![write(obs("o1", "p1", "2345-7", 1.0, "2024-01-01"), pk("p1"), 1, 9_000, Expect::Absent)],
            vec![entry("p1", 40, "f", "Practitioner/x", 0)],
            vec![message("p1", "notify.access", 0)],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }));
    assert_eq!(s.access_count(&p1).await.unwrap(), before);
    assert!(s.outbox_claim(1_000, 1_000, 10).await.unwrap().is_empty());
    // a write moves the facts version of the record it touches
    s.commit_all(vec![write(obs("o7", "p1", "2345-7", 1.0, "2024-01-01"), pk("p1"), 1, 9_000, Expect::Absent)], Vec::new(), Vec::new())
        .await
        .unwrap();
    assert!(s.facts_version(pk("p1")).await.unwrap() > v1b);

    // a message id already stored is kept once (coalesced notifications)
    let m = message("p2", "notify.access", 0);
    s.commit_all(Vec::new(), vec![entry("p2", 50, "g", "Practitioner/x", 0)], vec![m.clone()]).await.unwrap();
    s.commit_all(Vec::new(), vec![entry("p2", 51, "h", "Practitioner/x", 0)], vec![m.clone()]).await.unwrap();
    let claimed = s.outbox_claim(1_000, 1_000, 10).await.unwrap();
    assert_eq!(claimed.iter().map(|c| c.message.id).collect::<Vec<_>>(), [m.id]);
    assert_eq!(s.access_count(&AccessQuery { patient: Some(pk("p2")), ..Default::default() }).await.unwrap(), 3);
}

/// Many requests logging at once (committed together where the backend groups them): every
/// entry is kept exactly once, and an entry that cannot be stored fails alone.
pub async fn concurrent_access_entries_all_land(s: &dyn Store) {
    let n: u32 = 200;
    let mut set = Vec::new();
    for i in 0..n {
        let e = entry(if i % 2 == 0 { "p1" } else { "p2" }, 1_000 + i64::from(i), &format!("c{i}"), "Practitioner/x", 0);
        set.push(s.commit_all(Vec::new(), vec![e], Vec::new()));
    }
    // one duplicate (same record, time and id) among them: refused, the others kept
    set.push(s.commit_all(Vec::new(), vec![entry("p1", 1_000, "c0", "Practitioner/x", 0)], Vec::new()));
    let outcomes = futures_util::future::join_all(set).await;
    assert_eq!(outcomes.iter().filter(|o| o.is_err()).count(), 1, "exactly the duplicate fails");
    let all = AccessQuery { limit: 1_000, ..Default::default() };
    assert_eq!(s.access_count(&all).await.unwrap(), u64::from(n));
    let mut ids = log_ids(s, &all).await;
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n as usize);
}

/// What migration 3 does to an `AuditEvent` of the previous schema (the fixture of each
/// backend's migration test): it is in the access log with its agent and flags, found by id
/// through its locator row, and no longer a resource.
pub async fn audit_moved_by_migration_3(store: &dyn Store) {
    let e = store.access_entry(None, "ae-old").await.unwrap().expect("the old event is in the log");
    assert_eq!((e.recorded, e.agent.as_str(), e.flags), (1_000, "Practitioner/pr1", 1 | 2));
    assert!(e.content.contains("\"resourceType\":\"AuditEvent\""), "kept as it was");
    assert!(store.read("AuditEvent", "ae-old").await.unwrap().is_none());
    assert_eq!(store.count(&plan("AuditEvent", "")).await.unwrap(), 0);
    let c = store.access_entry(None, "ae-client").await.unwrap().expect("the client's event");
    assert_eq!((c.agent.as_str(), c.flags), ("urn:fascicolo:client|lab-1", 0));
}

/// The rows of the schema before migration 4, as SQL for both backends (`$KEY` stands for the
/// patient key literal): a Patient in two versions (history repeating the current one, content
/// as text) with a search-index row, and an Observation deleted in its second version.
pub const MIGRATION_3_RESOURCES: &str = r#"
INSERT INTO resources (patient_key, res_type, id, version, last_updated, deleted, content) VALUES
  ($KEY, 'Patient', 'mp', 2, 2000, 0, '{"resourceType":"Patient","id":"mp","meta":{"versionId":"2"},"name":[{"family":"Brambilla"}]}'),
  ($KEY, 'Observation', 'mo', 2, 2000, 1, '{"resourceType":"Observation","id":"mo","meta":{"versionId":"1"},"status":"final"}');
INSERT INTO resource_history (patient_key, res_type, id, version, last_updated, deleted, method, content) VALUES
  ($KEY, 'Patient', 'mp', 1, 1000, 0, 'POST', '{"resourceType":"Patient","id":"mp","meta":{"versionId":"1"},"name":[{"family":"Colombo"}]}'),
  ($KEY, 'Patient', 'mp', 2, 2000, 0, 'PUT', '{"resourceType":"Patient","id":"mp","meta":{"versionId":"2"},"name":[{"family":"Brambilla"}]}'),
  ($KEY, 'Observation', 'mo', 1, 1000, 0, 'POST', '{"resourceType":"Observation","id":"mo","meta":{"versionId":"1"},"status":"final"}'),
  ($KEY, 'Observation', 'mo', 2, 2000, 1, 'DELETE', '');
INSERT INTO locator (res_type, id, patient_key) VALUES ('Patient', 'mp', $KEY), ('Observation', 'mo', $KEY);
INSERT INTO idx_string (patient_key, res_type, res_id, param, seq, grp, norm, exact) VALUES ($KEY, 'Patient', 'mp', 'family', 0, 0, 'brambilla', 'Brambilla');
"#;

/// What migration 4 leaves of [`MIGRATION_3_RESOURCES`] (each backend's test then checks that the
/// content is compressed and that history no longer repeats the current version): the same
/// versions, contents, deletions and search results.
pub async fn content_kept_by_migration_4(store: &dyn Store) {
    let cur = store.read("Patient", "mp").await.unwrap().expect("the patient");
    assert_eq!((cur.version, cur.json.contains("Brambilla")), (2, true));
    assert!(store.vread("Patient", "mp", 1).await.unwrap().is_some_and(|v| v.json.contains("Colombo")));
    assert!(store.vread("Patient", "mp", 2).await.unwrap().is_some_and(|v| v.json.contains("Brambilla")));
    let h = store
        .history(&HistoryQuery { resource_type: Some("Patient".into()), id: Some("mp".into()), limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(
        h.iter().map(|x| (x.version, x.json.contains("Brambilla"), x.json.contains("Colombo"))).collect::<Vec<_>>(),
        [(2, true, false), (1, false, true)]
    );
    let gone = store.read("Observation", "mo").await.unwrap().expect("kept as deleted");
    assert!(gone.deleted && gone.json.contains("\"status\":\"final\""));
    assert!(store.vread("Observation", "mo", 2).await.unwrap().is_some_and(|v| v.deleted && v.json.is_empty()));
    assert!(store.vread("Observation", "mo", 1).await.unwrap().is_some_and(|v| v.json.contains("final")));
    assert_eq!(ids(store, &plan("Patient", "family=brambilla")).await, ["mp"]);
    // and the store goes on from there: a third version moves the second one into history
    let next = write(json!({"resourceType":"Patient","id":"mp","name":[{"family":"Sala"}]}), cur.patient_key, 3, 3000, Expect::Version(2));
    store.commit(vec![next]).await.unwrap();
    assert!(store.vread("Patient", "mp", 2).await.unwrap().is_some_and(|v| v.json.contains("Brambilla")));
    assert!(store.read("Patient", "mp").await.unwrap().is_some_and(|v| v.json.contains("Sala")));
}

/// Two `AuditEvent`s of the schema before migration 3, as JSON (the fixture inserts them with
/// their record's key, `last_updated` 1000 and a locator row each).
pub const MIGRATION_2_AUDIT_EVENTS: [(&str, &str); 2] = [
    (
        "ae-old",
        r#"{"resourceType":"AuditEvent","id":"ae-old","subtype":[{"system":"http://hl7.org/fhir/restful-interaction","code":"operation"},{"system":"urn:fascicolo:access","code":"break-glass"},{"system":"urn:fascicolo:access","code":"emergency"}],"agent":[{"who":{"reference":"Practitioner/pr1"},"requestor":true}]}"#,
    ),
    (
        "ae-client",
        r#"{"resourceType":"AuditEvent","id":"ae-client","agent":[{"who":{"identifier":{"system":"urn:fascicolo:client","value":"lab-1"}},"requestor":true}]}"#,
    ),
];

#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        $crate::conformance_suite!(@tests $make; create_read_vread_history, conflicts_leave_store_unchanged, concurrent_commits_fail_alone, concurrent_guarded_updates_admit_one, delete_is_logical,
            search_parameter_types, sort_and_keyset_paging, patient_partitions, outbox_commits_with_the_change,
            outbox_leases_retries_and_completes, outbox_claims_are_disjoint, visibility_filters_results_counts_chains_and_has,
            aliased_parameters_answer_from_their_sources, disk_bytes_count_what_is_stored, read_many_takes_long_lists, scans_walk_the_key_order_with_filters, auth_records_expire_and_are_single_use, operational_state_is_typed_and_expires, access_log_ranges_and_facts_versions,
            concurrent_access_entries_all_land);
    };
    (@tests $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(store) = $make else {
                    eprintln!("skipped: backend not configured");
                    return;
                };
                $crate::conformance::$name(&store).await;
            }
        )*
    };
}
